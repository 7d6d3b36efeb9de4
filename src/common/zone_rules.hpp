// SPDX-License-Identifier: Apache-2.0
// A zone's offset at any instant. date/tz reads the transitions a TZif file lists (until
// 2037 in Debian's files) and keeps the last offset forever after; the rule for later
// years is the POSIX TZ string in the file's footer (RFC 8536 3.3), applied here.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include <date/tz.h>

#include <quartzflow/time.hpp>

namespace quartzflow::detail {

/// A POSIX TZ rule such as `EST5EDT,M3.2.0,M11.1.0` or `<+1030>-10:30<+11>-11,M10.1.0,M4.1.0`.
struct PosixTimeZone {
  struct Rule {
    enum class Kind { month_week_day, julian_no_leap, zero_based } kind = Kind::month_week_day;
    int month = 0, week = 0, weekday = 0, day = 0;
    std::chrono::seconds time{7200};  ///< local time of the change; may be negative or over 24 h
  };
  std::string std_abbrev, dst_abbrev;
  std::chrono::seconds std_offset{};  ///< east of UTC (the sign POSIX writes is the opposite)
  std::chrono::seconds dst_offset{};
  bool has_dst = false;
  Rule start, end;  ///< DST starts (in standard time) and ends (in DST)

  /// nullopt when `text` is not a POSIX TZ string this parser knows.
  static std::optional<PosixTimeZone> parse(std::string_view text);

  /// The offset, abbreviation and span of constant offset that hold at `t`.
  date::sys_info info_at(Instant t) const;
};

/// `zone->get_info(t)`, except that past the file's last transition the footer's rule
/// decides (the span then starts no earlier than that transition).
date::sys_info zone_info(const date::time_zone* zone, Instant t);

}  // namespace quartzflow::detail
