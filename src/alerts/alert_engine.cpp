// SPDX-License-Identifier: Apache-2.0
// The alert engine's public calls: facts (runs, agents, config pushes, monitor pings), the
// snapshot at a restart, acknowledgements (rules and alerts: alert_rules.cpp; groups and
// notifications: alert_grouping.cpp).
#include <algorithm>
#include <string>
#include <utility>

#include <fmt/format.h>

#include "alert_state.hpp"

namespace quartzflow::detail {

namespace {

constexpr std::size_t k_recent_execution_ids = 4;

bool is_task_condition(v1::AlertCondition condition) {
  switch (condition) {
    case v1::ALERT_CONDITION_RUN_FAILED:
    case v1::ALERT_CONDITION_RUN_MISSED:
    case v1::ALERT_CONDITION_CONSECUTIVE_FAILURES:
    case v1::ALERT_CONDITION_DURATION_ABOVE:
    case v1::ALERT_CONDITION_NO_SUCCESS_WITHIN: return true;
    default: return false;
  }
}

std::uint32_t consecutive_threshold(const v1::AlertRule& rule) {
  return rule.consecutive_failures() == 0 ? 3 : rule.consecutive_failures();
}

std::string run_reason(const v1::Execution& run) {
  if (!run.failure_reason().empty()) return run.failure_reason();
  if (!run.error_message().empty()) return run.error_message();
  return run.skip_detail();
}

std::string status_word(v1::ExecutionStatus status) {
  switch (status) {
    case v1::EXECUTION_STATUS_FAILURE: return "failed";
    case v1::EXECUTION_STATUS_TIMEOUT: return "timed out";
    case v1::EXECUTION_STATUS_MISSED: return "missed";
    case v1::EXECUTION_STATUS_SUCCESS: return "succeeded";
    default: return "ended";
  }
}

std::string with_reason(std::string text, const std::string& reason) {
  if (!reason.empty()) text += ": " + reason;
  return text;
}

}  // namespace

std::string alert_output_head(std::string_view output) {
  constexpr std::size_t k_max_bytes = 2048;
  constexpr int k_max_lines = 20;
  std::size_t end = 0;
  int lines = 0;
  while (end < output.size() && end < k_max_bytes) {
    if (output[end] == '\n' && ++lines == k_max_lines) break;
    ++end;
  }
  // Never cut inside a UTF-8 sequence: back off continuation bytes.
  if (end < output.size()) {
    while (end > 0 && (static_cast<unsigned char>(output[end]) & 0xC0) == 0x80) --end;
  }
  return std::string(output.substr(0, end));
}

// ---------------------------------------------------------------------------------------
// The public calls

AlertEngine::AlertEngine(AlertEngineOptions options) : state_(std::make_unique<State>()) {
  state_->options = std::move(options);
}
AlertEngine::~AlertEngine() = default;
AlertEngine::AlertEngine(AlertEngine&&) noexcept = default;
AlertEngine& AlertEngine::operator=(AlertEngine&&) noexcept = default;

AlertEffects AlertEngine::restore(const AlertSnapshot& snapshot, std::vector<v1::AlertRule> rules,
                                  std::vector<v1::Silence> silences, std::int64_t now) {
  auto& s = *state_;
  s.begin(now);
  s.silences = std::move(silences);
  s.silences_checked_until = s.now;
  for (const auto& task : snapshot.tasks) {
    auto& record = s.tasks[task.info.task_id];
    record.info = task.info;
    record.last_success_unix_ms = task.last_success_unix_ms;
    record.known_since_unix_ms = task.created_unix_ms != 0 ? task.created_unix_ms : s.now;
    if (task.consecutive_failures > 0) s.failure_counters[task.info.task_id] = task.consecutive_failures;
  }
  for (const auto& agent : snapshot.offline_agents) {
    s.offline_agents[agent.agent_id] = {agent.group_ids, agent.offline_since_unix_ms};
  }
  for (const auto& monitor : snapshot.monitors) {
    if (monitor.deadline_unix_ms != 0) s.monitor_deadlines[monitor.monitor_id] = monitor.deadline_unix_ms;
  }
  for (const auto& alert : snapshot.alerts) {
    const bool firing = alert.state() == v1::ALERT_STATE_FIRING;
    if (!firing && !alert.recovery_pending()) continue;
    auto& group = s.groups[alert.rule_id()];
    TrackedAlert tracked;
    tracked.alert = alert;
    if (!alert.task_id().empty()) {
      const auto tit = s.tasks.find(alert.task_id());
      if (tit != s.tasks.end()) tracked.figures.set_task_name(tit->second.info.name);
    }
    group.last_flush_ms = std::max(group.last_flush_ms, alert.last_notified_unix_ms());
    if (firing) {
      const std::string key = alert_subject_key(alert);
      s.alert_index[alert.id()] = {alert.rule_id(), key};
      if (alert.last_notified_unix_ms() == 0) {
        // Owed since before the restart: group_wait counts from the alert's start.
        group.pending_since_ms = group.pending_since_ms == 0
                                     ? alert.started_unix_ms()
                                     : std::min(group.pending_since_ms, alert.started_unix_ms());
      }
      group.firing.emplace(key, std::move(tracked));
    } else {
      group.pending_since_ms = group.pending_since_ms == 0 ? s.now : group.pending_since_ms;
      group.recovering.emplace(alert.id(), std::move(tracked));
    }
  }
  // Repeat and escalation instants are found by the first scan of each group.
  for (auto& [rule_id, group] : s.groups) {
    group.repeat_due_ms = s.now;
    group.escalation_due_ms = s.now;
  }
  s.apply_rules(std::move(rules));
  return s.finish();
}

AlertEffects AlertEngine::set_rules(std::vector<v1::AlertRule> rules, std::int64_t now) {
  state_->begin(now);
  state_->apply_rules(std::move(rules));
  return state_->finish();
}

AlertEffects AlertEngine::set_silences(std::vector<v1::Silence> silences, std::int64_t now) {
  auto& s = *state_;
  s.begin(now);
  s.silences = std::move(silences);
  // A silence removed or cut short lets alerts through: every group looks again.
  s.rescan_all();
  return s.finish();
}

AlertEffects AlertEngine::on_run(const AlertRunFact& fact, std::int64_t now) {
  auto& s = *state_;
  s.begin(now);
  const auto& run = fact.execution;
  auto& task = s.tasks[fact.task.task_id];
  if (task.known_since_unix_ms == 0) task.known_since_unix_ms = s.now;
  task.info = fact.task;
  auto& recent = task.recent_execution_ids;
  if (!run.execution_id().empty()) {
    if (std::find(recent.begin(), recent.end(), run.execution_id()) != recent.end()) return s.finish();
    if (recent.size() == k_recent_execution_ids) recent.erase(recent.begin());
    recent.push_back(run.execution_id());
  }
  const auto status = run.status();
  const bool success = status == v1::EXECUTION_STATUS_SUCCESS;
  const bool failure = status == v1::EXECUTION_STATUS_FAILURE || status == v1::EXECUTION_STATUS_TIMEOUT;
  const bool missed = status == v1::EXECUTION_STATUS_MISSED;
  if (!success && !failure && !missed) return s.finish();  // CANCELLED, SKIPPED: nothing to say
  const std::int64_t at = run.ended_unix_ms() != 0 ? run.ended_unix_ms() : s.now;
  if (success) task.last_success_unix_ms = std::max(task.last_success_unix_ms, at);

  v1::NotificationItem figures;
  figures.set_task_name(!fact.task.name.empty() ? fact.task.name : run.task_name());
  figures.set_status(status);
  figures.set_reason(run_reason(run));
  figures.set_duration_ms(run.duration_ms());
  figures.set_agent_id(run.agent_id());
  figures.set_output_head(alert_output_head(run.output()));
  if (!s.options.console_url.empty()) figures.set_console_url(s.options.console_url + "/runs/" + run.execution_id());

  const std::string subject_key = "task:" + fact.task.task_id;
  const std::string* agent = run.agent_id().empty() ? nullptr : &run.agent_id();
  std::uint32_t failures = 0;
  if (failure) {
    const bool counted = std::any_of(s.rules.begin(), s.rules.end(), [&](const auto& r) {
      return r.second.rule.condition() == v1::ALERT_CONDITION_CONSECUTIVE_FAILURES &&
             s.task_in_scope(r.second, fact.task, agent);
    });
    if (counted) failures = ++s.failure_counters[fact.task.task_id];
  } else if (success) {
    s.failure_counters.erase(fact.task.task_id);
  }
  for (const auto& [rule_id, rule] : s.rules) {
    const auto condition = rule.rule.condition();
    if (!is_task_condition(condition) || !s.task_in_scope(rule, fact.task, agent)) continue;
    switch (condition) {
      case v1::ALERT_CONDITION_RUN_FAILED:
        if (failure) {
          s.raise(rule, "task", fact.task.task_id, at, with_reason("run " + status_word(status), figures.reason()),
                  figures, run.execution_id());
        }
        if (success) s.resolve(rule_id, subject_key, true);
        break;
      case v1::ALERT_CONDITION_RUN_MISSED:
        if (missed) {
          s.raise(rule, "task", fact.task.task_id, at, with_reason("run missed", figures.reason()), figures,
                  run.execution_id());
        }
        if (success) s.resolve(rule_id, subject_key, true);
        break;
      case v1::ALERT_CONDITION_CONSECUTIVE_FAILURES:
        if (failure && failures >= consecutive_threshold(rule.rule)) {
          auto& tracked = s.raise(rule, "task", fact.task.task_id, at, fmt::format("{} failures in a row", failures),
                                  figures, run.execution_id());
          tracked.alert.set_count(failures);
          s.record(tracked.alert);
        }
        if (success) s.resolve(rule_id, subject_key, true);
        break;
      case v1::ALERT_CONDITION_DURATION_ABOVE: {
        if (missed || (run.started_unix_ms() == 0 && run.duration_ms() == 0)) break;  // never ran
        std::int64_t threshold_ms = INT64_MAX;
        if (rule.rule.duration_above_seconds() != 0) {
          threshold_ms = static_cast<std::int64_t>(rule.rule.duration_above_seconds()) * 1000;
        }
        if (rule.rule.duration_p95_factor() > 0 && fact.p95_duration_ms > 0) {
          threshold_ms = std::min(threshold_ms, static_cast<std::int64_t>(rule.rule.duration_p95_factor() *
                                                                          static_cast<double>(fact.p95_duration_ms)));
        }
        if (threshold_ms == INT64_MAX) break;  // only relative, p95 unknown: nothing to decide
        if (run.duration_ms() > threshold_ms) {
          s.raise(rule, "task", fact.task.task_id, at,
                  fmt::format("ran {} ms, above {} ms", run.duration_ms(), threshold_ms), figures, run.execution_id());
        } else {
          s.resolve(rule_id, subject_key, true);
        }
        break;
      }
      case v1::ALERT_CONDITION_NO_SUCCESS_WITHIN:
        if (success) {
          s.resolve(rule_id, subject_key, true);
          s.arm_no_success(rule, task);
        }
        break;
      default: break;
    }
  }
  return s.finish();
}

AlertEffects AlertEngine::on_agent(const AlertAgentFact& fact, std::int64_t now) {
  auto& s = *state_;
  s.begin(now);
  if (fact.online) {
    s.offline_agents.erase(fact.agent_id);
    for (const auto& [rule_id, rule] : s.rules) {
      if (rule.rule.condition() == v1::ALERT_CONDITION_AGENT_OFFLINE) {
        s.disarm({AlertTimerKind::agent_offline, rule_id, fact.agent_id});
      }
    }
    s.resolve_subject_everywhere(v1::ALERT_CONDITION_AGENT_OFFLINE, "agent:" + fact.agent_id, true);
    return s.finish();
  }
  const auto [it, inserted] = s.offline_agents.try_emplace(fact.agent_id);
  it->second.group_ids = fact.group_ids;
  if (!inserted) return s.finish();  // already offline: the first instant counts
  it->second.offline_since_unix_ms = s.now;
  for (const auto& [rule_id, rule] : s.rules) {
    if (rule.rule.condition() != v1::ALERT_CONDITION_AGENT_OFFLINE ||
        !s.agent_in_scope(rule, fact.agent_id, fact.group_ids)) {
      continue;
    }
    s.arm({AlertTimerKind::agent_offline, rule_id, fact.agent_id}, s.now + alert_agent_offline_ms(rule.rule));
  }
  return s.finish();
}

AlertEffects AlertEngine::on_config_push(const AlertPushFact& fact, std::int64_t now) {
  auto& s = *state_;
  s.begin(now);
  if (fact.ok) {
    s.resolve_subject_everywhere(v1::ALERT_CONDITION_CONFIG_PUSH_FAILED, "agent:" + fact.agent_id, true);
    return s.finish();
  }
  v1::NotificationItem figures;
  figures.set_reason(fact.detail);
  if (!s.options.console_url.empty()) figures.set_console_url(s.options.console_url + "/agents/" + fact.agent_id);
  for (const auto& [rule_id, rule] : s.rules) {
    if (rule.rule.condition() != v1::ALERT_CONDITION_CONFIG_PUSH_FAILED ||
        !s.agent_in_scope(rule, fact.agent_id, fact.group_ids)) {
      continue;
    }
    s.raise(rule, "agent", fact.agent_id, s.now, with_reason("config push failed", fact.detail), figures, {});
  }
  return s.finish();
}

AlertEffects AlertEngine::on_monitor_ping(const AlertPingFact& fact, std::int64_t now) {
  auto& s = *state_;
  s.begin(now);
  const AlertTimerKey key{AlertTimerKind::monitor_down, "", fact.monitor_id};
  if (fact.next_deadline_unix_ms != 0) {
    s.monitor_deadlines[fact.monitor_id] = fact.next_deadline_unix_ms;
    s.arm(key, fact.next_deadline_unix_ms);
  } else if (fact.kind != MonitorPingKind::start) {
    s.monitor_deadlines.erase(fact.monitor_id);
    s.disarm(key);
  }
  if (fact.kind == MonitorPingKind::success) {
    s.resolve_subject_everywhere(v1::ALERT_CONDITION_MONITOR_DOWN, "monitor:" + fact.monitor_id, true);
  } else if (fact.kind == MonitorPingKind::fail || fact.kind == MonitorPingKind::down) {
    const bool failed = fact.kind == MonitorPingKind::fail;
    v1::NotificationItem figures;
    figures.set_reason(failed ? "ping on /fail" : "no ping by its deadline");
    if (!s.options.console_url.empty()) {
      figures.set_console_url(s.options.console_url + "/monitors/" + fact.monitor_id);
    }
    for (const auto& [rule_id, rule] : s.rules) {
      if (rule.rule.condition() != v1::ALERT_CONDITION_MONITOR_DOWN || !s.monitor_in_scope(rule, fact.monitor_id)) {
        continue;
      }
      s.raise(rule, "monitor", fact.monitor_id, s.now,
              failed ? "the job reported a failure" : "no ping by its deadline", figures, {});
    }
  }
  return s.finish();
}

AlertEffects AlertEngine::upsert_task(const AlertTaskInfo& info, std::int64_t now) {
  auto& s = *state_;
  s.begin(now);
  auto& task = s.tasks[info.task_id];
  if (task.known_since_unix_ms == 0) task.known_since_unix_ms = s.now;
  task.info = info;
  for (const auto& [rule_id, rule] : s.rules) {
    if (rule.rule.condition() == v1::ALERT_CONDITION_NO_SUCCESS_WITHIN) s.arm_no_success(rule, task);
  }
  return s.finish();
}

AlertEffects AlertEngine::remove_task(std::string_view task_id, std::int64_t now) {
  auto& s = *state_;
  s.begin(now);
  const std::string id(task_id);
  s.tasks.erase(id);
  s.failure_counters.erase(id);
  for (const auto& [rule_id, rule] : s.rules) {
    s.disarm({AlertTimerKind::no_success, rule_id, id});
    s.resolve(rule_id, "task:" + id, false);
  }
  return s.finish();
}

AlertEffects AlertEngine::remove_agent(std::string_view agent_id, std::int64_t now) {
  auto& s = *state_;
  s.begin(now);
  const std::string id(agent_id);
  s.offline_agents.erase(id);
  for (const auto& [rule_id, rule] : s.rules) {
    s.disarm({AlertTimerKind::agent_offline, rule_id, id});
    s.resolve(rule_id, "agent:" + id, false);
  }
  return s.finish();
}

AlertEffects AlertEngine::remove_monitor(std::string_view monitor_id, std::int64_t now) {
  auto& s = *state_;
  s.begin(now);
  const std::string id(monitor_id);
  s.monitor_deadlines.erase(id);
  s.disarm({AlertTimerKind::monitor_down, "", id});
  for (const auto& [rule_id, rule] : s.rules) s.resolve(rule_id, "monitor:" + id, false);
  return s.finish();
}

AlertEffects AlertEngine::set_monitor_deadline(std::string_view monitor_id, std::int64_t deadline_unix_ms,
                                               std::int64_t now) {
  auto& s = *state_;
  s.begin(now);
  const std::string id(monitor_id);
  const AlertTimerKey key{AlertTimerKind::monitor_down, "", id};
  if (deadline_unix_ms == 0) {
    s.monitor_deadlines.erase(id);
    s.disarm(key);
  } else {
    s.monitor_deadlines[id] = deadline_unix_ms;
    s.arm(key, deadline_unix_ms);
  }
  return s.finish();
}

AlertEffects AlertEngine::acknowledge(std::string_view alert_id, std::string_view who, std::string_view comment,
                                      std::int64_t now, error_code& ec) {
  auto& s = *state_;
  s.begin(now);
  ec = {};
  const auto it = s.alert_index.find(std::string(alert_id));
  if (it == s.alert_index.end()) {
    ec = make_error_code(errc::not_found);
    return s.finish();
  }
  auto& alert = s.groups.at(it->second.first).firing.at(it->second.second).alert;
  alert.set_acknowledged_by(std::string(who));
  alert.set_acknowledged_unix_ms(s.now);
  alert.set_acknowledge_comment(std::string(comment));
  s.record(alert);
  return s.finish();
}

AlertEffects AlertEngine::acknowledge(std::string_view alert_id, std::string_view who, std::string_view comment,
                                      std::int64_t now) {
  error_code ec;
  auto effects = acknowledge(alert_id, who, comment, now, ec);
  if (ec) throw error(ec, ValidationError{"acknowledgement", "alert_id", fmt::format("no firing alert {}", alert_id)});
  return effects;
}

AlertEffects AlertEngine::tick(std::int64_t now) {
  state_->begin(now);
  return state_->finish();
}

std::int64_t AlertEngine::next_deadline() const noexcept { return state_->next_deadline(); }

std::size_t AlertEngine::firing_count() const noexcept { return state_->alert_index.size(); }

std::size_t AlertEngine::failure_counters() const noexcept { return state_->failure_counters.size(); }

const v1::Alert* AlertEngine::find_alert(std::string_view alert_id) const noexcept {
  const auto it = state_->alert_index.find(std::string(alert_id));
  if (it == state_->alert_index.end()) return nullptr;
  return &state_->groups.at(it->second.first).firing.at(it->second.second).alert;
}

}  // namespace quartzflow::detail
