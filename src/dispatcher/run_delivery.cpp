// SPDX-License-Identifier: Apache-2.0
// The coordinator's run delivery state machine (run_delivery.hpp): decisions only; the
// dispatcher performs the actions.
#include "run_delivery.hpp"

#include <algorithm>

namespace quartzflow::detail {

using namespace delivery_action;

bool resolves(const DeliveryActions& actions) {
  return std::any_of(actions.begin(), actions.end(),
                     [](const DeliveryAction& a) { return std::holds_alternative<Resolve>(a); });
}

RunDeliveryMachine::RunDeliveryMachine(RunDeliveryOptions options) : options_(options) {}

std::int64_t RunDeliveryMachine::start_deadline(DeliveryNow now) const {
  // The margin absorbs the error of the agent's clock offset estimate.
  const std::int64_t margin = std::min<std::int64_t>(1'000, options_.ack_timeout_ms / 4);
  return now.unix_ms + options_.ack_timeout_ms - margin;
}

std::int64_t RunDeliveryMachine::wait_bound_ms() const {
  return options_.acceptance_wait_max_ms > 0 ? options_.acceptance_wait_max_ms : options_.ack_timeout_ms * 4;
}

void RunDeliveryMachine::arm(PendingRun& run, std::optional<std::int64_t> at) {
  if (run.timer_at_mono_ms) timers_.erase({*run.timer_at_mono_ms, run.execution_id});
  run.timer_at_mono_ms = at;
  if (at) timers_.emplace(*at, run.execution_id);
}

std::optional<std::int64_t> RunDeliveryMachine::next_wake() const {
  if (timers_.empty()) return std::nullopt;
  return timers_.begin()->first;
}

const RunDeliveryMachine::PendingRun* RunDeliveryMachine::find(const std::string& execution_id) const {
  auto it = runs_.find(execution_id);
  return it == runs_.end() ? nullptr : &it->second;
}

DeliveryActions& RunDeliveryMachine::finish(DeliveryActions& actions) {
  // A wake later than needed is re-asked for; an early or needless one is left (it finds
  // nothing due and asks again), which spares re-arming the timer at every answer.
  if (auto next = next_wake(); next && (!armed_ || *next < *armed_)) {
    armed_ = next;
    actions.emplace_back(SetTimer{*next});
  }
  return actions;
}

DeliveryActions RunDeliveryMachine::resolve(const std::string& execution_id, RunDelivery outcome, DeliveryCause cause,
                                            DeliveryActions actions) {
  auto it = runs_.find(execution_id);
  if (it == runs_.end()) return actions;
  auto& run = it->second;
  arm(run, std::nullopt);
  for (auto id : run.message_ids) run_messages_.erase(id);
  Resolve r;
  r.execution_id = execution_id;
  r.outcome = outcome;
  r.cause = cause;
  r.guarantee = run.guarantee;
  runs_.erase(it);
  actions.emplace_back(std::move(r));
  return actions;
}

RunDeliveryMachine::Offered RunDeliveryMachine::offer(const std::string& execution_id, v1::DeliveryGuarantee guarantee,
                                                      DeliveryNow now) {
  Offered out;
  auto [it, inserted] = runs_.try_emplace(execution_id);
  if (!inserted) {
    out.joined = true;  // sent here again while the first answer is awaited: one answer settles both
    return out;
  }
  auto& run = it->second;
  run.execution_id = execution_id;
  run.guarantee = guarantee == v1::DELIVERY_GUARANTEE_AT_MOST_ONCE ? v1::DELIVERY_GUARANTEE_AT_MOST_ONCE
                                                                   : v1::DELIVERY_GUARANTEE_AT_LEAST_ONCE;
  run.sent_at_mono_ms = now.mono_ms;
  run.heard_mark = heard_count_;
  run.start_deadline_unix_ms = start_deadline(now);
  run.sends = 1;
  out.actions.emplace_back(SendRun{execution_id, run.sends, run.start_deadline_unix_ms, SendReason::first, 0});
  return out;
}

DeliveryActions RunDeliveryMachine::sent(const std::string& execution_id, std::uint64_t message_id) {
  DeliveryActions actions;
  auto it = runs_.find(execution_id);
  if (it == runs_.end()) return actions;
  auto& run = it->second;
  const bool first = std::exchange(run.first_send, false);
  if (message_id != 0) {
    run_messages_[message_id] = execution_id;
    run.message_ids.push_back(message_id);
    if (first) arm(run, run.sent_at_mono_ms + options_.ack_timeout_ms);
  } else if (first && run.message_ids.empty()) {
    // The connection is closed: it never left, so it cannot have started there.
    return resolve(execution_id, RunDelivery::refused, DeliveryCause::never_sent);
  }
  // A re-send that could not leave changes nothing: its timer still runs.
  return finish(actions);
}

DeliveryActions RunDeliveryMachine::answered(const std::string& execution_id) {
  DeliveryActions actions = resolve(execution_id, RunDelivery::accepted, DeliveryCause::answered);
  return finish(actions);
}

DeliveryActions RunDeliveryMachine::update(std::uint64_t in_reply_to, const std::string& execution_id) {
  std::string answered_id;
  if (auto m = run_messages_.find(in_reply_to); in_reply_to != 0 && m != run_messages_.end()) answered_id = m->second;
  else if (runs_.count(execution_id)) answered_id = execution_id;  // any state of the run answers it
  if (answered_id.empty()) return {};
  return answered(answered_id);
}

RunDeliveryMachine::Refusal RunDeliveryMachine::refused(std::uint64_t in_reply_to) {
  Refusal out;
  auto m = run_messages_.find(in_reply_to);
  if (in_reply_to == 0 || m == run_messages_.end()) return out;
  out.execution_id = m->second;
  if (!runs_.count(out.execution_id)) {
    out.kind = Refusal::Kind::stale;
    run_messages_.erase(m);
    return out;
  }
  // A refusal of an earlier request is not: the agent may refuse a late first request (its start
  // deadline passed while it was frozen) and start the request sent again after it.
  if (const auto& sent = runs_.at(out.execution_id).message_ids; !sent.empty() && sent.back() != in_reply_to) {
    out.kind = Refusal::Kind::superseded;
    return out;
  }
  // A refusal of the latest request is certain: the agent did not start the run and will not.
  out.kind = Refusal::Kind::refused;
  out.actions = resolve(out.execution_id, RunDelivery::refused, DeliveryCause::refused_by_agent);
  finish(out.actions);
  return out;
}

DeliveryActions RunDeliveryMachine::timer_fired(DeliveryNow now) {
  DeliveryActions actions;
  armed_.reset();  // this wake is spent
  std::vector<std::string> due;
  for (auto it = timers_.begin(); it != timers_.end() && it->first <= now.mono_ms; ++it) due.push_back(it->second);
  for (const auto& id : due) {
    auto found = runs_.find(id);
    if (found == runs_.end()) continue;
    auto& run = found->second;
    const bool heard_since_check = heard_count_ > run.heard_mark;
    run.heard_mark = heard_count_;
    const bool at_most_once = run.guarantee == v1::DELIVERY_GUARANTEE_AT_MOST_ONCE;
    const std::int64_t waited_ms = now.mono_ms - run.sent_at_mono_ms;
    // A slow answer from a live session is not a refusal: ask again for the run's state.
    // at_most_once asks a silent session too: re-routing is never an option for it.
    if (waited_ms < wait_bound_ms() && (heard_since_check || at_most_once)) {
      ++run.sends;
      actions.emplace_back(SendRun{id, run.sends, run.start_deadline_unix_ms, SendReason::reask, waited_ms});
      arm(run, now.mono_ms + options_.ack_timeout_ms);
      continue;
    }
    // Fenced only after the deadline: until then the agent may still start it.
    if (const std::int64_t early = run.start_deadline_unix_ms - now.unix_ms; !at_most_once && early >= 0) {
      arm(run, now.mono_ms + early + 1);
      continue;
    }
    actions.emplace_back(SendCancel{id, at_most_once ? "not acknowledged in time; recorded as agent lost"
                                                     : "not acknowledged in time; sent to another agent"});
    actions = resolve(id, at_most_once ? RunDelivery::lost : RunDelivery::refused,
                      at_most_once ? DeliveryCause::unanswered : DeliveryCause::unconfirmed, std::move(actions));
    auto& r = std::get<Resolve>(actions.back());
    r.heard = heard_since_check;
    r.waited_ms = waited_ms;
  }
  return finish(actions);
}

DeliveryActions RunDeliveryMachine::session_ended(DeliveryNow now, bool coordinator_stopping) {
  DeliveryActions actions;
  for (auto& [id, run] : runs_) {
    Resolve r;
    r.execution_id = id;
    r.guarantee = run.guarantee;
    r.waited_ms = now.mono_ms - run.sent_at_mono_ms;
    if (coordinator_stopping) {
      // Its fate is settled by the next start's reconciliation.
      r.outcome = RunDelivery::refused;
      r.cause = DeliveryCause::coordinator_stopping;
    } else if (run.guarantee == v1::DELIVERY_GUARANTEE_AT_MOST_ONCE) {
      r.outcome = RunDelivery::lost;  // it may have started there: never re-routed
      r.cause = DeliveryCause::session_ended;
    } else {
      // Re-routed once the first agent can no longer start it (its deadline).
      r.outcome = RunDelivery::refused;
      r.cause = DeliveryCause::session_ended;
      r.not_before_mono_ms =
          now.mono_ms + std::clamp<std::int64_t>(run.start_deadline_unix_ms - now.unix_ms + 1, 0, 3'600'000);
    }
    actions.emplace_back(std::move(r));
  }
  runs_.clear();
  run_messages_.clear();
  timers_.clear();
  armed_.reset();
  return actions;
}

std::vector<RunDeliveryMachine::PendingRun> RunDeliveryMachine::release() {
  std::vector<PendingRun> out;
  out.reserve(runs_.size());
  for (auto& [id, run] : runs_) out.push_back(std::move(run));
  runs_.clear();
  run_messages_.clear();
  timers_.clear();
  armed_.reset();
  return out;
}

DeliveryActions RunDeliveryMachine::adopt(std::vector<PendingRun> runs, DeliveryNow now) {
  DeliveryActions actions;
  for (auto& moved : runs) {
    auto [it, inserted] = runs_.try_emplace(moved.execution_id, std::move(moved));
    if (!inserted) continue;  // offered here meanwhile: that offer's request is out already
    auto& run = it->second;
    run.message_ids.clear();
    run.first_send = false;
    run.timer_at_mono_ms.reset();
    // The Register that opened this session is news since the last check on the old one.
    run.heard_mark = 0;
    ++run.sends;
    actions.emplace_back(SendRun{run.execution_id, run.sends, run.start_deadline_unix_ms, SendReason::new_session,
                                 now.mono_ms - run.sent_at_mono_ms});
    arm(run, now.mono_ms + options_.ack_timeout_ms);
  }
  return finish(actions);
}

}  // namespace quartzflow::detail
