// SPDX-License-Identifier: Apache-2.0
// The agent side of the agent protocol. Final records are sent only after they are durable
// in the LocalStore and leave the sync queue only when the coordinator acknowledged them;
// only final records are synced (they never change, so marking one synced is always safe).
// Heartbeats carry the store's health: an agent whose store cannot commit says so at once.
#include <deque>
#include <random>
#include <unordered_map>
#include <set>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <date/date.h>
#include <fmt/format.h>

#include <quartzflow/agent_dispatcher.hpp>
#include <quartzflow/execution_status.hpp>
#include <quartzflow/log.hpp>
#include <quartzflow/task.hpp>

#include "../common/utf8.hpp"
#include "protocol.hpp"
#include "version_policy.hpp"

namespace quartzflow {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using detail::now_unix_ms;
using std::chrono::milliseconds;

namespace {

/// Where to cut `text` to at most `limit` bytes without splitting a UTF-8 sequence.
std::size_t utf8_cut(std::string_view text, std::size_t limit) {
  if (text.size() <= limit) return text.size();
  std::size_t cut = limit;
  // Step back over continuation bytes (10xxxxxx) so the cut lands on a sequence start.
  for (int back = 0; back < 3 && cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0U) == 0x80U; ++back) --cut;
  if ((static_cast<unsigned char>(text[cut]) & 0xC0U) == 0x80U) cut = limit;  // not UTF-8: cut bytes
  return cut;
}

/// How much of `text` is whole UTF-8 sequences: an incomplete one at its end (the rest is
/// still to be read) is left out; bytes that are not UTF-8 at all are kept (replaced later).
std::size_t complete_utf8_prefix(std::string_view text) {
  for (std::size_t back = 1; back <= 3 && back <= text.size(); ++back) {
    const auto byte = static_cast<unsigned char>(text[text.size() - back]);
    if ((byte & 0xC0U) == 0x80U) continue;  // a continuation byte: look further back
    const std::size_t length = byte >= 0xF0U ? 4 : byte >= 0xE0U ? 3 : byte >= 0xC0U ? 2 : 1;
    return length > back ? text.size() - back : text.size();
  }
  return text.size();
}

/// A batch of final records waiting for its ResultAck.
struct InFlightBatch {
  std::vector<std::string> ids;
  Clock::time_point sent;
  bool sync = false;  ///< a SyncBatch from the queue (one at a time)
};

v1::ProtocolErrorCode protocol_code(error_code ec) {
  if (ec == errc::not_found) return v1::PROTOCOL_ERROR_CODE_NOT_FOUND;
  if (ec == errc::invalid_argument) return v1::PROTOCOL_ERROR_CODE_INVALID_ARGUMENT;
  if (ec == errc::conflict) return v1::PROTOCOL_ERROR_CODE_CONFLICT;
  return v1::PROTOCOL_ERROR_CODE_INTERNAL;
}

}  // namespace

struct AgentDispatcher::Impl : std::enable_shared_from_this<AgentDispatcher::Impl> {
  Impl(asio::any_io_executor ex, TaskEngine& e, LocalStore& s, Connector& c, AgentDispatcherOptions o)
      : executor(ex), engine(e), store(s), connector(c), options(std::move(o)), reconnect_timer(ex),
        heartbeat_timer(ex), sync_timer(ex), stats_timer(ex), random(std::random_device{}()), backoff(options.reconnect_min),
        heartbeat_interval(options.heartbeat_interval) {
    instance_id = fmt::format("{:016x}", random());
  }

  asio::any_io_executor executor;
  TaskEngine& engine;
  LocalStore& store;
  Connector& connector;
  AgentDispatcherOptions options;
  AgentDispatcherStats stats;
  asio::steady_timer reconnect_timer;
  asio::steady_timer heartbeat_timer;
  asio::steady_timer sync_timer;
  asio::steady_timer stats_timer;
  bool stats_reported = false;  // the first report of this process covers the retention period
  std::mt19937_64 random;
  std::string instance_id;
  milliseconds backoff;
  milliseconds heartbeat_interval;
  bool stopping = false;
  // Fencing between coordinators: the highest RunRequest.leader_epoch seen (kept in the
  // LocalStore across restarts); a request of a lower epoch comes from a deposed leader.
  std::uint64_t highest_leader_epoch = 0;
  std::uint32_t redirects_in_a_row = 0;  // since the last registration
  // The current connection.
  std::uint64_t generation = 0;  // tells callbacks of an old connection apart
  std::unique_ptr<detail::EnvelopeWriter> writer;
  bool registered = false;
  bool synced_config = false;  // configuration applied in this session: sync may begin
  Clock::time_point connected_at;
  Clock::time_point last_received;
  std::int64_t desired_version = 0;
  bool pull_in_flight = false;
  Clock::time_point pull_sent;
  std::uint32_t max_batch = 500;
  std::map<std::uint64_t, InFlightBatch> in_flight;  // by message id
  std::set<std::string> in_flight_ids;
  std::vector<v1::Execution> unsent_results;         // finals to send in this turn's batch
  bool flush_posted = false;
  std::map<std::string, std::uint64_t> awaiting_reply;  // execution id -> RunRequest message id
  std::map<std::string, v1::Execution> active;          // last state of runs not final yet
  static constexpr std::size_t k_recent_finals = 4096;
  std::unordered_map<std::string, v1::Execution> recent_finals;
  std::deque<std::string> recent_order;
  // Cancels of runs not (yet) here: a late request for one of them is refused, never started.
  static constexpr std::size_t k_cancelled_unstarted = 4096;
  std::set<std::string> cancelled_unstarted;
  std::deque<std::string> cancelled_order;
  bool draining = false;  // stopping with runs in progress: the session stays until they reported
  // Live output of running executions, sent as ExecutionUpdate deltas every 200 ms while
  // connected (the full log is kept by the LocalStore anyway).
  struct LiveOutput {
    std::uint64_t offset = 0;  // of `pending` in the run's log
    std::string pending;
  };
  std::map<std::string, LiveOutput> live_output;
  asio::steady_timer output_timer{executor};
  bool output_flush_armed = false;
  static constexpr std::size_t k_live_delta_bytes = 64 * 1024;     // per ExecutionUpdate
  static constexpr std::size_t k_live_pending_bytes = 1 << 20;     // per run; beyond, live output is dropped
  // Rate bounds (every 200 ms flush): per run 256 KiB (1.25 MiB/s), per session 1 MiB
  // (5 MiB/s, what may be queued on the session per flush). What waits longer than its run's
  // pending bound is dropped (followers see the offset jump; the full log has it all).
  static constexpr std::size_t k_live_run_bytes_per_flush = 256 * 1024;
  static constexpr std::size_t k_live_session_bytes_per_flush = 1 << 20;
  static constexpr std::size_t k_live_session_pending_bytes = 16 << 20;  // all runs' pending output
  std::size_t live_budget_left = k_live_session_bytes_per_flush;         // this flush's session budget
  Clock::time_point live_budget_refilled{};
  std::size_t live_pending_total = 0;
  // Configuration: the engine holds it (one copy per task); a delta names what changed.
  std::int64_t clock_offset_ms = 0;

