// SPDX-License-Identifier: Apache-2.0
// The driver of a LeadershipMachine: one steady timer and the Store. Each attempt is one
// store transaction (take or renew the lease, report this coordinator in the registry); the
// machine's decisions go to the Coordinator through hooks.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/any_io_executor.hpp>

#include <quartzflow/store.hpp>

#include "leadership.hpp"

namespace quartzflow::detail {

struct LeadershipHooks {
  /// Lead under `epoch` (see LeadershipActions::initial).
  std::function<void(std::uint64_t epoch, bool initial)> lead;
  /// Stop firing at once and close the agent sessions.
  std::function<void(const std::string& reason)> step_down;
  /// Every lease answer (who leads now, where agents are redirected).
  std::function<void(const LeaderLease&)> lease_seen;
};

/**
 * Thread safety: not thread-safe; use from its executor (the Store's completions come back
 * there). Cancellation: `stop` ends the attempts; destruction cancels the timer.
 */
class LeadershipDriver {
 public:
  LeadershipDriver(boost::asio::any_io_executor executor, Store& store, LeadershipOptions options,
                   v1::CoordinatorInfo self, CoordinatorAddresses addresses);
  ~LeadershipDriver();
  LeadershipDriver(const LeadershipDriver&) = delete;
  LeadershipDriver& operator=(const LeadershipDriver&) = delete;

  void set_hooks(LeadershipHooks hooks);
  /// Makes the first attempt now; `first_answer` once it was answered (or failed), after
  /// the hooks ran (a single coordinator leads when it is called).
  void start(std::function<void()> first_answer);
  /// Steps down (hook), releases the lease when held and reports STOPPED; `done` after that
  /// transaction.
  void stop(std::function<void()> done);

  const LeadershipMachine& machine() const noexcept;
  /// False while the last lease attempt failed (the database could not be reached).
  bool store_reachable() const noexcept;
  /// True while leading and before the local deadline (checked before each send).
  bool may_send() const noexcept;
  /// Monotonic ms as the machine counts them.
  static std::int64_t now_mono_ms() noexcept;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace quartzflow::detail
