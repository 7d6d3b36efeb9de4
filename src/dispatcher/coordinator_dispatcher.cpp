// SPDX-License-Identifier: Apache-2.0
// The coordinator side of the agent protocol: one Session per connection; registered
// sessions are indexed by agent id. Store work (registration, ingest, liveness) goes
// through Store::transact; replies are sent when the transaction has committed.
#include <algorithm>
#include <deque>
#include <set>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include <quartzflow/catalog.hpp>
#include <quartzflow/dispatcher.hpp>
#include <quartzflow/execution_status.hpp>
#include <quartzflow/log.hpp>

#include "protocol.hpp"
#include "run_delivery.hpp"

namespace quartzflow {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;
using detail::unix_ms_now;

namespace {

/// Task id -> revision an agent holds.
using HeldTasks = std::map<std::string, std::int64_t, std::less<>>;

/// A config send waiting for its ConfigAck: what the agent holds once it applied it.
struct ConfigOffer {
  bool snapshot = false;
  HeldTasks held;                                          ///< snapshot: the whole set
  std::vector<std::pair<std::string, std::int64_t>> changes;  ///< delta: revision, or -1 removed
};

bool bound_to(const v1::Agent& agent, const v1::Task& task) {
  return task.all_agents() ||
         (!agent.group_id().empty() &&
          std::find(task.group_ids().begin(), task.group_ids().end(), agent.group_id()) != task.group_ids().end());
}

/// What the driver keeps of a run awaiting its answer; its delivery state is in the
/// session's RunDeliveryMachine.
struct RunPayload {
  v1::Envelope request;  ///< the RunRequest, sent again to ask a slow agent for the run's state
  std::function<void(RunDelivery)> done;
};

struct Session : std::enable_shared_from_this<Session> {
  Session(asio::any_io_executor ex, std::shared_ptr<Connection> c, detail::RunDeliveryOptions delivery_options)
      : writer(std::move(c)), push_timer(ex), delivery(delivery_options), delivery_timer(ex) {}
  detail::EnvelopeWriter writer;
  bool registered = false;
  bool ended = false;
  v1::Agent agent;
  Clock::time_point opened = Clock::now();
  Clock::time_point last_seen = Clock::now();
  // Configuration.
  bool held_known = false;
  HeldTasks held;                             ///< acknowledged
  std::set<std::string, std::less<>> dirty;   ///< ids that may differ from what the agent should hold
  std::int64_t acked_version = 0;
  std::int64_t desired_version = 0;
  std::map<std::int64_t, ConfigOffer> offers;  ///< sent, not yet acknowledged, by version
  std::optional<v1::Envelope> push;            ///< the push being re-sent until acknowledged
  std::uint32_t push_sends = 0;
  asio::steady_timer push_timer;
  // Runs.
  detail::RunDeliveryMachine delivery;                         ///< runs whose answer is awaited: the decisions
  std::map<std::string, RunPayload> run_payloads;               ///< by execution id, for those runs
  asio::steady_timer delivery_timer;                            ///< the one wake `delivery` asks for
  std::uint64_t delivery_timer_arms = 0;                        ///< tells a stale wake apart
  bool draining = false;  ///< said Goodbye DRAINING: no new runs; its runs in progress still report
  std::map<std::string, v1::Execution> routed;                  ///< accepted, not final yet
  std::map<std::uint64_t, std::function<void(error_code, v1::ExecutionStatus)>> pending_cancels;
  /// LogRequests awaiting their LogChunk, by request id (CoordinatorDispatcher::fetch_log).
  std::map<std::uint64_t, std::function<void(error_code, v1::LogChunk)>> pending_logs;
};

bool valid_agent_id(const std::string& id) {
  if (id.empty() || id.size() > 253) return false;
  return std::all_of(id.begin(), id.end(), [](unsigned char c) { return c > 0x20 && c < 0x7f; });
}

}  // namespace

struct CoordinatorDispatcher::Impl : std::enable_shared_from_this<CoordinatorDispatcher::Impl> {
  Impl(asio::any_io_executor ex, Store& s, CoordinatorDispatcherOptions o)
      : executor(ex), store(s), options(std::move(o)), sweep_timer(ex) {}

  asio::any_io_executor executor;
  Store& store;
  CoordinatorDispatcherOptions options;
  CoordinatorDispatcherEvents events;
  CoordinatorDispatcherStats stats;
  asio::steady_timer sweep_timer;
  bool stopped = false;
  // Catalog mirror.
  std::map<std::string, v1::Task, std::less<>> tasks;
  std::vector<v1::Group> groups;
  std::int64_t version = 0;
  // Sessions.
  std::set<std::shared_ptr<Session>> sessions;
  std::map<std::string, std::shared_ptr<Session>> by_agent;
  std::deque<std::weak_ptr<Session>> push_queue;  // sessions waiting for a push after a change
  bool push_drain_posted = false;

  // --- catalog mirror --------------------------------------------------------------------

  struct CatalogSnapshot {
    std::vector<v1::Task> tasks;
    std::vector<v1::Group> groups;
    std::int64_t version = 0;
    std::map<std::string, v1::Agent> agents;
  };

  static void load_catalog(StoreTransaction& tx, CatalogSnapshot& out, const std::vector<std::string>& agent_ids) {
    out.tasks = tx.all_tasks();
    v1::ListGroupsRequest request;
    request.set_page_size(500);
    for (std::uint32_t page = 1;; ++page) {
      request.set_page(page);
      auto listing = tx.list_groups(request);
      for (auto& summary : listing.items) out.groups.push_back(summary.group());
      if (listing.items.size() < 500) break;
    }
    out.version = static_cast<std::int64_t>(tx.config_version());
    for (const auto& id : agent_ids)
      if (auto agent = tx.agent(id)) out.agents.emplace(id, std::move(*agent));
  }

  void install_catalog(CatalogSnapshot& snapshot) {
    tasks.clear();
    for (auto& t : snapshot.tasks) {
      auto id = t.id();
      tasks.emplace(std::move(id), std::move(t));
    }
    groups = std::move(snapshot.groups);
    version = snapshot.version;
  }

  /// Whether the agent holds `id` as it should (bound: at the current revision; else not).
  bool in_sync(const Session& session, const std::string& id) const {
    auto task = tasks.find(id);
    auto held = session.held.find(id);
    const bool wanted = task != tasks.end() && bound_to(session.agent, task->second);
    if (!wanted) return held == session.held.end();
    return held != session.held.end() && held->second == task->second.revision();
  }

  /// Recomputes what differs for a session (after a reload: groups or the agent moved).
  void recompute_dirty(Session& session) {
    session.dirty.clear();
    for (const auto& [id, revision] : session.held)
      if (!in_sync(session, id)) session.dirty.insert(id);
    for (const auto& [id, task] : tasks)
      if (bound_to(session.agent, task) && !in_sync(session, id)) session.dirty.insert(id);
  }

  // --- sending -------------------------------------------------------------------------

  /// A snapshot (full, or the session does not know what the agent holds) or a delta of
  /// the session's dirty tasks from the acknowledged version; pushed (re-sent until ACKed)
  /// or as the answer to a pull.
  void send_config(Session& session, bool pushed, std::uint64_t in_reply_to, bool full) {
    v1::Envelope e;
    ConfigOffer offer;
    if (full || !session.held_known) {
      offer.snapshot = true;
      auto* snapshot = e.mutable_config_snapshot();
      snapshot->set_config_version(version);
      snapshot->set_group_id(session.agent.group_id());
      for (const auto& [id, t] : tasks) {
        if (!bound_to(session.agent, t)) continue;
        *snapshot->add_tasks() = t;
        offer.held.emplace(id, t.revision());
      }
      snapshot->set_push_attempt(pushed ? 1 : 0);
    } else {
      auto* delta = e.mutable_config_delta();
      delta->set_base_config_version(session.acked_version);
      delta->set_config_version(version);
      for (const auto& id : session.dirty) {
        auto task = tasks.find(id);
        if (task != tasks.end() && bound_to(session.agent, task->second)) {
          *delta->add_upserts() = task->second;
          offer.changes.emplace_back(id, task->second.revision());
        } else if (session.held.count(id)) {
          delta->add_removed_task_ids(id);
          offer.changes.emplace_back(id, -1);
        }
      }
      delta->set_push_attempt(pushed ? 1 : 0);
    }
    session.offers[version] = std::move(offer);
    session.desired_version = version;
    if (pushed) {
      session.push = e;
      session.push_sends = 0;
      resend_push(session);
      set_push_state(session, v1::CONFIG_PUSH_STATE_PENDING, {});
    } else {
      session.writer.send(e, in_reply_to);
    }
  }

