// SPDX-License-Identifier: Apache-2.0
// The leadership state machine (src/coordinator/leadership.hpp) on a fake monotonic clock:
// taking the lease, renewals, a paused leader past its local deadline, a failed renewal, a
// takeover by another holder, a standby polling at the expiry.
#include <catch2/catch.hpp>

#include "coordinator/leadership.hpp"

namespace qf = quartzflow;
using qf::detail::LeadershipMachine;
using std::chrono::milliseconds;

namespace {

qf::detail::LeadershipOptions options(std::string id) {
  qf::detail::LeadershipOptions o;
  o.coordinator_id = std::move(id);
  o.ttl = milliseconds{1'500};  // renew every 500 ms, local deadline 1,350 ms after an attempt starts
  return o;
}

/// The lease as the database answers: held by `holder` at `epoch`, `remaining_ms` left.
qf::LeaderLease lease(std::string holder, std::uint64_t epoch, std::int64_t remaining_ms) {
  qf::LeaderLease l;
  l.holder_id = std::move(holder);
  l.holder_addresses.agent = l.holder_id + ":7443";
  l.epoch = epoch;
  l.now_unix_ms = 1'000'000;
  l.expires_at_unix_ms = l.now_unix_ms + remaining_ms;
  return l;
}

}  // namespace

TEST_CASE("leadership: the first answer naming this coordinator makes it lead at once, as the initial term",
          "[leadership]") {
  LeadershipMachine m(options("a"));
  CHECK(m.next_attempt_mono_ms() == 0);
  REQUIRE(m.attempt_started(100));
  CHECK_FALSE(m.attempt_started(101));  // one attempt at a time
  auto actions = m.on_lease(lease("a", 1, 1'500), 110);
  CHECK(actions.lead);
  CHECK(actions.initial);
  CHECK(actions.epoch == 1);
  CHECK_FALSE(actions.step_down);
  CHECK(m.leading());
  CHECK(m.epoch() == 1);
  CHECK(m.deadline_mono_ms() == 100 + 1'500 - 150);  // from the attempt's start, not its answer
  CHECK(m.next_attempt_mono_ms() == 600);
  CHECK(m.may_send(1'449));
  CHECK_FALSE(m.may_send(1'450));
}

TEST_CASE("leadership: renewals keep the epoch and move the local deadline", "[leadership]") {
  LeadershipMachine m(options("a"));
  m.attempt_started(0);
  m.on_lease(lease("a", 4, 1'500), 5);
  for (std::int64_t t = 500; t <= 5'000; t += 500) {
    CHECK(m.on_wake(t).step_down == false);
    REQUIRE(m.attempt_started(t));
    auto actions = m.on_lease(lease("a", 4, 1'500), t + 20);
    CHECK_FALSE(actions.lead);
    CHECK_FALSE(actions.step_down);
    CHECK(m.deadline_mono_ms() == t + 1'350);
  }
  CHECK(m.epoch() == 4);
}

TEST_CASE("leadership: a paused leader (the clock jumps past its deadline) steps down before sending anything",
          "[leadership]") {
  LeadershipMachine m(options("a"));
  m.attempt_started(0);
  m.on_lease(lease("a", 1, 1'500), 5);
  CHECK(m.may_send(1'000));
  // SIGSTOP for 10 s: the first thing after waking is the timer.
  CHECK_FALSE(m.may_send(11'000));
  auto actions = m.on_wake(11'000);
  CHECK(actions.step_down);
  CHECK_FALSE(m.leading());
  CHECK(m.epoch() == 0);
  // Meanwhile b took over: the next attempt says so; a stays a standby.
  REQUIRE(m.attempt_started(11'001));
  actions = m.on_lease(lease("b", 2, 1'400), 11'010);
  CHECK_FALSE(actions.lead);
  CHECK_FALSE(actions.step_down);  // already down
  CHECK(m.last_lease().holder_id == "b");
}

TEST_CASE("leadership: a renewal answered after the local deadline does not extend it", "[leadership]") {
  LeadershipMachine m(options("a"));
  m.attempt_started(0);
  m.on_lease(lease("a", 1, 1'500), 5);
  REQUIRE(m.attempt_started(500));
  // The store took 2 s: the wake at the old deadline comes first.
  CHECK(m.next_wake_mono_ms() == 1'350);
  CHECK(m.on_wake(1'350).step_down);
  // The answer (still this coordinator's lease) counts from the attempt's start: too late.
  auto actions = m.on_lease(lease("a", 1, 1'500), 2'500);
  CHECK_FALSE(actions.lead);
  CHECK_FALSE(m.leading());
  CHECK(m.next_attempt_mono_ms() == 2'500);  // try again at once
  REQUIRE(m.attempt_started(2'500));
  actions = m.on_lease(lease("a", 1, 1'500), 2'510);
  CHECK(actions.lead);
  CHECK_FALSE(actions.initial);
}

TEST_CASE("leadership: a failed renewal steps down at once", "[leadership]") {
  LeadershipMachine m(options("a"));
  m.attempt_started(0);
  m.on_lease(lease("a", 1, 1'500), 5);
  REQUIRE(m.attempt_started(500));
  auto actions = m.on_attempt_failed(520, "store database unavailable");
  CHECK(actions.step_down);
  CHECK(actions.reason.find("store database unavailable") != std::string::npos);
  CHECK_FALSE(m.may_send(521));
}

TEST_CASE("leadership: a leader whose lease another holder took steps down, and leads again at a new epoch",
          "[leadership]") {
  LeadershipMachine m(options("a"));
  m.attempt_started(0);
  m.on_lease(lease("a", 1, 1'500), 5);
  REQUIRE(m.attempt_started(500));
  auto actions = m.on_lease(lease("b", 2, 1'500), 510);
  CHECK(actions.step_down);
  CHECK_FALSE(actions.lead);
  // The same holder at a newer epoch (its lease expired and it took it again): a new term.
  LeadershipMachine n(options("a"));
  n.attempt_started(0);
  n.on_lease(lease("a", 1, 1'500), 5);
  REQUIRE(n.attempt_started(500));
  actions = n.on_lease(lease("a", 2, 1'500), 505);
  CHECK(actions.step_down);
  CHECK(actions.lead);
  CHECK(actions.epoch == 2);
}

TEST_CASE("leadership: a standby polls at the lease's expiry, and at once when the lease is free", "[leadership]") {
  LeadershipMachine m(options("b"));
  REQUIRE(m.attempt_started(1'000));
  auto actions = m.on_lease(lease("a", 1, 200), 1'010);
  CHECK_FALSE(actions.lead);
  CHECK_FALSE(m.leading());
  CHECK(m.next_attempt_mono_ms() == 1'000 + 200 + 5);  // sooner than the 500 ms period
  REQUIRE(m.attempt_started(1'205));
  m.on_lease(lease("a", 1, 1'500), 1'210);  // renewed meanwhile
  CHECK(m.next_attempt_mono_ms() == 1'705);
  REQUIRE(m.attempt_started(1'705));
  m.on_lease(lease("", 1, -1), 1'710);  // released (clean stop)
  CHECK(m.next_attempt_mono_ms() == 1'710);
  REQUIRE(m.attempt_started(1'710));
  actions = m.on_lease(lease("b", 2, 1'500), 1'720);
  CHECK(actions.lead);
  CHECK_FALSE(actions.initial);
  CHECK(actions.epoch == 2);
}

TEST_CASE("leadership: stopping steps a leader down and ends the attempts", "[leadership]") {
  LeadershipMachine m(options("a"));
  m.attempt_started(0);
  m.on_lease(lease("a", 1, 1'500), 5);
  CHECK(m.stop().step_down);
  CHECK_FALSE(m.attempt_started(600));
}
