// SPDX-License-Identifier: Apache-2.0
// Routing of coordinator-fired runs: which online agent runs a `one` placement, and how a
// `sharded` run is split. Pure logic (no I/O), used by the Scheduler.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <quartzflow/v1/task.pb.h>

namespace quartzflow {

/// How the delivery of one routed run to one agent ended.
enum class RunDelivery {
  accepted,  ///< the agent took it (it answered with the run's state)
  refused,   ///< the agent did not start it and will not (refused, never received, fenced): fail over
  lost,      ///< unknown whether it started (at_most_once): the sink recorded FAILURE `agent lost`
};

/// What routing knows about an eligible agent (online, in the task's groups).
struct AgentLoad {
  std::string agent_id;
  std::uint32_t running = 0;  ///< runs in progress there (for least-busy)
};

/**
 * Chooses agents for runs of one task, remembering round-robin position per task.
 * Thread safety: not thread-safe.
 */
class Router {
 public:
  /// Seed of the `random` strategy (fixed in tests, from std::random_device otherwise).
  explicit Router(std::uint64_t seed = 0);

  /**
   * The agents to try, in order: the first is the choice, the rest the failover order
   * (empty when `agents` is empty; only the first when the placement says no_failover).
   * `key` is the consistent-hash key of this run (the task's hash_key resolved against the
   * run's params by the caller; the task id when empty). `agents` may come in any order.
   */
  std::vector<std::string> route(const v1::Task& task, std::vector<AgentLoad> agents, std::string_view key = {});

 private:
  std::uint64_t seed_;
  std::uint64_t draws_ = 0;
  std::unordered_map<std::string, std::uint64_t> round_robin_;  // task id -> next position
};

/// One shard of a sharded run.
struct ShardAssignment {
  std::uint32_t index = 0;   ///< QF_SHARD_INDEX, 0-based
  std::uint32_t total = 0;   ///< QF_SHARD_TOTAL
  std::string agent_id;
};

/**
 * Splits a run into `shard_count` shards (0 = one per agent) over the agents, sorted by
 * id so that the split is stable; with fewer agents than shards, agents take several
 * shards (round-robin). Empty when there is no agent.
 */
std::vector<ShardAssignment> assign_shards(std::uint32_t shard_count, std::vector<std::string> agent_ids);

}  // namespace quartzflow
