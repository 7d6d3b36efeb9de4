// SPDX-License-Identifier: Apache-2.0
// The environment a shell run sees: dynamic params only as QF_PARAM_<NAME> variables.
#pragma once

#include <string>
#include <vector>

#include <quartzflow/executor.hpp>

namespace quartzflow::detail {

/// `QF_PARAM_` + the name upper-cased, every character outside [A-Z0-9_] replaced by `_`.
std::string param_variable_name(const std::string& name);

/// NAME=value strings: the agent's environment (unless `clear_env`), the task's `env`,
/// then QF_TASK_ID, QF_EXECUTION_ID, QF_SCHEDULED_AT, QF_ATTEMPT, QF_SHARD_* and params.
std::vector<std::string> process_environment(const RunRequest& request, char** inherited);

/// Absolute path of `command` via PATH from `environment` (as execvp would), else `command`.
std::string resolve_command(const std::string& command, const std::vector<std::string>& environment);

}  // namespace quartzflow::detail
