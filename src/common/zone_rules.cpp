// SPDX-License-Identifier: Apache-2.0
#include "zone_rules.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>

namespace quartzflow::detail {

namespace {

using std::chrono::seconds;

// A span reaching past this is the file's last, open-ended one.
constexpr Instant k_open_ended = date::sys_days{date::year{2200} / 1 / 1};

class Cursor {
 public:
  explicit Cursor(std::string_view text) : text_(text) {}
  bool done() const { return pos_ >= text_.size(); }
  char peek() const { return done() ? '\0' : text_[pos_]; }
  bool take(char c) {
    if (peek() != c) return false;
    ++pos_;
    return true;
  }

  /// An abbreviation: 3+ letters, or anything but '>' inside angle brackets.
  std::optional<std::string> abbrev() {
    std::string out;
    if (take('<')) {
      while (!done() && peek() != '>') out += text_[pos_++];
      if (!take('>')) return std::nullopt;
    } else {
      while (std::isalpha(static_cast<unsigned char>(peek())) != 0) out += text_[pos_++];
    }
    if (out.size() < 3) return std::nullopt;
    return out;
  }

  std::optional<int> number(int max) {
    if (std::isdigit(static_cast<unsigned char>(peek())) == 0) return std::nullopt;
    int value = 0;
    while (std::isdigit(static_cast<unsigned char>(peek())) != 0) {
      value = value * 10 + (text_[pos_++] - '0');
      if (value > max) return std::nullopt;
    }
    return value;
  }

  /// [+-]hh[:mm[:ss]], hours up to `max_hours`.
  std::optional<seconds> hms(int max_hours) {
    const int sign = take('-') ? -1 : (take('+'), 1);
    const auto h = number(max_hours);
    if (!h) return std::nullopt;
    int m = 0, s = 0;
    if (take(':')) {
      const auto mm = number(59);
      if (!mm) return std::nullopt;
      m = *mm;
      if (take(':')) {
        const auto ss = number(59);
        if (!ss) return std::nullopt;
        s = *ss;
      }
    }
    return seconds{sign * (*h * 3600 + m * 60 + s)};
  }

  std::optional<PosixTimeZone::Rule> rule() {
    using Kind = PosixTimeZone::Rule::Kind;
    PosixTimeZone::Rule r;
    if (take('M')) {
      const auto month = number(12);
      if (!month || *month < 1 || !take('.')) return std::nullopt;
      const auto week = number(5);
      if (!week || *week < 1 || !take('.')) return std::nullopt;
      const auto weekday = number(6);
      if (!weekday) return std::nullopt;
      r = {Kind::month_week_day, *month, *week, *weekday, 0, r.time};
    } else if (take('J')) {
      const auto day = number(365);
      if (!day || *day < 1) return std::nullopt;
      r.kind = Kind::julian_no_leap;
      r.day = *day;
    } else {
      const auto day = number(365);
      if (!day) return std::nullopt;
      r.kind = Kind::zero_based;
      r.day = *day;
    }
    if (take('/')) {
      const auto time = hms(167);  // RFC 8536 3.3.1 extends POSIX to -167..167 hours
      if (!time) return std::nullopt;
      r.time = *time;
    }
    return r;
  }

