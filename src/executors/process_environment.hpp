// SPDX-License-Identifier: Apache-2.0
// The environment a shell run sees: dynamic params only as QF_PARAM_<NAME> variables.
#pragma once

#include <map>
#include <string>
#include <vector>

#include <quartzflow/executor.hpp>

namespace quartzflow::detail {

/// `QF_PARAM_` + the name upper-cased, every character outside [A-Z0-9_] replaced by `_`.
std::string param_variable_name(const std::string& name);

/// NAME=value strings: the agent's environment (unless `clear_env`), the task's `env`,
/// then QF_TASK_ID, QF_EXECUTION_ID, QF_SCHEDULED_AT, QF_ATTEMPT, QF_AGENT_ID, QF_HOSTNAME,
/// QF_SHARD_* and params.
std::vector<std::string> process_environment(const RunRequest& request, char** inherited);

/// Absolute path of `command` via PATH from `environment` (as execvp would), else `command`.
std::string resolve_command(const std::string& command, const std::vector<std::string>& environment);

}  // namespace quartzflow::detail

namespace quartzflow::detail {

/// A process found by `processes_of_executions`.
struct LeftoverProcess {
  int pid = 0;
  std::string command;  ///< its name, from /proc/<pid>/comm
};

/**
 * Processes other than this one whose environment says `QF_EXECUTION_ID=<id>` for one of
 * `execution_ids` (every process a shell run starts inherits it), by execution id: what a
 * killed agent's runs left. Reads /proc; processes of other users are not seen.
 */
std::map<std::string, std::vector<LeftoverProcess>, std::less<>> processes_of_executions(
    const std::vector<std::string>& execution_ids);

}  // namespace quartzflow::detail
