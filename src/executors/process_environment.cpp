// SPDX-License-Identifier: Apache-2.0
// Environment and command lookup for shell runs, prepared before fork.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string_view>

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
  const auto& spec = request.task->shell();
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
  variables["QF_TASK_ID"] = request.task->id();
  variables["QF_TASK_NAME"] = request.task->name();
  variables["QF_EXECUTION_ID"] = request.execution_id;
  variables["QF_SCHEDULED_AT"] = format_rfc3339(request.scheduled);
  variables["QF_ATTEMPT"] = std::to_string(request.attempt);
  if (!request.agent_id.empty()) variables["QF_AGENT_ID"] = request.agent_id;
  if (!request.hostname.empty()) variables["QF_HOSTNAME"] = request.hostname;
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
    std::string candidate = dir + "/" + command;
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return command;
}

}  // namespace quartzflow::detail

namespace quartzflow::detail {

std::map<std::string, std::vector<LeftoverProcess>, std::less<>> processes_of_executions(
    const std::vector<std::string>& execution_ids) {
  std::map<std::string, std::vector<LeftoverProcess>, std::less<>> found;
  if (execution_ids.empty()) return found;
  const std::set<std::string, std::less<>> wanted(execution_ids.begin(), execution_ids.end());
  const std::string_view prefix = "QF_EXECUTION_ID=";
  const pid_t self = ::getpid();
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; })) continue;
    const int pid = std::atoi(name.c_str());
    if (pid == self) continue;
    std::ifstream environ_file(entry.path() / "environ", std::ios::binary);
    if (!environ_file) continue;
    std::string variable;
    while (std::getline(environ_file, variable, '\0')) {
      if (variable.compare(0, prefix.size(), prefix) != 0) continue;
      const std::string_view id = std::string_view(variable).substr(prefix.size());
      if (auto it = wanted.find(id); it != wanted.end()) {
        std::string command;
        std::ifstream(entry.path() / "comm") >> command;
        found[*it].push_back({pid, std::move(command)});
      }
      break;
    }
  }
  return found;
}

}  // namespace quartzflow::detail
