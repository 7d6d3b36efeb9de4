// SPDX-License-Identifier: Apache-2.0
// The alert engine (src/alerts/alert_engine.hpp) on a fake clock: every condition fires and
// resolves, grouping, group_interval and repeat timing, silences, acknowledgement,
// escalation, restarts from a snapshot, a burst of 10,000 failures, and the engine woken
// only at its deadlines against the same engine ticked every second.
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "alerts/alert_engine.hpp"

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;
using qf::detail::AlertEffects;
using qf::detail::AlertEngine;
using qf::detail::AlertRunFact;

namespace {

constexpr std::int64_t k_t0 = 1'800'000'000'000;  // 2027-01-15
constexpr std::int64_t k_s = 1000;

/// A rule with short, distinct timings: group_wait 30 s, group_interval 300 s, repeat 3600 s.
v1::AlertRule make_rule(const std::string& id, v1::AlertCondition condition,
                        std::vector<std::string> channels = {"ops"}) {
  v1::AlertRule rule;
  rule.set_id(id);
  rule.set_description("rule " + id);
  rule.set_condition(condition);
  for (auto& c : channels) rule.add_channel_ids(c);
  rule.set_group_wait_seconds(30);
  rule.set_group_interval_seconds(300);
  rule.set_repeat_interval_seconds(3600);
  return rule;
}

qf::detail::AlertTaskInfo task_info(const std::string& id, std::vector<std::string> groups = {"g1"}) {
  qf::detail::AlertTaskInfo info;
  info.task_id = id;
  info.name = "name of " + id;
  info.group_ids = std::move(groups);
  info.labels = {{"team", "data"}};
  return info;
}

AlertRunFact run(const std::string& task, v1::ExecutionStatus status, std::int64_t ended,
                 std::int64_t duration_ms = 1000) {
  AlertRunFact fact;
  fact.task = task_info(task);
  auto& e = fact.execution;
  e.set_execution_id(task + ":" + std::to_string(ended));
  e.set_task_id(task);
  e.set_agent_id("agent-1");
  e.set_status(status);
  e.set_started_unix_ms(ended - duration_ms);
  e.set_ended_unix_ms(ended);
  e.set_duration_ms(duration_ms);
  if (status == v1::EXECUTION_STATUS_FAILURE) e.set_failure_reason("exit 1");
  e.set_output("line 1\nline 2\n");
  return fact;
}

/// The engine with the caller's side: effects applied to a fake store, timers fired at the
/// engine's deadlines only.
struct Harness {
  AlertEngine engine;
  std::map<std::string, v1::Alert> alerts;  // the store's alert table
  std::vector<v1::Delivery> deliveries;     // the outbox, in enqueue order
  std::set<std::string> delivery_ids;
  std::int64_t now = k_t0;
  std::int64_t deadline = AlertEngine::k_never;
  int duplicate_ids = 0;

  explicit Harness(std::vector<v1::AlertRule> rules, std::vector<v1::Silence> silences = {},
                   qf::detail::AlertEngineOptions options = {})
      : engine(std::move(options)) {
    apply(engine.restore({}, std::move(rules), std::move(silences), now));
  }

  void apply(AlertEffects effects) {
    for (auto& alert : effects.alerts) alerts[alert.id()] = alert;
    for (auto& d : effects.deliveries) {
      if (!delivery_ids.insert(d.id()).second) {
        ++duplicate_ids;
        continue;
      }
      deliveries.push_back(std::move(d));
    }
    deadline = effects.next_deadline_unix_ms;
    CHECK(deadline == engine.next_deadline());
  }
  /// Time passes to `t`; the timer fires at each deadline on the way.
  void advance_to(std::int64_t t) {
    while (deadline <= t) {
      REQUIRE(deadline >= now);
      now = deadline;
      apply(engine.tick(now));
    }
    now = t;
  }
  void advance(std::int64_t ms) { advance_to(now + ms); }
  void fact(const AlertRunFact& f) { apply(engine.on_run(f, now)); }

  std::vector<const v1::Delivery*> of_kind(v1::NotificationKind kind) const {
    std::vector<const v1::Delivery*> out;
    for (const auto& d : deliveries) {
      if (d.notification().kind() == kind) out.push_back(&d);
    }
    return out;
  }
  const v1::Alert& alert_of(const std::string& rule, const std::string& task) const {
    for (auto it = alerts.rbegin(); it != alerts.rend(); ++it) {
      if (it->second.rule_id() == rule && it->second.task_id() == task) return it->second;
    }
    FAIL("no alert of rule " << rule << " for task " << task);
    return alerts.begin()->second;
  }
};

std::set<std::string> task_ids(const v1::Delivery& d) {
  std::set<std::string> out;
  for (const auto& item : d.notification().items()) out.insert(item.alert().task_id());
  return out;
}

}  // namespace

