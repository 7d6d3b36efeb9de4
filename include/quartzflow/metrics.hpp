// SPDX-License-Identifier: Apache-2.0
// Prometheus metrics shared by the coordinator and the agent: run counters by task with a
// bounded number of series, and a small GET-only HTTP endpoint for hosts without one.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/any_io_executor.hpp>

#include <quartzflow/error.hpp>
#include <quartzflow/v1/execution.pb.h>

namespace quartzflow {

struct RunMetricsOptions {
  /// Tasks that get series of their own: the first this many tasks seen (a process keeps
  /// them until it restarts); the runs of any other task count under `task="_other"`
  /// (and `group="_other"`). At least 1.
  std::size_t max_task_series = 1000;
  /// Label the series with the task's group (the coordinator); agents leave it out.
  bool group_label = true;
};

/**
 * Final execution records counted for Prometheus, with bounded cardinality: at most
 * `max_task_series` + 1 tasks (the `_other` bucket) times 6 statuses for `runs_total`, one
 * last-success gauge per task with its own series, and the MISSED / SKIPPED totals (by skip
 * reason, a fixed set). Label values are lower case (`status="success"`, `reason="overlap"`).
 * The caller counts each final record once (the coordinator's observers hear of each final
 * state once); records that are not final are ignored.
 *
 * Thread safety: not thread-safe.
 */
class RunMetrics {
 public:
  explicit RunMetrics(RunMetricsOptions options = {});

  /// Counts `record` when it is final. `group_of` (the task's first group id, empty: none)
  /// is asked the first time a task gets its own series; without it the record's group.
  void count(const v1::Execution& record, const std::function<std::string(const std::string& task_id)>& group_of = {});

  /**
   * Gives `task_id` its series (while under the cap) with a last success known from
   * elsewhere (the store, at start), so that the gauge is there before the task's next
   * success; the later of it and what `count` sees is kept. `group`: its first group id.
   */
  void note_last_success(const std::string& task_id, const std::string& group, std::int64_t ended_unix_ms);

  /**
   * Appends the Prometheus text (HELP and TYPE lines included) of
   * `<prefix>runs_total{task,group,status}`, `<prefix>task_last_success_timestamp_seconds`,
   * `<prefix>runs_missed_total` and `<prefix>runs_skipped_total{reason}`.
   */
  void write(std::string& out, std::string_view prefix) const;

  /// Tasks with series of their own now (at most `max_task_series`).
  std::size_t task_series() const noexcept { return tasks_.size(); }

  /// The final statuses, in the order they are printed (lower-case label values).
  static constexpr std::array<v1::ExecutionStatus, 6> k_final_statuses{
      v1::EXECUTION_STATUS_SUCCESS,   v1::EXECUTION_STATUS_FAILURE, v1::EXECUTION_STATUS_TIMEOUT,
      v1::EXECUTION_STATUS_CANCELLED, v1::EXECUTION_STATUS_SKIPPED, v1::EXECUTION_STATUS_MISSED};

 private:
  struct TaskSeries {
    std::string group;
    std::array<std::uint64_t, k_final_statuses.size()> runs{};
    std::int64_t last_success_unix_ms = 0;
  };
  RunMetricsOptions options_;
  std::map<std::string, TaskSeries, std::less<>> tasks_;
  TaskSeries other_;
  std::uint64_t missed_ = 0;
  std::map<int, std::uint64_t> skipped_by_reason_;  ///< SkipReason number -> count
};

/// Appends `value` escaped as a Prometheus label value (backslash, double quote, newline).
void append_label_value(std::string& out, std::string_view value);

struct MetricsServerOptions {
  std::string host = "127.0.0.1";  ///< an IP address to listen on
  std::uint16_t port = 9465;       ///< 0: any free port (see `port()`)
  /// Connections open at once; one more is accepted and closed at once.
  std::size_t max_connections = 16;
  /// Request line and headers together; larger: the connection is closed.
  std::size_t max_request_bytes = 8 * 1024;
  /// To send the whole request; slower: the connection is closed.
  std::chrono::milliseconds request_timeout{5'000};
};

/**
 * A minimal HTTP/1.1 endpoint for Prometheus: `GET /metrics` answers 200 with `render()`'s
 * text (`text/plain; version=0.0.4`), another path 404, another method 405; every answer
 * closes the connection. A request that is not HTTP/1.x, larger than `max_request_bytes`
 * or slower than `request_timeout` closes the connection without an answer. No TLS and
 * no authentication: listen on loopback or a private address.
 *
 * Thread safety: not thread-safe; use from its executor (`render` runs there).
 * Cancellation: `stop` (or the destructor) closes the listener and every connection.
 */
class MetricsServer {
 public:
  using Render = std::function<std::string()>;
  MetricsServer(boost::asio::any_io_executor executor, MetricsServerOptions options, Render render);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  /// Binds and starts accepting; `ec` (address in use, bad address) with `detail` saying
  /// which address and why.
  void listen(error_code& ec, std::string* detail = nullptr);
  /// The same, throwing `quartzflow::error`.
  void listen();
  /// The bound port (after `listen`), useful with port 0.
  std::uint16_t port() const noexcept;
  void stop();

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace quartzflow
