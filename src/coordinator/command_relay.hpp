// SPDX-License-Identifier: Apache-2.0
// Commands through any coordinator: a standby queues a trigger, retry or cancel in the Store's
// commands table and waits for the answer; the leader claims queued commands behind its
// fencing check, runs each through the Coordinator's own path and records the answer.
// No network between coordinators: the database is the only channel.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/any_io_executor.hpp>

#include <quartzflow/store.hpp>

namespace quartzflow::detail {

struct CommandRelayOptions {
  std::string coordinator_id;
  /// The leader's look for queued commands (one read of an index when there are none).
  std::chrono::milliseconds claim_poll{100};
  /// A waiting coordinator's look for its answers (one read while it waits, none otherwise).
  std::chrono::milliseconds answer_poll{50};
  /// How long a command waits for a leader to take it; then it is withdrawn (never run).
  std::chrono::milliseconds wait{10'000};
  /// How much longer a command a leader took waits for that leader's answer.
  std::chrono::milliseconds claimed_wait{5'000};
  /// A command claimed under an older epoch is answered `may have run` this long after the
  /// claim (until then its leader, alive but deposed, may still answer or requeue it).
  std::chrono::milliseconds abandon_after{2'000};
  /// Answered and withdrawn commands are removed this long after (by the leader, every minute).
  std::chrono::milliseconds keep{600'000};
  std::size_t claim_batch = 16;
};

struct CommandRelayHooks {
  /// The epoch this coordinator may run commands under now, 0 when it may not (a standby,
  /// or a leader whose scheduler has not started its term yet).
  std::function<std::uint64_t()> runnable_epoch;
  /// Runs a claimed command as the leader's own API would; `done` once with the answer. An
  /// answer errc::fenced means nothing was recorded (the command is queued again).
  std::function<void(const v1::Command&, std::function<void(v1::CommandResult)> done)> run;
  /// Who leads, for the messages of a command nobody answered (`the leader c1 at ...`).
  std::function<std::string()> leader_text;
};

/**
 * Thread safety: not thread-safe; use from its executor (the Store's completions come back
 * there). Cancellation: `stop` answers every waiting command errc::fenced (`stopping`) and
 * ends the timers; destruction does the same without answering.
 */
class CommandRelay {
 public:
  CommandRelay(boost::asio::any_io_executor executor, Store& store, CommandRelayOptions options,
               CommandRelayHooks hooks);
  ~CommandRelay();
  CommandRelay(const CommandRelay&) = delete;
  CommandRelay& operator=(const CommandRelay&) = delete;

  /// Starts the leader's poll (it claims only while `runnable_epoch` says so).
  void start();
  void stop();
  /**
   * Queues `command` (its origin set to this coordinator) and calls `done` once, on the
   * executor, with the leader's answer; or errc::fenced with the reason when no leader took
   * it within `wait` (withdrawn: never run), or took it and did not answer within
   * `claimed_wait` more (it may have run), or the store refused it.
   */
  void submit(v1::Command command, std::function<void(v1::CommandResult)> done);

  /// Commands this coordinator waits for now.
  std::size_t waiting() const noexcept;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

/// The answer of a failure: the error code and the validation error's parts.
v1::CommandResult command_failure(error_code ec, const ValidationError& error);

}  // namespace quartzflow::detail
