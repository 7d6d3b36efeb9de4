// SPDX-License-Identifier: Apache-2.0
// The library's logger (spdlog). Hosts may replace it with their own sink.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

#include <quartzflow/error.hpp>

namespace quartzflow {

/// The logger every component writes to; named "quartzflow", stderr by default.
/// Thread safety: safe from any thread (spdlog's multi-threaded sinks).
std::shared_ptr<spdlog::logger> logger();

/// Replaces the library's logger, e.g. to route it into the host's own sinks.
void set_logger(std::shared_ptr<spdlog::logger> replacement);

/// Sets the level from a name: trace, debug, info, warn, error, critical, off.
/// Returns false (and changes nothing) for an unknown name.
bool set_log_level(std::string_view level);

/// A log file rotated by size: `x.log` is renamed `x.1.log` (`x.1.log` -> `x.2.log` ...)
/// when a line would take it past `max_size_bytes`; the oldest beyond `max_files` is removed.
struct LogFileOptions {
  std::string path;                         ///< the current file; its directory is created when missing
  std::size_t max_size_bytes = 100u << 20;  ///< at least 1
  std::size_t max_files = 5;                ///< rotated files kept besides the current one, 1-1000
};

/**
 * Replaces the library's logger by one that writes each line to stderr and to a rotating
 * file (mode 0640: a log may quote commands and their output), at the current level. Each
 * line is flushed, as stderr's are.
 * @param ec `errc::invalid_argument` for a bad option (`detail` names it), or the system
 *   error of opening the file; the logger is unchanged then.
 * Thread safety: call at start, before other threads log.
 */
void log_to_file(const LogFileOptions& options, error_code& ec, std::string* detail = nullptr);
/// As above; throws `quartzflow::error`.
void log_to_file(const LogFileOptions& options);

}  // namespace quartzflow
