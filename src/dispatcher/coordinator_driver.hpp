// SPDX-License-Identifier: Apache-2.0
// The coordinator's driver of agent sessions (CoordinatorDispatcher::Impl), shared by its
// files: sessions and config (coordinator_dispatcher.cpp), run delivery (coordinator_runs.cpp),
// records, output and logs (coordinator_records.cpp). The decisions are in session_machine.hpp.
#pragma once

#include <algorithm>
#include <cstdint>
#include <deque>
#include <optional>
#include <set>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include <quartzflow/catalog.hpp>
#include <quartzflow/coordinator_dispatcher.hpp>
#include <quartzflow/execution_status.hpp>
#include <quartzflow/log.hpp>

#include "protocol.hpp"
#include "run_delivery.hpp"
#include "session_machine.hpp"

namespace quartzflow {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using detail::now_unix_ms;

namespace coordinator_driver {

/// What the driver keeps of a run awaiting its answer; its delivery state is in the
/// session's machine.
struct RunPayload {
  v1::Envelope request;  ///< the RunRequest, sent again to ask a slow agent for the run's state
  std::function<void(RunDelivery)> done;
};

/// The driver of one connection: the socket, one timer, and the completions of what the
/// session's machine (detail::CoordinatorSession) decides about.
struct Session : std::enable_shared_from_this<Session> {
  Session(asio::any_io_executor ex, std::shared_ptr<Connection> c, detail::SessionOptions options,
          detail::DeliveryNow now)
      : writer(std::move(c)), machine(options, now), timer(ex) {}
  detail::EnvelopeWriter writer;
  detail::CoordinatorSession machine;  ///< the decisions: registration, config, liveness, runs
  bool ended = false;
  asio::steady_timer timer;                        ///< the one wake the machine asks for
  std::optional<std::int64_t> timer_at_ms;         ///< the instant it is armed for
  std::uint64_t timer_arms = 0;                    ///< tells a stale wake apart
  std::map<std::string, RunPayload> run_payloads;  ///< by execution id, for the runs awaited
  std::map<std::uint64_t, std::function<void(error_code, v1::ExecutionStatus)>> pending_cancels;
  /// LogRequests awaiting their LogChunk, by request id (CoordinatorDispatcher::fetch_log).
  std::map<std::uint64_t, std::function<void(error_code, v1::LogChunk)>> pending_logs;
};

}  // namespace coordinator_driver

using coordinator_driver::RunPayload;
using coordinator_driver::Session;

/// Thread safety: not thread-safe, used from the dispatcher's executor. Cancellation: stop()
/// and the destructor cancel the sessions' timers.
struct CoordinatorDispatcher::Impl : std::enable_shared_from_this<CoordinatorDispatcher::Impl> {
  Impl(asio::any_io_executor ex, Store& s, CoordinatorDispatcherOptions o)
      : executor(ex), store(s), options(std::move(o)) {}

  asio::any_io_executor executor;
  Store& store;
  CoordinatorDispatcherOptions options;
  CoordinatorDispatcherEvents events;
  CoordinatorDispatcherStats stats;
  bool stopped = false;
  // Several coordinators: a standby refuses registrations with a redirect to the leader.
  bool standby = false;
  std::string leader_agent_address;
  /// SHA-256 of revoked agent certificates (set_revoked_certificates).
  std::set<std::string> revoked_certificates;
  // Catalog mirror.
  std::map<std::string, v1::Task, std::less<>> tasks;
  std::vector<v1::Group> groups;
  std::int64_t version = 0;
  // Task changes heard while a catalog reload was being read: a snapshot read before a change
  // committed is installed after it, so the changes are applied again on top of it (else a
  // task created meanwhile vanished from the mirror and from its agents' config).
  struct TaskChange {
    std::string task_id;
    std::optional<v1::Task> task;  ///< nullopt: removed
    std::int64_t version = 0;
  };
  std::vector<TaskChange> changes_during_reload;
  int reloads_reading = 0;
  // Sessions.
  std::set<std::shared_ptr<Session>> sessions;
  std::map<std::string, std::shared_ptr<Session>> by_agent;
  std::deque<std::weak_ptr<Session>> push_queue;  // sessions waiting for a push after a change
  bool push_drain_posted = false;
  std::uint64_t last_log_request = 0;

  struct CatalogSnapshot {
    std::vector<v1::Task> tasks;
    std::vector<v1::Group> groups;
    std::int64_t version = 0;
    std::map<std::string, v1::Agent> agents;
  };

  detail::CatalogView catalog_view() const { return {tasks, version}; }

