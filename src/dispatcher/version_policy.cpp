// SPDX-License-Identifier: Apache-2.0
// The agent version policy (version_policy.hpp).
#include "version_policy.hpp"

#include <charconv>

#include <fmt/format.h>

#include <quartzflow/version.hpp>

namespace quartzflow::detail {

std::string_view library_version() { return quartzflow::version; }

std::optional<SoftwareVersion> parse_software_version(std::string_view text) {
  SoftwareVersion version;
  unsigned* parts[] = {&version.major, &version.minor, &version.patch};
  const char* at = text.data();
  const char* end = text.data() + text.size();
  for (std::size_t i = 0; i < 3; ++i) {
    if (i > 0) {
      if (at == end || *at != '.') return std::nullopt;
      ++at;
    }
    if (at == end || *at < '0' || *at > '9') return std::nullopt;
    const auto [next, error] = std::from_chars(at, end, *parts[i]);
    if (error != std::errc{}) return std::nullopt;
    at = next;
  }
  if (at != end && *at != '-' && *at != '+') return std::nullopt;
  return version;
}

std::string agent_version_refusal(std::string_view agent_version, std::string_view coordinator_version) {
  if (agent_version.empty()) return {};
  const auto agent = parse_software_version(agent_version);
  if (!agent) return fmt::format("register.agent_version: \"{}\" is not a version major.minor.patch", agent_version);
  const auto coordinator = parse_software_version(coordinator_version);
  if (!coordinator) return {};  // a development build of the coordinator judges nobody
  const long long distance = static_cast<long long>(agent->minor) - static_cast<long long>(coordinator->minor);
  if (agent->major == coordinator->major && distance >= -1 && distance <= 1) return {};
  const std::string accepted = coordinator->minor == 0
                                   ? fmt::format("{}.0.x-{}.1.x", coordinator->major, coordinator->major)
                                   : fmt::format("{}.{}.x-{}.{}.x", coordinator->major, coordinator->minor - 1,
                                                 coordinator->major, coordinator->minor + 1);
  const bool agent_newer = agent->major > coordinator->major || (agent->major == coordinator->major && distance > 0);
  return fmt::format(
      "register.agent_version: agent version {} is not supported by coordinator version {}, which accepts agents "
      "{} (one minor version older or newer); {}",
      agent_version, coordinator_version, accepted,
      agent_newer ? "upgrade the coordinator first, then the agents" : "upgrade this agent");
}

}  // namespace quartzflow::detail