TEST_CASE("alerts: a failed run fires after group_wait and its next success sends one recovery notice", "[alerts]") {
  Harness h({make_rule("failed", v1::ALERT_CONDITION_RUN_FAILED)});
  h.fact(run("t1", v1::EXECUTION_STATUS_FAILURE, h.now));
  REQUIRE(h.engine.firing_count() == 1);
  CHECK(h.deliveries.empty());
  CHECK(h.deadline == k_t0 + 30 * k_s);
  h.advance(29 * k_s);
  CHECK(h.deliveries.empty());
  h.advance(1 * k_s);
  REQUIRE(h.deliveries.size() == 1);
  const auto& firing = h.deliveries[0];
  CHECK(firing.channel_id() == "ops");
  CHECK(firing.notification().kind() == v1::NOTIFICATION_KIND_FIRING);
  CHECK(firing.notification().id() == firing.id());
  REQUIRE(firing.notification().items_size() == 1);
  const auto& item = firing.notification().items(0);
  CHECK(item.task_name() == "name of t1");
  CHECK(item.agent_id() == "agent-1");  // the run's agent: messages name it
  CHECK(item.alert().agent_id().empty());
  CHECK(item.status() == v1::EXECUTION_STATUS_FAILURE);
  CHECK(item.reason() == "exit 1");
  CHECK(item.output_head() == "line 1\nline 2\n");
  CHECK(item.alert().id() == "failed:task:t1:" + std::to_string(k_t0));
  CHECK(item.alert().last_notified_unix_ms() == k_t0 + 30 * k_s);

  h.advance(10 * k_s);
  h.fact(run("t1", v1::EXECUTION_STATUS_SUCCESS, h.now));
  CHECK(h.engine.firing_count() == 0);
  CHECK(h.alert_of("failed", "t1").state() == v1::ALERT_STATE_RESOLVED);
  CHECK(h.alert_of("failed", "t1").recovery_pending());
  // A resolved notice of a notified group waits for group_interval after its last notification.
  h.advance(300 * k_s);
  REQUIRE(h.deliveries.size() == 2);
  CHECK(h.deliveries[1].notification().kind() == v1::NOTIFICATION_KIND_RESOLVED);
  CHECK(h.deliveries[1].created_unix_ms() == k_t0 + 330 * k_s);
  CHECK_FALSE(h.alert_of("failed", "t1").recovery_pending());
  h.fact(run("t1", v1::EXECUTION_STATUS_SUCCESS, h.now + 1));
  h.advance(24 * 3600 * k_s);
  CHECK(h.deliveries.size() == 2);
  CHECK(h.deadline == AlertEngine::k_never);
}

TEST_CASE("alerts: an alert resolved before group_wait sends nothing at all", "[alerts]") {
  Harness h({make_rule("failed", v1::ALERT_CONDITION_RUN_FAILED)});
  h.fact(run("t1", v1::EXECUTION_STATUS_FAILURE, h.now));
  h.advance(10 * k_s);
  h.fact(run("t1", v1::EXECUTION_STATUS_SUCCESS, h.now));
  h.advance(3600 * k_s);
  CHECK(h.deliveries.empty());
  CHECK(h.alert_of("failed", "t1").state() == v1::ALERT_STATE_RESOLVED);
  CHECK_FALSE(h.alert_of("failed", "t1").recovery_pending());
}

TEST_CASE("alerts: no_recovery_notice resolves without a notice", "[alerts]") {
  auto rule = make_rule("failed", v1::ALERT_CONDITION_RUN_FAILED);
  rule.set_no_recovery_notice(true);
  Harness h({rule});
  h.fact(run("t1", v1::EXECUTION_STATUS_FAILURE, h.now));
  h.advance(31 * k_s);
  h.fact(run("t1", v1::EXECUTION_STATUS_SUCCESS, h.now));
  h.advance(3600 * k_s);
  REQUIRE(h.deliveries.size() == 1);
  CHECK(h.alert_of("failed", "t1").state() == v1::ALERT_STATE_RESOLVED);
}

TEST_CASE("alerts: MISSED raises RUN_MISSED only, never a failure condition", "[alerts]") {
  Harness h({make_rule("failed", v1::ALERT_CONDITION_RUN_FAILED), make_rule("missed", v1::ALERT_CONDITION_RUN_MISSED)});
  auto missed = run("t1", v1::EXECUTION_STATUS_MISSED, h.now, 0);
  missed.execution.set_started_unix_ms(0);
  missed.execution.set_skip_detail("agent down from 02:00 to 04:10 UTC");
  h.fact(missed);
  REQUIRE(h.engine.firing_count() == 1);
  h.advance(30 * k_s);
  REQUIRE(h.deliveries.size() == 1);
  CHECK(h.deliveries[0].notification().rule_id() == "missed");
  CHECK(h.deliveries[0].notification().items(0).reason() == "agent down from 02:00 to 04:10 UTC");
  h.fact(run("t1", v1::EXECUTION_STATUS_SUCCESS, h.now));
  CHECK(h.engine.firing_count() == 0);
}

TEST_CASE(
    "alerts: consecutive failures count FAILURE and TIMEOUT, reset on SUCCESS, and ignore CANCELLED, SKIPPED and "
    "MISSED",
    "[alerts]") {
  Harness h({make_rule("streak", v1::ALERT_CONDITION_CONSECUTIVE_FAILURES)});  // default 3
  std::int64_t t = h.now;
  h.fact(run("t1", v1::EXECUTION_STATUS_FAILURE, ++t));
  h.fact(run("t1", v1::EXECUTION_STATUS_TIMEOUT, ++t));
  h.fact(run("t1", v1::EXECUTION_STATUS_SUCCESS, ++t));  // resets
  h.fact(run("t1", v1::EXECUTION_STATUS_FAILURE, ++t));
  h.fact(run("t1", v1::EXECUTION_STATUS_CANCELLED, ++t));  // neither counts nor resets
  h.fact(run("t1", v1::EXECUTION_STATUS_SKIPPED, ++t));
  h.fact(run("t1", v1::EXECUTION_STATUS_MISSED, ++t));
  h.fact(run("t1", v1::EXECUTION_STATUS_FAILURE, ++t));
  CHECK(h.engine.firing_count() == 0);
  CHECK(h.engine.failure_counters() == 1);
  h.fact(run("t1", v1::EXECUTION_STATUS_FAILURE, ++t));
  REQUIRE(h.engine.firing_count() == 1);
  CHECK(h.alert_of("streak", "t1").summary() == "3 failures in a row");
  h.fact(run("t1", v1::EXECUTION_STATUS_FAILURE, ++t));
  CHECK(h.alert_of("streak", "t1").count() == 4);
  h.fact(run("t1", v1::EXECUTION_STATUS_SUCCESS, ++t));
  CHECK(h.engine.firing_count() == 0);
  CHECK(h.engine.failure_counters() == 0);
}

TEST_CASE("alerts: failure counters exist only for tasks in a CONSECUTIVE_FAILURES rule's scope", "[alerts]") {
  auto rule = make_rule("streak", v1::ALERT_CONDITION_CONSECUTIVE_FAILURES);
  rule.mutable_scope()->add_task_ids("watched");
  Harness h({rule, make_rule("failed", v1::ALERT_CONDITION_RUN_FAILED)});
  for (int i = 0; i < 100; ++i) h.fact(run("other-" + std::to_string(i), v1::EXECUTION_STATUS_FAILURE, h.now + i));
  CHECK(h.engine.failure_counters() == 0);
  h.fact(run("watched", v1::EXECUTION_STATUS_FAILURE, h.now + 200));
  CHECK(h.engine.failure_counters() == 1);
}

