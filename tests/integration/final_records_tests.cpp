// SPDX-License-Identifier: Apache-2.0
// Every final record reaches the coordinator's observers once, whoever made it: MISSED
// fires after a restart and SKIPPED fires without an agent (made by the scheduler), a
// SKIPPED overlap (made by the agent and synced), a cancel of a run never sent; a standby
// hears of none (what the metrics count: nothing counted twice over two coordinators).
#include <map>
#include <set>

#include "two_coordinators.hpp"

namespace qf = quartzflow;
using namespace std::chrono_literals;
using qf::testing::Cluster;
using qf::testing::shell_task;

namespace {

/// Final records the observers heard of, by execution id (how often each).
std::map<std::string, int> observed_finals(const Cluster& c) {
  std::map<std::string, int> out;
  for (const auto& r : c.ingested)
    if (qf::is_final(r.status())) ++out[r.execution_id()];
  return out;
}

/// Checks each final record of `task_id` in the store was observed exactly once, with the
/// stored status and reason.
void check_each_final_observed_once(Cluster& c, const std::string& task_id) {
  const auto seen = observed_finals(c);
  for (const auto& stored : c.executions(task_id)) {
    if (!qf::is_final(stored.status())) continue;
    INFO(stored.execution_id() << " " << qf::v1::ExecutionStatus_Name(stored.status()));
    const auto it = seen.find(stored.execution_id());
    REQUIRE(it != seen.end());
    CHECK(it->second == 1);
    for (const auto& r : c.ingested) {
      if (r.execution_id() != stored.execution_id() || !qf::is_final(r.status())) continue;
      CHECK(r.status() == stored.status());
      CHECK(r.skip_reason() == stored.skip_reason());
    }
  }
}

}  // namespace

