// SPDX-License-Identifier: Apache-2.0
// The coordinator's driver of run delivery: it performs what each session's RunDeliveryMachine
// decides (sends, cancels, completions, FAILURE `agent lost`) and offers runs and cancels.
#include "coordinator_driver.hpp"

namespace quartzflow {

void CoordinatorDispatcher::Impl::on_cancel_result(Session& session, const v1::CancelResult& result,
                                                   std::uint64_t in_reply_to) {
  auto it = session.pending_cancels.find(in_reply_to);
  if (it == session.pending_cancels.end()) return;
  auto done = std::move(it->second);
  session.pending_cancels.erase(it);
  if (done) done(result.found() ? error_code{} : make_error_code(errc::not_found), result.status());
}

void CoordinatorDispatcher::Impl::on_error(Session& session, const v1::ProtocolError& error,
                                           std::uint64_t in_reply_to) {
  using Refusal = detail::RunDeliveryMachine::Refusal;
  if (auto refusal = session.machine.refused(in_reply_to); refusal.kind != Refusal::Kind::not_a_run) {
    if (refusal.kind == Refusal::Kind::refused) {
      logger()->info("agent {} refused run {}: {}", session.machine.agent().id(), refusal.execution_id,
                     error.message());
      perform(session, std::move(refusal.actions));
    } else if (refusal.kind == Refusal::Kind::superseded) {
      logger()->info("agent {} refused an earlier request of run {} ({}); the answer to the latest decides",
                     session.machine.agent().id(), refusal.execution_id, error.message());
    } else {
      logger()->info("agent {} refused run {} after it was re-routed: {}", session.machine.agent().id(),
                     refusal.execution_id, error.message());
    }
    return;
  }
  logger()->warn("agent {} reports a protocol error: {}", session.machine.agent().id(), error.message());
  if (error.fatal()) {
    session.writer.connection().close("peer error");
  }
}

v1::DeliveryGuarantee CoordinatorDispatcher::Impl::guarantee_of(const v1::RunRequest& run) const {
  auto guarantee = run.has_task() ? run.task().delivery_guarantee() : v1::DELIVERY_GUARANTEE_UNSPECIFIED;
  if (auto task = tasks.find(run.task_id()); task != tasks.end()) guarantee = task->second.delivery_guarantee();
  return guarantee == v1::DELIVERY_GUARANTEE_AT_MOST_ONCE ? v1::DELIVERY_GUARANTEE_AT_MOST_ONCE
                                                          : v1::DELIVERY_GUARANTEE_AT_LEAST_ONCE;
}

/// The store's record of a run awaiting its answer, when the store has none better.
v1::Execution CoordinatorDispatcher::Impl::pending_record(const std::string& agent_id, const v1::Envelope& request) {
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

/// A second offer of a run whose answer is awaited: one answer settles both.
void CoordinatorDispatcher::Impl::join_completions(RunPayload& payload, std::function<void(RunDelivery)> done) {
  payload.done = [first = std::move(payload.done), done = std::move(done)](RunDelivery outcome) {
    if (first) first(outcome);
    if (done) done(outcome);
  };
}

/// Performs what the session's delivery machine decided: sends, cancels, timers, and the
/// offers' completions (inline: this runs in a message or timer handler; deliver_run and
/// end_session post theirs).
void CoordinatorDispatcher::Impl::perform(Session& session, detail::DeliveryActions actions) {
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
    }  // SetTimer: the session's next_wake covers it
  }
  rearm(session);
}

void CoordinatorDispatcher::Impl::perform_send(Session& session, const detail::delivery_action::SendRun& send) {
  auto payload = session.run_payloads.find(send.execution_id);
  if (payload == session.run_payloads.end()) return perform(session, session.machine.sent(send.execution_id, 0));
  auto& request = *payload->second.request.mutable_run_request();
  request.set_delivery_attempt(send.delivery_attempt);
  // Fencing: the agent does not start the run after this instant, so the run can be
  // re-routed once it has passed without the first agent starting it late.
  request.set_start_deadline_unix_ms(send.start_deadline_unix_ms);
  if (send.reason == detail::SendReason::reask) {
    ++stats.runs_reasked;
    logger()->debug("agent {}: no answer to run {} after {} ms; asking again", session.machine.agent().id(),
                    send.execution_id, send.waited_ms);
  }
  const auto message_id = session.writer.send(payload->second.request);
  if (message_id && send.reason == detail::SendReason::first) ++stats.runs_sent;
  perform(session, session.machine.sent(send.execution_id, message_id));
}

