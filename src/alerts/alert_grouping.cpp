// SPDX-License-Identifier: Apache-2.0
// The alert engine's groups: when a rule's alerts are notified (group_wait, group_interval,
// repeat_interval, escalation, silences) and the notifications that go out then.
#include <algorithm>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "../common/stable_hash.hpp"
#include "alert_state.hpp"

namespace quartzflow::detail {

namespace {

const char* kind_name(v1::NotificationKind kind) {
  switch (kind) {
    case v1::NOTIFICATION_KIND_FIRING: return "firing";
    case v1::NOTIFICATION_KIND_REPEAT: return "repeat";
    case v1::NOTIFICATION_KIND_ESCALATION: return "escalation";
    case v1::NOTIFICATION_KIND_RESOLVED: return "resolved";
    default: return "other";
  }
}

/// Alerts in the order notifications list them: oldest first, then by id.
void sort_alerts(std::vector<TrackedAlert*>& alerts) {
  std::sort(alerts.begin(), alerts.end(), [](const TrackedAlert* a, const TrackedAlert* b) {
    if (a->alert.started_unix_ms() != b->alert.started_unix_ms()) {
      return a->alert.started_unix_ms() < b->alert.started_unix_ms();
    }
    return a->alert.id() < b->alert.id();
  });
}

/// What a notification announces, as 16 hex digits: the same announcement composed again
/// (a re-run after a crash) gets the same id; a repeat differs from the previous one by the
/// instants its alerts were last notified.
std::string announcement_hash(v1::NotificationKind kind, std::size_t step, const std::vector<TrackedAlert*>& alerts) {
  std::string text = fmt::format("{}/{}", kind_name(kind), step);
  for (const auto* tracked : alerts) {
    text += '/';
    text += tracked->alert.id();
    if (kind == v1::NOTIFICATION_KIND_REPEAT) text += fmt::format("@{}", tracked->alert.last_notified_unix_ms());
  }
  return fmt::format("{:016x}", stable_hash(text));
}

}  // namespace

void AlertEngine::State::mark_pending(const std::string& /*rule_id*/, AlertGroup& group) {
  if (group.pending_since_ms == 0) group.pending_since_ms = now;
}

void AlertEngine::State::reschedule(const std::string& rule_id, AlertGroup& group) {
  std::int64_t due = k_never;
  const auto rit = rules.find(rule_id);
  if (rit != rules.end()) {
    const auto& rule = rit->second;
    const bool fresh = group.last_flush_ms == 0;
    const std::int64_t interval_gate = group.last_flush_ms + rule.group_interval_ms;
    if (group.firing.empty() && group.recovering.empty() && !fresh) due = interval_gate;  // to forget it
    if (group.pending_since_ms != 0) {
      due = fresh ? group.pending_since_ms + rule.group_wait_ms : std::max(group.pending_since_ms, interval_gate);
    }
    if (group.repeat_due_ms != k_never) {
      due = std::min(due, fresh ? group.repeat_due_ms : std::max(group.repeat_due_ms, interval_gate));
    }
    if (group.escalation_due_ms != k_never) {
      due = std::min(due, group.last_escalation_ms == 0
                              ? group.escalation_due_ms
                              : std::max(group.escalation_due_ms, group.last_escalation_ms + rule.group_interval_ms));
    }
  }
  if (due == group.scheduled_ms) return;
  if (group.scheduled_ms != k_never) due_groups.erase({group.scheduled_ms, rule_id});
  group.scheduled_ms = due;
  if (due != k_never) due_groups.emplace(due, rule_id);
}

void AlertEngine::State::flush(const std::string& rule_id, AlertGroup& group) {
  const auto rit = rules.find(rule_id);
  if (rit == rules.end()) return;
  const auto& rule = rit->second;
  const auto& steps = rule.rule.escalation();
  const bool fresh = group.last_flush_ms == 0;
  const bool news_gate = fresh ? group.pending_since_ms != 0 && now >= group.pending_since_ms + rule.group_wait_ms
                               : now >= group.last_flush_ms + rule.group_interval_ms;
  const bool repeat_gate = fresh || now >= group.last_flush_ms + rule.group_interval_ms;
  const bool escalation_gate =
      group.last_escalation_ms == 0 || now >= group.last_escalation_ms + rule.group_interval_ms;

  std::vector<TrackedAlert*> news;
  std::vector<TrackedAlert*> repeats;
  std::vector<TrackedAlert*> resolved;
  std::vector<std::vector<TrackedAlert*>> escalated(static_cast<std::size_t>(steps.size()));
  std::vector<TrackedAlert*> escalated_any;
  bool still_pending = false;
  group.repeat_due_ms = k_never;
  group.escalation_due_ms = k_never;

  for (auto& [key, tracked] : group.firing) {
    auto& alert = tracked.alert;
    if (silenced(alert, now)) continue;  // its silence's end makes every group look again
    const bool acknowledged = alert.acknowledged_unix_ms() != 0;
    if (alert.last_notified_unix_ms() == 0) {
      if (news_gate) {
        news.push_back(&tracked);
      } else {
        still_pending = true;
      }
    } else if (!acknowledged) {
      const std::int64_t due = alert.last_notified_unix_ms() + rule.repeat_interval_ms;
      if (due <= now && repeat_gate) {
        repeats.push_back(&tracked);
      } else {
        group.repeat_due_ms = std::min(group.repeat_due_ms, due);
      }
    }
    if (acknowledged) continue;
    auto level = static_cast<int>(alert.escalation_level());
    while (level < steps.size()) {
      const std::int64_t due = alert.started_unix_ms() + static_cast<std::int64_t>(steps[level].after_seconds()) * 1000;
      if (due > now || !escalation_gate) {
        group.escalation_due_ms = std::min(group.escalation_due_ms, due);
        break;
      }
      escalated[static_cast<std::size_t>(level)].push_back(&tracked);
      ++level;
    }
    if (static_cast<std::uint32_t>(level) != alert.escalation_level()) {
      alert.set_escalation_level(static_cast<std::uint32_t>(level));
      escalated_any.push_back(&tracked);
    }
  }
  std::vector<std::string> recovered_ids;
  for (auto& [id, tracked] : group.recovering) {
    if (silenced(tracked.alert, now)) continue;  // waits for its silence's end
    if (news_gate) {
      resolved.push_back(&tracked);
      recovered_ids.push_back(id);
    } else {
      still_pending = true;
    }
  }

  struct Announcement {
    v1::NotificationKind kind;
    std::vector<TrackedAlert*>* alerts;
    std::size_t step;
    std::string hash;
  };
  std::vector<Announcement> announcements;
  const auto announce = [&](v1::NotificationKind kind, std::vector<TrackedAlert*>& alerts, std::size_t step) {
    if (alerts.empty()) return;
    sort_alerts(alerts);
    announcements.push_back({kind, &alerts, step, announcement_hash(kind, step, alerts)});
  };
  announce(v1::NOTIFICATION_KIND_FIRING, news, 0);
  announce(v1::NOTIFICATION_KIND_REPEAT, repeats, 0);
  announce(v1::NOTIFICATION_KIND_RESOLVED, resolved, 0);
  for (std::size_t step = 0; step < escalated.size(); ++step) {
    announce(v1::NOTIFICATION_KIND_ESCALATION, escalated[step], step);
  }

  // The alerts as notified (hashes first: a repeat's hash takes the previous instant).
  for (auto* tracked : news) tracked->alert.set_last_notified_unix_ms(now);
  for (auto* tracked : repeats) tracked->alert.set_last_notified_unix_ms(now);
  for (auto* tracked : resolved) {
    tracked->alert.set_last_notified_unix_ms(now);
    tracked->alert.set_recovery_pending(false);
  }
  for (auto* list : {&news, &repeats, &resolved, &escalated_any}) {
    for (const auto* tracked : *list) record(tracked->alert);
  }
  for (const auto* list : {&news, &repeats}) {
    for (const auto* tracked : *list) {
      if (tracked->alert.acknowledged_unix_ms() == 0) {
        group.repeat_due_ms = std::min(group.repeat_due_ms, now + rule.repeat_interval_ms);
      }
    }
  }

  const auto firing_total = static_cast<std::uint32_t>(group.firing.size());
  for (const auto& announcement : announcements) {
    const bool escalation = announcement.kind == v1::NOTIFICATION_KIND_ESCALATION;
    const auto& channels =
        escalation ? steps[static_cast<int>(announcement.step)].channel_ids() : rule.rule.channel_ids();
    v1::Notification notification;
    notification.set_kind(announcement.kind);
    notification.set_rule_id(rule_id);
    notification.set_rule_description(rule.rule.description());
    notification.set_severity(rule.rule.severity() == v1::ALERT_SEVERITY_UNSPECIFIED ? v1::ALERT_SEVERITY_WARNING
                                                                                     : rule.rule.severity());
    std::uint32_t listed_firing = 0;
    for (const auto* tracked : *announcement.alerts) {
      if (static_cast<std::size_t>(notification.items_size()) == options.max_items) break;
      auto& item = *notification.add_items();
      item = tracked->figures;
      *item.mutable_alert() = tracked->alert;
      if (tracked->alert.state() == v1::ALERT_STATE_FIRING) ++listed_firing;
    }
    notification.set_more_firing(firing_total - listed_firing);
    notification.set_created_unix_ms(now);
    notification.set_console_url(options.console_url);
    notification.set_language(rule.rule.language().empty() ? "en" : rule.rule.language());
    for (const auto& channel : channels) {
      v1::Delivery delivery;
      delivery.set_id(fmt::format("{}:{}:{}:{}", rule_id, channel, kind_name(announcement.kind), announcement.hash));
      delivery.set_kind(v1::DELIVERY_KIND_NOTIFICATION);
      delivery.set_state(v1::DELIVERY_STATE_PENDING);
      delivery.set_channel_id(channel);
      *delivery.mutable_notification() = notification;
      delivery.mutable_notification()->set_id(delivery.id());
      delivery.set_created_unix_ms(now);
      delivery.set_next_attempt_unix_ms(now);
      effects.deliveries.push_back(std::move(delivery));
    }
  }

  if (!news.empty() || !repeats.empty() || !resolved.empty()) group.last_flush_ms = now;
  if (!escalated_any.empty()) group.last_escalation_ms = now;
  group.pending_since_ms = still_pending ? (group.pending_since_ms != 0 ? group.pending_since_ms : now) : 0;
  for (const auto& id : recovered_ids) group.recovering.erase(id);
  reschedule_or_drop(rule_id, group);
}

void AlertEngine::State::rescan_all() {
  // Alerts a silence muted were left out of the cached repeat and escalation instants: each
  // group is scanned again as soon as its intervals allow.
  for (auto& [rule_id, group] : groups) {
    mark_pending(rule_id, group);
    group.repeat_due_ms = now;
    group.escalation_due_ms = now;
    reschedule(rule_id, group);
  }
}

void AlertEngine::State::reschedule_or_drop(const std::string& rule_id, AlertGroup& group) {
  if (group.firing.empty() && group.recovering.empty()) {
    // An empty group is forgotten once its interval has passed: until then a new alert
    // waits for the interval (a flapping task is not notified every group_wait).
    const auto rit = rules.find(rule_id);
    if (group.last_flush_ms == 0 || rit == rules.end() || now >= group.last_flush_ms + rit->second.group_interval_ms) {
      remove_group(rule_id);
      return;
    }
  }
  reschedule(rule_id, group);
}

void AlertEngine::State::advance(std::int64_t at) {
  now = std::max(now, at);
  while (!timers.empty() && timers.begin()->first <= now) {
    const auto [due, key] = *timers.begin();
    timers.erase(timers.begin());
    timer_due.erase(key);
    fire_timer(key, due);
  }
  // A silence that began or ended: every group looks at its alerts again.
  const bool boundary = std::any_of(silences.begin(), silences.end(), [&](const v1::Silence& s) {
    return (s.starts_unix_ms() > silences_checked_until && s.starts_unix_ms() <= now) ||
           (s.ends_unix_ms() > silences_checked_until && s.ends_unix_ms() <= now);
  });
  silences_checked_until = now;
  if (boundary) rescan_all();
  // Each due group once: a flush never reschedules a group at or before `now`, but a
  // bound on the loop costs nothing.
  std::vector<std::string> due;
  if (options.scan_every_group) {
    for (const auto& [rule_id, group] : groups) due.push_back(rule_id);
  }
  for (auto it = due_groups.begin(); it != due_groups.end() && it->first <= now; ++it) due.push_back(it->second);
  for (const auto& rule_id : due) {
    const auto git = groups.find(rule_id);
    if (git == groups.end()) continue;
    due_groups.erase({git->second.scheduled_ms, rule_id});
    git->second.scheduled_ms = k_never;
    flush(rule_id, git->second);
  }
}

std::int64_t AlertEngine::State::next_deadline() const {
  std::int64_t next = k_never;
  if (!timers.empty()) next = timers.begin()->first;
  if (!due_groups.empty()) next = std::min(next, due_groups.begin()->first);
  for (const auto& silence : silences) {
    for (const std::int64_t boundary : {silence.starts_unix_ms(), silence.ends_unix_ms()}) {
      if (boundary > silences_checked_until) next = std::min(next, boundary);
    }
  }
  return next;
}

}  // namespace quartzflow::detail
