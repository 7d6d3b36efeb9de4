// SPDX-License-Identifier: Apache-2.0
// Routing strategies for `one` placements and the shard split of `sharded` ones.
#include <algorithm>

#include <quartzflow/routing.hpp>

#include "../common/stable_hash.hpp"

namespace quartzflow {
namespace {

/// splitmix64: a cheap, well-mixed step for the `random` strategy.
std::uint64_t mix(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

Router::Router(std::uint64_t seed) : seed_(seed) {}

std::vector<std::string> Router::route(const v1::Task& task, std::vector<AgentLoad> agents, std::string_view key) {
  std::vector<std::string> order;
  if (agents.empty()) return order;
  // A stable base order, so that strategies do not depend on how agents were listed.
  std::sort(agents.begin(), agents.end(), [](const AgentLoad& a, const AgentLoad& b) { return a.agent_id < b.agent_id; });
  const auto strategy = task.placement().routing();
  std::size_t first = 0;
  switch (strategy) {
    case v1::ROUTING_STRATEGY_RANDOM:
      first = static_cast<std::size_t>(mix(seed_ + ++draws_) % agents.size());
      break;
    case v1::ROUTING_STRATEGY_LEAST_BUSY:
      std::stable_sort(agents.begin(), agents.end(),
                       [](const AgentLoad& a, const AgentLoad& b) { return a.running < b.running; });
      break;
    case v1::ROUTING_STRATEGY_CONSISTENT_HASH: {
      // Rendezvous hashing: each agent's weight for the key; the heaviest wins, and when an
      // agent leaves only its keys move.
      const std::string_view k = key.empty() ? std::string_view(task.id()) : key;
      std::vector<std::pair<std::uint64_t, std::size_t>> weights;
      weights.reserve(agents.size());
      for (std::size_t i = 0; i < agents.size(); ++i) {
        std::string material(k);
        material += '\x1f';
        material += agents[i].agent_id;
        weights.emplace_back(mix(detail::stable_hash(material)), i);
      }
      std::sort(weights.begin(), weights.end(), [](auto& a, auto& b) { return a.first > b.first; });
      for (auto& [weight, index] : weights) order.push_back(agents[index].agent_id);
      if (task.placement().no_failover()) order.resize(1);
      return order;
    }
    default: {  // round-robin
      first = static_cast<std::size_t>(round_robin_[task.id()]++ % agents.size());
      break;
    }
  }
  for (std::size_t i = 0; i < agents.size(); ++i) order.push_back(agents[(first + i) % agents.size()].agent_id);
  if (task.placement().no_failover()) order.resize(1);
  return order;
}

std::vector<ShardAssignment> assign_shards(std::uint32_t shard_count, std::vector<std::string> agent_ids) {
  std::vector<ShardAssignment> shards;
  if (agent_ids.empty()) return shards;
  std::sort(agent_ids.begin(), agent_ids.end());
  const auto total = shard_count > 0 ? shard_count : static_cast<std::uint32_t>(agent_ids.size());
  for (std::uint32_t i = 0; i < total; ++i) shards.push_back({i, total, agent_ids[i % agent_ids.size()]});
  return shards;
}

}  // namespace quartzflow