  bool connected() const { return writer && registered && writer->connection().is_open(); }

  // --- connection --------------------------------------------------------------------

  void connect() {
    if (stopping) return;
    connector.connect([weak = weak_from_this()](error_code ec, std::shared_ptr<Connection> connection) {
      auto self = weak.lock();
      if (!self || self->stopping) {
        if (connection) connection->close("agent stopping");
        return;
      }
      if (ec || !connection) {
        logger()->debug("connecting to the coordinator failed: {}", ec.message());
        return self->schedule_reconnect(0);
      }
      self->on_connected(std::move(connection));
    });
  }

  void schedule_reconnect(std::uint32_t after_ms) {
    if (stopping) return;
    milliseconds delay = after_ms > 0 ? milliseconds{after_ms} : backoff;
    // Up to 20 % jitter, so thousands of agents do not come back in the same millisecond.
    delay += milliseconds{static_cast<std::int64_t>(random() % (delay.count() / 5 + 1))};
    backoff = std::min(backoff * 2, options.reconnect_max);
    reconnect_timer.expires_after(delay);
    reconnect_timer.async_wait([weak = weak_from_this()](const error_code& ec) {
      if (auto self = weak.lock(); self && !ec) self->connect();
    });
  }

  void on_connected(std::shared_ptr<Connection> connection) {
    ++generation;
    writer = std::make_unique<detail::EnvelopeWriter>(connection);
    registered = false;
    synced_config = false;
    pull_in_flight = false;
    connected_at = last_received = Clock::now();
    connection->start(Connection::Handlers{
        [weak = weak_from_this(), g = generation](std::string message) {
          auto self = weak.lock();
          if (self && self->generation == g) self->on_message(message);
        },
        [weak = weak_from_this(), g = generation](std::string reason) {
          auto self = weak.lock();
          if (self && self->generation == g) self->on_disconnected(reason, 0);
        }});
    v1::Envelope e;
    auto* reg = e.mutable_register_request();
    reg->set_agent_id(options.agent_id);
    reg->set_hostname(options.hostname);
    for (const auto& ip : options.ips) reg->add_ips(ip);
    for (const auto& [k, v] : options.labels) (*reg->mutable_labels())[k] = v;
    reg->set_agent_version(options.agent_version.empty() ? std::string(detail::library_version())
                                                         : options.agent_version);
    reg->set_platform("linux");
    reg->set_config_group_id(options.config_group);
    reg->set_agent_unix_ms(now_unix_ms());
    reg->set_applied_config_version(static_cast<std::int64_t>(engine.config_version()));
    reg->set_instance_id(instance_id);
    reg->add_executors("shell");
    reg->add_executors("http");
    for (const auto& id : engine.active_executions()) reg->add_running_execution_ids(id);
    writer->send(e);
    arm_heartbeat(options.ack_timeout);  // doubles as the registration timeout
  }

  void on_disconnected(const std::string& reason, std::uint32_t reconnect_after_ms) {
    if (!writer) return;
    logger()->info("disconnected from the coordinator: {}", reason);
    ++generation;
    writer.reset();
    registered = false;
    synced_config = false;
    in_flight.clear();
    in_flight_ids.clear();
    awaiting_reply.clear();
    unsent_results.clear();  // they stay in the sync queue
    heartbeat_timer.cancel();
    sync_timer.cancel();
    stats_timer.cancel();
    schedule_reconnect(reconnect_after_ms);
  }

  /// Draining ends when every run in progress is final and its result acknowledged.
  void finish_drain_if_done() {
    if (!draining || !writer) return;
    if (!active.empty() || !in_flight.empty() || !unsent_results.empty()) return;
    finish_stop();
  }

