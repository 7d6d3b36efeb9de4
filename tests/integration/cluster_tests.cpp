// SPDX-License-Identifier: Apache-2.0
// A coordinator and agents in one process: placements, routing, failover, group rules,
// live catalog changes, pushes that are never acknowledged, dropped messages, coordinator
// restarts and duplicate results.
#include <algorithm>
#include <random>
#include <set>

#include <fmt/format.h>

#include "cluster.hpp"

namespace {
std::int64_t now_unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}
}  // namespace

namespace qf = quartzflow;
using namespace std::chrono_literals;
using qf::testing::Cluster;
using qf::testing::shell_task;

namespace {

std::map<std::string, int> runs_by_agent(const std::vector<qf::v1::Execution>& records, qf::v1::ExecutionStatus status) {
  std::map<std::string, int> out;
  for (const auto& r : records)
    if (r.status() == status) ++out[r.agent_id()];
  return out;
}

}  // namespace

TEST_CASE("agents register, receive their group's tasks and run all-placement tasks", "[cluster]") {
  Cluster c;
  c.create_group("web");
  c.create_group("batch");
  c.add_agent("a1", "web");
  c.add_agent("a2", "batch");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  c.create_task(shell_task("hello", "echo hello from $QF_TASK_ID", {"web"}, qf::v1::PLACEMENT_MODE_ALL, 1));
  REQUIRE(c.run_until([&] { return c.count("hello", qf::v1::EXECUTION_STATUS_SUCCESS) >= 2; }));
  const auto records = c.executions("hello");
  for (const auto& r : records) {
    CHECK(r.agent_id() == "a1");  // a2 is in another group
    CHECK(r.group_id() == "web");
  }
  const auto record = c.execution(records.front().execution_id());
  REQUIRE(record);
  CHECK(record->output().find("hello from hello") != std::string::npos);
  const auto a1 = c.agent_record("a1");
  REQUIRE(a1);
  CHECK(a1->state() == qf::v1::AGENT_STATE_ONLINE);
  CHECK(a1->group_id() == "web");
  CHECK(a1->group_assignment() == qf::v1::GROUP_ASSIGNMENT_CONFIG);
  CHECK(a1->hostname() == "a1.example");
}

