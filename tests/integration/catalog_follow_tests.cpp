// SPDX-License-Identifier: Apache-2.0
// Two coordinators on one store file: what one commits to the catalog reaches the other's
// scheduler, agents and observers within a bounded time, and each change applies once.
#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cluster.hpp"
#include "two_coordinators.hpp"

namespace qf = quartzflow;
using namespace std::chrono_literals;
using qf::testing::Cluster;
using qf::testing::shell_task;

namespace {

constexpr auto k_poll = 100ms;
/// Poll interval, a read and the push to the agent, with room for a loaded machine.
constexpr auto k_bound = 3s;

/// Coordinator A (Cluster's, the agents connect to it) and coordinator B on the same SQLite
/// file, each with its own store connection, both following the catalog. B never fires:
/// its grace outlasts the test, as a standby's scheduler would not run.
struct TwoCoordinators {
  Cluster c;
  std::unique_ptr<qf::Store> store_b;
  std::unique_ptr<qf::Coordinator> b;
  /// Task changes A's observers heard: "<action> <task>" -> times.
  std::map<std::string, int> a_events;
  std::string dsn;  ///< the PostgreSQL database, when on PostgreSQL

  /// `postgres`: both on one database of the tests' PostgreSQL server instead of the file.
  explicit TwoCoordinators(std::chrono::milliseconds poll = k_poll, bool postgres = false) {
    c.crash_coordinator();
    c.options.catalog_poll_interval = poll;
    dsn = qf::testing::open_coordinator_a(c, postgres);
    qf::CoordinatorObserver observer;
    observer.task_changed = [this](const qf::v1::Task*, const std::string& id, qf::v1::TaskChangeAction action,
                                   const qf::Actor&) {
      ++a_events[fmt::format("{} {}", qf::v1::TaskChangeAction_Name(action), id)];
    };
    c.coordinator->observe(std::move(observer));
    store_b = qf::testing::open_second_store(c, dsn);
    auto options = c.options;
    options.agent_grace = 1h;
    options.dispatcher.coordinator_id = "coordinator-b";
    b = qf::testing::start_second_coordinator(c, *store_b, options);
  }

  ~TwoCoordinators() {
    if (b) b->stop();
    c.io.poll();
  }

  template <typename Result, typename Call>
  Result call(Call&& start) {
    std::optional<Result> result;
    start([&](Result r) { result = std::move(r); });
    REQUIRE(c.run_until([&] { return result.has_value(); }));
    INFO(result->error.message());
    REQUIRE(*result);
    return std::move(*result);
  }

  qf::v1::Task create_on(qf::Coordinator& on, qf::v1::Task task) {
    return call<qf::CatalogResult<qf::v1::Task>>([&](auto done) {
             on.create_task(std::move(task), qf::Actor{"tester", ""}, std::move(done));
           })
        .value;
  }

  /// Waits for `reached`; fails past the bound, and says how long it took.
  bool within_bound(const std::function<bool()>& reached) {
    const auto began = std::chrono::steady_clock::now();
    const bool ok = c.run_until(reached, k_bound);
    INFO("took "
         << std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - began).count()
         << " ms");
    CHECK(ok);
    return ok;
  }

  std::size_t successes(const std::string& task_id) { return c.count(task_id, qf::v1::EXECUTION_STATUS_SUCCESS); }

  /// Agent "a1" of group "web", connected to A.
  qf::testing::AgentNode& add_web_agent() {
    c.create_group("web");
    auto& agent = c.add_agent("a1", "web");
    REQUIRE(c.run_until([&] { return c.all_connected(); }));
    return agent;
  }
};

}  // namespace

