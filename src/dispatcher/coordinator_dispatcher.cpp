// SPDX-License-Identifier: Apache-2.0
// The coordinator side of the agent protocol: one Session per connection; registered
// sessions are indexed by agent id. This file: the catalog mirror, sessions (registration,
// config sync, liveness, the end) and the public API; the decisions are the session machine's.
#include "coordinator_driver.hpp"
#include "version_policy.hpp"

namespace quartzflow {

namespace {

/// The version told to agents and judging theirs.
std::string announced_version(const CoordinatorDispatcherOptions& options) {
  return options.coordinator_version.empty() ? std::string(detail::library_version()) : options.coordinator_version;
}

/// Writes a session's copy of an agent's record without the fields the catalog owns: a
/// session's copy of the group is refreshed only when the catalog is reloaded, after a move
/// has committed, and a heartbeat or push status stored in between would put the agent
/// back in its old group with no audit entry. The stored record's group wins.
void put_session_agent(StoreTransaction& tx, v1::Agent agent) {
  if (auto stored = tx.agent(agent.id())) {
    agent.set_group_id(stored->group_id());
    agent.set_group_assignment(stored->group_assignment());
  }
  tx.put_agent(agent);
}

/// The group an agent registers into. A manual placement holds while its group exists in
/// the store: the cached groups may not list a group created just before the move yet.
std::string registration_group(StoreTransaction& tx, const v1::Agent& agent, const std::string& config_group,
                               const std::vector<v1::Group>& groups) {
  if (agent.group_assignment() == v1::GROUP_ASSIGNMENT_MANUAL && !agent.group_id().empty() &&
      tx.group(agent.group_id()))
    return agent.group_id();
  return resolve_group(agent, config_group, groups);
}

}  // namespace

void CoordinatorDispatcher::Impl::load_catalog(StoreTransaction& tx, CatalogSnapshot& out,
                                               const std::vector<std::string>& agent_ids) {
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

void CoordinatorDispatcher::Impl::install_catalog(CatalogSnapshot& snapshot, std::size_t changes_from) {
  tasks.clear();
  for (auto& t : snapshot.tasks) {
    auto id = t.id();
    tasks.emplace(std::move(id), std::move(t));
  }
  groups = std::move(snapshot.groups);
  // Never backwards: a change heard before the snapshot's install may be newer than it.
  version = std::max(version, snapshot.version);
  for (auto i = changes_from; i < changes_during_reload.size(); ++i) {
    const auto& change = changes_during_reload[i];
    if (change.task) tasks[change.task_id] = *change.task;
    else tasks.erase(change.task_id);
    version = std::max(version, change.version);
  }
}

void CoordinatorDispatcher::Impl::remember_change(const std::string& task_id, const v1::Task* task,
                                                  std::int64_t change_version) {
  if (reloads_reading == 0) return;
  changes_during_reload.push_back({task_id, task ? std::optional<v1::Task>(*task) : std::nullopt, change_version});
}

detail::SessionOptions CoordinatorDispatcher::Impl::session_options() const {
  return {options.ack_timeout.count(),
          options.max_repushes,
          std::chrono::duration_cast<std::chrono::milliseconds>(advertised_heartbeat()).count(),
          options.missed_heartbeats,
          delivery_options(),
          announced_version(options)};
}

/// Sends, stores the push status, performs run deliveries, fails timed-out log requests,
/// closes; then arms the session's timer for the machine's next wake.
void CoordinatorDispatcher::Impl::perform(Session& session, detail::SessionActions actions) {
  using Purpose = detail::OutgoingEnvelope::Purpose;
  for (auto& send : actions.sends) {
    if (send.purpose != Purpose::reply) ++stats.pushes_sent;
    if (send.purpose == Purpose::repush) ++stats.repushes;
    session.writer.send(send.envelope, send.in_reply_to);
  }
  const auto& agent = session.machine.agent();
  if (actions.push_failed) {
    ++stats.pushes_failed;
    logger()->warn("agent {}: config version {} not acknowledged after {} sends; push marked failed", agent.id(),
                   session.machine.desired_version(), session.machine.push_sends());
  }
  for (const auto& change : actions.push_statuses) {
    save_agent(change.agent);
    if (events.push_status) events.push_status(change.agent.id(), change.agent.push_status());
  }
  if (!actions.delivery.empty()) perform(session, std::move(actions.delivery));
  for (auto request_id : actions.logs_timed_out) {
    // An agent that does not answer (an old one, or a stalled session) fails the request.
    auto pending = session.pending_logs.find(request_id);
    if (pending == session.pending_logs.end()) continue;
    auto late = std::move(pending->second);
    session.pending_logs.erase(pending);
    late(make_error_code(boost::system::errc::timed_out), {});
  }
  if (actions.close) return close_session(session.shared_from_this(), *actions.close);
  rearm(session);
}

/// Ends a session the machine decided to end (a protocol failure, silence, a goodbye).
void CoordinatorDispatcher::Impl::close_session(const std::shared_ptr<Session>& session,
                                                const detail::SessionClose& close) {
  if (session->ended) return;
  if (close.error) {
    ++stats.protocol_errors;
    logger()->warn("closing session of {} ({}): {}",
                   session->machine.agent().id().empty() ? "unregistered peer" : session->machine.agent().id(),
                   session->writer.connection().remote_address(), close.why);
    session->writer.error(*close.error, close.why, true);
  }
  if (close.goodbye != v1::GOODBYE_REASON_UNSPECIFIED) {
    session->writer.goodbye(close.goodbye, close.why);
    session->writer.connection().close(close.why);
  } else {
    session->writer.connection().close("goodbye");
  }
  end_session(session, close.why);
}

/// Arms the session's timer for the machine's next wake when it is earlier than the armed
/// one (a later armed wake is left: the machine finds nothing due and asks again).
void CoordinatorDispatcher::Impl::rearm(Session& session) {
  if (session.ended) return;
  auto next = session.machine.next_wake();
  if (!next || (session.timer_at_ms && *session.timer_at_ms <= *next)) return;
  session.timer_at_ms = next;
  const auto arms = ++session.timer_arms;
  session.timer.expires_at(Clock::time_point(std::chrono::milliseconds(*next)));
  session.timer.async_wait(
      [weak = weak_from_this(), weak_session = session.weak_from_this(), arms](const error_code& ec) {
        auto self = weak.lock();
        auto s = weak_session.lock();
        if (!self || !s || ec || s->ended || s->timer_arms != arms) return;
        s->timer_at_ms.reset();
        self->perform(*s, s->machine.wake(delivery_now()));
      });
}

/// A change for many agents is pushed k_pushes_per_turn sessions per handler turn: the
/// replies of the first agents are read while the last are still being sent (pushing to
/// 10,000 agents in one turn let their ACKs overflow the socket's receive buffer).
void CoordinatorDispatcher::Impl::queue_push(const std::shared_ptr<Session>& session) {
  push_queue.push_back(session);
  post_push_drain();
}

void CoordinatorDispatcher::Impl::post_push_drain() {
  if (push_drain_posted || push_queue.empty()) return;
  push_drain_posted = true;
  asio::post(executor, [weak = weak_from_this()] {
    if (auto self = weak.lock()) self->drain_pushes();
  });
}

void CoordinatorDispatcher::Impl::drain_pushes() {
  push_drain_posted = false;
  constexpr std::size_t k_pushes_per_turn = 64;
  for (std::size_t n = 0; n < k_pushes_per_turn && !push_queue.empty(); ++n) {
    auto session = push_queue.front().lock();
    push_queue.pop_front();
    if (session && !session->ended && !stopped)
      perform(*session, session->machine.push(catalog_view(), delivery_now()));
  }
  post_push_drain();
}

void CoordinatorDispatcher::Impl::save_agent(const v1::Agent& agent) {
  store.transact([agent](StoreTransaction& tx, error_code&) { put_session_agent(tx, agent); },
                 [id = agent.id()](error_code ec) {
                   if (ec) logger()->error("saving agent {} failed: {}", id, ec.message());
                 });
}

void CoordinatorDispatcher::Impl::on_message(const std::shared_ptr<Session>& session, const std::string& message) {
  if (session->ended) return;
  const auto now = delivery_now();
  session->machine.heard(now);
  v1::ProtocolErrorCode code{};
  std::string why;
  auto envelope = detail::decode_envelope(message, options.max_message_bytes, code, why);
  if (!envelope)
    return close_session(session,
                         {code,
                          code == v1::PROTOCOL_ERROR_CODE_UNSUPPORTED_VERSION ? v1::GOODBYE_REASON_UNSUPPORTED_VERSION
                                                                              : v1::GOODBYE_REASON_PROTOCOL_ERROR,
                          why});
  if (auto refused = session->machine.admit(envelope->body_case())) return close_session(session, *refused);
  const auto id = envelope->message_id();
  auto& machine = session->machine;
  switch (envelope->body_case()) {
    case v1::Envelope::kRegisterRequest: return on_register(session, envelope->register_request(), id);
    case v1::Envelope::kConfigPull:
      return perform(*session, machine.pull(envelope->config_pull(), id, catalog_view(), now));
    case v1::Envelope::kConfigAck:
      return perform(*session, machine.config_ack(envelope->config_ack(), catalog_view(), now));
    case v1::Envelope::kHeartbeat: return on_heartbeat(*session, envelope->heartbeat(), id, now);
    case v1::Envelope::kExecutionUpdate:
      return on_update(session, envelope->execution_update(), envelope->in_reply_to());
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
    case v1::Envelope::kCancelResult:
      return on_cancel_result(*session, envelope->cancel_result(), envelope->in_reply_to());
    case v1::Envelope::kDailyStatsReport: return on_daily_stats(session, envelope->daily_stats_report(), id);
    case v1::Envelope::kLogChunk: return on_log_chunk(*session, envelope->log_chunk());
    case v1::Envelope::kAck: return;
    case v1::Envelope::kGoodbye: {
      const auto& bye = envelope->goodbye();
      auto close = machine.goodbye(bye);
      if (!close) {
        logger()->info("agent {} is draining ({} run(s) in progress): no new runs; waiting for their results: {}",
                       machine.agent().id(), machine.routed_count(), bye.message());
        return;
      }
      logger()->info("agent {} says goodbye: {}", machine.agent().id(), bye.message());
      return close_session(session, *close);
    }
    case v1::Envelope::kError: return on_error(*session, envelope->error(), envelope->in_reply_to());
    default:
      return close_session(
          session, {v1::PROTOCOL_ERROR_CODE_UNEXPECTED_MESSAGE, v1::GOODBYE_REASON_PROTOCOL_ERROR,
                    fmt::format("message field {} is not sent by agents", static_cast<int>(envelope->body_case()))});
  }
}

void CoordinatorDispatcher::Impl::on_register(const std::shared_ptr<Session>& session, const v1::Register& reg,
                                              std::uint64_t message_id) {
  if (auto refused = session->machine.check_register(reg, session->writer.connection().peer_identity()))
    return close_session(session, *refused);
  if (standby) return redirect(session, message_id);
  const std::int64_t now = now_unix_ms();
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
        const std::string group = registration_group(tx, agent, config_group, groups);
        if (agent.group_assignment() != v1::GROUP_ASSIGNMENT_MANUAL || group != agent.group_id()) {
          const bool configured =
              !config_group.empty() && std::any_of(groups.begin(), groups.end(), [&](const v1::Group& g) {
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

void CoordinatorDispatcher::Impl::redirect(const std::shared_ptr<Session>& session, std::uint64_t message_id) {
  v1::Envelope e;
  auto* err = e.mutable_error();
  err->set_code(v1::PROTOCOL_ERROR_CODE_UNAVAILABLE);
  err->set_message(leader_agent_address.empty()
                       ? fmt::format("coordinator {} is a standby and no leader holds the lease now; try another "
                                     "coordinator",
                                     options.coordinator_id)
                       : fmt::format("coordinator {} is a standby; the leader is at {}", options.coordinator_id,
                                     leader_agent_address));
  err->set_fatal(true);
  err->set_redirect_address(leader_agent_address);
  session->writer.send(e, message_id);
  session->writer.connection().close("standby: redirected to the leader");
  end_session(session, "redirected to the leader");
}

void CoordinatorDispatcher::Impl::open_session(const std::shared_ptr<Session>& session, v1::Agent agent,
                                               std::vector<v1::Execution> running, std::uint64_t message_id,
                                               std::int64_t echo) {
  detail::CoordinatorSession::Handover handover;
  std::map<std::string, RunPayload> moved_payloads;
  session->machine.registered(std::move(agent), std::move(running), catalog_view());
  const std::string id = session->machine.agent().id();
  if (auto old = by_agent.find(id); old != by_agent.end()) {
    // The same agent again (a reconnect the old session did not notice): its runs move over;
    // runs awaiting its answer are asked for again here (the agent answers with their state,
    // or refuses what it never got once the start deadline has passed).
    auto previous = old->second;
    by_agent.erase(old);
    handover = previous->machine.hand_over();
    moved_payloads = std::move(previous->run_payloads);
    previous->run_payloads.clear();
    ++previous->timer_arms;
    previous->timer.cancel();
    previous->writer.goodbye(v1::GOODBYE_REASON_SESSION_REPLACED, "a newer session of this agent replaced this one");
    previous->writer.connection().close("session replaced");
    end_session(previous, "session replaced");
  }
  by_agent[id] = session;
  ++stats.sessions_opened;
  v1::Envelope e;
  auto* result = e.mutable_register_result();
  result->set_agent_id(id);
  result->set_session_id(fmt::format("{}-{}", id, stats.sessions_opened));
  result->set_coordinator_id(options.coordinator_id);
  result->set_coordinator_unix_ms(now_unix_ms());
  result->set_echo_agent_unix_ms(echo);
  result->set_heartbeat_interval_seconds(static_cast<std::uint32_t>(advertised_heartbeat().count()));
  result->set_group_id(session->machine.agent().group_id());
  result->set_desired_config_version(version);
  result->set_max_batch_records(options.max_batch_records);
  result->set_coordinator_version(announced_version(options));
  session->writer.send(e, message_id);
  logger()->info("agent {} online ({}, group \"{}\", version {})", id, session->writer.connection().remote_address(),
                 session->machine.agent().group_id(), session->machine.agent().version());
  for (auto& [exec_id, payload] : moved_payloads) {
    auto [it, inserted] = session->run_payloads.try_emplace(exec_id, std::move(payload));
    if (!inserted) join_completions(it->second, std::move(payload.done));
  }
  perform(*session, session->machine.adopt(std::move(handover), delivery_now()));
  rearm(*session);
  if (events.agent_state) events.agent_state(session->machine.agent());
}

void CoordinatorDispatcher::Impl::on_heartbeat(Session& session, const v1::Heartbeat& beat, std::uint64_t message_id,
                                               detail::DeliveryNow now) {
  const auto& agent = session.machine.agent();
  if (beat.local_store_unavailable() != agent.local_store_unavailable())
    logger()->log(
        beat.local_store_unavailable() ? spdlog::level::err : spdlog::level::info, "agent {}: {}", agent.id(),
        beat.local_store_unavailable()
            ? fmt::format("its local store cannot commit ({}); it starts no new runs", beat.local_store_error())
            : std::string("its local store commits again"));
  auto actions = session.machine.heartbeat(beat, message_id, catalog_view(), now);
  if (actions.push_statuses.empty()) save_agent(agent);  // else perform saves it
  perform(session, std::move(actions));
}

/// The delivery machine's clocks: steady (waits, timers) and wall (start deadlines).
detail::DeliveryNow CoordinatorDispatcher::Impl::delivery_now() {
  return {std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now().time_since_epoch()).count(),
          now_unix_ms()};
}

detail::RunDeliveryOptions CoordinatorDispatcher::Impl::delivery_options() const {
  return {options.ack_timeout.count(), options.acceptance_wait_max.count()};
}

void CoordinatorDispatcher::Impl::end_session(const std::shared_ptr<Session>& session, const std::string& why) {
  if (session->ended) return;
  session->ended = true;
  ++session->timer_arms;
  session->timer.cancel();
  sessions.erase(session);
  std::vector<v1::Execution> lost_unanswered;  // at_most_once runs it may have started
  const auto now = delivery_now();
  auto ended = session->machine.ended(now, stopped || standby);
  for (auto& action : ended.delivery) {
    auto& resolve = std::get<detail::delivery_action::Resolve>(action);
    auto node = session->run_payloads.extract(resolve.execution_id);
    if (!node) continue;
    auto done = std::move(node.mapped().done);
    if (resolve.outcome == RunDelivery::lost) {
      lost_unanswered.push_back(pending_record(session->machine.agent().id(), node.mapped().request));
      asio::post(executor, [done] { done(RunDelivery::lost); });
      continue;
    }
    ++stats.runs_refused;
    if (!resolve.not_before_mono_ms) {  // the coordinator stops: settled by the next start's reconciliation
      asio::post(executor, [done] { done(RunDelivery::refused); });
      continue;
    }
    // at_least_once: re-routed once the first agent can no longer start it (its deadline).
    auto timer = std::make_shared<asio::steady_timer>(
        executor, std::chrono::milliseconds{*resolve.not_before_mono_ms - now.mono_ms});
    timer->async_wait([timer, done](const error_code&) { done(RunDelivery::refused); });
  }
  session->run_payloads.clear();
  for (auto& [id, done] : session->pending_cancels)
    asio::post(executor,
               [done = std::move(done)] { done(make_error_code(errc::not_found), v1::EXECUTION_STATUS_UNSPECIFIED); });
  session->pending_cancels.clear();
  fail_pending_logs(*session);
  if (!session->machine.is_registered()) return;
  auto it = by_agent.find(session->machine.agent().id());
  if (it == by_agent.end() || it->second != session) return;  // replaced by a newer session
  by_agent.erase(it);
  // A stopping coordinator does not know the agents' fate: their runs stay open, and the
  // next start reconciles them with what the agents report when they come back. A standby
  // (it lost the lease) leaves them, and the agent's record, to the leader.
  if (stopped || standby) return;
  logger()->info("agent {} offline: {}", session->machine.agent().id(), why);
  auto agent = session->machine.agent();
  agent.set_state(v1::AGENT_STATE_OFFLINE);
  agent.set_state_changed_unix_ms(now_unix_ms());
  agent.mutable_push_status()->set_state(v1::CONFIG_PUSH_STATE_OFFLINE);
  std::vector<v1::Execution> lost = std::move(lost_unanswered);
  for (auto& record : ended.routed) lost.push_back(std::move(record));
  auto marked = std::make_shared<std::vector<v1::Execution>>();
  store.transact(
      [agent, lost, marked, why](StoreTransaction& tx, error_code&) {
        marked->clear();
        put_session_agent(tx, agent);
        for (const auto& r : lost) {
          auto current = tx.execution(r.execution_id());
          if (current && is_final(current->status())) continue;        // its result arrived after all
          if (current && current->agent_id() != agent.id()) continue;  // it failed over elsewhere
          v1::Execution record = current.value_or(r);
          record.set_status(v1::EXECUTION_STATUS_FAILURE);
          record.set_failure_reason("agent lost");
          record.set_error_message(fmt::format("agent {} went offline while the run was {} ({})", agent.id(),
                                               v1::ExecutionStatus_Name(r.status()), why));
          record.set_ended_unix_ms(now_unix_ms());
          record.set_updated_unix_ms(now_unix_ms());
          tx.upsert_execution(record);
          marked->push_back(std::move(record));
        }
      },
      [weak = weak_from_this(), agent, marked](error_code ec) {
        auto self = weak.lock();
        if (!self) return;
        if (ec) logger()->error("recording agent {} offline failed: {}", agent.id(), ec.message());
        if (self->events.agent_state) self->events.agent_state(agent);
        if (ec) return;  // rolled back: no run was marked lost
        for (const auto& r : *marked) {
          ++self->stats.runs_lost;
          if (self->events.run_lost) self->events.run_lost(r);
        }
      });
}

/// The heartbeat period agents are told: whole seconds, at least 1.
std::chrono::seconds CoordinatorDispatcher::Impl::advertised_heartbeat() const {
  return std::max(std::chrono::seconds{1}, std::chrono::round<std::chrono::seconds>(options.heartbeat_interval));
}

CoordinatorDispatcher::CoordinatorDispatcher(asio::any_io_executor executor, Store& store,
                                             CoordinatorDispatcherOptions options)
    : impl_(std::make_shared<Impl>(executor, store, std::move(options))) {}

CoordinatorDispatcher::~CoordinatorDispatcher() {
  impl_->stopped = true;
  for (const auto& s : impl_->sessions) s->timer.cancel();
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
          a.set_state_changed_unix_ms(now_unix_ms());
          tx.put_agent(a);
        }
      },
      [weak = impl_->weak_from_this(), snapshot, ready = std::move(ready)](error_code ec) {
        auto self = weak.lock();
        if (!self) return;
        if (!ec) {
          self->install_catalog(*snapshot);
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
  if (!impl.revoked_certificates.empty() && impl.revoked_certificates.count(connection->peer_certificate_sha256())) {
    logger()->warn("refused {} ({}): its certificate was revoked", connection->remote_address(),
                   connection->peer_identity());
    connection->close("certificate revoked");
    return;
  }
  auto session = std::make_shared<Session>(impl.executor, connection, impl.session_options(), Impl::delivery_now());
  impl.sessions.insert(session);
  impl.rearm(*session);  // a peer that never registers is closed
  std::weak_ptr<Session> weak_session = session;
  connection->start(Connection::Handlers{[weak = impl_->weak_from_this(), weak_session](std::string message) {
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
  ++impl_->reloads_reading;
  const auto changes_from = impl_->changes_during_reload.size();
  impl_->store.read(
      [snapshot, online](StoreTransaction& tx, error_code&) { Impl::load_catalog(tx, *snapshot, online); },
      [weak = impl_->weak_from_this(), snapshot, changes_from, done = std::move(done)](error_code ec) {
        auto self = weak.lock();
        if (!self) return;
        const bool last_reload = --self->reloads_reading == 0;
        if (ec) {
          logger()->error("reloading the catalog failed: {}", ec.message());
        } else {
          auto agents = std::move(snapshot->agents);
          self->install_catalog(*snapshot, changes_from);
          for (auto& [id, session] : self->by_agent) {
            if (auto a = agents.find(id); a != agents.end()) {
              auto& agent = session->machine.agent();
              agent.set_group_id(a->second.group_id());
              agent.set_group_name(a->second.group_name());
              agent.set_group_assignment(a->second.group_assignment());
            }
            if (session->machine.catalog_reloaded(self->catalog_view()))
              self->perform(*session, session->machine.push(self->catalog_view(), Impl::delivery_now()));
          }
        }
        if (last_reload) self->changes_during_reload.clear();
        if (done) done();
      });
}

void CoordinatorDispatcher::task_changed(const v1::Task& task) {
  auto& impl = *impl_;
  impl.remember_change(task.id(), &task, task.config_version());
  impl.version = std::max<std::int64_t>(impl.version, task.config_version());
  impl.tasks[task.id()] = task;
  for (auto& [id, session] : impl.by_agent)
    if (session->machine.task_changed(task.id(), impl.catalog_view())) impl.queue_push(session);
}

void CoordinatorDispatcher::task_removed(const std::string& task_id, std::int64_t config_version) {
  auto& impl = *impl_;
  impl.remember_change(task_id, nullptr, config_version);
  impl.version = std::max(impl.version, config_version);
  impl.tasks.erase(task_id);
  for (auto& [id, session] : impl.by_agent) {
    if (!session->machine.held().count(task_id)) continue;
    if (session->machine.task_changed(task_id, impl.catalog_view())) impl.queue_push(session);
  }
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
  session->machine.log_requested(request_id, Impl::delivery_now());
  impl.rearm(*session);
}

void CoordinatorDispatcher::stop() {
  auto& impl = *impl_;
  impl.stopped = true;
  auto sessions = impl.sessions;
  for (const auto& s : sessions) {
    s->writer.goodbye(v1::GOODBYE_REASON_SHUTDOWN, "the coordinator is stopping");
    s->writer.connection().close("coordinator stopping");
    impl.end_session(s, "coordinator stopping");
  }
}

void CoordinatorDispatcher::stand_by(std::string leader_agent_address, bool close_sessions) {
  auto& impl = *impl_;
  impl.standby = true;
  impl.leader_agent_address = std::move(leader_agent_address);
  if (!close_sessions) return;
  auto sessions = impl.sessions;
  for (const auto& s : sessions) {
    if (s->ended) continue;
    // They reconnect at once; this coordinator then redirects them to the leader.
    v1::Envelope e;
    e.mutable_goodbye()->set_reason(v1::GOODBYE_REASON_SHUTDOWN);
    e.mutable_goodbye()->set_message("this coordinator is no longer the leader; reconnect");
    e.mutable_goodbye()->set_reconnect_after_ms(1);
    s->writer.send(e);
    s->writer.connection().close("standby");
    impl.end_session(s, "this coordinator stepped down");
  }
}

void CoordinatorDispatcher::set_revoked_certificates(std::set<std::string> sha256) {
  auto& impl = *impl_;
  impl.revoked_certificates = std::move(sha256);
  auto sessions = impl.sessions;
  for (const auto& s : sessions) {
    if (s->ended || !impl.revoked_certificates.count(s->writer.connection().peer_certificate_sha256())) continue;
    logger()->warn("agent {}: its certificate was revoked; session closed", s->writer.connection().peer_identity());
    s->writer.connection().close("certificate revoked");
    impl.end_session(s, "certificate revoked");
  }
}

std::string CoordinatorDispatcher::session_certificate_sha256(const std::string& agent_id) const {
  auto it = impl_->by_agent.find(agent_id);
  return it == impl_->by_agent.end() ? std::string() : it->second->writer.connection().peer_certificate_sha256();
}

void CoordinatorDispatcher::lead() { impl_->standby = false; }

bool CoordinatorDispatcher::standing_by() const noexcept { return impl_->standby; }

std::vector<std::string> CoordinatorDispatcher::online_agents() const {
  std::vector<std::string> ids;
  for (const auto& [id, s] : impl_->by_agent) ids.push_back(id);
  return ids;
}

bool CoordinatorDispatcher::held_by_online_agent(const std::string& execution_id) const {
  for (const auto& [id, s] : impl_->by_agent) {
    if (s->machine.holds(execution_id)) return true;
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
    if (s->machine.draining()) continue;  // stopping: it only finishes what it runs
    if (!task_bound_to_agent(task, s->machine.agent())) continue;
    out.push_back(AgentLoad{id, static_cast<std::uint32_t>(s->machine.load())});
  }
  return out;
}

}  // namespace quartzflow
