// SPDX-License-Identifier: Apache-2.0
// Cron expressions: parse once, then find the next or previous fire in any IANA time zone,
// with an explicit, per-expression policy for daylight-saving gaps and overlaps.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <quartzflow/error.hpp>
#include <quartzflow/time.hpp>

namespace quartzflow {

/// What a fixed-time job (single hour and single minute) does when its local time is skipped.
enum class DstGapPolicy {
  shift,  ///< fire at the first instant after the gap (default)
  skip,   ///< do not fire that day
};

/// What a fixed-time job does when its local time happens twice.
enum class DstOverlapPolicy {
  first,  ///< fire at the first occurrence only (default)
  last,   ///< fire at the second occurrence only
  both,   ///< fire at both occurrences
};

/**
 * This host's IANA time zone: `$TZ` when it names a zone the database knows (a leading `:`
 * is dropped), else the target of /etc/localtime under a `zoneinfo/` directory, else the
 * name in /etc/timezone, else `UTC`. Read on every call (no cache): a test or a host may
 * change it between loads.
 */
std::string local_time_zone_name();

/// Options that shape how an expression is read and evaluated.
struct CronOptions {
  /// IANA zone name the fields are read in; empty means UTC; `local` means this host's zone
  /// (`local_time_zone_name()`, resolved when the expression is parsed).
  std::string time_zone = "UTC";
  /// Seed of `H` fields (normally the task name); stable across restarts, versions, hosts.
  std::string hash_key;
  DstGapPolicy gap = DstGapPolicy::shift;
  DstOverlapPolicy overlap = DstOverlapPolicy::first;
};

/// How the DST rules touched a fire; what `qfctl cron next --explain` prints.
enum class DstRule {
  none,             ///< the local time exists exactly once
  gap_shifted,      ///< the local time was skipped; fired at the first instant after the gap
  overlap_first,    ///< the local time happened twice; this is the first occurrence
  overlap_second,   ///< the local time happened twice; this is the second occurrence
};

/// One fire with the local reading and the DST rule that produced it.
struct ExplainedFire {
  Instant at;                              ///< the UTC instant of the fire
  std::chrono::seconds utc_offset{};       ///< zone offset in effect at `at`
  std::string abbreviation;                ///< zone abbreviation at `at`, e.g. `EDT`
  DstRule rule = DstRule::none;
  bool near_transition = false;            ///< within 24 h of a zone offset change
};

/**
 * A parsed cron expression bound to a time zone and DST policy.
 *
 * Dialect: 5 fields (minute hour day-of-month month day-of-week), 6 (seconds first) or 7
 * (seconds first, year last, 1970-2199); names JAN-DEC and SUN-SAT; lists, ranges, steps;
 * `?`, `L`, `L-n`, `nW`, `LW`, `nL`, `n#k`; `H`, `H(a-b)`, `H/n`; macros `@yearly` ...
 * `@hourly`. When both day fields are restricted a day matches if either matches.
 *
 * Evaluation is bounded: no fire is searched past the end of year 2199.
 *
 * Thread safety: immutable after parse; `next`/`prev` may be called from any thread.
 */
class CronExpr {
 public:
  /// Parses `text`; on failure sets `ec` (and `detail`, when given) and returns nullopt.
  static std::optional<CronExpr> parse(std::string_view text, const CronOptions& options,
                                        error_code& ec, ValidationError* detail = nullptr);
  /// Parses `text`; throws `quartzflow::error` naming the field and the reason.
  static CronExpr parse(std::string_view text, const CronOptions& options = {});

  /// The first fire strictly after `after`, or nullopt when there is none before 2200.
  std::optional<Instant> next(Instant after) const;
  /// The last fire strictly before `before`, or nullopt when there is none since 1970.
  std::optional<Instant> prev(Instant before) const;
  /// Like `next`, with the local reading and the DST rule that applied.
  std::optional<ExplainedFire> explain_next(Instant after) const;

  /// Up to `count` fires strictly after `after`, in order.
  std::vector<Instant> next_n(Instant after, std::size_t count) const;

  /// True when hour and minute are single values, so the DST gap/overlap policy applies.
  bool is_fixed_time() const noexcept;
  /// A plain-language description, e.g. "At 02:00, every day".
  std::string describe() const;
  /// The expression as written.
  const std::string& text() const noexcept;
  const CronOptions& options() const noexcept;

  CronExpr(const CronExpr&);
  CronExpr& operator=(const CronExpr&);
  CronExpr(CronExpr&&) noexcept;
  CronExpr& operator=(CronExpr&&) noexcept;
  ~CronExpr();

  struct Impl;

 private:
  explicit CronExpr(std::unique_ptr<Impl> p);
  std::unique_ptr<Impl> impl_;
};

}  // namespace quartzflow
