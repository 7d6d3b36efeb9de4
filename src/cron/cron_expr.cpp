// SPDX-License-Identifier: Apache-2.0
// CronExpr: walks the time zone's constant-offset segments and applies the DST policy at
// their edges. Within one segment local time is a shift of UTC, so the field search runs on
// the local reading and the answer is shifted back.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <date/tz.h>

#include "../common/zone_rules.hpp"
#include "cron_fields.hpp"

namespace quartzflow {

using std::chrono::seconds;
using LocalSeconds = date::local_seconds;

namespace detail {
namespace {

/// One span of constant UTC offset, with its neighbours' offsets.
struct Segment {
  Instant begin;
  Instant end;
  seconds offset{};
  seconds previous_offset{};  // offset before `begin` (equal to offset when none)
  seconds next_offset{};      // offset from `end` (equal to offset when none)
  std::string abbreviation;
};

// Far enough to hold every supported fire; keeps offset arithmetic away from overflow.
constexpr Instant k_far_past = date::sys_days{date::year{1900} / 1 / 1};
constexpr Instant k_far_future = date::sys_days{date::year{2300} / 1 / 1};

LocalSeconds to_local(Instant t, seconds offset) { return LocalSeconds{t.time_since_epoch() + offset}; }
Instant to_sys(LocalSeconds t, seconds offset) { return Instant{t.time_since_epoch() - offset}; }

}  // namespace

/// Locates zones once per expression; `zone == nullptr` is UTC (one endless segment).
struct ZoneWalker {
  const date::time_zone* zone = nullptr;

  Segment segment_at(Instant t) const {
    if (zone == nullptr) return {k_far_past, k_far_future, seconds{0}, seconds{0}, seconds{0}, "UTC"};
    const date::sys_info info = zone_info(zone, t);
    Segment s{std::max(Instant{info.begin}, k_far_past), std::min(Instant{info.end}, k_far_future),
              info.offset, info.offset, info.offset, info.abbrev};
    if (s.begin > k_far_past) s.previous_offset = zone_info(zone, s.begin - seconds{1}).offset;
    if (s.end < k_far_future) s.next_offset = zone_info(zone, s.end).offset;
    return s;
  }
};

}  // namespace detail

struct CronExpr::Impl {
  std::string text;
  CronOptions options;
  detail::CronFields fields;
  detail::ZoneWalker zone;
  bool fixed_time = false;

  bool applies_policy() const { return fixed_time; }

  /// Local readings of `s` that this expression may fire at: [low, high).
  std::pair<LocalSeconds, LocalSeconds> usable_range(const detail::Segment& s) const {
    LocalSeconds low = detail::to_local(s.begin, s.offset);
    LocalSeconds high = detail::to_local(s.end, s.offset);
    if (applies_policy()) {
      // A repeated reading belongs to the segment the overlap policy picks.
      const bool repeats_previous = s.previous_offset > s.offset;
      const bool repeated_by_next = s.next_offset < s.offset;
      if (repeats_previous && options.overlap == DstOverlapPolicy::first)
        low = detail::to_local(s.begin, s.previous_offset);
      if (repeated_by_next && options.overlap == DstOverlapPolicy::last)
        high = detail::to_local(s.end, s.next_offset);
    }
    return {low, high};
  }

  /// True when a reading skipped at the start of `s` (spring forward) matches and shifts to s.begin.
  bool gap_fires_at_begin(const detail::Segment& s) const {
    if (!applies_policy() || options.gap != DstGapPolicy::shift) return false;
    if (s.previous_offset >= s.offset) return false;
    const LocalSeconds gap_begin = detail::to_local(s.begin, s.previous_offset);
    const LocalSeconds gap_end = detail::to_local(s.begin, s.offset);
    const auto match = detail::next_local_match(fields, gap_begin - seconds{1});
    return match && *match < gap_end;
  }

  DstRule rule_for(const detail::Segment& s, Instant at, bool shifted) const {
    if (shifted) return DstRule::gap_shifted;
    const LocalSeconds reading = detail::to_local(at, s.offset);
    if (s.previous_offset > s.offset && reading < detail::to_local(s.begin, s.previous_offset))
      return DstRule::overlap_second;
    if (s.next_offset < s.offset && reading >= detail::to_local(s.end, s.next_offset))
      return DstRule::overlap_first;
    return DstRule::none;
  }

  std::optional<ExplainedFire> find_next(Instant after) const {
    detail::Segment s = zone.segment_at(after);
    bool first = true;
    while (true) {
      if (!first && s.begin > after && gap_fires_at_begin(s)) return explained(s, s.begin, true);
      auto [low, high] = usable_range(s);
      const LocalSeconds from = std::max(low - seconds{1}, detail::to_local(after, s.offset));
      const auto match = detail::next_local_match(fields, from);
      if (!match) return std::nullopt;
      if (*match < high) return explained(s, detail::to_sys(*match, s.offset), false);
      if (s.end >= detail::k_far_future) return std::nullopt;
      // No zone moves its clock back by more than a day, so segments that end more than a
      // day before the next matching reading cannot hold a fire: jump over them.
      const Instant jump = detail::to_sys(*match, s.offset) - std::chrono::hours{48};
      s = zone.segment_at(std::max(s.end, jump));
      first = false;
    }
  }