  void finish_stop() {
    draining = false;
    if (!writer) return;
    writer->goodbye(v1::GOODBYE_REASON_SHUTDOWN, "the agent is stopping");
    writer->connection().close("agent stopping");
    on_disconnected("stopped", 0);
  }

  void drop_connection(const std::string& reason) {
    if (!writer) return;
    writer->connection().close(reason);
    on_disconnected(reason, 0);
  }

  // --- heartbeats and liveness -------------------------------------------------------

  void arm_heartbeat(milliseconds after) {
    heartbeat_timer.expires_after(after);
    heartbeat_timer.async_wait([weak = weak_from_this(), g = generation](const error_code& ec) {
      auto self = weak.lock();
      if (!self || ec || self->generation != g) return;
      self->on_heartbeat_timer();
    });
  }

  void on_heartbeat_timer() {
    const auto now = Clock::now();
    if (!registered) return drop_connection("no answer to Register");
    if (now - last_received > heartbeat_interval * 3 + options.ack_timeout)
      return drop_connection("the coordinator is silent");
    v1::Envelope e;
    auto* beat = e.mutable_heartbeat();
    beat->set_applied_config_version(static_cast<std::int64_t>(engine.config_version()));
    beat->set_agent_unix_ms(now_unix_ms());
    beat->set_clock_offset_ms(clock_offset_ms);
    beat->set_running_executions(static_cast<std::uint32_t>(engine.running_count()));
    beat->set_queued_executions(static_cast<std::uint32_t>(engine.queued_count()));
    const auto health = engine.store_health();
    beat->set_local_store_unavailable(!health.available);
    beat->set_local_store_disk_full(health.disk_full);
    beat->set_local_store_error(health.error);
    beat->set_local_store_unavailable_since_unix_ms(health.unavailable_since_unix_ms);
    beat->set_fires_not_started(health.fires_not_started);
    beat->set_uncommitted_records(health.uncommitted_records);
    writer->send(e);
    arm_heartbeat(heartbeat_interval);
  }

  /// The store became unavailable or available again: the coordinator hears it now, not at
  /// the next heartbeat.
  void on_store_health(const StoreHealth&) {
    if (connected()) arm_heartbeat(milliseconds{0});
  }

  // --- daily stats ----------------------------------------------------------------------

  /// Sends the daily stats of recent local days (each entry replaces the coordinator's copy),
  /// then again every `daily_stats_interval`.
  void report_daily_stats() {
    if (!registered || !writer) return;
    stats_timer.expires_after(options.daily_stats_interval);
    stats_timer.async_wait([weak = weak_from_this(), g = generation](const error_code& ec) {
      auto self = weak.lock();
      if (self && !ec && self->generation == g) self->report_daily_stats();
    });
    // Local dates are in the store's stats zone: a UTC window a day wider on each side holds
    // them. After a restart the first report covers every kept day (days spent offline).
    const auto now = std::chrono::system_clock::now();
    const auto back = stats_reported ? std::chrono::hours{48} : store.options().retention + std::chrono::hours{24};
    const auto day = [](std::chrono::system_clock::time_point t) {
      return date::format("%F", std::chrono::floor<date::days>(t));
    };
    error_code ec;
    auto entries = store.daily_stats(day(now - back), day(now + std::chrono::hours{24}), std::nullopt, ec);
    if (ec) return logger()->warn("reading the daily stats failed: {}", ec.message());
    stats_reported = true;
    constexpr std::size_t k_entries_per_message = 1000;
    for (std::size_t first = 0; first < entries.size(); first += k_entries_per_message) {
      v1::Envelope e;
      auto* report = e.mutable_daily_stats_report();
      report->set_agent_id(options.agent_id);
      report->set_generated_unix_ms(now_unix_ms());
      for (std::size_t i = first; i < std::min(entries.size(), first + k_entries_per_message); ++i)
        *report->add_stats() = std::move(entries[i]);
      writer->send(e);
    }
  }

  void update_clock_offset(std::int64_t coordinator_ms, std::int64_t echo_ms) {
    if (echo_ms == 0 || coordinator_ms == 0) return;
    const std::int64_t now = now_unix_ms();
    clock_offset_ms = now - (coordinator_ms + (now - echo_ms) / 2);
  }

  // --- receiving -----------------------------------------------------------------------

