// SPDX-License-Identifier: Apache-2.0
// The execution id format. An id names its fire, so a record is never counted twice:
//   `<task>:<scheduled ms>:<agent>`  a run an agent fires itself (`all` placement) or one an
//                                   operator pinned to that agent;
//   `<task>:<scheduled ms>`          a coordinator-routed run (`one`);
//   `<task>:<scheduled ms>:s<shard>` one shard of a `sharded` fire;
//   `<id>:r<attempt>`                a retry (of the root run's id, or of the retry's accept time).
// Manual triggers and retries use the millisecond they were accepted as the scheduled ms.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace quartzflow::detail {

/// `<task>:<scheduled ms>`: the id of a coordinator-routed fire.
inline std::string execution_id(std::string_view task_id, std::int64_t scheduled_unix_ms) {
  return fmt::format("{}:{}", task_id, scheduled_unix_ms);
}

/// `<task>:<scheduled ms>:<agent>`: a fire of (or pinned to) one agent.
inline std::string execution_id(std::string_view task_id, std::int64_t scheduled_unix_ms, std::string_view agent_id) {
  return fmt::format("{}:{}:{}", task_id, scheduled_unix_ms, agent_id);
}

/// `<fire id>:s<shard>`: one shard of a sharded fire.
inline std::string shard_execution_id(std::string_view fire_id, std::uint32_t shard_index) {
  return fmt::format("{}:s{}", fire_id, shard_index);
}

/// `<id>:r<attempt>`: a retry of a run.
inline std::string retry_execution_id(std::string_view base_id, std::uint32_t attempt) {
  return fmt::format("{}:r{}", base_id, attempt);
}

/// Whether the id names `agent_id` (ends in `:<agent>`): a run of that agent's own, which no
/// other agent may write into.
inline bool execution_id_names_agent(std::string_view execution_id, std::string_view agent_id) {
  return execution_id.size() > agent_id.size() + 1 && execution_id.ends_with(agent_id) &&
         execution_id[execution_id.size() - agent_id.size() - 1] == ':';
}

}  // namespace quartzflow::detail
