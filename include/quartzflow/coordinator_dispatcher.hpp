// SPDX-License-Identifier: Apache-2.0
// The coordinator side of the agent protocol (agent_protocol.proto) over a Transport: one
// session per agent (registration and group resolution, config pull and push, routed runs,
// result ingest, cancel, liveness). Includes nothing of the agent side.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/any_io_executor.hpp>

#include <quartzflow/error.hpp>
#include <quartzflow/scheduler.hpp>
#include <quartzflow/store.hpp>
#include <quartzflow/transport.hpp>
#include <quartzflow/v1/agent.pb.h>
#include <quartzflow/v1/agent_protocol.pb.h>

namespace quartzflow {

struct CoordinatorDispatcherOptions {
  std::string coordinator_id = "coordinator";
  /// Told to agents at registration, in whole seconds (at least 1).
  std::chrono::milliseconds heartbeat_interval{15'000};
  std::uint32_t missed_heartbeats = 3;           ///< silent this long: the agent is offline
  std::chrono::milliseconds ack_timeout{5'000};  ///< config push ACK, run acceptance
  /// Longest wait for the answer to a run while its agent's session lives (a slow answer is
  /// not a refusal: the request is sent again every `ack_timeout` to ask for the run's
  /// state); 0 = 4 x `ack_timeout`. Then the run is re-routed (at_least_once, fenced by the
  /// request's start deadline) or recorded FAILURE `agent lost` (at_most_once).
  std::chrono::milliseconds acceptance_wait_max{0};
  std::uint32_t max_repushes = 3;           ///< then the push is marked FAILED
  std::uint32_t max_batch_records = 500;    ///< told to agents at registration
  std::size_t max_message_bytes = 4 << 20;  ///< larger messages end the session
  /// Told to agents at registration; agents of another major version, or a minor version
  /// more than one older or newer, are refused (ProtocolError and Goodbye UNSUPPORTED_VERSION).
  /// Empty = this library's version.
  std::string coordinator_version{};
};

/// What the dispatcher reports to its host (the Coordinator, tests, the admin API later).
struct CoordinatorDispatcherEvents {
  /// An agent came online or went offline (the stored record after the change).
  std::function<void(const v1::Agent&)> agent_state;
  /// An execution record from an agent was stored (`inserted` or `merged`).
  std::function<void(const v1::Execution&)> execution;
  /// A routed run that was not final when its agent's session ended, now stored as
  /// FAILURE `agent lost`.
  std::function<void(const v1::Execution&)> run_lost;
  /// The push status of an agent changed (IN_SYNC, PENDING, PARTIAL, FAILED).
  std::function<void(const std::string& agent_id, const v1::ConfigPushStatus&)> push_status;
  /// Output of a running execution as its agent streams it (`delta` starts `offset` bytes
  /// into its log); not stored.
  std::function<void(const v1::Execution&, std::uint64_t offset, const std::string& delta)> output;
};

/// Counters for tests, benchmarks and metrics.
struct CoordinatorDispatcherStats {
  std::uint64_t sessions_opened = 0;
  std::uint64_t pushes_sent = 0;  ///< ConfigDelta/ConfigSnapshot sends, re-pushes included
  std::uint64_t repushes = 0;
  std::uint64_t pushes_failed = 0;  ///< pushes never acknowledged
  std::uint64_t runs_sent = 0;
  std::uint64_t runs_accepted = 0;
  std::uint64_t runs_refused = 0;          ///< refused, unanswered or the session ended first
  std::uint64_t runs_reasked = 0;          ///< run requests sent again to ask a slow agent for the state
  std::uint64_t runs_unconfirmed = 0;      ///< at_least_once runs re-routed without an answer (fenced)
  std::uint64_t duplicate_executions = 0;  ///< records of a run executed by an agent it no longer belongs to
  std::uint64_t output_refused = 0;        ///< live output for a run the session neither holds nor fired (dropped)
  std::uint64_t records_ingested = 0;      ///< execution records stored (counting duplicates)
  std::uint64_t records_duplicate = 0;     ///< of those, already stored with the same state
  std::uint64_t runs_lost = 0;
  std::uint64_t protocol_errors = 0;     ///< malformed or unexpected messages received
  std::uint64_t daily_stats_stored = 0;  ///< DailyStatsReports stored and acknowledged
};

/**
 * The coordinator side. It is the Scheduler's AgentDirectory (online agents of a task's
 * groups, with their load) and RunSink (RunRequest, accepted once the agent answers with
 * the run's state).
 *
 * Configuration versions are global (the Store's); each session knows what its agent
 * holds: the first pull of a session is answered with a snapshot, later changes with a
 * delta from the last acknowledged version (a base mismatch makes the agent pull a
 * snapshot). A push unacknowledged after `ack_timeout` is re-sent up to `max_repushes`
 * times, then marked FAILED on the agent (visible in the Store and the `push_status`
 * event); the agent's next heartbeat shows its stale version and it pulls again.
 *
 * Thread safety: not thread-safe; use from its executor. Cancellation: `stop` ends every
 * session (Goodbye SHUTDOWN); completions owed are called with errors.
 */
class CoordinatorDispatcher final : public AgentDirectory, public RunSink {
 public:
  CoordinatorDispatcher(boost::asio::any_io_executor executor, Store& store, CoordinatorDispatcherOptions options = {});
  ~CoordinatorDispatcher() override;
  CoordinatorDispatcher(const CoordinatorDispatcher&) = delete;
  CoordinatorDispatcher& operator=(const CoordinatorDispatcher&) = delete;

  void set_events(CoordinatorDispatcherEvents events);
  /// Loads the catalog (tasks, groups, version) and marks agents left ONLINE by a previous
  /// run OFFLINE; then sessions may be accepted.
  void start(std::function<void(error_code)> ready);
  /// Takes a new connection (from a transport's listener).
  void accept(std::shared_ptr<Connection> connection);
  /// After a committed change of one task (created, updated, enabled, disabled): pushes it
  /// to the agents that hold it or should (cost per session, not per task in the catalog).
  void task_changed(const v1::Task& task);
  /// After a task was deleted (the catalog's new config version).
  void task_removed(const std::string& task_id, std::int64_t config_version);
  /// After any other catalog change (groups, agent moves): reloads tasks, groups and the
  /// online agents' records, and pushes to every session whose task set changed. `done`
  /// after the reload.
  void catalog_changed(std::function<void()> done = {});
  /// Cancels a routed execution on its agent; `done` gets the agent's answer (the status
  /// after the request) or errc::not_found when no online agent holds it.
  void cancel(const std::string& execution_id, std::string reason, std::string requested_by,
              std::function<void(error_code, v1::ExecutionStatus)> done);
  /**
   * Asks an online agent for a slice of an execution's full log (LogRequest, answered by
   * one LogChunk). `done` gets the chunk (its `error` says why the agent has no log, e.g.
   * retention), or errc::not_found when the agent is not online or its session ends first,
   * or `timed_out` after 2 x `ack_timeout` without an answer. On the executor, never inline.
   */
  void fetch_log(const std::string& agent_id, const std::string& execution_id, std::uint64_t offset,
                 std::uint32_t max_bytes, std::function<void(error_code, v1::LogChunk)> done);
  /// Ends every session (Goodbye SHUTDOWN) and stops the liveness sweep.
  void stop();

  /**
   * Several coordinators: this one does not lead (a standby, or it stepped down). Agents
   * that register are refused (ProtocolError UNAVAILABLE, fatal) with `redirect_address` =
   * `leader_agent_address` (empty: unknown). With `close_sessions`, the sessions open now end
   * (Goodbye, reconnect at once); their runs stay open for the leader to reconcile, as at a
   * stop, and nothing about them is stored here.
   */
  void stand_by(std::string leader_agent_address, bool close_sessions);
  /**
   * Certificates refused from now on, by the SHA-256 (hex) of their DER (agent revocation):
   * a connection presenting one is closed at accept, and open sessions on one end now.
   */
  void set_revoked_certificates(std::set<std::string> sha256);
  /// SHA-256 (hex) of the certificate of an online agent's session; empty when not online.
  std::string session_certificate_sha256(const std::string& agent_id) const;
  /// Accepts registrations again (this coordinator leads).
  void lead();
  bool standing_by() const noexcept;

  /// Agent ids with an open, registered session.
  std::vector<std::string> online_agents() const;
  /// True when an online agent holds the execution (it was routed there, or the agent
  /// reported it running when it registered, or its answer is awaited).
  bool held_by_online_agent(const std::string& execution_id) const;
  /// A task as last loaded from the store.
  std::optional<v1::Task> task(const std::string& task_id) const;
  const CoordinatorDispatcherStats& stats() const noexcept;

  // AgentDirectory
  std::vector<AgentLoad> eligible_agents(const v1::Task& task) override;
  // RunSink
  void send_run(const std::string& agent_id, const v1::RunRequest& run, std::function<void(bool)> done) override;
  /**
   * Sends `run` with a start deadline (now + `ack_timeout` less a clock margin) and waits
   * for the agent's answer: any state of the run (an update, a result) accepts it, a
   * refusal refuses it. A session that stays silent, or no answer within
   * `acceptance_wait_max`, ends it by the task's delivery guarantee: at_least_once re-routes
   * (`refused`, after the deadline, with a cancel to the agent), at_most_once records
   * FAILURE `agent lost` (`lost`). A session that ends while waiting: at_least_once is
   * refused once the deadline has passed, at_most_once is lost.
   */
  void deliver_run(const std::string& agent_id, const v1::RunRequest& run,
                   std::function<void(RunDelivery)> done) override;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace quartzflow
