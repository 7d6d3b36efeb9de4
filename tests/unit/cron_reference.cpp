// SPDX-License-Identifier: Apache-2.0
// A brute-force reference for the cron dialect, written from the dialect's rules and not from
// the engine: it walks UTC instants one by one, reads the civil time in the zone, and applies
// the DST gap/overlap policy literally. The engine's next()/prev() are compared with it on
// random expressions, around real DST transitions, and on hand-computed fires.

#include <catch2/catch.hpp>

#include <date/date.h>
#include <date/tz.h>

#include <quartzflow/cron.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace {

namespace qf = quartzflow;
using qf::Instant;
using std::chrono::seconds;

constexpr std::int64_t k_seconds_per_day = 86400;
/// How far the reference scans for a random expression; a fire further away is not compared.
constexpr int k_scan_days = 62;
constexpr seconds k_scan_horizon{k_scan_days * k_seconds_per_day};
/// Scan span for the hand-computed cases, long enough for yearly fires.
constexpr seconds k_hand_horizon{400 * k_seconds_per_day};

// ---------------------------------------------------------------------------------------------
// Small helpers: whole seconds since the epoch, and text for messages.

std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  std::int64_t q = a / b;
  if (a % b != 0 && ((a < 0) != (b < 0))) --q;
  return q;
}

std::int64_t count_of(Instant t) { return t.time_since_epoch().count(); }
Instant instant_of(std::int64_t s) { return Instant{seconds{s}}; }

std::string iso(Instant t) { return date::format("%FT%TZ", t); }
std::string iso(const std::optional<Instant>& t) { return t ? iso(*t) : std::string("none"); }

Instant parse_iso(std::string_view text) {
  const auto t = qf::parse_rfc3339(text);
  if (!t) throw std::invalid_argument("bad instant in test: " + std::string(text));
  return *t;
}

const char* gap_name(qf::DstGapPolicy gap) {
  return gap == qf::DstGapPolicy::shift ? "shift" : "skip";
}

const char* overlap_name(qf::DstOverlapPolicy overlap) {
  switch (overlap) {
    case qf::DstOverlapPolicy::first: return "first";
    case qf::DstOverlapPolicy::last: return "last";
    case qf::DstOverlapPolicy::both: return "both";
  }
  return "?";
}

constexpr std::array<qf::DstGapPolicy, 2> k_gap_policies{qf::DstGapPolicy::shift,
                                                         qf::DstGapPolicy::skip};
constexpr std::array<qf::DstOverlapPolicy, 3> k_overlap_policies{
    qf::DstOverlapPolicy::first, qf::DstOverlapPolicy::last, qf::DstOverlapPolicy::both};

// ---------------------------------------------------------------------------------------------
// The fields of the dialect.

constexpr std::array<const char*, 12> k_month_names{"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                                    "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
constexpr std::array<const char*, 7> k_weekday_names{"SUN", "MON", "TUE", "WED",
                                                     "THU", "FRI", "SAT"};

struct FieldDef {
  const char* label;
  int lo;
  int hi;
  int wrap_hi;               ///< a wrapping range a-b (a > b) walks a..wrap_hi, then lo..b
  const char* const* names;  ///< names[i] spells the value name_base + i
  int name_count;
  int name_base;
};

constexpr FieldDef k_second_field{"second", 0, 59, 59, nullptr, 0, 0};
constexpr FieldDef k_minute_field{"minute", 0, 59, 59, nullptr, 0, 0};
constexpr FieldDef k_hour_field{"hour", 0, 23, 23, nullptr, 0, 0};
constexpr FieldDef k_dom_field{"day-of-month", 1, 31, 31, nullptr, 0, 0};
constexpr FieldDef k_month_field{"month", 1, 12, 12, k_month_names.data(), 12, 1};
// 0 and 7 are Sunday; a wrapping range such as FRI-MON walks 5,6,0,1.
constexpr FieldDef k_dow_field{"day-of-week", 0, 7, 6, k_weekday_names.data(), 7, 0};
constexpr FieldDef k_year_field{"year", 1970, 2199, 2199, nullptr, 0, 0};

/// The values a plain field accepts, one flag per value.
class ValueSet {
 public:
  ValueSet() = default;
  ValueSet(int lo, int hi) : lo_(lo), flags_(static_cast<std::size_t>(hi - lo + 1), 0) {}

  void add(int v) { flags_.at(static_cast<std::size_t>(v - lo_)) = 1; }
  void add_all() { std::fill(flags_.begin(), flags_.end(), 1); }
  bool has(int v) const {
    return v >= lo_ && v - lo_ < static_cast<int>(flags_.size()) &&
           flags_[static_cast<std::size_t>(v - lo_)] != 0;
  }
  std::size_t count() const {
    return static_cast<std::size_t>(std::count(flags_.begin(), flags_.end(), 1));
  }

 private:
  int lo_ = 0;
  std::vector<char> flags_;
};

// ---------------------------------------------------------------------------------------------
// The reference reading of an expression.

enum class DomRule { values, last_day, last_day_minus, nearest_weekday, last_weekday };
enum class DowRule { values, last_in_month, nth_in_month };

struct ReferenceExpr {
  ValueSet second, minute, hour, dom, month, dow, year;
  DomRule dom_rule = DomRule::values;
  int dom_arg = 0;  ///< n of L-n and nW
  DowRule dow_rule = DowRule::values;
  int dow_weekday = 0;  ///< 0 = Sunday, for nL and n#k
  int dow_nth = 0;      ///< k of n#k
  bool dom_restricted = false;
  bool dow_restricted = false;
  bool fixed_time = false;

  bool time_matches(std::int64_t second_of_day) const {
    return hour.has(static_cast<int>(second_of_day / 3600)) &&
           minute.has(static_cast<int>(second_of_day / 60 % 60)) &&
           second.has(static_cast<int>(second_of_day % 60));
  }

  /// Whether the civil date `days` since 1970-01-01 matches year, month and the day fields.
  bool day_matches(std::int64_t days) const {
    const date::sys_days day{date::days{days}};
    const date::year_month_day ymd{day};
    if (!year.has(static_cast<int>(ymd.year()))) return false;
    if (!month.has(static_cast<int>(static_cast<unsigned>(ymd.month())))) return false;
    const int d = static_cast<int>(static_cast<unsigned>(ymd.day()));
    const int last = static_cast<int>(static_cast<unsigned>(
        date::year_month_day_last{ymd.year(), date::month_day_last{ymd.month()}}.day()));
    const int weekday = static_cast<int>(date::weekday{day}.c_encoding());
    const bool dom_ok = dom_matches(d, last, weekday);
    const bool dow_ok = dow_matches(d, last, weekday);
    if (dom_restricted && dow_restricted) return dom_ok || dow_ok;
    return dom_ok && dow_ok;
  }

  /// Whether the civil reading `local` (seconds since 1970-01-01T00:00 local) matches.
  bool reading_matches(std::int64_t local) const {
    const std::int64_t days = floor_div(local, k_seconds_per_day);
    return time_matches(local - days * k_seconds_per_day) && day_matches(days);
  }

  /// Whether any civil day of 1970-2199 matches (hour, minute, second are never empty).
  bool matches_some_day() const {
    const std::int64_t from = date::sys_days{date::year{1970} / 1 / 1}.time_since_epoch().count();
    const std::int64_t to = date::sys_days{date::year{2200} / 1 / 1}.time_since_epoch().count();
    for (std::int64_t d = from; d < to; ++d) {
      if (day_matches(d)) return true;
    }
    return false;
  }

 private:
  static int weekday_of(int day, int known_day, int known_weekday) {
    return ((known_weekday + day - known_day) % 7 + 7) % 7;
  }

  bool dom_matches(int d, int last, int weekday) const {
    switch (dom_rule) {
      case DomRule::values: return dom.has(d);
      case DomRule::last_day: return d == last;
      case DomRule::last_day_minus: return last - dom_arg >= 1 && d == last - dom_arg;
      case DomRule::nearest_weekday: {
        const int n = dom_arg;
        if (n > last) return false;  // day n does not exist this month
        const int w = weekday_of(n, d, weekday);
        int target = n;
        if (w == 6) target = n == 1 ? 3 : n - 1;          // Saturday
        if (w == 0) target = n + 1 <= last ? n + 1 : n - 2;  // Sunday
        return d == target;
      }
      case DomRule::last_weekday: {
        const int w = weekday_of(last, d, weekday);
        const int target = w == 6 ? last - 1 : w == 0 ? last - 2 : last;
        return d == target;
      }
    }
    return false;
  }

  bool dow_matches(int d, int last, int weekday) const {
    switch (dow_rule) {
      case DowRule::values: return dow.has(weekday) || (weekday == 0 && dow.has(7));
      case DowRule::last_in_month: return weekday == dow_weekday && d + 7 > last;
      case DowRule::nth_in_month: return weekday == dow_weekday && (d - 1) / 7 + 1 == dow_nth;
    }
    return false;
  }
};

[[noreturn]] void reference_reject(const FieldDef& field, std::string_view text, const char* why) {
  throw std::invalid_argument(std::string("reference parser: ") + field.label + " \"" +
                              std::string(text) + "\": " + why);
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isdigit(static_cast<unsigned char>(c)) != 0;
  });
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::vector<std::string_view> split(std::string_view s, char separator) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  for (;;) {
    const std::size_t at = s.find(separator, start);
    parts.push_back(s.substr(start, at == std::string_view::npos ? std::string_view::npos
                                                                  : at - start));
    if (at == std::string_view::npos) return parts;
    start = at + 1;
  }
}