TEST_CASE("alerts: duration above an absolute or a p95 threshold fires and a run within it resolves", "[alerts]") {
  auto absolute = make_rule("slow", v1::ALERT_CONDITION_DURATION_ABOVE);
  absolute.set_duration_above_seconds(60);
  auto relative = make_rule("slower-than-usual", v1::ALERT_CONDITION_DURATION_ABOVE);
  relative.set_duration_p95_factor(2.0);
  Harness h({absolute, relative});
  h.fact(run("t1", v1::EXECUTION_STATUS_SUCCESS, h.now, 59 * k_s));
  CHECK(h.engine.firing_count() == 0);  // within 60 s; p95 unknown decides nothing
  auto long_run = run("t1", v1::EXECUTION_STATUS_SUCCESS, h.now + 1, 61 * k_s);
  long_run.p95_duration_ms = 20 * k_s;  // 2 x 20 s = 40 s
  h.fact(long_run);
  CHECK(h.engine.firing_count() == 2);
  auto medium = run("t1", v1::EXECUTION_STATUS_FAILURE, h.now + 2, 50 * k_s);
  medium.p95_duration_ms = 20 * k_s;
  h.fact(medium);  // within 60 s, above 40 s
  CHECK(h.engine.firing_count() == 1);
  CHECK(h.alert_of("slow", "t1").state() == v1::ALERT_STATE_RESOLVED);
  CHECK(h.alert_of("slower-than-usual", "t1").state() == v1::ALERT_STATE_FIRING);
  CHECK(h.alert_of("slower-than-usual", "t1").count() == 2);
}

TEST_CASE("alerts: the dead man's switch fires when no success came within the period and a success resolves it",
          "[alerts]") {
  auto rule = make_rule("dead", v1::ALERT_CONDITION_NO_SUCCESS_WITHIN);
  rule.set_no_success_within_seconds(3600);
  rule.mutable_scope()->set_task_label_selector("team=data");
  Harness h({rule});
  h.apply(h.engine.upsert_task(task_info("t1"), h.now));
  auto other = task_info("t2");
  other.labels = {{"team", "web"}};
  h.apply(h.engine.upsert_task(other, h.now));
  h.advance(1800 * k_s);
  h.fact(run("t1", v1::EXECUTION_STATUS_SUCCESS, h.now));  // the period restarts here
  CHECK(h.deadline == k_t0 + 5400 * k_s);
  h.advance(3599 * k_s);
  CHECK(h.engine.firing_count() == 0);
  h.advance(1 * k_s);
  REQUIRE(h.engine.firing_count() == 1);
  const auto& alert = h.alert_of("dead", "t1");
  CHECK(alert.started_unix_ms() == k_t0 + 5400 * k_s);
  CHECK(alert.id() == "dead:task:t1:" + std::to_string(k_t0 + 5400 * k_s));
  h.advance(30 * k_s);
  REQUIRE(h.deliveries.size() == 1);
  h.advance(7200 * k_s);
  CHECK(h.engine.firing_count() == 1);  // one alert however long it stays silent
  h.fact(run("t1", v1::EXECUTION_STATUS_SUCCESS, h.now));
  CHECK(h.engine.firing_count() == 0);
  CHECK(h.deadline <= h.now + 3600 * k_s);
}

TEST_CASE("alerts: an agent offline longer than the threshold fires and coming back resolves it", "[alerts]") {
  auto rule = make_rule("offline", v1::ALERT_CONDITION_AGENT_OFFLINE);
  rule.set_agent_offline_seconds(120);
  rule.mutable_scope()->add_group_ids("g1");
  Harness h({rule});
  h.apply(h.engine.on_agent({"a1", {"g1"}, false}, h.now));
  h.apply(h.engine.on_agent({"a2", {"g2"}, false}, h.now));  // out of scope
  h.advance(60 * k_s);
  h.apply(h.engine.on_agent({"a1", {"g1"}, false}, h.now));  // repeated: the first instant counts
  h.advance(59 * k_s);
  CHECK(h.engine.firing_count() == 0);
  h.advance(1 * k_s);
  REQUIRE(h.engine.firing_count() == 1);
  h.advance(30 * k_s);
  REQUIRE(h.deliveries.size() == 1);
  CHECK(h.deliveries[0].notification().items(0).alert().agent_id() == "a1");
  h.apply(h.engine.on_agent({"a1", {"g1"}, true}, h.now));
  CHECK(h.engine.firing_count() == 0);
  // Back before the threshold: nothing.
  h.apply(h.engine.on_agent({"a1", {"g1"}, false}, h.now));
  h.advance(100 * k_s);
  h.apply(h.engine.on_agent({"a1", {"g1"}, true}, h.now));
  h.advance(1000 * k_s);
  CHECK(h.engine.firing_count() == 0);
  CHECK(h.of_kind(v1::NOTIFICATION_KIND_RESOLVED).size() == 1);
}

TEST_CASE("alerts: a failed config push fires and the agent's next good push resolves it", "[alerts]") {
  Harness h({make_rule("push", v1::ALERT_CONDITION_CONFIG_PUSH_FAILED)});
  h.apply(h.engine.on_config_push({"a1", {"g1"}, false, "no ACK after 3 pushes"}, h.now));
  h.apply(h.engine.on_config_push({"a1", {"g1"}, false, "no ACK after 3 pushes"}, h.now + 5));
  REQUIRE(h.engine.firing_count() == 1);
  h.advance(30 * k_s);
  REQUIRE(h.deliveries.size() == 1);
  CHECK(h.deliveries[0].notification().items(0).reason() == "no ACK after 3 pushes");
  h.apply(h.engine.on_config_push({"a1", {"g1"}, true, ""}, h.now));
  CHECK(h.engine.firing_count() == 0);
}

