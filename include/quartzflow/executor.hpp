// SPDX-License-Identifier: Apache-2.0
// Executors run one attempt of a task: shell commands, HTTP calls and plugins. The engine
// owns policies (timeouts, retries, overlap); an executor only starts, stops and reports.
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

#include <quartzflow/time.hpp>
#include <quartzflow/v1/execution.pb.h>
#include <quartzflow/v1/task.pb.h>

namespace quartzflow {

/// One attempt of a task, as handed to an executor.
struct RunRequest {
  std::string execution_id;
  /// The task config the run started with, never null. Shared (with the engine's slot and the
  /// other runs started from the same config): a run copies no config.
  std::shared_ptr<const v1::Task> task;
  std::map<std::string, std::string> params;   ///< dynamic params (reach shells as env only)
  Instant scheduled{};                         ///< the nominal fire time
  std::uint32_t attempt = 1;
  std::uint32_t shard_index = 0;
  std::uint32_t shard_total = 0;
  std::string agent_id;                        ///< the agent running it (QF_AGENT_ID); empty: none
  std::string hostname;                        ///< that agent's host name (QF_HOSTNAME); empty: none
  std::size_t capture_limit = 1 << 20;         ///< output kept beyond this is counted, not kept
  /// Output as it is produced (shell: each read of the pipe, captured or not), for live
  /// logs; called on the executor's executor, never after the completion. Empty: not wanted.
  std::function<void(std::string_view)> on_output{};
};

/// How an attempt ended.
struct RunOutcome {
  v1::ExecutionStatus status = v1::EXECUTION_STATUS_FAILURE;  ///< SUCCESS..CANCELLED
  std::optional<int> exit_code;     ///< shell: the exit status when it exited normally
  int signal = 0;                   ///< shell: the signal that ended it
  std::uint32_t http_status = 0;    ///< http: the response status
  std::string output;               ///< captured output (stdout and stderr as they came)
  std::uint64_t output_bytes = 0;   ///< all output produced, captured or not
  std::string error_message;        ///< human-readable detail of a failure
  std::string failure_reason;       ///< short, rankable: `exit code 3`, `timeout`, `spawn failed`
};

/// Why the engine stops a run.
enum class StopReason { timeout, cancel };

/// A run in progress. Destroying it does not stop the run; `stop` does.
class RunningTask {
 public:
  virtual ~RunningTask() = default;
  /// Asks the run to end: shells get SIGTERM to the process group, then SIGKILL after the
  /// grace period. The completion then reports TIMEOUT or CANCELLED.
  virtual void stop(StopReason reason) = 0;
};

using RunCompletion = std::function<void(RunOutcome)>;

/**
 * Starts attempts of one kind of task.
 *
 * `start` takes the request by value (the engine moves it in; an executor keeps what it needs
 * without copying), never calls `done` inline, and calls `done` exactly once, on the executor
 * given at construction. Thread safety: use from that executor only.
 */
class Executor {
 public:
  virtual ~Executor() = default;
  virtual std::unique_ptr<RunningTask> start(RunRequest request, RunCompletion done) = 0;
};

/**
 * Shell commands in their own process group, started by a spawner process.
 *
 * At its first run the executor forks a small spawner (`qf-spawner` in `ps`) that holds
 * three descriptors; it starts each run (clone and exec, on 4 threads), reaps it and reports
 * its exit status, so a spawn costs the same however many runs and sockets the agent holds,
 * and a run costs the agent one descriptor (its output pipe). Timeouts and cancels signal the
 * run's whole group through the spawner.
 *
 * The processes die with the agent: the spawner has a parent-death signal, on which it
 * SIGKILLs every run's process group and exits, and each run's first process has a
 * parent-death SIGKILL of its own. Linux sends the parent-death signal when the *thread* that
 * forked the spawner ends: run the io_context on threads that live as long as the runs (the
 * host's main thread or a long-lived pool). Processes that leave their group (setsid) escape
 * the kill but not the next start: `TaskEngine::start` kills what is left of a run it finds
 * unfinished (by `QF_EXECUTION_ID` in their environment) and records it. If the spawner
 * itself is killed, its runs end FAILURE `signal 9` and the next run starts a new one.
 */
std::unique_ptr<Executor> make_shell_executor(boost::asio::any_io_executor executor,
                                              std::chrono::seconds default_kill_grace);

/**
 * HTTP(S) calls described by `v1::HttpSpec`: one request per attempt (plus up to 5
 * redirects when `follow_redirects`), TLS verified through OpenSSL against the system trust
 * store or `ca_file`, with SNI and host name checks unless `insecure_skip_verify`.
 *
 * The request carries the spec's headers and body, `User-Agent: quartzflow/<version>`,
 * `X-QF-Execution-Id` and `X-QF-Task-Id`. `${name}` in the URL, header values and body is
 * replaced by the run's parameter `name`: percent-encoded in the URL, JSON-escaped in a body
 * whose Content-Type names JSON (or, without one, that starts with `{` or `[`), as is
 * elsewhere; `$${` is a literal `${`. Up to
 * `RunRequest::capture_limit` bytes of the final response body become the output; the rest
 * is read and counted in `output_bytes`, up to 64 MiB.
 *
 * Outcome: SUCCESS when the status is in `success_status_codes`/`success_status_classes`
 * (2xx when both are empty); otherwise FAILURE with `http_status`, reason `http <code>`.
 * Transport errors are FAILURE with `http_status` 0 and a reason such as `dns lookup failed`,
 * `connection refused`, `tls handshake failed` or `tls certificate verification failed`.
 * `HttpSpec::timeout_seconds` > 0 is a deadline of its own that ends the run as TIMEOUT.
 *
 * Cancellation: `RunningTask::stop` closes the connection and reports TIMEOUT or CANCELLED
 * at once (posted). Thread safety: use from `executor` only; name resolution runs on Asio's
 * internal resolver thread and completes on `executor`.
 */
std::unique_ptr<Executor> make_http_executor(boost::asio::any_io_executor executor);

/// What a C++ plugin function receives.
struct PluginCall {
  const RunRequest* request;  ///< valid for the duration of the call (the task: `request->task`)
  const v1::PluginSpec* spec;
};

/// What a C++ plugin function returns.
struct PluginResult {
  bool success = true;
  std::string output;
  std::string error_message;
};

/// A task body registered by name. It runs on the io_context thread, so keep it short or
/// hand the work to your own thread and return.
using PluginFunction = std::function<PluginResult(const PluginCall&)>;

/// Registry of plugin functions by name, and the executor that runs them.
class PluginExecutor : public Executor {
 public:
  explicit PluginExecutor(boost::asio::any_io_executor executor);
  ~PluginExecutor() override;
  /// Registers or replaces `name`.
  void add(std::string name, PluginFunction function);
  bool contains(const std::string& name) const;
  std::unique_ptr<RunningTask> start(RunRequest request, RunCompletion done) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/**
 * Loads every `*.so` in `directory` that exports `qf_plugin_entry` (see plugin_abi.h) and
 * registers it by its name. Returns how many were loaded; each refusal (not a plugin,
 * wrong ABI version, dlopen error) is appended to `errors` with the file name.
 */
std::size_t load_plugins(PluginExecutor& executor, const std::string& directory, std::vector<std::string>& errors);

}  // namespace quartzflow