  /// Pushes what differs, one push in flight per session: changes made meanwhile wait for
  /// its ACK and go in the next delta (a second delta on the same base would not apply).
  void push_dirty(Session& session) {
    if (!session.held_known || session.push || session.dirty.empty()) return;
    send_config(session, true, 0, false);
  }

  /// A change for many agents is pushed k_pushes_per_turn sessions per handler turn: the
  /// replies of the first agents are read while the last are still being sent (pushing to
  /// 10,000 agents in one turn let their ACKs overflow the socket's receive buffer).
  void queue_push(const std::shared_ptr<Session>& session) {
    push_queue.push_back(session);
    post_push_drain();
  }

  void post_push_drain() {
    if (push_drain_posted || push_queue.empty()) return;
    push_drain_posted = true;
    asio::post(executor, [weak = weak_from_this()] {
      if (auto self = weak.lock()) self->drain_pushes();
    });
  }

  void drain_pushes() {
    push_drain_posted = false;
    constexpr std::size_t k_pushes_per_turn = 64;
    for (std::size_t n = 0; n < k_pushes_per_turn && !push_queue.empty(); ++n) {
      auto session = push_queue.front().lock();
      push_queue.pop_front();
      if (session && !session->ended && !stopped) push_dirty(*session);
    }
    post_push_drain();
  }

  /// The agent applied `offer`: what it holds now, and what is still to send.
  void accept_offer(Session& session, ConfigOffer& offer) {
    if (offer.snapshot) {
      session.held = std::move(offer.held);
      session.held_known = true;
      recompute_dirty(session);
      return;
    }
    for (const auto& [id, revision] : offer.changes) {
      if (revision < 0) {
        session.held.erase(id);
      } else {
        session.held[id] = revision;
      }
      if (in_sync(session, id)) session.dirty.erase(id);
    }
  }

  void resend_push(Session& session) {
    if (!session.push) return;
    ++session.push_sends;
    ++stats.pushes_sent;
    if (session.push_sends > 1) ++stats.repushes;
    auto& e = *session.push;
    if (e.has_config_delta()) e.mutable_config_delta()->set_push_attempt(session.push_sends);
    if (e.has_config_snapshot()) e.mutable_config_snapshot()->set_push_attempt(session.push_sends);
    session.writer.send(e);
    session.push_timer.expires_after(options.ack_timeout);
    session.push_timer.async_wait([weak = weak_from_this(), agent = session.agent.id(),
                                   sends = session.push_sends](const error_code& ec) {
      auto self = weak.lock();
      if (!self || ec) return;
      auto it = self->by_agent.find(agent);
      if (it == self->by_agent.end() || !it->second->push || it->second->push_sends != sends) return;
      auto& s = *it->second;
      if (s.push_sends <= self->options.max_repushes) return self->resend_push(s);
      ++self->stats.pushes_failed;
      logger()->warn("agent {}: config version {} not acknowledged after {} sends; push marked failed", agent,
                     s.desired_version, s.push_sends);
      s.push.reset();
      self->set_push_state(s, v1::CONFIG_PUSH_STATE_FAILED,
                           fmt::format("no ConfigAck for version {} after {} sends", s.desired_version, s.push_sends));
    });
  }

  void set_push_state(Session& session, v1::ConfigPushState state, std::string error,
                      const std::vector<v1::TaskConfigError>& task_errors = {}) {
    auto* status = session.agent.mutable_push_status();
    status->set_state(state);
    status->set_attempts(session.push_sends);
    status->set_error(std::move(error));
    status->clear_task_errors();
    for (const auto& e : task_errors) *status->add_task_errors() = e;
    if (state == v1::CONFIG_PUSH_STATE_PENDING) status->set_last_push_unix_ms(unix_ms_now());
    if (state == v1::CONFIG_PUSH_STATE_IN_SYNC || state == v1::CONFIG_PUSH_STATE_PARTIAL)
      status->set_last_ack_unix_ms(unix_ms_now());
    session.agent.set_desired_config_version(session.desired_version);
    save_agent(session.agent);
    if (events.push_status) events.push_status(session.agent.id(), *status);
  }

  void save_agent(const v1::Agent& agent) {
    store.transact([agent](StoreTransaction& tx, error_code&) { tx.put_agent(agent); },
                   [id = agent.id()](error_code ec) {
                     if (ec) logger()->error("saving agent {} failed: {}", id, ec.message());
                   });
  }

  // --- receiving -----------------------------------------------------------------------

  void on_message(const std::shared_ptr<Session>& session, const std::string& message) {
    if (session->ended) return;
    session->last_seen = Clock::now();
    session->delivery.heard();
    v1::ProtocolErrorCode code{};
    std::string why;
    auto envelope = detail::decode_envelope(message, options.max_message_bytes, code, why);
    if (!envelope) return protocol_failure(session, code, why);
    const auto id = envelope->message_id();
    if (!session->registered && !envelope->has_register_request())
      return protocol_failure(session, v1::PROTOCOL_ERROR_CODE_UNEXPECTED_MESSAGE,
                              fmt::format("the first message must be Register, not field {}",
                                          static_cast<int>(envelope->body_case())));
    switch (envelope->body_case()) {
      case v1::Envelope::kRegisterRequest: return on_register(session, envelope->register_request(), id);
      case v1::Envelope::kConfigPull: return on_pull(*session, envelope->config_pull(), id);
      case v1::Envelope::kConfigAck: return on_config_ack(*session, envelope->config_ack());
      case v1::Envelope::kHeartbeat: return on_heartbeat(*session, envelope->heartbeat(), id);
      case v1::Envelope::kExecutionUpdate: return on_update(session, envelope->execution_update(), envelope->in_reply_to());
      case v1::Envelope::kExecutionResultBatch: {
        std::vector<v1::Execution> records(envelope->execution_result_batch().results().begin(),
                                           envelope->execution_result_batch().results().end());
        return ingest(session, std::move(records), id);
      }
      case v1::Envelope::kSyncBatch: {
        std::vector<v1::Execution> records(envelope->sync_batch().records().begin(),
                                           envelope->sync_batch().records().end());
        return ingest(session, std::move(records), id);
      }
      case v1::Envelope::kCancelResult: return on_cancel_result(*session, envelope->cancel_result(), envelope->in_reply_to());
      case v1::Envelope::kDailyStatsReport: return on_daily_stats(session, envelope->daily_stats_report(), id);
      case v1::Envelope::kLogChunk: return on_log_chunk(*session, envelope->log_chunk());
      case v1::Envelope::kAck: return;
      case v1::Envelope::kGoodbye:
        if (envelope->goodbye().reason() == v1::GOODBYE_REASON_DRAINING) {
          // Stopping with runs in progress: they finish within the agent's grace and report
          // here. A goodbye is not a loss; only what is still open when it closes is.
          session->draining = true;
          logger()->info("agent {} is draining ({} run(s) in progress): no new runs; waiting for their results: {}",
                         session->agent.id(), session->routed.size(), envelope->goodbye().message());
          return;
        }
        logger()->info("agent {} says goodbye: {}", session->agent.id(), envelope->goodbye().message());
        session->writer.connection().close("goodbye");
        return end_session(session, "goodbye: " + envelope->goodbye().message());
      case v1::Envelope::kError: return on_error(*session, envelope->error(), envelope->in_reply_to());
      default:
        return protocol_failure(session, v1::PROTOCOL_ERROR_CODE_UNEXPECTED_MESSAGE,
                                fmt::format("message field {} is not sent by agents", static_cast<int>(envelope->body_case())));
    }
  }