  std::optional<ExplainedFire> find_prev(Instant before) const {
    detail::Segment s = zone.segment_at(before - seconds{1});
    while (true) {
      auto [low, high] = usable_range(s);
      const LocalSeconds until = std::min(high, detail::to_local(before, s.offset));
      const auto match = detail::prev_local_match(fields, until);
      if (match && *match >= low) return explained(s, detail::to_sys(*match, s.offset), false);
      if (s.begin < before && gap_fires_at_begin(s)) return explained(s, s.begin, true);
      if (!match || s.begin <= detail::k_far_past) return std::nullopt;
      const Instant jump = detail::to_sys(*match, s.offset) + std::chrono::hours{48};
      s = zone.segment_at(std::min(s.begin - seconds{1}, jump));
    }
  }

  ExplainedFire explained(const detail::Segment& s, Instant at, bool shifted) const {
    ExplainedFire fire;
    fire.at = at;
    fire.utc_offset = s.offset;
    fire.abbreviation = s.abbreviation;
    fire.rule = rule_for(s, at, shifted);
    const auto day = std::chrono::hours{24};
    fire.near_transition = (s.begin > detail::k_far_past && at - s.begin < day) ||
                           (s.end < detail::k_far_future && s.end - at <= day);
    return fire;
  }
};

CronExpr::CronExpr(std::unique_ptr<Impl> p) : impl_(std::move(p)) {}
CronExpr::CronExpr(const CronExpr& other) : impl_(std::make_unique<Impl>(*other.impl_)) {}
CronExpr& CronExpr::operator=(const CronExpr& other) {
  if (this != &other) impl_ = std::make_unique<Impl>(*other.impl_);
  return *this;
}
CronExpr::CronExpr(CronExpr&&) noexcept = default;
CronExpr& CronExpr::operator=(CronExpr&&) noexcept = default;
CronExpr::~CronExpr() = default;

std::string local_time_zone_name() {
  const auto known = [](const std::string& name) {
    if (name.empty()) return false;
    try {
      return date::locate_zone(name) != nullptr;
    } catch (const std::exception&) {
      return false;
    }
  };
  if (const char* tz = std::getenv("TZ"); tz != nullptr) {
    std::string name = tz;
    if (!name.empty() && name.front() == ':') name.erase(0, 1);
    if (known(name)) return name;
  }
  std::error_code ec;
  const auto target = std::filesystem::read_symlink("/etc/localtime", ec).string();
  if (!ec) {
    if (const auto at = target.find("zoneinfo/"); at != std::string::npos) {
      std::string name = target.substr(at + 9);
      // Debian's `posix/` and `right/` trees hold the same zones under another prefix.
      for (const std::string_view prefix : {"posix/", "right/"})
        if (name.rfind(prefix, 0) == 0) name.erase(0, prefix.size());
      if (known(name)) return name;
    }
  }
  std::ifstream file("/etc/timezone");
  std::string name;
  if (file && std::getline(file, name)) {
    name.erase(name.find_last_not_of(" \t\r") + 1);
    if (known(name)) return name;
  }
  return "UTC";
}

std::optional<CronExpr> CronExpr::parse(std::string_view text, const CronOptions& options,
                                        error_code& ec, ValidationError* detail) {
  ValidationError failure;
  auto impl = std::make_unique<Impl>();
  impl->text = std::string(text);
  impl->options = options;
  if (impl->options.time_zone.empty()) impl->options.time_zone = "UTC";
  if (impl->options.time_zone == "local") impl->options.time_zone = local_time_zone_name();
  if (impl->options.time_zone != "UTC" && impl->options.time_zone != "Etc/UTC") {
    try {
      impl->zone.zone = date::locate_zone(impl->options.time_zone);
    } catch (const std::exception&) {
      ec = errc::unknown_time_zone;
      if (detail)
        *detail = {"time zone", "time_zone",
                   "\"" + impl->options.time_zone.substr(0, 100) + "\" is not a known IANA time zone"};
      return std::nullopt;
    }
  }
  if (!detail::parse_cron_fields(text, options.hash_key, impl->fields, failure)) {
    ec = failure.reason.rfind("never fires", 0) == 0 ? errc::never_fires : errc::invalid_argument;
    if (detail) *detail = std::move(failure);
    return std::nullopt;
  }
  impl->fixed_time = impl->fields.fixed_time();
  ec = {};
  return CronExpr(std::move(impl));
}

CronExpr CronExpr::parse(std::string_view text, const CronOptions& options) {
  error_code ec;
  ValidationError detail;
  auto expr = parse(text, options, ec, &detail);
  if (!expr) throw error(ec, std::move(detail));
  return std::move(*expr);
}

std::optional<Instant> CronExpr::next(Instant after) const {
  auto fire = impl_->find_next(after);
  return fire ? std::optional<Instant>(fire->at) : std::nullopt;
}

std::optional<Instant> CronExpr::prev(Instant before) const {
  auto fire = impl_->find_prev(before);
  return fire ? std::optional<Instant>(fire->at) : std::nullopt;
}

std::optional<ExplainedFire> CronExpr::explain_next(Instant after) const {
  return impl_->find_next(after);
}

std::vector<Instant> CronExpr::next_n(Instant after, std::size_t count) const {
  std::vector<Instant> fires;
  fires.reserve(std::min<std::size_t>(count, 1024));
  while (fires.size() < count) {
    auto fire = next(after);
    if (!fire) break;
    fires.push_back(*fire);
    after = *fire;
  }
  return fires;
}

bool CronExpr::is_fixed_time() const noexcept { return impl_->fixed_time; }
std::string CronExpr::describe() const { return detail::describe_fields(impl_->fields, impl_->text); }
const std::string& CronExpr::text() const noexcept { return impl_->text; }
const CronOptions& CronExpr::options() const noexcept { return impl_->options; }

}  // namespace quartzflow
