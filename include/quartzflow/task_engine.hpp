// SPDX-License-Identifier: Apache-2.0
// TaskEngine: holds task configs, fires the local schedules, runs attempts through the
// executors under the task's policies, and records every state change in the LocalStore.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/any_io_executor.hpp>

#include <quartzflow/error.hpp>
#include <quartzflow/executor.hpp>
#include <quartzflow/local_store.hpp>
#include <quartzflow/v1/agent_protocol.pb.h>
#include <quartzflow/v1/execution.pb.h>
#include <quartzflow/v1/task.pb.h>

namespace quartzflow {

struct TaskEngineOptions {
  std::string agent_id = "local";               ///< the last part of execution ids
  std::string hostname;                          ///< recorded with each execution
  std::chrono::seconds progress_interval{10};    ///< RUNNING progress events while a run lasts
  std::chrono::seconds default_kill_grace{10};   ///< SIGTERM -> SIGKILL, unless the task says
  std::size_t capture_limit = 1 << 20;           ///< output kept per run for the full log
  std::uint32_t default_max_queued = 100;        ///< QUEUE policy bound when the task sets none
  std::size_t misfire_fire_all_limit = 100;      ///< fire_all bound when the task sets none
  /// Longest single timer wait; the engine re-reads the wall clock at least this often,
  /// so a clock step never leaves a task waiting for the wrong instant.
  std::chrono::seconds max_timer_wait{60};
};

/// Every state change of every execution: PENDING, RUNNING (and progress), final states.
/// Final states are delivered after they are durable in the LocalStore.
using ExecutionSink = std::function<void(const v1::Execution&)>;

/**
 * The agent's engine. Tasks with placement `all` (or unspecified) are fired locally from
 * their schedule; every task may also be run on request (`trigger`, `run`).
 *
 * Policies: timeout (default 300 s), retries with backoff (exit codes, timeout, HTTP status
 * classes), `max_concurrent_runs`, overlap (`allow`, `skip`, `queue`, `replace`), cancel
 * from PENDING or RUNNING, misfires after a restart (`skip`, `fire_once`, `fire_all`).
 *
 * Thread safety: not thread-safe; use from the executor given at construction.
 */
class TaskEngine {
 public:
  TaskEngine(boost::asio::any_io_executor executor, LocalStore& store, TaskEngineOptions options = {});
  ~TaskEngine();
  TaskEngine(const TaskEngine&) = delete;
  TaskEngine& operator=(const TaskEngine&) = delete;

  void set_sink(ExecutionSink sink);
  /// C++ task bodies for `plugin` tasks.
  PluginExecutor& plugins();
  /// Replaces the executor of one kind (e.g. an HTTP executor, or a fake in tests).
  void set_executor(v1::Task::ExecutorCase kind, std::unique_ptr<Executor> executor);

  /**
   * Validates every task, then replaces the configuration at once (nothing changes when one
   * is invalid). Runs in progress keep the config they started with; queued fires of removed
   * tasks are CANCELLED. Safe before or after `start`.
   */
  bool apply(std::vector<v1::Task> tasks, std::uint64_t version, ValidationError* error = nullptr);
  std::uint64_t config_version() const noexcept;

  /**
   * Recovers from the store (records left RUNNING or PENDING by a crash become FAILURE with
   * reason `agent restarted`), applies each task's misfire policy to the fires owed since
   * the last recorded one, then arms the schedules.
   */
  void start();

  /// Runs a task now (trigger MANUAL); returns the execution id, or nullopt with `ec` set
  /// (unknown task) and `detail`.
  std::optional<std::string> trigger(std::string_view task_id, std::map<std::string, std::string> params,
                                     error_code& ec, std::string* detail = nullptr);

  /**
   * Runs an execution the coordinator routed here (ONE/SHARDED placement, manual triggers,
   * retries on another agent) under the task's policies, with the coordinator's execution
   * id, attempt, shard and params. The config is `request.task` when set, else the held
   * config of the task. Retries stay on this agent unless the task's retry policy says
   * `retry_on_another_agent` (the coordinator then retries). Returns false with `ec` and
   * `detail` when refused (unknown task, invalid config, stopping); an execution id that is
   * already pending or running here is accepted again without a second run.
   */
  bool run(const v1::RunRequest& request, error_code& ec, std::string* detail = nullptr);

  /// Cancels a PENDING or RUNNING execution; false when there is none with that id. The
  /// record says `cancelled by <by>` and, when given, `: <reason>`.
  bool cancel(std::string_view execution_id, std::string_view by = "user", std::string_view reason = {});

  /**
   * Stops firing, gives running attempts `grace` to end on their own, then stops them
   * (they end CANCELLED, reason `agent shutdown`), waits for every record to be durable and
   * calls `done` (posted).
   */
  void stop(std::chrono::seconds grace, std::function<void()> done);

  std::size_t running_count() const noexcept;
  std::size_t queued_count() const noexcept;
  /// Ids of executions that are PENDING or RUNNING now.
  std::vector<std::string> active_executions() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace quartzflow
