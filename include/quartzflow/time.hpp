// SPDX-License-Identifier: Apache-2.0
// Instants, RFC 3339 text and human durations ("1h30m") as QuartzFlow reads and writes them.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace quartzflow {

/// Instants are whole seconds on the system clock (UTC, no leap seconds).
using Instant = std::chrono::sys_seconds;

/// `2026-03-08T07:00:00Z`.
std::string format_rfc3339(Instant t);

/// `2026-03-08T07:00:00Z`, `2026-03-08T02:00:00-05:00`, `2026-03-08 07:00:00Z`; seconds
/// precision (a fraction is refused). nullopt when the text is not such an instant.
std::optional<Instant> parse_rfc3339(std::string_view text);

/// Go-style durations of whole seconds: `90s`, `1h30m`, `2d`, `1h0m5s`; units d h m s.
/// nullopt when malformed, empty, zero-unit-less or larger than 10 years.
std::optional<std::chrono::seconds> parse_duration(std::string_view text);

/// The inverse of parse_duration: `1h30m`, `90s` -> `1m30s`.
std::string format_duration(std::chrono::seconds d);

}  // namespace quartzflow