  void on_message(const std::string& message) {
    last_received = Clock::now();
    v1::ProtocolErrorCode code{};
    std::string why;
    auto envelope = detail::decode_envelope(message, 64 << 20, code, why);
    if (!envelope) {
      logger()->warn("closing the session: {}", why);
      writer->error(code, why, true);
      return drop_connection(why);
    }
    const auto id = envelope->message_id();
    switch (envelope->body_case()) {
      case v1::Envelope::kRegisterResult: return on_registered(envelope->register_result());
      case v1::Envelope::kConfigSnapshot: return on_snapshot(envelope->config_snapshot());
      case v1::Envelope::kConfigDelta: return on_delta(envelope->config_delta());
      case v1::Envelope::kHeartbeatAck: {
        const auto& ack = envelope->heartbeat_ack();
        update_clock_offset(ack.coordinator_unix_ms(), ack.echo_agent_unix_ms());
        desired_version = ack.desired_config_version();
        if (ack.heartbeat_interval_seconds() > 0) heartbeat_interval = std::chrono::seconds{ack.heartbeat_interval_seconds()};
        if (desired_version != static_cast<std::int64_t>(engine.config_version())) pull(false);
        return;
      }
      case v1::Envelope::kRunRequest: return on_run(envelope->run_request(), id);
      case v1::Envelope::kCancelRequest: return on_cancel(envelope->cancel_request(), id);
      case v1::Envelope::kResultAck: return on_result_ack(envelope->result_ack(), envelope->in_reply_to());
      case v1::Envelope::kLogRequest: return on_log_request(envelope->log_request(), id);
      case v1::Envelope::kAck: return;
      case v1::Envelope::kGoodbye: {
        const auto& bye = envelope->goodbye();
        logger()->info("the coordinator says goodbye: {}", bye.message());
        if (bye.reason() == v1::GOODBYE_REASON_AGENT_REMOVED) stopping = true;
        writer->connection().close("goodbye");
        return on_disconnected("goodbye: " + bye.message(), bye.reconnect_after_ms());
      }
      case v1::Envelope::kError: {
        const auto& err = envelope->error();
        if (!registered && err.code() == v1::PROTOCOL_ERROR_CODE_UNAVAILABLE && err.fatal()) return redirected(err);
        if (err.code() == v1::PROTOCOL_ERROR_CODE_UNSUPPORTED_VERSION) {
          // Not fixed by retrying soon: the coordinator or this agent must be upgraded. Retried
          // at the slowest pace, so the agent joins by itself once the coordinator accepts it.
          logger()->error(
              "the coordinator refused this agent (version {}): {}; retrying every {} ms",
              options.agent_version.empty() ? std::string(detail::library_version()) : options.agent_version,
              err.message(), options.reconnect_max.count());
          writer->connection().close("unsupported version");
          backoff = options.reconnect_max;
          return on_disconnected("unsupported version: " + err.message(), 0);
        }
        logger()->warn("the coordinator reports an error: {}", err.message());
        if (err.fatal()) drop_connection("fatal error from the coordinator: " + err.message());
        return;
      }
      default:
        writer->error(v1::PROTOCOL_ERROR_CODE_UNEXPECTED_MESSAGE,
                      fmt::format("message field {} is not sent by coordinators", static_cast<int>(envelope->body_case())),
                      false, id);
        return;
    }
  }

  /// A standby refused the registration: the leader's address is tried next, at once the
  /// first time, then every `reconnect_min` while a takeover is under way (the standbys
  /// still name the old leader until its lease expires). No overload: the backoff starts over.
  void redirected(const v1::ProtocolError& err) {
    logger()->info("{}", err.message());
    connector.redirect(err.redirect_address());
    writer->connection().close("redirected");
    const auto after = redirects_in_a_row++ == 0 ? milliseconds{1} : options.reconnect_min;
    on_disconnected("redirected to the leader", static_cast<std::uint32_t>(after.count()));
    backoff = options.reconnect_min;
  }

  void on_registered(const v1::RegisterResult& result) {
    if (registered) return;
    registered = true;
    redirects_in_a_row = 0;
    ++stats.connects;
    backoff = options.reconnect_min;
    update_clock_offset(result.coordinator_unix_ms(), result.echo_agent_unix_ms());
    if (result.heartbeat_interval_seconds() > 0) heartbeat_interval = std::chrono::seconds{result.heartbeat_interval_seconds()};
    if (result.max_batch_records() > 0) max_batch = result.max_batch_records();
    desired_version = result.desired_config_version();
    logger()->info("registered with coordinator {} version {} (group \"{}\")", result.coordinator_id(),
                   result.coordinator_version(), result.group_id());
    pull(false);
    report_daily_stats();
    arm_heartbeat(heartbeat_interval);
  }

  void pull(bool full) {
    // One pull at a time; an answer that did not come within the ACK timeout was lost.
    if (!connected() || (pull_in_flight && Clock::now() - pull_sent < options.ack_timeout)) return;
    pull_in_flight = true;
    pull_sent = Clock::now();
    v1::Envelope e;
    e.mutable_config_pull()->set_applied_config_version(static_cast<std::int64_t>(engine.config_version()));
    e.mutable_config_pull()->set_full(full);
    writer->send(e);
  }

  void on_snapshot(const v1::ConfigSnapshot& snapshot) {
    std::map<std::string, v1::Task> next;
    for (const auto& t : snapshot.tasks()) next[t.id()] = t;
    apply(std::move(next), snapshot.config_version());
  }

