// SPDX-License-Identifier: Apache-2.0
// Leadership of a coordinator among several on one database, sans-I/O: fed the answers of
// lease attempts (StoreTransaction::acquire_or_renew_leader) and the monotonic time, it says
// when to try again, when this coordinator leads (with which epoch) and when it must stop.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include <quartzflow/store.hpp>

namespace quartzflow::detail {

struct LeadershipOptions {
  std::string coordinator_id;            ///< the lease holder id this coordinator uses
  std::chrono::milliseconds ttl{1'500};  ///< the lease's time to live in the database
  /// Between lease attempts (renewals, and a standby's polls); 0 = ttl / 3.
  std::chrono::milliseconds renew_every{0};
  /// Taken off the local deadline: a leader stops this long before its lease may expire in
  /// the database (clock rate differences, the time a fire in progress takes to notice);
  /// 0 = ttl / 10.
  std::chrono::milliseconds safety_margin{0};
};

/// What the driver does after feeding the machine (in this order: step down, then lead).
struct LeadershipActions {
  /// Stop firing AT ONCE (the scheduler), close the agent sessions; `reason` for the log.
  bool step_down = false;
  std::string reason;
  /// Start leading under `epoch` (the scheduler starts; agents are accepted). `initial`:
  /// the lease was taken by the first attempt of this process (a restart, not a takeover
  /// from a standby that watched another leader).
  bool lead = false;
  std::uint64_t epoch = 0;
  bool initial = false;
};

/**
 * One coordinator's view of the lease. Times are monotonic milliseconds (any origin) given
 * by the caller. One attempt at a time: `attempt_started(now)`, then `on_lease` with its
 * answer or `on_attempt_failed`. A leader's local deadline is the start of its last
 * successful attempt + ttl - safety margin: the database's expiry is at least that late
 * (the database computed it from a later instant), so a leader that stops at its local
 * deadline has stopped before another coordinator can take the lease.
 *
 * Thread safety: not thread-safe (a value used by one driver).
 */
class LeadershipMachine {
 public:
  explicit LeadershipMachine(LeadershipOptions options);

  /// When the next attempt is due (now for the first one).
  std::int64_t next_attempt_mono_ms() const noexcept { return next_attempt_ms_; }
  /// When the driver must call `on_wake` at the latest: the next attempt, or the local
  /// deadline of a leader; `k_never` while a standby's attempt is in flight.
  std::int64_t next_wake_mono_ms() const noexcept;
  static constexpr std::int64_t k_never = INT64_MAX;
  /// An attempt (the lease transaction) starts now; false when one is in flight already.
  bool attempt_started(std::int64_t now_mono_ms);
  /// The answer of the attempt in flight.
  LeadershipActions on_lease(const LeaderLease& lease, std::int64_t now_mono_ms);
  /// The attempt in flight failed (the database is unreachable, a storage error): a leader
  /// steps down at once (it cannot know whether its lease still holds).
  LeadershipActions on_attempt_failed(std::int64_t now_mono_ms, std::string why);
  /// The timer: a leader past its local deadline steps down (a paused process, a renewal
  /// stuck in the database).
  LeadershipActions on_wake(std::int64_t now_mono_ms);
  /// This coordinator stops: no more attempts; a leader steps down.
  LeadershipActions stop();

  bool leading() const noexcept { return leading_; }
  bool stopped() const noexcept { return stopped_; }
  /// The epoch this coordinator leads under (0 when it does not lead).
  std::uint64_t epoch() const noexcept { return leading_ ? epoch_ : 0; }
  /// A leader's local deadline (monotonic ms); nullopt when not leading.
  std::optional<std::int64_t> deadline_mono_ms() const noexcept;
  /// True while this coordinator leads and its local deadline has not passed: sends allowed.
  bool may_send(std::int64_t now_mono_ms) const noexcept { return leading_ && now_mono_ms < deadline_ms_; }
  /// The lease as last read (who leads, where to redirect agents); empty before the first.
  const LeaderLease& last_lease() const noexcept { return lease_; }
  const LeadershipOptions& options() const noexcept { return options_; }

 private:
  LeadershipActions step_down(std::string reason);

  LeadershipOptions options_;
  LeaderLease lease_;
  bool leading_ = false;
  bool stopped_ = false;
  bool in_flight_ = false;
  bool answered_once_ = false;  // an attempt has been answered (the next lead is not initial)
  std::uint64_t epoch_ = 0;
  std::int64_t attempt_start_ms_ = 0;
  std::int64_t next_attempt_ms_ = 0;
  std::int64_t deadline_ms_ = 0;
};

}  // namespace quartzflow::detail