TEST_CASE("alerts: a monitor past its deadline or pinging /fail fires and a good ping resolves it", "[alerts]") {
  auto rule = make_rule("monitor", v1::ALERT_CONDITION_MONITOR_DOWN);
  rule.mutable_scope()->add_monitor_ids("backup");
  Harness h({rule});
  h.apply(h.engine.set_monitor_deadline("backup", h.now + 600 * k_s, h.now));
  h.apply(h.engine.set_monitor_deadline("other", h.now + 600 * k_s, h.now));
  h.advance(599 * k_s);
  CHECK(h.engine.firing_count() == 0);
  h.advance(1 * k_s);
  REQUIRE(h.engine.firing_count() == 1);
  h.advance(30 * k_s);
  REQUIRE(h.deliveries.size() == 1);
  CHECK(h.deliveries[0].notification().items(0).alert().monitor_id() == "backup");
  h.apply(h.engine.on_monitor_ping({"backup", qf::detail::MonitorPingKind::success, h.now + 600 * k_s}, h.now));
  CHECK(h.engine.firing_count() == 0);
  h.advance(100 * k_s);
  h.apply(h.engine.on_monitor_ping({"backup", qf::detail::MonitorPingKind::fail, h.now + 600 * k_s}, h.now));
  REQUIRE(h.engine.firing_count() == 1);
  h.apply(h.engine.on_monitor_ping({"backup", qf::detail::MonitorPingKind::success, h.now + 600 * k_s}, h.now + 1));
  CHECK(h.engine.firing_count() == 0);
  // The caller may decide the deadline itself.
  h.apply(h.engine.on_monitor_ping({"backup", qf::detail::MonitorPingKind::down, 0}, h.now + 2));
  REQUIRE(h.engine.firing_count() == 1);
  const auto* down = h.engine.find_alert("monitor:monitor:backup:" + std::to_string(h.now + 2));
  REQUIRE(down != nullptr);
  CHECK(down->summary() == "no ping by its deadline");
}

TEST_CASE("alerts: alerts of one rule within group_wait go out in one notification, later ones after group_interval",
          "[alerts]") {
  Harness h({make_rule("failed", v1::ALERT_CONDITION_RUN_FAILED, {"ops", "chat"})});
  h.fact(run("t1", v1::EXECUTION_STATUS_FAILURE, h.now));
  h.advance(20 * k_s);
  h.fact(run("t2", v1::EXECUTION_STATUS_FAILURE, h.now));
  h.advance(10 * k_s);
  REQUIRE(h.deliveries.size() == 2);  // one per channel
  for (const auto& d : h.deliveries) {
    CHECK(d.notification().kind() == v1::NOTIFICATION_KIND_FIRING);
    CHECK(task_ids(d) == std::set<std::string>{"t1", "t2"});
    CHECK(d.notification().more_firing() == 0);
  }
  CHECK(h.deliveries[0].id() != h.deliveries[1].id());
  // A third alert 10 s later waits for the group's interval: 300 s after the first notification.
  h.advance(10 * k_s);
  h.fact(run("t3", v1::EXECUTION_STATUS_FAILURE, h.now));
  h.advance(289 * k_s);
  CHECK(h.deliveries.size() == 2);
  h.advance(1 * k_s);
  REQUIRE(h.deliveries.size() == 4);
  CHECK(h.deliveries[2].created_unix_ms() == k_t0 + 330 * k_s);
  CHECK(task_ids(h.deliveries[2]) == std::set<std::string>{"t3"});  // never the same alert twice
  CHECK(h.deliveries[2].notification().more_firing() == 2);         // t1 and t2 still fire
}

TEST_CASE("alerts: several rules may match one fact, each with its own alert and notification", "[alerts]") {
  auto by_group = make_rule("group-g1", v1::ALERT_CONDITION_RUN_FAILED, {"g1-team"});
  by_group.mutable_scope()->add_group_ids("g1");
  auto by_other_group = make_rule("group-g2", v1::ALERT_CONDITION_RUN_FAILED, {"g2-team"});
  by_other_group.mutable_scope()->add_group_ids("g2");
  Harness h({make_rule("all", v1::ALERT_CONDITION_RUN_FAILED), by_group, by_other_group});
  h.fact(run("t1", v1::EXECUTION_STATUS_FAILURE, h.now));
  CHECK(h.engine.firing_count() == 2);
  h.advance(30 * k_s);
  REQUIRE(h.deliveries.size() == 2);
  std::set<std::string> channels;
  for (const auto& d : h.deliveries) channels.insert(d.channel_id());
  CHECK(channels == std::set<std::string>{"ops", "g1-team"});
}

TEST_CASE("alerts: duplicate facts never yield a second notification", "[alerts]") {
  Harness h({make_rule("failed", v1::ALERT_CONDITION_RUN_FAILED),
             make_rule("streak", v1::ALERT_CONDITION_CONSECUTIVE_FAILURES)});
  const auto fact = run("t1", v1::EXECUTION_STATUS_FAILURE, h.now);
  for (int i = 0; i < 5; ++i) h.fact(fact);
  CHECK(h.alert_of("failed", "t1").count() == 1);
  CHECK(h.engine.firing_count() == 1);  // three distinct failures needed for the streak
  h.advance(30 * k_s);
  h.fact(fact);
  h.advance(3599 * k_s);
  CHECK(h.deliveries.size() == 1);
  CHECK(h.duplicate_ids == 0);
}