int parse_int(const FieldDef& field, std::string_view token) {
  if (!all_digits(token) || token.size() > 6) reference_reject(field, token, "not a number");
  return std::stoi(std::string(token));
}

int parse_value(const FieldDef& field, std::string_view token) {
  int v = 0;
  if (all_digits(token)) {
    v = parse_int(field, token);
  } else {
    const std::string name = upper(token);
    int found = -1;
    for (int i = 0; i < field.name_count; ++i) {
      if (name == field.names[i]) found = field.name_base + i;
    }
    if (found < 0) reference_reject(field, token, "unknown name");
    v = found;
  }
  if (v < field.lo || v > field.hi) reference_reject(field, token, "out of range");
  return v;
}

/// A comma list of `*`, `n`, `a-b`, `*/n`, `a-b/n`, `a/n` items.
ValueSet parse_list(const FieldDef& field, std::string_view text) {
  ValueSet set(field.lo, field.hi);
  for (const std::string_view item : split(text, ',')) {
    const std::size_t slash = item.find('/');
    const std::string_view base = item.substr(0, slash);
    int step = 1;
    if (slash != std::string_view::npos) {
      step = parse_int(field, item.substr(slash + 1));
      if (step < 1) reference_reject(field, item, "step 0");
    }
    std::vector<int> walk;
    const std::size_t dash = base.find('-');
    if (base == "*") {
      for (int v = field.lo; v <= field.hi; ++v) walk.push_back(v);
    } else if (dash != std::string_view::npos) {
      const int a = parse_value(field, base.substr(0, dash));
      const int b = parse_value(field, base.substr(dash + 1));
      if (a <= b) {
        for (int v = a; v <= b; ++v) walk.push_back(v);
      } else {
        for (int v = a; v <= field.wrap_hi; ++v) walk.push_back(v);
        for (int v = field.lo; v <= b; ++v) walk.push_back(v);
      }
    } else {
      const int a = parse_value(field, base);
      if (slash == std::string_view::npos) {
        walk.push_back(a);
      } else {
        for (int v = a; v <= field.hi; ++v) walk.push_back(v);
      }
    }
    if (walk.empty()) reference_reject(field, item, "empty walk");
    for (std::size_t i = 0; i < walk.size(); i += static_cast<std::size_t>(step)) set.add(walk[i]);
  }
  return set;
}

void parse_dom(ReferenceExpr& r, std::string_view text) {
  r.dom = ValueSet(1, 31);
  if (text == "?") {
    r.dom.add_all();
  } else if (text == "L") {
    r.dom_rule = DomRule::last_day;
  } else if (text == "LW") {
    r.dom_rule = DomRule::last_weekday;
  } else if (text.size() > 2 && text.substr(0, 2) == "L-") {
    r.dom_rule = DomRule::last_day_minus;
    r.dom_arg = parse_int(k_dom_field, text.substr(2));
    if (r.dom_arg > 30) reference_reject(k_dom_field, text, "L-n beyond 30");
  } else if (text.size() > 1 && text.back() == 'W') {
    r.dom_rule = DomRule::nearest_weekday;
    r.dom_arg = parse_value(k_dom_field, text.substr(0, text.size() - 1));
  } else {
    r.dom = parse_list(k_dom_field, text);
  }
  r.dom_restricted = !(text.front() == '*' || text == "?");
}

void parse_dow(ReferenceExpr& r, std::string_view text) {
  r.dow = ValueSet(0, 7);
  const std::size_t hash = text.find('#');
  if (text == "?") {
    r.dow.add_all();
  } else if (text.size() > 1 && text.back() == 'L') {
    r.dow_rule = DowRule::last_in_month;
    r.dow_weekday = parse_value(k_dow_field, text.substr(0, text.size() - 1)) % 7;
  } else if (hash != std::string_view::npos) {
    r.dow_rule = DowRule::nth_in_month;
    r.dow_weekday = parse_value(k_dow_field, text.substr(0, hash)) % 7;
    r.dow_nth = parse_int(k_dow_field, text.substr(hash + 1));
    if (r.dow_nth < 1 || r.dow_nth > 5) reference_reject(k_dow_field, text, "k of n#k");
  } else {
    r.dow = parse_list(k_dow_field, text);
  }
  r.dow_restricted = !(text.front() == '*' || text == "?");
}

