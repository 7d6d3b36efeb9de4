// SPDX-License-Identifier: Apache-2.0
// The coordinator's session state machine (session_machine.hpp): decisions only; the
// dispatcher sends, stores and arms the timer.
#include "session_machine.hpp"
#include "version_policy.hpp"

#include <algorithm>

#include <fmt/format.h>

#include <quartzflow/catalog.hpp>
#include <quartzflow/execution_status.hpp>

namespace quartzflow::detail {

bool valid_agent_id(const std::string& id) {
  if (id.empty() || id.size() > 253) return false;
  return std::all_of(id.begin(), id.end(), [](unsigned char c) { return c > 0x20 && c < 0x7f; });
}

namespace {
SessionClose failure(v1::ProtocolErrorCode code, std::string why) {
  return SessionClose{code,
                      code == v1::PROTOCOL_ERROR_CODE_UNSUPPORTED_VERSION ? v1::GOODBYE_REASON_UNSUPPORTED_VERSION
                                                                          : v1::GOODBYE_REASON_PROTOCOL_ERROR,
                      std::move(why)};
}
}  // namespace

CoordinatorSession::CoordinatorSession(SessionOptions options, DeliveryNow now)
    : options_(options), opened_ms_(now.mono_ms), last_seen_ms_(now.mono_ms), delivery_(options.delivery) {}

// --- registration ------------------------------------------------------------------------

std::optional<SessionClose> CoordinatorSession::admit(v1::Envelope::BodyCase body) const {
  if (!registered_ && body != v1::Envelope::kRegisterRequest)
    return failure(v1::PROTOCOL_ERROR_CODE_UNEXPECTED_MESSAGE,
                   fmt::format("the first message must be Register, not field {}", static_cast<int>(body)));
  if (registered_ && body == v1::Envelope::kRegisterRequest)
    return failure(v1::PROTOCOL_ERROR_CODE_UNEXPECTED_MESSAGE, "Register sent twice");
  return std::nullopt;
}

std::optional<SessionClose> CoordinatorSession::check_register(const v1::Register& reg,
                                                               std::string_view peer_identity) const {
  if (!valid_agent_id(reg.agent_id()))
    return failure(v1::PROTOCOL_ERROR_CODE_INVALID_ARGUMENT,
                   "register.agent_id: must be 1-253 printable ASCII characters without spaces");
  // An authenticated peer may only register as the name its certificate carries: one
  // agent's certificate cannot be used to impersonate another.
  if (!peer_identity.empty() && peer_identity != reg.agent_id())
    return failure(v1::PROTOCOL_ERROR_CODE_INVALID_ARGUMENT,
                   fmt::format("register.agent_id: \"{}\" does not match the certificate's name \"{}\"", reg.agent_id(),
                               peer_identity));
  if (auto refusal = agent_version_refusal(reg.agent_version(), options_.coordinator_version); !refusal.empty())
    return failure(parse_software_version(reg.agent_version()) ? v1::PROTOCOL_ERROR_CODE_UNSUPPORTED_VERSION
                                                               : v1::PROTOCOL_ERROR_CODE_INVALID_ARGUMENT,
                   std::move(refusal));
  // What an agent says about itself is stored and shown: bounded like any other input.
  const std::pair<const char*, int> lists[] = {{"register.ips", reg.ips_size()},
                                               {"register.labels", reg.labels_size()},
                                               {"register.executors", reg.executors_size()}};
  for (const auto& [field, size] : lists)
    if (size > 64)
      return failure(v1::PROTOCOL_ERROR_CODE_INVALID_ARGUMENT,
                     fmt::format("{}: has {} elements; at most 64 are allowed", field, size));
  return std::nullopt;
}

void CoordinatorSession::registered(v1::Agent agent, std::vector<v1::Execution> running, const CatalogView& catalog) {
  agent_ = std::move(agent);
  registered_ = true;
  desired_version_ = catalog.version;
  for (auto& record : running) routed_.emplace(record.execution_id(), std::move(record));
}

CoordinatorSession::Handover CoordinatorSession::hand_over() {
  Handover handover;
  handover.routed = std::move(routed_);
  routed_.clear();
  handover.pending = delivery_.release();
  return handover;
}

DeliveryActions CoordinatorSession::adopt(Handover handover, DeliveryNow now) {
  for (auto& [id, record] : handover.routed) routed_.insert_or_assign(id, std::move(record));
  return delivery_.adopt(std::move(handover.pending), now);
}

// --- messages ------------------------------------------------------------------------------

void CoordinatorSession::heard(DeliveryNow now) {
  last_seen_ms_ = std::max(last_seen_ms_, now.mono_ms);
  delivery_.heard();
}

SessionActions CoordinatorSession::pull(const v1::ConfigPull& pull, std::uint64_t message_id,
                                        const CatalogView& catalog, DeliveryNow now) {
  SessionActions out;
  const bool full =
      pull.full() || pull.applied_config_version() == 0 || pull.applied_config_version() != acked_version_;
  if (full) held_known_ = false;
  send_config(out, false, message_id, full, catalog, now);
  return out;
}

SessionActions CoordinatorSession::config_ack(const v1::ConfigAck& ack, const CatalogView& catalog, DeliveryNow now) {
  SessionActions out;
  switch (ack.result()) {
    case v1::CONFIG_APPLY_RESULT_APPLIED:
    case v1::CONFIG_APPLY_RESULT_PARTIAL: {
      auto offer = offers_.find(ack.config_version());
      if (offer == offers_.end()) return out;  // an ACK of something not offered here (or older): stale
      if (!offer->second.snapshot && !held_known_) return out;
      if (!offer->second.snapshot && offer->second.base != acked_version_) {
        // The agent is at this version, but not by this delta (it applies only to its base,
        // and a different version was acknowledged since): what it holds is not known, so a
        // snapshot is pushed (applying the delta's changes here could claim tasks it lacks).
        held_known_ = false;
        push_.reset();
        push_due_ms_.reset();
        send_config(out, true, 0, true, catalog, now);
        return out;
      }
      accept_offer(offer->second, catalog);
      acked_version_ = ack.config_version();
      offers_.erase(offers_.begin(), std::next(offer));
      agent_.set_applied_config_version(ack.config_version());
      if (push_ && desired_version_ <= ack.config_version()) {
        push_.reset();
        push_due_ms_.reset();
      }
      std::vector<v1::TaskConfigError> errors(ack.task_errors().begin(), ack.task_errors().end());
      set_push_state(out,
                     ack.result() == v1::CONFIG_APPLY_RESULT_APPLIED ? v1::CONFIG_PUSH_STATE_IN_SYNC
                                                                     : v1::CONFIG_PUSH_STATE_PARTIAL,
                     {}, now, errors);
      push_dirty(out, catalog, now);  // changes made while this was in flight
      return out;
    }
    case v1::CONFIG_APPLY_RESULT_BASE_MISMATCH:
      // The agent follows with a full pull.
      push_.reset();
      push_due_ms_.reset();
      held_known_ = false;
      return out;
    default:
      push_.reset();
      push_due_ms_.reset();
      set_push_state(out, v1::CONFIG_PUSH_STATE_FAILED, "rejected by the agent: " + ack.message(), now);
      return out;
  }
}

SessionActions CoordinatorSession::heartbeat(const v1::Heartbeat& beat, std::uint64_t message_id,
                                             const CatalogView& catalog, DeliveryNow now) {
  agent_.set_last_heartbeat_unix_ms(now.unix_ms);
  agent_.set_clock_offset_ms(beat.clock_offset_ms());
  agent_.set_running_executions(beat.running_executions());
  agent_.set_load_average_1m(beat.load_average_1m());
  agent_.set_pending_sync_records(beat.pending_sync_records());
  agent_.set_applied_config_version(beat.applied_config_version());
  agent_.set_local_store_unavailable(beat.local_store_unavailable());
  agent_.set_local_store_disk_full(beat.local_store_disk_full());
  agent_.set_local_store_error(beat.local_store_error());
  agent_.set_local_store_unavailable_since_unix_ms(beat.local_store_unavailable_since_unix_ms());
  agent_.set_fires_not_started(beat.fires_not_started());
  agent_.set_uncommitted_records(beat.uncommitted_records());
  SessionActions out;
  // The agent applied a version whose ACK was lost: the heartbeat says so.
  if (beat.applied_config_version() > acked_version_ && offers_.count(beat.applied_config_version())) {
    v1::ConfigAck ack;
    ack.set_config_version(beat.applied_config_version());
    ack.set_result(v1::CONFIG_APPLY_RESULT_APPLIED);
    out = config_ack(ack, catalog, now);
  }
  OutgoingEnvelope reply;
  auto* beat_ack = reply.envelope.mutable_heartbeat_ack();
  beat_ack->set_coordinator_unix_ms(now.unix_ms);
  beat_ack->set_echo_agent_unix_ms(beat.agent_unix_ms());
  beat_ack->set_desired_config_version(desired_version_);
  reply.in_reply_to = message_id;
  out.sends.push_back(std::move(reply));
  return out;
}

std::optional<SessionClose> CoordinatorSession::goodbye(const v1::Goodbye& bye) {
  if (bye.reason() == v1::GOODBYE_REASON_DRAINING) {
    // Stopping with runs in progress: they finish within the agent's grace and report here.
    // A goodbye is not a loss; only what is still open when it closes is.
    draining_ = true;
    return std::nullopt;
  }
  return SessionClose{std::nullopt, v1::GOODBYE_REASON_UNSPECIFIED, "goodbye: " + bye.message()};
}

DeliveryActions CoordinatorSession::update(std::uint64_t in_reply_to, const v1::Execution& record) {
  auto answered = delivery_.update(in_reply_to, record.execution_id());
  const bool accepted = resolves(answered);
  if (record.execution_id().empty() || record.task_id().empty()) return answered;
  // A late answer to a run that already failed over (its pending entry is gone) is not routed
  // here: the agent was told to cancel it, and the store keeps the record the new agent's.
  if (!is_final(record.status())) {
    if (auto it = routed_.find(record.execution_id()); it != routed_.end()) it->second = record;
    else if (accepted) routed_.emplace(record.execution_id(), record);
  }
  return answered;
}

DeliveryActions CoordinatorSession::record(const v1::Execution& record) {
  // A result of a run whose answer is awaited (the answer was lost): it was accepted.
  if (!delivery_.pending(record.execution_id())) return {};
  auto actions = delivery_.answered(record.execution_id());
  if (!is_final(record.status())) routed_.emplace(record.execution_id(), record);
  return actions;
}

void CoordinatorSession::stored(const v1::Execution& record) {
  if (is_final(record.status())) routed_.erase(record.execution_id());
}

// --- config --------------------------------------------------------------------------------

bool CoordinatorSession::in_sync(const std::string& id, const CatalogView& catalog) const {
  auto task = catalog.tasks.find(id);
  auto held = held_.find(id);
  const bool wanted = task != catalog.tasks.end() && task_bound_to_agent(task->second, agent_);
  if (!wanted) return held == held_.end();
  return held != held_.end() && held->second == task->second.revision();
}

void CoordinatorSession::recompute_dirty(const CatalogView& catalog) {
  dirty_.clear();
  for (const auto& [id, revision] : held_)
    if (!in_sync(id, catalog)) dirty_.insert(id);
  for (const auto& [id, task] : catalog.tasks)
    if (task_bound_to_agent(task, agent_) && !in_sync(id, catalog)) dirty_.insert(id);
}

bool CoordinatorSession::task_changed(const std::string& task_id, const CatalogView& catalog) {
  if (!held_known_ || in_sync(task_id, catalog)) return false;
  dirty_.insert(task_id);
  return true;
}

bool CoordinatorSession::catalog_reloaded(const CatalogView& catalog) {
  if (!held_known_) return false;  // its pull will get the current set
  recompute_dirty(catalog);
  return !dirty_.empty();
}

SessionActions CoordinatorSession::push(const CatalogView& catalog, DeliveryNow now) {
  SessionActions out;
  push_dirty(out, catalog, now);
  return out;
}

void CoordinatorSession::push_dirty(SessionActions& out, const CatalogView& catalog, DeliveryNow now) {
  // One push in flight: changes made meanwhile wait for its ACK and go in the next delta (a
  // second delta on the same base would not apply).
  if (!held_known_ || push_) return;
  // What is in sync needs no push (a task created and deleted again before it was pushed):
  // left dirty, it would be pushed in empty deltas for ever.
  std::erase_if(dirty_, [&](const std::string& id) { return in_sync(id, catalog); });
  if (dirty_.empty()) return;
  send_config(out, true, 0, false, catalog, now);
}

void CoordinatorSession::send_config(SessionActions& out, bool pushed, std::uint64_t in_reply_to, bool full,
                                     const CatalogView& catalog, DeliveryNow now) {
  v1::Envelope e;
  ConfigOffer offer;
  if (full || !held_known_) {
    offer.snapshot = true;
    auto* snapshot = e.mutable_config_snapshot();
    snapshot->set_config_version(catalog.version);
    snapshot->set_group_id(agent_.group_id());
    for (const auto& [id, t] : catalog.tasks) {
      if (!task_bound_to_agent(t, agent_)) continue;
      *snapshot->add_tasks() = t;
      offer.held.emplace(id, t.revision());
    }
    snapshot->set_push_attempt(pushed ? 1 : 0);
  } else {
    auto* delta = e.mutable_config_delta();
    delta->set_base_config_version(acked_version_);
    offer.base = acked_version_;
    delta->set_config_version(catalog.version);
    for (const auto& id : dirty_) {
      auto task = catalog.tasks.find(id);
      if (task != catalog.tasks.end() && task_bound_to_agent(task->second, agent_)) {
        *delta->add_upserts() = task->second;
        offer.changes.emplace_back(id, task->second.revision());
      } else if (held_.count(id)) {
        delta->add_removed_task_ids(id);
        offer.changes.emplace_back(id, -1);
      }
    }
    delta->set_push_attempt(pushed ? 1 : 0);
  }
  // A snapshot already offered at this version stays: the agent may acknowledge either with
  // the same version, and only the snapshot says what it holds whatever it held before (the
  // delta's changes apply to its base, which a newer ACK may have replaced meanwhile).
  if (auto kept = offers_.find(catalog.version); offer.snapshot || kept == offers_.end() || !kept->second.snapshot)
    offers_[catalog.version] = std::move(offer);
  desired_version_ = catalog.version;
  if (pushed) {
    push_ = std::move(e);
    push_sends_ = 0;
    resend_push(out, now);
    set_push_state(out, v1::CONFIG_PUSH_STATE_PENDING, {}, now);
  } else {
    out.sends.push_back({OutgoingEnvelope::Purpose::reply, std::move(e), in_reply_to});
  }
}

void CoordinatorSession::accept_offer(ConfigOffer& offer, const CatalogView& catalog) {
  if (offer.snapshot) {
    held_ = std::move(offer.held);
    held_known_ = true;
    recompute_dirty(catalog);
    return;
  }
  for (const auto& [id, revision] : offer.changes) {
    if (revision < 0) {
      held_.erase(id);
    } else {
      held_[id] = revision;
    }
    if (in_sync(id, catalog)) dirty_.erase(id);
  }
}

void CoordinatorSession::resend_push(SessionActions& out, DeliveryNow now) {
  if (!push_) return;
  ++push_sends_;
  auto& e = *push_;
  if (e.has_config_delta()) e.mutable_config_delta()->set_push_attempt(push_sends_);
  if (e.has_config_snapshot()) e.mutable_config_snapshot()->set_push_attempt(push_sends_);
  out.sends.push_back({push_sends_ > 1 ? OutgoingEnvelope::Purpose::repush : OutgoingEnvelope::Purpose::push, e, 0});
  push_due_ms_ = now.mono_ms + options_.ack_timeout_ms;
}

void CoordinatorSession::set_push_state(SessionActions& out, v1::ConfigPushState state, std::string error,
                                        DeliveryNow now, const std::vector<v1::TaskConfigError>& task_errors) {
  auto* status = agent_.mutable_push_status();
  status->set_state(state);
  status->set_attempts(push_sends_);
  status->set_error(error);
  status->clear_task_errors();
  for (const auto& e : task_errors) *status->add_task_errors() = e;
  if (state == v1::CONFIG_PUSH_STATE_PENDING) status->set_last_push_unix_ms(now.unix_ms);
  if (state == v1::CONFIG_PUSH_STATE_IN_SYNC || state == v1::CONFIG_PUSH_STATE_PARTIAL)
    status->set_last_ack_unix_ms(now.unix_ms);
  agent_.set_desired_config_version(desired_version_);
  out.push_statuses.push_back(PushStatusChange{state, std::move(error), agent_});
}

// --- runs and log requests -----------------------------------------------------------------

RunDeliveryMachine::Offered CoordinatorSession::offer(const std::string& execution_id, v1::DeliveryGuarantee guarantee,
                                                      DeliveryNow now) {
  return delivery_.offer(execution_id, guarantee, now);
}

void CoordinatorSession::log_requested(std::uint64_t request_id, DeliveryNow now) {
  log_deadlines_.emplace(now.mono_ms + 2 * options_.ack_timeout_ms, request_id);
}

bool CoordinatorSession::log_answered(std::uint64_t request_id) {
  auto it = std::find_if(log_deadlines_.begin(), log_deadlines_.end(),
                         [&](const auto& entry) { return entry.second == request_id; });
  if (it == log_deadlines_.end()) return false;
  log_deadlines_.erase(it);
  return true;
}

// --- time and end --------------------------------------------------------------------------

std::int64_t CoordinatorSession::silence_ms() const {
  return options_.heartbeat_interval_ms * static_cast<std::int64_t>(options_.missed_heartbeats);
}

SessionActions CoordinatorSession::wake(DeliveryNow now) {
  SessionActions out;
  // Liveness first: a silent session is ended, which settles the rest.
  const std::int64_t silent_for = now.mono_ms - last_seen_ms_;
  if ((registered_ && silent_for > silence_ms()) ||
      (!registered_ && now.mono_ms - opened_ms_ > 2 * options_.ack_timeout_ms)) {
    out.close =
        SessionClose{std::nullopt, v1::GOODBYE_REASON_IDLE_TIMEOUT, fmt::format("no message for {} ms", silent_for)};
    closed_ = true;
    return out;
  }
  if (push_ && push_due_ms_ && *push_due_ms_ <= now.mono_ms) {
    if (push_sends_ <= options_.max_repushes) {
      resend_push(out, now);
    } else {
      out.push_failed = true;
      push_.reset();
      push_due_ms_.reset();
      set_push_state(out, v1::CONFIG_PUSH_STATE_FAILED,
                     fmt::format("no ConfigAck for version {} after {} sends", desired_version_, push_sends_), now);
    }
  }
  while (!log_deadlines_.empty() && log_deadlines_.begin()->first <= now.mono_ms) {
    out.logs_timed_out.push_back(log_deadlines_.begin()->second);
    log_deadlines_.erase(log_deadlines_.begin());
  }
  if (auto due = delivery_.next_wake(); due && *due <= now.mono_ms) out.delivery = delivery_.timer_fired(now);
  return out;
}

std::optional<std::int64_t> CoordinatorSession::next_wake() const {
  if (closed_) return std::nullopt;
  // Liveness: the instant the silence would exceed the bound if nothing is heard meanwhile.
  std::int64_t next = registered_ ? last_seen_ms_ + silence_ms() + 1 : opened_ms_ + 2 * options_.ack_timeout_ms + 1;
  if (push_due_ms_) next = std::min(next, *push_due_ms_);
  if (!log_deadlines_.empty()) next = std::min(next, log_deadlines_.begin()->first);
  if (auto due = delivery_.next_wake()) next = std::min(next, *due);
  return next;
}

CoordinatorSession::Ended CoordinatorSession::ended(DeliveryNow now, bool coordinator_stopping) {
  Ended out;
  closed_ = true;
  out.delivery = delivery_.session_ended(now, coordinator_stopping);
  for (auto& [id, record] : routed_) out.routed.push_back(std::move(record));
  routed_.clear();
  push_.reset();
  push_due_ms_.reset();
  log_deadlines_.clear();
  return out;
}

}  // namespace quartzflow::detail