  void on_delta(const v1::ConfigDelta& delta) {
    const auto applied = static_cast<std::int64_t>(engine.config_version());
    if (delta.config_version() == applied && applied != 0) return ack_config(applied, v1::CONFIG_APPLY_RESULT_APPLIED, {}, {});
    if (delta.base_config_version() != applied) {
      ack_config(delta.config_version(), v1::CONFIG_APPLY_RESULT_BASE_MISMATCH, {},
                 fmt::format("this agent has version {}, the delta applies to {}", applied, delta.base_config_version()));
      pull_in_flight = false;
      return pull(true);
    }
    // O(changed tasks): the engine validates and rebuilds only what the delta names, and the
    // cache writes only those rows (a full copy per delta made registration quadratic).
    pull_in_flight = false;
    std::vector<v1::Task> upserts(delta.upserts().begin(), delta.upserts().end());
    for (auto& task : upserts)
      if (!task.has_enabled()) task.set_enabled(true);  // as the engine reads it, cached alike
    std::vector<std::string> removed(delta.removed_task_ids().begin(), delta.removed_task_ids().end());
    const auto problems = engine.apply_delta(upserts, removed, static_cast<std::uint64_t>(delta.config_version()));
    std::vector<v1::TaskConfigError> errors;
    if (!problems.empty()) {
      std::set<std::string_view> left_out;
      for (const auto& problem : problems) {
        left_out.insert(problem.task_id);
        removed.push_back(problem.task_id);
        v1::TaskConfigError error;
        error.set_task_id(problem.task_id);
        error.set_field(problem.error.field);
        error.set_reason(problem.error.reason);
        errors.push_back(std::move(error));
      }
      std::erase_if(upserts, [&](const v1::Task& t) { return left_out.count(t.id()) > 0; });
    }
    ++stats.configs_applied;
    const auto version = delta.config_version();
    store.async_save_config_delta(
        CachedConfigDelta{std::move(upserts), std::move(removed), static_cast<std::uint64_t>(version)},
        saved_handler(version, std::move(errors)));
  }

  /// After the configuration is cached: ACK it (APPLIED, or PARTIAL with the tasks left out),
  /// then, the first time in a session, start syncing the backlog.
  std::function<void(error_code)> saved_handler(std::int64_t version, std::vector<v1::TaskConfigError> errors) {
    return [weak = weak_from_this(), g = generation, version, errors = std::move(errors)](error_code ec) {
      auto self = weak.lock();
      if (!self || self->generation != g) return;
      if (ec) logger()->error("caching configuration version {} failed: {}", version, ec.message());
      self->ack_config(version, errors.empty() ? v1::CONFIG_APPLY_RESULT_APPLIED : v1::CONFIG_APPLY_RESULT_PARTIAL,
                       errors, {});
      if (!self->synced_config) {
        self->synced_config = true;  // configuration first, then the backlog
        self->sync_tick();
      }
    };
  }

  /// Applies every valid task (an invalid one is reported, not run), saves, then ACKs.
  void apply(std::map<std::string, v1::Task> next, std::int64_t version) {
    pull_in_flight = false;
    std::vector<v1::Task> valid;
    std::vector<v1::TaskConfigError> errors;
    for (auto& [id, task] : next) {
      if (!task.has_enabled()) task.set_enabled(true);  // as the engine reads it, cached alike
      if (auto problem = validate_task(task)) {
        v1::TaskConfigError error;
        error.set_task_id(id);
        error.set_field(problem->field);
        error.set_reason(problem->reason);
        errors.push_back(std::move(error));
        continue;
      }
      valid.push_back(std::move(task));
    }
    ValidationError problem;
    if (!engine.apply(valid, static_cast<std::uint64_t>(version), &problem))
      return ack_config(version, v1::CONFIG_APPLY_RESULT_REJECTED, {}, problem.message());
    ++stats.configs_applied;
    store.async_save_config(CachedConfig{std::move(valid), static_cast<std::uint64_t>(version)},
                            saved_handler(version, std::move(errors)));
  }

  void ack_config(std::int64_t version, v1::ConfigApplyResult result, const std::vector<v1::TaskConfigError>& errors,
                  std::string message) {
    if (!connected()) return;
    v1::Envelope e;
    auto* ack = e.mutable_config_ack();
    ack->set_config_version(version);
    ack->set_result(result);
    for (const auto& err : errors) *ack->add_task_errors() = err;
    ack->set_message(std::move(message));
    writer->send(e);
  }

  void on_run(const v1::RunRequest& request, std::uint64_t message_id) {
    ++stats.runs_received;
    const std::string& id = request.execution_id();
    // A re-sent request (its answer was lost): answer with the run's state, do not run it twice.
    if (auto it = active.find(id); it != active.end()) return reply_update(it->second, message_id);
    if (auto it = recent_finals.find(id); it != recent_finals.end()) return reply_update(it->second, message_id);
    error_code ec;
    if (request.delivery_attempt() > 1) {
      // Asked again: a run this agent knows is answered with its state, whatever its age.
      if (auto record = store.execution(id, ec)) return reply_update(*record, message_id);
    }
    if (cancelled_unstarted.count(id))
      return writer->error(v1::PROTOCOL_ERROR_CODE_CONFLICT, "cancelled before it started here; not started", false,
                           message_id);
    if (stopping) return writer->error(v1::PROTOCOL_ERROR_CODE_CONFLICT, "the agent is stopping", false, message_id);
    if (!accept_leader_epoch(request.leader_epoch())) {
      const auto detail = fmt::format(
          "stale leader epoch {}: this agent has seen epoch {} (another coordinator "
          "took over); not started",
          request.leader_epoch(), highest_leader_epoch);
      logger()->warn("run {} refused: {}", id, detail);
      return writer->error(v1::PROTOCOL_ERROR_CODE_CONFLICT, detail, false, message_id);
    }
    // The start deadline is in the coordinator's clock; the engine checks it in its own.
    v1::RunRequest local = request;
    if (request.start_deadline_unix_ms() != 0)
      local.set_start_deadline_unix_ms(request.start_deadline_unix_ms() + clock_offset_ms);
    awaiting_reply[id] = message_id;
    std::string detail;
    if (!engine.run(local, ec, &detail)) {
      if (request.start_deadline_unix_ms() != 0)
        logger()->info("run {} refused: {}", id, detail);
      awaiting_reply.erase(id);
      writer->error(protocol_code(ec), detail, false, message_id);
    }
  }

