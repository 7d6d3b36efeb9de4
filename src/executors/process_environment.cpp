// SPDX-License-Identifier: Apache-2.0
// Environment and command lookup for shell runs, prepared before fork.
#include <map>

#include <unistd.h>

#include "process_environment.hpp"

namespace quartzflow::detail {

std::string param_variable_name(const std::string& name) {
  std::string out = "QF_PARAM_";
  for (char c : name) {
    const char upper = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    out += (std::isalnum(static_cast<unsigned char>(upper)) && static_cast<unsigned char>(upper) < 0x80) || upper == '_' ? upper : '_';
  }
  return out;
}

std::vector<std::string> process_environment(const RunRequest& request, char** inherited) {
  const auto& spec = request.task.shell();
  std::map<std::string, std::string> variables;
  if (!spec.clear_env() && inherited != nullptr) {
    for (char** e = inherited; *e != nullptr; ++e) {
      const std::string entry(*e);
      const auto eq = entry.find('=');
      if (eq != std::string::npos) variables[entry.substr(0, eq)] = entry.substr(eq + 1);
    }
  }
  // QF_ variables describe this run; inherited ones must not leak from the agent's own env.
  for (auto it = variables.begin(); it != variables.end();)
    it = it->first.rfind("QF_", 0) == 0 ? variables.erase(it) : std::next(it);
  for (const auto& [name, value] : spec.env()) variables[name] = value;
  variables["QF_TASK_ID"] = request.task.id();
  variables["QF_TASK_NAME"] = request.task.name();
  variables["QF_EXECUTION_ID"] = request.execution_id;
  variables["QF_SCHEDULED_AT"] = format_rfc3339(request.scheduled);
  variables["QF_ATTEMPT"] = std::to_string(request.attempt);
  if (request.shard_total > 0) {
    variables["QF_SHARD_INDEX"] = std::to_string(request.shard_index);
    variables["QF_SHARD_TOTAL"] = std::to_string(request.shard_total);
  }
  for (const auto& [name, value] : request.params) variables[param_variable_name(name)] = value;
  std::vector<std::string> out;
  out.reserve(variables.size());
  for (const auto& [name, value] : variables) {
    std::string clean = value;
    std::erase(clean, '\0');  // a NUL would silently cut the variable
    out.push_back(name + "=" + clean);
  }
  return out;
}

std::string resolve_command(const std::string& command, const std::vector<std::string>& environment) {
  if (command.empty() || command.find('/') != std::string::npos) return command;
  std::string path = "/usr/local/bin:/usr/bin:/bin";
  for (const auto& e : environment)
    if (e.rfind("PATH=", 0) == 0) path = e.substr(5);
  std::size_t start = 0;
  while (start <= path.size()) {
    const auto end = path.find(':', start);
    std::string dir = path.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (dir.empty()) dir = ".";
    const std::string candidate = dir + "/" + command;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return command;
}

}  // namespace quartzflow::detail
