// SPDX-License-Identifier: Apache-2.0
// Schedule: the kinds of schedules, their windows, run limits, jitter and misfire plans.
#include <algorithm>
#include <deque>

#include <fmt/format.h>

#include <quartzflow/schedule.hpp>

#include "../common/stable_hash.hpp"
#include "../common/text.hpp"

namespace quartzflow {

using std::chrono::seconds;

namespace {

constexpr seconds k_max_period{366LL * 86400};
constexpr seconds k_max_jitter{86400};

}  // namespace

std::optional<ScheduleSpec> ScheduleSpec::from_text(std::string_view text, error_code& ec,
                                                     ValidationError* detail) {
  auto fail = [&](std::string reason) -> std::optional<ScheduleSpec> {
    ec = errc::invalid_argument;
    if (detail) *detail = {fmt::format("schedule \"{}\"", text.substr(0, 200)), "schedule", std::move(reason)};
    return std::nullopt;
  };
  const auto begin = text.find_first_not_of(" \t");
  if (begin == std::string_view::npos) return fail("is empty");
  text = text.substr(begin, text.find_last_not_of(" \t") - begin + 1);
  ScheduleSpec spec;
  const auto space = text.find_first_of(" \t");
  const std::string keyword = detail::lower_ascii(text.substr(0, space));
  const std::string_view argument =
      space == std::string_view::npos ? std::string_view{} : text.substr(text.find_first_not_of(" \t", space));
  if (keyword == "@every" || keyword == "@delay") {
    const auto period = parse_duration(argument);
    if (!period || period->count() == 0)
      return fail(fmt::format("\"{}\" is not a duration such as 90s or 1h30m", argument));
    spec.kind = keyword == "@every" ? ScheduleKind::interval : ScheduleKind::fixed_delay;
    spec.period = *period;
  } else if (keyword == "@once") {
    const auto at = parse_rfc3339(argument);
    if (!at) return fail(fmt::format("\"{}\" is not an RFC 3339 instant such as 2026-12-01T00:00:00Z", argument));
    spec.kind = ScheduleKind::once;
    spec.at = at;
  } else if (keyword == "@manual") {
    if (!argument.empty()) return fail("@manual takes no argument");
    spec.kind = ScheduleKind::manual;
  } else if (keyword == "@reboot" || keyword == "@agent-start") {
    if (!argument.empty()) return fail(fmt::format("{} takes no argument", keyword));
    spec.kind = ScheduleKind::agent_start;
  } else {
    spec.kind = ScheduleKind::cron;
    spec.cron = std::string(text);
  }
  ec = {};
  return spec;
}

ScheduleSpec ScheduleSpec::from_text(std::string_view text) {
  error_code ec;
  ValidationError detail;
  auto spec = from_text(text, ec, &detail);
  if (!spec) throw error(ec, std::move(detail));
  return std::move(*spec);
}

std::optional<Schedule> Schedule::create(const ScheduleSpec& spec, std::string_view task_name,
                                         error_code& ec, ValidationError* detail) {
  auto fail = [&](errc code, std::string field, std::string reason) -> std::optional<Schedule> {
    ec = code;
    if (detail) *detail = {"schedule", std::move(field), std::move(reason)};
    return std::nullopt;
  };
  std::optional<CronExpr> cron;
  // The zone is validated for every kind: it is what the console shows times in.
  {
    CronOptions options{spec.time_zone, std::string(task_name), spec.gap, spec.overlap};
    ValidationError cron_error;
    const std::string text = spec.kind == ScheduleKind::cron ? spec.cron : "0 0 * * *";
    cron = CronExpr::parse(text, options, ec, &cron_error);
    if (!cron) {
      if (ec == errc::unknown_time_zone) return fail(errc::unknown_time_zone, "schedule.time_zone", cron_error.reason);
      ec = ec ? ec : make_error_code(errc::invalid_argument);
      if (detail) {
        *detail = std::move(cron_error);
        detail->field = detail->field.empty() ? "schedule.cron" : "schedule.cron." + detail->field;
      }
      return std::nullopt;
    }
    if (spec.kind != ScheduleKind::cron) cron.reset();
  }
  switch (spec.kind) {
    case ScheduleKind::interval:
    case ScheduleKind::fixed_delay:
      if (spec.period < seconds{1} || spec.period > k_max_period)
        return fail(errc::invalid_argument, "schedule.period",
                    fmt::format("{}s is out of range 1s-366d", spec.period.count()));
      break;
    case ScheduleKind::once:
      if (!spec.at) return fail(errc::invalid_argument, "schedule.at", "is required for a one-shot schedule");
      break;
    case ScheduleKind::cron:
    case ScheduleKind::manual:
    case ScheduleKind::agent_start: break;
  }
  if (spec.window_start && spec.window_end && *spec.window_end < *spec.window_start)
    return fail(errc::invalid_argument, "schedule.window_end",
                fmt::format("{} is before window_start {}", format_rfc3339(*spec.window_end),
                            format_rfc3339(*spec.window_start)));
  if (spec.jitter < seconds{0} || spec.jitter > k_max_jitter)
    return fail(errc::invalid_argument, "schedule.jitter",
                fmt::format("{}s is out of range 0s-1d", spec.jitter.count()));
  ec = {};
  return Schedule(spec, std::string(task_name), std::move(cron));
}

Schedule Schedule::create(const ScheduleSpec& spec, std::string_view task_name) {
  error_code ec;
  ValidationError detail;
  auto schedule = create(spec, task_name, ec, &detail);
  if (!schedule) throw error(ec, std::move(detail));
  return std::move(*schedule);
}

std::optional<Instant> Schedule::next_nominal(Instant after, const ScheduleState& state) const {
  if (spec_.max_runs != 0 && state.runs >= spec_.max_runs) return std::nullopt;
  if (spec_.window_start && after < *spec_.window_start) after = *spec_.window_start - seconds{1};
  std::optional<Instant> next;
  switch (spec_.kind) {
    case ScheduleKind::manual:
    case ScheduleKind::agent_start:  // fired by the engine when it starts, never by time
      return std::nullopt;
    case ScheduleKind::cron:
      next = cron_->next(after);
      break;
    case ScheduleKind::interval: {
      // Aligned to a fixed anchor so that restarts and other hosts agree on every fire.
      const Instant anchor = spec_.window_start.value_or(Instant{});
      const auto period = spec_.period.count();
      const auto elapsed = (after - anchor).count();
      const auto k = elapsed < 0 ? 0 : elapsed / period + 1;
      next = anchor + seconds{k * period};
      break;
    }
    case ScheduleKind::fixed_delay:
      if (state.last_scheduled && !state.last_run_end) return std::nullopt;  // still running
      next = state.last_run_end ? std::max(*state.last_run_end + spec_.period, after + seconds{1})
                                : after + spec_.period;
      break;
    case ScheduleKind::once:
      if (state.runs > 0 || !(*spec_.at > after)) return std::nullopt;
      next = spec_.at;
      break;
  }
  if (next && spec_.window_end && *next > *spec_.window_end) return std::nullopt;
  return next;
}

Fire Schedule::with_jitter(Instant scheduled) const {
  if (spec_.jitter.count() == 0) return {scheduled, scheduled};
  // Deterministic per task and fire: every host and every restart delays it the same.
  const auto hash = detail::stable_hash(
      fmt::format("{}\x1f{}", task_name_, scheduled.time_since_epoch().count()));
  const auto delay = static_cast<std::int64_t>(hash % static_cast<std::uint64_t>(spec_.jitter.count() + 1));
  return {scheduled, scheduled + seconds{delay}};
}

std::optional<Fire> Schedule::next(Instant after, const ScheduleState& state) const {
  const auto nominal = next_nominal(after, state);
  if (!nominal) return std::nullopt;
  return with_jitter(*nominal);
}

std::vector<Fire> Schedule::next_n(Instant after, std::size_t count) const {
  std::vector<Fire> fires;
  ScheduleState state;
  while (fires.size() < count) {
    const auto fire = next(after, state);
    if (!fire) break;
    fires.push_back(*fire);
    after = fire->scheduled;
    state.last_scheduled = fire->scheduled;
    state.last_run_end = fire->start_at;
    ++state.runs;
  }
  return fires;
}

MisfirePlan Schedule::misfires(Instant last_scheduled, Instant now, MisfirePolicy policy,
                               std::size_t limit, std::uint64_t count_cap) const {
  MisfirePlan plan;
  const std::size_t keep_latest = policy == MisfirePolicy::fire_all   ? limit
                                  : policy == MisfirePolicy::fire_once ? 1
                                                                       : 0;
  std::deque<Instant> latest;  // the newest `keep_latest` owed fires: the ones to run
  ScheduleState state{last_scheduled, last_scheduled, 0};
  Instant after = last_scheduled;
  std::uint64_t owed = 0;
  auto record_missed = [&](Instant t) {
    ++plan.missed_total;
    if (plan.missed.size() < limit) plan.missed.push_back(with_jitter(t));
  };
  while (owed < count_cap) {
    const auto next = next_nominal(after, state);
    if (!next || *next > now) break;
    ++owed;
    latest.push_back(*next);
    if (latest.size() > keep_latest) {
      record_missed(latest.front());
      latest.pop_front();
    }
    after = *next;
    state.last_scheduled = *next;
  }
  plan.missed_total_capped = owed >= count_cap;
  for (Instant t : latest) plan.run.push_back(with_jitter(t));
  return plan;
}

std::string Schedule::describe() const {
  const std::string zone = spec_.time_zone.empty() || spec_.time_zone == "UTC" ? "" : " (" + spec_.time_zone + ")";
  switch (spec_.kind) {
    case ScheduleKind::manual: return "Only when triggered";
    case ScheduleKind::agent_start: return "Once each time the agent starts";
    case ScheduleKind::cron: return cron_->describe() + zone;
    case ScheduleKind::interval: return "Every " + format_duration(spec_.period);
    case ScheduleKind::fixed_delay: return format_duration(spec_.period) + " after the previous run ends";
    case ScheduleKind::once: return "Once, at " + format_rfc3339(*spec_.at);
  }
  return {};
}

}  // namespace quartzflow
