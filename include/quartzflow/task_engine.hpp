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
  std::string hostname{};                        ///< recorded with each execution
  std::chrono::seconds progress_interval{10};    ///< RUNNING progress events while a run lasts
  std::chrono::seconds default_kill_grace{10};   ///< SIGTERM -> SIGKILL, unless the task says
  std::size_t capture_limit = 1 << 20;           ///< output kept per run for the full log
  std::uint32_t default_max_queued = 100;        ///< QUEUE policy bound when the task sets none
  std::size_t misfire_fire_all_limit = 100;      ///< fire_all bound when the task sets none
  /// Longest single timer wait; the engine re-reads the wall clock at least this often,
  /// so a clock step never leaves a task waiting for the wrong instant.
  std::chrono::seconds max_timer_wait{60};
  /// While the LocalStore cannot commit (full disk, write error), how often the engine
  /// retries the final records it holds and probes the store; the first success ends the
  /// outage.
  std::chrono::milliseconds store_probe_interval{5000};
  /// Fires not started during an outage are recorded as SKIPPED once the store can write
  /// again, up to this many (the rest are counted and logged).
  std::size_t max_recorded_store_skips = 1000;
  /// Fires not started because the store's write queue is over half its bound
  /// (`LocalStoreOptions::max_queued_bytes`) are held, up to this many, and recorded SKIPPED
  /// once the writer catches up; beyond it they are counted (`StoreHealth`) and logged. A
  /// scheduled fire held costs 32 bytes: the default, 32 MB, holds 60 s of 2x overload at
  /// 10,000 fires/s with room to spare (20,000 held dropped most of such an overload's skips).
  std::size_t max_recorded_backlog_skips = 1'000'000;
};

/**
 * The engine's view of its LocalStore: whether it can commit, and what an outage cost.
 * While a commit fails (full disk, write error) the store is unavailable: no new run starts
 * (scheduled fires and retries are counted, then recorded SKIPPED with the detail `local
 * store full: ...` or `local store unavailable: ...` once the store writes again; `trigger`
 * and `run` are refused), runs in progress go on and their final records wait in memory,
 * reported only once committed. A probe every `store_probe_interval` ends the outage.
 */
struct StoreHealth {
  bool available = true;                       ///< false during an outage
  bool disk_full = false;                      ///< the outage is a full disk (SQLITE_FULL / ENOSPC)
  std::string error;                           ///< the store's message; empty while available
  std::int64_t unavailable_since_unix_ms = 0;  ///< start of the outage; 0 while available
  std::uint64_t fires_not_started = 0;         ///< fires not started during the current outage
  std::uint64_t uncommitted_records = 0;       ///< final records held in memory until they commit
  // Totals since the engine was made.
  std::uint64_t outages = 0;                   ///< times the store became unavailable
  std::uint64_t fires_not_started_total = 0;   ///< fires not started during any outage
  std::uint64_t failed_commits = 0;            ///< record writes whose commit failed
  // Back-pressure: the store's write queue (LocalStoreOptions::max_queued_bytes).
  /// More than half the queue's bound waits to commit: fires (scheduled, retries, routed
  /// runs) are not started, `trigger` is refused, queued runs wait; each fire not started is
  /// counted and recorded SKIPPED (`local store backlog: ...`) behind the live runs' records:
  /// runs start again once the queue is below half its bound, and the held records are written
  /// at most 10,000/s and only while less than 1/8 of the bound is queued (all at once when
  /// the engine stops). The backlog ends when all are written and a quarter of the bound is
  /// free.
  bool backlogged = false;
  std::uint64_t backlog_fires_not_started = 0;        ///< during the current (or last) backlog
  std::uint64_t backlogs = 0;                         ///< backlogs since the engine was made
  std::uint64_t backlog_fires_not_started_total = 0;  ///< fires not started for a backlog, ever
  /// Of those, the fires beyond `max_recorded_backlog_skips` held at once: counted, not recorded.
  std::uint64_t backlog_fires_not_recorded_total = 0;
};

/// Called on the engine's executor when the store becomes unavailable or available again.
using StoreHealthHandler = std::function<void(const StoreHealth&)>;

/// Every state change of every execution: PENDING, RUNNING (and progress), final states.
/// Final states are delivered only after they are durable in the LocalStore: a final record
/// whose commit failed is held and written again, and delivered when it commits (or never,
/// when the process ends first; the next start then records the run FAILURE, `agent
/// restarted`, as for any crash).
using ExecutionSink = std::function<void(const v1::Execution&)>;

/// Output of a running execution as it is produced: `data` starts `offset` bytes into its
/// log (raw bytes, not yet checked as UTF-8). For live logs; not durable.
using OutputSink = std::function<void(const std::string& execution_id, std::uint64_t offset, std::string_view data)>;

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
/// A task a configuration delta left out, and why (see `TaskEngine::apply_delta`).
struct TaskConfigProblem {
  std::string task_id;
  ValidationError error;
};

