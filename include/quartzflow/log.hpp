// SPDX-License-Identifier: Apache-2.0
// The library's logger (spdlog). Hosts may replace it with their own sink.
#pragma once

#include <memory>
#include <string_view>

#include <spdlog/spdlog.h>

namespace quartzflow {

/// The logger every component writes to; named "quartzflow", stderr by default.
/// Thread safety: safe from any thread (spdlog's multi-threaded sinks).
std::shared_ptr<spdlog::logger> logger();

/// Replaces the library's logger, e.g. to route it into the host's own sinks.
void set_logger(std::shared_ptr<spdlog::logger> replacement);

/// Sets the level from a name: trace, debug, info, warn, error, critical, off.
/// Returns false (and changes nothing) for an unknown name.
bool set_log_level(std::string_view level);

}  // namespace quartzflow