TEST_CASE("alerts: repeats go out every repeat_interval until acknowledged", "[alerts]") {
  Harness h({make_rule("failed", v1::ALERT_CONDITION_RUN_FAILED)});
  h.fact(run("t1", v1::EXECUTION_STATUS_FAILURE, h.now));
  h.advance(30 * k_s);
  REQUIRE(h.deliveries.size() == 1);
  h.advance(3599 * k_s);
  CHECK(h.deliveries.size() == 1);
  h.advance(1 * k_s);
  REQUIRE(h.deliveries.size() == 2);
  CHECK(h.deliveries[1].notification().kind() == v1::NOTIFICATION_KIND_REPEAT);
  CHECK(h.deliveries[1].created_unix_ms() == k_t0 + 3630 * k_s);
  h.advance(3600 * k_s);
  REQUIRE(h.deliveries.size() == 3);
  CHECK(h.deliveries[2].notification().kind() == v1::NOTIFICATION_KIND_REPEAT);
  CHECK(h.deliveries[2].id() != h.deliveries[1].id());

  const std::string id = h.alert_of("failed", "t1").id();
  qf::error_code ec;
  h.apply(h.engine.acknowledge("no-such-alert", "ann", "", h.now, ec));
  CHECK(ec == qf::errc::not_found);
  CHECK_THROWS_AS(h.engine.acknowledge("no-such-alert", "ann", "", h.now), qf::error);
  h.apply(h.engine.acknowledge(id, "ann", "looking into it", h.now, ec));
  REQUIRE_FALSE(ec);
  CHECK(h.alerts[id].acknowledged_by() == "ann");
  CHECK(h.alerts[id].acknowledge_comment() == "looking into it");
  h.advance(5 * 3600 * k_s);
  CHECK(h.deliveries.size() == 3);
  // The recovery notice still goes out.
  h.fact(run("t1", v1::EXECUTION_STATUS_SUCCESS, h.now));
  h.advance(300 * k_s);
  REQUIRE(h.deliveries.size() == 4);
  CHECK(h.deliveries[3].notification().kind() == v1::NOTIFICATION_KIND_RESOLVED);
}

TEST_CASE("alerts: an escalation step notifies its channels once, at its time, unless acknowledged", "[alerts]") {
  auto rule = make_rule("failed", v1::ALERT_CONDITION_RUN_FAILED);
  auto* step1 = rule.add_escalation();
  step1->set_after_seconds(900);
  step1->add_channel_ids("oncall");
  auto* step2 = rule.add_escalation();
  step2->set_after_seconds(1800);
  step2->add_channel_ids("manager");
  Harness h({rule});
  h.fact(run("t1", v1::EXECUTION_STATUS_FAILURE, h.now));
  h.advance(899 * k_s);
  CHECK(h.of_kind(v1::NOTIFICATION_KIND_ESCALATION).empty());
  h.advance(1 * k_s);
  auto escalations = h.of_kind(v1::NOTIFICATION_KIND_ESCALATION);
  REQUIRE(escalations.size() == 1);
  CHECK(escalations[0]->channel_id() == "oncall");
  CHECK(escalations[0]->created_unix_ms() == k_t0 + 900 * k_s);
  CHECK(h.alert_of("failed", "t1").escalation_level() == 1);
  h.advance(600 * k_s);
  CHECK(h.of_kind(v1::NOTIFICATION_KIND_ESCALATION).size() == 1);  // once
  h.apply(h.engine.acknowledge(h.alert_of("failed", "t1").id(), "ann", "", h.now));
  h.advance(4 * 3600 * k_s);
  CHECK(h.of_kind(v1::NOTIFICATION_KIND_ESCALATION).size() == 1);  // step 2 never
  CHECK(h.of_kind(v1::NOTIFICATION_KIND_REPEAT).empty());
}

TEST_CASE("alerts: a silence mutes notifications until it ends, then lets the firing alert through", "[alerts]") {
  v1::Silence silence;
  silence.set_id("s1");
  silence.add_task_ids("t1");
  silence.set_starts_unix_ms(k_t0);
  silence.set_ends_unix_ms(k_t0 + 1000 * k_s);
  silence.set_reason("maintenance");
  Harness h({make_rule("failed", v1::ALERT_CONDITION_RUN_FAILED)}, {silence});
  h.fact(run("t1", v1::EXECUTION_STATUS_FAILURE, h.now));
  h.fact(run("t2", v1::EXECUTION_STATUS_FAILURE, h.now));
  CHECK(h.engine.firing_count() == 2);  // recorded even though muted
  h.advance(30 * k_s);
  REQUIRE(h.deliveries.size() == 1);
  CHECK(task_ids(h.deliveries[0]) == std::set<std::string>{"t2"});
  h.advance(969 * k_s);
  CHECK(h.deliveries.size() == 1);
  h.advance(1 * k_s);  // the silence ends: the group's next instant (group_interval passed) lets t1 through
  REQUIRE(h.deliveries.size() == 2);
  CHECK(h.deliveries[1].notification().kind() == v1::NOTIFICATION_KIND_FIRING);
  CHECK(task_ids(h.deliveries[1]) == std::set<std::string>{"t1"});
  CHECK(h.deliveries[1].created_unix_ms() == k_t0 + 1000 * k_s);
}

TEST_CASE("alerts: a recovery inside a silence is muted, not sent when it ends", "[alerts]") {
  Harness h({make_rule("failed", v1::ALERT_CONDITION_RUN_FAILED)});
  h.fact(run("t1", v1::EXECUTION_STATUS_FAILURE, h.now));
  h.advance(30 * k_s);
  REQUIRE(h.deliveries.size() == 1);
  v1::Silence silence;
  silence.add_rule_ids("failed");
  silence.set_starts_unix_ms(h.now);
  silence.set_ends_unix_ms(h.now + 600 * k_s);
  h.apply(h.engine.set_silences({silence}, h.now));
  h.fact(run("t1", v1::EXECUTION_STATUS_SUCCESS, h.now + 10 * k_s));
  h.advance(3600 * k_s);
  CHECK(h.deliveries.size() == 1);
  CHECK_FALSE(h.alert_of("failed", "t1").recovery_pending());
}

TEST_CASE("alerts: a disabled or deleted rule resolves its alerts silently", "[alerts]") {
  auto rule = make_rule("failed", v1::ALERT_CONDITION_RUN_FAILED);
  Harness h({rule, make_rule("missed", v1::ALERT_CONDITION_RUN_MISSED)});
  h.fact(run("t1", v1::EXECUTION_STATUS_FAILURE, h.now));
  h.advance(30 * k_s);
  rule.set_disabled(true);
  h.apply(h.engine.set_rules({rule, make_rule("missed", v1::ALERT_CONDITION_RUN_MISSED)}, h.now));
  CHECK(h.engine.firing_count() == 0);
  CHECK(h.alert_of("failed", "t1").state() == v1::ALERT_STATE_RESOLVED);
  h.fact(run("t1", v1::EXECUTION_STATUS_FAILURE, h.now + 1));  // a disabled rule raises nothing
  h.advance(3600 * k_s);
  CHECK(h.deliveries.size() == 1);
  CHECK(h.engine.firing_count() == 0);
}

