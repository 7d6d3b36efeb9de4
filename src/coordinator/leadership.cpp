// SPDX-License-Identifier: Apache-2.0
// The leadership state machine: lease answers and monotonic time in, lead / step down /
// next attempt out.
#include "leadership.hpp"

#include <algorithm>
#include <utility>

#include <fmt/format.h>

namespace quartzflow::detail {

namespace {

// A standby that saw the lease expire soon polls again just after the expiry, plus this
// (the database's and this host's clocks tick alike; the epsilon covers rounding).
constexpr std::int64_t k_expiry_epsilon_ms = 5;

}  // namespace

LeadershipMachine::LeadershipMachine(LeadershipOptions options) : options_(std::move(options)) {
  if (options_.ttl.count() <= 0) options_.ttl = std::chrono::milliseconds{1'500};
  if (options_.renew_every.count() <= 0) options_.renew_every = options_.ttl / 3;
  if (options_.safety_margin.count() <= 0) options_.safety_margin = options_.ttl / 10;
  // A renewal must be able to land before the deadline.
  options_.renew_every = std::min(options_.renew_every, options_.ttl - options_.safety_margin);
}

std::int64_t LeadershipMachine::next_wake_mono_ms() const noexcept {
  // An attempt in flight: its answer moves things on (a leader still has its deadline).
  std::int64_t wake = in_flight_ ? k_never : next_attempt_ms_;
  if (leading_) wake = std::min(wake, deadline_ms_);
  return wake;
}

std::optional<std::int64_t> LeadershipMachine::deadline_mono_ms() const noexcept {
  if (!leading_) return std::nullopt;
  return deadline_ms_;
}

bool LeadershipMachine::attempt_started(std::int64_t now_mono_ms) {
  if (in_flight_ || stopped_) return false;
  in_flight_ = true;
  attempt_start_ms_ = now_mono_ms;
  // Until it is answered, no other attempt; the deadline still wakes a leader.
  next_attempt_ms_ = now_mono_ms + options_.renew_every.count();
  return true;
}

LeadershipActions LeadershipMachine::on_lease(const LeaderLease& lease, std::int64_t now_mono_ms) {
  LeadershipActions actions;
  if (!in_flight_) return actions;
  in_flight_ = false;
  const bool initial = !answered_once_;
  answered_once_ = true;
  lease_ = lease;
  if (stopped_) return actions;
  const bool mine = lease.holder_id == options_.coordinator_id && lease.held();
  if (!mine) {
    if (leading_)
      actions = step_down(fmt::format("the lease is held by \"{}\" at epoch {}", lease.holder_id, lease.epoch));
    // Poll again at the lease's expiry when that comes before the usual period.
    std::int64_t next = attempt_start_ms_ + options_.renew_every.count();
    if (lease.held())
      next = std::min(next, attempt_start_ms_ + (lease.expires_at_unix_ms - lease.now_unix_ms) + k_expiry_epsilon_ms);
    else next = now_mono_ms;  // free (released): take it now
    next_attempt_ms_ = std::max(next, now_mono_ms);
    return actions;
  }
  const std::int64_t deadline = attempt_start_ms_ + options_.ttl.count() - options_.safety_margin.count();
  if (leading_ && lease.epoch != epoch_)
    actions = step_down(fmt::format("the lease moved from epoch {} to {}", epoch_, lease.epoch));
  if (deadline <= now_mono_ms) {
    // The answer came too late to lead on it: try again at once.
    if (leading_) actions = step_down("the lease renewal answered after the local deadline");
    next_attempt_ms_ = now_mono_ms;
    return actions;
  }
  deadline_ms_ = deadline;
  next_attempt_ms_ = attempt_start_ms_ + options_.renew_every.count();
  if (!leading_) {
    leading_ = true;
    epoch_ = lease.epoch;
    actions.lead = true;
    actions.epoch = lease.epoch;
    actions.initial = initial;
  }
  return actions;
}

LeadershipActions LeadershipMachine::on_attempt_failed(std::int64_t now_mono_ms, std::string why) {
  LeadershipActions actions;
  if (!in_flight_) return actions;
  in_flight_ = false;
  if (leading_) actions = step_down("the lease renewal failed: " + why);
  next_attempt_ms_ = std::max(next_attempt_ms_, now_mono_ms);
  return actions;
}

LeadershipActions LeadershipMachine::on_wake(std::int64_t now_mono_ms) {
  if (leading_ && now_mono_ms >= deadline_ms_)
    return step_down(fmt::format("no lease renewal within {} ms (local deadline passed)",
                                 options_.ttl.count() - options_.safety_margin.count()));
  return {};
}

LeadershipActions LeadershipMachine::stop() {
  stopped_ = true;
  if (leading_) return step_down("the coordinator is stopping");
  return {};
}

LeadershipActions LeadershipMachine::step_down(std::string reason) {
  leading_ = false;
  LeadershipActions actions;
  actions.step_down = true;
  actions.reason = std::move(reason);
  return actions;
}

}  // namespace quartzflow::detail
