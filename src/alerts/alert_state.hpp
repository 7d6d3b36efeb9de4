// SPDX-License-Identifier: Apache-2.0
// The alert engine's state, shared by its translation units: facts (alert_engine.cpp), rules,
// scopes and alerts (alert_rules.cpp), groups and notifications (alert_grouping.cpp).
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "alert_engine.hpp"

namespace quartzflow::detail {

/// A rule with its defaults applied and its label selector parsed.
struct AlertRuleEntry {
  v1::AlertRule rule;
  std::vector<std::pair<std::string, std::string>> selector;
  bool selector_valid = true;
  std::int64_t group_wait_ms = 0;
  std::int64_t group_interval_ms = 0;
  std::int64_t repeat_interval_ms = 0;
  /// Since when the rule is known (its creation; else when the engine first saw it): the
  /// dead man's switch never counts from before it.
  std::int64_t watching_since_unix_ms = 0;
};

/// An alert with the figures its notification items show.
struct TrackedAlert {
  v1::Alert alert;
  v1::NotificationItem figures;  ///< without `alert`
};

/// One rule's alerts and its notification clock.
struct AlertGroup {
  std::map<std::string, TrackedAlert> firing;             ///< by subject key ("task:<id>", ...)
  std::map<std::string, TrackedAlert> recovering;         ///< resolved, notice owed; by alert id
  std::int64_t last_flush_ms = 0;                         ///< last FIRING/REPEAT/RESOLVED sent (0: fresh group)
  std::int64_t last_escalation_ms = 0;                    ///< last ESCALATION round (0: none)
  std::int64_t pending_since_ms = 0;                      ///< something new may be notifiable since (0: no)
  std::int64_t repeat_due_ms = AlertEngine::k_never;      ///< earliest repeat known (may be early)
  std::int64_t escalation_due_ms = AlertEngine::k_never;  ///< earliest escalation known (may be early)
  std::int64_t scheduled_ms = AlertEngine::k_never;       ///< its entry in `due_groups`
};

enum class AlertTimerKind { no_success, agent_offline, monitor_down };
/// (kind, rule id or "" for a monitor's deadline, subject id).
using AlertTimerKey = std::tuple<AlertTimerKind, std::string, std::string>;

struct AlertTaskRecord {
  AlertTaskInfo info;
  std::int64_t last_success_unix_ms = 0;
  std::int64_t known_since_unix_ms = 0;
  std::vector<std::string> recent_execution_ids;  ///< the last few, to ignore a duplicate
};

struct AlertAgentRecord {
  std::vector<std::string> group_ids;
  std::int64_t offline_since_unix_ms = 0;
};

struct AlertEngine::State {
  AlertEngineOptions options;
  std::map<std::string, AlertRuleEntry> rules;  ///< enabled rules by id
  std::map<std::string, std::int64_t> rule_first_seen;
  std::vector<v1::Silence> silences;
  std::int64_t silences_checked_until = 0;

  std::map<std::string, AlertGroup> groups;  ///< by rule id
  std::set<std::pair<std::int64_t, std::string>> due_groups;
  /// Firing alert id -> (rule id, subject key).
  std::unordered_map<std::string, std::pair<std::string, std::string>> alert_index;

  std::map<std::string, AlertTaskRecord> tasks;
  std::map<std::string, std::uint32_t> failure_counters;  ///< tasks with a failure streak in scope
  std::map<std::string, AlertAgentRecord> offline_agents;
  std::map<std::string, std::int64_t> monitor_deadlines;

  std::map<AlertTimerKey, std::int64_t> timer_due;
  std::set<std::pair<std::int64_t, AlertTimerKey>> timers;

  std::int64_t now = 0;  ///< the latest instant seen
  AlertEffects effects;  ///< of the call in progress
  std::unordered_map<std::string, std::size_t> effect_index;

  // --- effects and timers (alert_rules.cpp)
  void begin(std::int64_t at);
  AlertEffects finish();
  void record(const v1::Alert& alert);
  void arm(const AlertTimerKey& key, std::int64_t due);
  void disarm(const AlertTimerKey& key);

  // --- matching (alert_rules.cpp)
  bool silenced(const v1::Alert& alert, std::int64_t at) const;
  bool task_in_scope(const AlertRuleEntry& rule, const AlertTaskInfo& task, const std::string* agent_id) const;
  bool agent_in_scope(const AlertRuleEntry& rule, const std::string& agent_id,
                      const std::vector<std::string>& group_ids) const;
  bool monitor_in_scope(const AlertRuleEntry& rule, const std::string& monitor_id) const;

  // --- rules and alerts (alert_rules.cpp)
  void apply_rules(std::vector<v1::AlertRule> replacement);
  /// Raises (or updates) the alert of `rule` for a subject.
  TrackedAlert& raise(const AlertRuleEntry& rule, std::string_view subject_kind, const std::string& subject_id,
                      std::int64_t started, std::string summary, const v1::NotificationItem& figures,
                      const std::string& execution_id);
  /// Resolves the firing alert of `rule` for a subject, if any; `notice`: a recovery
  /// notice is owed if it was notified and the rule wants one.
  void resolve(const std::string& rule_id, const std::string& subject_key, bool notice);
  void resolve_subject_everywhere(v1::AlertCondition condition, const std::string& subject_key, bool notice);
  void remove_group(const std::string& rule_id);
  void arm_no_success(const AlertRuleEntry& rule, const AlertTaskRecord& task);
  void fire_timer(const AlertTimerKey& key, std::int64_t due);

  // --- groups (alert_grouping.cpp)
  void mark_pending(const std::string& rule_id, AlertGroup& group);
  void reschedule(const std::string& rule_id, AlertGroup& group);
  /// Every group scanned again at its earliest instant (the silences changed).
  void rescan_all();
  /// Reschedules the group, or forgets it when it is empty and its interval has passed.
  void reschedule_or_drop(const std::string& rule_id, AlertGroup& group);
  void flush(const std::string& rule_id, AlertGroup& group);
  void advance(std::int64_t at);
  std::int64_t next_deadline() const;
};

/// "task:<id>", "agent:<id>", "monitor:<id>": the key of an alert's subject.
std::string alert_subject_key(const v1::Alert& alert);
/// AGENT_OFFLINE's threshold with its default, ms.
std::int64_t alert_agent_offline_ms(const v1::AlertRule& rule);

}  // namespace quartzflow::detail
