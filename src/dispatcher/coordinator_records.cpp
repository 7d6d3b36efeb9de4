// SPDX-License-Identifier: Apache-2.0
// The coordinator's driver of what agents report: execution updates and records (stored in
// one transaction, then acknowledged), live output, daily stats, full logs.
#include "../common/execution_id.hpp"
#include "coordinator_driver.hpp"

namespace quartzflow {

void CoordinatorDispatcher::Impl::on_update(const std::shared_ptr<Session>& session, const v1::ExecutionUpdate& update,
                                            std::uint64_t in_reply_to) {
  // Live output only (an id, no state): it answers nothing. The agent's reply to the run
  // request (its first state) follows, and only that reply routes the run here; had the
  // output resolved the offer, the reply would find none and the run would never be
  // routed (not cancellable, not failed as lost with its session).
  if (update.execution().task_id().empty() && update.execution().status() == v1::EXECUTION_STATUS_UNSPECIFIED)
    return on_output(*session, update);
  // It answers the request it replies to, else the run it carries (any state answers); a
  // late answer to a run that already failed over is not routed here.
  perform(*session, session->machine.update(in_reply_to, update.execution()));
  v1::Execution record = update.execution();
  if (record.execution_id().empty() || record.task_id().empty()) return;
  if (!update.output_delta().empty()) on_output(*session, update);  // once routed here
  ingest(session, {std::move(record)}, 0);
}

/// Live output (live logs): taken only for a run this session holds (routed here or
/// offered to it) or one its agent fires itself (its id ends in `:<agent id>`); any other
/// agent could otherwise write into any execution's live log.
void CoordinatorDispatcher::Impl::on_output(Session& session, const v1::ExecutionUpdate& update) {
  const auto& id = update.execution().execution_id();
  if (update.output_delta().empty() || !events.output || id.empty()) return;
  const bool own = detail::execution_id_names_agent(id, session.machine.agent().id());
  if (!own && !session.machine.holds(id)) {
    ++stats.output_refused;
    return;
  }
  v1::Execution record;
  record.set_execution_id(id);
  record.set_agent_id(session.machine.agent().id());  // the agent that streamed it (its session's end drops it)
  // The delta's raw end in the agent's log (its bytes may have been replaced as UTF-8).
  record.set_output_bytes(update.execution().output_bytes());
  events.output(record, update.output_offset(), update.output_delta());
}

/// Stores records (an upsert each, one transaction), then acknowledges them when asked.
/// Stores the agent's daily stats (each entry replaces the previous one), then ACKs; an
/// entry the store refuses (bad date, no task) is skipped with a warning, the others kept.
void CoordinatorDispatcher::Impl::on_daily_stats(const std::shared_ptr<Session>& session,
                                                 const v1::DailyStatsReport& report, std::uint64_t ack_to) {
  auto entries = std::make_shared<std::vector<v1::DailyStats>>(report.stats().begin(), report.stats().end());
  for (auto& entry : *entries) entry.set_agent_id(session->machine.agent().id());  // the session says who reports
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
        if (ec)
          return logger()->error("storing daily stats of agent {} failed: {}", session->machine.agent().id(),
                                 ec.message());
        ++self->stats.daily_stats_stored;
        logger()->debug("agent {}: {} daily stats entries stored", session->machine.agent().id(), count);
        v1::Envelope ack;
        ack.mutable_ack();
        session->writer.send(ack, ack_to);
      });
}

void CoordinatorDispatcher::Impl::ingest(const std::shared_ptr<Session>& session, std::vector<v1::Execution> records,
                                         std::uint64_t ack_to) {
  auto rejected = std::make_shared<std::vector<v1::RejectedRecord>>();
  std::vector<v1::Execution> valid;
  valid.reserve(records.size());
  for (auto& r : records) {
    std::string why;
    if (r.execution_id().empty()) why = "execution_id: must not be empty";
    else if (r.task_id().empty()) why = "task_id: must not be empty";
    else if (r.status() == v1::EXECUTION_STATUS_UNSPECIFIED) why = "status: must be set";
    else if (!r.agent_id().empty() && r.agent_id() != session->machine.agent().id())
      why = fmt::format("agent_id: \"{}\" is not the agent of this session", r.agent_id());
    if (!why.empty()) {
      v1::RejectedRecord rej;
      rej.set_execution_id(r.execution_id());
      rej.set_reason(std::move(why));
      rejected->push_back(std::move(rej));
      continue;
    }
    r.set_agent_id(session->machine.agent().id());
    if (r.group_id().empty()) r.set_group_id(session->machine.agent().group_id());
    r.set_reported_unix_ms(now_unix_ms());
    // A result of a run whose answer is awaited (the answer was lost): it was accepted.
    if (session->machine.awaiting(r.execution_id())) perform(*session, session->machine.record(r));
    valid.push_back(std::move(r));
  }
  // Which records changed state (for events): a re-sent final record is not news.
  auto stored = std::make_shared<std::vector<std::pair<v1::Execution, bool>>>();
  auto shared = std::make_shared<std::vector<v1::Execution>>(std::move(valid));
  auto second_executions = std::make_shared<std::uint64_t>(0);
  store.transact(
      [shared, stored, second_executions, agent_id = session->machine.agent().id()](StoreTransaction& tx, error_code&) {
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
                logger()->warn(
                    "agent {}: run {} was executed here ({}) although it was re-assigned to agent {} "
                    "(recorded there as {}): a second execution",
                    agent_id, r.execution_id(), v1::ExecutionStatus_Name(r.status()), current->agent_id(),
                    v1::ExecutionStatus_Name(current->status()));
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
          logger()->error("storing {} record(s) of agent {} failed: {}", stored->size(), session->machine.agent().id(),
                          ec.message());
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
          session->machine.stored(r);
          if (changed && self->events.execution) self->events.execution(r);
        }
      });
}

void CoordinatorDispatcher::Impl::on_log_chunk(Session& session, const v1::LogChunk& chunk) {
  if (!session.machine.log_answered(chunk.request_id())) return;  // answered after its timeout
  auto it = session.pending_logs.find(chunk.request_id());
  if (it == session.pending_logs.end()) return;
  auto done = std::move(it->second);
  session.pending_logs.erase(it);
  done({}, chunk);
}

void CoordinatorDispatcher::Impl::fail_pending_logs(Session& session) {
  for (auto& [id, done] : session.pending_logs)
    asio::post(executor, [done = std::move(done)] { done(make_error_code(errc::not_found), {}); });
  session.pending_logs.clear();
}

}  // namespace quartzflow