  void protocol_failure(const std::shared_ptr<Session>& session, v1::ProtocolErrorCode code, const std::string& why) {
    ++stats.protocol_errors;
    logger()->warn("closing session of {} ({}): {}", session->agent.id().empty() ? "unregistered peer" : session->agent.id(),
                   session->writer.connection().remote_address(), why);
    session->writer.error(code, why, true);
    session->writer.goodbye(code == v1::PROTOCOL_ERROR_CODE_UNSUPPORTED_VERSION ? v1::GOODBYE_REASON_UNSUPPORTED_VERSION
                                                                                : v1::GOODBYE_REASON_PROTOCOL_ERROR,
                            why);
    session->writer.connection().close(why);
    end_session(session, why);
  }

  void on_register(const std::shared_ptr<Session>& session, const v1::Register& reg, std::uint64_t message_id) {
    if (session->registered)
      return protocol_failure(session, v1::PROTOCOL_ERROR_CODE_UNEXPECTED_MESSAGE, "Register sent twice");
    if (!valid_agent_id(reg.agent_id()))
      return protocol_failure(session, v1::PROTOCOL_ERROR_CODE_INVALID_ARGUMENT,
                              "register.agent_id: must be 1-253 printable ASCII characters without spaces");
    // An authenticated peer may only register as the name its certificate carries: one
    // agent's certificate cannot be used to impersonate another.
    if (const std::string identity = session->writer.connection().peer_identity();
        !identity.empty() && identity != reg.agent_id())
      return protocol_failure(session, v1::PROTOCOL_ERROR_CODE_INVALID_ARGUMENT,
                              fmt::format("register.agent_id: \"{}\" does not match the certificate's name \"{}\"",
                                          reg.agent_id(), identity));
    // What an agent says about itself is stored and shown: bounded like any other input.
    const std::pair<const char*, int> lists[] = {{"register.ips", reg.ips_size()},
                                                 {"register.labels", reg.labels_size()},
                                                 {"register.executors", reg.executors_size()}};
    for (const auto& [field, size] : lists)
      if (size > 64)
        return protocol_failure(session, v1::PROTOCOL_ERROR_CODE_INVALID_ARGUMENT,
                                fmt::format("{}: has {} elements; at most 64 are allowed", field, size));
    const std::int64_t now = unix_ms_now();
    v1::Agent incoming;
    incoming.set_id(reg.agent_id());
    incoming.set_hostname(reg.hostname());
    *incoming.mutable_ips() = reg.ips();
    *incoming.mutable_labels() = reg.labels();
    incoming.set_version(reg.agent_version());
    incoming.set_platform(reg.platform());
    incoming.set_applied_config_version(reg.applied_config_version());
    incoming.set_pending_sync_records(reg.pending_sync_records());
    incoming.set_clock_offset_ms(reg.agent_unix_ms() != 0 ? reg.agent_unix_ms() - now : 0);
    incoming.set_remote_address(session->writer.connection().remote_address());
    std::vector<std::string> running(reg.running_execution_ids().begin(), reg.running_execution_ids().end());
    auto result = std::make_shared<std::pair<v1::Agent, std::vector<v1::Execution>>>();
    store.transact(
        [incoming, running, groups = groups, config_group = reg.config_group_id(), now, result,
         coordinator = options.coordinator_id, version = version](StoreTransaction& tx, error_code&) {
          v1::Agent agent = incoming;
          if (auto known = tx.agent(incoming.id())) {
            agent.set_registered_at_unix_ms(known->registered_at_unix_ms());
            agent.set_group_id(known->group_id());
            agent.set_group_assignment(known->group_assignment());
            *agent.mutable_push_status() = known->push_status();
          } else {
            agent.set_registered_at_unix_ms(now);
          }
          const std::string group = resolve_group(agent, config_group, groups);
          if (agent.group_assignment() != v1::GROUP_ASSIGNMENT_MANUAL || group != agent.group_id()) {
            const bool configured = !config_group.empty() &&
                                    std::any_of(groups.begin(), groups.end(), [&](const v1::Group& g) {
                                      return g.id() == group && (g.id() == config_group || g.name() == config_group);
                                    });
            agent.set_group_assignment(group.empty() ? v1::GROUP_ASSIGNMENT_UNSPECIFIED
                                       : configured  ? v1::GROUP_ASSIGNMENT_CONFIG
                                                     : v1::GROUP_ASSIGNMENT_RULE);
          }
          agent.set_group_id(group);
          agent.set_state(v1::AGENT_STATE_ONLINE);
          agent.set_state_changed_unix_ms(now);
          agent.set_last_heartbeat_unix_ms(now);
          agent.set_connected_at_unix_ms(now);
          agent.set_coordinator_id(coordinator);
          agent.set_desired_config_version(version);
          tx.put_agent(agent);
          result->first = tx.agent(agent.id()).value_or(agent);  // with the group's name
          for (const auto& id : running)
            if (auto record = tx.execution(id); record && !is_final(record->status()))
              result->second.push_back(std::move(*record));
        },
        [weak = weak_from_this(), session, result, message_id, echo = reg.agent_unix_ms()](error_code ec) {
          auto self = weak.lock();
          if (!self || session->ended) return;
          if (ec) {
            session->writer.error(v1::PROTOCOL_ERROR_CODE_UNAVAILABLE, "the coordinator could not store the registration",
                                  true, message_id);
            session->writer.connection().close("store unavailable");
            return self->end_session(session, "store unavailable");
          }
          self->open_session(session, std::move(result->first), std::move(result->second), message_id, echo);
        });
  }

  void open_session(const std::shared_ptr<Session>& session, v1::Agent agent, std::vector<v1::Execution> running,
                    std::uint64_t message_id, std::int64_t echo) {
    std::vector<detail::RunDeliveryMachine::PendingRun> moved_runs;
    std::map<std::string, RunPayload> moved_payloads;
    session->agent = std::move(agent);
    session->registered = true;
    session->desired_version = version;
    const std::string& id = session->agent.id();
    if (auto old = by_agent.find(id); old != by_agent.end()) {
      // The same agent again (a reconnect the old session did not notice): its runs move over.
      auto previous = old->second;
      by_agent.erase(old);
      for (auto& [exec_id, record] : previous->routed) session->routed.emplace(exec_id, record);
      previous->routed.clear();
      // Runs awaiting its answer: the new session asks again (the agent answers with their
      // state, or refuses what it never got once the start deadline has passed).
      moved_runs = previous->delivery.release();
      moved_payloads = std::move(previous->run_payloads);
      previous->run_payloads.clear();
      ++previous->delivery_timer_arms;
      previous->delivery_timer.cancel();
      previous->writer.goodbye(v1::GOODBYE_REASON_SESSION_REPLACED, "a newer session of this agent replaced this one");
      previous->writer.connection().close("session replaced");
      end_session(previous, "session replaced");
    }
    for (auto& record : running) session->routed.emplace(record.execution_id(), std::move(record));
    by_agent[id] = session;
    ++stats.sessions_opened;
    v1::Envelope e;
    auto* result = e.mutable_register_result();
    result->set_agent_id(id);
    result->set_session_id(fmt::format("{}-{}", id, stats.sessions_opened));
    result->set_coordinator_id(options.coordinator_id);
    result->set_coordinator_unix_ms(unix_ms_now());
    result->set_echo_agent_unix_ms(echo);
    result->set_heartbeat_interval_seconds(static_cast<std::uint32_t>(advertised_heartbeat().count()));
    result->set_group_id(session->agent.group_id());
    result->set_desired_config_version(version);
    result->set_max_batch_records(options.max_batch_records);
    session->writer.send(e, message_id);
    logger()->info("agent {} online ({}, group \"{}\")", id, session->writer.connection().remote_address(),
                   session->agent.group_id());
    for (auto& [exec_id, payload] : moved_payloads) {
      auto [it, inserted] = session->run_payloads.try_emplace(exec_id, std::move(payload));
      if (!inserted) join_completions(it->second, std::move(payload.done));
    }
    perform(*session, session->delivery.adopt(std::move(moved_runs), delivery_now()));
    if (events.agent_state) events.agent_state(session->agent);
  }