ReferenceExpr parse_reference(std::string_view text) {
  std::string expanded(text);
  if (!text.empty() && text.front() == '@') {
    if (text == "@yearly" || text == "@annually") expanded = "0 0 1 1 *";
    else if (text == "@monthly") expanded = "0 0 1 * *";
    else if (text == "@weekly") expanded = "0 0 * * 0";
    else if (text == "@daily" || text == "@midnight") expanded = "0 0 * * *";
    else if (text == "@hourly") expanded = "0 * * * *";
    else throw std::invalid_argument("reference parser: unknown macro " + expanded);
  }
  std::istringstream in(expanded);
  std::vector<std::string> fields;
  for (std::string f; in >> f;) fields.push_back(f);
  if (fields.size() == 5) fields.insert(fields.begin(), "0");
  if (fields.size() == 6) fields.emplace_back("*");
  if (fields.size() != 7) throw std::invalid_argument("reference parser: field count: " + expanded);

  ReferenceExpr r;
  r.second = parse_list(k_second_field, fields[0]);
  r.minute = parse_list(k_minute_field, fields[1]);
  r.hour = parse_list(k_hour_field, fields[2]);
  parse_dom(r, fields[3]);
  r.month = parse_list(k_month_field, fields[4]);
  parse_dow(r, fields[5]);
  r.year = parse_list(k_year_field, fields[6]);
  r.fixed_time = r.hour.count() == 1 && r.minute.count() == 1;
  return r;
}

// ---------------------------------------------------------------------------------------------
// The reference schedule: an expression read in a zone under a DST policy.

class ReferenceSchedule {
 public:
  ReferenceSchedule(ReferenceExpr expr, const date::time_zone* zone, qf::DstGapPolicy gap,
                    qf::DstOverlapPolicy overlap)
      : expr_(std::move(expr)), zone_(zone), gap_(gap), overlap_(overlap) {}

  /// The literal rule: does the schedule fire at instant t?
  bool fires(Instant t) const {
    const date::sys_info& info = info_at(t);
    const std::int64_t offset = info.offset.count();
    const std::int64_t local = count_of(t) + offset;
    if (expr_.reading_matches(local)) {
      if (!expr_.fixed_time || overlap_ == qf::DstOverlapPolicy::both) return true;
      const std::vector<std::int64_t> occurrences = instants_reading(local);
      const bool first_time = occurrences.front() == count_of(t);
      const bool last_time = occurrences.back() == count_of(t);
      if (overlap_ == qf::DstOverlapPolicy::first && first_time) return true;
      if (overlap_ == qf::DstOverlapPolicy::last && last_time) return true;
    }
    if (expr_.fixed_time && gap_ == qf::DstGapPolicy::shift && info.begin == t) {
      // t is where the clock jumps from offset `before` to `offset`; the readings
      // [t + before, t + offset) never occur. Shift any matching one to t.
      const std::int64_t before = zone_->get_info(t - seconds{1}).offset.count();
      for (std::int64_t reading = count_of(t) + before; reading < count_of(t) + offset; ++reading) {
        if (expr_.reading_matches(reading)) return true;
      }
    }
    return false;
  }

  /// The first fire in (after, after + horizon].
  std::optional<Instant> next_within(Instant after, seconds horizon) const {
    const std::int64_t lo = count_of(after) + 1;
    const std::int64_t hi = count_of(after) + horizon.count() + 1;
    std::vector<Instant> found;
    for (std::int64_t m = floor_div(lo, 60) * 60; m < hi; m += 60) {
      scan_minute(m, lo, hi, found);
      if (!found.empty()) return found.front();
    }
    return std::nullopt;
  }

  /// The last fire in [before - horizon, before).
  std::optional<Instant> prev_within(Instant before, seconds horizon) const {
    const std::int64_t lo = count_of(before) - horizon.count();
    const std::int64_t hi = count_of(before);
    std::vector<Instant> found;
    for (std::int64_t m = floor_div(hi - 1, 60) * 60; m + 60 > lo; m -= 60) {
      scan_minute(m, lo, hi, found);
      if (!found.empty()) return found.back();
    }
    return std::nullopt;
  }

  /// Every fire in [lo, hi), in order.
  std::vector<Instant> fires_in(Instant lo, Instant hi) const {
    std::vector<Instant> found;
    for (std::int64_t m = floor_div(count_of(lo), 60) * 60; m < count_of(hi); m += 60) {
      scan_minute(m, count_of(lo), count_of(hi), found);
    }
    return found;
  }

 private:
  const date::sys_info& info_at(Instant t) const {
    if (!has_info_ || t < info_.begin || t >= info_.end) {
      info_ = zone_->get_info(t);
      has_info_ = true;
    }
    return info_;
  }

  /// Every instant whose local reading is `local`, ascending (none in a gap, two in an overlap).
  std::vector<std::int64_t> instants_reading(std::int64_t local) const {
    std::vector<std::int64_t> offsets;
    const Instant window_end = instant_of(local + 2 * k_seconds_per_day);
    date::sys_info info = zone_->get_info(instant_of(local - 2 * k_seconds_per_day));
    for (;;) {
      offsets.push_back(info.offset.count());
      if (info.end > window_end) break;
      info = zone_->get_info(info.end);
    }
    std::vector<std::int64_t> result;
    for (const std::int64_t offset : offsets) {
      const std::int64_t t = local - offset;
      if (zone_->get_info(instant_of(t)).offset.count() == offset) result.push_back(t);
    }
    std::sort(result.begin(), result.end());
    result.erase(std::unique(result.begin(), result.end()), result.end());
    return result;
  }

  bool day_matches_cached(std::int64_t days) const {
    if (days != cached_day_) {
      cached_day_ = days;
      cached_day_matches_ = expr_.day_matches(days);
    }
    return cached_day_matches_;
  }

  /// False only when no second of the minute starting at `m` can fire: the offset is constant
  /// over the minute, no transition starts at `m`, and the minute's reading does not match.
  bool minute_may_fire(std::int64_t m) const {
    const Instant start = instant_of(m);
    const date::sys_info& info = info_at(start);
    if (info.begin == start || info.end < start + seconds{60} || info.offset.count() % 60 != 0) {
      return true;  // look at every second
    }
    const std::int64_t local = m + info.offset.count();
    const std::int64_t days = floor_div(local, k_seconds_per_day);
    const std::int64_t second_of_day = local - days * k_seconds_per_day;
    return expr_.hour.has(static_cast<int>(second_of_day / 3600)) &&
           expr_.minute.has(static_cast<int>(second_of_day / 60 % 60)) &&
           day_matches_cached(days);
  }

