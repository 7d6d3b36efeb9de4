// SPDX-License-Identifier: Apache-2.0
// Fuzzes the coordinator's run delivery state machine (src/dispatcher/run_delivery.hpp) with a
// small model of two agents and a network in simulated time: random offers, message losses,
// delays, duplicates, freezes, heartbeats, timer firings, connections that close before the
// session notices (sends fail), session ends, reconnects and a coordinator that stops.
// Invariants: no run started by two agents under at_most_once; under at_least_once a second
// start needs a lost answer or an ended session of the first agent; every offer is resolved
// exactly once or stays pending; an accepted run was started by its agent; a refused one was
// not, unless that agent's answer was lost or its session ended.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <fuzzer/FuzzedDataProvider.h>

#include "dispatcher/run_delivery.hpp"

namespace qf = quartzflow;
namespace act = qf::detail::delivery_action;
using qf::RunDelivery;
using qf::detail::DeliveryNow;
using qf::detail::RunDeliveryMachine;

namespace {

constexpr std::int64_t k_ack_timeout_ms = 5'000;  // margin: 1 s
constexpr std::int64_t k_unix_base = 1'800'000'000'000;
constexpr std::int64_t k_max_clock_error_ms = 400;   // agents' offset estimate error
constexpr std::int64_t k_max_answer_latency_ms = 500;  // agent -> coordinator; error + latency < margin
constexpr int k_agents = 2;
constexpr int k_max_runs = 24;

[[noreturn]] void fail(const char* what, const std::string& execution_id) {
  std::fprintf(stderr, "invariant broken: %s (run %s)\n", what, execution_id.c_str());
  std::abort();
}

enum class Kind { run_request, cancel, update, refusal, heartbeat, result };

struct Message {
  Kind kind;
  int agent = 0;
  std::uint64_t session = 0;  ///< the connection it travels on
  std::string execution_id;
  std::uint64_t message_id = 0;   ///< coordinator -> agent: the request's id
  std::uint64_t in_reply_to = 0;  ///< agent -> coordinator
  std::int64_t start_deadline_unix_ms = 0;
  std::uint32_t delivery_attempt = 0;
  std::int64_t deliver_at = 0;
};

struct Agent {
  std::int64_t clock_error_ms = 0;
  bool frozen = false;
  std::uint64_t session = 0;  ///< its current connection
  std::set<std::string> started;
  std::set<std::string> cancelled_unstarted;
  std::deque<Message> inbox;  ///< arrived while frozen
};

struct Run {
  qf::v1::DeliveryGuarantee guarantee = qf::v1::DELIVERY_GUARANTEE_AT_LEAST_ONCE;
  std::vector<int> tried;
  bool final = false;
  std::set<int> excused;  ///< agents whose answer was lost or whose session ended with it
};

/// A session of the coordinator with one agent: the machine under test and its wake.
struct CoordinatorSession {
  std::uint64_t id = 0;
  RunDeliveryMachine machine{qf::detail::RunDeliveryOptions{k_ack_timeout_ms, 0}};
  std::optional<std::int64_t> wake;
  std::uint64_t next_message_id = 0;
  bool closed = false;  ///< the connection is gone, the session does not know yet: sends fail
};

struct Deferred {
  std::int64_t at;
  int agent;
  std::string execution_id;
  RunDelivery outcome;
};

class World {
 public:
  explicit World(FuzzedDataProvider& in) : in_(in) {
    for (auto& a : agents_) a.clock_error_ms = in_.ConsumeIntegralInRange<std::int64_t>(-k_max_clock_error_ms, k_max_clock_error_ms);
    for (int i = 0; i < k_agents; ++i) connect(i);
    coordinator_stops_at_end_ = in_.ConsumeBool();
  }

