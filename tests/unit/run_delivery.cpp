// SPDX-License-Identifier: Apache-2.0
// The coordinator's run delivery state machine (src/dispatcher/run_delivery.hpp) with a fake
// clock: the delivery guarantees of the README, each in microseconds, without a network.
#include <catch2/catch.hpp>

#include <optional>
#include <string>
#include <vector>

#include "dispatcher/run_delivery.hpp"

namespace qf = quartzflow;
using qf::RunDelivery;
using qf::detail::DeliveryCause;
using qf::detail::DeliveryNow;
using qf::detail::RunDeliveryMachine;
namespace act = qf::detail::delivery_action;

namespace {

constexpr auto k_at_least_once = qf::v1::DELIVERY_GUARANTEE_AT_LEAST_ONCE;
constexpr auto k_at_most_once = qf::v1::DELIVERY_GUARANTEE_AT_MOST_ONCE;

/// A session's driver over a fake clock: performs the actions and keeps what they did.
struct FakeSession {
  explicit FakeSession(qf::detail::RunDeliveryOptions options = {5'000, 0}) : machine(options) {}

  RunDeliveryMachine machine;
  DeliveryNow now{1'000'000, 1'800'000'000'000};
  std::uint64_t next_message_id = 0;
  bool connection_open = true;
  std::vector<act::SendRun> sends;
  std::vector<std::uint64_t> send_ids;  ///< message id of each send (0: it could not leave)
  std::vector<act::SendCancel> cancels;
  std::vector<act::Resolve> resolutions;
  std::optional<std::int64_t> wake;

  void perform(qf::detail::DeliveryActions actions) {
    for (auto& a : actions) {
      if (auto* send = std::get_if<act::SendRun>(&a)) {
        sends.push_back(*send);
        const std::uint64_t id = connection_open ? ++next_message_id : 0;
        send_ids.push_back(id);
        perform(machine.sent(send->execution_id, id));
      } else if (auto* cancel = std::get_if<act::SendCancel>(&a)) {
        cancels.push_back(*cancel);
      } else if (auto* resolve = std::get_if<act::Resolve>(&a)) {
        resolutions.push_back(*resolve);
      } else if (auto* timer = std::get_if<act::SetTimer>(&a)) {
        wake = timer->at_mono_ms;
      }
    }
  }

  bool offer(const std::string& id, qf::v1::DeliveryGuarantee guarantee) {
    auto offered = machine.offer(id, guarantee, now);
    perform(std::move(offered.actions));
    return offered.joined;
  }

  /// Advances both clocks by `ms` (the wall clock by `wall_ms` when given), firing the timer
  /// at each instant it asked for on the way.
  void advance(std::int64_t ms, std::optional<std::int64_t> wall_ms = {}) {
    const std::int64_t end = now.mono_ms + ms;
    const std::int64_t wall_end = now.unix_ms + wall_ms.value_or(ms);
    const std::int64_t wall_minus_mono = wall_end - end;
    while (wake && *wake <= end) {
      const auto at = *wake;
      wake.reset();
      now.mono_ms = std::max(now.mono_ms, at);
      now.unix_ms = now.mono_ms + wall_minus_mono;
      perform(machine.timer_fired(now));
    }
    now.mono_ms = end;
    now.unix_ms = wall_end;
  }

  std::uint64_t last_message_id() const { return send_ids.empty() ? 0 : send_ids.back(); }
};

}  // namespace

TEST_CASE("a slow acknowledgement from a live session is not a refusal", "[run_delivery]") {
  FakeSession s;
  REQUIRE_FALSE(s.offer("t:1", k_at_least_once));
  REQUIRE(s.sends.size() == 1);
  CHECK(s.sends[0].delivery_attempt == 1);
  CHECK(s.sends[0].start_deadline_unix_ms == s.now.unix_ms + 4'000);  // ack_timeout less a 1 s margin
  const auto deadline = s.sends[0].start_deadline_unix_ms;

  // The session keeps talking (heartbeats), the answer does not come: asked again, not re-routed.
  for (int i = 0; i < 3; ++i) {
    s.advance(1'000);
    s.machine.heard();
    s.advance(4'000);
  }
  REQUIRE(s.resolutions.empty());
  REQUIRE(s.cancels.empty());
  REQUIRE(s.sends.size() == 4);
  CHECK(s.sends[3].delivery_attempt == 4);
  CHECK(s.sends[3].reason == qf::detail::SendReason::reask);
  CHECK(s.sends[3].start_deadline_unix_ms == deadline);  // the fence does not move

  // The answer to the third request arrives: accepted, once.
  s.machine.heard();
  s.perform(s.machine.update(s.send_ids[2], "t:1"));
  REQUIRE(s.resolutions.size() == 1);
  CHECK(s.resolutions[0].outcome == RunDelivery::accepted);
  CHECK(s.resolutions[0].cause == DeliveryCause::answered);
  CHECK_FALSE(s.machine.pending("t:1"));
  s.advance(60'000);
  CHECK(s.resolutions.size() == 1);
  CHECK(s.cancels.empty());
}

TEST_CASE("a live session that never answers is re-routed at the bound, with a cancel", "[run_delivery]") {
  FakeSession s({5'000, 12'000});
  s.offer("t:1", k_at_least_once);
  for (int i = 0; i < 20 && s.resolutions.empty(); ++i) {
    s.advance(1'000);
    s.machine.heard();
  }
  REQUIRE(s.resolutions.size() == 1);
  CHECK(s.resolutions[0].outcome == RunDelivery::refused);
  CHECK(s.resolutions[0].cause == DeliveryCause::unconfirmed);
  CHECK(s.resolutions[0].heard);
  CHECK(s.resolutions[0].waited_ms == 15'000);  // checks at 5 and 10 s ask again; 15 s >= the 12 s bound
  REQUIRE(s.cancels.size() == 1);
  CHECK(s.cancels[0].execution_id == "t:1");
}

TEST_CASE("at_least_once re-routes a silent session's run only after the start deadline, with a cancel",
          "[run_delivery]") {
  SECTION("the deadline has passed at the first check") {
    FakeSession s;
    s.offer("t:1", k_at_least_once);
    s.advance(4'999);
    CHECK(s.resolutions.empty());
    s.advance(1);
    REQUIRE(s.resolutions.size() == 1);
    CHECK(s.resolutions[0].outcome == RunDelivery::refused);
    CHECK(s.resolutions[0].cause == DeliveryCause::unconfirmed);
    CHECK_FALSE(s.resolutions[0].heard);
    REQUIRE(s.cancels.size() == 1);
    CHECK(s.now.unix_ms > s.sends[0].start_deadline_unix_ms);
  }
  SECTION("the wall clock stepped back: the run waits for its deadline in that clock") {
    FakeSession s;
    s.offer("t:1", k_at_least_once);
    const auto deadline = s.sends[0].start_deadline_unix_ms;
    s.advance(5'000, 2'000);  // five seconds passed, the wall clock shows two
    CHECK(s.resolutions.empty());
    CHECK(s.cancels.empty());
    s.advance(2'000);  // wall: deadline - 0
    CHECK(s.resolutions.empty());
    s.advance(1);
    REQUIRE(s.resolutions.size() == 1);
    CHECK(s.resolutions[0].outcome == RunDelivery::refused);
    CHECK(s.now.unix_ms == deadline + 1);
    CHECK(s.cancels.size() == 1);
  }
}

TEST_CASE("at_most_once never re-routes an unconfirmed run: it is lost", "[run_delivery]") {
  FakeSession s;  // bound: 4 x 5 s
  s.offer("t:1", k_at_most_once);
  s.advance(19'999);  // silent: asked again at 5, 10 and 15 s all the same
  CHECK(s.resolutions.empty());
  CHECK(s.sends.size() == 4);
  CHECK(s.cancels.empty());
  s.advance(1);
  REQUIRE(s.resolutions.size() == 1);
  CHECK(s.resolutions[0].outcome == RunDelivery::lost);
  CHECK(s.resolutions[0].cause == DeliveryCause::unanswered);
  CHECK(s.resolutions[0].waited_ms == 20'000);
  REQUIRE(s.cancels.size() == 1);
  CHECK(s.cancels[0].reason.find("agent lost") != std::string::npos);

  SECTION("nor when its session ends") {
    FakeSession t;
    t.offer("t:2", k_at_most_once);
    t.advance(100);
    t.perform(t.machine.session_ended(t.now, false));
    REQUIRE(t.resolutions.size() == 1);
    CHECK(t.resolutions[0].outcome == RunDelivery::lost);
    CHECK(t.resolutions[0].cause == DeliveryCause::session_ended);
  }
}

TEST_CASE("a refusal is re-routed at once, without a cancel", "[run_delivery]") {
  for (auto guarantee : {k_at_least_once, k_at_most_once}) {
    FakeSession s;
    s.offer("t:1", guarantee);
    s.advance(10);
    auto refusal = s.machine.refused(s.last_message_id());
    REQUIRE(refusal.kind == RunDeliveryMachine::Refusal::Kind::refused);
    CHECK(refusal.execution_id == "t:1");
    s.perform(std::move(refusal.actions));
    REQUIRE(s.resolutions.size() == 1);
    CHECK(s.resolutions[0].outcome == RunDelivery::refused);
    CHECK(s.resolutions[0].cause == DeliveryCause::refused_by_agent);
    CHECK(s.cancels.empty());
    // An error that answers no run request is not the machine's.
    CHECK(s.machine.refused(0).kind == RunDeliveryMachine::Refusal::Kind::not_a_run);
    CHECK(s.machine.refused(999).kind == RunDeliveryMachine::Refusal::Kind::not_a_run);
  }
}

TEST_CASE("a refusal of a request asked again is not certain: the answer to the latest decides", "[run_delivery]") {
  for (auto guarantee : {k_at_least_once, k_at_most_once}) {
    // A frozen agent holds both requests; thawed, it refuses the first (its start deadline has
    // passed) and starts the second (still within its own deadline).
    FakeSession s;
    s.offer("t:1", guarantee);
    s.advance(4'000);
    s.machine.heard();  // the session lives: asked again
    s.advance(1'000);
    REQUIRE(s.sends.size() == 2);
    auto refusal = s.machine.refused(s.send_ids[0]);
    CHECK(refusal.kind == RunDeliveryMachine::Refusal::Kind::superseded);
    CHECK(refusal.actions.empty());
    CHECK(s.machine.pending("t:1"));  // not re-routed: the second request may be running
    s.perform(s.machine.update(s.send_ids[1], "t:1"));
    REQUIRE(s.resolutions.size() == 1);
    CHECK(s.resolutions[0].outcome == RunDelivery::accepted);
  }
  // A refusal of the latest request is certain.
  FakeSession s;
  s.offer("t:2", k_at_most_once);
  s.advance(5'000);
  REQUIRE(s.sends.size() == 2);
  auto refusal = s.machine.refused(s.send_ids[1]);
  CHECK(refusal.kind == RunDeliveryMachine::Refusal::Kind::refused);
  s.perform(std::move(refusal.actions));
  REQUIRE(s.resolutions.size() == 1);
  CHECK(s.resolutions[0].outcome == RunDelivery::refused);
}

TEST_CASE("a run whose request never left is refused at once", "[run_delivery]") {
  FakeSession s;
  s.connection_open = false;
  s.offer("t:1", k_at_most_once);  // even at_most_once: it certainly did not start there
  REQUIRE(s.resolutions.size() == 1);
  CHECK(s.resolutions[0].outcome == RunDelivery::refused);
  CHECK(s.resolutions[0].cause == DeliveryCause::never_sent);
  CHECK(s.machine.pending_count() == 0);
}

TEST_CASE("a re-send that cannot leave changes nothing: the run still waits for its answer", "[run_delivery]") {
  FakeSession s;
  s.offer("t:1", k_at_most_once);
  s.connection_open = false;
  s.advance(5'000);
  CHECK(s.sends.size() == 2);
  CHECK(s.resolutions.empty());
  CHECK(s.machine.pending("t:1"));
  s.perform(s.machine.update(0, "t:1"));  // the run's state, not in reply to a request
  REQUIRE(s.resolutions.size() == 1);
  CHECK(s.resolutions[0].outcome == RunDelivery::accepted);
}

TEST_CASE("a late answer after a re-route does not resolve the run twice", "[run_delivery]") {
  FakeSession s;
  s.offer("t:1", k_at_least_once);
  const auto first_request = s.last_message_id();
  s.advance(5'000);
  REQUIRE(s.resolutions.size() == 1);
  CHECK(s.resolutions[0].outcome == RunDelivery::refused);
  s.perform(s.machine.update(first_request, "t:1"));
  s.perform(s.machine.answered("t:1"));
  auto late_refusal = s.machine.refused(first_request);
  CHECK(late_refusal.kind != RunDeliveryMachine::Refusal::Kind::refused);
  s.perform(std::move(late_refusal.actions));
  s.perform(s.machine.session_ended(s.now, false));
  s.advance(60'000);
  CHECK(s.resolutions.size() == 1);
}

TEST_CASE("session end: at_most_once is lost, at_least_once refused once the deadline passed", "[run_delivery]") {
  FakeSession s;
  s.offer("a", k_at_least_once);
  s.offer("m", k_at_most_once);
  const auto deadline = s.sends[0].start_deadline_unix_ms;
  s.advance(1'000);
  s.perform(s.machine.session_ended(s.now, false));
  REQUIRE(s.resolutions.size() == 2);
  for (const auto& r : s.resolutions) {
    CHECK(r.cause == DeliveryCause::session_ended);
    if (r.execution_id == "m") {
      CHECK(r.outcome == RunDelivery::lost);
      CHECK_FALSE(r.not_before_mono_ms);
    } else {
      CHECK(r.outcome == RunDelivery::refused);
      REQUIRE(r.not_before_mono_ms);
      // The re-route waits until the first agent can no longer start it.
      CHECK(*r.not_before_mono_ms - s.now.mono_ms == deadline - s.now.unix_ms + 1);
    }
  }
  CHECK(s.cancels.empty());
  CHECK(s.machine.pending_count() == 0);
  CHECK_FALSE(s.machine.next_wake());

  SECTION("past the deadline: at once") {
    FakeSession t;
    t.offer("a", k_at_least_once);
    t.now.mono_ms += 4'500;
    t.now.unix_ms += 4'500;
    t.perform(t.machine.session_ended(t.now, false));
    REQUIRE(t.resolutions.size() == 1);
    CHECK(t.resolutions[0].not_before_mono_ms == t.now.mono_ms);
  }
  SECTION("a stopping coordinator refuses both at once (its next start reconciles them)") {
    FakeSession t;
    t.offer("a", k_at_least_once);
    t.offer("m", k_at_most_once);
    t.perform(t.machine.session_ended(t.now, true));
    REQUIRE(t.resolutions.size() == 2);
    for (const auto& r : t.resolutions) {
      CHECK(r.outcome == RunDelivery::refused);
      CHECK(r.cause == DeliveryCause::coordinator_stopping);
      CHECK_FALSE(r.not_before_mono_ms);
    }
  }
}

TEST_CASE("a re-send of the same id while it is pending joins the first", "[run_delivery]") {
  FakeSession s;
  CHECK_FALSE(s.offer("t:1", k_at_least_once));
  s.advance(100);
  CHECK(s.offer("t:1", k_at_least_once));
  CHECK(s.sends.size() == 1);
  CHECK(s.machine.pending_count() == 1);
  s.perform(s.machine.answered("t:1"));
  CHECK(s.resolutions.size() == 1);
  // Resolved: a new offer is a new delivery.
  CHECK_FALSE(s.offer("t:1", k_at_least_once));
  CHECK(s.sends.size() == 2);
  CHECK(s.sends[1].delivery_attempt == 1);
}

TEST_CASE("runs moved to the agent's new session are asked again there with their fence", "[run_delivery]") {
  FakeSession old_session;
  old_session.offer("t:1", k_at_least_once);
  const auto deadline = old_session.sends[0].start_deadline_unix_ms;
  old_session.advance(2'000);
  auto moved = old_session.machine.release();
  REQUIRE(moved.size() == 1);
  old_session.perform(old_session.machine.session_ended(old_session.now, false));
  CHECK(old_session.resolutions.empty());

  FakeSession s;
  s.now = old_session.now;
  s.machine.heard();  // its Register
  s.perform(s.machine.adopt(std::move(moved), s.now));
  REQUIRE(s.sends.size() == 1);
  CHECK(s.sends[0].delivery_attempt == 2);
  CHECK(s.sends[0].start_deadline_unix_ms == deadline);
  CHECK(s.sends[0].reason == qf::detail::SendReason::new_session);
  // The answer to the old session's request cannot reach this one; this one's does.
  s.perform(s.machine.update(s.last_message_id(), "t:1"));
  REQUIRE(s.resolutions.size() == 1);
  CHECK(s.resolutions[0].outcome == RunDelivery::accepted);
}

TEST_CASE("the machine asks for one wake at the earliest instant a run needs", "[run_delivery]") {
  FakeSession s;
  s.offer("a", k_at_least_once);
  REQUIRE(s.wake);
  CHECK(*s.wake == s.now.mono_ms + 5'000);
  s.advance(1'000);
  s.offer("b", k_at_least_once);
  CHECK(*s.wake == s.now.mono_ms + 4'000);  // still a's
  s.perform(s.machine.answered("a"));
  s.advance(4'000);  // a's wake finds nothing due and asks for b's
  CHECK(s.resolutions.size() == 1);
  REQUIRE(s.wake);
  CHECK(*s.wake == s.now.mono_ms + 1'000);
  s.advance(1'000);
  CHECK(s.resolutions.size() == 2);
  CHECK(s.machine.pending_count() == 0);
}