  void scan_minute(std::int64_t m, std::int64_t lo, std::int64_t hi,
                   std::vector<Instant>& out) const {
    if (!minute_may_fire(m)) return;
    for (std::int64_t t = m; t < m + 60; ++t) {
      if (t >= lo && t < hi && fires(instant_of(t))) out.push_back(instant_of(t));
    }
  }

  ReferenceExpr expr_;
  const date::time_zone* zone_;
  qf::DstGapPolicy gap_;
  qf::DstOverlapPolicy overlap_;
  mutable date::sys_info info_{};
  mutable bool has_info_ = false;
  mutable std::int64_t cached_day_ = std::numeric_limits<std::int64_t>::min();
  mutable bool cached_day_matches_ = false;
};

/// Instants in [from, to) where the zone's UTC offset changes.
std::vector<Instant> offset_changes(const date::time_zone* zone, Instant from, Instant to) {
  std::vector<Instant> changes;
  date::sys_info info = zone->get_info(from);
  while (info.end < to) {
    const date::sys_info following = zone->get_info(info.end);
    if (following.offset != info.offset) changes.push_back(following.begin);
    info = following;
  }
  return changes;
}

// ---------------------------------------------------------------------------------------------
// Random expressions within the dialect.

class ExpressionGenerator {
 public:
  explicit ExpressionGenerator(std::uint32_t seed) : rng_(seed) {}

  int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  bool percent(int p) { return uniform(0, 99) < p; }

  std::string expression(int base_year) {
    const int shape = uniform(0, 99);
    if (shape < 5) {
      static constexpr std::array<const char*, 7> k_macros{
          "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"};
      return k_macros[static_cast<std::size_t>(uniform(0, 6))];
    }
    const bool with_seconds = shape >= 50;
    const bool with_year = shape >= 80;
    const std::string dom = dom_field();
    const std::string dow = dow_field(dom == "?");
    // One field per statement, so the order of random draws is fixed by the code.
    std::string text;
    if (with_seconds) text += (percent(40) ? std::string("0") : list(k_second_field, 25)) + " ";
    text += list(k_minute_field, 25) + " ";
    text += list(k_hour_field, 35) + " ";
    text += dom + " ";
    text += list(k_month_field, 60) + " ";
    text += dow;
    if (with_year) text += " " + year_field(base_year);
    return text;
  }