  void on_pull(Session& session, const v1::ConfigPull& pull, std::uint64_t message_id) {
    const bool full = pull.full() || pull.applied_config_version() == 0 ||
                      pull.applied_config_version() != session.acked_version;
    if (full) session.held_known = false;
    send_config(session, false, message_id, full);
  }

  void on_config_ack(Session& session, const v1::ConfigAck& ack) {
    switch (ack.result()) {
      case v1::CONFIG_APPLY_RESULT_APPLIED:
      case v1::CONFIG_APPLY_RESULT_PARTIAL: {
        auto offer = session.offers.find(ack.config_version());
        if (offer == session.offers.end()) return;  // an ACK of something not offered here: stale
        if (!offer->second.snapshot && !session.held_known) return;
        accept_offer(session, offer->second);
        session.acked_version = ack.config_version();
        session.offers.erase(session.offers.begin(), std::next(offer));
        session.agent.set_applied_config_version(ack.config_version());
        if (session.push && session.desired_version <= ack.config_version()) {
          session.push.reset();
          session.push_timer.cancel();
        }
        std::vector<v1::TaskConfigError> errors(ack.task_errors().begin(), ack.task_errors().end());
        set_push_state(session,
                       ack.result() == v1::CONFIG_APPLY_RESULT_APPLIED ? v1::CONFIG_PUSH_STATE_IN_SYNC
                                                                       : v1::CONFIG_PUSH_STATE_PARTIAL,
                       {}, errors);
        push_dirty(session);  // changes made while this was in flight
        return;
      }
      case v1::CONFIG_APPLY_RESULT_BASE_MISMATCH:
        // The agent follows with a full pull.
        session.push.reset();
        session.push_timer.cancel();
        session.held_known = false;
        return;
      default:
        session.push.reset();
        session.push_timer.cancel();
        set_push_state(session, v1::CONFIG_PUSH_STATE_FAILED, "rejected by the agent: " + ack.message());
        return;
    }
  }

  void on_heartbeat(Session& session, const v1::Heartbeat& beat, std::uint64_t message_id) {
    auto& agent = session.agent;
    agent.set_last_heartbeat_unix_ms(unix_ms_now());
    agent.set_clock_offset_ms(beat.clock_offset_ms());
    agent.set_running_executions(beat.running_executions());
    agent.set_load_average_1m(beat.load_average_1m());
    agent.set_pending_sync_records(beat.pending_sync_records());
    agent.set_applied_config_version(beat.applied_config_version());
    if (beat.local_store_unavailable() != agent.local_store_unavailable())
      logger()->log(beat.local_store_unavailable() ? spdlog::level::err : spdlog::level::info,
                    "agent {}: {}", agent.id(),
                    beat.local_store_unavailable()
                        ? fmt::format("its local store cannot commit ({}); it starts no new runs", beat.local_store_error())
                        : std::string("its local store commits again"));
    agent.set_local_store_unavailable(beat.local_store_unavailable());
    agent.set_local_store_disk_full(beat.local_store_disk_full());
    agent.set_local_store_error(beat.local_store_error());
    agent.set_local_store_unavailable_since_unix_ms(beat.local_store_unavailable_since_unix_ms());
    agent.set_fires_not_started(beat.fires_not_started());
    agent.set_uncommitted_records(beat.uncommitted_records());
    save_agent(agent);
    // The agent applied a version whose ACK was lost: the heartbeat says so.
    if (beat.applied_config_version() > session.acked_version && session.offers.count(beat.applied_config_version())) {
      v1::ConfigAck ack;
      ack.set_config_version(beat.applied_config_version());
      ack.set_result(v1::CONFIG_APPLY_RESULT_APPLIED);
      on_config_ack(session, ack);
    }
    v1::Envelope e;
    auto* ack = e.mutable_heartbeat_ack();
    ack->set_coordinator_unix_ms(unix_ms_now());
    ack->set_echo_agent_unix_ms(beat.agent_unix_ms());
    ack->set_desired_config_version(session.desired_version);
    session.writer.send(e, message_id);
  }

  void on_update(const std::shared_ptr<Session>& session, const v1::ExecutionUpdate& update, std::uint64_t in_reply_to) {
    // Live output only (an id, no state): it answers nothing. The agent's reply to the run
    // request (its first state) follows, and only that reply routes the run here; had the
    // output resolved the offer, the reply would find none and the run would never be
    // routed (not cancellable, not failed as lost with its session).
    if (update.execution().task_id().empty() && update.execution().status() == v1::EXECUTION_STATUS_UNSPECIFIED)
      return on_output(*session, update);
    // It answers the request it replies to, else the run it carries (any state answers).
    auto answered = session->delivery.update(in_reply_to, update.execution().execution_id());
    const bool accepted = detail::resolves(answered);
    perform(*session, std::move(answered));
    v1::Execution record = update.execution();
    if (record.execution_id().empty() || record.task_id().empty()) return;
    // A late answer to a run that already failed over (its pending entry is gone) is not
    // routed here: the agent was told to cancel it, and ingest keeps the record the new
    // agent's.
    if (!is_final(record.status())) {
      if (auto it = session->routed.find(record.execution_id()); it != session->routed.end()) it->second = record;
      else if (accepted) session->routed.emplace(record.execution_id(), record);
    }
    if (!update.output_delta().empty()) on_output(*session, update);  // once routed here
    ingest(session, {std::move(record)}, 0);
  }

  /// Live output (live logs): taken only for a run this session holds (routed here or
  /// offered to it) or one its agent fires itself (its id ends in `:<agent id>`); any other
  /// agent could otherwise write into any execution's live log.
  void on_output(Session& session, const v1::ExecutionUpdate& update) {
    const auto& id = update.execution().execution_id();
    if (update.output_delta().empty() || !events.output || id.empty()) return;
    const std::string own_suffix = ":" + session.agent.id();
    const bool own = id.size() > own_suffix.size() && id.ends_with(own_suffix);
    if (!own && !session.routed.count(id) && !session.delivery.pending(id)) {
      ++stats.output_refused;
      return;
    }
    v1::Execution record;
    record.set_execution_id(id);
    record.set_agent_id(session.agent.id());  // the agent that streamed it (its session's end drops it)
    // The delta's raw end in the agent's log (its bytes may have been replaced as UTF-8).
    record.set_output_bytes(update.execution().output_bytes());
    events.output(record, update.output_offset(), update.output_delta());
  }

  /// Stores records (an upsert each, one transaction), then acknowledges them when asked.
  /// Stores the agent's daily stats (each entry replaces the previous one), then ACKs; an
  /// entry the store refuses (bad date, no task) is skipped with a warning, the others kept.
  void on_daily_stats(const std::shared_ptr<Session>& session, const v1::DailyStatsReport& report,
                      std::uint64_t ack_to) {
    auto entries = std::make_shared<std::vector<v1::DailyStats>>(report.stats().begin(), report.stats().end());
    for (auto& entry : *entries) entry.set_agent_id(session->agent.id());  // the session says who reports
    store.transact(
        [entries](StoreTransaction& tx, error_code&) {
          for (const auto& entry : *entries) {
            try {
              tx.put_agent_daily_stats(entry);
            } catch (const std::exception& e) {  // refused before writing: the others are kept
              logger()->warn("agent {}: daily stats entry skipped: {}", entry.agent_id(), e.what());
            }
          }
        },
        [weak = weak_from_this(), session, ack_to, count = entries->size()](error_code ec) {
          auto self = weak.lock();
          if (!self || session->ended) return;
          if (ec) return logger()->error("storing daily stats of agent {} failed: {}", session->agent.id(), ec.message());
          ++self->stats.daily_stats_stored;
          logger()->debug("agent {}: {} daily stats entries stored", session->agent.id(), count);
          v1::Envelope ack;
          ack.mutable_ack();
          session->writer.send(ack, ack_to);
        });
  }

