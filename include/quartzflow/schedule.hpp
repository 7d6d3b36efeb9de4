// SPDX-License-Identifier: Apache-2.0
// Schedules: cron, interval, fixed delay, one-shot and manual, each with a time zone, an
// optional window, a run limit and deterministic jitter; and what is owed after downtime.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <quartzflow/cron.hpp>
#include <quartzflow/error.hpp>
#include <quartzflow/time.hpp>

namespace quartzflow {

enum class ScheduleKind {
  manual,       ///< only when triggered by hand (or by an upstream task)
  cron,         ///< a cron expression in a time zone
  interval,     ///< every `period`, aligned to the window start (or the Unix epoch)
  fixed_delay,  ///< `period` after the previous run ended (the first run `period` after start)
  once,         ///< a single run at `at`
  agent_start,  ///< once each time the agent starts (cron's `@reboot`); no timed fires
};

/// What to do with fires that fell due while nothing was running (after a restart).
enum class MisfirePolicy {
  skip,       ///< run none of them; each is recorded as MISSED
  fire_once,  ///< run the latest one now; the others are MISSED (default)
  fire_all,   ///< run them all, up to a bound; beyond it the oldest are MISSED
};

/// A schedule as configured: the value form of the protobuf `Schedule`.
struct ScheduleSpec {
  ScheduleKind kind = ScheduleKind::manual;
  std::string cron;                         ///< for `cron`
  std::chrono::seconds period{0};           ///< for `interval` and `fixed_delay`
  std::optional<Instant> at;                ///< for `once`
  std::string time_zone = "UTC";            ///< IANA zone name
  DstGapPolicy gap = DstGapPolicy::shift;
  DstOverlapPolicy overlap = DstOverlapPolicy::first;
  std::optional<Instant> window_start;      ///< no fire before (inclusive)
  std::optional<Instant> window_end;        ///< no fire after (inclusive)
  std::uint64_t max_runs = 0;               ///< 0 = no limit
  std::chrono::seconds jitter{0};           ///< each fire is delayed by [0, jitter], stably

  /// The short text form: a cron expression or macro, `@every 90s`, `@delay 5m`,
  /// `@once 2026-12-01T00:00:00Z`, `@manual` or `@reboot` (= `@agent-start`). The zone and the
  /// rest stay as they are.
  static std::optional<ScheduleSpec> from_text(std::string_view text, error_code& ec,
                                               ValidationError* detail = nullptr);
  static ScheduleSpec from_text(std::string_view text);
};

/// One fire: when it was due (`scheduled`, the basis of execution ids) and when it starts.
struct Fire {
  Instant scheduled;  ///< the nominal time from the schedule
  Instant start_at;   ///< scheduled + the fire's jitter

  friend bool operator==(const Fire&, const Fire&) = default;
};

/// What a schedule needs to know about past runs.
struct ScheduleState {
  std::optional<Instant> last_scheduled;  ///< the last fire that was due
  std::optional<Instant> last_run_end;    ///< when the last run ended (for fixed delay)
  std::uint64_t runs = 0;                 ///< how many runs counted against `max_runs`
};

/// The fires owed after downtime and what the misfire policy does with them.
struct MisfirePlan {
  std::vector<Fire> run;            ///< fires to run now, oldest first
  std::vector<Fire> missed;         ///< fires recorded as MISSED (the first `limit` of them)
  std::uint64_t missed_total = 0;   ///< all MISSED fires, listed or not
  bool missed_total_capped = false; ///< counting stopped at the cap; the total is a lower bound
};

/**
 * A validated schedule bound to a task name (the seed of `H` and of jitter).
 *
 * Thread safety: immutable after creation; const members may be called from any thread.
 */
class Schedule {
 public:
  /// Validates `spec`; on failure sets `ec` and `detail` (field paths under `schedule.`).
  static std::optional<Schedule> create(const ScheduleSpec& spec, std::string_view task_name,
                                        error_code& ec, ValidationError* detail = nullptr);
  /// Throws `quartzflow::error` naming the field and the reason.
  static Schedule create(const ScheduleSpec& spec, std::string_view task_name = {});

  /// The first fire whose nominal time is strictly after `after`, honouring the window,
  /// `max_runs` and (for fixed delay) the last run's end; nullopt when none is left.
  std::optional<Fire> next(Instant after, const ScheduleState& state = {}) const;

  /// Up to `count` fires after `after` (as if each ran and ended at once).
  std::vector<Fire> next_n(Instant after, std::size_t count) const;

  /**
   * Fires with nominal time in (last_scheduled, now] and what `policy` does with them.
   * `limit` bounds both the runs of `fire_all` and the listed MISSED fires; counting of
   * MISSED fires stops at `count_cap`.
   */
  MisfirePlan misfires(Instant last_scheduled, Instant now, MisfirePolicy policy,
                       std::size_t limit = 100, std::uint64_t count_cap = 1'000'000) const;

  const ScheduleSpec& spec() const noexcept { return spec_; }
  /// The cron expression when `kind == cron`.
  const CronExpr* cron() const noexcept { return cron_ ? &*cron_ : nullptr; }
  /// "At 02:00, every day (Europe/Paris)", "Every 1h30m", ...
  std::string describe() const;

 private:
  Schedule(ScheduleSpec spec, std::string task_name, std::optional<CronExpr> cron)
      : spec_(std::move(spec)), task_name_(std::move(task_name)), cron_(std::move(cron)) {}
  std::optional<Instant> next_nominal(Instant after, const ScheduleState& state) const;
  Fire with_jitter(Instant scheduled) const;

  ScheduleSpec spec_;
  std::string task_name_;
  std::optional<CronExpr> cron_;
};

}  // namespace quartzflow