 private:
  std::string mixed_case(std::string_view name) {
    std::string out(name);
    for (char& c : out) {
      if (percent(50)) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    return out;
  }

  std::string value_text(const FieldDef& field, int v) {
    if (field.names != nullptr && v >= field.name_base && v < field.name_base + field.name_count &&
        percent(35)) {
      return mixed_case(field.names[v - field.name_base]);
    }
    return std::to_string(v);
  }

  static bool is_dow(const FieldDef& field) { return &field == &k_dow_field; }

  int step(const FieldDef& field) {
    const int max_step = is_dow(field) ? 6 : field.hi - field.lo;
    return percent(70) ? uniform(1, std::min(max_step, 6)) : uniform(1, max_step);
  }

  std::string item(const FieldDef& field) {
    // Ranges and steps of the day-of-week stay within 0-6 (7 only as a single value or as the
    // end of a-7), so that "does a wrapping walk or a/n pass through 7" never matters.
    const int top = is_dow(field) ? 6 : field.hi;
    const int kind = uniform(0, 99);
    if (kind < 35) return value_text(field, uniform(field.lo, field.hi));
    if (kind < 60) {
      if (is_dow(field) && percent(15)) return std::to_string(uniform(0, 6)) + "-7";
      const std::string a = value_text(field, uniform(field.lo, top));
      const std::string b = value_text(field, uniform(field.lo, top));
      return a + "-" + b;  // a > b wraps
    }
    if (kind < 72) return "*/" + std::to_string(step(field));
    if (kind < 87) {
      const std::string a = value_text(field, uniform(field.lo, top));
      const std::string b = value_text(field, uniform(field.lo, top));
      return a + "-" + b + "/" + std::to_string(step(field));
    }
    if (kind < 97) {
      const int a = uniform(field.lo, top);
      const int n = step(field);
      if (is_dow(field) && (7 - a) % n == 0) return value_text(field, a);
      return value_text(field, a) + "/" + std::to_string(n);
    }
    return "*";
  }

  std::string list(const FieldDef& field, int star_percent) {
    if (percent(star_percent)) return "*";
    const int items = percent(70) ? 1 : (percent(65) ? 2 : 3);
    std::string text = item(field);
    for (int i = 1; i < items; ++i) text += "," + item(field);
    return text;
  }

  std::string dom_field() {
    const int k = uniform(0, 99);
    if (k < 8) return "?";
    if (k < 40) return "*";
    if (k < 47) return "L";
    if (k < 51) return "L-" + std::to_string(percent(70) ? uniform(0, 5) : uniform(0, 30));
    if (k < 57) return std::to_string(uniform(1, 31)) + "W";
    if (k < 60) return "LW";
    return list(k_dom_field, 0);
  }

  std::string dow_field(bool dom_is_question) {
    const int k = uniform(0, 99);
    if (!dom_is_question && k < 12) return "?";
    if (k < 45) return "*";
    if (k < 52) return std::to_string(uniform(0, 7)) + "L";
    if (k < 60) {
      const int weekday = uniform(0, 7);
      return std::to_string(weekday) + "#" + std::to_string(uniform(1, 5));
    }
    return list(k_dow_field, 0);
  }

  std::string year_field(int y) {
    const auto s = [](int v) { return std::to_string(v); };
    switch (uniform(0, 7)) {
      case 0: return "*";
      case 1: return s(y);
      case 2: return s(y) + "-" + s(y + 1);
      case 3: return s(y - 1) + "-" + s(y);
      case 4: return s(y) + "," + s(y + 1) + (percent(50) ? "," + s(y + 3) : std::string());
      case 5: return "*/" + s(uniform(1, 3));
      case 6: {
        const int start = y - uniform(0, 2);
        return s(start) + "/" + s(uniform(1, 3));
      }
      default: return s(y - 2) + "-" + s(y + 2) + "/2";
    }
  }

  std::mt19937 rng_;
};

constexpr std::array<const char*, 7> k_random_zones{
    "UTC",           "America/New_York", "Europe/London",  "Australia/Lord_Howe",
    "Asia/Kolkata",  "America/Sao_Paulo", "Pacific/Chatham"};

/// A random instant in `year`: half the time within two days of one of the zone's offset changes.
Instant random_instant(ExpressionGenerator& gen, const date::time_zone* zone, int year) {
  const Instant year_start = date::sys_days{date::year{year} / 1 / 1};
  const Instant year_end = date::sys_days{date::year{year + 1} / 1 / 1};
  const std::vector<Instant> changes = offset_changes(zone, year_start, year_end);
  Instant t{};
  if (!changes.empty() && gen.percent(50)) {
    const int pick = gen.uniform(0, static_cast<int>(changes.size()) - 1);
    t = changes[static_cast<std::size_t>(pick)] + seconds{gen.uniform(-2 * 86400, 2 * 86400)};
  } else {
    t = year_start + seconds{gen.uniform(0, static_cast<int>((year_end - year_start).count()) - 1)};
  }
  if (gen.percent(30)) t = instant_of(floor_div(count_of(t), 60) * 60);  // a whole minute
  return t;
}

// ---------------------------------------------------------------------------------------------
// Comparisons.

struct ComparisonCounts {
  int next_compared = 0;
  int next_found = 0;  ///< comparisons where the reference found a fire within its scan
  int prev_compared = 0;
  int prev_found = 0;
};

std::optional<Instant> compare_next(const qf::CronExpr& engine, const ReferenceSchedule& reference,
                                    Instant after, ComparisonCounts& counts) {
  const std::optional<Instant> expected = reference.next_within(after, k_scan_horizon);
  const std::optional<Instant> actual = engine.next(after);
  INFO("next(" << iso(after) << "): reference " << iso(expected) << " (scanned " << k_scan_days
               << " days), engine " << iso(actual));
  ++counts.next_compared;
  if (expected) {
    ++counts.next_found;
    REQUIRE(iso(actual) == iso(*expected));
  } else {
    REQUIRE((!actual || *actual > after + k_scan_horizon));
  }
  return expected;
}

std::optional<Instant> compare_prev(const qf::CronExpr& engine, const ReferenceSchedule& reference,
                                    Instant before, ComparisonCounts& counts) {
  const std::optional<Instant> expected = reference.prev_within(before, k_scan_horizon);
  const std::optional<Instant> actual = engine.prev(before);
  INFO("prev(" << iso(before) << "): reference " << iso(expected) << " (scanned " << k_scan_days
               << " days), engine " << iso(actual));
  ++counts.prev_compared;
  if (expected) {
    ++counts.prev_found;
    REQUIRE(iso(actual) == iso(*expected));
  } else {
    REQUIRE((!actual || *actual < before - k_scan_horizon));
  }
  return expected;
}

std::string nth_or_end(const std::vector<Instant>& fires, std::size_t i) {
  return i < fires.size() ? iso(fires[i]) : std::string("(end)");
}

void require_same_fires(const std::vector<Instant>& expected, const std::vector<Instant>& actual) {
  std::size_t i = 0;
  while (i < expected.size() && i < actual.size() && expected[i] == actual[i]) ++i;
  const bool same = i == expected.size() && i == actual.size();
  INFO("reference has " << expected.size() << " fires, engine " << actual.size()
                        << "; first difference at #" << i << ": reference "
                        << nth_or_end(expected, i) << ", engine " << nth_or_end(actual, i));
  REQUIRE(same);
}

/// The engine's fires in [lo, hi) by chaining next() from just before lo.
std::vector<Instant> engine_fires_forward(const qf::CronExpr& engine, Instant lo, Instant hi,
                                          std::size_t cap) {
  std::vector<Instant> fires;
  Instant cursor = lo - seconds{1};
  while (fires.size() < cap) {
    const std::optional<Instant> n = engine.next(cursor);
    if (!n || *n >= hi) break;
    fires.push_back(*n);
    if (*n <= cursor) break;  // not strictly after: recorded, and the comparison will fail
    cursor = *n;
  }
  return fires;
}

/// The engine's fires in [lo, hi) by chaining prev() from hi, in ascending order.
std::vector<Instant> engine_fires_backward(const qf::CronExpr& engine, Instant lo, Instant hi,
                                           std::size_t cap) {
  std::vector<Instant> fires;
  Instant cursor = hi;
  while (fires.size() < cap) {
    const std::optional<Instant> p = engine.prev(cursor);
    if (!p || *p < lo) break;
    fires.push_back(*p);
    if (*p >= cursor) break;
    cursor = *p;
  }
  std::reverse(fires.begin(), fires.end());
  return fires;
}

qf::CronOptions options_for(std::string zone, qf::DstGapPolicy gap = qf::DstGapPolicy::shift,
                            qf::DstOverlapPolicy overlap = qf::DstOverlapPolicy::first) {
  qf::CronOptions options;
  options.time_zone = std::move(zone);
  options.gap = gap;
  options.overlap = overlap;
  return options;
}

/// Checks that both the engine and the reference give `expected` as the fires after `after`.
void expect_fires(std::string_view text, const qf::CronOptions& options, std::string_view after,
                  const std::vector<std::string>& expected) {
  INFO("\"" << text << "\" in " << options.time_zone << ", gap " << gap_name(options.gap)
            << ", overlap " << overlap_name(options.overlap) << ", fires after " << after);
  const qf::CronExpr engine = qf::CronExpr::parse(text, options);
  const ReferenceSchedule reference(parse_reference(text), date::locate_zone(options.time_zone),
                                    options.gap, options.overlap);
  std::vector<std::string> from_engine;
  std::vector<std::string> from_reference;
  Instant cursor = parse_iso(after);
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const std::optional<Instant> n = engine.next(cursor);
    if (!n) break;
    from_engine.push_back(iso(*n));
    cursor = *n;
  }
  cursor = parse_iso(after);
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const std::optional<Instant> n = reference.next_within(cursor, k_hand_horizon);
    if (!n) break;
    from_reference.push_back(iso(*n));
    cursor = *n;
  }
  CHECK(from_reference == expected);
  CHECK(from_engine == expected);
}

/// Checks that both the engine and the reference give `expected` as the last fire before `before`.
void expect_prev(std::string_view text, const qf::CronOptions& options, std::string_view before,
                 std::string_view expected) {
  INFO("\"" << text << "\" in " << options.time_zone << ", gap " << gap_name(options.gap)
            << ", overlap " << overlap_name(options.overlap) << ", last fire before " << before);
  const qf::CronExpr engine = qf::CronExpr::parse(text, options);
  const ReferenceSchedule reference(parse_reference(text), date::locate_zone(options.time_zone),
                                    options.gap, options.overlap);
  CHECK(iso(reference.prev_within(parse_iso(before), k_hand_horizon)) == expected);
  CHECK(iso(engine.prev(parse_iso(before))) == expected);
}