  void ingest(const std::shared_ptr<Session>& session, std::vector<v1::Execution> records, std::uint64_t ack_to) {
    auto rejected = std::make_shared<std::vector<v1::RejectedRecord>>();
    std::vector<v1::Execution> valid;
    valid.reserve(records.size());
    for (auto& r : records) {
      std::string why;
      if (r.execution_id().empty()) why = "execution_id: must not be empty";
      else if (r.task_id().empty()) why = "task_id: must not be empty";
      else if (r.status() == v1::EXECUTION_STATUS_UNSPECIFIED) why = "status: must be set";
      else if (!r.agent_id().empty() && r.agent_id() != session->agent.id())
        why = fmt::format("agent_id: \"{}\" is not the agent of this session", r.agent_id());
      if (!why.empty()) {
        v1::RejectedRecord rej;
        rej.set_execution_id(r.execution_id());
        rej.set_reason(std::move(why));
        rejected->push_back(std::move(rej));
        continue;
      }
      r.set_agent_id(session->agent.id());
      if (r.group_id().empty()) r.set_group_id(session->agent.group_id());
      r.set_reported_unix_ms(unix_ms_now());
      // A result of a run whose answer is awaited (the answer was lost): it was accepted.
      if (session->delivery.pending(r.execution_id())) {
        perform(*session, session->delivery.answered(r.execution_id()));
        if (!is_final(r.status())) session->routed.emplace(r.execution_id(), r);
      }
      valid.push_back(std::move(r));
    }
    // Which records changed state (for events): a re-sent final record is not news.
    auto stored = std::make_shared<std::vector<std::pair<v1::Execution, bool>>>();
    auto shared = std::make_shared<std::vector<v1::Execution>>(std::move(valid));
    auto second_executions = std::make_shared<std::uint64_t>(0);
    store.transact(
        [shared, stored, second_executions, agent_id = session->agent.id()](StoreTransaction& tx, error_code&) {
          const std::string own_suffix = ":" + agent_id;
          for (const auto& r : *shared) {
            // A coordinator-routed run (its id does not name the agent) that failed over to
            // another agent belongs to that agent: this one's late records are acknowledged
            // but never overwrite it (nor does its CANCELLED win as the first final state).
            if (r.execution_id().find(own_suffix) == std::string::npos) {
              const auto current = tx.execution(r.execution_id());
              if (current && !current->agent_id().empty() && current->agent_id() != agent_id) {
                // This agent started it although it was re-assigned: a second execution, which
                // the one row per id cannot show. Said loudly, and counted.
                const bool executed = r.started_unix_ms() > 0 || r.status() == v1::EXECUTION_STATUS_RUNNING;
                if (executed) {
                  ++*second_executions;
                  logger()->warn("agent {}: run {} was executed here ({}) although it was re-assigned to agent {} "
                                 "(recorded there as {}): a second execution",
                                 agent_id, r.execution_id(), v1::ExecutionStatus_Name(r.status()),
                                 current->agent_id(), v1::ExecutionStatus_Name(current->status()));
                } else {
                  logger()->info("agent {}: record of {} ({}, never started here) ignored: the run belongs to agent {}",
                                 agent_id, r.execution_id(), v1::ExecutionStatus_Name(r.status()), current->agent_id());
                }
                stored->emplace_back(r, false);
                continue;
              }
            }
            const auto result = tx.upsert_execution(r);
            stored->emplace_back(r, result == UpsertResult::inserted || result == UpsertResult::merged);
          }
        },
        [weak = weak_from_this(), session, stored, rejected, ack_to, second_executions](error_code ec) {
          auto self = weak.lock();
          if (!self) return;
          self->stats.duplicate_executions += *second_executions;
          if (ec) {
            logger()->error("storing {} record(s) of agent {} failed: {}", stored->size(), session->agent.id(), ec.message());
            return;  // no ACK: the agent sends them again
          }
          if (ack_to != 0 && !session->ended) {
            v1::Envelope e;
            auto* ack = e.mutable_result_ack();
            for (const auto& [r, changed] : *stored) ack->add_execution_ids(r.execution_id());
            for (auto& rej : *rejected) *ack->add_rejected() = std::move(rej);
            session->writer.send(e, ack_to);
          }
          for (const auto& [r, changed] : *stored) {
            ++self->stats.records_ingested;
            if (!changed) ++self->stats.records_duplicate;
            if (is_final(r.status())) session->routed.erase(r.execution_id());
            if (changed && self->events.execution) self->events.execution(r);
          }
        });
  }

  void on_cancel_result(Session& session, const v1::CancelResult& result, std::uint64_t in_reply_to) {
    auto it = session.pending_cancels.find(in_reply_to);
    if (it == session.pending_cancels.end()) return;
    auto done = std::move(it->second);
    session.pending_cancels.erase(it);
    if (done) done(result.found() ? error_code{} : make_error_code(errc::not_found), result.status());
  }

  void on_error(Session& session, const v1::ProtocolError& error, std::uint64_t in_reply_to) {
    using Refusal = detail::RunDeliveryMachine::Refusal;
    if (auto refusal = session.delivery.refused(in_reply_to); refusal.kind != Refusal::Kind::not_a_run) {
      if (refusal.kind == Refusal::Kind::refused) {
        logger()->info("agent {} refused run {}: {}", session.agent.id(), refusal.execution_id, error.message());
        perform(session, std::move(refusal.actions));
      } else {
        logger()->info("agent {} refused run {} after it was re-routed: {}", session.agent.id(), refusal.execution_id,
                       error.message());
      }
      return;
    }
    logger()->warn("agent {} reports a protocol error: {}", session.agent.id(), error.message());
    if (error.fatal()) {
      session.writer.connection().close("peer error");
    }
  }

  // --- routed runs awaiting their answer ---------------------------------------------

  v1::DeliveryGuarantee guarantee_of(const v1::RunRequest& run) const {
    auto guarantee = run.has_task() ? run.task().delivery_guarantee() : v1::DELIVERY_GUARANTEE_UNSPECIFIED;
    if (auto task = tasks.find(run.task_id()); task != tasks.end()) guarantee = task->second.delivery_guarantee();
    return guarantee == v1::DELIVERY_GUARANTEE_AT_MOST_ONCE ? v1::DELIVERY_GUARANTEE_AT_MOST_ONCE
                                                             : v1::DELIVERY_GUARANTEE_AT_LEAST_ONCE;
  }

  /// The store's record of a run awaiting its answer, when the store has none better.
  static v1::Execution pending_record(const std::string& agent_id, const v1::Envelope& request) {
    const auto& run = request.run_request();
    v1::Execution r;
    r.set_execution_id(run.execution_id());
    r.set_task_id(run.task_id());
    r.set_agent_id(agent_id);
    r.set_trigger(run.trigger());
    r.set_scheduled_unix_ms(run.scheduled_unix_ms());
    r.set_attempt(run.attempt());
    r.set_shard_index(run.shard_index());
    r.set_shard_total(run.shard_total());
    r.set_root_execution_id(run.root_execution_id());
    r.set_task_revision(run.task_revision());
    r.set_status(v1::EXECUTION_STATUS_PENDING);
    return r;
  }

  /// The delivery machine's clocks: steady (waits, timers) and wall (start deadlines).
  static detail::DeliveryNow delivery_now() {
    return {std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count(),
            unix_ms_now()};
  }