 private:
  std::string_view text_;
  std::size_t pos_ = 0;
};

/// Local midnight (as a count of days) of the rule's day in `year`.
date::sys_days rule_day(const PosixTimeZone::Rule& rule, int year) {
  using Kind = PosixTimeZone::Rule::Kind;
  const date::year y{year};
  switch (rule.kind) {
    case Kind::julian_no_leap: {
      // Day 1-365; February 29 is never counted, so day 60 is March 1 in every year.
      const auto jan1 = date::sys_days{y / 1 / 1};
      const int extra = (y.is_leap() && rule.day >= 60) ? 1 : 0;
      return jan1 + date::days{rule.day - 1 + extra};
    }
    case Kind::zero_based: return date::sys_days{y / 1 / 1} + date::days{rule.day};
    case Kind::month_week_day: break;
  }
  const date::month m{static_cast<unsigned>(rule.month)};
  const date::weekday wd{static_cast<unsigned>(rule.weekday)};
  if (rule.week == 5) return date::sys_days{y / m / date::weekday_last{wd}};
  return date::sys_days{y / m / wd[static_cast<unsigned>(rule.week)]};
}

/// The file's footer: its last non-empty line (RFC 8536 3.3: "\n<TZ string>\n").
std::optional<PosixTimeZone> footer_of(const std::string& zone_name) {
  const char* dir = std::getenv("TZDIR");
  std::ifstream file(std::string(dir && *dir ? dir : "/usr/share/zoneinfo") + "/" + zone_name, std::ios::binary);
  if (!file) return std::nullopt;
  file.seekg(0, std::ios::end);
  const auto size = static_cast<std::streamoff>(file.tellg());
  const std::streamoff tail = std::min<std::streamoff>(size, 256);
  std::string text(static_cast<std::size_t>(tail), '\0');
  file.seekg(size - tail);
  file.read(text.data(), tail);
  if (text.size() < 2 || text.back() != '\n') return std::nullopt;
  text.pop_back();
  const auto newline = text.rfind('\n');
  if (newline == std::string::npos) return std::nullopt;
  return PosixTimeZone::parse(std::string_view(text).substr(newline + 1));
}

}  // namespace

std::optional<PosixTimeZone> PosixTimeZone::parse(std::string_view text) {
  Cursor in(text);
  PosixTimeZone tz;
  const auto std_abbrev = in.abbrev();
  const auto std_offset = std_abbrev ? in.hms(24) : std::nullopt;
  if (!std_offset) return std::nullopt;
  tz.std_abbrev = *std_abbrev;
  tz.std_offset = -*std_offset;
  if (in.done()) {
    tz.dst_offset = tz.std_offset;
    return tz;
  }
  const auto dst_abbrev = in.abbrev();
  if (!dst_abbrev) return std::nullopt;
  tz.dst_abbrev = *dst_abbrev;
  tz.has_dst = true;
  tz.dst_offset = tz.std_offset + std::chrono::hours{1};
  if (in.peek() != ',') {
    const auto offset = in.hms(24);
    if (!offset) return std::nullopt;
    tz.dst_offset = -*offset;
  }
  // Without rules POSIX leaves the dates to the implementation; the TZif footer always has them.
  if (!in.take(',')) return std::nullopt;
  const auto start = in.rule();
  if (!start || !in.take(',')) return std::nullopt;
  const auto end = in.rule();
  if (!end || !in.done()) return std::nullopt;
  tz.start = *start;
  tz.end = *end;
  return tz;
}

date::sys_info PosixTimeZone::info_at(Instant t) const {
  const auto standard = [&](Instant from, Instant until) {
    return date::sys_info{from, until, std_offset, std::chrono::minutes{0}, std_abbrev};
  };
  if (!has_dst) return standard(Instant::min(), Instant::max());
  // Every change from the year before to the year after, in order: (instant, DST after it).
  std::array<std::pair<Instant, bool>, 6> changes;
  const int year = static_cast<int>(date::year_month_day{date::floor<date::days>(t)}.year());
  std::size_t n = 0;
  for (int y = year - 1; y <= year + 1; ++y) {
    changes[n++] = {Instant{rule_day(start, y)} + start.time - std_offset, true};
    changes[n++] = {Instant{rule_day(end, y)} + end.time - dst_offset, false};
  }
  std::sort(changes.begin(), changes.end());
  const auto after = std::upper_bound(changes.begin(), changes.end(), std::pair{t, true},
                                      [](const auto& a, const auto& b) { return a.first < b.first; });
  // `changes` spans three years, so `t` (in the middle one) has a change on each side.
  const auto& [from, dst] = *std::prev(after);
  const Instant until = after->first;
  if (!dst) return standard(from, until);
  return date::sys_info{from, until, dst_offset,
                        std::chrono::duration_cast<std::chrono::minutes>(dst_offset - std_offset), dst_abbrev};
}

date::sys_info zone_info(const date::time_zone* zone, Instant t) {
  date::sys_info info = zone->get_info(t);
  if (Instant{info.end} < k_open_ended) return info;
  // Past the last listed transition: the footer's rule, read once per zone.
  static std::mutex mutex;
  static std::map<const date::time_zone*, std::optional<PosixTimeZone>> footers;
  const PosixTimeZone* rule = nullptr;
  {
    std::lock_guard lock(mutex);
    auto it = footers.find(zone);
    if (it == footers.end()) it = footers.emplace(zone, footer_of(zone->name())).first;
    if (it->second && it->second->has_dst) rule = &*it->second;
  }
  if (rule == nullptr) return info;
  date::sys_info later = rule->info_at(t);
  later.begin = std::max(later.begin, info.begin);
  return later;
}

}  // namespace quartzflow::detail