TEST_CASE("alerts: a restart from the store's snapshot neither notifies again nor forgets", "[alerts]") {
  const std::vector<v1::AlertRule> rules{make_rule("failed", v1::ALERT_CONDITION_RUN_FAILED)};
  Harness before(rules);
  before.fact(run("t1", v1::EXECUTION_STATUS_FAILURE, before.now));
  before.advance(30 * k_s);
  before.fact(run("t2", v1::EXECUTION_STATUS_FAILURE, before.now));  // pending: waits for group_interval
  before.advance(100 * k_s);
  REQUIRE(before.deliveries.size() == 1);

  // The store held the alerts as the effects left them; the process restarts.
  qf::detail::AlertSnapshot snapshot;
  for (const auto& [id, alert] : before.alerts) snapshot.alerts.push_back(alert);
  AlertEngine after;
  std::vector<v1::Delivery> sent;
  std::int64_t now = before.now + 5 * k_s;
  auto effects = after.restore(snapshot, rules, {}, now);
  CHECK(effects.deliveries.empty());
  CHECK(after.firing_count() == 2);
  // Drive it as the harness would, until the repeat of t1.
  for (std::int64_t deadline = effects.next_deadline_unix_ms; deadline <= k_t0 + 3630 * k_s;) {
    now = deadline;
    effects = after.tick(now);
    for (auto& d : effects.deliveries) sent.push_back(d);
    deadline = effects.next_deadline_unix_ms;
  }
  REQUIRE(sent.size() == 2);
  CHECK(sent[0].notification().kind() == v1::NOTIFICATION_KIND_FIRING);
  CHECK(task_ids(sent[0]) == std::set<std::string>{"t2"});  // t1 is not notified again
  CHECK(sent[0].created_unix_ms() == k_t0 + 330 * k_s);     // and t2 waits for the same interval
  CHECK(sent[1].notification().kind() == v1::NOTIFICATION_KIND_REPEAT);
  CHECK(sent[1].created_unix_ms() == k_t0 + 3630 * k_s);
  CHECK(task_ids(sent[1]) == std::set<std::string>{"t1"});
}

TEST_CASE("alerts: a recovery notice owed at a restart is sent after it", "[alerts]") {
  const std::vector<v1::AlertRule> rules{make_rule("failed", v1::ALERT_CONDITION_RUN_FAILED)};
  Harness before(rules);
  before.fact(run("t1", v1::EXECUTION_STATUS_FAILURE, before.now));
  before.advance(30 * k_s);
  before.fact(run("t1", v1::EXECUTION_STATUS_SUCCESS, before.now + 10 * k_s));
  qf::detail::AlertSnapshot snapshot;
  for (const auto& [id, alert] : before.alerts) {
    if (alert.state() == v1::ALERT_STATE_FIRING || alert.recovery_pending()) snapshot.alerts.push_back(alert);
  }
  REQUIRE(snapshot.alerts.size() == 1);
  Harness after(rules);
  after.now = before.now + 60 * k_s;
  after.apply(after.engine.restore(snapshot, rules, {}, after.now));
  after.advance(600 * k_s);
  REQUIRE(after.deliveries.size() == 1);
  CHECK(after.deliveries[0].notification().kind() == v1::NOTIFICATION_KIND_RESOLVED);
  CHECK(after.deliveries[0].created_unix_ms() == k_t0 + 330 * k_s);
}

TEST_CASE("alerts: the same facts give the same alert and notification ids in another engine", "[alerts]") {
  std::vector<std::string> ids[2];
  for (auto& out : ids) {
    Harness h({make_rule("failed", v1::ALERT_CONDITION_RUN_FAILED)});
    h.fact(run("t1", v1::EXECUTION_STATUS_FAILURE, h.now));
    h.advance(7 * k_s);
    h.fact(run("t2", v1::EXECUTION_STATUS_FAILURE, h.now));
    h.advance(4000 * k_s);
    for (const auto& d : h.deliveries) out.push_back(d.id());
    for (const auto& [id, alert] : h.alerts) out.push_back(id);
  }
  CHECK(ids[0].size() == 4);  // FIRING, REPEAT, two alerts
  CHECK(ids[0] == ids[1]);
}

