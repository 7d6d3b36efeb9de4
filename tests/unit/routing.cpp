// SPDX-License-Identifier: Apache-2.0
// Routing strategies and shard splits.
#include <map>
#include <set>

#include <catch2/catch.hpp>

#include <quartzflow/routing.hpp>

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;

namespace {

v1::Task task_with(v1::RoutingStrategy strategy) {
  v1::Task t;
  t.set_id("t");
  t.mutable_placement()->set_mode(v1::PLACEMENT_MODE_ONE);
  t.mutable_placement()->set_routing(strategy);
  return t;
}

std::vector<qf::AgentLoad> agents(std::initializer_list<const char*> ids) {
  std::vector<qf::AgentLoad> out;
  for (const char* id : ids) out.push_back({id, 0});
  return out;
}

}  // namespace

TEST_CASE("round-robin cycles through the agents and lists the rest for failover", "[routing]") {
  qf::Router router;
  const auto task = task_with(v1::ROUTING_STRATEGY_ROUND_ROBIN);
  std::vector<std::string> firsts;
  for (int i = 0; i < 6; ++i) {
    const auto order = router.route(task, agents({"c", "a", "b"}));
    REQUIRE(order.size() == 3);
    firsts.push_back(order.front());
    CHECK(std::set<std::string>(order.begin(), order.end()).size() == 3);
  }
  CHECK(firsts == std::vector<std::string>{"a", "b", "c", "a", "b", "c"});
  CHECK(router.route(task, {}).empty());
}

TEST_CASE("least-busy picks the agent with the fewest runs", "[routing]") {
  qf::Router router;
  const auto order = router.route(task_with(v1::ROUTING_STRATEGY_LEAST_BUSY), {{"a", 5}, {"b", 1}, {"c", 3}});
  CHECK(order == std::vector<std::string>{"b", "c", "a"});
}

TEST_CASE("random spreads runs over every agent", "[routing]") {
  qf::Router router(42);
  std::map<std::string, int> counts;
  for (int i = 0; i < 3000; ++i) ++counts[router.route(task_with(v1::ROUTING_STRATEGY_RANDOM), agents({"a", "b", "c"})).front()];
  REQUIRE(counts.size() == 3);
  for (auto& [id, n] : counts) CHECK(n > 800);
}

TEST_CASE("consistent hashing is stable and moves only the keys of a lost agent", "[routing]") {
  qf::Router router;
  const auto task = task_with(v1::ROUTING_STRATEGY_CONSISTENT_HASH);
  std::map<std::string, std::string> before;
  std::map<std::string, int> load;
  for (int k = 0; k < 1000; ++k) {
    const auto key = "key-" + std::to_string(k);
    before[key] = router.route(task, agents({"a", "b", "c", "d"}), key).front();
    ++load[before[key]];
    CHECK(router.route(task, agents({"d", "c", "b", "a"}), key).front() == before[key]);  // order-free
  }
  for (auto& [id, n] : load) CHECK(n > 150);  // roughly even
  int moved = 0;
  for (auto& [key, owner] : before) {
    const auto now = router.route(task, agents({"a", "b", "d"}), key).front();
    if (owner != "c") CHECK(now == owner);  // keys of surviving agents stay
    if (now != owner) ++moved;
  }
  CHECK(moved == load["c"]);
}

TEST_CASE("no_failover gives a single agent", "[routing]") {
  qf::Router router;
  auto task = task_with(v1::ROUTING_STRATEGY_ROUND_ROBIN);
  task.mutable_placement()->set_no_failover(true);
  CHECK(router.route(task, agents({"a", "b"})).size() == 1);
}

TEST_CASE("shards are split over agents sorted by id, several per agent when needed", "[routing]") {
  const auto shards = qf::assign_shards(5, {"b", "a"});
  REQUIRE(shards.size() == 5);
  CHECK(shards[0].agent_id == "a");
  CHECK(shards[1].agent_id == "b");
  CHECK(shards[4].agent_id == "a");
  for (std::uint32_t i = 0; i < 5; ++i) {
    CHECK(shards[i].index == i);
    CHECK(shards[i].total == 5);
  }
  CHECK(qf::assign_shards(0, {"x", "y", "z"}).size() == 3);
  CHECK(qf::assign_shards(3, {}).empty());
}
