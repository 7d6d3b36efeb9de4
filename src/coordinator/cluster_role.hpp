// SPDX-License-Identifier: Apache-2.0
// A coordinator's role among several on one database: leader (the scheduler fires under the
// lease epoch, agents are accepted) or standby (the scheduler is stopped, agents are
// redirected to the leader). Drives the LeadershipDriver and applies its decisions to the
// Scheduler and the CoordinatorDispatcher.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/any_io_executor.hpp>

#include <quartzflow/coordinator.hpp>

namespace quartzflow::detail {

/**
 * Thread safety: not thread-safe; use from the coordinator's executor. Cancellation: `stop`
 * steps down and releases the lease; destruction cancels the timers.
 */
class ClusterRole {
 public:
  /// `took_lease()`: this coordinator leads from now (the Coordinator catches up with the
  /// catalog the old leader may have changed last). `begin_term(started_unix_ms)`: the wait
  /// for agents is over, the scheduler may start (the Coordinator reconciles the runs left
  /// open, then starts the scheduler).
  ClusterRole(boost::asio::any_io_executor executor, Store& store, Scheduler& scheduler,
              CoordinatorDispatcher& dispatcher, const CoordinatorOptions& options, std::function<void()> took_lease,
              std::function<void(std::int64_t started_unix_ms)> begin_term);
  ~ClusterRole();
  ClusterRole(const ClusterRole&) = delete;
  ClusterRole& operator=(const ClusterRole&) = delete;

  /// Standby until the first lease attempt answers; `ready` then (leading or not).
  void start(std::function<void()> ready);
  /// Steps down (the scheduler was stopped by the caller) and releases the lease.
  void stop();

  bool leading() const noexcept;
  /// Leading, and the term's scheduler may send: commands standbys queued may run here.
  bool runs_commands() const noexcept;
  /// False while the last lease attempt failed (the database could not be reached).
  bool store_reachable() const noexcept;
  /// The epoch the scheduler fires under; 0 when not leading.
  std::uint64_t epoch() const noexcept;
  LeaderLease lease() const;
  /// A 503 text for operations a standby refuses, naming the leader's admin address.
  std::string not_leader_message() const;
  void cluster_status(std::function<void(error_code, v1::ClusterStatus)> done);

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace quartzflow::detail
