// SPDX-License-Identifier: Apache-2.0
// The coordinator's session state machine (src/dispatcher/session_machine.hpp) with a fake
// clock: registration, config sync, liveness, cancels, the goodbye, in microseconds.
#include <catch2/catch.hpp>

#include <optional>
#include <string>
#include <vector>

#include "dispatcher/session_machine.hpp"

namespace qf = quartzflow;
using qf::RunDelivery;
using qf::detail::CoordinatorSession;
using qf::detail::DeliveryCause;
using qf::detail::DeliveryNow;
using qf::detail::OutgoingEnvelope;
using qf::detail::SessionActions;
namespace act = qf::detail::delivery_action;

namespace {

constexpr auto k_at_least_once = qf::v1::DELIVERY_GUARANTEE_AT_LEAST_ONCE;
constexpr auto k_at_most_once = qf::v1::DELIVERY_GUARANTEE_AT_MOST_ONCE;

qf::detail::SessionOptions test_options() {
  qf::detail::SessionOptions options;
  options.ack_timeout_ms = 5'000;
  options.max_repushes = 3;
  options.heartbeat_interval_ms = 1'000;
  options.missed_heartbeats = 3;
  options.delivery = {5'000, 0};
  return options;
}

/// A coordinator's catalog and one session's driver over a fake clock: performs the actions
/// and keeps what they did.
struct FakeDriver {
  qf::detail::TaskCatalog tasks;
  std::int64_t version = 0;
  DeliveryNow now{1'000'000, 1'800'000'000'000};
  CoordinatorSession session{test_options(), now};
  std::uint64_t next_message_id = 0;
  std::vector<OutgoingEnvelope> sends;
  std::vector<qf::detail::PushStatusChange> statuses;
  std::uint32_t failed_pushes = 0;
  std::vector<act::SendRun> run_sends;
  std::vector<std::uint64_t> run_message_ids;
  std::vector<act::SendCancel> cancels;
  std::vector<act::Resolve> resolutions;
  std::vector<std::uint64_t> logs_timed_out;
  std::optional<qf::detail::SessionClose> closed;

  qf::detail::CatalogView view() const { return {tasks, version}; }

  void put_task(const std::string& id, const std::string& group) {
    auto& task = tasks[id];
    task.set_id(id);
    task.clear_group_ids();
    task.add_group_ids(group);
    task.set_revision(task.revision() + 1);
    task.set_config_version(++version);
  }

  void remove_task(const std::string& id) {
    tasks.erase(id);
    ++version;
  }

  void perform(qf::detail::DeliveryActions actions) {
    for (auto& a : actions) {
      if (auto* send = std::get_if<act::SendRun>(&a)) {
        run_sends.push_back(*send);
        run_message_ids.push_back(++next_message_id);
        perform(session.sent(send->execution_id, next_message_id));
      } else if (auto* cancel = std::get_if<act::SendCancel>(&a)) {
        cancels.push_back(*cancel);
      } else if (auto* resolve = std::get_if<act::Resolve>(&a)) {
        resolutions.push_back(*resolve);
      }
    }
  }

  void perform(SessionActions actions) {
    for (auto& send : actions.sends) sends.push_back(std::move(send));
    for (auto& change : actions.push_statuses) statuses.push_back(std::move(change));
    if (actions.push_failed) ++failed_pushes;
    perform(std::move(actions.delivery));
    for (auto id : actions.logs_timed_out) logs_timed_out.push_back(id);
    if (actions.close) closed = actions.close;
  }

  void register_agent(const std::string& id = "agent-1", const std::string& group = "g1",
                      std::vector<qf::v1::Execution> running = {}) {
    qf::v1::Agent agent;
    agent.set_id(id);
    agent.set_group_id(group);
    session.heard(now);
    session.registered(agent, std::move(running), view());
  }

  /// Advances both clocks by `ms`, waking the machine at each instant it asks for.
  void advance(std::int64_t ms) {
    const std::int64_t end = now.mono_ms + ms;
    const std::int64_t wall_minus_mono = now.unix_ms - now.mono_ms;
    while (!closed) {
      auto wake = session.next_wake();
      if (!wake || *wake > end) break;
      REQUIRE(*wake >= now.mono_ms);  // never asks for a wake in the past after handling one
      now.mono_ms = *wake;
      now.unix_ms = now.mono_ms + wall_minus_mono;
      perform(session.wake(now));
      if (auto again = session.next_wake(); again && *again <= now.mono_ms)
        FAIL("the machine asks for the same instant again");
    }
    now.mono_ms = end;
    now.unix_ms = end + wall_minus_mono;
  }

  /// A message from the agent (it lives).
  void hear() { session.heard(now); }

  void ack(std::int64_t config_version, qf::v1::ConfigApplyResult result = qf::v1::CONFIG_APPLY_RESULT_APPLIED) {
    hear();
    qf::v1::ConfigAck ack;
    ack.set_config_version(config_version);
    ack.set_result(result);
    perform(session.config_ack(ack, view(), now));
  }

  void pull(std::int64_t applied, bool full) {
    hear();
    qf::v1::ConfigPull pull;
    pull.set_applied_config_version(applied);
    pull.set_full(full);
    perform(session.pull(pull, 7, view(), now));
  }

  qf::v1::Execution record(const std::string& id, qf::v1::ExecutionStatus status) {
    qf::v1::Execution r;
    r.set_execution_id(id);
    r.set_task_id("t1");
    r.set_status(status);
    return r;
  }

  /// The agent answers the last request of `id` with `status`.
  void answer(const std::string& id, qf::v1::ExecutionStatus status) {
    hear();
    std::uint64_t reply_to = 0;
    for (std::size_t i = 0; i < run_sends.size(); ++i)
      if (run_sends[i].execution_id == id) reply_to = run_message_ids[i];
    perform(session.update(reply_to, record(id, status)));
  }

  void offer(const std::string& id, qf::v1::DeliveryGuarantee guarantee) {
    auto offered = session.offer(id, guarantee, now);
    perform(std::move(offered.actions));
  }

  std::size_t resolutions_of(const std::string& id, RunDelivery outcome) const {
    std::size_t n = 0;
    for (const auto& r : resolutions)
      if (r.execution_id == id && r.outcome == outcome) ++n;
    return n;
  }
};

std::vector<std::string> upserted_ids(const qf::v1::ConfigDelta& delta) {
  std::vector<std::string> ids;
  for (const auto& t : delta.upserts()) ids.push_back(t.id());
  return ids;
}

}  // namespace

TEST_CASE("the first message must be Register, a valid one, and only once", "[session_machine]") {
  FakeDriver d;
  auto refused = d.session.admit(qf::v1::Envelope::kHeartbeat);
  REQUIRE(refused);
  CHECK(refused->error == qf::v1::PROTOCOL_ERROR_CODE_UNEXPECTED_MESSAGE);
  CHECK(!d.session.admit(qf::v1::Envelope::kRegisterRequest));

  qf::v1::Register reg;
  reg.set_agent_id("agent one");
  CHECK(d.session.check_register(reg, ""));
  reg.set_agent_id("agent-1");
  CHECK(!d.session.check_register(reg, ""));
  CHECK(!d.session.check_register(reg, "agent-1"));
  auto impersonation = d.session.check_register(reg, "agent-2");
  REQUIRE(impersonation);
  CHECK(impersonation->why.find("certificate") != std::string::npos);
  for (int i = 0; i < 65; ++i) reg.add_ips("10.0.0." + std::to_string(i));
  auto too_many = d.session.check_register(reg, "");
  REQUIRE(too_many);
  CHECK(too_many->why.find("register.ips") != std::string::npos);

  d.register_agent();
  CHECK(d.session.is_registered());
  CHECK(!d.session.admit(qf::v1::Envelope::kHeartbeat));
  auto twice = d.session.admit(qf::v1::Envelope::kRegisterRequest);
  REQUIRE(twice);
  CHECK(twice->why == "Register sent twice");
}

TEST_CASE("a reconnect hands the routed and awaited runs to the new session, which asks for them again",
          "[session_machine]") {
  FakeDriver old_session;
  old_session.register_agent();
  old_session.offer("run-routed", k_at_least_once);
  old_session.answer("run-routed", qf::v1::EXECUTION_STATUS_RUNNING);
  REQUIRE(old_session.resolutions_of("run-routed", RunDelivery::accepted) == 1);
  old_session.offer("run-awaited", k_at_most_once);
  REQUIRE(old_session.session.holds("run-routed"));
  REQUIRE(old_session.session.holds("run-awaited"));

  FakeDriver replacement;
  replacement.now = old_session.now;
  replacement.register_agent("agent-1", "g1", {replacement.record("run-reported", qf::v1::EXECUTION_STATUS_RUNNING)});
  replacement.perform(replacement.session.adopt(old_session.session.hand_over(), replacement.now));

  CHECK(!old_session.session.holds("run-routed"));
  CHECK(!old_session.session.holds("run-awaited"));
  auto ended = old_session.session.ended(old_session.now, false);
  CHECK(ended.delivery.empty());  // nothing of the runs is decided by the replaced session
  CHECK(ended.routed.empty());

  CHECK(replacement.session.holds("run-routed"));
  CHECK(replacement.session.holds("run-reported"));
  CHECK(replacement.session.awaiting("run-awaited"));
  REQUIRE(replacement.run_sends.size() == 1);
  CHECK(replacement.run_sends[0].execution_id == "run-awaited");
  CHECK(replacement.run_sends[0].reason == qf::detail::SendReason::new_session);
  CHECK(replacement.session.load() == 3);
  replacement.answer("run-awaited", qf::v1::EXECUTION_STATUS_RUNNING);
  CHECK(replacement.resolutions_of("run-awaited", RunDelivery::accepted) == 1);
}

TEST_CASE("config: a snapshot first, then deltas on the acknowledged version, one push in flight",
          "[session_machine]") {
  FakeDriver d;
  d.put_task("t1", "g1");
  d.put_task("other-group", "g2");
  d.register_agent();
  // Before the agent's pull, what it holds is unknown: nothing is pushed.
  CHECK(!d.session.task_changed("t1", d.view()));
  d.pull(0, false);
  REQUIRE(d.sends.size() == 1);
  REQUIRE(d.sends[0].envelope.has_config_snapshot());
  CHECK(d.sends[0].in_reply_to == 7);
  CHECK(d.sends[0].envelope.config_snapshot().tasks_size() == 1);  // only its group's task
  CHECK(d.sends[0].envelope.config_snapshot().config_version() == 2);
  d.ack(2);
  CHECK(d.session.acked_version() == 2);
  CHECK(d.statuses.back().state == qf::v1::CONFIG_PUSH_STATE_IN_SYNC);

  d.put_task("t2", "g1");  // version 3
  REQUIRE(d.session.task_changed("t2", d.view()));
  d.perform(d.session.push(d.view(), d.now));
  REQUIRE(d.sends.size() == 2);
  REQUIRE(d.sends[1].envelope.has_config_delta());
  CHECK(d.sends[1].purpose == OutgoingEnvelope::Purpose::push);
  CHECK(d.sends[1].envelope.config_delta().base_config_version() == 2);
  CHECK(d.sends[1].envelope.config_delta().config_version() == 3);
  CHECK(upserted_ids(d.sends[1].envelope.config_delta()) == std::vector<std::string>{"t2"});
  CHECK(d.statuses.back().state == qf::v1::CONFIG_PUSH_STATE_PENDING);

  // A change while that push is in flight waits for its ACK (a second delta on base 2 would not apply).
  d.put_task("t1", "g1");  // version 4, t1 revision 2
  REQUIRE(d.session.task_changed("t1", d.view()));
  d.perform(d.session.push(d.view(), d.now));
  CHECK(d.sends.size() == 2);

  d.ack(3);
  REQUIRE(d.sends.size() == 3);
  const auto& next = d.sends[2].envelope.config_delta();
  CHECK(next.base_config_version() == 3);
  CHECK(next.config_version() == 4);
  CHECK(upserted_ids(next) == std::vector<std::string>{"t1"});
  d.ack(4);
  CHECK(!d.session.push_in_flight());
  CHECK(d.session.held().at("t1") == 2);

  d.remove_task("t2");  // version 5
  REQUIRE(d.session.task_changed("t2", d.view()));
  d.perform(d.session.push(d.view(), d.now));
  REQUIRE(d.sends.size() == 4);
  REQUIRE(d.sends[3].envelope.config_delta().removed_task_ids_size() == 1);
  CHECK(d.sends[3].envelope.config_delta().removed_task_ids(0) == "t2");
  d.ack(5);
  CHECK(d.session.held().count("t2") == 0);
}

TEST_CASE("config: a task created and deleted while a push is in flight leaves nothing to push", "[session_machine]") {
  FakeDriver d;
  d.put_task("t1", "g1");
  d.register_agent();
  d.pull(0, false);
  d.ack(1);
  d.put_task("t2", "g1");  // version 2: pushed
  REQUIRE(d.session.task_changed("t2", d.view()));
  d.perform(d.session.push(d.view(), d.now));
  d.put_task("t3", "g1");  // version 3: waits for the ACK of 2
  REQUIRE(d.session.task_changed("t3", d.view()));
  d.remove_task("t3");  // version 4: gone before it was pushed
  CHECK(!d.session.task_changed("t3", d.view()));
  const auto sends_before = d.sends.size();
  d.ack(2);
  // Nothing differs: no delta (an empty one would be acknowledged and pushed again for ever).
  CHECK(d.sends.size() == sends_before);
  CHECK(!d.session.push_in_flight());
  CHECK(d.statuses.back().state == qf::v1::CONFIG_PUSH_STATE_IN_SYNC);
  CHECK(d.statuses.back().agent.push_status().state() == qf::v1::CONFIG_PUSH_STATE_IN_SYNC);
}

TEST_CASE("config: an unacknowledged push is re-sent every ack timeout, then marked FAILED", "[session_machine]") {
  FakeDriver d;
  d.put_task("t1", "g1");
  d.register_agent();
  d.pull(0, false);
  d.ack(1);
  d.put_task("t1", "g1");
  REQUIRE(d.session.task_changed("t1", d.view()));
  d.perform(d.session.push(d.view(), d.now));
  REQUIRE(d.sends.size() == 2);

  for (int i = 0; i < 25; ++i) {  // the agent lives (heartbeats) but never acknowledges
    d.advance(1'000);
    d.hear();
  }
  REQUIRE(!d.closed);
  // 1 push + 3 re-pushes, one per ack timeout, then FAILED.
  std::vector<std::uint32_t> attempts;
  for (std::size_t i = 1; i < d.sends.size(); ++i)
    attempts.push_back(d.sends[i].envelope.config_delta().push_attempt());
  CHECK(attempts == std::vector<std::uint32_t>{1, 2, 3, 4});
  CHECK(d.sends.back().purpose == OutgoingEnvelope::Purpose::repush);
  CHECK(d.failed_pushes == 1);
  CHECK(d.statuses.back().state == qf::v1::CONFIG_PUSH_STATE_FAILED);
  CHECK(!d.session.push_in_flight());
}

TEST_CASE("config: versions are acknowledged in order, a stale ACK changes nothing, a heartbeat recovers a lost ACK",
          "[session_machine]") {
  FakeDriver d;
  d.put_task("t1", "g1");
  d.register_agent();
  d.pull(0, false);        // snapshot of version 1 (not acknowledged yet)
  d.put_task("t1", "g1");  // version 2
  d.pull(0, true);         // the agent pulls again: snapshot of version 2
  d.ack(2);
  CHECK(d.session.acked_version() == 2);
  d.ack(1);  // the older snapshot's ACK arrives late: forgotten
  CHECK(d.session.acked_version() == 2);
  CHECK(d.session.held().at("t1") == 2);

  d.put_task("t1", "g1");  // version 3
  REQUIRE(d.session.task_changed("t1", d.view()));
  d.perform(d.session.push(d.view(), d.now));
  // The ACK of version 3 is lost; the agent's heartbeat says it applied it.
  qf::v1::Heartbeat beat;
  beat.set_applied_config_version(3);
  beat.set_agent_unix_ms(42);
  d.perform(d.session.heartbeat(beat, 9, d.view(), d.now));
  CHECK(d.session.acked_version() == 3);
  CHECK(!d.session.push_in_flight());
  REQUIRE(d.sends.back().envelope.has_heartbeat_ack());
  CHECK(d.sends.back().in_reply_to == 9);
  CHECK(d.sends.back().envelope.heartbeat_ack().echo_agent_unix_ms() == 42);
  CHECK(d.session.agent().applied_config_version() == 3);

  // A heartbeat naming a version never offered acknowledges nothing.
  beat.set_applied_config_version(9);
  d.perform(d.session.heartbeat(beat, 10, d.view(), d.now));
  CHECK(d.session.acked_version() == 3);
}

TEST_CASE("config: BASE_MISMATCH forgets what the agent holds, a REJECTED push is FAILED", "[session_machine]") {
  FakeDriver d;
  d.put_task("t1", "g1");
  d.register_agent();
  d.pull(0, false);
  d.ack(1);
  d.put_task("t1", "g1");
  REQUIRE(d.session.task_changed("t1", d.view()));
  d.perform(d.session.push(d.view(), d.now));
  d.ack(2, qf::v1::CONFIG_APPLY_RESULT_BASE_MISMATCH);
  CHECK(!d.session.held_known());
  CHECK(!d.session.push_in_flight());
  d.pull(1, false);
  CHECK(d.sends.back().envelope.has_config_snapshot());
  d.ack(2);
  d.put_task("t1", "g1");
  REQUIRE(d.session.task_changed("t1", d.view()));
  d.perform(d.session.push(d.view(), d.now));
  d.ack(3, qf::v1::CONFIG_APPLY_RESULT_REJECTED);
  CHECK(d.statuses.back().state == qf::v1::CONFIG_PUSH_STATE_FAILED);
  CHECK(!d.session.push_in_flight());
}

TEST_CASE("config: a delta pushed at the version of a snapshot in flight does not replace it (fuzz_session)",
          "[session_machine]") {
  // Found by fuzz_session (corpus regression-held-view): three pulls' snapshots in flight, the
  // ACK of the first pushes a delta on its version at the third's version; the agent applied
  // the third snapshot and ACKs that version. Applying the delta's changes to what the
  // second ACK left believed t3 missing (the delta applies to the first version only).
  FakeDriver d;
  d.put_task("t1", "g1");
  d.put_task("t3", "g1");
  d.put_task("t4", "g1");  // v3
  d.register_agent();
  d.pull(0, false);  // snapshot v3 {t1, t3, t4}
  REQUIRE(d.sends.back().envelope.has_config_snapshot());
  d.remove_task("t3");     // v4
  d.pull(0, true);         // snapshot v4 {t1, t4}
  d.remove_task("t1");     // v5
  d.put_task("t3", "g1");  // v6
  d.pull(0, true);         // snapshot v6 {t3, t4}
  REQUIRE(d.sends.back().envelope.config_snapshot().tasks_size() == 2);

  d.ack(3);  // the agent applied v3: t1 is pushed away in a delta on v3, at v6
  REQUIRE(d.session.push_in_flight());
  const auto& delta = d.sends.back().envelope.config_delta();
  CHECK(delta.base_config_version() == 3);
  CHECK(delta.config_version() == 6);
  REQUIRE(delta.removed_task_ids_size() == 1);
  d.ack(4);  // then v4
  CHECK(d.session.held() == qf::detail::HeldTasks{{"t1", 1}, {"t4", 1}});
  // Then the snapshot v6 (the delta no longer applies to v4; the agent ACKs v6 again anyway).
  d.ack(6);
  CHECK(d.session.acked_version() == 6);
  CHECK(d.session.held_known());
  CHECK(d.session.held() == qf::detail::HeldTasks{{"t3", 1}, {"t4", 1}});
  CHECK(!d.session.push_in_flight());
}

TEST_CASE("liveness: a silent session is closed after the missed heartbeats, a message defers it",
          "[session_machine]") {
  FakeDriver d;
  d.register_agent();
  d.advance(2'500);
  d.hear();
  d.advance(2'900);
  CHECK(!d.closed);  // 2.9 s since the last message, the bound is 3 s
  d.advance(200);
  REQUIRE(d.closed);
  CHECK(d.closed->goodbye == qf::v1::GOODBYE_REASON_IDLE_TIMEOUT);
  CHECK(!d.closed->error);
  CHECK(d.now.mono_ms - d.session.last_seen_mono_ms() > 3'000);
}

TEST_CASE("liveness: a peer that never registers is closed after twice the ack timeout", "[session_machine]") {
  FakeDriver d;
  d.advance(9'999);
  CHECK(!d.closed);
  d.advance(10);
  REQUIRE(d.closed);
  CHECK(d.closed->goodbye == qf::v1::GOODBYE_REASON_IDLE_TIMEOUT);
}

TEST_CASE("cancel against a late start: at_least_once re-routes with a cancel, the late answer stays unrouted",
          "[session_machine]") {
  FakeDriver d;
  d.register_agent();
  d.offer("r1", k_at_least_once);
  REQUIRE(d.run_sends.size() == 1);
  const auto deadline = d.run_sends[0].start_deadline_unix_ms;
  CHECK(deadline > d.now.unix_ms);
  CHECK(d.session.holds("r1"));  // a cancel asked for now goes to this session
  // The session lives (heartbeats) but the run's answer does not come: a slow agent is asked
  // again, not re-routed, until the acceptance bound (4 x the ack timeout).
  for (int i = 0; i < 19; ++i) {
    d.advance(1'000);
    d.hear();
  }
  CHECK(d.resolutions.empty());
  CHECK(d.run_sends.size() >= 3);
  for (int i = 0; i < 3; ++i) {
    d.advance(1'000);
    d.hear();
  }
  REQUIRE(!d.closed);
  REQUIRE(d.resolutions_of("r1", RunDelivery::refused) == 1);
  CHECK(d.resolutions[0].cause == DeliveryCause::unconfirmed);
  CHECK(d.now.unix_ms > deadline);  // re-routed only once the first agent can no longer start it
  REQUIRE(!d.cancels.empty());
  CHECK(d.cancels.back().execution_id == "r1");
  CHECK(!d.session.holds("r1"));
  // The agent thaws and answers late: it does not resolve again nor route the run here.
  d.answer("r1", qf::v1::EXECUTION_STATUS_RUNNING);
  CHECK(d.resolutions.size() == 1);
  CHECK(!d.session.holds("r1"));
}

TEST_CASE("cancel against a late start: at_most_once ends lost with a cancel, never re-routed", "[session_machine]") {
  FakeDriver d;
  d.register_agent();
  d.offer("r1", k_at_most_once);
  for (int i = 0; i < 30; ++i) {  // the session lives, the run is never answered
    d.advance(1'000);
    d.hear();
  }
  REQUIRE(d.resolutions.size() == 1);
  CHECK(d.resolutions[0].outcome == RunDelivery::lost);
  CHECK(d.resolutions[0].cause == DeliveryCause::unanswered);
  REQUIRE(!d.cancels.empty());
  CHECK(d.cancels.back().execution_id == "r1");
  CHECK(d.run_sends.size() > 1);  // asked again while waiting
  d.answer("r1", qf::v1::EXECUTION_STATUS_SUCCESS);
  CHECK(d.resolutions.size() == 1);
}

TEST_CASE("goodbye with runs in progress: no new runs, results awaited, only what is still open is decided at the end",
          "[session_machine]") {
  for (const auto guarantee : {k_at_least_once, k_at_most_once}) {
    FakeDriver d;
    d.register_agent();
    d.offer("finishes", guarantee);
    d.answer("finishes", qf::v1::EXECUTION_STATUS_RUNNING);
    d.offer("still-running", guarantee);
    d.answer("still-running", qf::v1::EXECUTION_STATUS_RUNNING);
    d.offer("unanswered", guarantee);
    REQUIRE(d.session.routed_count() == 2);

    qf::v1::Goodbye bye;
    bye.set_reason(qf::v1::GOODBYE_REASON_DRAINING);
    CHECK(!d.session.goodbye(bye));  // not a loss: the session stays
    CHECK(d.session.draining());
    // Within the agent's grace, one run reports its result.
    d.advance(1'000);
    d.hear();
    const auto result = d.record("finishes", qf::v1::EXECUTION_STATUS_SUCCESS);
    d.perform(d.session.record(result));
    d.session.stored(result);
    CHECK(!d.session.holds("finishes"));
    CHECK(d.session.holds("still-running"));

    // The grace ends: the agent closes with a goodbye.
    bye.set_reason(qf::v1::GOODBYE_REASON_SHUTDOWN);
    bye.set_message("stopped");
    auto close = d.session.goodbye(bye);
    REQUIRE(close);
    CHECK(close->why == "goodbye: stopped");
    auto ended = d.session.ended(d.now, false);
    REQUIRE(ended.routed.size() == 1);
    CHECK(ended.routed[0].execution_id() == "still-running");  // recorded agent lost
    REQUIRE(ended.delivery.size() == 1);
    const auto& resolve = std::get<act::Resolve>(ended.delivery[0]);
    CHECK(resolve.execution_id == "unanswered");
    if (guarantee == k_at_most_once) {
      CHECK(resolve.outcome == RunDelivery::lost);
    } else {
      CHECK(resolve.outcome == RunDelivery::refused);
      REQUIRE(resolve.not_before_mono_ms);  // re-routed after the start deadline
      CHECK(*resolve.not_before_mono_ms > d.now.mono_ms);
    }
  }
}

TEST_CASE("a log request is failed when its answer does not come within twice the ack timeout", "[session_machine]") {
  FakeDriver d;
  d.register_agent();
  d.session.log_requested(1, d.now);
  d.session.log_requested(2, d.now);
  d.advance(2'000);
  d.hear();
  CHECK(d.session.log_answered(1));
  CHECK(!d.session.log_answered(1));
  d.advance(2'000);
  d.hear();
  d.advance(2'000);
  d.hear();
  d.advance(2'000);
  d.hear();
  CHECK(d.logs_timed_out.empty());
  d.advance(2'100);
  CHECK(d.logs_timed_out == std::vector<std::uint64_t>{2});
  CHECK(!d.session.log_answered(2));
}