TEST_CASE("MISSED fires of a restart reach the observers once each, with reason misfire", "[cluster][observers]") {
  Cluster c;
  c.create_group("web");
  c.add_agent("a1", "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  auto task = shell_task("owed", "true", {"web"}, qf::v1::PLACEMENT_MODE_ONE, 1);
  task.set_misfire_policy(qf::v1::MISFIRE_POLICY_SKIP);
  c.create_task(task);
  REQUIRE(c.run_until([&] { return c.count("owed", qf::v1::EXECUTION_STATUS_SUCCESS) >= 1; }));
  c.crash_coordinator();
  c.run_for(3s);         // about three fires owed
  c.open_coordinator();  // its observer adds to the same list as the first one's
  REQUIRE(c.run_until([&] { return c.count("owed", qf::v1::EXECUTION_STATUS_MISSED) >= 2; }));
  c.run_for(500ms);  // anything observed twice would show by now
  std::size_t missed = 0;
  for (const auto& r : c.ingested) {
    if (r.status() != qf::v1::EXECUTION_STATUS_MISSED) continue;
    ++missed;
    CHECK(r.skip_reason() == qf::v1::SKIP_REASON_MISFIRE);
    CHECK(r.task_id() == "owed");
  }
  CHECK(missed == c.count("owed", qf::v1::EXECUTION_STATUS_MISSED));
  check_each_final_observed_once(c, "owed");
}

TEST_CASE("a fire without an online agent is observed once as SKIPPED no_agent, not as a failure",
          "[cluster][observers]") {
  Cluster c;
  c.create_group("empty");
  c.create_task(shell_task("lonely", "true", {"empty"}, qf::v1::PLACEMENT_MODE_ONE));
  const auto ids = c.trigger("lonely").value;
  REQUIRE(ids.size() == 1);
  REQUIRE(c.reaches(ids[0], qf::v1::EXECUTION_STATUS_SKIPPED));
  REQUIRE(c.run_until([&] { return observed_finals(c).count(ids[0]) == 1; }));
  c.run_for(300ms);
  CHECK(observed_finals(c).at(ids[0]) == 1);
  for (const auto& r : c.ingested)
    if (r.execution_id() == ids[0]) CHECK(r.skip_reason() == qf::v1::SKIP_REASON_NO_AGENT);
  check_each_final_observed_once(c, "lonely");
}

TEST_CASE("an overlap SKIPPED made by the agent is observed once after its sync", "[cluster][observers]") {
  Cluster c;
  c.create_group("web");
  c.add_agent("a1", "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  auto task = shell_task("busy", "sleep 1", {"web"}, qf::v1::PLACEMENT_MODE_ONE);
  task.set_max_concurrent_runs(1);
  task.set_overlap_policy(qf::v1::OVERLAP_POLICY_SKIP);
  c.create_task(task);
  const auto first = c.trigger("busy").value.at(0);
  REQUIRE(c.reaches(first, qf::v1::EXECUTION_STATUS_RUNNING));
  const auto second = c.trigger("busy").value.at(0);
  REQUIRE(c.reaches(second, qf::v1::EXECUTION_STATUS_SKIPPED));
  REQUIRE(c.reaches(first, qf::v1::EXECUTION_STATUS_SUCCESS));
  c.run_for(500ms);
  const auto seen = observed_finals(c);
  CHECK(seen.at(first) == 1);
  CHECK(seen.at(second) == 1);
  for (const auto& r : c.ingested)
    if (r.execution_id() == second) {
      CHECK(r.status() == qf::v1::EXECUTION_STATUS_SKIPPED);
      CHECK(r.skip_reason() == qf::v1::SKIP_REASON_OVERLAP);
    }
  check_each_final_observed_once(c, "busy");
}

TEST_CASE("a run cancelled before it was sent is observed once as CANCELLED", "[cluster][observers]") {
  Cluster c;
  c.create_group("web");
  c.add_agent("a1", "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  auto task = shell_task("later", "true", {"web"}, qf::v1::PLACEMENT_MODE_ONE);
  task.mutable_schedule()->set_cron("0 0 0 1 1 *");  // far away: nothing fires during the test
  c.create_task(task);
  // A PENDING record nobody holds, as a previous coordinator leaves one.
  qf::v1::Execution pending;
  pending.set_execution_id("later:1000");
  pending.set_task_id("later");
  pending.set_status(qf::v1::EXECUTION_STATUS_PENDING);
  pending.set_scheduled_unix_ms(1000);
  bool stored = false;
  c.store->transact([&](qf::StoreTransaction& tx, qf::error_code&) { tx.upsert_execution(pending); },
                    [&](qf::error_code ec) { stored = !ec; });
  REQUIRE(c.run_until([&] { return stored; }));
  std::optional<qf::error_code> cancelled;
  c.coordinator->cancel("later:1000", "not needed", qf::Actor{"alice", ""}, [&](qf::error_code ec) { cancelled = ec; });
  REQUIRE(c.run_until([&] { return cancelled.has_value(); }));
  REQUIRE_FALSE(*cancelled);
  c.run_for(200ms);
  const auto seen = observed_finals(c);
  REQUIRE(seen.count("later:1000") == 1);
  CHECK(seen.at("later:1000") == 1);
  CHECK(c.execution("later:1000")->status() == qf::v1::EXECUTION_STATUS_CANCELLED);
  // Cancelling it again changes nothing and tells nobody.
  std::optional<qf::error_code> again;
  c.coordinator->cancel("later:1000", "twice", qf::Actor{"alice", ""}, [&](qf::error_code ec) { again = ec; });
  REQUIRE(c.run_until([&] { return again.has_value(); }));
  CHECK(*again == qf::errc::conflict);
  c.run_for(100ms);
  CHECK(observed_finals(c).at("later:1000") == 1);
}

TEST_CASE("a standby's execution observers hear of no run, the leader's of each final state once",
          "[cluster][observers]") {
  Cluster c;
  c.crash_coordinator();
  c.options.cluster.lease_ttl = 600ms;
  c.options.catalog_poll_interval = 100ms;
  qf::testing::open_coordinator_a(c, false);
  REQUIRE(c.coordinator->leading());
  auto store_b = qf::testing::open_second_store(c, {});
  auto options = c.options;
  options.cluster.coordinator_id = "coordinator-b";
  auto b = qf::testing::start_second_coordinator(c, *store_b, options);
  std::vector<qf::v1::Execution> heard_by_standby;
  b->on_execution([&](const qf::v1::Execution& r) { heard_by_standby.push_back(r); });
  c.create_group("web");
  c.create_group("empty");
  c.add_agent("a1", "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  c.create_task(shell_task("tick", "true", {"web"}, qf::v1::PLACEMENT_MODE_ONE, 1));
  c.create_task(shell_task("lonely", "true", {"empty"}, qf::v1::PLACEMENT_MODE_ONE));
  const auto skipped = c.trigger("lonely").value.at(0);
  REQUIRE(c.run_until([&] { return c.count("tick", qf::v1::EXECUTION_STATUS_SUCCESS) >= 3; }));
  REQUIRE(c.reaches(skipped, qf::v1::EXECUTION_STATUS_SKIPPED));
  c.run_for(500ms);
  CHECK_FALSE(b->leading());
  CHECK(heard_by_standby.empty());
  check_each_final_observed_once(c, "tick");
  check_each_final_observed_once(c, "lonely");
  b->stop();
  c.io.poll();
}