  /// False for a request of a deposed leader (a lower epoch than one seen); a higher epoch
  /// is kept (saved before the run's first record: the LocalStore writes in order).
  bool accept_leader_epoch(std::uint64_t epoch) {
    if (epoch == 0) return true;  // a sender without leadership
    if (epoch < highest_leader_epoch) return false;
    if (epoch > highest_leader_epoch) {
      highest_leader_epoch = epoch;
      store.async_raise_leader_epoch(epoch, [epoch](error_code ec) {
        if (ec) logger()->error("saving leader epoch {} failed: {}", epoch, ec.message());
      });
    }
    return true;
  }

  void reply_update(const v1::Execution& record, std::uint64_t in_reply_to) {
    if (!connected()) return;
    v1::Envelope e;
    *e.mutable_execution_update()->mutable_execution() = record;
    e.mutable_execution_update()->mutable_execution()->clear_output();
    writer->send(e, in_reply_to);
  }

  void on_cancel(const v1::CancelRequest& request, std::uint64_t message_id) {
    v1::Envelope e;
    auto* result = e.mutable_cancel_result();
    result->set_execution_id(request.execution_id());
    if (engine.cancel(request.execution_id(), request.requested_by().empty() ? "coordinator" : request.requested_by(),
                      request.reason())) {
      result->set_found(true);
      result->set_status(v1::EXECUTION_STATUS_CANCELLED);
    } else {
      error_code ec;
      auto record = store.execution(request.execution_id(), ec);
      result->set_found(record.has_value());
      if (record) result->set_status(record->status());
      // Not here yet: the cancel wins over a request that arrives later.
      if (!record && cancelled_unstarted.insert(request.execution_id()).second) {
        cancelled_order.push_back(request.execution_id());
        if (cancelled_order.size() > k_cancelled_unstarted) {
          cancelled_unstarted.erase(cancelled_order.front());
          cancelled_order.pop_front();
        }
      }
    }
    writer->send(e, message_id);
  }

  void on_log_request(const v1::LogRequest& request, std::uint64_t message_id) {
    v1::Envelope e;
    auto* chunk = e.mutable_log_chunk();
    chunk->set_request_id(request.request_id());
    error_code ec;
    auto log = store.full_log(request.execution_id(), ec);
    if (!log) {
      chunk->set_error(ec ? ec.message() : "no log kept for this execution (retention or full_logs_per_task)");
    } else {
      const std::size_t max = request.max_bytes() > 0 ? request.max_bytes() : 65536;
      const std::size_t offset = std::min<std::size_t>(request.offset(), log->size());
      // A slice ends on a character boundary (its next one starts there), and what is not
      // UTF-8 is replaced: a protobuf string that is not UTF-8 would break the session.
      const std::size_t end = offset + utf8_cut(std::string_view(*log).substr(offset), max);
      auto* data = chunk->mutable_chunk();
      data->set_execution_id(request.execution_id());
      data->set_offset(offset);
      data->set_data(detail::valid_utf8(std::string_view(*log).substr(offset, end - offset)));
      data->set_next_offset(end);
      data->set_total_bytes(log->size());
      data->set_eof(end >= log->size());
    }
    writer->send(e, message_id);
  }

  // --- live output ---------------------------------------------------------------------

  void on_output(const std::string& id, std::uint64_t offset, std::string_view data) {
    if (!connected() || !synced_config) return;
    auto& live = live_output[id];
    if (live.pending.empty()) live.offset = offset;
    if (live.offset + live.pending.size() != offset || live.pending.size() + data.size() > k_live_pending_bytes ||
        live_pending_total + data.size() > k_live_session_pending_bytes) {
      // A gap (output while disconnected) or a session that cannot keep up: followers see
      // the offset jump; the full log has it all.
      live_pending_total -= live.pending.size();
      live.pending.clear();
      live.offset = offset;
      if (data.size() > k_live_pending_bytes || live_pending_total + data.size() > k_live_session_pending_bytes) {
        live.offset = offset + data.size();
        return;
      }
    }
    live.pending.append(data);
    live_pending_total += data.size();
    arm_output_flush();
  }

  void arm_output_flush() {
    if (output_flush_armed) return;
    output_flush_armed = true;
    output_timer.expires_after(milliseconds{200});
    output_timer.async_wait([weak = weak_from_this()](const error_code& ec) {
      auto self = weak.lock();
      if (!self || ec) return;
      self->output_flush_armed = false;
      self->refill_live_budget();
      for (auto it = self->live_output.begin(); it != self->live_output.end();) {
        self->send_output(it->first, it->second, false);
        it = it->second.pending.empty() ? self->live_output.erase(it) : std::next(it);
      }
      if (!self->live_output.empty()) self->arm_output_flush();  // the rest at the next flush
    });
  }

  void refill_live_budget() {
    const auto now = Clock::now();
    if (now - live_budget_refilled < milliseconds{190}) return;
    live_budget_refilled = now;
    live_budget_left = k_live_session_bytes_per_flush;
  }

