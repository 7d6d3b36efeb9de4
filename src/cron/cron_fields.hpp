// SPDX-License-Identifier: Apache-2.0
// The parsed form of a cron expression (bit sets per field) and the local-time search over it.
#pragma once

#include <bitset>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <date/date.h>

#include <quartzflow/cron.hpp>

namespace quartzflow::detail {

inline constexpr int k_min_year = 1970;
inline constexpr int k_max_year = 2199;
inline constexpr int k_year_count = k_max_year - k_min_year + 1;

/// One bit per allowed value; day fields also keep their special forms (L, W, #, nL).
struct CronFields {
  std::uint64_t seconds = 0;      // bits 0-59
  std::uint64_t minutes = 0;      // bits 0-59
  std::uint32_t hours = 0;        // bits 0-23
  std::uint32_t days = 0;         // day-of-month bits 1-31
  std::uint32_t days_before_last = 0;  // `L` (bit 0) and `L-n` (bit n): last day minus n
  std::uint32_t nearest_weekday = 0;   // `nW`: bit n
  bool last_weekday_of_month = false;  // `LW`
  std::uint16_t months = 0;       // bits 1-12
  std::uint8_t weekdays = 0;      // bits 0-6, 0 = Sunday
  std::uint8_t last_weekday = 0;  // `nL`: bit n
  std::uint64_t nth_weekday = 0;  // `n#k`: bit n * 5 + (k - 1)
  std::bitset<k_year_count> years;  // 1970-2199
  bool day_of_month_restricted = false;
  bool day_of_week_restricted = false;
  bool has_seconds_field = false;
  bool has_year_field = false;

  bool fixed_time() const noexcept;
  /// Bits 1..31 set for the days of month `month` of `year` that match both day fields.
  std::uint32_t day_mask(int year, unsigned month) const noexcept;
};

/// Parses `text` (macros included, `@every` excluded) into `out`; false with `error` set.
bool parse_cron_fields(std::string_view text, std::string_view hash_key, CronFields& out,
                       ValidationError& error);

/// The first local time strictly after `after` whose reading matches, within 1970-2199.
std::optional<date::local_seconds> next_local_match(const CronFields& fields,
                                                    date::local_seconds after) noexcept;
/// The last local time strictly before `before` whose reading matches, within 1970-2199.
std::optional<date::local_seconds> prev_local_match(const CronFields& fields,
                                                    date::local_seconds before) noexcept;

/// Plain-language description of the fields, e.g. "At 02:00, every day".
std::string describe_fields(const CronFields& fields, std::string_view text);

}  // namespace quartzflow::detail
