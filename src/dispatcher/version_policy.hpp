// SPDX-License-Identifier: Apache-2.0
// Which agent versions a coordinator accepts: its own major version, a minor version at
// most one older or newer, so a fleet is upgraded coordinator first, then agents in batches.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace quartzflow::detail {

/// A software version `major.minor.patch` (a `-suffix` or `+build` after it is ignored).
struct SoftwareVersion {
  unsigned major = 0;
  unsigned minor = 0;
  unsigned patch = 0;
};

/// `quartzflow::version` (here, so that files with locals named `version` need not see it).
std::string_view library_version();

/// Parses `major.minor.patch`; nullopt when `text` is not one.
std::optional<SoftwareVersion> parse_software_version(std::string_view text);

/**
 * Why a coordinator of `coordinator_version` refuses an agent that announced
 * `agent_version`; empty when it accepts it. An empty `agent_version` (not announced:
 * raw protocol clients, hosts embedding the library) is accepted.
 */
std::string agent_version_refusal(std::string_view agent_version, std::string_view coordinator_version);

}  // namespace quartzflow::detail