bool is_never_fires(const qf::error& e) {
  return e.code() == qf::make_error_code(qf::errc::never_fires);
}

}  // namespace

// =============================================================================================

TEST_CASE("hand-computed fires pin the DST gap and overlap policies", "[cron][reference][dst]") {
  using qf::DstGapPolicy;
  using qf::DstOverlapPolicy;
  const std::string ny = "America/New_York";
  const std::string lord_howe = "Australia/Lord_Howe";

  SECTION("New York spring forward: 02:30 is skipped on 2026-03-08") {
    expect_fires("30 2 * * *", options_for(ny, DstGapPolicy::shift), "2026-03-07T12:00:00Z",
                 {"2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"});
    expect_fires("30 2 * * *", options_for(ny, DstGapPolicy::skip), "2026-03-07T12:00:00Z",
                 {"2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z"});
    expect_prev("30 2 * * *", options_for(ny, DstGapPolicy::shift), "2026-03-08T12:00:00Z",
                "2026-03-08T07:00:00Z");
    expect_prev("30 2 * * *", options_for(ny, DstGapPolicy::skip), "2026-03-08T12:00:00Z",
                "2026-03-07T07:30:00Z");
    // Non-fixed: the skipped hour simply has no fires, whatever the policy.
    expect_fires("0,30 2 * * *", options_for(ny, DstGapPolicy::shift), "2026-03-07T12:00:00Z",
                 {"2026-03-09T06:00:00Z", "2026-03-09T06:30:00Z"});
  }

  SECTION("New York fall back: 01:30 happens twice on 2026-11-01") {
    expect_fires("30 1 * * *", options_for(ny, DstGapPolicy::shift, DstOverlapPolicy::first),
                 "2026-10-31T12:00:00Z", {"2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"});
    expect_fires("30 1 * * *", options_for(ny, DstGapPolicy::shift, DstOverlapPolicy::last),
                 "2026-10-31T12:00:00Z", {"2026-11-01T06:30:00Z", "2026-11-02T06:30:00Z"});
    expect_fires("30 1 * * *", options_for(ny, DstGapPolicy::shift, DstOverlapPolicy::both),
                 "2026-10-31T12:00:00Z",
                 {"2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z", "2026-11-02T06:30:00Z"});
    expect_fires("0 30 1 * * *", options_for(ny, DstGapPolicy::skip, DstOverlapPolicy::last),
                 "2026-11-01T05:30:00Z", {"2026-11-01T06:30:00Z"});
    // After the first occurrence, "first" does not fire at the second one.
    expect_fires("30 1 * * *", options_for(ny, DstGapPolicy::shift, DstOverlapPolicy::first),
                 "2026-11-01T05:30:00Z", {"2026-11-02T06:30:00Z"});
    expect_prev("30 1 * * *", options_for(ny, DstGapPolicy::shift, DstOverlapPolicy::first),
                "2026-11-01T07:00:00Z", "2026-11-01T05:30:00Z");
    expect_prev("30 1 * * *", options_for(ny, DstGapPolicy::shift, DstOverlapPolicy::last),
                "2026-11-01T06:00:00Z", "2026-10-31T05:30:00Z");
    // Non-fixed: every reading fires, so 01:00-01:59 fires twice.
    for (const DstOverlapPolicy overlap : k_overlap_policies) {
      expect_fires("*/30 * * * *", options_for(ny, DstGapPolicy::skip, overlap),
                   "2026-11-01T04:59:59Z",
                   {"2026-11-01T05:00:00Z", "2026-11-01T05:30:00Z", "2026-11-01T06:00:00Z",
                    "2026-11-01T06:30:00Z", "2026-11-01T07:00:00Z"});
    }
  }

  SECTION("Lord Howe's half-hour shifts") {
    // 2026-10-04 02:00 +10:30 becomes 02:30 +11:00 (2026-10-03T15:30:00Z).
    expect_fires("15 2 * * *", options_for(lord_howe, DstGapPolicy::shift), "2026-10-03T00:00:00Z",
                 {"2026-10-03T15:30:00Z", "2026-10-04T15:15:00Z"});
    expect_fires("15 2 * * *", options_for(lord_howe, DstGapPolicy::skip), "2026-10-03T00:00:00Z",
                 {"2026-10-04T15:15:00Z", "2026-10-05T15:15:00Z"});
    // 2026-04-05 02:00 +11:00 becomes 01:30 +10:30 (2026-04-04T15:00:00Z): 01:45 happens twice.
    expect_fires("45 1 * * *", options_for(lord_howe, DstGapPolicy::shift, DstOverlapPolicy::first),
                 "2026-04-04T00:00:00Z", {"2026-04-04T14:45:00Z", "2026-04-05T15:15:00Z"});
    expect_fires("45 1 * * *", options_for(lord_howe, DstGapPolicy::shift, DstOverlapPolicy::last),
                 "2026-04-04T00:00:00Z", {"2026-04-04T15:15:00Z", "2026-04-05T15:15:00Z"});
  }

  SECTION("fixed time means a single hour and a single minute") {
    const auto fixed = [](std::string_view text) {
      return qf::CronExpr::parse(text, options_for("UTC")).is_fixed_time();
    };
    CHECK(fixed("30 2 * * *"));
    CHECK(fixed("*/20 30 2 * * *"));
    CHECK(fixed("@daily"));
    CHECK_FALSE(fixed("0,30 2 * * *"));
    CHECK_FALSE(fixed("*/15 * * * *"));
    CHECK_FALSE(fixed("@hourly"));
    CHECK(parse_reference("30 2 * * *").fixed_time);
    CHECK_FALSE(parse_reference("0,30 2 * * *").fixed_time);
  }
}