TEST_CASE("tasks created, updated, disabled and deleted through coordinator B reach coordinator A and its agent",
          "[catalog_follow][cluster]") {
  QUARTZFLOW_FOR_EACH_STORE();
  TwoCoordinators t{k_poll, postgres};
  auto& c = t.c;
  auto& a = *c.coordinator;
  auto& agent = t.add_web_agent();
  const auto scheduled_before = a.scheduler().scheduled_count();

  // Created on B: A's scheduler plans it and routes its fires to A's agent.
  const auto routed = t.create_on(*t.b, shell_task("routed", "true", {"web"}, qf::v1::PLACEMENT_MODE_ONE, 1));
  REQUIRE(t.within_bound([&] { return a.scheduler().next_fire("routed").has_value(); }));
  CHECK(a.scheduler().scheduled_count() == scheduled_before + 1);
  REQUIRE(t.within_bound([&] { return agent.engine->config_version() >= std::uint64_t(routed.config_version()); }));
  REQUIRE(c.run_until([&] { return t.successes("routed") >= 1; }, 5s));
  for (const auto& r : c.executions("routed")) CHECK(r.agent_id() == "a1");

  // An `all` task created on B: the agent holds it and runs it.
  const auto local = t.create_on(*t.b, shell_task("local", "true", {"web"}, qf::v1::PLACEMENT_MODE_ALL, 1));
  REQUIRE(t.within_bound([&] { return agent.engine->config_version() >= std::uint64_t(local.config_version()); }));
  CHECK(agent.engine->task_count() == 2);
  REQUIRE(c.run_until([&] { return t.successes("local") >= 1; }, 5s));

  // Updated on B: A re-plans from the new schedule (once a year, at 00:00 UTC on 1 January).
  auto yearly = routed;
  qf::clear_output_fields(yearly);
  yearly.mutable_schedule()->set_cron("0 0 1 1 *");
  const auto updated = t.call<qf::CatalogResult<qf::v1::Task>>([&](auto done) {
                          t.b->update_task(yearly, true, qf::Actor{"tester", ""}, std::move(done));
                        }).value;
  qf::error_code ec;
  const auto new_year =
      t.b->next_fires("routed", 1, std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()), ec);
  REQUIRE(new_year.size() == 1);
  REQUIRE(t.within_bound([&] { return a.scheduler().next_fire("routed") == std::optional<qf::Instant>(new_year[0]); }));
  CHECK(a.dispatcher().task("routed")->revision() == updated.revision());

  // Disabled on B: the agent stops running it.
  const auto disabled = t.call<qf::CatalogResult<qf::v1::Task>>([&](auto done) {
                           t.b->set_task_enabled("local", false, qf::Actor{"tester", ""}, std::move(done));
                         }).value;
  REQUIRE(t.within_bound([&] { return agent.engine->config_version() >= std::uint64_t(disabled.config_version()); }));
  CHECK_FALSE(a.dispatcher().task("local")->enabled());
  c.run_for(300ms);  // a run started before the change may still end
  // Counted where they end, on the agent: the store may still receive a record that ended before.
  const auto local_runs = [&] {
    return std::count_if(agent.finals.begin(), agent.finals.end(),
                         [](const qf::v1::Execution& r) { return r.task_id() == "local"; });
  };
  const auto ended_before = local_runs();
  c.run_for(2500ms);
  CHECK(local_runs() == ended_before);

  // Deleted on B: gone from A's scheduler, its dispatcher and the agent.
  const auto deleted_at = t.call<qf::CatalogResult<std::uint64_t>>([&](auto done) {
                             t.b->delete_task("routed", qf::Actor{"tester", ""}, std::move(done));
                           }).value;
  REQUIRE(t.within_bound([&] { return !a.scheduler().next_fire("routed").has_value(); }));
  CHECK(a.scheduler().scheduled_count() == scheduled_before);
  CHECK_FALSE(a.dispatcher().task("routed").has_value());
  REQUIRE(t.within_bound([&] { return agent.engine->config_version() >= deleted_at; }));
  CHECK(agent.engine->task_count() == 1);

  // A's observers heard each change once.
  c.run_for(4 * k_poll);
  CHECK(t.a_events == std::map<std::string, int>{{"TASK_CHANGE_ACTION_CREATED routed", 1},
                                                 {"TASK_CHANGE_ACTION_CREATED local", 1},
                                                 {"TASK_CHANGE_ACTION_UPDATED routed", 1},
                                                 {"TASK_CHANGE_ACTION_DISABLED local", 1},
                                                 {"TASK_CHANGE_ACTION_DELETED routed", 1}});
}

