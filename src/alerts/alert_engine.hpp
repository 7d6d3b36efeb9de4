// SPDX-License-Identifier: Apache-2.0
// The alert engine, sans-I/O: fed facts (final runs, agents going offline, config pushes,
// monitor pings) and the time, it returns the alerts it raised or changed and the
// notifications to enqueue, and when it must be called again. No clock, store or thread.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <quartzflow/error.hpp>
#include <quartzflow/v1/alerts.pb.h>
#include <quartzflow/v1/execution.pb.h>

namespace quartzflow::detail {

/*
 * Semantics (Alertmanager's routing; ARCHITECTURE.md, "Alerts"):
 *
 * - One firing alert per (rule, subject): a task, an agent or a monitor. Several rules may
 *   match one fact; each raises its own alert. A fact for a subject that already fires
 *   updates that alert (`count`, `execution_id`, `summary`): it never notifies again.
 * - A group is one rule's alerts. The first notification of a group goes out `group_wait`
 *   after its first alert; alerts that arrive later are sent at most every `group_interval`
 *   after the group's previous notification. A group whose alerts all resolved (and whose
 *   recovery notice went out) starts afresh with `group_wait` once `group_interval` has
 *   passed since its last notification (a flapping subject is notified at most that often).
 * - At a group's notification instant, per channel of the rule, one notification per kind
 *   that has something to say: FIRING (alerts never notified), REPEAT (notified, still
 *   firing, unacknowledged, last notified `repeat_interval` ago or more), RESOLVED (alerts
 *   that were notified firing and have resolved since). An alert is in at most one of them
 *   and a notification is never sent for nothing. Items are capped at 50 (oldest first);
 *   `more_firing` counts the group's firing alerts not listed.
 * - Silences (active from `starts_unix_ms` until `ends_unix_ms`; every non-empty list of
 *   rule, task, agent and monitor ids must match the alert) mute notifications only: the
 *   alert fires and is recorded. An alert still firing when its silence ends is notified
 *   then (FIRING if it never was, REPEAT if its repeat is due). An alert that resolves
 *   inside a silence sends no recovery notice; a notice owed when a silence begins waits
 *   for its end.
 * - Acknowledgement stops repeats and escalation, not the recovery notice.
 * - Escalation: step k notifies its channels once, when the alert has been firing,
 *   unacknowledged, `after_seconds` since it started (`Alert.escalation_level` = steps
 *   taken); alerts of a group crossing a step are batched like the rest (at most one
 *   escalation round per group_interval).
 * - Recovery: the subject recovers (the task's next SUCCESS; the agent back online; the
 *   agent's next successful push; the monitor's next successful ping; a run within the
 *   duration threshold): the alert resolves and, if it was notified firing and the rule does
 *   not say `no_recovery_notice`, a RESOLVED notice goes out with the group's next
 *   notification. A disabled or deleted rule, or a rule whose condition changed, resolves
 *   its alerts silently; so does a removed task, agent or monitor.
 * - Runs: FAILURE and TIMEOUT are failures; MISSED is not a failure (RUN_MISSED watches it)
 *   and neither counts towards nor resets CONSECUTIVE_FAILURES; CANCELLED and SKIPPED are
 *   ignored by every condition. Only SUCCESS resolves task alerts (DURATION_ABOVE: any run
 *   that ran within the threshold). A run given again (same execution id as one of the
 *   task's last 4) changes nothing; feed each run once, when the store took its final state.
 * - Scope: a task matches task_ids, group_ids (any of its groups) and the label selector;
 *   a run also matches agent_ids (the agent it ran on). An agent matches agent_ids and
 *   group_ids (its groups); a monitor matches monitor_ids. Empty lists match everything.
 *
 * Ids are deterministic so a re-run after a crash (the snapshot, then the same facts)
 * produces the same records: an alert is `<rule>:<task|agent|monitor>:<subject>:<started>`
 * with `started` the fact's own instant (a run's end, a deadline); a notification is
 * `<rule>:<channel>:<kind>:<16 hex digits>` hashed from what it announces, so the outbox
 * ignores the same notification enqueued twice.
 *
 * Cost: a fact costs O(rules + log alerts) (alerts indexed by rule and subject); a group's
 * notification instant scans that group. Memory: the firing alerts, per-task state for the
 * tasks the engine has been told about, failure counters only for tasks that failed in a
 * CONSECUTIVE_FAILURES rule's scope, one timer per watched (rule, subject).
 */

/// A task as the rules' scopes see it.
struct AlertTaskInfo {
  std::string task_id;
  std::string name;
  std::vector<std::string> group_ids;
  std::map<std::string, std::string> labels;
};

/// A run that reached its final state.
struct AlertRunFact {
  v1::Execution execution;  ///< the final record (its output's head goes into items)
  AlertTaskInfo task;
  /// The task's p95 duration over its last 7 days when it has at least 20 finished runs;
  /// 0 = unknown (duration_p95_factor then decides nothing).
  std::int64_t p95_duration_ms = 0;
};

/// An agent's connection changed.
struct AlertAgentFact {
  std::string agent_id;
  std::vector<std::string> group_ids;
  bool online = false;
};

/// The outcome of a config push to an agent.
struct AlertPushFact {
  std::string agent_id;
  std::vector<std::string> group_ids;
  bool ok = false;
  std::string detail;  ///< why it failed
};

/// success, fail, start: the monitor's ping URLs; down: the caller found its deadline passed
/// (the same as the engine's own timer at `set_monitor_deadline`'s instant).
enum class MonitorPingKind { success, fail, start, down };

/// A heartbeat monitor's ping, and its next deadline from its schedule and grace.
struct AlertPingFact {
  std::string monitor_id;
  MonitorPingKind kind = MonitorPingKind::success;
  /// The instant by which the next ping must arrive (0 = none: a paused monitor).
  std::int64_t next_deadline_unix_ms = 0;
};

/// What the store holds at a (re)start.
struct AlertSnapshot {
  /// FIRING alerts, and RESOLVED ones with `recovery_pending` (their notice is owed).
  std::vector<v1::Alert> alerts;
  struct Task {
    AlertTaskInfo info;
    std::int64_t last_success_unix_ms = 0;   ///< 0 = never
    std::int64_t created_unix_ms = 0;        ///< the dead man's switch counts from here without a success
    std::uint32_t consecutive_failures = 0;  ///< FAILURE/TIMEOUT runs since its last SUCCESS
  };
  std::vector<Task> tasks;
  struct OfflineAgent {
    std::string agent_id;
    std::vector<std::string> group_ids;
    std::int64_t offline_since_unix_ms = 0;
  };
  std::vector<OfflineAgent> offline_agents;
  struct Monitor {
    std::string monitor_id;
    std::int64_t deadline_unix_ms = 0;  ///< the next ping is due by then (0 = none)
  };
  std::vector<Monitor> monitors;
};

/// What a call changed: persist it in one store transaction (the outbox pattern).
struct AlertEffects {
  /// Alerts created or changed (upsert by id), each once, in its latest state.
  std::vector<v1::Alert> alerts;
  /// Notifications to enqueue: kind NOTIFICATION, state PENDING, one per (group, channel,
  /// kind); `id` = the notification's id (a duplicate id is already enqueued: ignore it).
  std::vector<v1::Delivery> deliveries;
  /// Call `tick` at this instant at the latest (k_never: no timer needed).
  std::int64_t next_deadline_unix_ms = INT64_MAX;
};

struct AlertEngineOptions {
  /// The console's base URL for links in notifications ("" = no links).
  std::string console_url;
  /// Items listed per notification; the rest is counted in `more_firing`.
  std::size_t max_items = 50;
  /// Tests: every call looks at every group, not only at those whose instant is due (the
  /// brute-force reference for the engine's own schedule).
  bool scan_every_group = false;
};

/**
 * The alert engine: rules, silences and the firing alerts, fed facts and the wall clock
 * (unix ms) by its caller. Every call first applies its fact, then does everything due at
 * `now` (timers, silences that began or ended, group notifications), and returns the
 * effects with the next deadline. Instants passed must not go backwards (an earlier `now`
 * is taken as the latest seen).
 *
 * Thread safety: not thread-safe (a value used by one driver). No call blocks.
 */
class AlertEngine {
 public:
  static constexpr std::int64_t k_never = INT64_MAX;