TEST_CASE("hand-computed fires pin the day and range syntax", "[cron][reference]") {
  const qf::CronOptions utc = options_for("UTC");
  SECTION("day-of-month specials") {
    expect_fires("0 0 1W * ?", utc, "2026-07-31T12:00:00Z", {"2026-08-03T00:00:00Z"});  // Sat 1st
    expect_fires("0 0 31W * ?", utc, "2026-01-01T00:00:00Z",
                 {"2026-01-30T00:00:00Z", "2026-03-31T00:00:00Z"});  // Sat 31st; no Feb 31
    expect_fires("0 0 30W * ?", utc, "2026-01-31T00:00:00Z", {"2026-03-30T00:00:00Z"});
    expect_fires("0 0 LW * ?", utc, "2026-05-01T00:00:00Z", {"2026-05-29T00:00:00Z"});  // Sun 31st
    expect_fires("0 0 L-2 FEB ?", utc, "2027-12-31T00:00:00Z",
                 {"2028-02-27T00:00:00Z", "2029-02-26T00:00:00Z"});
  }
  SECTION("day-of-week specials and Sunday as 7") {
    expect_fires("0 12 ? * 5L", utc, "2026-01-01T00:00:00Z",
                 {"2026-01-30T12:00:00Z", "2026-02-27T12:00:00Z"});
    expect_fires("0 12 ? * 1#5", utc, "2026-01-01T00:00:00Z",
                 {"2026-03-30T12:00:00Z", "2026-06-29T12:00:00Z"});
    expect_fires("0 0 * * 7", utc, "2026-01-01T00:00:00Z", {"2026-01-04T00:00:00Z"});
    expect_fires("0 0 * * sUn", utc, "2026-01-01T00:00:00Z", {"2026-01-04T00:00:00Z"});
    expect_fires("@weekly", utc, "2026-01-01T00:00:00Z",
                 {"2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"});
  }
  SECTION("Vixie day matching") {
    // Both restricted: Friday or the 13th.
    expect_fires("0 0 13 * FRI", utc, "2026-01-01T00:00:00Z",
                 {"2026-01-02T00:00:00Z", "2026-01-09T00:00:00Z", "2026-01-13T00:00:00Z",
                  "2026-01-16T00:00:00Z"});
    // */2 is unrestricted but still filters: odd days that are Mondays.
    expect_fires("0 0 */2 * 1", utc, "2026-01-01T00:00:00Z",
                 {"2026-01-05T00:00:00Z", "2026-01-19T00:00:00Z", "2026-02-09T00:00:00Z"});
  }
  SECTION("wrapping ranges, steps, names, seconds and years") {
    expect_fires("0 9 * * fri-MON", utc, "2026-01-01T10:00:00Z",
                 {"2026-01-02T09:00:00Z", "2026-01-03T09:00:00Z", "2026-01-04T09:00:00Z",
                  "2026-01-05T09:00:00Z", "2026-01-09T09:00:00Z"});
    expect_fires("0 0 22-2/2 * * *", utc, "2026-01-01T03:00:00Z",
                 {"2026-01-01T22:00:00Z", "2026-01-02T00:00:00Z", "2026-01-02T02:00:00Z",
                  "2026-01-02T22:00:00Z"});
    expect_fires("0 50-10/10 * * * *", utc, "2026-01-01T00:00:00Z",
                 {"2026-01-01T00:10:00Z", "2026-01-01T00:50:00Z", "2026-01-01T01:00:00Z",
                  "2026-01-01T01:10:00Z"});
    expect_fires("5/20 * * * * *", utc, "2026-01-01T00:00:00Z",
                 {"2026-01-01T00:00:05Z", "2026-01-01T00:00:25Z", "2026-01-01T00:00:45Z",
                  "2026-01-01T00:01:05Z"});
    expect_fires("0 0 1 nov-Feb *", utc, "2026-01-15T00:00:00Z",
                 {"2026-02-01T00:00:00Z", "2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z",
                  "2027-01-01T00:00:00Z"});
    expect_fires("30 15 10 * * * 2027", utc, "2026-06-01T00:00:00Z", {"2027-01-01T10:15:30Z"});
    expect_fires("@hourly", utc, "2026-01-01T00:30:00Z",
                 {"2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"});
    expect_fires("0 9 * * *", options_for("Asia/Kolkata"), "2026-01-01T00:00:00Z",
                 {"2026-01-01T03:30:00Z", "2026-01-02T03:30:00Z"});
  }
}

TEST_CASE("an expression that can never fire is rejected, as the reference confirms",
          "[cron][reference]") {
  for (const char* text :
       {"0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 0 29 2 ? 2027", "0 0 L-30 FEB ?"}) {
    INFO("expression \"" << text << "\"");
    REQUIRE_FALSE(parse_reference(text).matches_some_day());
    try {
      const qf::CronExpr expr = qf::CronExpr::parse(text, options_for("UTC"));
      // Accepting it is tolerable only if it indeed never fires.
      CHECK_FALSE(expr.next(parse_iso("2020-01-01T00:00:00Z")).has_value());
      CHECK_FALSE(expr.prev(parse_iso("2190-01-01T00:00:00Z")).has_value());
    } catch (const qf::error& e) {
      INFO("engine: " << e.what());
      CHECK(is_never_fires(e));
    }
  }
}

TEST_CASE("H fields are stable for a hash key and stay within their range", "[cron][hash]") {
  qf::CronOptions options = options_for("UTC");
  options.hash_key = "task-a";
  const Instant start = parse_iso("2026-01-01T00:00:00Z");
  const auto fires_of = [&](std::string_view text, std::size_t n) {
    const qf::CronExpr expr = qf::CronExpr::parse(text, options);
    std::vector<Instant> fires;
    Instant cursor = start;
    while (fires.size() < n) {
      const std::optional<Instant> next = expr.next(cursor);
      REQUIRE(next.has_value());
      fires.push_back(*next);
      cursor = *next;
    }
    return fires;
  };
  const auto minute_of = [](Instant t) {
    return static_cast<int>(floor_div(count_of(t), 60) % 60);
  };
  const auto hour_of = [](Instant t) {
    return static_cast<int>(floor_div(count_of(t), 3600) % 24);
  };

  SECTION("H H * * * fires once a day at the same time, the same for every parse") {
    const std::vector<Instant> fires = fires_of("H H * * *", 10);
    REQUIRE(fires == fires_of("H H * * *", 10));
    for (std::size_t i = 1; i < fires.size(); ++i) {
      CHECK(fires[i] - fires[i - 1] == seconds{k_seconds_per_day});
    }
  }
  SECTION("H(a-b) stays within a-b") {
    const std::vector<Instant> fires = fires_of("H(10-20) H(1-3) * * *", 5);
    REQUIRE(fires == fires_of("H(10-20) H(1-3) * * *", 5));
    for (const Instant t : fires) {
      INFO(iso(t));
      CHECK(minute_of(t) >= 10);
      CHECK(minute_of(t) <= 20);
      CHECK(hour_of(t) >= 1);
      CHECK(hour_of(t) <= 3);
    }
  }
  SECTION("H/15 keeps one phase of a 15-minute step") {
    const std::vector<Instant> fires = fires_of("H/15 * * * *", 8);
    REQUIRE(fires == fires_of("H/15 * * * *", 8));
    for (std::size_t i = 0; i < fires.size(); ++i) {
      INFO(iso(fires[i]));
      CHECK(minute_of(fires[i]) % 15 == minute_of(fires[0]) % 15);
      CHECK(count_of(fires[i]) % 60 == 0);
    }
  }
}

