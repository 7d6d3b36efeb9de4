// SPDX-License-Identifier: Apache-2.0
// Plain-language descriptions of parsed cron fields ("At 02:00, every day").
#include <bit>
#include <vector>

#include <fmt/format.h>

#include "cron_fields.hpp"

namespace quartzflow::detail {
namespace {

constexpr const char* k_weekday_names[] = {"Sunday",   "Monday", "Tuesday", "Wednesday",
                                           "Thursday", "Friday", "Saturday"};
constexpr const char* k_month_names[] = {"",     "January", "February",  "March",
                                         "April", "May",     "June",      "July",
                                         "August", "September", "October", "November",
                                         "December"};

template <typename Bits>
std::vector<int> values_of(Bits bits) {
  std::vector<int> values;
  for (; bits != 0; bits &= bits - 1) values.push_back(std::countr_zero(bits));
  return values;
}

std::string join_words(const std::vector<std::string>& words) {
  std::string out;
  for (std::size_t i = 0; i < words.size(); ++i) {
    if (i > 0) out += i + 1 == words.size() ? " and " : ", ";
    out += words[i];
  }
  return out;
}

/// "every minute", "every 15 minutes", "minutes 10 through 20", "minutes 0, 30 and 45".
std::string describe_unit(const std::vector<int>& values, int min, int max, const char* unit) {
  const int count = static_cast<int>(values.size());
  if (count == max - min + 1) return fmt::format("every {}", unit);
  if (count == 1) return fmt::format("at {} {}", unit, values[0]);
  const int step = values[1] - values[0];
  bool progression = true;
  for (int i = 1; i < count; ++i) progression = progression && values[i] - values[i - 1] == step;
  if (progression && step == 1)
    return fmt::format("{}s {} through {}", unit, values.front(), values.back());
  if (progression && values.front() == min && values.back() + step > max)
    return fmt::format("every {} {}s", step, unit);
  if (progression && values.back() + step > max)
    return fmt::format("every {} {}s starting at {} {}", step, unit, unit, values.front());
  std::vector<std::string> words;
  for (int v : values) words.push_back(std::to_string(v));
  return fmt::format("at {}s {}", unit, join_words(words));
}

std::string ordinal(int n) {
  const char* suffix = (n % 100 >= 11 && n % 100 <= 13) ? "th"
                       : n % 10 == 1                     ? "st"
                       : n % 10 == 2                     ? "nd"
                       : n % 10 == 3                     ? "rd"
                                                         : "th";
  return std::to_string(n) + suffix;
}

std::string describe_days(const CronFields& f) {
  std::vector<std::string> by_day_of_month;
  const auto days = values_of(f.days);
  if (f.day_of_month_restricted && !days.empty()) {
    std::vector<std::string> words;
    for (int d : days) words.push_back(ordinal(d));
    by_day_of_month.push_back("on the " + join_words(words) + " of the month");
  }
  for (int offset : values_of(f.days_before_last))
    by_day_of_month.push_back(offset == 0 ? "on the last day of the month"
                                          : fmt::format("{} days before the last day of the month", offset));
  for (int day : values_of(f.nearest_weekday))
    by_day_of_month.push_back(fmt::format("on the weekday nearest the {}", ordinal(day)));
  if (f.last_weekday_of_month) by_day_of_month.push_back("on the last weekday of the month");

  std::vector<std::string> by_day_of_week;
  const auto weekdays = values_of(f.weekdays);
  if (f.day_of_week_restricted && !weekdays.empty()) {
    bool contiguous = weekdays.size() > 2;
    for (std::size_t i = 1; i < weekdays.size(); ++i)
      contiguous = contiguous && weekdays[i] == weekdays[i - 1] + 1;
    if (contiguous) {
      by_day_of_week.push_back(fmt::format("{} through {}", k_weekday_names[weekdays.front()],
                                           k_weekday_names[weekdays.back()]));
    } else {
      std::vector<std::string> words;
      for (int d : weekdays) words.push_back(k_weekday_names[d]);
      by_day_of_week.push_back("on " + join_words(words));
    }
  }
  for (int d : values_of(f.last_weekday))
    by_day_of_week.push_back(fmt::format("on the last {} of the month", k_weekday_names[d]));
  for (int bit : values_of(f.nth_weekday))
    by_day_of_week.push_back(
        fmt::format("on the {} {} of the month", ordinal(bit % 5 + 1), k_weekday_names[bit / 5]));

  std::string text;
  if (by_day_of_month.empty() && by_day_of_week.empty()) {
    text = "every day";
  } else if (!by_day_of_month.empty() && !by_day_of_week.empty()) {
    const bool either = f.day_of_month_restricted && f.day_of_week_restricted;
    text = join_words(by_day_of_month) + (either ? ", or " : ", if it is ") + join_words(by_day_of_week);
  } else {
    text = join_words(by_day_of_month.empty() ? by_day_of_week : by_day_of_month);
  }
  const auto months = values_of(f.months);
  if (months.size() != 12) {
    std::vector<std::string> words;
    for (int m : months) words.push_back(k_month_names[m]);
    text += ", in " + join_words(words);
  }
  if (f.has_year_field && !f.years.all()) {
    std::vector<std::string> words;
    for (int y = k_min_year; y <= k_max_year && words.size() <= 5; ++y)
      if (f.years.test(static_cast<std::size_t>(y - k_min_year))) words.push_back(std::to_string(y));
    text += words.size() > 5 ? ", in selected years" : ", in " + join_words(words);
  }
  return text;
}

}  // namespace

std::string describe_fields(const CronFields& f, std::string_view /*text*/) {
  const auto seconds = values_of(f.seconds);
  const auto minutes = values_of(f.minutes);
  const auto hours = values_of(f.hours);
  std::string time;
  if (hours.size() == 1 && minutes.size() == 1 && seconds.size() == 1) {
    time = seconds[0] == 0 ? fmt::format("At {:02}:{:02}", hours[0], minutes[0])
                           : fmt::format("At {:02}:{:02}:{:02}", hours[0], minutes[0], seconds[0]);
  } else {
    std::vector<std::string> parts;
    const bool every_second = seconds.size() == 60;
    if (f.has_seconds_field && !(seconds.size() == 1 && seconds[0] == 0))
      parts.push_back(describe_unit(seconds, 0, 59, "second"));
    if (!(every_second && minutes.size() == 60))
      parts.push_back(describe_unit(minutes, 0, 59, "minute"));
    if (hours.size() != 24) parts.push_back(describe_unit(hours, 0, 23, "hour"));
    std::string joined;
    for (std::size_t i = 0; i < parts.size(); ++i) joined += (i ? ", " : "") + parts[i];
    if (!joined.empty()) joined[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(joined[0])));
    time = joined;
  }
  return time + ", " + describe_days(f);
}

}  // namespace quartzflow::detail