  detail::RunDeliveryOptions delivery_options() const {
    return {options.ack_timeout.count(), options.acceptance_wait_max.count()};
  }

  /// A second offer of a run whose answer is awaited: one answer settles both.
  static void join_completions(RunPayload& payload, std::function<void(RunDelivery)> done) {
    payload.done = [first = std::move(payload.done), done = std::move(done)](RunDelivery outcome) {
      if (first) first(outcome);
      if (done) done(outcome);
    };
  }

  /// Performs what the session's delivery machine decided: sends, cancels, timers, and the
  /// offers' completions (inline: this runs in a message or timer handler; deliver_run and
  /// end_session post theirs).
  void perform(Session& session, detail::DeliveryActions actions) {
    using namespace detail::delivery_action;
    for (auto& action : actions) {
      if (auto* send = std::get_if<SendRun>(&action)) {
        perform_send(session, *send);
      } else if (auto* cancel = std::get_if<SendCancel>(&action)) {
        v1::Envelope e;
        e.mutable_cancel_request()->set_execution_id(cancel->execution_id);
        e.mutable_cancel_request()->set_reason(cancel->reason);
        e.mutable_cancel_request()->set_requested_by("coordinator");
        session.writer.send(e);
      } else if (auto* resolve = std::get_if<Resolve>(&action)) {
        perform_resolve(session, *resolve);
      } else if (auto* timer = std::get_if<SetTimer>(&action)) {
        arm_delivery_timer(session, timer->at_mono_ms);
      }
    }
  }

  void perform_send(Session& session, const detail::delivery_action::SendRun& send) {
    auto payload = session.run_payloads.find(send.execution_id);
    if (payload == session.run_payloads.end()) return perform(session, session.delivery.sent(send.execution_id, 0));
    auto& request = *payload->second.request.mutable_run_request();
    request.set_delivery_attempt(send.delivery_attempt);
    // Fencing: the agent does not start the run after this instant, so the run can be
    // re-routed once it has passed without the first agent starting it late.
    request.set_start_deadline_unix_ms(send.start_deadline_unix_ms);
    if (send.reason == detail::SendReason::reask) {
      ++stats.runs_reasked;
      logger()->debug("agent {}: no answer to run {} after {} ms; asking again", session.agent.id(),
                      send.execution_id, send.waited_ms);
    }
    const auto message_id = session.writer.send(payload->second.request);
    if (message_id && send.reason == detail::SendReason::first) ++stats.runs_sent;
    perform(session, session.delivery.sent(send.execution_id, message_id));
  }

  /// A resolution during the session (answer, refusal, timer, never sent); end_session
  /// settles the rest itself.
  void perform_resolve(Session& session, const detail::delivery_action::Resolve& resolve) {
    using detail::DeliveryCause;
    auto node = session.run_payloads.extract(resolve.execution_id);
    if (!node) return;
    auto done = std::move(node.mapped().done);
    switch (resolve.cause) {
      case DeliveryCause::answered:
        ++stats.runs_accepted;
        break;
      case DeliveryCause::never_sent:
        // The connection is closed: it never left, so it cannot have started there.
        ++stats.runs_refused;
        asio::post(executor, [done = std::move(done)] { done(RunDelivery::refused); });
        return;
      case DeliveryCause::unconfirmed:
        ++stats.runs_unconfirmed;
        logger()->warn("agent {} did not answer run {} in {} ms ({}); re-routed: its start deadline has passed and it "
                       "is told to cancel",
                       session.agent.id(), resolve.execution_id, resolve.waited_ms,
                       resolve.heard ? "bound reached" : "session silent");
        ++stats.runs_refused;
        break;
      case DeliveryCause::unanswered: {
        logger()->warn("agent {} did not answer run {} in {} ms: whether it started is unknown; at_most_once: recorded "
                       "FAILURE agent lost, not re-routed",
                       session.agent.id(), resolve.execution_id, resolve.waited_ms);
        auto record = pending_record(session.agent.id(), node.mapped().request);
        const std::string agent_id = session.agent.id();
        if (done) done(RunDelivery::lost);
        return record_unanswered_lost(agent_id, std::move(record), resolve.waited_ms);
      }
      default:
        if (resolve.outcome == RunDelivery::refused) ++stats.runs_refused;
        break;
    }
    if (done) done(resolve.outcome);
  }

  void arm_delivery_timer(Session& session, std::int64_t at_mono_ms) {
    const auto arms = ++session.delivery_timer_arms;
    session.delivery_timer.expires_at(Clock::time_point(std::chrono::milliseconds(at_mono_ms)));
    session.delivery_timer.async_wait(
        [weak = weak_from_this(), weak_session = session.weak_from_this(), arms](const error_code& ec) {
          auto self = weak.lock();
          auto s = weak_session.lock();
          if (!self || !s || ec || s->ended || s->delivery_timer_arms != arms) return;
          self->perform(*s, s->delivery.timer_fired(delivery_now()));
        });
  }

  /// Stores FAILURE `agent lost` for an at_most_once run its agent never answered.
  void record_unanswered_lost(const std::string& agent_id, v1::Execution fallback, std::int64_t waited_ms) {
    auto marked = std::make_shared<std::optional<v1::Execution>>();
    store.transact(
        [agent_id, fallback, marked, waited_ms](StoreTransaction& tx, error_code&) {
          auto current = tx.execution(fallback.execution_id());
          if (current && (is_final(current->status()) || current->agent_id() != agent_id)) return;
          v1::Execution record = current.value_or(fallback);
          record.set_status(v1::EXECUTION_STATUS_FAILURE);
          record.set_failure_reason("agent lost");
          record.set_error_message(fmt::format(
              "agent {} did not answer the run request in {} ms; whether it started the run is unknown "
              "(delivery guarantee at_most_once: not re-routed)",
              agent_id, waited_ms));
          record.set_ended_unix_ms(unix_ms_now());
          record.set_updated_unix_ms(unix_ms_now());
          tx.upsert_execution(record);
          *marked = std::move(record);
        },
        [weak = weak_from_this(), marked](error_code ec) {
          auto self = weak.lock();
          if (!self) return;
          if (ec) return logger()->error("recording a run as agent lost failed: {}", ec.message());
          if (!*marked) return;
          ++self->stats.runs_lost;
          if (self->events.run_lost) self->events.run_lost(**marked);
        });
  }

  // --- full logs (LogRequest -> LogChunk) ------------------------------------------------

  std::uint64_t last_log_request = 0;

  void on_log_chunk(Session& session, const v1::LogChunk& chunk) {
    auto it = session.pending_logs.find(chunk.request_id());
    if (it == session.pending_logs.end()) return;  // answered after its timeout
    auto done = std::move(it->second);
    session.pending_logs.erase(it);
    done({}, chunk);
  }

  void fail_pending_logs(Session& session) {
    for (auto& [id, done] : session.pending_logs)
      asio::post(executor, [done = std::move(done)] { done(make_error_code(errc::not_found), {}); });
    session.pending_logs.clear();
  }

  // --- session end ---------------------------------------------------------------------