TEST_CASE("fires around real DST transitions match the reference under every policy",
          "[cron][reference][dst]") {
  struct WindowCase {
    const char* text;
    int half_window_hours;
  };
  // Fixed-time expressions first (the DST policy applies), then non-fixed ones.
  static constexpr std::array<WindowCase, 24> k_cases{{
      {"30 2 * * *", 60},       {"0 30 1 * * *", 60},     {"15 2 * * *", 60},
      {"45 2 * * *", 60},       {"0 3 * * *", 60},        {"30 3 * * *", 60},
      {"45 1 * * *", 60},       {"0 1 * * *", 60},        {"0 2 * * *", 60},
      {"0 0 * * *", 60},        {"59 1 * * *", 60},       {"*/20 30 2 * * *", 60},
      {"10,40 15 2 * * *", 60}, {"30 2 * * SUN", 60},     {"30 1 * * 0", 60},
      {"*/15 * * * *", 6},      {"0 * * * *", 12},        {"30 1-3 * * *", 60},
      {"0,30 2 * * *", 60},     {"*/10 2 * * *", 60},     {"0 0-59/20 1-3 * * *", 60},
      {"*/7 * * * * *", 1},     {"0 45 2,3 * * *", 60},   {"*/5 1-2 * * SUN", 24},
  }};
  static constexpr std::array<const char*, 4> k_zones{"America/New_York", "Europe/London",
                                                      "Australia/Lord_Howe", "Pacific/Chatham"};

  int fires_compared = 0;
  int points_compared = 0;
  ComparisonCounts counts;
  for (const char* zone_name : k_zones) {
    const date::time_zone* zone = date::locate_zone(zone_name);
    const std::vector<Instant> transitions =
        offset_changes(zone, parse_iso("2026-01-01T00:00:00Z"), parse_iso("2027-01-01T00:00:00Z"));
    INFO("zone " << zone_name);
    REQUIRE(transitions.size() == 2);
    for (const Instant transition : transitions) {
      for (const WindowCase& window : k_cases) {
        const ReferenceExpr reference_expr = parse_reference(window.text);
        for (const qf::DstGapPolicy gap : k_gap_policies) {
          for (const qf::DstOverlapPolicy overlap : k_overlap_policies) {
            INFO("\"" << window.text << "\", gap " << gap_name(gap) << ", overlap "
                      << overlap_name(overlap) << ", transition " << iso(transition));
            const qf::CronExpr engine =
                qf::CronExpr::parse(window.text, options_for(zone_name, gap, overlap));
            const ReferenceSchedule reference(reference_expr, zone, gap, overlap);
            const seconds half{static_cast<std::int64_t>(window.half_window_hours) * 3600};
            const Instant lo = transition - half;
            const Instant hi = transition + half;
            const std::vector<Instant> expected = reference.fires_in(lo, hi);
            const std::size_t cap = expected.size() + 5;
            {
              INFO("chaining next() over [" << iso(lo) << ", " << iso(hi) << ")");
              require_same_fires(expected, engine_fires_forward(engine, lo, hi, cap));
            }
            {
              INFO("chaining prev() over [" << iso(lo) << ", " << iso(hi) << ")");
              require_same_fires(expected, engine_fires_backward(engine, lo, hi, cap));
            }
            fires_compared += static_cast<int>(expected.size());
            // next()/prev() from points in and around the gap or overlap, on and off the minute.
            for (int k = -12; k <= 12; ++k) {
              const seconds jitter{k % 3 == 0 ? 0 : (k % 3 == 1 || k % 3 == -2 ? -1 : 30)};
              const Instant point = transition + seconds{k * 600} + jitter;
              compare_next(engine, reference, point, counts);
              compare_prev(engine, reference, point, counts);
              ++points_compared;
            }
          }
        }
      }
    }
  }
  INFO(fires_compared << " fires compared by chaining, " << points_compared
                      << " points compared with next() and prev()");
  REQUIRE(fires_compared >= 3000);
  REQUIRE(counts.next_found >= 10000);
}

TEST_CASE("next() and prev() agree with a brute-force reference on random expressions",
          "[cron][reference]") {
  constexpr int k_required_found = 3000;   // next() comparisons where the reference found a fire
  constexpr int k_max_expressions = 6000;  // bound on the work, should the generator drift
  ExpressionGenerator gen(20260308U);
  ComparisonCounts counts;
  int expressions = 0;
  int cases = 0;
  int never_fires_confirmed = 0;
  while (counts.next_found < k_required_found && expressions < k_max_expressions) {
    ++expressions;
    const int base_year = gen.uniform(2020, 2035);
    const std::string text = gen.expression(base_year);
    INFO("expression \"" << text << "\"");
    const ReferenceExpr reference_expr = parse_reference(text);
    for (int round = 0; round < 3; ++round) {
      const int zone_index = gen.uniform(0, static_cast<int>(k_random_zones.size()) - 1);
      const char* zone_name = k_random_zones[static_cast<std::size_t>(zone_index)];
      const date::time_zone* zone = date::locate_zone(zone_name);
      const qf::DstGapPolicy gap = k_gap_policies[static_cast<std::size_t>(gen.uniform(0, 1))];
      const qf::DstOverlapPolicy overlap =
          k_overlap_policies[static_cast<std::size_t>(gen.uniform(0, 2))];
      const Instant after = random_instant(gen, zone, base_year);
      INFO("zone " << zone_name << ", gap " << gap_name(gap) << ", overlap "
                   << overlap_name(overlap));

      std::optional<qf::CronExpr> engine;
      try {
        engine.emplace(qf::CronExpr::parse(text, options_for(zone_name, gap, overlap)));
      } catch (const qf::error& e) {
        INFO("engine rejected it: " << e.what());
        REQUIRE(is_never_fires(e));
        REQUIRE_FALSE(reference_expr.matches_some_day());
        ++never_fires_confirmed;
        break;
      }
      REQUIRE(engine->is_fixed_time() == reference_expr.fixed_time);
      ++cases;

      const ReferenceSchedule reference(reference_expr, zone, gap, overlap);
      const std::optional<Instant> fire = compare_next(*engine, reference, after, counts);
      compare_prev(*engine, reference, after, counts);
      if (fire) {
        // Strictness at a fire, and one second either side of it.
        compare_next(*engine, reference, *fire, counts);
        compare_prev(*engine, reference, *fire, counts);
        compare_next(*engine, reference, *fire - seconds{1}, counts);
        compare_prev(*engine, reference, *fire + seconds{1}, counts);
      }
    }
  }
  INFO(expressions << " expressions, " << cases << " cases, " << counts.next_compared
                   << " next() and " << counts.prev_compared << " prev() comparisons ("
                   << counts.next_found << " and " << counts.prev_found
                   << " with a fire in the scanned span), " << never_fires_confirmed
                   << " rejections as never firing confirmed");
  REQUIRE(counts.next_found >= k_required_found);
  REQUIRE(counts.prev_found >= 2 * k_required_found / 3);
}