  void step() {
    switch (in_.ConsumeIntegralInRange<int>(0, 12)) {
      case 0:
      case 1: return offer_new();
      case 2:
      case 3: return advance(in_.ConsumeIntegralInRange<std::int64_t>(0, 6'000));
      case 4: return lose();
      case 5: return duplicate();
      case 6: return delay();
      case 7: return toggle_freeze(in_.ConsumeIntegralInRange<int>(0, k_agents - 1));
      case 8: return heartbeat(in_.ConsumeIntegralInRange<int>(0, k_agents - 1));
      case 9: return end_session(in_.ConsumeIntegralInRange<int>(0, k_agents - 1));
      case 10: return reconnect_replacing(in_.ConsumeIntegralInRange<int>(0, k_agents - 1));
      case 11: return close_quietly(in_.ConsumeIntegralInRange<int>(0, k_agents - 1));
      default: return offer_again();
    }
  }

  /// Lets everything play out: agents thaw, time passes, sessions end (or the coordinator
  /// stops); then every offer must have been resolved exactly once.
  void drain() {
    if (coordinator_stops_at_end_) stop_coordinator();
    for (auto& a : agents_) a.frozen = false;
    for (int i = 0; i < k_agents; ++i) thaw(i);
    advance(120'000);
    for (int i = 0; i < k_agents; ++i) end_session(i);
    advance(3'700'000);
    for (const auto& [key, count] : outstanding_)
      if (count != 0) fail("an offer was never resolved", key.second);
  }

 private:
  DeliveryNow now() const { return {t_, k_unix_base + t_}; }

  void connect(int agent) {
    auto& s = sessions_[agent];
    s = CoordinatorSession{};
    s.id = ++last_session_;
    s.machine.heard();  // its Register
    agents_[agent].session = s.id;
  }

  // --- the coordinator's driver ---------------------------------------------------------

  void offer(int agent, const std::string& id) {
    auto& run = runs_[id];
    ++outstanding_[{agent, id}];
    auto offered = sessions_[agent].machine.offer(id, run.guarantee, now());
    if (offered.joined && outstanding_[{agent, id}] < 2) fail("joined an offer that was not pending", id);
    perform(agent, std::move(offered.actions));
  }

  void perform(int agent, qf::detail::DeliveryActions actions) {
    auto& s = sessions_[agent];
    for (auto& a : actions) {
      if (auto* send = std::get_if<act::SendRun>(&a)) {
        if (s.closed) {
          perform(agent, s.machine.sent(send->execution_id, 0));
          continue;
        }
        Message m{Kind::run_request, agent, s.id, send->execution_id, ++s.next_message_id};
        m.start_deadline_unix_ms = send->start_deadline_unix_ms;
        m.delivery_attempt = send->delivery_attempt;
        to_agent(std::move(m));
        perform(agent, s.machine.sent(send->execution_id, s.next_message_id));
      } else if (auto* cancel = std::get_if<act::SendCancel>(&a)) {
        if (!s.closed) to_agent(Message{Kind::cancel, agent, s.id, cancel->execution_id});
      } else if (auto* resolve = std::get_if<act::Resolve>(&a)) {
        resolved(agent, *resolve);
      } else if (auto* timer = std::get_if<act::SetTimer>(&a)) {
        if (timer->at_mono_ms < t_) fail("a timer asked for in the past", "");
        s.wake = timer->at_mono_ms;
      }
    }
  }

  void resolved(int agent, const act::Resolve& r) {
    auto& count = outstanding_[{agent, r.execution_id}];
    if (count == 0) fail("resolved twice, or never offered", r.execution_id);
    count = 0;
    auto& run = runs_[r.execution_id];
    const bool started = agents_[agent].started.count(r.execution_id) != 0;
    if (r.outcome == RunDelivery::accepted && !started) fail("accepted a run its agent never started", r.execution_id);
    if (r.outcome == RunDelivery::refused && started && !run.excused.count(agent) &&
        r.cause != qf::detail::DeliveryCause::coordinator_stopping)
      fail("re-routed a run its agent started, with no answer lost and its session alive", r.execution_id);
    if (r.outcome == RunDelivery::lost && run.guarantee != qf::v1::DELIVERY_GUARANTEE_AT_MOST_ONCE)
      fail("an at_least_once run ended lost", r.execution_id);
    if (r.cause == qf::detail::DeliveryCause::never_sent && !sessions_[agent].closed)
      fail("a run refused as never sent on an open connection", r.execution_id);
    if (r.cause == qf::detail::DeliveryCause::coordinator_stopping) {
      if (!stopping_ || r.outcome != RunDelivery::refused || r.not_before_mono_ms)
        fail("a stopping coordinator's runs are refused at once, and only then", r.execution_id);
      run.final = true;  // the next start reconciles it; nothing is re-routed
      return;
    }
    if (r.not_before_mono_ms) {
      deferred_.push_back(Deferred{*r.not_before_mono_ms, agent, r.execution_id, r.outcome});
      return;
    }
    route_on(agent, r.execution_id, r.outcome);
  }

  /// The scheduler's side: a refused run goes to the other agent (once).
  void route_on(int agent, const std::string& id, RunDelivery outcome) {
    auto& run = runs_[id];
    if (run.final) return;
    if (outcome != RunDelivery::refused || stopping_) {
      run.final = true;
      return;
    }
    const int other = 1 - agent;
    if (std::find(run.tried.begin(), run.tried.end(), other) != run.tried.end()) {
      run.final = true;  // no agent accepted the run
      return;
    }
    run.tried.push_back(other);
    offer(other, id);
  }

  void offer_new() {
    if (runs_.size() >= k_max_runs) return;
    const std::string id = "task:" + std::to_string(runs_.size());
    auto& run = runs_[id];
    run.guarantee = in_.ConsumeBool() ? qf::v1::DELIVERY_GUARANTEE_AT_MOST_ONCE : qf::v1::DELIVERY_GUARANTEE_AT_LEAST_ONCE;
    const int agent = in_.ConsumeIntegralInRange<int>(0, k_agents - 1);
    run.tried.push_back(agent);
    offer(agent, id);
  }

  /// The same run sent to the same agent while its answer is awaited (a scheduler retry).
  void offer_again() {
    for (int agent = 0; agent < k_agents; ++agent)
      for (auto& [key, count] : outstanding_)
        if (key.first == agent && count > 0 && sessions_[agent].machine.pending(key.second)) {
          const std::string id = key.second;
          return offer(agent, id);
        }
  }

  // --- the network ----------------------------------------------------------------------

  void to_agent(Message m) {
    m.deliver_at = t_ + in_.ConsumeIntegralInRange<std::int64_t>(0, 500);
    in_flight_.push_back(std::move(m));
  }

  void to_coordinator(Message m) {
    m.deliver_at = t_ + in_.ConsumeIntegralInRange<std::int64_t>(0, k_max_answer_latency_ms);
    in_flight_.push_back(std::move(m));
  }

  static bool from_agent(const Message& m) { return m.kind == Kind::update || m.kind == Kind::refusal || m.kind == Kind::heartbeat || m.kind == Kind::result; }

  /// An answer that never arrives: the run's double start is then a partition's, excused.
  void dropped(const Message& m) {
    if (from_agent(m) && !m.execution_id.empty()) runs_[m.execution_id].excused.insert(m.agent);
  }

  void lose() {
    if (in_flight_.empty()) return;
    const auto i = in_.ConsumeIntegralInRange<std::size_t>(0, in_flight_.size() - 1);
    dropped(in_flight_[i]);
    in_flight_.erase(in_flight_.begin() + static_cast<std::ptrdiff_t>(i));
  }

  void duplicate() {
    if (in_flight_.empty()) return;
    auto copy = in_flight_[in_.ConsumeIntegralInRange<std::size_t>(0, in_flight_.size() - 1)];
    copy.deliver_at += in_.ConsumeIntegralInRange<std::int64_t>(0, from_agent(copy) ? 100 : 30'000);
    if (from_agent(copy)) copy.deliver_at = std::min(copy.deliver_at, t_ + k_max_answer_latency_ms);
    in_flight_.push_back(std::move(copy));
  }

  /// Requests and cancels may be late by any amount (the agent checks the deadline in its
  /// clock); an answer is late only within the latency bound (a slow agent is a frozen one).
  void delay() {
    for (auto it = in_flight_.rbegin(); it != in_flight_.rend(); ++it) {
      if (from_agent(*it)) continue;
      it->deliver_at += in_.ConsumeIntegralInRange<std::int64_t>(0, 30'000);
      return;
    }
  }

  // --- the agents -----------------------------------------------------------------------

  void toggle_freeze(int agent) {
    auto& a = agents_[agent];
    a.frozen = !a.frozen;
    if (!a.frozen) thaw(agent);
  }

  void thaw(int agent) {
    auto& a = agents_[agent];
    while (!a.inbox.empty() && !a.frozen) {
      auto m = std::move(a.inbox.front());
      a.inbox.pop_front();
      agent_receives(agent, m);
    }
  }

  void heartbeat(int agent) {
    if (agents_[agent].frozen) return;
    to_coordinator(Message{Kind::heartbeat, agent, agents_[agent].session});
    // Sometimes a run it holds finishes: its result is an answer too.
    if (!agents_[agent].started.empty() && in_.ConsumeBool()) {
      const auto& id = *agents_[agent].started.begin();
      to_coordinator(Message{Kind::result, agent, agents_[agent].session, id});
    }
  }

  void agent_receives(int agent, const Message& m) {
    auto& a = agents_[agent];
    if (a.frozen) return a.inbox.push_back(m);
    if (m.session != a.session) return;  // its connection is gone
    const std::int64_t agent_unix = k_unix_base + t_ + a.clock_error_ms;
    if (m.kind == Kind::cancel) {
      if (!a.started.count(m.execution_id)) a.cancelled_unstarted.insert(m.execution_id);
      return;
    }
    // A run request: a run it knows is answered with its state, never started twice.
    Message reply{Kind::update, agent, a.session, m.execution_id};
    reply.in_reply_to = m.message_id;
    if (!a.started.count(m.execution_id)) {
      if (a.cancelled_unstarted.count(m.execution_id) || agent_unix > m.start_deadline_unix_ms) {
        reply.kind = Kind::refusal;
      } else {
        a.started.insert(m.execution_id);
        auto& run = runs_[m.execution_id];
        std::set<int> starters;
        for (int i = 0; i < k_agents; ++i)
          if (agents_[i].started.count(m.execution_id)) starters.insert(i);
        if (starters.size() > 1) {
          if (run.guarantee == qf::v1::DELIVERY_GUARANTEE_AT_MOST_ONCE)
            fail("an at_most_once run started by two agents", m.execution_id);
          for (int first : starters)
            if (first != agent && !run.excused.count(first))
              fail("an at_least_once run started twice with no answer lost and no session ended", m.execution_id);
        }
      }
    }
    to_coordinator(std::move(reply));
  }

  void coordinator_receives(const Message& m) {
    auto& s = sessions_[m.agent];
    if (m.session != s.id || s.closed) return dropped(m);  // it arrived on a closed connection
    s.machine.heard();
    switch (m.kind) {
      case Kind::update: return perform(m.agent, s.machine.update(m.in_reply_to, m.execution_id));
      case Kind::result:
        if (s.machine.pending(m.execution_id)) perform(m.agent, s.machine.answered(m.execution_id));
        return;
      case Kind::refusal: return perform(m.agent, std::move(s.machine.refused(m.in_reply_to).actions));
      default: return;
    }
  }

  // --- sessions -------------------------------------------------------------------------

  /// Everything in flight on the agent's connection is gone, and with it any answer.
  void close_connection(int agent) {
    const auto session = sessions_[agent].id;
    for (auto it = in_flight_.begin(); it != in_flight_.end();) {
      if (it->agent == agent && it->session == session) {
        dropped(*it);
        it = in_flight_.erase(it);
      } else {
        ++it;
      }
    }
    for (const auto& [key, count] : outstanding_)
      if (key.first == agent && count > 0) runs_[key.second].excused.insert(agent);
    for (const auto& id : agents_[agent].started) runs_[id].excused.insert(agent);
  }

  void end_session(int agent) {
    close_connection(agent);
    auto actions = sessions_[agent].machine.session_ended(now(), false);
    if (sessions_[agent].machine.pending_count() != 0) fail("runs left pending after the session ended", "");
    connect(agent);  // it reconnects; the new session is empty
    perform(agent, std::move(actions));
  }

  /// The connection breaks; the session notices later (a session end or a reconnect).
  void close_quietly(int agent) {
    close_connection(agent);
    sessions_[agent].closed = true;
  }

  /// The coordinator stops: every session ends at once, nothing is re-routed.
  void stop_coordinator() {
    stopping_ = true;
    for (int agent = 0; agent < k_agents; ++agent) {
      close_connection(agent);
      perform(agent, sessions_[agent].machine.session_ended(now(), true));
    }
  }

  /// The agent reconnects before its old session is noticed: the new one takes its runs.
  void reconnect_replacing(int agent) {
    close_connection(agent);
    auto moved = sessions_[agent].machine.release();
    connect(agent);
    perform(agent, sessions_[agent].machine.adopt(std::move(moved), now()));
  }

  // --- time -----------------------------------------------------------------------------

  void advance(std::int64_t by) {
    const std::int64_t end = t_ + by;
    for (;;) {
      std::int64_t next = end + 1;
      for (const auto& m : in_flight_) next = std::min(next, m.deliver_at);
      for (const auto& s : sessions_)
        if (s.wake) next = std::min(next, *s.wake);
      for (const auto& d : deferred_) next = std::min(next, d.at);
      if (next > end) break;
      t_ = std::max(t_, next);
      if (auto it = std::find_if(in_flight_.begin(), in_flight_.end(), [&](const Message& m) { return m.deliver_at <= t_; });
          it != in_flight_.end()) {
        auto m = std::move(*it);
        in_flight_.erase(it);
        if (from_agent(m)) coordinator_receives(m);
        else agent_receives(m.agent, m);
        continue;
      }
      bool woke = false;
      for (int i = 0; i < k_agents && !woke; ++i) {
        auto& s = sessions_[i];
        if (s.wake && *s.wake <= t_) {
          s.wake.reset();
          perform(i, s.machine.timer_fired(now()));
          woke = true;
        }
      }
      if (woke) continue;
      if (auto it = std::find_if(deferred_.begin(), deferred_.end(), [&](const Deferred& d) { return d.at <= t_; });
          it != deferred_.end()) {
        auto d = std::move(*it);
        deferred_.erase(it);
        route_on(d.agent, d.execution_id, d.outcome);
      }
    }
    t_ = end;
  }

  FuzzedDataProvider& in_;
  bool coordinator_stops_at_end_ = false;
  bool stopping_ = false;
  std::int64_t t_ = 0;
  std::uint64_t last_session_ = 0;
  Agent agents_[k_agents];
  CoordinatorSession sessions_[k_agents];
  std::map<std::string, Run> runs_;
  std::map<std::pair<int, std::string>, int> outstanding_;  ///< offers awaiting their resolution
  std::vector<Message> in_flight_;
  std::vector<Deferred> deferred_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 4'096) return -1;
  FuzzedDataProvider in(data, size);
  World world(in);
  while (in.remaining_bytes() > 0) world.step();
  world.drain();
  return 0;
}