  void end_session(const std::shared_ptr<Session>& session, const std::string& why) {
    if (session->ended) return;
    session->ended = true;
    session->push_timer.cancel();
    sessions.erase(session);
    std::vector<v1::Execution> lost_unanswered;  // at_most_once runs it may have started
    ++session->delivery_timer_arms;
    session->delivery_timer.cancel();
    const auto now = delivery_now();
    for (auto& action : session->delivery.session_ended(now, stopped)) {
      auto& resolve = std::get<detail::delivery_action::Resolve>(action);
      auto node = session->run_payloads.extract(resolve.execution_id);
      if (!node) continue;
      auto done = std::move(node.mapped().done);
      if (resolve.outcome == RunDelivery::lost) {
        lost_unanswered.push_back(pending_record(session->agent.id(), node.mapped().request));
        asio::post(executor, [done] { done(RunDelivery::lost); });
        continue;
      }
      ++stats.runs_refused;
      if (!resolve.not_before_mono_ms) {  // the coordinator stops: settled by the next start's reconciliation
        asio::post(executor, [done] { done(RunDelivery::refused); });
        continue;
      }
      // at_least_once: re-routed once the first agent can no longer start it (its deadline).
      auto timer = std::make_shared<asio::steady_timer>(executor, std::chrono::milliseconds{*resolve.not_before_mono_ms - now.mono_ms});
      timer->async_wait([timer, done](const error_code&) { done(RunDelivery::refused); });
    }
    session->run_payloads.clear();
    for (auto& [id, done] : session->pending_cancels)
      asio::post(executor, [done = std::move(done)] { done(make_error_code(errc::not_found), v1::EXECUTION_STATUS_UNSPECIFIED); });
    session->pending_cancels.clear();
    fail_pending_logs(*session);
    if (!session->registered) return;
    auto it = by_agent.find(session->agent.id());
    if (it == by_agent.end() || it->second != session) return;  // replaced by a newer session
    by_agent.erase(it);
    // A stopping coordinator does not know the agents' fate: their runs stay open, and the
    // next start reconciles them with what the agents report when they come back.
    if (stopped) return;
    logger()->info("agent {} offline: {}", session->agent.id(), why);
    auto agent = session->agent;
    agent.set_state(v1::AGENT_STATE_OFFLINE);
    agent.set_state_changed_unix_ms(unix_ms_now());
    agent.mutable_push_status()->set_state(v1::CONFIG_PUSH_STATE_OFFLINE);
    std::vector<v1::Execution> lost = std::move(lost_unanswered);
    for (auto& [id, record] : session->routed) lost.push_back(std::move(record));
    session->routed.clear();
    auto marked = std::make_shared<std::vector<v1::Execution>>();
    store.transact(
        [agent, lost, marked, why](StoreTransaction& tx, error_code&) {
          tx.put_agent(agent);
          for (const auto& r : lost) {
            auto current = tx.execution(r.execution_id());
            if (current && is_final(current->status())) continue;  // its result arrived after all
            if (current && current->agent_id() != agent.id()) continue;  // it failed over elsewhere
            v1::Execution record = current.value_or(r);
            record.set_status(v1::EXECUTION_STATUS_FAILURE);
            record.set_failure_reason("agent lost");
            record.set_error_message(fmt::format("agent {} went offline while the run was {} ({})", agent.id(),
                                                 v1::ExecutionStatus_Name(r.status()), why));
            record.set_ended_unix_ms(unix_ms_now());
            record.set_updated_unix_ms(unix_ms_now());
            tx.upsert_execution(record);
            marked->push_back(std::move(record));
          }
        },
        [weak = weak_from_this(), agent, marked](error_code ec) {
          auto self = weak.lock();
          if (!self) return;
          if (ec) logger()->error("recording agent {} offline failed: {}", agent.id(), ec.message());
          if (self->events.agent_state) self->events.agent_state(agent);
          for (const auto& r : *marked) {
            ++self->stats.runs_lost;
            if (self->events.run_lost) self->events.run_lost(r);
          }
        });
  }

  /// The heartbeat period agents are told: whole seconds, at least 1.
  std::chrono::seconds advertised_heartbeat() const {
    return std::max(std::chrono::seconds{1}, std::chrono::round<std::chrono::seconds>(options.heartbeat_interval));
  }

  void arm_sweep() {
    const auto period = std::max<Clock::duration>(options.heartbeat_interval / 2, std::chrono::milliseconds{50});
    sweep_timer.expires_after(period);
    sweep_timer.async_wait([weak = weak_from_this()](const error_code& ec) {
      auto self = weak.lock();
      if (!self || ec || self->stopped) return;
      self->sweep();
      self->arm_sweep();
    });
  }