/// Counters of configuration work, for tests and metrics: they show that a delta costs what
/// it changes (O(changed tasks)), not what the engine holds. Totals since construction.
struct TaskEngineConfigStats {
  std::uint64_t tasks_validated = 0;  ///< tasks checked by validate_task (apply, apply_delta)
  std::uint64_t slots_built = 0;      ///< task slots built or rebuilt (schedule parsed, timer armed)
  std::uint64_t deltas_applied = 0;   ///< apply_delta calls
};

class TaskEngine {
 public:
  TaskEngine(boost::asio::any_io_executor executor, LocalStore& store, TaskEngineOptions options = {});
  ~TaskEngine();
  TaskEngine(const TaskEngine&) = delete;
  TaskEngine& operator=(const TaskEngine&) = delete;

  void set_sink(ExecutionSink sink);
  /// Told of the output of running executions as it comes (shell tasks), for live logs.
  void set_output_sink(OutputSink sink);
  /// Told when the store becomes unavailable or available again (see `StoreHealth`).
  void set_store_health_handler(StoreHealthHandler handler);
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

  /**
   * Changes the configuration by a delta, in time proportional to the tasks it names (not
   * to the tasks held): each upsert is validated once and only its slot is rebuilt; the
   * other tasks keep their slots and timers. An upsert that is invalid, or whose name
   * another task holds, is left out (a held task of that id is removed, as `apply` of the
   * whole configuration without it would) and returned with why; the rest is applied.
   * A later upsert of the same id wins. Removed ids not held are ignored. Queued fires of
   * removed tasks are CANCELLED; runs in progress keep the config they started with.
   * @return the tasks left out; empty when the whole delta applied.
   */
  std::vector<TaskConfigProblem> apply_delta(std::vector<v1::Task> upserts,
                                             const std::vector<std::string>& removed_task_ids,
                                             std::uint64_t version);
  std::uint64_t config_version() const noexcept;
  /// Tasks held now.
  std::size_t task_count() const noexcept;
  /// See `TaskEngineConfigStats`.
  const TaskEngineConfigStats& config_stats() const noexcept;

  /**
   * Recovers from the store (records left RUNNING or PENDING by a crash become FAILURE with
   * reason `agent restarted`), applies each task's misfire policy to the fires owed since
   * the last recorded one, then arms the schedules.
   */
  void start();

  /// Runs a task now (trigger MANUAL); returns the execution id, or nullopt with `ec` set
  /// (unknown task: invalid_argument; stopping or the store unavailable: conflict) and `detail`.
  std::optional<std::string> trigger(std::string_view task_id, std::map<std::string, std::string> params,
                                     error_code& ec, std::string* detail = nullptr);
  /// The same, throwing `quartzflow::error` (with the detail) when refused.
  std::string trigger(std::string_view task_id, std::map<std::string, std::string> params = {}) {
    return *value_or_throw(
        [&](error_code& ec, std::string& detail) { return trigger(task_id, std::move(params), ec, &detail); });
  }

  /**
   * Runs an execution the coordinator routed here (ONE/SHARDED placement, manual triggers,
   * retries on another agent) under the task's policies, with the coordinator's execution
   * id, attempt, shard and params. The config is `request.task` when set, else the held
   * config of the task. Retries stay on this agent unless the task's retry policy says
   * `retry_on_another_agent` (the coordinator then retries). Returns false with `ec` and
   * `detail` when refused (unknown task, invalid config, stopping, the store unavailable:
   * `errc::conflict`); an execution id that is
   * already pending or running here is accepted again without a second run.
   */
  bool run(const v1::RunRequest& request, error_code& ec, std::string* detail = nullptr);

  /// Cancels a PENDING or RUNNING execution; false when there is none with that id. The
  /// record says `cancelled by <by>` and, when given, `: <reason>`.
  bool cancel(std::string_view execution_id, std::string_view by = "user", std::string_view reason = {});

  /**
   * Stops firing, gives running attempts `grace` to end on their own, then stops them
   * (they end CANCELLED, reason `agent shutdown`), waits for every record to be durable and
   * calls `done` (posted). Final records the store could not commit (an outage) are tried
   * once more, then logged as lost: the next start records those runs FAILURE.
   */
  void stop(std::chrono::seconds grace, std::function<void()> done);

  /// Whether the LocalStore can commit, and the counters of its outages.
  StoreHealth store_health() const;

  std::size_t running_count() const noexcept;
  std::size_t queued_count() const noexcept;
  /// Ids of executions that are PENDING or RUNNING now.
  std::vector<std::string> active_executions() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace quartzflow
