// SPDX-License-Identifier: Apache-2.0
// Fuzzes the coordinator's session state machine (src/dispatcher/session_machine.hpp) against
// a model of two agents over a network in simulated time, with real Envelopes both ways:
// catalog changes pushed as snapshots and deltas, ACKs, pulls, heartbeats, runs offered
// under both guarantees, answers, refusals, cancels, results, goodbyes (draining), freezes,
// losses, delays, reconnects that replace a session, connections that break, garbage.
// Invariants: no at_most_once run started by two agents; every offer resolved once; every
// run ends final or stays held by a live session; what the coordinator believes an agent
// holds at an acknowledged version is what that agent applied at that version; the
// acknowledged version never goes back; no crash.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <fuzzer/FuzzedDataProvider.h>

#include <quartzflow/execution_status.hpp>

#include "dispatcher/session_machine.hpp"

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;
namespace act = qf::detail::delivery_action;
using qf::RunDelivery;
using qf::detail::CoordinatorSession;
using qf::detail::DeliveryNow;
using qf::detail::HeldTasks;

namespace {

constexpr std::int64_t k_unix_base = 1'800'000'000'000;
constexpr std::int64_t k_max_latency_ms = 600;  // under the start deadline's 1 s margin
constexpr int k_agents = 2;
constexpr int k_max_runs = 32;

[[noreturn]] void fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "invariant broken: %s (%s)\n", what, detail.c_str());
  std::abort();
}