TEST_CASE("one placement routes each fire to one agent, round-robin over the group", "[cluster]") {
  Cluster c;
  c.create_group("web");
  for (auto id : {"a1", "a2", "a3"}) c.add_agent(id, "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  auto task = shell_task("rr", "echo region=$QF_PARAM_REGION", {"web"}, qf::v1::PLACEMENT_MODE_ONE, 1);
  task.mutable_placement()->set_routing(qf::v1::ROUTING_STRATEGY_ROUND_ROBIN);
  auto* region = task.add_params();
  region->set_name("region");
  region->set_default_value("eu-west");
  c.create_task(task);
  REQUIRE(c.run_until([&] { return c.count("rr", qf::v1::EXECUTION_STATUS_SUCCESS) >= 6; }));
  const auto records = c.executions("rr");
  std::set<std::string> fires;
  for (const auto& r : records) fires.insert(r.execution_id());
  CHECK(fires.size() == records.size());  // one record per fire: never two agents
  for (const auto& [agent, n] : runs_by_agent(records, qf::v1::EXECUTION_STATUS_SUCCESS)) CHECK(n >= 1);
  CHECK(runs_by_agent(records, qf::v1::EXECUTION_STATUS_SUCCESS).size() == 3);
  CHECK(c.execution(records.back().execution_id())->output() == "region=eu-west\n");  // the declared default
}

TEST_CASE("sharded placement splits a fire over the agents with QF_SHARD_INDEX and QF_SHARD_TOTAL", "[cluster]") {
  Cluster c;
  c.create_group("web");
  for (auto id : {"a1", "a2", "a3"}) c.add_agent(id, "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  auto task = shell_task("shards", "echo shard $QF_SHARD_INDEX/$QF_SHARD_TOTAL", {"web"}, qf::v1::PLACEMENT_MODE_SHARDED);
  task.mutable_placement()->set_shard_count(3);
  c.create_task(task);
  const auto result = c.trigger("shards");
  REQUIRE_FALSE(result.ec);
  REQUIRE(result.value.size() == 3);
  REQUIRE(c.run_until([&] { return c.count("shards", qf::v1::EXECUTION_STATUS_SUCCESS) == 3; }));
  std::set<std::string> agents;
  for (std::uint32_t i = 0; i < 3; ++i) {
    const auto r = c.execution(result.value[i]);
    REQUIRE(r);
    agents.insert(r->agent_id());
    CHECK(r->shard_total() == 3);
    CHECK(r->output() == fmt::format("shard {}/3\n", r->shard_index()));
    CHECK(r->trigger() == qf::v1::TRIGGER_TYPE_MANUAL);
    CHECK(r->triggered_by() == "tester");
  }
  CHECK(agents.size() == 3);
}

TEST_CASE("consistent hashing keeps a key on one agent, least-busy avoids the busy one", "[cluster]") {
  Cluster c;
  c.create_group("web");
  for (auto id : {"a1", "a2", "a3"}) c.add_agent(id, "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  auto hashed = shell_task("hashed", "echo $QF_PARAM_CUSTOMER", {"web"}, qf::v1::PLACEMENT_MODE_ONE);
  hashed.mutable_placement()->set_routing(qf::v1::ROUTING_STRATEGY_CONSISTENT_HASH);
  hashed.mutable_placement()->set_hash_key("customer");
  auto* param = hashed.add_params();
  param->set_name("customer");
  hashed.set_overlap_policy(qf::v1::OVERLAP_POLICY_ALLOW);
  c.create_task(hashed);
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) {
    auto r = c.trigger("hashed", {{"customer", "acme"}});
    REQUIRE_FALSE(r.ec);
    ids.push_back(r.value.at(0));
  }
  REQUIRE(c.run_until([&] { return c.count("hashed", qf::v1::EXECUTION_STATUS_SUCCESS) == 4; }));
  std::set<std::string> agents;
  for (const auto& id : ids) agents.insert(c.execution(id)->agent_id());
  CHECK(agents.size() == 1);

  auto slow = shell_task("slow", "sleep 2", {"web"}, qf::v1::PLACEMENT_MODE_ONE);
  slow.mutable_placement()->set_routing(qf::v1::ROUTING_STRATEGY_LEAST_BUSY);
  slow.set_overlap_policy(qf::v1::OVERLAP_POLICY_ALLOW);
  c.create_task(slow);
  std::set<std::string> busy;
  for (int i = 0; i < 3; ++i) {
    const auto r = c.trigger("slow");
    REQUIRE(c.reaches(r.value.at(0), qf::v1::EXECUTION_STATUS_RUNNING));
    busy.insert(c.execution(r.value.at(0))->agent_id());
  }
  CHECK(busy.size() == 3);  // each went to an idle agent

  auto scattered = shell_task("scattered", "true", {"web"}, qf::v1::PLACEMENT_MODE_ONE);
  scattered.mutable_placement()->set_routing(qf::v1::ROUTING_STRATEGY_RANDOM);
  scattered.set_overlap_policy(qf::v1::OVERLAP_POLICY_ALLOW);
  c.create_task(scattered);
  for (int i = 0; i < 12; ++i) REQUIRE_FALSE(c.trigger("scattered").ec);
  REQUIRE(c.run_until([&] { return c.count("scattered", qf::v1::EXECUTION_STATUS_SUCCESS) == 12; }));
  // 12 random picks from 3 agents all landing on one: probability 3 * (1/3)^12, about 1e-5.
  CHECK(runs_by_agent(c.executions("scattered"), qf::v1::EXECUTION_STATUS_SUCCESS).size() >= 2);
}

TEST_CASE("a run an agent never answers fails over to the next agent", "[cluster]") {
  Cluster c;
  c.create_group("web");
  c.add_agent("a1", "web");
  c.add_agent("a2", "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  auto task = shell_task("fo", "echo ran", {"web"}, qf::v1::PLACEMENT_MODE_ONE);
  task.mutable_placement()->set_routing(qf::v1::ROUTING_STRATEGY_CONSISTENT_HASH);
  c.create_task(task);
  // Find the agent the key maps to, then make it deaf to run requests.
  auto first = c.trigger("fo");
  REQUIRE(c.run_until([&] { return c.count("fo", qf::v1::EXECUTION_STATUS_SUCCESS) == 1; }));
  const std::string preferred = c.execution(first.value.at(0))->agent_id();
  // The next request (to the preferred agent) is lost; the coordinator must move on.
  qf::LinkFaults faults;
  int dropped = 0;
  faults.drop_if = [&dropped](const qf::v1::Envelope& e, qf::LinkDirection d) {
    if (d != qf::LinkDirection::to_agent || !e.has_run_request() || dropped > 0) return false;
    ++dropped;
    return true;
  };
  c.network.set_faults(faults);
  const auto second = c.trigger("fo");
  REQUIRE(c.run_until([&] { return c.count("fo", qf::v1::EXECUTION_STATUS_SUCCESS) == 2; }));
  const auto record = c.execution(second.value.at(0));
  CHECK(dropped == 1);
  CHECK(record->agent_id() != preferred);
  CHECK(c.coordinator->scheduler().stats().failovers >= 1);
}

namespace {

const char* guarantee_name(qf::v1::DeliveryGuarantee g) {
  return g == qf::v1::DELIVERY_GUARANTEE_AT_MOST_ONCE ? "at_most_once" : "at_least_once";
}

/// A `one` task whose every run appends its execution id to `file`, then sleeps.
qf::v1::Task counting_task(const std::string& id, const std::string& file, qf::v1::DeliveryGuarantee guarantee,
                           const char* then = "") {
  auto task = shell_task(id, fmt::format("echo \"$QF_EXECUTION_ID\" >> '{}'{}", file, then), {"web"},
                         qf::v1::PLACEMENT_MODE_ONE);
  task.mutable_placement()->set_routing(qf::v1::ROUTING_STRATEGY_CONSISTENT_HASH);
  task.set_delivery_guarantee(guarantee);
  return task;
}

int most_runs_of_one_id(const std::map<std::string, int>& runs) {
  int most = 0;
  for (const auto& [id, n] : runs) most = std::max(most, n);
  return most;
}

}  // namespace

TEST_CASE("a dropped acceptance is not a refusal: the run stays on its agent and runs once", "[cluster]") {
  const auto guarantee = GENERATE(qf::v1::DELIVERY_GUARANTEE_AT_LEAST_ONCE, qf::v1::DELIVERY_GUARANTEE_AT_MOST_ONCE);
  INFO(guarantee_name(guarantee));
  Cluster c;
  REQUIRE(c.two_agents_in("web"));
  const auto file = c.dir.path() / "runs.txt";
  c.create_task(counting_task("late", file.string(), guarantee, "; sleep 1"));
  auto first = c.trigger("late");
  REQUIRE(c.run_until([&] { return c.count("late", qf::v1::EXECUTION_STATUS_SUCCESS) == 1; }));
  const std::string preferred = c.execution(first.value.at(0))->agent_id();
  // The preferred agent starts the next run, but its answer is lost. Its session lives
  // (heartbeats): the coordinator asks again instead of sending the run elsewhere (it used
  // to re-route it while the first agent ran it: two executions).
  qf::LinkFaults faults;
  int dropped = 0;
  faults.drop_if = [&dropped, preferred](const qf::v1::Envelope& e, qf::LinkDirection d) {
    if (d != qf::LinkDirection::to_coordinator || !e.has_execution_update() || e.in_reply_to() == 0 ||
        e.execution_update().execution().agent_id() != preferred || dropped > 0)
      return false;
    ++dropped;
    return true;
  };
  c.network.set_faults(faults);
  const auto second = c.trigger("late");
  REQUIRE(c.run_until([&] { return c.count("late", qf::v1::EXECUTION_STATUS_SUCCESS) == 2; }));
  c.run_for(1500ms);  // a second execution, had there been one, has reported by now
  const auto record = c.execution(second.value.at(0));
  CHECK(dropped == 1);
  CHECK(record->agent_id() == preferred);
  CHECK(record->status() == qf::v1::EXECUTION_STATUS_SUCCESS);
  const auto runs = qf::testing::executions_in(file);
  CHECK(runs.size() == 2);
  CHECK(most_runs_of_one_id(runs) == 1);
  CHECK(c.coordinator->dispatcher().stats().duplicate_executions == 0);
  CHECK(c.coordinator->scheduler().stats().failovers == 0);
}

TEST_CASE("a frozen agent that catches up late never starts runs that were sent elsewhere", "[cluster]") {
  const auto guarantee = GENERATE(qf::v1::DELIVERY_GUARANTEE_AT_LEAST_ONCE, qf::v1::DELIVERY_GUARANTEE_AT_MOST_ONCE);
  INFO(guarantee_name(guarantee));
  Cluster c;  // acceptance timeout 300 ms; answers awaited up to 1.2 s while the session lives
  c.create_group("web");
  c.add_agent("a1", "web");
  c.add_agent("a2", "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  const auto file = c.dir.path() / "runs.txt";
  auto task = counting_task("frz", file.string(), guarantee);
  task.set_overlap_policy(qf::v1::OVERLAP_POLICY_ALLOW);  // 8 runs 5 ms apart may overlap on a2
  task.mutable_placement()->set_hash_key("k");  // each run's key is its param k: some map to a1
  task.add_params()->set_name("k");
  c.create_task(task);
  std::vector<std::string> ids;
  c.freeze("a1");
  for (int i = 0; i < 8; ++i) ids.push_back(c.trigger("frz", {{"k", std::to_string(i)}}).value.at(0));
  c.run_for(800ms);  // past the acceptance timeout and the start deadline, not past the bound
  // a1 catches up: the requests it now reads are past their start deadline (refused, and the
  // coordinator's cancels are remembered), so nothing it was sent runs here as well as on a2.
  c.thaw("a1");
  REQUIRE(c.run_until([&] {
    for (const auto& id : ids) {
      auto r = c.execution(id);
      if (!r || !qf::is_final(r->status())) return false;
    }
    return true;
  }));
  c.run_for(1000ms);
  const auto runs = qf::testing::executions_in(file);
  std::string table;
  for (const auto& id : ids) {
    const auto r = c.execution(id);
    table += fmt::format("{} {} {} {}\n", id, r->agent_id(), qf::v1::ExecutionStatus_Name(r->status()),
                         runs.count(id) ? runs.at(id) : 0);
  }
  INFO(table);
  CHECK(most_runs_of_one_id(runs) == 1);
  for (const auto& id : ids) CHECK(c.execution(id)->status() == qf::v1::EXECUTION_STATUS_SUCCESS);
  CHECK(runs.size() == ids.size());
  CHECK(c.coordinator->dispatcher().stats().duplicate_executions == 0);
  CHECK(c.coordinator->scheduler().stats().failovers >= 1);  // some keys went to a1 first
}

TEST_CASE("at_most_once: a run whose fate cannot be known ends FAILURE agent lost and never runs again",
          "[cluster]") {
  Cluster c;
  REQUIRE(c.two_agents_in("web"));
  const auto file = c.dir.path() / "runs.txt";
  auto task = counting_task("amo", file.string(), qf::v1::DELIVERY_GUARANTEE_AT_MOST_ONCE);
  task.mutable_retry()->set_max_retries(2);
  task.mutable_retry()->set_retry_on_another_agent(true);
  task = c.create_task(task);
  auto first = c.trigger("amo");
  REQUIRE(c.run_until([&] { return c.count("amo", qf::v1::EXECUTION_STATUS_SUCCESS) == 1; }));
  const std::string preferred = c.execution(first.value.at(0))->agent_id();

  SECTION("no answer within the bound") {
    c.freeze(preferred);
    const auto id = c.trigger("amo").value.at(0);
    REQUIRE(c.reaches(id, qf::v1::EXECUTION_STATUS_FAILURE, 5s));
    CHECK(c.execution(id)->failure_reason() == "agent lost");
    CHECK(c.execution(id)->agent_id() == preferred);
    c.thaw(preferred);
    c.run_for(1500ms);
    CHECK(c.execution(id)->status() == qf::v1::EXECUTION_STATUS_FAILURE);
    CHECK_FALSE(c.execution(id + ":r2"));  // not retried: it may have run
    CHECK(qf::testing::executions_in(file).count(id) == 0);  // the cancel won over the late request
  }
  SECTION("the session breaks after the request was sent") {
    c.freeze(preferred);
    const auto id = c.trigger("amo").value.at(0);
    c.run_for(100ms);
    c.network.cut(preferred);
    REQUIRE(c.reaches(id, qf::v1::EXECUTION_STATUS_FAILURE, 5s));
    CHECK(c.execution(id)->failure_reason() == "agent lost");
    c.thaw(preferred);
    REQUIRE(c.run_until([&] { return c.all_connected(); }));
    c.run_for(1500ms);
    CHECK_FALSE(c.execution(id + ":r2"));
    // a1 may have read the request before its deadline when it came back: at most once.
    CHECK(qf::testing::executions_in(file).count(id) <= 1);
  }
  SECTION("at_least_once instead: re-routed after the start deadline, run once") {
    task.set_delivery_guarantee(qf::v1::DELIVERY_GUARANTEE_AT_LEAST_ONCE);
    std::optional<qf::CatalogResult<qf::v1::Task>> updated;
    c.coordinator->update_task(task, true, qf::Actor{}, [&](qf::CatalogResult<qf::v1::Task> r) { updated = std::move(r); });
    REQUIRE(c.run_until([&] { return updated.has_value(); }));
    REQUIRE(*updated);
    c.freeze(preferred);
    const auto id = c.trigger("amo").value.at(0);
    c.run_for(100ms);
    c.network.cut(preferred);
    REQUIRE(c.reaches(id, qf::v1::EXECUTION_STATUS_SUCCESS, 5s));
    CHECK(c.execution(id)->agent_id() != preferred);
    c.thaw(preferred);
    c.run_for(1500ms);
    CHECK(qf::testing::executions_in(file).at(id) == 1);
  }
}

TEST_CASE("an agent that stops with runs in progress reports them, they are neither lost nor run again",
          "[cluster]") {
  Cluster c;
  REQUIRE(c.two_agents_in("web"));
  const auto file = c.dir.path() / "runs.txt";
  auto task = counting_task("drain", file.string(), qf::v1::DELIVERY_GUARANTEE_AT_LEAST_ONCE, "; sleep 2");
  task.mutable_placement()->set_routing(qf::v1::ROUTING_STRATEGY_ROUND_ROBIN);
  task.set_overlap_policy(qf::v1::OVERLAP_POLICY_ALLOW);
  task.mutable_retry()->set_max_retries(1);
  task.mutable_retry()->set_retry_on_another_agent(true);
  c.create_task(task);
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(c.trigger("drain").value.at(0));
  REQUIRE(c.run_until([&] {
    for (const auto& id : ids)
      if (auto r = c.execution(id); !r || r->status() != qf::v1::EXECUTION_STATUS_RUNNING) return false;
    return true;
  }));
  // a1 stops gracefully (the goodbye of a SIGTERM) while its runs are in progress.
  auto& a1 = *c.agents.at("a1");
  a1.dispatcher->stop();
  bool stopped = false;
  a1.engine->stop(5s, [&] { stopped = true; });
  REQUIRE(c.run_until([&] { return stopped; }));
  REQUIRE(c.run_until([&] {
    for (const auto& id : ids)
      if (auto r = c.execution(id); !r || !qf::is_final(r->status())) return false;
    return true;
  }));
  c.run_for(2500ms);  // a retry, had one been made, has run by now
  const auto runs = qf::testing::executions_in(file);
  CHECK(runs.size() == ids.size());
  CHECK(most_runs_of_one_id(runs) == 1);
  int on_a1 = 0;
  for (const auto& id : ids) {
    const auto r = c.execution(id);
    INFO(id << " " << r->agent_id() << " " << r->failure_reason() << " " << r->error_message());
    CHECK(r->status() == qf::v1::EXECUTION_STATUS_SUCCESS);
    CHECK_FALSE(c.execution(id + ":r2"));
    on_a1 += r->agent_id() == "a1" ? 1 : 0;
  }
  CHECK(on_a1 >= 1);
  c.agents.erase("a1");
}

TEST_CASE("a run whose agent is lost fails with `agent lost` and is retried on another agent", "[cluster]") {
  Cluster c;
  c.create_group("web");
  c.add_agent("a1", "web");
  c.add_agent("a2", "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  auto task = shell_task("long", "sleep 1; echo done", {"web"}, qf::v1::PLACEMENT_MODE_ONE);
  task.mutable_retry()->set_max_retries(1);
  task.mutable_retry()->set_interval_seconds(1);
  c.create_task(task);
  const auto id = c.trigger("long").value.at(0);
  REQUIRE(c.reaches(id, qf::v1::EXECUTION_STATUS_RUNNING));
  const std::string lost_agent = c.execution(id)->agent_id();
  c.network.isolate(lost_agent, true);
  REQUIRE(c.reaches(id, qf::v1::EXECUTION_STATUS_FAILURE));
  CHECK(c.execution(id)->failure_reason() == "agent lost");
  REQUIRE(c.reaches(id + ":r2", qf::v1::EXECUTION_STATUS_SUCCESS));
  const auto retry = c.execution(id + ":r2");
  CHECK(retry->agent_id() != lost_agent);
  CHECK(retry->attempt() == 2);
  CHECK(retry->trigger() == qf::v1::TRIGGER_TYPE_RETRY);
  CHECK(retry->root_execution_id() == id);
  CHECK(c.agent_record(lost_agent)->state() == qf::v1::AGENT_STATE_OFFLINE);
  // The lost agent comes back and reports the run it finished: the first verdict stands,
  // and the report is acknowledged (it leaves the agent's queue).
  c.network.isolate(lost_agent, false);
  REQUIRE(c.run_until([&] {
    qf::error_code ec;
    return c.all_connected() && c.agents[lost_agent]->store->unsynced(100, ec).empty();
  }));
  CHECK(c.execution(id)->failure_reason() == "agent lost");
}

TEST_CASE("disabling and enabling a task reaches the agents without a restart", "[cluster]") {
  Cluster c;
  c.create_group("web");
  c.add_agent("a1", "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  c.create_task(shell_task("tick", "true", {"web"}, qf::v1::PLACEMENT_MODE_ALL, 1));
  REQUIRE(c.run_until([&] { return c.count("tick", qf::v1::EXECUTION_STATUS_SUCCESS) >= 1; }));
  c.set_enabled("tick", false);
  REQUIRE(c.run_until([&] {
    auto a = c.agent_record("a1");
    return a && a->push_status().state() == qf::v1::CONFIG_PUSH_STATE_IN_SYNC &&
           a->applied_config_version() == a->desired_config_version();
  }));
  c.run_for(300ms);  // a run started before the change may still end
  const auto before = c.agents["a1"]->finals.size();
  c.run_for(2500ms);
  CHECK(c.agents["a1"]->finals.size() == before);
  c.set_enabled("tick", true);
  REQUIRE(c.run_until([&] { return c.agents["a1"]->finals.size() > before; }, 5s));
}

TEST_CASE("agents report their daily stats, they agree with the records the coordinator holds", "[cluster]") {
  Cluster c;
  c.create_group("web");
  c.add_agent("a1", "web");
  c.add_agent("a2", "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  c.create_task(shell_task("tick", "true", {"web"}, qf::v1::PLACEMENT_MODE_ALL, 1));
  REQUIRE(c.run_until([&] { return c.count("tick", qf::v1::EXECUTION_STATUS_SUCCESS) >= 6; }));
  c.set_enabled("tick", false);  // the counts stop moving
  c.run_for(1500ms);
  const std::string from = "2000-01-01", to = "2999-12-31";
  for (const char* agent : {"a1", "a2"}) {
    INFO(agent);
    qf::error_code ec;
    std::uint32_t local_total = 0, local_success = 0;
    for (const auto& s : c.agents[agent]->store->daily_stats(from, to, std::string("tick"), ec)) {
      local_total += s.total();
      local_success += s.success();
    }
    REQUIRE_FALSE(ec);
    REQUIRE(local_total >= 2);
    const auto totals = [&] {
      std::pair<std::uint32_t, std::uint32_t> sum{0, 0};
      for (const auto& s : c.reported_stats(agent, from, to))
        if (s.task_id() == "tick") {
          CHECK(s.agent_id() == agent);
          sum.first += s.total();
          sum.second += s.success();
        }
      return sum;
    };
    // Reports come every 300 ms here: the coordinator's copy catches up with the agent's.
    CHECK(c.run_until([&] { return totals() == std::make_pair(local_total, local_success); }, 5s));
    std::uint32_t stored = 0;
    for (const auto& r : c.executions("tick")) stored += r.agent_id() == agent ? 1 : 0;
    CHECK(stored == local_total);
  }
}

TEST_CASE("a push never acknowledged is re-sent 3 times, then marked failed, the agent recovers", "[cluster]") {
  Cluster c;
  c.create_group("web");
  c.add_agent("a1", "web");
  REQUIRE(c.run_until([&] {
    auto a = c.all_connected() ? c.agent_record("a1") : std::nullopt;
    return a && a->push_status().state() == qf::v1::CONFIG_PUSH_STATE_IN_SYNC;
  }));
  int deltas = 0;
  bool deaf = true;
  qf::LinkFaults faults;
  faults.drop_if = [&](const qf::v1::Envelope& e, qf::LinkDirection d) {
    if (!deaf) return false;
    if (d == qf::LinkDirection::to_agent && e.has_config_delta() && e.config_delta().push_attempt() > 0)
      return ++deltas, true;
    if (d == qf::LinkDirection::to_agent && e.has_config_delta()) return true;  // answers to pulls
    return d == qf::LinkDirection::to_agent && e.has_config_snapshot();
  };
  c.network.set_faults(faults);
  c.create_task(shell_task("late", "true", {"web"}, qf::v1::PLACEMENT_MODE_ALL));
  REQUIRE(c.run_until([&] { return c.coordinator->dispatcher().stats().pushes_failed == 1; }));
  CHECK(deltas == 4);  // the push and 3 re-pushes
  CHECK(c.coordinator->dispatcher().stats().repushes == 3);
  REQUIRE(c.run_until([&] { return c.agent_record("a1")->push_status().state() == qf::v1::CONFIG_PUSH_STATE_FAILED; }));
  const auto failed = c.agent_record("a1");
  CHECK(failed->push_status().error().find("no ConfigAck") != std::string::npos);
  // The network heals: the heartbeat shows the agent's stale version and it pulls.
  deaf = false;
  REQUIRE(c.run_until([&] {
    auto a = c.agent_record("a1");
    return a && a->push_status().state() == qf::v1::CONFIG_PUSH_STATE_IN_SYNC &&
           a->applied_config_version() == a->desired_config_version();
  }));
  CHECK(c.agents["a1"]->engine->config_version() == static_cast<std::uint64_t>(c.agent_record("a1")->desired_config_version()));
}

TEST_CASE("with 30% of results and acks dropped every run is stored exactly once", "[cluster]") {
  Cluster c;
  c.create_group("web");
  c.add_agent("a1", "web");
  c.add_agent("a2", "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  std::mt19937 random(42);
  bool lossy = true;
  qf::LinkFaults faults;
  faults.drop_if = [&](const qf::v1::Envelope& e, qf::LinkDirection) {
    const bool result = e.has_execution_result_batch() || e.has_sync_batch() || e.has_result_ack();
    return lossy && result && random() % 10 < 3;
  };
  c.network.set_faults(faults);
  c.create_task(shell_task("busy", "echo $QF_EXECUTION_ID", {"web"}, qf::v1::PLACEMENT_MODE_ALL, 1));
  c.run_for(4s);
  lossy = false;
  auto synced = [&] {
    qf::error_code ec;
    for (auto& [id, a] : c.agents)
      for (const auto& r : a->store->unsynced(1000, ec))
        if (qf::is_final(r.status())) return false;
    return true;
  };
  c.set_enabled("busy", false);
  REQUIRE(c.run_until(synced));
  // What each agent durably recorded (its store, not only the records it reported live:
  // a fire before its first config ACK is reported by the backlog sync).
  std::set<std::string> local;
  for (auto& [id, a] : c.agents) {
    qf::error_code ec;
    qf::ExecutionQuery query;
    query.task_id = "busy";
    for (const auto& r : a->store->executions(query, ec))
      if (qf::is_final(r.status())) local.insert(r.execution_id());
    REQUIRE_FALSE(ec);
  }
  const auto stored = c.executions("busy");
  std::set<std::string> remote;
  for (const auto& r : stored) remote.insert(r.execution_id());
  CHECK(remote.size() == stored.size());
  CHECK(remote == local);
  CHECK(local.size() >= 6);
  // Each run reached the coordinator's "changed" stream once, however often it was sent.
  std::map<std::string, int> seen;
  for (const auto& r : c.ingested)
    if (qf::is_final(r.status())) ++seen[r.execution_id()];
  for (const auto& [id, n] : seen) CHECK(n == 1);
}

TEST_CASE("after a coordinator restart owed fires follow the misfire policy", "[cluster]") {
  Cluster c;
  c.create_group("web");
  c.add_agent("a1", "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  auto task = shell_task("owed", "true", {"web"}, qf::v1::PLACEMENT_MODE_ONE, 1);
  task.set_misfire_policy(qf::v1::MISFIRE_POLICY_FIRE_ONCE);
  c.create_task(task);
  REQUIRE(c.run_until([&] { return c.count("owed", qf::v1::EXECUTION_STATUS_SUCCESS) >= 1; }));
  c.crash_coordinator();
  c.run_for(3s);  // the agent keeps trying to reconnect
  c.options.agent_grace = 3s;  // the agent is back well before; the next instant is 10 s away
  c.open_coordinator();
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  REQUIRE(c.run_until([&] {
    for (const auto& r : c.executions("owed"))
      if (r.trigger() == qf::v1::TRIGGER_TYPE_MISFIRE_CATCHUP && r.status() == qf::v1::EXECUTION_STATUS_SUCCESS)
        return true;
    return false;
  }));
  CHECK(c.count("owed", qf::v1::EXECUTION_STATUS_MISSED) >= 1);
  // Scheduling resumes after the catch-up.
  const auto successes = c.count("owed", qf::v1::EXECUTION_STATUS_SUCCESS);
  REQUIRE(c.run_until([&] { return c.count("owed", qf::v1::EXECUTION_STATUS_SUCCESS) > successes; }));
}

TEST_CASE("a fire recorded ahead of a coordinator stop runs after the restart, once", "[cluster]") {
  Cluster c;
  c.create_group("web");
  c.add_agent("a1", "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  const std::string ran = c.dir.file("ran.txt");
  auto task = shell_task("tick", "echo \"$QF_EXECUTION_ID\" >> '" + ran + "'", {"web"}, qf::v1::PLACEMENT_MODE_ONE);
  task.mutable_schedule()->set_cron("*/10 * * * * *");
  c.create_task(task);
  // Wait until the next fire is recorded PENDING ahead of its instant, then stop cleanly.
  std::string ahead;
  REQUIRE(c.run_until([&] {
    for (const auto& r : c.executions("tick"))
      if (r.status() == qf::v1::EXECUTION_STATUS_PENDING && r.scheduled_unix_ms() > now_unix_ms())
        ahead = r.execution_id();
    return !ahead.empty();
  }));
  const auto instant = c.execution(ahead)->scheduled_unix_ms();
  c.coordinator->stop();
  c.run_for(50ms);
  c.crash_coordinator();
  // Restart after the instant; the scheduler starts (after the agent's reconnect) before
  // the next one: fire_once runs the owed fire.
  c.run_for(std::chrono::milliseconds{std::max<std::int64_t>(0, instant - now_unix_ms() + 300)});
  c.options.agent_grace = 3s;  // the agent is back well before; the next instant is 10 s away
  c.open_coordinator();
  const bool reached = c.reaches(ahead, qf::v1::EXECUTION_STATUS_SUCCESS);
  for (const auto& r : c.executions("tick"))
    UNSCOPED_INFO(r.execution_id() << " " << qf::v1::ExecutionStatus_Name(r.status()) << " "
                                   << qf::v1::TriggerType_Name(r.trigger()) << " " << r.skip_detail());
  REQUIRE(reached);
  c.run_for(1s);
  std::map<std::string, int> runs;
  std::ifstream in(ran);
  for (std::string line; std::getline(in, line);) ++runs[line];
  CHECK(runs[ahead] == 1);
  for (const auto& [id, n] : runs) CHECK(n == 1);
  for (const auto& r : c.executions("tick")) CHECK(r.failure_reason() != "not dispatched");
}

TEST_CASE("group rules place agents at registration, a manual move pushes the new group's tasks", "[cluster]") {
  Cluster c;
  qf::v1::GroupMembership by_network;
  by_network.add_cidrs("10.0.0.0/8");
  c.create_group("dc1", by_network);
  qf::v1::GroupMembership by_label;
  (*by_label.add_label_selectors()->mutable_match_labels())["role"] = "db";
  c.create_group("databases", by_label);
  c.create_task(shell_task("db-backup", "echo backup", {"databases"}, qf::v1::PLACEMENT_MODE_ALL));
  c.add_agent("n1", "", {"10.1.2.3"});
  c.add_agent("n2", "", {"192.168.1.5"}, {{"role", "db"}});
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  CHECK(c.agent_record("n1")->group_id() == "dc1");
  CHECK(c.agent_record("n1")->group_assignment() == qf::v1::GROUP_ASSIGNMENT_RULE);
  CHECK(c.agent_record("n2")->group_id() == "databases");
  // n1 cannot run db-backup until it is moved.
  CHECK(c.trigger("db-backup").value.size() == 1);
  std::optional<qf::CatalogResult<std::uint64_t>> moved;
  c.coordinator->move_agents({"n1"}, "databases", qf::Actor{}, [&](auto r) { moved = std::move(r); });
  REQUIRE(c.run_until([&] { return moved.has_value(); }));
  REQUIRE(*moved);
  REQUIRE(c.run_until([&] {
    auto a = c.agent_record("n1");
    return a && a->applied_config_version() >= static_cast<std::int64_t>(moved->value);
  }));
  qf::error_code ec;
  CHECK(c.agents["n1"]->engine->trigger("db-backup", {}, ec).has_value());
  CHECK(c.trigger("db-backup").value.size() == 2);
}

TEST_CASE("a manual move survives the moved agent's heartbeats and push acks written around it", "[cluster]") {
  Cluster c;
  c.create_group("web");
  c.create_group("databases");
  c.create_task(shell_task("web-check", "echo web", {"web"}, qf::v1::PLACEMENT_MODE_ALL));
  c.create_task(shell_task("db-backup", "echo backup", {"databases"}, qf::v1::PLACEMENT_MODE_ALL));
  c.add_agent("n1", "web");
  c.add_agent("n2", "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  for (int round = 0; round < 4; ++round) {
    const std::string target = round % 2 == 0 ? "databases" : "web";
    const std::string other = round % 2 == 0 ? "web" : "databases";
    INFO("round " << round << ": n1 moved to " << target);
    // n1's heartbeat is held back and arrives while the move commits, before the
    // coordinator has reloaded the catalog: the session still holds the old group then.
    c.freeze("n1");
    c.run_for(1200ms);
    std::optional<qf::CatalogResult<std::uint64_t>> moved;
    c.coordinator->move_agents({"n1"}, target, qf::Actor{"tester", ""}, [&](auto r) { moved = std::move(r); });
    c.thaw("n1", 0ms);
    REQUIRE(c.run_until([&] { return moved.has_value(); }));
    REQUIRE(*moved);
    CHECK(c.run_until(
        [&] {
          auto a = c.agent_record("n1");
          return a && a->applied_config_version() >= static_cast<std::int64_t>(moved->value);
        },
        5s));
    c.run_for(1100ms);  // a heartbeat after the move is stored too
    const auto n1 = c.agent_record("n1");
    REQUIRE(n1);
    CHECK(n1->group_id() == target);
    CHECK(n1->group_assignment() == qf::v1::GROUP_ASSIGNMENT_MANUAL);
    qf::error_code ec;
    CHECK(c.agents["n1"]->engine->trigger(target == "web" ? "web-check" : "db-backup", {}, ec).has_value());
    CHECK_FALSE(c.agents["n1"]->engine->trigger(other == "web" ? "web-check" : "db-backup", {}, ec).has_value());
  }
  CHECK(c.agent_record("n2")->group_id() == "web");
}

TEST_CASE("a routed run is cancelled on its agent, a never-dispatched one in the store", "[cluster]") {
  Cluster c;
  c.create_group("web");
  c.add_agent("a1", "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  c.create_task(shell_task("sleepy", "sleep 30", {"web"}, qf::v1::PLACEMENT_MODE_ONE));
  const auto id = c.trigger("sleepy").value.at(0);
  REQUIRE(c.reaches(id, qf::v1::EXECUTION_STATUS_RUNNING));
  std::optional<qf::error_code> cancelled;
  c.coordinator->cancel(id, "test", qf::Actor{"alice", ""}, [&](qf::error_code ec) { cancelled = ec; });
  REQUIRE(c.run_until([&] { return cancelled.has_value(); }));
  CHECK_FALSE(*cancelled);
  REQUIRE(c.reaches(id, qf::v1::EXECUTION_STATUS_CANCELLED));
  CHECK(c.execution(id)->cancelled_by() == "alice");
  std::optional<qf::error_code> unknown;
  c.coordinator->cancel("nope:1", "test", qf::Actor{}, [&](qf::error_code ec) { unknown = ec; });
  REQUIRE(c.run_until([&] { return unknown.has_value(); }));
  CHECK(*unknown == qf::errc::not_found);
}

TEST_CASE("trigger refuses missing and unknown params naming them, next fires follow the schedule", "[cluster]") {
  Cluster c;
  c.create_group("web");
  auto task = shell_task("report", "echo $QF_PARAM_DAY", {"web"}, qf::v1::PLACEMENT_MODE_ONE);
  task.mutable_schedule()->set_cron("0 6 * * MON-FRI");
  task.mutable_schedule()->set_time_zone("Europe/Paris");
  auto* day = task.add_params();
  day->set_name("day");
  day->set_required(true);
  c.create_task(task);
  auto missing = c.trigger("report");
  CHECK(missing.ec == qf::errc::invalid_argument);
  CHECK(missing.error.field == "params.day");
  auto unknown = c.trigger("report", {{"day", "mon"}, {"color", "red"}});
  CHECK(unknown.error.field == "params.color");
  CHECK(c.trigger("nope").ec == qf::errc::not_found);
  qf::error_code ec;
  // Friday 2026-11-27 12:00 UTC: next are Monday, Tuesday, Wednesday 06:00 Paris (05:00 UTC).
  const auto fires = c.coordinator->next_fires("report", 3, qf::Instant{std::chrono::seconds{1795780800}}, ec);
  REQUIRE_FALSE(ec);
  REQUIRE(fires.size() == 3);
  CHECK(qf::format_rfc3339(fires[0]) == "2026-11-30T05:00:00Z");
  CHECK(qf::format_rfc3339(fires[1]) == "2026-12-01T05:00:00Z");
  CHECK(qf::format_rfc3339(fires[2]) == "2026-12-02T05:00:00Z");
  c.coordinator->next_fires("nope", 3, fires[0], ec);
  CHECK(ec == qf::errc::not_found);
}

TEST_CASE("the coordinator closes sessions that break the protocol and stores a re-sent result once", "[cluster]") {
  Cluster c;
  c.create_group("web");
  c.create_task(shell_task("t", "true", {"web"}, qf::v1::PLACEMENT_MODE_ALL));
  auto connector = c.network.connector("coordinator", "raw");
  struct Peer {
    std::shared_ptr<qf::Connection> connection;
    std::vector<qf::v1::Envelope> received;
    std::string closed;
  };
  auto open = [&] {
    auto peer = std::make_shared<Peer>();
    connector->connect([peer](qf::error_code, std::shared_ptr<qf::Connection> conn) {
      peer->connection = conn;
      std::weak_ptr<Peer> weak = peer;  // the connection must not own its peer (a cycle)
      conn->start({[weak](std::string m) {
                     qf::v1::Envelope e;
                     if (auto p = weak.lock(); p && e.ParseFromString(m)) p->received.push_back(e);
                   },
                   [weak](std::string why) {
                     if (auto p = weak.lock()) p->closed = why.empty() ? "closed" : why;
                   }});
    });
    REQUIRE(c.run_until([&] { return peer->connection != nullptr; }));
    return peer;
  };
  auto send = [](Peer& p, qf::v1::Envelope e, std::uint64_t id) {
    e.set_protocol_version(e.protocol_version() == 0 ? 1 : e.protocol_version());
    e.set_message_id(id);
    p.connection->send(e.SerializeAsString());
  };
  auto error_of = [](const Peer& p) {
    for (const auto& e : p.received)
      if (e.has_error()) return e.error().code();
    return qf::v1::PROTOCOL_ERROR_CODE_UNSPECIFIED;
  };

  auto garbage = open();
  garbage->connection->send(std::string("\xff\xff\xff not protobuf"));
  REQUIRE(c.run_until([&] { return !garbage->closed.empty(); }));
  CHECK(error_of(*garbage) == qf::v1::PROTOCOL_ERROR_CODE_MALFORMED);

  auto early = open();
  qf::v1::Envelope beat;
  beat.mutable_heartbeat();
  send(*early, beat, 1);
  REQUIRE(c.run_until([&] { return !early->closed.empty(); }));
  CHECK(error_of(*early) == qf::v1::PROTOCOL_ERROR_CODE_UNEXPECTED_MESSAGE);

  auto future = open();
  qf::v1::Envelope reg;
  reg.set_protocol_version(99);
  reg.mutable_register_request()->set_agent_id("raw");
  send(*future, reg, 1);
  REQUIRE(c.run_until([&] { return !future->closed.empty(); }));
  CHECK(error_of(*future) == qf::v1::PROTOCOL_ERROR_CODE_UNSUPPORTED_VERSION);

  auto agent = open();
  reg.set_protocol_version(1);
  reg.mutable_register_request()->set_config_group_id("web");
  send(*agent, reg, 1);
  REQUIRE(c.run_until([&] { return !agent->received.empty(); }));
  REQUIRE(agent->received[0].has_register_result());
  CHECK(agent->received[0].register_result().group_id() == "web");
  qf::v1::Envelope batch;
  auto* r = batch.mutable_execution_result_batch()->add_results();
  r->set_execution_id("t:1000:raw");
  r->set_task_id("t");
  r->set_status(qf::v1::EXECUTION_STATUS_SUCCESS);
  r->set_scheduled_unix_ms(1000);
  auto* bad = batch.mutable_execution_result_batch()->add_results();
  bad->set_execution_id("t:2000:raw");
  bad->set_task_id("t");  // no status
  send(*agent, batch, 2);
  send(*agent, batch, 3);
  auto acks = [&] {
    std::vector<qf::v1::ResultAck> out;
    for (const auto& e : agent->received)
      if (e.has_result_ack()) out.push_back(e.result_ack());
    return out;
  };
  REQUIRE(c.run_until([&] { return acks().size() == 2; }));
  for (const auto& ack : acks()) {
    REQUIRE(ack.execution_ids_size() == 1);
    CHECK(ack.execution_ids(0) == "t:1000:raw");
    REQUIRE(ack.rejected_size() == 1);
    CHECK(ack.rejected(0).reason() == "status: must be set");
  }
  CHECK(c.executions("t").size() == 1);
  CHECK(c.coordinator->dispatcher().stats().records_duplicate == 1);
  CHECK(agent->closed.empty());  // a bad record is refused alone, the session stays
}

TEST_CASE("runs left open by a crashed coordinator: RUNNING ones are lost, PENDING ones owed", "[cluster]") {
  const bool at_most_once = GENERATE(false, true);
  CAPTURE(at_most_once);
  Cluster c;
  c.create_group("web");
  c.add_agent("a1", "web");
  c.add_agent("a2", "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  auto task = shell_task("job", "sleep 1", {"web"}, qf::v1::PLACEMENT_MODE_ONE);
  task.mutable_placement()->set_routing(qf::v1::ROUTING_STRATEGY_CONSISTENT_HASH);
  task.set_delivery_guarantee(at_most_once ? qf::v1::DELIVERY_GUARANTEE_AT_MOST_ONCE
                                           : qf::v1::DELIVERY_GUARANTEE_AT_LEAST_ONCE);
  c.create_task(task);
  const auto running = c.trigger("job").value.at(0);
  REQUIRE(c.reaches(running, qf::v1::EXECUTION_STATUS_RUNNING));
  const std::string holder = c.execution(running)->agent_id();
  // The next run request never arrives: it stays PENDING when the coordinator dies.
  qf::LinkFaults faults;
  faults.drop_if = [](const qf::v1::Envelope& e, qf::LinkDirection) { return e.has_run_request(); };
  c.network.set_faults(faults);
  const auto pending = c.trigger("job").value.at(0);
  REQUIRE(c.execution(pending)->status() == qf::v1::EXECUTION_STATUS_PENDING);
  c.crash_coordinator();
  c.network.set_faults({});
  c.network.isolate(holder, true);  // the agent running the first run never comes back
  c.options.agent_grace = 1500ms;
  c.open_coordinator();
  REQUIRE(c.run_until([&] {
    auto a = c.execution(running);
    auto b = c.execution(pending);
    return a && b && qf::is_final(a->status()) && qf::is_final(b->status());
  }));
  CHECK(c.execution(running)->failure_reason() == "agent lost");
  if (at_most_once) {
    // It may have reached the agent that did not come back: never run a second time.
    CHECK(c.execution(pending)->status() == qf::v1::EXECUTION_STATUS_FAILURE);
    CHECK(c.execution(pending)->failure_reason() == "agent lost");
  } else {
    // It never started anywhere known: owed, it runs on the agent that is there.
    CHECK(c.execution(pending)->status() == qf::v1::EXECUTION_STATUS_SUCCESS);
    CHECK(c.execution(pending)->agent_id() != holder);
  }
}

TEST_CASE("a run of a task deleted while the coordinator was down is closed, not left PENDING", "[cluster]") {
  Cluster c;
  REQUIRE(c.two_agents_in("web"));
  c.create_task(shell_task("doomed", "true", {"web"}, qf::v1::PLACEMENT_MODE_ONE));
  qf::LinkFaults faults;
  faults.drop_if = [](const qf::v1::Envelope& e, qf::LinkDirection) { return e.has_run_request(); };
  c.network.set_faults(faults);
  const auto pending = c.trigger("doomed").value.at(0);
  // The task goes, then the coordinator dies before the run was answered.
  std::optional<qf::CatalogResult<std::uint64_t>> deleted;
  c.coordinator->delete_task("doomed", qf::Actor{}, [&](auto r) { deleted = std::move(r); });
  REQUIRE(c.run_until([&] { return deleted.has_value(); }));
  c.crash_coordinator();
  c.network.set_faults({});
  c.options.agent_grace = 500ms;
  c.open_coordinator();
  REQUIRE(c.run_until([&] {
    auto r = c.execution(pending);
    return r && qf::is_final(r->status());
  }));
  CHECK(c.execution(pending)->status() != qf::v1::EXECUTION_STATUS_PENDING);
}

TEST_CASE("agents converge on the catalog through lost pushes, updates and deletes", "[cluster]") {
  Cluster c;
  c.create_group("web");
  c.add_agent("a1", "web");
  REQUIRE(c.run_until([&] {
    auto a = c.all_connected() ? c.agent_record("a1") : std::nullopt;
    return a && a->push_status().state() == qf::v1::CONFIG_PUSH_STATE_IN_SYNC;
  }));
  int lost = 0;
  qf::LinkFaults faults;
  faults.drop_if = [&](const qf::v1::Envelope& e, qf::LinkDirection) {
    if (!e.has_config_delta() || lost > 0) return false;
    return ++lost, true;
  };
  c.network.set_faults(faults);
  c.create_task(shell_task("first", "true", {"web"}, qf::v1::PLACEMENT_MODE_ALL));  // its push is lost
  c.create_task(shell_task("second", "true", {"web"}, qf::v1::PLACEMENT_MODE_ALL));
  auto updated = shell_task("second", "echo v2", {"web"}, qf::v1::PLACEMENT_MODE_ALL);
  std::optional<qf::CatalogResult<qf::v1::Task>> update;
  c.coordinator->update_task(updated, false, qf::Actor{}, [&](auto r) { update = std::move(r); });
  REQUIRE(c.run_until([&] { return update.has_value(); }));
  REQUIRE(*update);
  c.create_task(shell_task("third", "true", {"web"}, qf::v1::PLACEMENT_MODE_ALL));
  std::optional<qf::CatalogResult<std::uint64_t>> removed;
  c.coordinator->delete_task("third", qf::Actor{}, [&](auto r) { removed = std::move(r); });
  REQUIRE(c.run_until([&] { return removed.has_value(); }));
  REQUIRE(c.run_until([&] {
    auto a = c.agent_record("a1");
    return a && a->applied_config_version() == static_cast<std::int64_t>(removed->value) &&
           a->push_status().state() == qf::v1::CONFIG_PUSH_STATE_IN_SYNC;
  }));
  CHECK(lost == 1);
  auto& engine = *c.agents["a1"]->engine;
  qf::error_code ec;
  CHECK(engine.trigger("first", {}, ec).has_value());
  const auto id = engine.trigger("second", {}, ec);
  REQUIRE(id);
  CHECK_FALSE(engine.trigger("third", {}, ec).has_value());
  REQUIRE(c.run_until([&] {
    for (const auto& r : c.agents["a1"]->finals)
      if (r.execution_id() == *id) return true;
    return false;
  }));
  for (const auto& r : c.agents["a1"]->finals)
    if (r.execution_id() == *id) CHECK(r.output() == "v2\n");
}

TEST_CASE("a run in progress while the coordinator restarts keeps its real result", "[cluster]") {
  Cluster c;
  c.create_group("web");
  c.add_agent("a1", "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  c.create_task(shell_task("steady", "sleep 1; echo finished", {"web"}, qf::v1::PLACEMENT_MODE_ONE));
  const auto id = c.trigger("steady").value.at(0);
  REQUIRE(c.reaches(id, qf::v1::EXECUTION_STATUS_RUNNING));
  c.coordinator->stop();  // a graceful stop: the agent is not lost
  c.crash_coordinator();
  c.run_for(300ms);
  c.options.agent_grace = 1500ms;
  c.open_coordinator();
  REQUIRE(c.run_until([&] {
    auto e = c.execution(id);
    return e && qf::is_final(e->status());
  }));
  CHECK(c.execution(id)->status() == qf::v1::EXECUTION_STATUS_SUCCESS);
  CHECK(c.execution(id)->output() == "finished\n");
}

TEST_CASE("random garbage from peers never disturbs the coordinator or other agents", "[cluster]") {
  Cluster c;
  c.create_group("web");
  c.add_agent("a1", "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  c.create_task(shell_task("still", "echo alive", {"web"}, qf::v1::PLACEMENT_MODE_ONE));
  std::mt19937_64 random(2026);
  std::vector<std::shared_ptr<qf::Connection>> peers;
  auto connector = c.network.connector("coordinator", "noise");
  for (int i = 0; i < 60; ++i) {
    connector->connect([&](qf::error_code ec, std::shared_ptr<qf::Connection> conn) {
      if (ec) return;
      conn->start({[](std::string) {}, [](std::string) {}});
      // Half register first, so garbage also reaches a registered session.
      if (i % 2 == 0) {
        qf::v1::Envelope reg;
        reg.set_protocol_version(1);
        reg.set_message_id(1);
        reg.mutable_register_request()->set_agent_id("noise-" + std::to_string(i));
        conn->send(reg.SerializeAsString());
      }
      for (int m = 0; m < 5; ++m) {
        std::string bytes(random() % 64, '\0');
        for (auto& b : bytes) b = static_cast<char>(random());
        if (m % 2 == 1) {  // a valid envelope with a random body field
          qf::v1::Envelope e;
          e.set_protocol_version(1);
          e.set_message_id(2 + m);
          for (auto& b : bytes) b = static_cast<char>('a' + static_cast<unsigned char>(b) % 26);
          e.mutable_execution_result_batch()->add_results()->set_execution_id(bytes);
          bytes = e.SerializeAsString();
        }
        conn->send(bytes);
      }
      peers.push_back(conn);
    });
    c.run_for(5ms);
  }
  c.run_for(500ms);
  CHECK(c.coordinator->dispatcher().stats().protocol_errors > 0);
  const auto r = c.trigger("still");
  REQUIRE_FALSE(r.ec);
  REQUIRE(c.reaches(r.value.at(0), qf::v1::EXECUTION_STATUS_SUCCESS));
  CHECK(c.execution(r.value.at(0))->agent_id() == "a1");
}

TEST_CASE("registering tasks one by one costs each agent work per task changed, not per task held", "[cluster]") {
  // Issue 12, defect 4: every config delta copied, validated and rebuilt every task an agent
  // held and saved its whole cache, so creating N tasks one by one cost O(N^2). Counted, not
  // timed: N creates may validate, build and write each task a small number of times.
  Cluster c;
  REQUIRE(c.two_agents_in("web"));
  constexpr std::size_t k_tasks = 300;
  for (std::size_t i = 0; i < k_tasks; ++i)
    c.create_task(shell_task(fmt::format("reg-{}", i), "true", {"web"}, qf::v1::PLACEMENT_MODE_ALL));
  REQUIRE(c.run_until([&] {
    for (auto& [id, a] : c.agents)
      if (a->engine->task_count() != k_tasks) return false;
    return true;
  }));
  c.run_for(300ms);  // the last caches are written
  for (auto& [id, a] : c.agents) {
    INFO(id);
    const auto& stats = a->engine->config_stats();
    CHECK(stats.deltas_applied >= 10);  // changes arrived as deltas (not one snapshot at the end)
    CHECK(stats.tasks_validated <= 2 * k_tasks);
    CHECK(stats.slots_built <= 2 * k_tasks);
    CHECK(a->store->metrics().config_rows_written <= 2 * k_tasks);
    qf::error_code ec;
    CHECK(a->store->cached_config(ec).tasks.size() == k_tasks);
  }
}

TEST_CASE("the full log of a run is read from its agent and its output is heard while it runs", "[cluster]") {
  Cluster c;
  c.create_group("web");
  c.add_agent("a1", "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  std::string heard;
  qf::CoordinatorObserver observer;
  observer.output = [&](const qf::v1::Execution& record, std::uint64_t offset, const std::string& delta) {
    CHECK(record.execution_id().starts_with("big:"));
    CHECK(offset == heard.size());
    heard += delta;
  };
  c.coordinator->observe(std::move(observer));
  c.create_task(shell_task("big", "seq 1 30000", {"web"}, qf::v1::PLACEMENT_MODE_ONE));
  const auto id = c.trigger("big").value.at(0);
  REQUIRE(c.reaches(id, qf::v1::EXECUTION_STATUS_SUCCESS));
  std::string expected;
  for (int i = 1; i <= 30000; ++i) expected += std::to_string(i) + "\n";
  const auto record = c.execution(id);
  CHECK(record->output_truncated());  // the record keeps the head only
  CHECK(record->output() == expected.substr(0, 10240));
  CHECK(heard == expected);  // every byte was streamed, before the final state
  std::optional<qf::v1::LogChunk> chunk;
  c.coordinator->dispatcher().fetch_log("a1", id, 100000, 5000, [&](qf::error_code ec, qf::v1::LogChunk answer) {
    CHECK_FALSE(ec);
    chunk = std::move(answer);
  });
  REQUIRE(c.run_until([&] { return chunk.has_value(); }));
  CHECK(chunk->error().empty());
  CHECK(chunk->chunk().data() == expected.substr(100000, 5000));
  CHECK(chunk->chunk().next_offset() == 105000);
  CHECK(chunk->chunk().total_bytes() == expected.size());
  CHECK_FALSE(chunk->chunk().eof());
  std::optional<qf::error_code> offline;
  c.coordinator->dispatcher().fetch_log("nobody", id, 0, 10, [&](qf::error_code ec, qf::v1::LogChunk) { offline = ec; });
  REQUIRE(c.run_until([&] { return offline.has_value(); }));
  CHECK(*offline == qf::errc::not_found);
}

TEST_CASE("output heard before a run's RUNNING reply leaves the run routed: it can be cancelled", "[cluster]") {
  Cluster c;
  c.create_group("web");
  c.add_agent("a1", "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  bool heard = false;
  qf::CoordinatorObserver observer;
  observer.output = [&](const qf::v1::Execution& record, std::uint64_t, const std::string&) {
    if (record.execution_id().starts_with("early:")) heard = true;
  };
  c.coordinator->observe(std::move(observer));
  // The agent's answers to the run request are lost until its output has reached the
  // coordinator (as when the engine holds RUNNING records through a burst of fires).
  qf::LinkFaults faults;
  int dropped = 0;
  faults.drop_if = [&](const qf::v1::Envelope& e, qf::LinkDirection d) {
    if (d != qf::LinkDirection::to_coordinator || !e.has_execution_update() || e.in_reply_to() == 0 ||
        !e.execution_update().execution().execution_id().starts_with("early:") || heard)
      return false;
    ++dropped;
    return true;
  };
  c.network.set_faults(faults);
  c.create_task(shell_task("early", "echo started; sleep 30", {"web"}, qf::v1::PLACEMENT_MODE_ONE));
  const auto id = c.trigger("early").value.at(0);
  REQUIRE(c.run_until([&] { return heard; }));
  REQUIRE(c.reaches(id, qf::v1::EXECUTION_STATUS_RUNNING));
  CHECK(dropped >= 1);
  CHECK(c.coordinator->dispatcher().held_by_online_agent(id));
  std::optional<qf::error_code> cancelled;
  c.coordinator->cancel(id, "test", qf::Actor{"alice", ""}, [&](qf::error_code ec) { cancelled = ec; });
  REQUIRE(c.run_until([&] { return cancelled.has_value(); }));
  CHECK_FALSE(*cancelled);
  CHECK(c.reaches(id, qf::v1::EXECUTION_STATUS_CANCELLED));
}

TEST_CASE("live output keeps the agent's raw byte offsets when it is not UTF-8", "[cluster]") {
  Cluster c;
  c.create_group("web");
  c.add_agent("a1", "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  struct Delta {
    std::uint64_t offset, next_offset;
    std::string data;
  };
  std::vector<Delta> heard;
  qf::CoordinatorObserver observer;
  observer.output = [&](const qf::v1::Execution& record, std::uint64_t offset, const std::string& delta) {
    heard.push_back({offset, record.output_bytes(), delta});
  };
  c.coordinator->observe(std::move(observer));
  // 4 raw bytes (one of them not UTF-8, sent as the 3 bytes of U+FFFD), then 2 more.
  c.create_task(shell_task("bin", "printf 'a\\377b\\n'; sleep 0.6; printf 'c\\n'", {"web"}, qf::v1::PLACEMENT_MODE_ONE));
  const auto id = c.trigger("bin").value.at(0);
  REQUIRE(c.reaches(id, qf::v1::EXECUTION_STATUS_SUCCESS));
  REQUIRE(heard.size() == 2);
  CHECK(heard[0].offset == 0);
  CHECK(heard[0].data == "a\xef\xbf\xbd" "b\n");
  CHECK(heard[0].next_offset == 4);
  CHECK(heard[1].offset == 4);  // where the agent's log goes on, not 6
  CHECK(heard[1].data == "c\n");
  CHECK(heard[1].next_offset == 6);
}

TEST_CASE("an agent's live output is taken only for runs its session holds or it fired itself", "[cluster]") {
  Cluster c;
  c.create_group("web");
  c.add_agent("a1", "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  std::vector<std::string> heard;
  qf::CoordinatorObserver observer;
  observer.output = [&](const qf::v1::Execution& record, std::uint64_t, const std::string& delta) {
    heard.push_back(record.execution_id() + "=" + delta + "@" + record.agent_id());
  };
  c.coordinator->observe(std::move(observer));
  c.create_task(shell_task("victim", "sleep 30", {"web"}, qf::v1::PLACEMENT_MODE_ONE));
  const auto victim = c.trigger("victim").value.at(0);
  REQUIRE(c.reaches(victim, qf::v1::EXECUTION_STATUS_RUNNING));
  // A second agent (a raw peer) writes into a1's run, then into one of its own.
  std::shared_ptr<qf::Connection> raw;
  std::vector<qf::v1::Envelope> received;
  c.network.connector("coordinator", "raw")->connect([&](qf::error_code, std::shared_ptr<qf::Connection> conn) {
    raw = conn;
    conn->start({[&received](std::string m) {
                   qf::v1::Envelope e;
                   if (e.ParseFromString(m)) received.push_back(e);
                 },
                 [](std::string) {}});
  });
  REQUIRE(c.run_until([&] { return raw != nullptr; }));
  std::uint64_t message_id = 0;
  auto send = [&](qf::v1::Envelope e) {
    e.set_protocol_version(1);
    e.set_message_id(++message_id);
    raw->send(e.SerializeAsString());
  };
  qf::v1::Envelope reg;
  reg.mutable_register_request()->set_agent_id("raw");
  reg.mutable_register_request()->set_config_group_id("web");
  send(reg);
  REQUIRE(c.run_until([&] { return !received.empty(); }));
  REQUIRE(received[0].has_register_result());
  auto output = [&](const std::string& id, const std::string& text) {
    qf::v1::Envelope e;
    e.mutable_execution_update()->mutable_execution()->set_execution_id(id);
    e.mutable_execution_update()->set_output_delta(text);
    send(e);
  };
  output(victim, "forged\n");
  output("victim:1000:raw", "mine\n");
  REQUIRE(c.run_until([&] { return heard.size() >= 1 && c.coordinator->dispatcher().stats().output_refused >= 1; }));
  c.run_for(200ms);
  CHECK(heard == std::vector<std::string>{"victim:1000:raw=mine\n@raw"});
  CHECK(c.coordinator->dispatcher().stats().output_refused == 1);
}

TEST_CASE("an agent streams a run's live output at a bounded rate even when nobody follows", "[cluster]") {
  Cluster c;
  c.create_group("web");
  c.add_agent("a1", "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  std::size_t heard = 0;
  qf::CoordinatorObserver observer;
  observer.output = [&](const qf::v1::Execution&, std::uint64_t, const std::string& delta) { heard += delta.size(); };
  c.coordinator->observe(std::move(observer));
  // `yes` for 2 s prints far more than the 256 KiB per run and 200 ms the agent streams.
  c.create_task(shell_task("flood", "timeout 2 yes; true", {"web"}, qf::v1::PLACEMENT_MODE_ONE));
  const auto id = c.trigger("flood").value.at(0);
  REQUIRE(c.reaches(id, qf::v1::EXECUTION_STATUS_SUCCESS, 20s));
  INFO("heard " << heard << " bytes");
  CHECK(heard > 0);
  // 2 s at 256 KiB per 200 ms flush, the last flush and the rest at the final state.
  CHECK(heard <= std::size_t{14} * 256 * 1024 + (1 << 20));
}