  /// Sends what is pending of one run's output, within this flush's budgets; `all`: the run
  /// has ended, send the rest (within the session's budget; beyond, it is dropped: the full
  /// log has it).
  void send_output(const std::string& id, LiveOutput& live, bool all) {
    auto drop = [&] {
      live_pending_total -= live.pending.size();
      live.pending.clear();
    };
    if (!connected()) return drop();
    if (all) refill_live_budget();
    const std::size_t whole = all ? live.pending.size() : complete_utf8_prefix(live.pending);
    const std::size_t budget = std::min(live_budget_left, all ? whole : k_live_run_bytes_per_flush);
    std::size_t sent = 0;
    while (sent < whole && sent < budget) {
      const std::size_t n = utf8_cut(std::string_view(live.pending).substr(sent, std::min(whole, budget) - sent),
                                     k_live_delta_bytes);
      if (n == 0) break;
      v1::Envelope e;
      auto* update = e.mutable_execution_update();
      // Only the id: the output is all that is new (the coordinator stores no record for it).
      // output_bytes: the delta's raw end in the log (its bytes may be replaced as UTF-8).
      update->mutable_execution()->set_execution_id(id);
      update->mutable_execution()->set_output_bytes(live.offset + sent + n);
      update->set_output_offset(live.offset + sent);
      update->set_output_delta(detail::valid_utf8(std::string_view(live.pending).substr(sent, n)));
      if (writer->send(e) == 0) return drop();  // the connection closed
      sent += n;
    }
    live_budget_left -= std::min(live_budget_left, sent);
    live.pending.erase(0, sent);
    live.offset += sent;
    live_pending_total -= sent;
    if (all) drop();
  }

  // --- execution records ---------------------------------------------------------------

  void on_execution(const v1::Execution& executed) {
    // The coordinator's record keeps the head of the output; the full log stays here
    // (LogRequest), as the LocalStore keeps it.
    const auto head = store.options().output_head_bytes;
    std::optional<v1::Execution> cut;
    if (executed.output().size() > head) {
      cut = executed;
      cut->mutable_output()->resize(utf8_cut(cut->output(), head));
      cut->set_output_truncated(true);
      if (cut->output_bytes() == 0) cut->set_output_bytes(executed.output().size());
    }
    const v1::Execution& record = cut ? *cut : executed;
    const std::string& id = record.execution_id();
    if (auto live = live_output.find(id); live != live_output.end() && is_final(record.status())) {
      send_output(id, live->second, true);  // the last output before the final state
      live_output.erase(live);
    }
    if (!is_final(record.status())) {
      active[id] = record;
    } else {
      active.erase(id);
      remember_final(record);
    }
    if (auto waiting = awaiting_reply.find(id); waiting != awaiting_reply.end()) {
      reply_update(record, waiting->second);  // the run's first state answers its RunRequest
      awaiting_reply.erase(waiting);
    } else if (!is_final(record.status())) {
      reply_update(record, 0);
    }
    if (is_final(record.status()) && connected() && synced_config) {
      unsent_results.push_back(record);
      if (!flush_posted) {
        flush_posted = true;
        asio::post(executor, [weak = weak_from_this()] {
          if (auto self = weak.lock()) self->flush_results();
        });
      }
    }
    if (options.on_execution) options.on_execution(record);
  }

  /// The last final records, to answer re-sent run requests without reading the store.
  void remember_final(const v1::Execution& record) {
    auto copy = record;
    copy.clear_output();
    if (!recent_finals.emplace(record.execution_id(), std::move(copy)).second) return;
    recent_order.push_back(record.execution_id());
    if (recent_order.size() > k_recent_finals) {
      recent_finals.erase(recent_order.front());
      recent_order.pop_front();
    }
  }

  /// Sends this turn's final records in one batch.
  void flush_results() {
    flush_posted = false;
    if (!connected() || unsent_results.empty()) return unsent_results.clear();
    for (std::size_t start = 0; start < unsent_results.size(); start += max_batch) {
      v1::Envelope e;
      InFlightBatch batch{{}, Clock::now(), false};
      auto* results = e.mutable_execution_result_batch();
      for (std::size_t i = start; i < std::min(unsent_results.size(), start + max_batch); ++i) {
        if (in_flight_ids.count(unsent_results[i].execution_id())) continue;
        batch.ids.push_back(unsent_results[i].execution_id());
        *results->add_results() = std::move(unsent_results[i]);
      }
      if (batch.ids.empty()) continue;
      send_batch(e, std::move(batch));
    }
    unsent_results.clear();
  }

  void send_batch(v1::Envelope& e, InFlightBatch batch) {
    const auto id = writer->send(e);
    if (id == 0) return;
    stats.records_sent += batch.ids.size();
    for (const auto& x : batch.ids) in_flight_ids.insert(x);
    in_flight.emplace(id, std::move(batch));
  }

  void on_result_ack(const v1::ResultAck& ack, std::uint64_t in_reply_to) {
    std::vector<std::string> ids(ack.execution_ids().begin(), ack.execution_ids().end());
    for (const auto& rej : ack.rejected()) {
      logger()->warn("the coordinator refused record {}: {}", rej.execution_id(), rej.reason());
      ids.push_back(rej.execution_id());
    }
    bool was_sync = false;
    if (auto it = in_flight.find(in_reply_to); it != in_flight.end()) {
      was_sync = it->second.sync;
      for (const auto& x : it->second.ids) in_flight_ids.erase(x);
      in_flight.erase(it);
    }
    if (draining) asio::post(executor, [weak = weak_from_this()] {
      if (auto self = weak.lock()) self->finish_drain_if_done();
    });
    stats.records_acked += ids.size();
    if (!ids.empty()) stats.last_ack_unix_ms = now_unix_ms();
    store.async_mark_synced(std::move(ids), [weak = weak_from_this(), was_sync, g = generation](error_code ec) {
      auto self = weak.lock();
      if (!self) return;
      if (ec) logger()->error("marking records synced failed: {}", ec.message());
      if (was_sync && self->generation == g) self->sync_tick();  // the backlog continues at once
    });
  }

