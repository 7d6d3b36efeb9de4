// SPDX-License-Identifier: Apache-2.0
// The alert engine's rules and alerts: rule defaults and scopes, silences, raising and
// resolving an alert, the timers of the dead man's switch, offline agents and monitors.
#include <algorithm>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "alert_state.hpp"

namespace quartzflow::detail {

namespace {

bool contains(const google::protobuf::RepeatedPtrField<std::string>& list, const std::string& value) {
  return std::find(list.begin(), list.end(), value) != list.end();
}

bool any_in(const google::protobuf::RepeatedPtrField<std::string>& list, const std::vector<std::string>& values) {
  return std::any_of(values.begin(), values.end(), [&](const std::string& v) { return contains(list, v); });
}

std::int64_t seconds_or(std::uint32_t value, std::uint32_t fallback) {
  return static_cast<std::int64_t>(value == 0 ? fallback : value) * 1000;
}

AlertRuleEntry make_rule_entry(v1::AlertRule rule, std::int64_t watching_since) {
  AlertRuleEntry entry;
  entry.group_wait_ms = seconds_or(rule.group_wait_seconds(), 30);
  entry.group_interval_ms = seconds_or(rule.group_interval_seconds(), 300);
  entry.repeat_interval_ms = seconds_or(rule.repeat_interval_seconds(), 14'400);
  entry.watching_since_unix_ms = watching_since;
  // `key=value[,key=value...]`; a pair without `=` makes the rule match no task.
  std::string_view selector = rule.scope().task_label_selector();
  while (!selector.empty()) {
    const auto comma = selector.find(',');
    const std::string_view pair = selector.substr(0, comma);
    selector = comma == std::string_view::npos ? std::string_view{} : selector.substr(comma + 1);
    if (pair.empty()) continue;
    const auto eq = pair.find('=');
    if (eq == std::string_view::npos) {
      entry.selector_valid = false;
      continue;
    }
    entry.selector.emplace_back(std::string(pair.substr(0, eq)), std::string(pair.substr(eq + 1)));
  }
  entry.rule = std::move(rule);
  return entry;
}

}  // namespace

std::int64_t alert_agent_offline_ms(const v1::AlertRule& rule) { return seconds_or(rule.agent_offline_seconds(), 300); }

std::string alert_subject_key(const v1::Alert& alert) {
  if (!alert.task_id().empty()) return "task:" + alert.task_id();
  if (!alert.agent_id().empty()) return "agent:" + alert.agent_id();
  return "monitor:" + alert.monitor_id();
}

// ---------------------------------------------------------------------------------------
// Effects and timers

void AlertEngine::State::begin(std::int64_t at) {
  now = std::max(now, at);
  effects = {};
  effect_index.clear();
}

AlertEffects AlertEngine::State::finish() {
  advance(now);
  effects.next_deadline_unix_ms = next_deadline();
  effect_index.clear();
  return std::move(effects);
}

void AlertEngine::State::record(const v1::Alert& alert) {
  const auto [it, inserted] = effect_index.emplace(alert.id(), effects.alerts.size());
  if (inserted) {
    effects.alerts.push_back(alert);
  } else {
    effects.alerts[it->second] = alert;
  }
}

void AlertEngine::State::arm(const AlertTimerKey& key, std::int64_t due) {
  disarm(key);
  timer_due.emplace(key, due);
  timers.emplace(due, key);
}

void AlertEngine::State::disarm(const AlertTimerKey& key) {
  const auto it = timer_due.find(key);
  if (it == timer_due.end()) return;
  timers.erase({it->second, key});
  timer_due.erase(it);
}

// ---------------------------------------------------------------------------------------
// Matching

bool AlertEngine::State::silenced(const v1::Alert& alert, std::int64_t at) const {
  return std::any_of(silences.begin(), silences.end(), [&](const v1::Silence& s) {
    if (at < s.starts_unix_ms() || at >= s.ends_unix_ms()) return false;
    if (s.rule_ids().empty() && s.task_ids().empty() && s.agent_ids().empty() && s.monitor_ids().empty()) {
      return false;  // refused by the API; never mutes everything by accident
    }
    return (s.rule_ids().empty() || contains(s.rule_ids(), alert.rule_id())) &&
           (s.task_ids().empty() || contains(s.task_ids(), alert.task_id())) &&
           (s.agent_ids().empty() || contains(s.agent_ids(), alert.agent_id())) &&
           (s.monitor_ids().empty() || contains(s.monitor_ids(), alert.monitor_id()));
  });
}

bool AlertEngine::State::task_in_scope(const AlertRuleEntry& rule, const AlertTaskInfo& task,
                                       const std::string* agent_id) const {
  const auto& scope = rule.rule.scope();
  if (!scope.task_ids().empty() && !contains(scope.task_ids(), task.task_id)) return false;
  if (!scope.group_ids().empty() && !any_in(scope.group_ids(), task.group_ids)) return false;
  if (!scope.agent_ids().empty() && (agent_id == nullptr || !contains(scope.agent_ids(), *agent_id))) return false;
  if (!rule.selector_valid) return false;
  return std::all_of(rule.selector.begin(), rule.selector.end(), [&](const auto& kv) {
    const auto it = task.labels.find(kv.first);
    return it != task.labels.end() && it->second == kv.second;
  });
}

bool AlertEngine::State::agent_in_scope(const AlertRuleEntry& rule, const std::string& agent_id,
                                        const std::vector<std::string>& group_ids) const {
  const auto& scope = rule.rule.scope();
  if (!scope.agent_ids().empty() && !contains(scope.agent_ids(), agent_id)) return false;
  return scope.group_ids().empty() || any_in(scope.group_ids(), group_ids);
}

bool AlertEngine::State::monitor_in_scope(const AlertRuleEntry& rule, const std::string& monitor_id) const {
  const auto& scope = rule.rule.scope();
  return scope.monitor_ids().empty() || contains(scope.monitor_ids(), monitor_id);
}

// ---------------------------------------------------------------------------------------
// Alerts

TrackedAlert& AlertEngine::State::raise(const AlertRuleEntry& rule, std::string_view subject_kind,
                                        const std::string& subject_id, std::int64_t started, std::string summary,
                                        const v1::NotificationItem& figures, const std::string& execution_id) {
  const std::string& rule_id = rule.rule.id();
  auto& group = groups[rule_id];
  const std::string key = fmt::format("{}:{}", subject_kind, subject_id);
  auto it = group.firing.find(key);
  if (it != group.firing.end()) {
    auto& alert = it->second.alert;
    alert.set_count(alert.count() + 1);
    alert.set_summary(std::move(summary));
    if (!execution_id.empty()) alert.set_execution_id(execution_id);
    it->second.figures = figures;
    record(alert);
    return it->second;
  }
  TrackedAlert tracked;
  auto& alert = tracked.alert;
  alert.set_id(fmt::format("{}:{}:{}:{}", rule_id, subject_kind, subject_id, started));
  alert.set_rule_id(rule_id);
  alert.set_state(v1::ALERT_STATE_FIRING);
  alert.set_severity(rule.rule.severity() == v1::ALERT_SEVERITY_UNSPECIFIED ? v1::ALERT_SEVERITY_WARNING
                                                                            : rule.rule.severity());
  alert.set_condition(rule.rule.condition());
  if (subject_kind == "task") alert.set_task_id(subject_id);
  if (subject_kind == "agent") alert.set_agent_id(subject_id);
  if (subject_kind == "monitor") alert.set_monitor_id(subject_id);
  alert.set_summary(std::move(summary));
  alert.set_started_unix_ms(started);
  alert.set_execution_id(execution_id);
  alert.set_count(1);
  tracked.figures = figures;
  alert_index[alert.id()] = {rule_id, key};
  record(alert);
  const bool muted = silenced(alert, now);
  const auto& steps = rule.rule.escalation();
  if (!steps.empty()) {
    group.escalation_due_ms =
        std::min(group.escalation_due_ms, started + static_cast<std::int64_t>(steps[0].after_seconds()) * 1000);
  }
  auto& stored = group.firing.emplace(key, std::move(tracked)).first->second;
  if (!muted) mark_pending(rule_id, group);
  reschedule(rule_id, group);
  return stored;
}

void AlertEngine::State::resolve(const std::string& rule_id, const std::string& subject_key, bool notice) {
  const auto git = groups.find(rule_id);
  if (git == groups.end()) return;
  auto& group = git->second;
  const auto it = group.firing.find(subject_key);
  if (it == group.firing.end()) return;
  TrackedAlert tracked = std::move(it->second);
  group.firing.erase(it);
  auto& alert = tracked.alert;
  alert_index.erase(alert.id());
  alert.set_state(v1::ALERT_STATE_RESOLVED);
  alert.set_resolved_unix_ms(now);
  const auto rule = rules.find(rule_id);
  // A recovery inside a silence is muted for good (decided now, so it does not depend on
  // when the group is next looked at).
  const bool owed = notice && alert.last_notified_unix_ms() > 0 && rule != rules.end() &&
                    !rule->second.rule.no_recovery_notice() && !silenced(alert, now);
  alert.set_recovery_pending(owed);
  record(alert);
  if (owed) {
    const std::string id = alert.id();
    group.recovering.emplace(id, std::move(tracked));
    mark_pending(rule_id, group);
  }
  reschedule_or_drop(rule_id, group);
}

void AlertEngine::State::resolve_subject_everywhere(v1::AlertCondition condition, const std::string& subject_key,
                                                    bool notice) {
  for (const auto& [rule_id, rule] : rules) {
    if (rule.rule.condition() == condition) resolve(rule_id, subject_key, notice);
  }
}

void AlertEngine::State::remove_group(const std::string& rule_id) {
  const auto it = groups.find(rule_id);
  if (it == groups.end()) return;
  due_groups.erase({it->second.scheduled_ms, rule_id});
  groups.erase(it);
}

void AlertEngine::State::arm_no_success(const AlertRuleEntry& rule, const AlertTaskRecord& task) {
  const AlertTimerKey key{AlertTimerKind::no_success, rule.rule.id(), task.info.task_id};
  const auto git = groups.find(rule.rule.id());
  if ((git != groups.end() && git->second.firing.count("task:" + task.info.task_id) > 0) ||
      !task_in_scope(rule, task.info, nullptr)) {
    disarm(key);
    return;
  }
  const std::int64_t since =
      std::max({task.last_success_unix_ms, task.known_since_unix_ms, rule.watching_since_unix_ms});
  arm(key, since + static_cast<std::int64_t>(rule.rule.no_success_within_seconds()) * 1000);
}

void AlertEngine::State::fire_timer(const AlertTimerKey& key, std::int64_t due) {
  const auto& [kind, rule_id, subject] = key;
  if (kind == AlertTimerKind::monitor_down) {
    monitor_deadlines.erase(subject);
    v1::NotificationItem figures;
    if (!options.console_url.empty()) figures.set_console_url(options.console_url + "/monitors/" + subject);
    for (const auto& [id, rule] : rules) {
      if (rule.rule.condition() != v1::ALERT_CONDITION_MONITOR_DOWN || !monitor_in_scope(rule, subject)) continue;
      raise(rule, "monitor", subject, due, "no ping by its deadline", figures, {});
    }
    return;
  }
  const auto rit = rules.find(rule_id);
  if (rit == rules.end()) return;
  const auto& rule = rit->second;
  v1::NotificationItem figures;
  if (kind == AlertTimerKind::no_success) {
    const auto tit = tasks.find(subject);
    if (tit == tasks.end()) return;
    figures.set_task_name(tit->second.info.name);
    if (!options.console_url.empty()) figures.set_console_url(options.console_url + "/runs?task=" + subject);
    raise(rule, "task", subject, due, fmt::format("no success within {} s", rule.rule.no_success_within_seconds()),
          figures, {});
  } else {
    if (!options.console_url.empty()) figures.set_console_url(options.console_url + "/agents/" + subject);
    raise(rule, "agent", subject, due,
          fmt::format("offline for more than {} s", alert_agent_offline_ms(rule.rule) / 1000), figures, {});
  }
}

// ---------------------------------------------------------------------------------------
// The rule set

void AlertEngine::State::apply_rules(std::vector<v1::AlertRule> replacement) {
  auto& s = *this;
  std::map<std::string, AlertRuleEntry> next;
  for (auto& rule : replacement) {
    if (rule.disabled() || rule.id().empty()) continue;
    auto [seen, inserted] = s.rule_first_seen.emplace(rule.id(), s.now);
    if (inserted && rule.created_unix_ms() != 0) seen->second = rule.created_unix_ms();
    const std::string id = rule.id();
    next.emplace(id, make_rule_entry(std::move(rule), seen->second));
  }
  // Alerts of rules gone, disabled or watching something else now resolve silently.
  std::vector<std::string> dropped;
  for (const auto& [rule_id, group] : s.groups) {
    const auto it = next.find(rule_id);
    const auto old = s.rules.find(rule_id);
    const bool changed =
        it == next.end() || (old != s.rules.end() && old->second.rule.condition() != it->second.rule.condition());
    if (changed) dropped.push_back(rule_id);
  }
  for (const auto& rule_id : dropped) {
    auto& group = s.groups[rule_id];
    for (auto& [key, tracked] : group.firing) {
      tracked.alert.set_state(v1::ALERT_STATE_RESOLVED);
      tracked.alert.set_resolved_unix_ms(s.now);
      s.alert_index.erase(tracked.alert.id());
      s.record(tracked.alert);
    }
    for (auto& [id, tracked] : group.recovering) {
      tracked.alert.set_recovery_pending(false);
      s.record(tracked.alert);
    }
    s.remove_group(rule_id);
  }
  s.rules = std::move(next);

  // Failure counters only for tasks some CONSECUTIVE_FAILURES rule watches.
  for (auto it = s.failure_counters.begin(); it != s.failure_counters.end();) {
    const auto task = s.tasks.find(it->first);
    const bool watched = task != s.tasks.end() && std::any_of(s.rules.begin(), s.rules.end(), [&](const auto& r) {
                           return r.second.rule.condition() == v1::ALERT_CONDITION_CONSECUTIVE_FAILURES &&
                                  s.task_in_scope(r.second, task->second.info, nullptr);
                         });
    it = watched ? std::next(it) : s.failure_counters.erase(it);
  }
  // The dead man's switches and offline agents, armed again for the new rules.
  for (auto it = s.timer_due.begin(); it != s.timer_due.end();) {
    if (std::get<0>(it->first) == AlertTimerKind::monitor_down) {
      ++it;
      continue;
    }
    s.timers.erase({it->second, it->first});
    it = s.timer_due.erase(it);
  }
  for (const auto& [rule_id, rule] : s.rules) {
    if (rule.rule.condition() == v1::ALERT_CONDITION_NO_SUCCESS_WITHIN) {
      for (const auto& [task_id, task] : s.tasks) s.arm_no_success(rule, task);
    } else if (rule.rule.condition() == v1::ALERT_CONDITION_AGENT_OFFLINE) {
      const auto git = s.groups.find(rule_id);
      for (const auto& [agent_id, agent] : s.offline_agents) {
        if (!s.agent_in_scope(rule, agent_id, agent.group_ids)) continue;
        if (git != s.groups.end() && git->second.firing.count("agent:" + agent_id) > 0) continue;
        s.arm({AlertTimerKind::agent_offline, rule_id, agent_id},
              agent.offline_since_unix_ms + alert_agent_offline_ms(rule.rule));
      }
    }
  }
  for (const auto& [monitor_id, deadline] : s.monitor_deadlines) {
    s.arm({AlertTimerKind::monitor_down, "", monitor_id}, deadline);
  }
  // Their intervals may have changed.
  for (auto& [rule_id, group] : s.groups) s.reschedule(rule_id, group);
}

}  // namespace quartzflow::detail