/// A resolution during the session (answer, refusal, timer, never sent); end_session
/// settles the rest itself.
void CoordinatorDispatcher::Impl::perform_resolve(Session& session, const detail::delivery_action::Resolve& resolve) {
  using detail::DeliveryCause;
  auto node = session.run_payloads.extract(resolve.execution_id);
  if (!node) return;
  auto done = std::move(node.mapped().done);
  switch (resolve.cause) {
    case DeliveryCause::answered: ++stats.runs_accepted; break;
    case DeliveryCause::never_sent:
      // The connection is closed: it never left, so it cannot have started there.
      ++stats.runs_refused;
      asio::post(executor, [done = std::move(done)] { done(RunDelivery::refused); });
      return;
    case DeliveryCause::unconfirmed:
      ++stats.runs_unconfirmed;
      logger()->warn(
          "agent {} did not answer run {} in {} ms ({}); re-routed: its start deadline has passed and it "
          "is told to cancel",
          session.machine.agent().id(), resolve.execution_id, resolve.waited_ms,
          resolve.heard ? "bound reached" : "session silent");
      ++stats.runs_refused;
      break;
    case DeliveryCause::unanswered: {
      logger()->warn(
          "agent {} did not answer run {} in {} ms: whether it started is unknown; at_most_once: recorded "
          "FAILURE agent lost, not re-routed",
          session.machine.agent().id(), resolve.execution_id, resolve.waited_ms);
      auto record = pending_record(session.machine.agent().id(), node.mapped().request);
      const std::string agent_id = session.machine.agent().id();
      if (done) done(RunDelivery::lost);
      return record_unanswered_lost(agent_id, std::move(record), resolve.waited_ms);
    }
    default:
      if (resolve.outcome == RunDelivery::refused) ++stats.runs_refused;
      break;
  }
  if (done) done(resolve.outcome);
}

/// Stores FAILURE `agent lost` for an at_most_once run its agent never answered.
void CoordinatorDispatcher::Impl::record_unanswered_lost(const std::string& agent_id, v1::Execution fallback,
                                                         std::int64_t waited_ms) {
  auto marked = std::make_shared<std::optional<v1::Execution>>();
  store.transact(
      [agent_id, fallback, marked, waited_ms](StoreTransaction& tx, error_code&) {
        auto current = tx.execution(fallback.execution_id());
        if (current && (is_final(current->status()) || current->agent_id() != agent_id)) return;
        v1::Execution record = current.value_or(fallback);
        record.set_status(v1::EXECUTION_STATUS_FAILURE);
        record.set_failure_reason("agent lost");
        record.set_error_message(
            fmt::format("agent {} did not answer the run request in {} ms; whether it started the run is unknown "
                        "(delivery guarantee at_most_once: not re-routed)",
                        agent_id, waited_ms));
        record.set_ended_unix_ms(now_unix_ms());
        record.set_updated_unix_ms(now_unix_ms());
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

void CoordinatorDispatcher::cancel(const std::string& execution_id, std::string reason, std::string requested_by,
                                   std::function<void(error_code, v1::ExecutionStatus)> done) {
  for (auto& [agent, session] : impl_->by_agent) {
    // Also a run whose answer is awaited: the agent remembers the cancel, so it wins over
    // a late start.
    if (!session->machine.holds(execution_id)) continue;
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

void CoordinatorDispatcher::send_run(const std::string& agent_id, const v1::RunRequest& run,
                                     std::function<void(bool)> done) {
  deliver_run(agent_id, run, [done = std::move(done)](RunDelivery outcome) { done(outcome == RunDelivery::accepted); });
}

void CoordinatorDispatcher::deliver_run(const std::string& agent_id, const v1::RunRequest& run,
                                        std::function<void(RunDelivery)> done) {
  auto& impl = *impl_;
  auto it = impl.by_agent.find(agent_id);
  if (it == impl.by_agent.end() || it->second->machine.draining()) {
    ++impl.stats.runs_refused;  // never sent: certainly not started there
    asio::post(impl.executor, [done = std::move(done)] { done(RunDelivery::refused); });
    return;
  }
  auto& session = *it->second;
  v1::Envelope e;
  auto& request = *e.mutable_run_request() = run;
  if (!run.has_task()) {
    // The agent runs its own copy when it holds this revision; otherwise the config travels.
    auto held = session.machine.held().find(run.task_id());
    auto task = impl.tasks.find(run.task_id());
    if ((held == session.machine.held().end() || held->second != run.task_revision()) && task != impl.tasks.end())
      *request.mutable_task() = task->second;
  }
  // The start deadline and the delivery attempt are set at each send (Impl::perform_send).
  auto offered = session.machine.offer(run.execution_id(), impl.guarantee_of(run), Impl::delivery_now());
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
