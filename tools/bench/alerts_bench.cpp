// SPDX-License-Identifier: Apache-2.0
// The alert engine (src/alerts/alert_engine.hpp) under a burst: 10,000 failures a minute over
// 1,000 tasks, RUN_FAILED and CONSECUTIVE_FAILURES rules on two channels. Reports facts/s and
// the notifications the burst produced (bounded: per rule and channel one per group_interval).
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "alerts/alert_engine.hpp"

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;

namespace {

constexpr std::int64_t k_t0 = 1'800'000'000'000;
constexpr int k_tasks = 1'000;

v1::AlertRule make_rule(const std::string& id, v1::AlertCondition condition) {
  v1::AlertRule rule;
  rule.set_id(id);
  rule.set_condition(condition);
  rule.add_channel_ids("ops");
  rule.add_channel_ids("chat");
  auto* step = rule.add_escalation();
  step->set_after_seconds(900);
  step->add_channel_ids("oncall");
  return rule;  // default timings: group_wait 30 s, group_interval 300 s, repeat 4 h
}

std::vector<qf::detail::AlertRunFact> make_facts() {
  std::vector<qf::detail::AlertRunFact> facts(k_tasks);
  for (int i = 0; i < k_tasks; ++i) {
    auto& fact = facts[static_cast<std::size_t>(i)];
    fact.task.task_id = "task-" + std::to_string(i);
    fact.task.name = "nightly export " + std::to_string(i);
    fact.task.group_ids = {"g" + std::to_string(i % 10)};
    fact.task.labels = {{"team", "data"}};
    fact.execution.set_task_id(fact.task.task_id);
    fact.execution.set_agent_id("agent-" + std::to_string(i % 50));
    fact.execution.set_status(v1::EXECUTION_STATUS_FAILURE);
    fact.execution.set_failure_reason("exit 1");
    fact.execution.set_duration_ms(1'200);
    fact.execution.set_output("Traceback (most recent call last):\n  File \"export.py\", line 12\nConnectionError\n");
  }
  return facts;
}

/// splitmix64: which task fails or succeeds, the same in every run.
std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/// One fact per iteration, 6 ms of fake time apart (10,000 a minute), for a task drawn at
/// random; one run in ten succeeds, so alerts also resolve and recovery notices go out.
void BM_failure_burst(benchmark::State& state) {
  auto facts = make_facts();
  qf::detail::AlertEngine engine;
  engine.restore({},
                 {make_rule("failed", v1::ALERT_CONDITION_RUN_FAILED),
                  make_rule("streak", v1::ALERT_CONDITION_CONSECUTIVE_FAILURES)},
                 {}, k_t0);
  std::int64_t now = k_t0;
  std::uint64_t n = 0;
  std::uint64_t notifications = 0;
  std::uint64_t alert_changes = 0;
  std::map<int, std::uint64_t> by_kind;
  for (auto _ : state) {
    now += 6;
    const std::uint64_t draw = mix(n);
    auto& fact = facts[draw % k_tasks];
    const bool success = (draw >> 32) % 10 == 0;
    fact.execution.set_status(success ? v1::EXECUTION_STATUS_SUCCESS : v1::EXECUTION_STATUS_FAILURE);
    fact.execution.set_execution_id(fact.task.task_id + ":" + std::to_string(now));
    fact.execution.set_ended_unix_ms(now);
    // Each call also does what fell due since the previous one (at most 6 ms late here).
    auto effects = engine.on_run(fact, now);
    notifications += effects.deliveries.size();
    for (const auto& delivery : effects.deliveries) ++by_kind[delivery.notification().kind()];
    alert_changes += effects.alerts.size();
    benchmark::DoNotOptimize(effects);
    ++n;
  }
  const double minutes = static_cast<double>(now - k_t0) / 60'000.0;
  state.counters["facts/s"] = benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsRate);
  state.counters["notifications"] = static_cast<double>(notifications);
  state.counters["notifications/min"] = minutes > 0 ? static_cast<double>(notifications) / minutes : 0;
  state.counters["alert_changes/fact"] = n > 0 ? static_cast<double>(alert_changes) / static_cast<double>(n) : 0;
  state.counters["firing"] = static_cast<double>(engine.firing_count());
  for (const auto& [kind, count] : by_kind) {
    state.counters[v1::NotificationKind_Name(kind).substr(std::string("NOTIFICATION_KIND_").size())] =
        static_cast<double>(count);
  }
}
BENCHMARK(BM_failure_burst)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