  // --- sessions, config and liveness (coordinator_dispatcher.cpp) ------------------------
  static void load_catalog(StoreTransaction& tx, CatalogSnapshot& out, const std::vector<std::string>& agent_ids);
  /// Replaces the mirror with `snapshot`, then applies again the task changes heard since
  /// the reload's read began (`changes_from`: their index in changes_during_reload).
  void install_catalog(CatalogSnapshot& snapshot, std::size_t changes_from = SIZE_MAX);
  /// A task change while reloads are being read is kept for install_catalog.
  void remember_change(const std::string& task_id, const v1::Task* task, std::int64_t version);
  detail::SessionOptions session_options() const;
  /// Sends, stores the push status, performs run deliveries, fails timed-out log requests,
  /// closes; then arms the session's timer for the machine's next wake.
  void perform(Session& session, detail::SessionActions actions);
  /// A standby's answer to Register: an error naming the leader's agent address, then close.
  void redirect(const std::shared_ptr<Session>& session, std::uint64_t message_id);
  /// Ends a session the machine decided to end (a protocol failure, silence, a goodbye).
  void close_session(const std::shared_ptr<Session>& session, const detail::SessionClose& close);
  /// Arms the session's timer for the machine's next wake when it is earlier than the armed
  /// one (a later armed wake is left: the machine finds nothing due and asks again).
  void rearm(Session& session);
  /// A change for many agents is pushed k_pushes_per_turn sessions per handler turn: the
  /// replies of the first agents are read while the last are still being sent (pushing to
  /// 10,000 agents in one turn let their ACKs overflow the socket's receive buffer).
  void queue_push(const std::shared_ptr<Session>& session);
  void post_push_drain();
  void drain_pushes();
  void save_agent(const v1::Agent& agent);
  void on_message(const std::shared_ptr<Session>& session, const std::string& message);
  void on_register(const std::shared_ptr<Session>& session, const v1::Register& reg, std::uint64_t message_id);
  void open_session(const std::shared_ptr<Session>& session, v1::Agent agent, std::vector<v1::Execution> running,
                    std::uint64_t message_id, std::int64_t echo);
  void on_heartbeat(Session& session, const v1::Heartbeat& beat, std::uint64_t message_id, detail::DeliveryNow now);
  /// The delivery machine's clocks: steady (waits, timers) and wall (start deadlines).
  static detail::DeliveryNow delivery_now();
  detail::RunDeliveryOptions delivery_options() const;
  void end_session(const std::shared_ptr<Session>& session, const std::string& why);
  /// The heartbeat period agents are told: whole seconds, at least 1.
  std::chrono::seconds advertised_heartbeat() const;

  // --- run delivery, cancels, refusals (coordinator_runs.cpp) ----------------------------
  void on_cancel_result(Session& session, const v1::CancelResult& result, std::uint64_t in_reply_to);
  void on_error(Session& session, const v1::ProtocolError& error, std::uint64_t in_reply_to);
  v1::DeliveryGuarantee guarantee_of(const v1::RunRequest& run) const;
  /// The store's record of a run awaiting its answer, when the store has none better.
  static v1::Execution pending_record(const std::string& agent_id, const v1::Envelope& request);
  /// A second offer of a run whose answer is awaited: one answer settles both.
  static void join_completions(RunPayload& payload, std::function<void(RunDelivery)> done);
  /// Performs what the session's delivery machine decided: sends, cancels, timers, and the
  /// offers' completions (inline: this runs in a message or timer handler; deliver_run and
  /// end_session post theirs).
  void perform(Session& session, detail::DeliveryActions actions);
  void perform_send(Session& session, const detail::delivery_action::SendRun& send);
  /// A resolution during the session (answer, refusal, timer, never sent); end_session
  /// settles the rest itself.
  void perform_resolve(Session& session, const detail::delivery_action::Resolve& resolve);
  /// Stores FAILURE `agent lost` for an at_most_once run its agent never answered.
  void record_unanswered_lost(const std::string& agent_id, v1::Execution fallback, std::int64_t waited_ms);

  // --- records, live output, logs (coordinator_records.cpp) ------------------------------
  void on_update(const std::shared_ptr<Session>& session, const v1::ExecutionUpdate& update, std::uint64_t in_reply_to);
  /// Live output (live logs): taken only for a run this session holds (routed here or
  /// offered to it) or one its agent fires itself (its id ends in `:<agent id>`); any other
  /// agent could otherwise write into any execution's live log.
  void on_output(Session& session, const v1::ExecutionUpdate& update);
  /// Stores the agent's daily stats (each entry replaces the previous one), then ACKs; an
  /// entry the store refuses (bad date, no task) is skipped with a warning, the others kept.
  void on_daily_stats(const std::shared_ptr<Session>& session, const v1::DailyStatsReport& report,
                      std::uint64_t ack_to);
  /// Stores records (an upsert each, one transaction), then acknowledges them when asked.
  void ingest(const std::shared_ptr<Session>& session, std::vector<v1::Execution> records, std::uint64_t ack_to);
  void on_log_chunk(Session& session, const v1::LogChunk& chunk);
  void fail_pending_logs(Session& session);
};

}  // namespace quartzflow