TEST_CASE("groups and agent moves made through coordinator B reach coordinator A's agents",
          "[catalog_follow][cluster]") {
  QUARTZFLOW_FOR_EACH_STORE();
  TwoCoordinators t{k_poll, postgres};
  auto& c = t.c;
  auto& agent = t.add_web_agent();

  qf::v1::Group batch;
  batch.set_id("batch");
  batch.set_name("batch");
  t.call<qf::CatalogResult<qf::v1::Group>>([&](auto done) {
    t.b->create_group(batch, qf::Actor{"tester", ""}, std::move(done));
  });
  t.create_on(*t.b, shell_task("nightly", "true", {"batch"}, qf::v1::PLACEMENT_MODE_ALL, 1));
  c.run_for(3 * k_poll);
  CHECK(agent.engine->task_count() == 0);  // not of its group yet

  const auto moved_at = t.call<qf::CatalogResult<std::uint64_t>>([&](auto done) {
                           t.b->move_agents({"a1"}, "batch", qf::Actor{"tester", ""}, std::move(done));
                         }).value;
  REQUIRE(
      t.within_bound([&] { return agent.engine->config_version() >= moved_at && agent.engine->task_count() == 1; }));
  REQUIRE(c.run_until([&] { return t.successes("nightly") >= 1; }, 5s));
  for (const auto& r : c.executions("nightly")) CHECK(r.group_id() == "batch");
  const auto record = c.agent_record("a1");
  REQUIRE(record);
  CHECK(record->group_id() == "batch");

  // A group whose rule B adds places an agent that registers with A afterwards: A resolves
  // membership from the groups it follows.
  qf::v1::Group ops;
  ops.set_id("ops");
  ops.set_name("ops");
  ops.mutable_membership()->add_hostname_globs("ops-*");
  t.call<qf::CatalogResult<qf::v1::Group>>([&](auto done) {
    t.b->create_group(ops, qf::Actor{"tester", ""}, std::move(done));
  });
  c.run_for(4 * k_poll);
  c.add_agent("ops-1");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  const auto ops_record = c.agent_record("ops-1");
  REQUIRE(ops_record);
  CHECK(ops_record->group_id() == "ops");
  CHECK(ops_record->group_assignment() == qf::v1::GROUP_ASSIGNMENT_RULE);
}

TEST_CASE("a change made on coordinator A is applied once on A while A follows the store",
          "[catalog_follow][cluster]") {
  QUARTZFLOW_FOR_EACH_STORE();
  TwoCoordinators t{k_poll, postgres};
  auto& c = t.c;
  auto& agent = t.add_web_agent();
  c.run_for(3 * k_poll);
  auto& a = *c.coordinator;
  const auto& stats = a.dispatcher().stats();
  const auto pushes_before = stats.pushes_sent - stats.repushes;

  const auto task = t.create_on(a, shell_task("mine", "true", {"web"}, qf::v1::PLACEMENT_MODE_ONE, 1));
  REQUIRE(c.run_until([&] { return agent.engine->config_version() >= std::uint64_t(task.config_version()); }));
  c.run_for(5 * k_poll);  // the follower's polls see the version this process committed
  CHECK(stats.pushes_sent - stats.repushes == pushes_before + 1);
  CHECK(t.a_events == std::map<std::string, int>{{"TASK_CHANGE_ACTION_CREATED mine", 1}});
  CHECK(a.scheduler().next_fire("mine").has_value());

  // Then B changes it, then A again: each once, the newest state wins on both.
  t.call<qf::CatalogResult<qf::v1::Task>>([&](auto done) {
    t.b->set_task_enabled("mine", false, qf::Actor{"tester", ""}, std::move(done));
  });
  REQUIRE(t.within_bound([&] { return !a.scheduler().next_fire("mine").has_value(); }));
  const auto enabled = t.call<qf::CatalogResult<qf::v1::Task>>([&](auto done) {
                          a.set_task_enabled("mine", true, qf::Actor{"tester", ""}, std::move(done));
                        }).value;
  CHECK(a.scheduler().next_fire("mine").has_value());
  REQUIRE(t.within_bound([&] { return t.b->dispatcher().task("mine") && t.b->dispatcher().task("mine")->enabled(); }));
  c.run_for(5 * k_poll);
  CHECK(t.b->dispatcher().task("mine")->revision() == enabled.revision());
  CHECK(t.a_events == std::map<std::string, int>{{"TASK_CHANGE_ACTION_CREATED mine", 1},
                                                 {"TASK_CHANGE_ACTION_DISABLED mine", 1},
                                                 {"TASK_CHANGE_ACTION_ENABLED mine", 1}});
}

TEST_CASE("with catalog_poll_interval 0 a coordinator does not follow the store", "[catalog_follow][cluster]") {
  TwoCoordinators t{0ms};
  auto task = shell_task("unseen", "true", {}, qf::v1::PLACEMENT_MODE_ONE, 1);
  task.set_all_agents(true);
  t.create_on(*t.b, task);
  t.c.run_for(1s);
  CHECK_FALSE(t.c.coordinator->dispatcher().task("unseen").has_value());
  CHECK(t.a_events.empty());
}