qf::detail::SessionOptions session_options() {
  qf::detail::SessionOptions options;
  options.ack_timeout_ms = 5'000;
  options.max_repushes = 3;
  // Silence ends a session after 12 s: a frozen agent's session lives through two re-asks
  // (5 s, 10 s), as with the defaults (15 s x 3), so a thawed agent can see stale requests.
  options.heartbeat_interval_ms = 2'000;
  options.missed_heartbeats = 6;
  options.delivery = {5'000, 0};
  return options;
}

struct Message {
  std::int64_t deliver_at = 0;
  std::uint64_t connection = 0;
  bool to_agent = false;
  int agent = 0;
  v1::Envelope envelope;
};

struct Connection {
  std::uint64_t id = 0;
  int agent = 0;
  bool open = true;
  std::unique_ptr<CoordinatorSession> session;
  std::uint64_t next_message_id = 0;
  std::int64_t acked_version = 0;  ///< the coordinator's, to check it never goes back
};

struct Agent {
  std::string id;
  std::string group;
  std::uint64_t connection = 0;  ///< 0: not connected
  bool frozen = false;
  std::int64_t applied = 0;
  std::map<std::string, std::int64_t> held;
  std::map<std::int64_t, std::map<std::string, std::int64_t>> held_at;  ///< what it held after applying a version
  std::int64_t last_beat = 0;
  std::set<std::string> started;
  std::set<std::string> cancelled;
  std::map<std::string, std::int64_t> finishes_at;  ///< started runs: when their result is sent
  std::set<std::string> results_unsent;
};

struct Run {
  v1::DeliveryGuarantee guarantee = v1::DELIVERY_GUARANTEE_AT_LEAST_ONCE;
  std::set<int> started_by;
  std::map<std::uint64_t, int> open_offers;  ///< connection -> offers awaiting their resolution
  std::vector<int> tried;
  bool final = false;
};

class World {
 public:
  explicit World(FuzzedDataProvider& in) : in_(in) {
    agents_[0].id = "agent-0";
    agents_[0].group = "g1";
    agents_[1].id = "agent-1";
    agents_[1].group = in_.ConsumeBool() ? "g1" : "g2";
    for (int i = 0; i < k_agents; ++i) connect(i);
  }

  void step() {
    switch (in_.ConsumeIntegralInRange<int>(0, 13)) {
      case 0:
      case 1: return advance(in_.ConsumeIntegralInRange<std::int64_t>(0, 4'000));
      case 2: return change_task();
      case 3:
      case 4: return offer_new();
      case 5: loss_percent_ = in_.ConsumeIntegralInRange<int>(0, 60); return;
      case 6: {
        auto& a = agents_[in_.ConsumeIntegralInRange<int>(0, k_agents - 1)];
        a.frozen = !a.frozen;
        return;
      }
      case 7: return connect(in_.ConsumeIntegralInRange<int>(0, k_agents - 1));  // replaces its session
      case 8: return break_connection(in_.ConsumeIntegralInRange<int>(0, k_agents - 1));
      case 9: return goodbye(in_.ConsumeIntegralInRange<int>(0, k_agents - 1), in_.ConsumeBool());
      case 10: return pull(in_.ConsumeIntegralInRange<int>(0, k_agents - 1), in_.ConsumeBool());
      case 11: return garbage();
      case 12: return fetch_log();
      default: return advance(in_.ConsumeIntegralInRange<std::int64_t>(0, 300));
    }
  }

  /// Heals the world (no loss, agents thawed and connected), lets everything play out, then
  /// checks that every run is final or held by a live session.
  void drain() {
    loss_percent_ = 0;
    for (int i = 0; i < k_agents; ++i) {
      agents_[i].frozen = false;
      if (!agents_[i].connection || !connection_open(agents_[i].connection)) connect(i);
    }
    for (int i = 0; i < 120; ++i) advance(1'000);
    for (const auto& [id, run] : runs_) {
      if (run.final) continue;
      bool held = false;
      for (const auto& [cid, c] : connections_)
        if (c.open && c.session->holds(id)) held = true;
      if (!held && !deferred_.count(id)) fail("a run is neither final nor held by a live session", id);
    }
  }

 private:
  DeliveryNow now() const { return {t_, k_unix_base + t_}; }
  qf::detail::CatalogView view() const { return {tasks_, version_}; }
  bool connection_open(std::uint64_t id) const {
    auto it = connections_.find(id);
    return it != connections_.end() && it->second.open;
  }

  // --- network -------------------------------------------------------------------------

  void transmit(std::uint64_t connection, int agent, bool to_agent, v1::Envelope envelope) {
    if (in_.remaining_bytes() > 0 && in_.ConsumeIntegralInRange<int>(0, 99) < loss_percent_) return;
    const auto latency = in_.remaining_bytes() > 0 ? in_.ConsumeIntegralInRange<std::int64_t>(0, k_max_latency_ms) : 1;
    // Each connection delivers in order (a stream), late or not.
    auto& last = last_delivery_[{connection, to_agent}];
    last = std::max(last, t_ + latency);
    network_.push_back({last, connection, to_agent, agent, std::move(envelope)});
  }

  std::uint64_t send_to_agent(Connection& c, v1::Envelope envelope, std::uint64_t in_reply_to = 0) {
    if (!c.open) return 0;
    const auto id = ++c.next_message_id;
    envelope.set_message_id(id);
    envelope.set_in_reply_to(in_reply_to);
    transmit(c.id, c.agent, true, std::move(envelope));
    return id;
  }

  void send_to_coordinator(int agent, v1::Envelope envelope) {
    auto& a = agents_[agent];
    if (!a.connection || !connection_open(a.connection)) return;
    transmit(a.connection, agent, false, std::move(envelope));
  }

  // --- the coordinator's driver -------------------------------------------------------

  void perform(Connection& c, qf::detail::SessionActions actions) {
    for (auto& send : actions.sends) send_to_agent(c, std::move(send.envelope), send.in_reply_to);
    perform(c, std::move(actions.delivery));
    if (actions.close) close(c);
  }

  void perform(Connection& c, qf::detail::DeliveryActions actions) {
    for (auto& action : actions) {
      if (auto* send = std::get_if<act::SendRun>(&action)) {
        v1::Envelope e;
        e.mutable_run_request()->set_execution_id(send->execution_id);
        e.mutable_run_request()->set_start_deadline_unix_ms(send->start_deadline_unix_ms);
        e.mutable_run_request()->set_delivery_attempt(send->delivery_attempt);
        const auto id = send_to_agent(c, std::move(e));
        perform(c, c.session->sent(send->execution_id, id));
      } else if (auto* cancel = std::get_if<act::SendCancel>(&action)) {
        v1::Envelope e;
        e.mutable_cancel_request()->set_execution_id(cancel->execution_id);
        send_to_agent(c, std::move(e));
      } else if (auto* resolve = std::get_if<act::Resolve>(&action)) {
        resolved(c, *resolve);
      }
    }
  }

  void resolved(const Connection& c, const act::Resolve& resolve) {
    auto& run = runs_.at(resolve.execution_id);
    auto offer = run.open_offers.find(c.id);
    if (offer == run.open_offers.end() || offer->second == 0) fail("an offer was resolved twice", resolve.execution_id);
    if (--offer->second == 0) run.open_offers.erase(offer);
    if (resolve.outcome == RunDelivery::accepted) return;
    if (resolve.outcome == RunDelivery::lost) {
      run.final = true;  // FAILURE agent lost
      return;
    }
    if (resolve.not_before_mono_ms && *resolve.not_before_mono_ms > t_) {
      deferred_[resolve.execution_id] = *resolve.not_before_mono_ms;
      return;
    }
    reroute(resolve.execution_id);
  }

  void reroute(const std::string& id) {
    auto& run = runs_.at(id);
    for (int i = 0; i < k_agents; ++i) {
      if (std::count(run.tried.begin(), run.tried.end(), i)) continue;
      if (offer(id, i)) return;
    }
    run.final = true;  // FAILURE not dispatched
  }

  bool offer(const std::string& id, int agent) {
    auto& a = agents_[agent];
    if (!a.connection || !connection_open(a.connection)) return false;
    auto& c = connections_.at(a.connection);
    if (!c.session->is_registered() || c.session->draining()) return false;
    auto& run = runs_.at(id);
    run.tried.push_back(agent);
    ++run.open_offers[c.id];
    auto offered = c.session->offer(id, run.guarantee, now());
    perform(c, std::move(offered.actions));
    return true;
  }

  void close(Connection& c) {
    if (!c.open) return;
    c.open = false;
    auto ended = c.session->ended(now(), false);
    perform(c, std::move(ended.delivery));
    for (const auto& record : ended.routed) runs_.at(record.execution_id()).final = true;  // agent lost
    auto& a = agents_[c.agent];
    if (a.connection == c.id) a.connection = 0;
  }

  void change_task() {
    const std::string id = "t" + std::to_string(in_.ConsumeIntegralInRange<int>(0, 4));
    ++version_;
    if (in_.ConsumeIntegralInRange<int>(0, 3) == 0) {
      tasks_.erase(id);
    } else {
      auto& task = tasks_[id];
      task.set_id(id);
      task.clear_group_ids();
      task.set_all_agents(false);
      switch (in_.ConsumeIntegralInRange<int>(0, 2)) {
        case 0: task.add_group_ids("g1"); break;
        case 1: task.add_group_ids("g2"); break;
        default: task.set_all_agents(true); break;
      }
      task.set_revision(task.revision() + 1);
      task.set_config_version(version_);
    }
    for (auto& [cid, c] : connections_)
      if (c.open && c.session->is_registered() && c.session->task_changed(id, view()))
        perform(c, c.session->push(view(), now()));
    check_versions();
  }

  void offer_new() {
    if (runs_.size() >= k_max_runs) return;
    const std::string id = "run-" + std::to_string(runs_.size());
    auto& run = runs_[id];
    run.guarantee = in_.ConsumeBool() ? v1::DELIVERY_GUARANTEE_AT_MOST_ONCE : v1::DELIVERY_GUARANTEE_AT_LEAST_ONCE;
    const int first = in_.ConsumeIntegralInRange<int>(0, k_agents - 1);
    if (!offer(id, first) && !offer(id, 1 - first)) run.final = true;
  }

  /// A new connection of the agent; its Register replaces the session the coordinator had.
  void connect(int agent) {
    auto& a = agents_[agent];
    const auto id = ++last_connection_;
    auto& c = connections_[id];
    c.id = id;
    c.agent = agent;
    c.session = std::make_unique<CoordinatorSession>(session_options(), now());
    a.connection = id;
    v1::Envelope e;
    auto* reg = e.mutable_register_request();
    reg->set_agent_id(a.id);
    reg->set_applied_config_version(a.applied);
    for (const auto& run : a.started)
      if (a.finishes_at.count(run)) reg->add_running_execution_ids(run);
    send_to_coordinator(agent, std::move(e));
  }

  void break_connection(int agent) {
    auto& a = agents_[agent];
    if (!a.connection) return;
    auto it = connections_.find(a.connection);
    a.connection = 0;
    if (it != connections_.end()) close(it->second);
  }

  void goodbye(int agent, bool draining) {
    v1::Envelope e;
    e.mutable_goodbye()->set_reason(draining ? v1::GOODBYE_REASON_DRAINING : v1::GOODBYE_REASON_SHUTDOWN);
    send_to_coordinator(agent, std::move(e));
  }

  void pull(int agent, bool full) {
    v1::Envelope e;
    e.mutable_config_pull()->set_applied_config_version(agents_[agent].applied);
    e.mutable_config_pull()->set_full(full);
    send_to_coordinator(agent, std::move(e));
  }

  void garbage() {
    for (auto& [cid, c] : connections_) {
      if (!c.open) continue;
      const auto* body_oneof = v1::Envelope::descriptor()->FindOneofByName("body");
      const int field = in_.ConsumeIntegralInRange<int>(0, body_oneof->field_count() - 1);
      const auto body = static_cast<v1::Envelope::BodyCase>(body_oneof->field(field)->number());
      if (auto refused = c.session->admit(body);
          refused && body != v1::Envelope::kRegisterRequest && c.session->is_registered())
        fail("a registered session refused a message", std::to_string(static_cast<int>(body)));
      v1::Register reg;
      reg.set_agent_id(in_.ConsumeRandomLengthString(8));
      for (int i = in_.ConsumeIntegralInRange<int>(0, 70); i > 0; --i) reg.add_ips("ip");
      (void)c.session->check_register(reg, in_.ConsumeRandomLengthString(8));
      return;
    }
  }

  void fetch_log() {
    for (auto& [cid, c] : connections_) {
      if (!c.open || !c.session->is_registered()) continue;
      c.session->log_requested(++last_log_request_, now());
      if (in_.ConsumeBool()) c.session->log_answered(last_log_request_);
      return;
    }
  }

  // --- the coordinator receives ---------------------------------------------------------

  void to_coordinator(Connection& c, const v1::Envelope& e) {
    auto& s = *c.session;
    s.heard(now());
    if (s.admit(e.body_case())) return close(c);
    switch (e.body_case()) {
      case v1::Envelope::kRegisterRequest: {
        if (s.check_register(e.register_request(), agents_[c.agent].id)) return close(c);
        v1::Agent agent;
        agent.set_id(e.register_request().agent_id());
        agent.set_group_id(agents_[c.agent].group);
        std::vector<v1::Execution> running;
        for (const auto& id : e.register_request().running_execution_ids()) {
          if (runs_.at(id).final) continue;
          v1::Execution r;
          r.set_execution_id(id);
          r.set_task_id("t");
          r.set_status(v1::EXECUTION_STATUS_RUNNING);
          running.push_back(std::move(r));
        }
        s.registered(std::move(agent), std::move(running), view());
        for (auto& [cid, other] : connections_) {
          if (cid == c.id || other.agent != c.agent || !other.open) continue;
          // The same agent again: the old session's runs move here, the old one ends.
          auto handover = other.session->hand_over();
          for (const auto& p : handover.pending) {
            auto& run = runs_.at(p.execution_id);
            auto moved = run.open_offers.find(other.id);
            if (moved != run.open_offers.end()) {
              run.open_offers[c.id] += moved->second;
              run.open_offers.erase(moved);
            }
          }
          close(other);
          perform(c, s.adopt(std::move(handover), now()));
        }
        v1::Envelope result;
        result.mutable_register_result()->set_desired_config_version(version_);
        send_to_agent(c, std::move(result), e.message_id());
        return;
      }
      case v1::Envelope::kConfigPull: return perform(c, s.pull(e.config_pull(), e.message_id(), view(), now()));
      case v1::Envelope::kConfigAck: perform(c, s.config_ack(e.config_ack(), view(), now())); break;
      case v1::Envelope::kHeartbeat: perform(c, s.heartbeat(e.heartbeat(), e.message_id(), view(), now())); break;
      case v1::Envelope::kExecutionUpdate:
        perform(c, s.update(e.in_reply_to(), e.execution_update().execution()));
        return record(c, e.execution_update().execution());
      case v1::Envelope::kExecutionResultBatch:
        for (const auto& r : e.execution_result_batch().results()) {
          perform(c, s.record(r));
          record(c, r);
        }
        return;
      case v1::Envelope::kError: {
        auto refusal = s.refused(e.in_reply_to());
        return perform(c, std::move(refusal.actions));
      }
      case v1::Envelope::kGoodbye:
        if (s.goodbye(e.goodbye())) close(c);
        return;
      default: return;
    }
    check_versions();
  }

  void record(Connection& c, const v1::Execution& r) {
    c.session->stored(r);
    if (qf::is_final(r.status())) runs_.at(r.execution_id()).final = true;
  }

  /// The coordinator's belief about what an agent holds matches what it applied.
  void check_versions() {
    for (auto& [cid, c] : connections_) {
      if (!c.open) continue;
      const auto acked = c.session->acked_version();
      if (acked < c.acked_version) fail("the acknowledged version went back", std::to_string(acked));
      if (acked == c.acked_version || !c.session->held_known()) {
        c.acked_version = acked;
        continue;
      }
      c.acked_version = acked;
      const auto& a = agents_[c.agent];
      auto at = a.held_at.find(acked);
      if (at == a.held_at.end()) fail("acknowledged a version the agent never applied", std::to_string(acked));
      const HeldTasks& believed = c.session->held();
      if (believed.size() != at->second.size() || !std::equal(believed.begin(), believed.end(), at->second.begin()))
        fail("the coordinator's view of the agent's tasks differs from what it applied", std::to_string(acked));
    }
  }

  // --- the agents -------------------------------------------------------------------------

  void to_agent(int agent, const v1::Envelope& e) {
    auto& a = agents_[agent];
    v1::Envelope reply;
    if (e.has_config_snapshot()) {
      a.held.clear();
      for (const auto& t : e.config_snapshot().tasks()) a.held[t.id()] = t.revision();
      apply(a, e.config_snapshot().config_version(), reply);
    } else if (e.has_config_delta()) {
      const auto& d = e.config_delta();
      if (d.config_version() == a.applied && a.applied != 0) {
        ack(reply, a.applied, v1::CONFIG_APPLY_RESULT_APPLIED);
      } else if (d.base_config_version() != a.applied) {
        ack(reply, d.config_version(), v1::CONFIG_APPLY_RESULT_BASE_MISMATCH);
        send_to_coordinator(agent, std::move(reply));
        return pull(agent, true);
      } else {
        for (const auto& t : d.upserts()) a.held[t.id()] = t.revision();
        for (const auto& id : d.removed_task_ids()) a.held.erase(id);
        apply(a, d.config_version(), reply);
      }
    } else if (e.has_register_result()) {
      return pull(agent, false);
    } else if (e.has_run_request()) {
      const auto& id = e.run_request().execution_id();
      auto& run = runs_.at(id);
      auto* update = reply.mutable_execution_update()->mutable_execution();
      update->set_execution_id(id);
      update->set_task_id("t");
      if (a.started.count(id)) {
        update->set_status(a.finishes_at.count(id) ? v1::EXECUTION_STATUS_RUNNING : v1::EXECUTION_STATUS_SUCCESS);
      } else if (a.cancelled.count(id) || now().unix_ms > e.run_request().start_deadline_unix_ms()) {
        // Fenced: cancelled before it started, or its start deadline has passed.
        reply.Clear();
        reply.mutable_error()->set_code(v1::PROTOCOL_ERROR_CODE_CONFLICT);
      } else {
        a.started.insert(id);
        a.finishes_at[id] = t_ + in_.ConsumeIntegralInRange<std::int64_t>(0, 8'000);
        run.started_by.insert(agent);
        if (run.guarantee == v1::DELIVERY_GUARANTEE_AT_MOST_ONCE && run.started_by.size() > 1)
          fail("an at_most_once run was started by two agents", id);
        update->set_status(v1::EXECUTION_STATUS_RUNNING);
      }
      reply.set_in_reply_to(e.message_id());
    } else if (e.has_cancel_request()) {
      const auto& id = e.cancel_request().execution_id();
      if (!a.started.count(id)) a.cancelled.insert(id);
      return;
    } else {
      return;
    }
    send_to_coordinator(agent, std::move(reply));
  }

  void apply(Agent& a, std::int64_t version, v1::Envelope& reply) {
    a.applied = version;
    a.held_at[version] = a.held;
    ack(reply, version, v1::CONFIG_APPLY_RESULT_APPLIED);
  }

  static void ack(v1::Envelope& reply, std::int64_t version, v1::ConfigApplyResult result) {
    reply.mutable_config_ack()->set_config_version(version);
    reply.mutable_config_ack()->set_result(result);
  }

  void agent_tick(int agent) {
    auto& a = agents_[agent];
    if (a.frozen) return;
    for (auto it = a.finishes_at.begin(); it != a.finishes_at.end();) {
      if (it->second > t_) {
        ++it;
        continue;
      }
      a.results_unsent.insert(it->first);
      it = a.finishes_at.erase(it);
    }
    if (!a.connection || !connection_open(a.connection)) return;
    if (!a.results_unsent.empty()) {
      v1::Envelope e;
      for (const auto& id : a.results_unsent) {
        auto* r = e.mutable_execution_result_batch()->add_results();
        r->set_execution_id(id);
        r->set_task_id("t");
        r->set_status(v1::EXECUTION_STATUS_SUCCESS);
      }
      a.results_unsent.clear();  // a lost batch is the coordinator's loss: the run is held until its session ends
      send_to_coordinator(agent, std::move(e));
    }
    if (t_ - a.last_beat >= 1'000) {
      a.last_beat = t_;
      v1::Envelope e;
      e.mutable_heartbeat()->set_applied_config_version(a.applied);
      send_to_coordinator(agent, std::move(e));
    }
  }

  // --- time ---------------------------------------------------------------------------------

  void advance(std::int64_t ms) {
    const auto end = t_ + ms;
    int stalled = 0;
    while (true) {
      std::int64_t next = end;
      for (const auto& m : network_)
        if (!(m.to_agent && agents_[m.agent].frozen)) next = std::min(next, m.deliver_at);  // held while frozen
      for (const auto& [cid, c] : connections_)
        if (c.open)
          if (auto w = c.session->next_wake()) next = std::min(next, *w);
      for (const auto& [id, at] : deferred_) next = std::min(next, at);
      next = std::min(next, t_ + 250);  // agents tick (heartbeats, results)
      if (next <= t_ && ++stalled > 1'000) fail("a wake that never passes", std::to_string(t_));
      if (next > t_) stalled = 0;
      t_ = std::max(t_, next);
      deliver_due();
      for (auto& [cid, c] : connections_)
        if (c.open && c.session->next_wake() && *c.session->next_wake() <= t_) perform(c, c.session->wake(now()));
      for (auto it = deferred_.begin(); it != deferred_.end();) {
        if (it->second > t_) {
          ++it;
          continue;
        }
        const auto id = it->first;
        it = deferred_.erase(it);
        reroute(id);
      }
      for (int i = 0; i < k_agents; ++i) agent_tick(i);
      check_versions();
      if (t_ >= end) return;
    }
  }

  void deliver_due() {
    std::vector<Message> due;
    for (auto it = network_.begin(); it != network_.end();) {
      const bool frozen = it->to_agent && agents_[it->agent].frozen;
      if (it->deliver_at <= t_ && !frozen) {
        due.push_back(std::move(*it));
        it = network_.erase(it);
      } else {
        ++it;
      }
    }
    for (auto& m : due) {
      if (!connection_open(m.connection)) continue;
      if (m.to_agent) {
        if (agents_[m.agent].connection == m.connection) to_agent(m.agent, m.envelope);
      } else {
        to_coordinator(connections_.at(m.connection), m.envelope);
      }
    }
  }

  FuzzedDataProvider& in_;
  std::int64_t t_ = 1'000'000;
  Agent agents_[k_agents];
  std::map<std::uint64_t, Connection> connections_;
  std::uint64_t last_connection_ = 0;
  std::uint64_t last_log_request_ = 0;
  std::vector<Message> network_;
  std::map<std::pair<std::uint64_t, bool>, std::int64_t> last_delivery_;
  int loss_percent_ = 0;
  qf::detail::TaskCatalog tasks_;
  std::int64_t version_ = 0;
  std::map<std::string, Run> runs_;
  std::map<std::string, std::int64_t> deferred_;  ///< re-routes not before an instant
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  World world(in);
  for (int steps = 0; steps < 400 && in.remaining_bytes() > 0; ++steps) world.step();
  world.drain();
  return 0;
}