  /// Sends the next SyncBatch from the queue when none is in flight; forgets batches whose
  /// ACK did not come in time (their records are sent again).
  void sync_tick() {
    if (!connected() || !synced_config) return;
    const auto now = Clock::now();
    bool sync_in_flight = false;
    for (auto it = in_flight.begin(); it != in_flight.end();) {
      if (now - it->second.sent > options.ack_timeout) {
        for (const auto& x : it->second.ids) in_flight_ids.erase(x);
        it = in_flight.erase(it);
        continue;
      }
      sync_in_flight = sync_in_flight || it->second.sync;
      ++it;
    }
    if (!sync_in_flight) {
      error_code ec;
      auto records = store.unsynced(max_batch + active.size() + 64, ec);
      if (ec) logger()->error("reading the sync queue failed: {}", ec.message());
      v1::Envelope e;
      auto* batch_message = e.mutable_sync_batch();
      InFlightBatch batch{{}, now, true};
      std::uint64_t remaining = 0;
      for (auto& r : records) {
        if (!is_final(r.status()) || in_flight_ids.count(r.execution_id())) continue;
        if (batch.ids.size() >= max_batch) {
          ++remaining;
          continue;
        }
        batch.ids.push_back(r.execution_id());
        *batch_message->add_records() = std::move(r);
      }
      batch_message->set_remaining_records(remaining);
      if (!batch.ids.empty()) send_batch(e, std::move(batch));
    }
    sync_timer.expires_after(options.ack_timeout);
    sync_timer.async_wait([weak = weak_from_this(), g = generation](const error_code& ec) {
      auto self = weak.lock();
      if (self && !ec && self->generation == g) self->sync_tick();
    });
  }
};

AgentDispatcher::AgentDispatcher(asio::any_io_executor executor, TaskEngine& engine, LocalStore& store,
                                 Connector& connector, AgentDispatcherOptions options)
    : impl_(std::make_shared<Impl>(executor, engine, store, connector, std::move(options))) {
  engine.set_sink([weak = impl_->weak_from_this()](const v1::Execution& record) {
    if (auto self = weak.lock()) self->on_execution(record);
  });
  engine.set_output_sink([weak = impl_->weak_from_this()](const std::string& id, std::uint64_t offset,
                                                          std::string_view data) {
    if (auto self = weak.lock()) self->on_output(id, offset, data);
  });
  engine.set_store_health_handler([weak = impl_->weak_from_this()](const StoreHealth& health) {
    if (auto self = weak.lock()) self->on_store_health(health);
  });
}

AgentDispatcher::~AgentDispatcher() {
  impl_->stopping = true;
  impl_->reconnect_timer.cancel();
  impl_->heartbeat_timer.cancel();
  impl_->sync_timer.cancel();
  impl_->stats_timer.cancel();
  impl_->output_timer.cancel();
  if (impl_->writer) impl_->writer->connection().close("agent stopping");
}

void AgentDispatcher::start() {
  auto& impl = *impl_;
  {
    error_code ec;
    impl.highest_leader_epoch = impl.store.leader_epoch(ec);
    if (ec) logger()->error("reading the leader epoch seen last failed: {}", ec.message());
  }
  if (impl.engine.config_version() == 0) {
    error_code ec;
    auto cached = impl.store.cached_config(ec);
    if (ec) logger()->error("reading the cached configuration failed: {}", ec.message());
    if (cached.version > 0) {
      ValidationError problem;
      const auto count = cached.tasks.size();
      if (impl.engine.apply(std::move(cached.tasks), cached.version, &problem)) {
        logger()->info("running cached configuration version {} ({} tasks) until the coordinator answers",
                       cached.version, count);
      } else {
        logger()->error("the cached configuration is not valid: {}", problem.message());
      }
    }
  }
  impl.connect();
}

void AgentDispatcher::stop() {
  auto& impl = *impl_;
  impl.stopping = true;
  impl.reconnect_timer.cancel();
  if (impl.connected() && !impl.active.empty()) {
    // Runs in progress finish within the engine's grace: the coordinator hears that this
    // agent takes no new runs, and waits for their results instead of declaring them lost.
    impl.draining = true;
    logger()->info("stopping: {} run(s) in progress report to the coordinator before the session closes",
                   impl.active.size());
    impl.writer->goodbye(v1::GOODBYE_REASON_DRAINING, "the agent is stopping; finishing its runs in progress");
    return;
  }
  impl.finish_stop();
  impl.reconnect_timer.cancel();
}

void AgentDispatcher::close_now() {
  auto& impl = *impl_;
  impl.stopping = true;
  impl.reconnect_timer.cancel();
  if (impl.writer) impl.finish_stop();
}

bool AgentDispatcher::connected() const noexcept { return impl_->connected(); }
const AgentDispatcherStats& AgentDispatcher::stats() const noexcept { return impl_->stats; }

}  // namespace quartzflow
