// SPDX-License-Identifier: Apache-2.0
// Field-by-field search for the next / previous matching local time. Pure arithmetic on
// civil dates: the time zone is applied by the caller (cron_expr.cpp).
#include <bit>

#include "cron_fields.hpp"

namespace quartzflow::detail {
namespace {

using std::chrono::seconds;

struct Civil {
  int year;
  unsigned month;
  unsigned day;
  int hour;
  int minute;
  int second;
};

Civil split(date::local_seconds t) {
  const auto day = date::floor<date::days>(t);
  const date::year_month_day ymd{day};
  const date::hh_mm_ss<seconds> time{t - day};
  return {static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
          static_cast<unsigned>(ymd.day()), static_cast<int>(time.hours().count()),
          static_cast<int>(time.minutes().count()), static_cast<int>(time.seconds().count())};
}

date::local_seconds join(const Civil& c) {
  return date::local_days{date::year{c.year} / date::month{c.month} / date::day{c.day}} +
         std::chrono::hours{c.hour} + std::chrono::minutes{c.minute} + seconds{c.second};
}

unsigned days_in_month(int year, unsigned month) {
  return static_cast<unsigned>(
      (date::year{year} / date::month{month} / date::last).day());
}

/// Lowest set bit >= from, or -1.
template <typename Bits>
int next_bit(Bits bits, int from) {
  if (from >= static_cast<int>(sizeof(Bits) * 8)) return -1;
  const Bits masked = static_cast<Bits>(bits >> from);
  return masked == 0 ? -1 : from + std::countr_zero(masked);
}

/// Highest set bit <= from, or -1.
template <typename Bits>
int prev_bit(Bits bits, int from) {
  if (from < 0) return -1;
  constexpr int width = sizeof(Bits) * 8;
  const Bits masked =
      from >= width - 1 ? bits : static_cast<Bits>(bits & ((Bits{1} << (from + 1)) - 1));
  return masked == 0 ? -1 : width - 1 - std::countl_zero(masked);
}

int next_year(const CronFields& f, int from) {
  for (int y = std::max(from, k_min_year); y <= k_max_year; ++y)
    if (f.years.test(static_cast<std::size_t>(y - k_min_year))) return y;
  return -1;
}

int prev_year(const CronFields& f, int from) {
  for (int y = std::min(from, k_max_year); y >= k_min_year; --y)
    if (f.years.test(static_cast<std::size_t>(y - k_min_year))) return y;
  return -1;
}

}  // namespace

bool CronFields::fixed_time() const noexcept {
  return std::popcount(hours) == 1 && std::popcount(minutes) == 1;
}

std::uint32_t CronFields::day_mask(int year, unsigned month) const noexcept {
  const unsigned last = days_in_month(year, month);
  const auto valid = static_cast<std::uint32_t>(((std::uint64_t{1} << (last + 1)) - 1) & ~std::uint64_t{1});
  // 0 = Sunday, as in the day-of-week field.
  const unsigned first_weekday =
      date::weekday{date::year{year} / date::month{month} / date::day{1}}.c_encoding();
  auto weekday_of = [&](unsigned day) { return (first_weekday + day - 1) % 7; };

  std::uint32_t by_day_of_month = days & valid;
  for (std::uint32_t offsets = days_before_last; offsets != 0; offsets &= offsets - 1) {
    const unsigned offset = static_cast<unsigned>(std::countr_zero(offsets));
    if (offset < last) by_day_of_month |= std::uint32_t{1} << (last - offset);
  }
  for (std::uint32_t wanted = nearest_weekday; wanted != 0; wanted &= wanted - 1) {
    unsigned day = static_cast<unsigned>(std::countr_zero(wanted));
    if (day > last) continue;  // 31W fires only in months that have a 31st
    const unsigned weekday = weekday_of(day);
    if (weekday == 6) day = day > 1 ? day - 1 : day + 2;          // Saturday
    else if (weekday == 0) day = day < last ? day + 1 : day - 2;  // Sunday
    by_day_of_month |= std::uint32_t{1} << day;
  }
  if (last_weekday_of_month) {
    const unsigned weekday = weekday_of(last);
    const unsigned day = weekday == 6 ? last - 1 : weekday == 0 ? last - 2 : last;
    by_day_of_month |= std::uint32_t{1} << day;
  }

  std::uint32_t by_day_of_week = 0;
  for (unsigned weekday = 0; weekday < 7; ++weekday) {
    const unsigned first = 1 + (weekday + 7 - first_weekday) % 7;  // first such day
    if (weekdays & (1u << weekday))
      for (unsigned day = first; day <= last; day += 7) by_day_of_week |= 1u << day;
    if (last_weekday & (1u << weekday))
      by_day_of_week |= 1u << (first + (last - first) / 7 * 7);
    for (unsigned nth = 1; nth <= 5; ++nth) {
      const unsigned day = first + 7 * (nth - 1);
      if ((nth_weekday >> (weekday * 5 + nth - 1)) & 1u && day <= last) by_day_of_week |= 1u << day;
    }
  }
  // Vixie cron: when both day fields are restricted, either may match; otherwise both must.
  if (day_of_month_restricted && day_of_week_restricted) return by_day_of_month | by_day_of_week;
  return by_day_of_month & by_day_of_week;
}

std::optional<date::local_seconds> next_local_match(const CronFields& f,
                                                    date::local_seconds after) noexcept {
  const auto lower_limit = date::local_days{date::year{k_min_year} / 1 / 1};
  if (after < lower_limit) after = lower_limit - seconds{1};
  Civil c = split(after + seconds{1});
  int mask_year = 0;
  unsigned mask_month = 0;
  std::uint32_t mask = 0;
  auto start_of_next_month = [&] {
    c = {c.month == 12 ? c.year + 1 : c.year, c.month == 12 ? 1u : c.month + 1, 1, 0, 0, 0};
  };
  auto start_of_next_day = [&] {
    if (c.day >= days_in_month(c.year, c.month)) {
      start_of_next_month();
    } else {
      c = {c.year, c.month, c.day + 1, 0, 0, 0};
    }
  };
  while (true) {
    if (c.year > k_max_year) return std::nullopt;
    if (!f.years.test(static_cast<std::size_t>(c.year - k_min_year))) {
      const int year = next_year(f, c.year);
      if (year < 0) return std::nullopt;
      c = {year, 1, 1, 0, 0, 0};
    }
    if (!((f.months >> c.month) & 1u)) {
      const int month = next_bit(f.months, static_cast<int>(c.month));
      if (month < 0 || month > 12) {
        c = {c.year + 1, 1, 1, 0, 0, 0};
        continue;
      }
      c = {c.year, static_cast<unsigned>(month), 1, 0, 0, 0};
    }
    if (mask_year != c.year || mask_month != c.month) {
      mask = f.day_mask(c.year, c.month);
      mask_year = c.year;
      mask_month = c.month;
    }
    if (!((mask >> c.day) & 1u)) {
      const int day = next_bit(mask, static_cast<int>(c.day));
      if (day < 0) {
        start_of_next_month();
        continue;
      }
      c = {c.year, c.month, static_cast<unsigned>(day), 0, 0, 0};
    }
    const int hour = next_bit(f.hours, c.hour);
    if (hour < 0) {
      start_of_next_day();
      continue;
    }
    if (hour != c.hour) c = {c.year, c.month, c.day, hour, 0, 0};
    const int minute = next_bit(f.minutes, c.minute);
    if (minute < 0) {
      if (c.hour == 23) {
        start_of_next_day();
      } else {
        c = {c.year, c.month, c.day, c.hour + 1, 0, 0};
      }
      continue;
    }
    if (minute != c.minute) c = {c.year, c.month, c.day, c.hour, minute, 0};
    const int second = next_bit(f.seconds, c.second);
    if (second < 0) {
      if (c.minute == 59) {
        if (c.hour == 23) {
          start_of_next_day();
        } else {
          c = {c.year, c.month, c.day, c.hour + 1, 0, 0};
        }
      } else {
        c = {c.year, c.month, c.day, c.hour, c.minute + 1, 0};
      }
      continue;
    }
    c.second = second;
    return join(c);
  }
}

std::optional<date::local_seconds> prev_local_match(const CronFields& f,
                                                    date::local_seconds before) noexcept {
  const auto upper_limit = date::local_days{date::year{k_max_year + 1} / 1 / 1};
  if (before > upper_limit) before = upper_limit;
  Civil c = split(before - seconds{1});
  int mask_year = 0;
  unsigned mask_month = 0;
  std::uint32_t mask = 0;
  auto end_of_previous_month = [&] {
    const int year = c.month == 1 ? c.year - 1 : c.year;
    const unsigned month = c.month == 1 ? 12u : c.month - 1;
    c = {year, month, year < k_min_year ? 1u : days_in_month(year, month), 23, 59, 59};
  };
  auto end_of_previous_day = [&] {
    if (c.day <= 1) {
      end_of_previous_month();
    } else {
      c = {c.year, c.month, c.day - 1, 23, 59, 59};
    }
  };
  while (true) {
    if (c.year < k_min_year) return std::nullopt;
    if (!f.years.test(static_cast<std::size_t>(c.year - k_min_year))) {
      const int year = prev_year(f, c.year);
      if (year < 0) return std::nullopt;
      c = {year, 12, 31, 23, 59, 59};
    }
    if (!((f.months >> c.month) & 1u)) {
      const int month = prev_bit(f.months, static_cast<int>(c.month));
      if (month < 1) {
        c = {c.year - 1, 12, 31, 23, 59, 59};
        continue;
      }
      c = {c.year, static_cast<unsigned>(month), days_in_month(c.year, static_cast<unsigned>(month)),
           23, 59, 59};
    }
    if (mask_year != c.year || mask_month != c.month) {
      mask = f.day_mask(c.year, c.month);
      mask_year = c.year;
      mask_month = c.month;
    }
    if (!((mask >> c.day) & 1u)) {
      const int day = prev_bit(mask, static_cast<int>(c.day));
      if (day < 1) {
        end_of_previous_month();
        continue;
      }
      c = {c.year, c.month, static_cast<unsigned>(day), 23, 59, 59};
    }
    const int hour = prev_bit(f.hours, c.hour);
    if (hour < 0) {
      end_of_previous_day();
      continue;
    }
    if (hour != c.hour) c = {c.year, c.month, c.day, hour, 59, 59};
    const int minute = prev_bit(f.minutes, c.minute);
    if (minute < 0) {
      if (c.hour == 0) {
        end_of_previous_day();
      } else {
        c = {c.year, c.month, c.day, c.hour - 1, 59, 59};
      }
      continue;
    }
    if (minute != c.minute) c = {c.year, c.month, c.day, c.hour, minute, 59};
    const int second = prev_bit(f.seconds, c.second);
    if (second < 0) {
      if (c.minute == 0) {
        if (c.hour == 0) {
          end_of_previous_day();
        } else {
          c = {c.year, c.month, c.day, c.hour - 1, 59, 59};
        }
      } else {
        c = {c.year, c.month, c.day, c.hour, c.minute - 1, 59};
      }
      continue;
    }
    c.second = second;
    return join(c);
  }
}

}  // namespace quartzflow::detail