  /// Sessions silent for `missed_heartbeats` intervals (or never registered) are ended.
  void sweep() {
    const auto now = Clock::now();
    const auto silence = advertised_heartbeat() * options.missed_heartbeats;
    std::vector<std::shared_ptr<Session>> stale;
    for (const auto& s : sessions)
      if (now - s->last_seen > silence || (!s->registered && now - s->opened > options.ack_timeout * 2)) stale.push_back(s);
    for (const auto& s : stale) {
      const auto why = fmt::format("no message for {} ms", std::chrono::duration_cast<std::chrono::milliseconds>(now - s->last_seen).count());
      s->writer.goodbye(v1::GOODBYE_REASON_IDLE_TIMEOUT, why);
      s->writer.connection().close(why);
      end_session(s, why);
    }
  }
};

CoordinatorDispatcher::CoordinatorDispatcher(asio::any_io_executor executor, Store& store,
                                             CoordinatorDispatcherOptions options)
    : impl_(std::make_shared<Impl>(executor, store, std::move(options))) {}

CoordinatorDispatcher::~CoordinatorDispatcher() {
  impl_->stopped = true;
  impl_->sweep_timer.cancel();
  for (const auto& s : impl_->sessions) {
    s->push_timer.cancel();
    s->delivery_timer.cancel();
  }
}

void CoordinatorDispatcher::set_events(CoordinatorDispatcherEvents events) { impl_->events = std::move(events); }

void CoordinatorDispatcher::start(std::function<void(error_code)> ready) {
  auto snapshot = std::make_shared<Impl::CatalogSnapshot>();
  impl_->store.transact(
      [snapshot, coordinator = impl_->options.coordinator_id](StoreTransaction& tx, error_code&) {
        Impl::load_catalog(tx, *snapshot, {});
        // Agents this coordinator left ONLINE (it stopped or crashed) are offline until they register.
        v1::ListAgentsRequest request;
        request.set_page_size(500);
        request.set_state(v1::AGENT_STATE_ONLINE);
        std::vector<v1::Agent> online;
        for (std::uint32_t page = 1;; ++page) {
          request.set_page(page);
          auto listing = tx.list_agents(request);
          for (auto& a : listing.items) online.push_back(std::move(a));
          if (listing.items.size() < 500) break;
        }
        for (auto& a : online) {
          if (!a.coordinator_id().empty() && a.coordinator_id() != coordinator) continue;
          a.set_state(v1::AGENT_STATE_OFFLINE);
          a.set_state_changed_unix_ms(unix_ms_now());
          tx.put_agent(a);
        }
      },
      [weak = impl_->weak_from_this(), snapshot, ready = std::move(ready)](error_code ec) {
        auto self = weak.lock();
        if (!self) return;
        if (!ec) {
          self->install_catalog(*snapshot);
          self->arm_sweep();
        }
        if (ready) ready(ec);
      });
}

void CoordinatorDispatcher::accept(std::shared_ptr<Connection> connection) {
  auto& impl = *impl_;
  if (impl.stopped) {
    connection->close("coordinator stopping");
    return;
  }
  auto session = std::make_shared<Session>(impl.executor, connection, impl.delivery_options());
  impl.sessions.insert(session);
  std::weak_ptr<Session> weak_session = session;
  connection->start(Connection::Handlers{
      [weak = impl_->weak_from_this(), weak_session](std::string message) {
        auto self = weak.lock();
        auto s = weak_session.lock();
        if (self && s) self->on_message(s, message);
      },
      [weak = impl_->weak_from_this(), weak_session](std::string reason) {
        auto self = weak.lock();
        auto s = weak_session.lock();
        if (self && s) self->end_session(s, "connection closed: " + reason);
      }});
}

void CoordinatorDispatcher::catalog_changed(std::function<void()> done) {
  std::vector<std::string> online;
  for (const auto& [id, s] : impl_->by_agent) online.push_back(id);
  auto snapshot = std::make_shared<Impl::CatalogSnapshot>();
  impl_->store.read([snapshot, online](StoreTransaction& tx, error_code&) { Impl::load_catalog(tx, *snapshot, online); },
                    [weak = impl_->weak_from_this(), snapshot, done = std::move(done)](error_code ec) {
                      auto self = weak.lock();
                      if (!self) return;
                      if (ec) {
                        logger()->error("reloading the catalog failed: {}", ec.message());
                      } else {
                        auto agents = std::move(snapshot->agents);
                        self->install_catalog(*snapshot);
                        for (auto& [id, session] : self->by_agent) {
                          if (auto a = agents.find(id); a != agents.end()) {
                            session->agent.set_group_id(a->second.group_id());
                            session->agent.set_group_name(a->second.group_name());
                            session->agent.set_group_assignment(a->second.group_assignment());
                          }
                          if (!session->held_known) continue;  // its pull will get the current set
                          self->recompute_dirty(*session);
                          self->push_dirty(*session);
                        }
                      }
                      if (done) done();
                    });
}

void CoordinatorDispatcher::task_changed(const v1::Task& task) {
  auto& impl = *impl_;
  impl.version = std::max<std::int64_t>(impl.version, task.config_version());
  impl.tasks[task.id()] = task;
  for (auto& [id, session] : impl.by_agent) {
    if (!session->held_known) continue;
    if (impl.in_sync(*session, task.id())) continue;
    session->dirty.insert(task.id());
    impl.queue_push(session);
  }
}

void CoordinatorDispatcher::task_removed(const std::string& task_id, std::int64_t config_version) {
  auto& impl = *impl_;
  impl.version = std::max(impl.version, config_version);
  impl.tasks.erase(task_id);
  for (auto& [id, session] : impl.by_agent) {
    if (!session->held_known || !session->held.count(task_id)) continue;
    session->dirty.insert(task_id);
    impl.queue_push(session);
  }
}

void CoordinatorDispatcher::cancel(const std::string& execution_id, std::string reason, std::string requested_by,
                                   std::function<void(error_code, v1::ExecutionStatus)> done) {
  for (auto& [agent, session] : impl_->by_agent) {
    // Also a run whose answer is awaited: the agent remembers the cancel, so it wins over
    // a late start.
    if (!session->routed.count(execution_id) && !session->delivery.pending(execution_id)) continue;
    v1::Envelope e;
    auto* request = e.mutable_cancel_request();
    request->set_execution_id(execution_id);
    request->set_reason(std::move(reason));
    request->set_requested_by(std::move(requested_by));
    if (auto id = session->writer.send(e)) {
      session->pending_cancels[id] = std::move(done);
      return;
    }
    break;
  }
  asio::post(impl_->executor,
             [done = std::move(done)] { done(make_error_code(errc::not_found), v1::EXECUTION_STATUS_UNSPECIFIED); });
}

void CoordinatorDispatcher::fetch_log(const std::string& agent_id, const std::string& execution_id,
                                      std::uint64_t offset, std::uint32_t max_bytes,
                                      std::function<void(error_code, v1::LogChunk)> done) {
  auto& impl = *impl_;
  auto it = impl.by_agent.find(agent_id);
  if (it == impl.by_agent.end()) {
    asio::post(impl.executor, [done = std::move(done)] { done(make_error_code(errc::not_found), {}); });
    return;
  }
  auto session = it->second;
  const auto request_id = ++impl.last_log_request;
  v1::Envelope e;
  auto* request = e.mutable_log_request();
  request->set_request_id(request_id);
  request->set_execution_id(execution_id);
  request->set_offset(offset);
  request->set_max_bytes(max_bytes);
  if (!session->writer.send(e)) {
    asio::post(impl.executor, [done = std::move(done)] { done(make_error_code(errc::not_found), {}); });
    return;
  }
  session->pending_logs.emplace(request_id, std::move(done));
  // An agent that does not answer (an old one, or a stalled session) fails the request.
  auto timer = std::make_shared<asio::steady_timer>(impl.executor, 2 * impl.options.ack_timeout);
  timer->async_wait([timer, weak_session = std::weak_ptr<Session>(session), request_id](const error_code&) {
    auto s = weak_session.lock();
    if (!s) return;
    auto pending = s->pending_logs.find(request_id);
    if (pending == s->pending_logs.end()) return;
    auto late = std::move(pending->second);
    s->pending_logs.erase(pending);
    late(make_error_code(boost::system::errc::timed_out), {});
  });
}

void CoordinatorDispatcher::stop() {
  auto& impl = *impl_;
  impl.stopped = true;
  impl.sweep_timer.cancel();
  auto sessions = impl.sessions;
  for (const auto& s : sessions) {
    s->writer.goodbye(v1::GOODBYE_REASON_SHUTDOWN, "the coordinator is stopping");
    s->writer.connection().close("coordinator stopping");
    impl.end_session(s, "coordinator stopping");
  }
}

std::vector<std::string> CoordinatorDispatcher::online_agents() const {
  std::vector<std::string> ids;
  for (const auto& [id, s] : impl_->by_agent) ids.push_back(id);
  return ids;
}

bool CoordinatorDispatcher::held_by_online_agent(const std::string& execution_id) const {
  for (const auto& [id, s] : impl_->by_agent) {
    if (s->routed.count(execution_id) || s->delivery.pending(execution_id)) return true;
  }
  return false;
}

std::optional<v1::Task> CoordinatorDispatcher::task(const std::string& task_id) const {
  auto it = impl_->tasks.find(task_id);
  if (it == impl_->tasks.end()) return std::nullopt;
  return it->second;
}

const CoordinatorDispatcherStats& CoordinatorDispatcher::stats() const noexcept { return impl_->stats; }

std::vector<AgentLoad> CoordinatorDispatcher::eligible_agents(const v1::Task& task) {
  std::vector<AgentLoad> out;
  for (const auto& [id, s] : impl_->by_agent) {
    if (s->draining) continue;  // stopping: it only finishes what it runs
    const auto& group = s->agent.group_id();
    const bool bound = task.all_agents() || (!group.empty() && std::find(task.group_ids().begin(),
                                                                         task.group_ids().end(), group) !=
                                                                   task.group_ids().end());
    if (!bound) continue;
    out.push_back(AgentLoad{id, static_cast<std::uint32_t>(s->routed.size() + s->delivery.pending_count())});
  }
  return out;
}

void CoordinatorDispatcher::send_run(const std::string& agent_id, const v1::RunRequest& run,
                                     std::function<void(bool)> done) {
  deliver_run(agent_id, run, [done = std::move(done)](RunDelivery outcome) { done(outcome == RunDelivery::accepted); });
}

void CoordinatorDispatcher::deliver_run(const std::string& agent_id, const v1::RunRequest& run,
                                        std::function<void(RunDelivery)> done) {
  auto& impl = *impl_;
  auto it = impl.by_agent.find(agent_id);
  if (it == impl.by_agent.end() || it->second->draining) {
    ++impl.stats.runs_refused;  // never sent: certainly not started there
    asio::post(impl.executor, [done = std::move(done)] { done(RunDelivery::refused); });
    return;
  }
  auto& session = *it->second;
  v1::Envelope e;
  auto& request = *e.mutable_run_request() = run;
  if (!run.has_task()) {
    // The agent runs its own copy when it holds this revision; otherwise the config travels.
    auto held = session.held.find(run.task_id());
    auto task = impl.tasks.find(run.task_id());
    if ((held == session.held.end() || held->second != run.task_revision()) && task != impl.tasks.end())
      *request.mutable_task() = task->second;
  }
  // The start deadline and the delivery attempt are set at each send (Impl::perform_send).
  auto offered = session.delivery.offer(run.execution_id(), impl.guarantee_of(run), Impl::delivery_now());
  if (offered.joined) {
    // Sent here again while the first answer is awaited: one answer settles both.
    if (auto payload = session.run_payloads.find(run.execution_id()); payload != session.run_payloads.end())
      Impl::join_completions(payload->second, std::move(done));
    return;
  }
  session.run_payloads[run.execution_id()] = RunPayload{std::move(e), std::move(done)};
  impl.perform(session, std::move(offered.actions));
}

}  // namespace quartzflow
