// SPDX-License-Identifier: Apache-2.0
// How a task's placement and misfire fields read, for the scheduler, the engine and the
// coordinator alike (an unset field behaves as its documented default).
#pragma once

#include <cstddef>

#include <quartzflow/schedule.hpp>
#include <quartzflow/v1/task.pb.h>

namespace quartzflow::detail {

/// `one` and `sharded`: the coordinator's scheduler fires the task and routes each run.
inline bool coordinator_routed(const v1::Task& task) noexcept {
  const auto mode = task.placement().mode();
  return mode == v1::PLACEMENT_MODE_ONE || mode == v1::PLACEMENT_MODE_SHARDED;
}

/// `all` (or unset): every agent of the task's groups fires it from its own clock.
inline bool agent_fired(const v1::Task& task) noexcept {
  const auto mode = task.placement().mode();
  return mode == v1::PLACEMENT_MODE_ALL || mode == v1::PLACEMENT_MODE_UNSPECIFIED;
}

/// The task's misfire policy; unset reads as `fire_once`.
inline MisfirePolicy misfire_policy(const v1::Task& task) noexcept {
  switch (task.misfire_policy()) {
    case v1::MISFIRE_POLICY_SKIP: return MisfirePolicy::skip;
    case v1::MISFIRE_POLICY_FIRE_ALL: return MisfirePolicy::fire_all;
    default: return MisfirePolicy::fire_once;
  }
}

/// How many owed fires `fire_all` runs at most: the task's limit, else the host's default.
inline std::size_t misfire_fire_all_limit(const v1::Task& task, std::size_t host_default) noexcept {
  return task.misfire_fire_all_limit() > 0 ? task.misfire_fire_all_limit() : host_default;
}

}  // namespace quartzflow::detail
