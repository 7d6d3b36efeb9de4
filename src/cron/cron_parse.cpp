// SPDX-License-Identifier: Apache-2.0
// Cron text -> CronFields. Every error names the field and the reason; nothing is partial.
#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "../common/stable_hash.hpp"
#include "cron_fields.hpp"

namespace quartzflow::detail {
namespace {

constexpr std::size_t k_max_expression_length = 1024;

enum class FieldKind { second, minute, hour, day_of_month, month, day_of_week, year };

struct FieldInfo {
  FieldKind kind;
  const char* name;
  int min;
  int max;
};

constexpr FieldInfo k_second{FieldKind::second, "second", 0, 59};
constexpr FieldInfo k_minute{FieldKind::minute, "minute", 0, 59};
constexpr FieldInfo k_hour{FieldKind::hour, "hour", 0, 23};
constexpr FieldInfo k_day_of_month{FieldKind::day_of_month, "day-of-month", 1, 31};
constexpr FieldInfo k_month{FieldKind::month, "month", 1, 12};
constexpr FieldInfo k_day_of_week{FieldKind::day_of_week, "day-of-week", 0, 7};
constexpr FieldInfo k_year{FieldKind::year, "year", k_min_year, k_max_year};

constexpr std::array<const char*, 12> k_month_names{"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                                    "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
constexpr std::array<const char*, 7> k_weekday_names{"SUN", "MON", "TUE", "WED",
                                                     "THU", "FRI", "SAT"};

struct ParseFailure {
  std::string reason;
};

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

/// A number or (in month and day-of-week) a name; throws ParseFailure.
int parse_value(std::string_view token, const FieldInfo& field) {
  if (token.empty()) throw ParseFailure{"a value is missing"};
  if (std::isalpha(static_cast<unsigned char>(token[0]))) {
    const std::string name = upper(token);
    if (field.kind == FieldKind::month) {
      for (std::size_t i = 0; i < k_month_names.size(); ++i)
        if (name == k_month_names[i]) return static_cast<int>(i) + 1;
    } else if (field.kind == FieldKind::day_of_week) {
      for (std::size_t i = 0; i < k_weekday_names.size(); ++i)
        if (name == k_weekday_names[i]) return static_cast<int>(i);
    }
    throw ParseFailure{fmt::format("\"{}\" is not a valid value", token)};
  }
  int value = 0;
  const auto [end, ec] = std::from_chars(token.data(), token.data() + token.size(), value);
  if (ec == std::errc::result_out_of_range)
    throw ParseFailure{fmt::format("{} is out of range {}-{}", token, field.min, field.max)};
  if (ec != std::errc{} || end != token.data() + token.size())
    throw ParseFailure{fmt::format("\"{}\" is not a number", token)};
  if (value < field.min || value > field.max)
    throw ParseFailure{fmt::format("{} is out of range {}-{}", value, field.min, field.max)};
  return value;
}

int parse_step(std::string_view token, int span) {
  int step = 0;
  const auto [end, ec] = std::from_chars(token.data(), token.data() + token.size(), step);
  if (token.empty() || ec != std::errc{} || end != token.data() + token.size())
    throw ParseFailure{fmt::format("step \"{}\" is not a number", token)};
  if (step < 1) throw ParseFailure{fmt::format("step {} must be at least 1", step)};
  if (step > span)
    throw ParseFailure{fmt::format("step {} is larger than the field's span of {}", step, span)};
  return step;
}

/// Values of one field, before they are turned into bits (0-7 for day-of-week).
struct FieldValues {
  std::vector<int> values;
  bool restricted = true;  // false only for `*...` and `?` (Vixie's rule for day fields)
};

void add_range(FieldValues& out, int first, int last, int step, const FieldInfo& field) {
  if (first <= last) {
    for (int v = first; v <= last; v += step) out.values.push_back(v);
    return;
  }
  if (field.kind == FieldKind::year)
    throw ParseFailure{fmt::format("range {}-{} runs backwards", first, last)};
  if (field.kind == FieldKind::day_of_week) {
    // Weekdays cycle by 7 (7 is Sunday again): SAT-SUN/2 is Saturday only, 7-2 is 0-2.
    first %= 7;
    last %= 7;
    if (first <= last) {
      for (int v = first; v <= last; v += step) out.values.push_back(v);
      return;
    }
    for (int offset = 0; offset <= (last - first + 7) % 7; offset += step)
      out.values.push_back((first + offset) % 7);
    return;
  }
  // A wrapping range such as 22-2 runs to the field's end and on from its start.
  const int span = field.max - field.min + 1;
  for (int offset = 0; offset <= (last - first + span) % span; offset += step)
    out.values.push_back(field.min + (first - field.min + offset) % span);
}

/// `H`, `H(a-b)`, `H/n`, `H(a-b)/n`: a value chosen by the stable hash of the task.
void add_hashed(FieldValues& out, std::string_view item, const FieldInfo& field,
                std::string_view hash_key) {
  if (field.kind == FieldKind::year) throw ParseFailure{"H is not allowed in the year field"};
  int low = field.min;
  // Days 29-31 do not exist in every month, so a hashed day stays within 1-28 (as Jenkins).
  int high = field.kind == FieldKind::day_of_month ? 28
             : field.kind == FieldKind::day_of_week ? 6
                                                     : field.max;
  std::string_view rest = item.substr(1);
  if (!rest.empty() && rest.front() == '(') {
    const auto close = rest.find(')');
    if (close == std::string_view::npos) throw ParseFailure{"H( is missing its closing )"};
    const std::string_view range = rest.substr(1, close - 1);
    const auto dash = range.find('-');
    if (dash == std::string_view::npos)
      throw ParseFailure{fmt::format("H({}) needs a range such as H(0-29)", range)};
    low = parse_value(range.substr(0, dash), field);
    high = parse_value(range.substr(dash + 1), field);
    if (low > high) throw ParseFailure{fmt::format("range {}-{} runs backwards", low, high)};
    rest = rest.substr(close + 1);
  }
  int step = 0;
  if (!rest.empty()) {
    if (rest.front() != '/') throw ParseFailure{fmt::format("\"{}\" is not valid after H", rest)};
    step = parse_step(rest.substr(1), high - low + 1);
  }
  const std::string seed = fmt::format("{}\x1f{}", hash_key, field.name);
  const std::uint64_t hash = stable_hash(seed);
  if (step == 0) {
    out.values.push_back(low + static_cast<int>(hash % static_cast<std::uint64_t>(high - low + 1)));
  } else {
    const int start = low + static_cast<int>(hash % static_cast<std::uint64_t>(step));
    add_range(out, start, high, step, field);
  }
}

/// Day-of-month specials: `L`, `L-n`, `LW`, `nW`. True when `item` was one of them.
bool parse_day_of_month_special(std::string_view item, CronFields& out) {
  const std::string u = upper(item);
  if (u == "L") {
    out.days_before_last |= 1u;
    return true;
  }
  if (u == "LW") {
    out.last_weekday_of_month = true;
    return true;
  }
  if (u.size() > 2 && u[0] == 'L' && u[1] == '-') {
    int offset = 0;
    const auto [end, ec] = std::from_chars(u.data() + 2, u.data() + u.size(), offset);
    if (ec != std::errc{} || end != u.data() + u.size() || offset < 0 || offset > 30)
      throw ParseFailure{fmt::format("\"{}\": the offset in L-n must be 0-30", item)};
    out.days_before_last |= 1u << offset;
    return true;
  }
  if (u.size() > 1 && u.back() == 'W') {
    const int day = parse_value(std::string_view(u).substr(0, u.size() - 1), k_day_of_month);
    out.nearest_weekday |= 1u << day;
    return true;
  }
  return false;
}

/// Day-of-week specials: `nL` and `n#k`. True when `item` was one of them.
bool parse_day_of_week_special(std::string_view item, CronFields& out) {
  const std::string u = upper(item);
  if (const auto hash = u.find('#'); hash != std::string::npos) {
    const int weekday = parse_value(std::string_view(u).substr(0, hash), k_day_of_week) % 7;
    int nth = 0;
    const char* first = u.data() + hash + 1;
    const auto [end, ec] = std::from_chars(first, u.data() + u.size(), nth);
    if (ec != std::errc{} || end != u.data() + u.size() || nth < 1 || nth > 5)
      throw ParseFailure{fmt::format("\"{}\": the week number after # must be 1-5", item)};
    out.nth_weekday |= std::uint64_t{1} << (weekday * 5 + nth - 1);
    return true;
  }
  if (u == "L") throw ParseFailure{"L needs a weekday before it, e.g. 5L for the last Friday"};
  if (u.size() > 1 && u.back() == 'L') {
    const int weekday = parse_value(std::string_view(u).substr(0, u.size() - 1), k_day_of_week);
    out.last_weekday |= static_cast<std::uint8_t>(1u << (weekday % 7));
    return true;
  }
  return false;
}

/// Parses one comma-separated field into values (plain items) and specials (into `out`).
FieldValues parse_field(std::string_view text, const FieldInfo& field, std::string_view hash_key,
                        CronFields& out) {
  FieldValues result;
  result.restricted = !(text.front() == '*' || text == "?");
  std::size_t pos = 0;
  while (true) {
    const auto comma = text.find(',', pos);
    const std::string_view item =
        text.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    if (item.empty()) throw ParseFailure{"empty list item"};
    const bool day_field =
        field.kind == FieldKind::day_of_month || field.kind == FieldKind::day_of_week;
    if (item == "?") {
      if (!day_field) throw ParseFailure{"? is only allowed in the day-of-month and day-of-week fields"};
      if (text != "?") throw ParseFailure{"? cannot be part of a list"};
      add_range(result, field.min, field.max, 1, field);
    } else if (item.front() == 'H' || item.front() == 'h') {
      add_hashed(result, item, field, hash_key);
    } else if (field.kind == FieldKind::day_of_month && parse_day_of_month_special(item, out)) {
    } else if (field.kind == FieldKind::day_of_week && parse_day_of_week_special(item, out)) {
    } else {
      const auto slash = item.find('/');
      const std::string_view range = item.substr(0, slash);
      int first = field.min;
      int last = field.max;
      if (range == "*") {
      } else if (const auto dash = range.find('-'); dash != std::string_view::npos) {
        first = parse_value(range.substr(0, dash), field);
        last = parse_value(range.substr(dash + 1), field);
      } else {
        first = parse_value(range, field);
        // `a/n` runs from a to the end of the field; a bare `a` is the single value.
        last = slash == std::string_view::npos ? first : field.max;
      }
      int step = 1;
      if (slash != std::string_view::npos) {
        step = parse_step(item.substr(slash + 1), field.max - field.min + 1);
      }
      add_range(result, first, last, step, field);
    }
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  return result;
}

template <typename Bits>
Bits to_bits(const FieldValues& values) {
  Bits bits = 0;
  for (int v : values.values) bits |= static_cast<Bits>(Bits{1} << v);
  return bits;
}

std::string_view expand_macro(std::string_view text, bool& known) {
  known = true;
  const std::string u = upper(text);
  if (u == "@YEARLY" || u == "@ANNUALLY") return "0 0 1 1 *";
  if (u == "@MONTHLY") return "0 0 1 * *";
  if (u == "@WEEKLY") return "0 0 * * 0";
  if (u == "@DAILY" || u == "@MIDNIGHT") return "0 0 * * *";
  if (u == "@HOURLY") return "0 * * * *";
  known = false;
  return text;
}

}  // namespace

bool parse_cron_fields(std::string_view text, std::string_view hash_key, CronFields& out,
                       ValidationError& error) {
  error = {};
  error.input = fmt::format("cron expression \"{}\"", text.substr(0, 200));
  auto fail = [&](std::string field, std::string reason) {
    error.field = std::move(field);
    error.reason = std::move(reason);
    return false;
  };
  if (text.size() > k_max_expression_length)
    return fail("", fmt::format("longer than {} characters", k_max_expression_length));
  for (unsigned char c : text)
    if (c < 0x20 || c >= 0x7f) return fail("", "contains a character that is not printable ASCII");

  // Surrounding blanks are forgiven; fields are separated by runs of spaces or tabs.
  const auto begin = text.find_first_not_of(" \t");
  if (begin == std::string_view::npos) return fail("", "is empty");
  text = text.substr(begin, text.find_last_not_of(" \t") - begin + 1);

  if (text.front() == '@') {
    bool known = false;
    text = expand_macro(text, known);
    if (!known) {
      if (upper(text).rfind("@EVERY", 0) == 0)
        return fail("", "@every is an interval schedule, not a cron expression");
      return fail("", fmt::format("unknown macro \"{}\" (known: @yearly @annually @monthly "
                                  "@weekly @daily @midnight @hourly @every)", text));
    }
  }

  std::vector<std::string_view> parts;
  for (std::size_t pos = 0; pos < text.size();) {
    const auto end = text.find_first_of(" \t", pos);
    parts.push_back(text.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos));
    if (end == std::string_view::npos) break;
    pos = text.find_first_not_of(" \t", end);
  }
  if (parts.size() < 5 || parts.size() > 7)
    return fail("", fmt::format("expected 5, 6 or 7 fields, got {}", parts.size()));

  CronFields fields;
  fields.has_seconds_field = parts.size() >= 6;
  fields.has_year_field = parts.size() == 7;
  const std::size_t base = fields.has_seconds_field ? 1 : 0;
  const FieldInfo* current = &k_second;
  try {
    if (fields.has_seconds_field) {
      fields.seconds = to_bits<std::uint64_t>(parse_field(parts[0], k_second, hash_key, fields));
    } else {
      fields.seconds = 1;  // second 0
    }
    current = &k_minute;
    fields.minutes = to_bits<std::uint64_t>(parse_field(parts[base], k_minute, hash_key, fields));
    current = &k_hour;
    fields.hours = to_bits<std::uint32_t>(parse_field(parts[base + 1], k_hour, hash_key, fields));
    current = &k_day_of_month;
    const FieldValues days = parse_field(parts[base + 2], k_day_of_month, hash_key, fields);
    fields.days = to_bits<std::uint32_t>(days);
    fields.day_of_month_restricted = days.restricted;
    current = &k_month;
    fields.months = to_bits<std::uint16_t>(parse_field(parts[base + 3], k_month, hash_key, fields));
    current = &k_day_of_week;
    FieldValues weekdays = parse_field(parts[base + 4], k_day_of_week, hash_key, fields);
    for (int& v : weekdays.values) v %= 7;  // 7 is Sunday too
    fields.weekdays = to_bits<std::uint8_t>(weekdays);
    fields.day_of_week_restricted = weekdays.restricted;
    current = &k_year;
    if (fields.has_year_field) {
      for (int y : parse_field(parts[6], k_year, hash_key, fields).values)
        fields.years.set(static_cast<std::size_t>(y - k_min_year));
    } else {
      fields.years.set();
    }
  } catch (const ParseFailure& failure) {
    return fail(current->name, failure.reason);
  }

  if (!next_local_match(fields, date::local_seconds{date::local_days{date::year{k_min_year} / 1 / 1}} -
                                    std::chrono::seconds{1}))
    return fail("", "never fires: no date matches its day-of-month, month, day-of-week and year "
                    "fields");
  out = fields;
  return true;
}

}  // namespace quartzflow::detail