  explicit AlertEngine(AlertEngineOptions options = {});
  ~AlertEngine();
  AlertEngine(AlertEngine&&) noexcept;
  AlertEngine& operator=(AlertEngine&&) noexcept;

  /// Starts from what the store holds (before any fact), with the rules and silences:
  /// alerts already notified are not notified again; pending notices, repeats and
  /// escalations resume where they were; alerts of rules no longer enabled resolve silently.
  AlertEffects restore(const AlertSnapshot& snapshot, std::vector<v1::AlertRule> rules,
                       std::vector<v1::Silence> silences, std::int64_t now);

  /// Replaces the rule set (disabled, deleted or changed-condition rules resolve silently).
  AlertEffects set_rules(std::vector<v1::AlertRule> rules, std::int64_t now);
  /// Replaces the silences.
  AlertEffects set_silences(std::vector<v1::Silence> silences, std::int64_t now);

  AlertEffects on_run(const AlertRunFact& fact, std::int64_t now);
  AlertEffects on_agent(const AlertAgentFact& fact, std::int64_t now);
  AlertEffects on_config_push(const AlertPushFact& fact, std::int64_t now);
  AlertEffects on_monitor_ping(const AlertPingFact& fact, std::int64_t now);

  /// A task was created or changed (scope and the dead man's switch start watching it).
  AlertEffects upsert_task(const AlertTaskInfo& task, std::int64_t now);
  /// A task, agent or monitor was deleted: its alerts resolve silently, its timers stop.
  AlertEffects remove_task(std::string_view task_id, std::int64_t now);
  AlertEffects remove_agent(std::string_view agent_id, std::int64_t now);
  AlertEffects remove_monitor(std::string_view monitor_id, std::int64_t now);
  /// A monitor's next deadline changed without a ping (created, resumed: 0 = paused).
  AlertEffects set_monitor_deadline(std::string_view monitor_id, std::int64_t deadline_unix_ms, std::int64_t now);

  /**
   * Acknowledges a firing alert: no more repeats or escalation for it.
   * @param ec not_found when no firing alert has this id (nothing changes).
   */
  AlertEffects acknowledge(std::string_view alert_id, std::string_view who, std::string_view comment, std::int64_t now,
                           error_code& ec);
  /// Throws `quartzflow::error` (not_found).
  AlertEffects acknowledge(std::string_view alert_id, std::string_view who, std::string_view comment, std::int64_t now);

  /// The timer: does what is due at `now`.
  AlertEffects tick(std::int64_t now);

  /// When `tick` is due next (k_never: nothing pending).
  std::int64_t next_deadline() const noexcept;
  /// Firing alerts held (all rules).
  std::size_t firing_count() const noexcept;
  /// Tasks with a failure counter (bounded by the failing tasks in some rule's scope).
  std::size_t failure_counters() const noexcept;
  /// A firing alert by its id; nullptr when none.
  const v1::Alert* find_alert(std::string_view alert_id) const noexcept;

  struct State;

 private:
  std::unique_ptr<State> state_;
};

/// The first lines of a run's output as a notification shows them: at most 20 lines and
/// 2 KiB, cut at a character boundary.
std::string alert_output_head(std::string_view output);

}  // namespace quartzflow::detail
