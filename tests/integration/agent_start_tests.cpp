// SPDX-License-Identifier: Apache-2.0
// Agent-start tasks (cron's `@reboot`) through a coordinator: pushed like any `all` task, run
// by each agent when it starts, not when it reconnects; refused for routed placements.
#include <set>

#include "cluster.hpp"

namespace qf = quartzflow;
using namespace std::chrono_literals;
using qf::testing::Cluster;
using qf::testing::shell_task;

namespace {

qf::v1::Task boot_task() {
  auto task = shell_task("boot", "echo \"booted on $QF_AGENT_ID ($QF_HOSTNAME)\"", {"web"}, qf::v1::PLACEMENT_MODE_ALL);
  task.mutable_schedule()->mutable_agent_start();
  return task;
}

/// The agent process stops (records flushed, session closed) and starts again on its store.
void restart_agent(Cluster& c, const std::string& id, const std::string& group) {
  auto& node = *c.agents.at(id);
  node.dispatcher->stop();
  bool stopped = false;
  node.engine->stop(0s, [&] { stopped = true; });
  REQUIRE(c.run_until([&] { return stopped; }));
  c.agents.erase(id);
  c.run_for(100ms);
  c.add_agent(id, group);
}

}  // namespace

TEST_CASE("an agent-start task runs when an agent starts, again when it restarts, not when it reconnects",
          "[cluster][agent_start]") {
  Cluster c;
  c.create_group("web");
  c.create_task(boot_task());
  // A first start: nothing cached, the task comes with the first configuration.
  c.add_agent("a1", "web");
  REQUIRE(c.run_until([&] { return c.count("boot", qf::v1::EXECUTION_STATUS_SUCCESS) == 1; }));
  const auto first = c.executions("boot").front();
  CHECK(first.trigger() == qf::v1::TRIGGER_TYPE_SCHEDULED);
  const auto stored = c.execution(first.execution_id());
  REQUIRE(stored);
  CHECK(stored->output() == "booted on a1 (a1.example)\n");

  // The coordinator goes away and comes back: the agent reconnects and is sent its
  // configuration again; nothing runs.
  c.crash_coordinator();
  c.run_for(500ms);
  c.open_coordinator();
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  c.run_for(1500ms);
  CHECK(c.count("boot", qf::v1::EXECUTION_STATUS_SUCCESS) == 1);
  CHECK(c.agents.at("a1")->finals.size() == 1);

  // The agent restarts: it runs the task again from its cached configuration.
  restart_agent(c, "a1", "web");
  REQUIRE(c.run_until([&] { return c.count("boot", qf::v1::EXECUTION_STATUS_SUCCESS) == 2; }));
  c.run_for(1s);
  CHECK(c.count("boot", qf::v1::EXECUTION_STATUS_SUCCESS) == 2);
  std::set<std::string> ids;
  for (const auto& r : c.executions("boot")) ids.insert(r.execution_id());
  CHECK(ids.size() == 2);
}

TEST_CASE("the coordinator refuses an agent-start task with a routed placement, naming the field",
          "[cluster][agent_start]") {
  Cluster c;
  c.create_group("web");
  auto task = boot_task();
  task.mutable_placement()->set_mode(qf::v1::PLACEMENT_MODE_ONE);
  std::optional<qf::CatalogResult<qf::v1::Task>> result;
  c.coordinator->create_task(task, qf::Actor{}, [&](qf::CatalogResult<qf::v1::Task> r) { result = std::move(r); });
  REQUIRE(c.run_until([&] { return result.has_value(); }));
  REQUIRE_FALSE(*result);
  CHECK(result->error.field == "schedule.agent_start");
}
