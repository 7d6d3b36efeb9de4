// SPDX-License-Identifier: Apache-2.0
// Daily statistics as the admin API serves them: what the agents reported, and for the
// (date, task, agent) keys no agent reported, the coordinator's roll-ups of purged runs
// (retention), so a day's counts outlive its execution records.
#pragma once

#include <algorithm>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <quartzflow/v1/execution.pb.h>

namespace quartzflow::detail {

/// Agents' entries first (they are complete counts: an agent reports everything it ran), then
/// each roll-up whose key they lack; both filtered to `agent_id` and `task_id` when not empty.
/// Sorted by date, then agent, then task.
inline std::vector<v1::DailyStats> merge_daily_stats(std::vector<v1::DailyStats> reported,
                                                     std::vector<v1::DailyStats> rollups, const std::string& agent_id,
                                                     const std::string& task_id) {
  const auto wanted = [&](const v1::DailyStats& s) {
    return (agent_id.empty() || s.agent_id() == agent_id) && (task_id.empty() || s.task_id() == task_id);
  };
  std::vector<v1::DailyStats> out;
  std::set<std::tuple<std::string, std::string, std::string>> keys;
  for (auto& s : reported) {
    if (!wanted(s)) continue;
    keys.emplace(s.date(), s.agent_id(), s.task_id());
    out.push_back(std::move(s));
  }
  for (auto& s : rollups)
    if (wanted(s) && !keys.contains({s.date(), s.agent_id(), s.task_id()})) out.push_back(std::move(s));
  std::stable_sort(out.begin(), out.end(), [](const v1::DailyStats& a, const v1::DailyStats& b) {
    return std::tie(a.date(), a.agent_id(), a.task_id()) < std::tie(b.date(), b.agent_id(), b.task_id());
  });
  return out;
}

}  // namespace quartzflow::detail