TEST_CASE("alerts: 10,000 failures over 1,000 tasks in a minute make a bounded number of notifications", "[alerts]") {
  Harness h({make_rule("failed", v1::ALERT_CONDITION_RUN_FAILED, {"ops", "chat"}),
             make_rule("streak", v1::ALERT_CONDITION_CONSECUTIVE_FAILURES, {"ops"})});
  std::mt19937 random(42);
  std::uniform_int_distribution<int> pick_task(0, 999);
  for (int i = 0; i < 10'000; ++i) {
    h.advance(6);  // 10,000 in 60 s
    auto fact = run("task-" + std::to_string(pick_task(random)), v1::EXECUTION_STATUS_FAILURE, h.now);
    fact.execution.set_execution_id(fact.execution.execution_id() + ":" + std::to_string(i));
    h.fact(fact);
  }
  CHECK(h.engine.firing_count() > 1'000);  // RUN_FAILED for each task, streaks for most
  CHECK(h.engine.failure_counters() <= 1'000);
  // Over 10 minutes: per rule and channel the first notification and at most one per
  // group_interval after it.
  h.advance(600 * k_s);
  const std::size_t bound = 3 /* channels over both rules */ * (1 + 600 / 300);
  CHECK(h.deliveries.size() <= bound);
  std::size_t listed = 0;
  std::uint32_t max_more_firing = 0;
  for (const auto& d : h.deliveries) {
    CHECK(d.notification().items_size() <= 50);
    if (d.channel_id() == "ops" && d.notification().rule_id() == "failed") {
      listed += static_cast<std::size_t>(d.notification().items_size());
      max_more_firing = std::max(max_more_firing, d.notification().more_firing());
    }
  }
  CHECK(listed <= 100);
  CHECK(max_more_firing >= 900);
  // Every RUN_FAILED alert was announced (listed or counted in more_firing).
  std::size_t alerts = 0;
  std::size_t notified = 0;
  for (const auto& [id, alert] : h.alerts) {
    if (alert.rule_id() != "failed") continue;
    ++alerts;
    if (alert.last_notified_unix_ms() != 0) ++notified;
  }
  CHECK(alerts > 990);
  CHECK(notified == alerts);
}

namespace {

/// Three random hours of failures, successes and acknowledgements of 6 tasks under one rule
/// with escalation and a silence; returns the notifications (time, kind, channel, id) and
/// the alerts. `every_second`: the brute-force reference (every group scanned every second).
struct Trace {
  std::vector<std::tuple<std::int64_t, int, std::string, std::string>> sent;
  std::map<std::string, v1::Alert> alerts;
};

Trace simulate(unsigned seed, bool every_second) {
  auto rule = make_rule("failed", v1::ALERT_CONDITION_RUN_FAILED);
  rule.set_group_wait_seconds(20);
  rule.set_group_interval_seconds(120);
  rule.set_repeat_interval_seconds(600);
  auto* step = rule.add_escalation();
  step->set_after_seconds(400);
  step->add_channel_ids("oncall");
  auto streak = make_rule("streak", v1::ALERT_CONDITION_CONSECUTIVE_FAILURES, {"chat"});
  streak.set_consecutive_failures(2);
  streak.set_group_wait_seconds(10);
  streak.set_group_interval_seconds(60);
  streak.set_repeat_interval_seconds(300);
  v1::Silence silence;
  silence.add_task_ids("t3");
  silence.set_starts_unix_ms(k_t0 + 500 * k_s);
  silence.set_ends_unix_ms(k_t0 + 1500 * k_s);
  v1::Silence rule_silence;
  rule_silence.add_rule_ids("streak");
  rule_silence.set_starts_unix_ms(k_t0 + 4000 * k_s);
  rule_silence.set_ends_unix_ms(k_t0 + 5000 * k_s);
  qf::detail::AlertEngineOptions options;
  options.scan_every_group = every_second;
  Harness h({rule, streak}, {silence, rule_silence}, options);
  std::mt19937 random(seed);
  Trace trace;
  for (std::int64_t second = 1; second <= 3 * 3600; ++second) {
    const std::int64_t t = k_t0 + second * k_s;
    if (every_second) {
      h.now = t;
      h.apply(h.engine.tick(t));
    } else {
      h.advance_to(t);
    }
    if (random() % 40 == 0) {
      const std::string task = "t" + std::to_string(random() % 6);
      const auto roll = random() % 10;
      if (roll < 5) {
        h.fact(run(task, v1::EXECUTION_STATUS_FAILURE, t));
      } else if (roll < 9) {
        h.fact(run(task, v1::EXECUTION_STATUS_SUCCESS, t));
      } else {
        for (const auto& [id, alert] : h.alerts) {
          if (alert.task_id() == task && alert.state() == v1::ALERT_STATE_FIRING) {
            h.apply(h.engine.acknowledge(id, "sim", "", t));
          }
        }
      }
    }
  }
  std::set<std::string> announced;
  for (const auto& d : h.deliveries) {
    trace.sent.emplace_back(d.created_unix_ms(), static_cast<int>(d.notification().kind()), d.channel_id(), d.id());
    if (d.notification().kind() != v1::NOTIFICATION_KIND_FIRING) continue;
    for (const auto& item : d.notification().items()) CHECK(announced.insert(item.alert().id()).second);
  }
  CHECK(h.duplicate_ids == 0);
  trace.alerts = h.alerts;
  return trace;
}

}  // namespace

// The reference looks at every group every second (scan_every_group): what is due is then
// decided by the checks inside a group's scan alone, never by the engine's schedule of
// instants, which the engine under test relies on (woken only at its deadlines).
TEST_CASE("alerts: woken only at its deadlines the engine notifies as when every group is scanned every second",
          "[alerts]") {
  for (unsigned seed = 1; seed <= 64; ++seed) {
    INFO("seed " << seed);
    const Trace at_deadlines = simulate(seed, false);
    const Trace every_second = simulate(seed, true);
    REQUIRE_FALSE(at_deadlines.sent.empty());
    std::size_t same = 0;
    while (same < at_deadlines.sent.size() && same < every_second.sent.size() &&
           at_deadlines.sent[same] == every_second.sent[same]) {
      ++same;
    }
    const auto describe = [](const Trace& trace, std::size_t i) {
      if (i >= trace.sent.size()) return std::string("nothing");
      const auto& [at, kind, channel, id] = trace.sent[i];
      return std::to_string((at - k_t0) / k_s) + " s " + id;
    };
    INFO("first difference: " << describe(at_deadlines, same) << " against " << describe(every_second, same));
    CHECK(at_deadlines.sent == every_second.sent);
    CHECK(at_deadlines.alerts.size() == every_second.alerts.size());
    // And the routing rules hold: notifications of the group (FIRING, REPEAT, RESOLVED) at
    // least group_interval apart on a channel; no alert announced FIRING twice.
    std::map<std::string, std::int64_t> last_on_channel;
    for (const auto& [at, kind, channel, id] : at_deadlines.sent) {
      if (kind == v1::NOTIFICATION_KIND_ESCALATION) continue;
      auto [it, inserted] = last_on_channel.try_emplace(channel, at);
      if (!inserted && it->second != at) {
        // Several kinds at one instant are one round; "chat" is the streak rule's channel.
        CHECK(at - it->second >= (channel == "chat" ? 60 : 120) * k_s);
        it->second = at;
      }
    }
  }
}

TEST_CASE("alerts: a restart neither escalates again nor repeats early", "[alerts]") {
  auto rule = make_rule("failed", v1::ALERT_CONDITION_RUN_FAILED);
  auto* step = rule.add_escalation();
  step->set_after_seconds(600);
  step->add_channel_ids("oncall");
  const std::vector<v1::AlertRule> rules{rule};
  Harness before(rules);
  before.fact(run("t1", v1::EXECUTION_STATUS_FAILURE, before.now));
  before.advance(700 * k_s);
  REQUIRE(before.of_kind(v1::NOTIFICATION_KIND_ESCALATION).size() == 1);
  qf::detail::AlertSnapshot snapshot;
  for (const auto& [id, alert] : before.alerts) snapshot.alerts.push_back(alert);
  Harness after(rules);
  after.now = before.now;
  after.apply(after.engine.restore(snapshot, rules, {}, after.now));
  after.advance(3629 * k_s - 700 * k_s);  // up to the first repeat, t0 + 3630 s
  CHECK(after.deliveries.empty());
  after.advance(1 * k_s);
  REQUIRE(after.deliveries.size() == 1);
  CHECK(after.deliveries[0].notification().kind() == v1::NOTIFICATION_KIND_REPEAT);
}

TEST_CASE("alerts: a removed task or a rule watching another condition resolves its alerts silently", "[alerts]") {
  auto rule = make_rule("failed", v1::ALERT_CONDITION_RUN_FAILED);
  Harness h({rule});
  h.fact(run("t1", v1::EXECUTION_STATUS_FAILURE, h.now));
  h.fact(run("t2", v1::EXECUTION_STATUS_FAILURE, h.now));
  h.advance(30 * k_s);
  REQUIRE(h.deliveries.size() == 1);
  h.apply(h.engine.remove_task("t1", h.now));
  CHECK(h.alert_of("failed", "t1").state() == v1::ALERT_STATE_RESOLVED);
  CHECK_FALSE(h.alert_of("failed", "t1").recovery_pending());
  rule.set_condition(v1::ALERT_CONDITION_RUN_MISSED);
  h.apply(h.engine.set_rules({rule}, h.now));
  CHECK(h.engine.firing_count() == 0);
  h.advance(3 * 3600 * k_s);
  CHECK(h.deliveries.size() == 1);
}

TEST_CASE("alerts: a rule's scope selects tasks by id, group, labels and the run's agent", "[alerts]") {
  auto by_label = make_rule("label", v1::ALERT_CONDITION_RUN_FAILED);
  by_label.mutable_scope()->set_task_label_selector("team=data,tier=1");
  auto by_agent = make_rule("agent", v1::ALERT_CONDITION_RUN_FAILED);
  by_agent.mutable_scope()->add_agent_ids("agent-2");
  auto malformed = make_rule("malformed", v1::ALERT_CONDITION_RUN_FAILED);
  malformed.mutable_scope()->set_task_label_selector("team");
  auto by_task_and_group = make_rule("task-group", v1::ALERT_CONDITION_RUN_FAILED);
  by_task_and_group.mutable_scope()->add_task_ids("t1");
  by_task_and_group.mutable_scope()->add_group_ids("g9");
  Harness h({by_label, by_agent, malformed, by_task_and_group});
  auto fact = run("t1", v1::EXECUTION_STATUS_FAILURE, h.now);
  h.fact(fact);  // team=data only, agent-1, group g1: no rule matches
  CHECK(h.engine.firing_count() == 0);
  fact = run("t1", v1::EXECUTION_STATUS_FAILURE, h.now + 1);
  fact.task.labels["tier"] = "1";
  fact.task.group_ids.push_back("g9");
  fact.execution.set_agent_id("agent-2");
  h.fact(fact);
  CHECK(h.engine.firing_count() == 3);  // label, agent, task-group; never the malformed selector
  CHECK(h.alert_of("task-group", "t1").state() == v1::ALERT_STATE_FIRING);
}

TEST_CASE("alerts: the output head keeps 20 lines and 2 KiB, cut at a character boundary", "[alerts]") {
  std::string lines;
  for (int i = 1; i <= 30; ++i) lines += "line " + std::to_string(i) + "\n";
  const auto head = qf::detail::alert_output_head(lines);
  CHECK(head.substr(head.size() - 7) == "line 20");
  CHECK(std::count(head.begin(), head.end(), '\n') == 19);
  const std::string wide(3000, 'x');
  CHECK(qf::detail::alert_output_head(wide).size() == 2048);
  std::string chinese = std::string(2047, 'a') + "\xe4\xb8\xad";  // 中 straddles the 2 KiB limit
  CHECK(qf::detail::alert_output_head(chinese) == std::string(2047, 'a'));
  CHECK(qf::detail::alert_output_head("short") == "short");
}

TEST_CASE("alerts: a re-run after a crash before the outbox commit enqueues the same notification id", "[alerts]") {
  const std::vector<v1::AlertRule> rules{make_rule("failed", v1::ALERT_CONDITION_RUN_FAILED, {"ops", "chat"})};
  Harness first(rules);
  first.fact(run("t1", v1::EXECUTION_STATUS_FAILURE, first.now));
  first.advance(10 * k_s);
  first.fact(run("t2", v1::EXECUTION_STATUS_FAILURE, first.now));
  // What the store holds before the flush at t0 + 30 s: both alerts, not notified.
  qf::detail::AlertSnapshot committed;
  for (const auto& [id, alert] : first.alerts) committed.alerts.push_back(alert);
  first.advance(30 * k_s);
  REQUIRE(first.deliveries.size() == 2);
  // The process died before that transaction committed; the next one restarts from the
  // store and composes the same notifications.
  Harness second(rules);
  second.now = k_t0 + 40 * k_s;
  second.apply(second.engine.restore(committed, rules, {}, second.now));
  REQUIRE(second.deliveries.size() == 2);
  for (std::size_t i = 0; i < 2; ++i) {
    CHECK(second.deliveries[i].id() == first.deliveries[i].id());
    CHECK(task_ids(second.deliveries[i]) == task_ids(first.deliveries[i]));
  }
}
