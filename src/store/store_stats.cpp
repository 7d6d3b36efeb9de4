// SPDX-License-Identifier: Apache-2.0
// Execution statistics in the StoreTransaction: one scan of the matching records
// feeds the summary and the time buckets (counts, success rate, average and nearest-rank
// p50/p95 durations) and, with a group_by, the figures per agent or task; failure reasons
// and failing tasks are ranked by SQL aggregates.
#include <algorithm>
#include <array>
#include <map>

#include <date/tz.h>
#include <fmt/format.h>

#include "sql_transaction.hpp"

namespace quartzflow::detail {
namespace {

using std::chrono::milliseconds;

constexpr std::string_view k_input = "stats query";
constexpr std::int64_t k_default_range_ms = 7LL * 24 * 3600 * 1000;
constexpr std::uint32_t k_default_top_n = 10;
constexpr std::uint32_t k_max_top_n = 100;
constexpr std::size_t k_max_buckets = 10'000;
constexpr std::size_t k_max_groups = 1'000;

/// Figures of one range as the scan finds them.
class Accumulator {
 public:
  void add(std::int64_t status, std::int64_t started_unix_ms, std::int64_t duration_ms) {
    ++records_;
    if (status >= 0 && static_cast<std::size_t>(status) < by_status_.size())
      ++by_status_[static_cast<std::size_t>(status)];
    if (ran(status) && started_unix_ms != 0) durations_.push_back(duration_ms);
  }

  /// Executions added, whatever their status.
  std::uint64_t records() const noexcept { return records_; }

  v1::Stats finish(std::int64_t from, std::int64_t to) {
    v1::Stats s;
    s.set_from_unix_ms(from);
    s.set_to_unix_ms(to);
    s.set_success(count(v1::EXECUTION_STATUS_SUCCESS));
    s.set_failure(count(v1::EXECUTION_STATUS_FAILURE));
    s.set_timeout(count(v1::EXECUTION_STATUS_TIMEOUT));
    s.set_cancelled(count(v1::EXECUTION_STATUS_CANCELLED));
    s.set_skipped(count(v1::EXECUTION_STATUS_SKIPPED));
    s.set_missed(count(v1::EXECUTION_STATUS_MISSED));
    s.set_running(count(v1::EXECUTION_STATUS_RUNNING));
    s.set_pending(count(v1::EXECUTION_STATUS_PENDING));
    s.set_total(s.success() + s.failure() + s.timeout() + s.cancelled());
    s.set_success_rate_percent(
        s.total() == 0 ? 0.0 : static_cast<double>(s.success()) * 100.0 / static_cast<double>(s.total()));
    if (!durations_.empty()) {
      std::int64_t sum = 0;
      for (const auto d : durations_) sum += d;
      const auto n = static_cast<std::int64_t>(durations_.size());
      s.set_avg_duration_ms(sum / n);
      // Nearest rank: the smallest duration with at least p% of the runs at or below it.
      const auto rank = [n](std::int64_t percent) { return static_cast<std::size_t>((percent * n + 99) / 100 - 1); };
      const auto p95 = durations_.begin() + static_cast<std::ptrdiff_t>(rank(95));
      std::nth_element(durations_.begin(), p95, durations_.end());
      s.set_p95_duration_ms(*p95);
      s.set_max_duration_ms(*std::max_element(p95, durations_.end()));
      const auto p50 = durations_.begin() + static_cast<std::ptrdiff_t>(rank(50));
      std::nth_element(durations_.begin(), p50, p95);
      s.set_p50_duration_ms(p50 == p95 ? *p95 : *p50);
    }
    return s;
  }

 private:
  static bool ran(std::int64_t status) noexcept {
    return status >= v1::EXECUTION_STATUS_SUCCESS && status <= v1::EXECUTION_STATUS_CANCELLED;
  }
  std::uint64_t count(v1::ExecutionStatus status) const noexcept {
    return by_status_[static_cast<std::size_t>(status)];
  }

  std::array<std::uint64_t, v1::ExecutionStatus_ARRAYSIZE> by_status_{};
  std::vector<std::int64_t> durations_;
  std::uint64_t records_ = 0;
};

/// One agent's or task's figures, with the task name its latest execution recorded.
struct GroupAccumulator {
  Accumulator figures;
  std::int64_t latest_scheduled_unix_ms = 0;
  std::string recorded_name;
};

struct Range {
  std::int64_t from = 0;
  std::int64_t to = 0;
};

Range range_of(const v1::StatsQuery& query) {
  Range r;
  r.to = query.to_unix_ms() != 0 ? query.to_unix_ms() : now_unix_ms();
  if (query.from_unix_ms() != 0) {
    r.from = query.from_unix_ms();
  } else if (query.range().empty()) {
    r.from = r.to - k_default_range_ms;
  } else {
    const auto span = parse_duration(query.range());
    if (!span)
      throw_invalid(k_input, "range", fmt::format("\"{}\" is not a duration such as 24h or 7d", query.range()));
    r.from = r.to - std::chrono::duration_cast<milliseconds>(*span).count();
  }
  if (r.from >= r.to) throw_invalid(k_input, "from_unix_ms", "must be before to_unix_ms");
  return r;
}

const date::time_zone* zone_of(const v1::StatsQuery& query) {
  const std::string name = query.time_zone().empty() ? "UTC" : query.time_zone();
  try {
    return date::locate_zone(name);
  } catch (const std::exception&) {
    throw error(errc::unknown_time_zone,
                ValidationError{std::string(k_input), "time_zone", fmt::format("unknown time zone \"{}\"", name)});
  }
}

/// Bucket boundaries b0 <= from < b1 < ... < bn >= to, in local time of `zone`: hours
/// (elapsed), days, ISO weeks (Monday first) or calendar months. Empty without granularity.
std::vector<std::int64_t> bucket_bounds(Range range, v1::StatsGranularity granularity, const date::time_zone* zone) {
  std::vector<std::int64_t> bounds;
  const auto push = [&](std::int64_t bound) {
    if (bounds.size() > k_max_buckets)
      throw_invalid(k_input, "granularity",
                    fmt::format("more than {} buckets in the range; use a coarser granularity", k_max_buckets));
    bounds.push_back(bound);
    return bound < range.to;
  };
  const auto sys_ms = [zone](auto local) {
    // A local midnight that does not exist (a DST gap at 00:00) starts at the transition.
    return std::chrono::duration_cast<milliseconds>(zone->to_sys(local, date::choose::earliest).time_since_epoch())
        .count();
  };
  const auto local = zone->to_local(date::sys_time<milliseconds>{milliseconds{range.from}});
  const auto today = date::floor<date::days>(local);
  switch (granularity) {
    case v1::STATS_GRANULARITY_UNSPECIFIED: return bounds;
    case v1::STATS_GRANULARITY_HOUR: {
      constexpr std::int64_t k_hour_ms = 3'600'000;
      for (auto bound = std::min(sys_ms(date::floor<std::chrono::hours>(local)), range.from); push(bound);
           bound += k_hour_ms) {}
      break;
    }
    case v1::STATS_GRANULARITY_DAY:
      for (auto day = today; push(sys_ms(day)); day += date::days{1}) {}
      break;
    case v1::STATS_GRANULARITY_WEEK: {
      auto monday = today - date::days{(date::weekday{today}.iso_encoding() - 1)};
      for (; push(sys_ms(monday)); monday += date::days{7}) {}
      break;
    }
    case v1::STATS_GRANULARITY_MONTH: {
      const date::year_month_day ymd{today};
      for (auto month = ymd.year() / ymd.month(); push(sys_ms(date::local_days{month / 1})); month += date::months{1}) {
      }
      break;
    }
    default: throw_invalid(k_input, "granularity", fmt::format("{} is not a StatsGranularity", granularity));
  }
  return bounds;
}

}  // namespace

v1::StatsResponse SqlStoreTransaction::stats(const v1::StatsQuery& query) {
  const auto range = range_of(query);
  const auto* zone = zone_of(query);
  const std::int64_t top_n = query.top_n() == 0 ? k_default_top_n : std::min(query.top_n(), k_max_top_n);
  const auto bounds = bucket_bounds(range, query.granularity(), zone);

  SqlConditions where;
  if (!query.task_id().empty()) where.add("e.task_id = ?", {query.task_id()});
  if (!query.agent_id().empty()) where.add("e.agent_id = ?", {query.agent_id()});
  if (!query.group_id().empty()) where.add("e.group_id = ?", {query.group_id()});
  where.add("e.scheduled_unix_ms >= ?", {range.from});
  where.add("e.scheduled_unix_ms < ?", {range.to});

  const auto group_by = query.group_by();
  if (group_by != v1::STATS_GROUP_BY_UNSPECIFIED && group_by != v1::STATS_GROUP_BY_AGENT &&
      group_by != v1::STATS_GROUP_BY_TASK)
    throw_invalid(k_input, "group_by", fmt::format("{} is not a StatsGroupBy", group_by));

  Accumulator summary;
  std::vector<Accumulator> buckets(bounds.empty() ? 0 : bounds.size() - 1);
  std::map<std::string, GroupAccumulator, std::less<>> groups;
  {
    auto rows = statement(
        "SELECT e.scheduled_unix_ms, e.status, e.started_unix_ms, e.duration_ms, e.agent_id, e.task_id, e.task_name "
        "FROM executions e" +
        where.where());
    rows.bind_all(where.values());
    while (rows.next()) {
      const auto scheduled = rows.int64(0), status = rows.int64(1), started = rows.int64(2), duration = rows.int64(3);
      summary.add(status, started, duration);
      if (group_by != v1::STATS_GROUP_BY_UNSPECIFIED) {
        auto& group = groups[rows.text(group_by == v1::STATS_GROUP_BY_AGENT ? 4 : 5)];
        group.figures.add(status, started, duration);
        if (scheduled >= group.latest_scheduled_unix_ms) {
          group.latest_scheduled_unix_ms = scheduled;
          group.recorded_name = rows.text(6);
        }
      }
      if (buckets.empty()) continue;
      const auto next_bound = std::upper_bound(bounds.begin(), bounds.end(), scheduled);
      buckets[static_cast<std::size_t>(next_bound - bounds.begin() - 1)].add(status, started, duration);
    }
  }

  v1::StatsResponse out;
  *out.mutable_summary() = summary.finish(range.from, range.to);
  for (std::size_t i = 0; i < buckets.size(); ++i)
    *out.add_series() = buckets[i].finish(std::max(bounds[i], range.from), std::min(bounds[i + 1], range.to));
  if (group_by != v1::STATS_GROUP_BY_UNSPECIFIED) {
    std::vector<std::pair<const std::string, GroupAccumulator>*> ranked;
    ranked.reserve(groups.size());
    for (auto& group : groups) ranked.push_back(&group);
    // Stable on the map's key order: ties stay sorted by key.
    std::stable_sort(ranked.begin(), ranked.end(), [](const auto* a, const auto* b) {
      return a->second.figures.records() > b->second.figures.records();
    });
    out.set_group_count(static_cast<std::uint32_t>(ranked.size()));
    if (ranked.size() > k_max_groups) ranked.resize(k_max_groups);
    for (auto* group : ranked) {
      auto& entry = *out.add_groups();
      entry.set_key(group->first);
      if (group_by == v1::STATS_GROUP_BY_AGENT) {
        auto rows = statement("SELECT hostname FROM agents WHERE id = ?1");
        rows.bind(1, group->first);
        if (rows.next()) entry.set_name(rows.text(0));
      } else {
        auto rows = statement("SELECT name FROM tasks WHERE id = ?1");
        rows.bind(1, group->first);
        entry.set_name(rows.next() ? rows.text(0) : group->second.recorded_name);
      }
      *entry.mutable_stats() = group->second.figures.finish(range.from, range.to);
    }
  }

  const auto failed = fmt::format("e.status IN ({}, {})", static_cast<int>(v1::EXECUTION_STATUS_FAILURE),
                                  static_cast<int>(v1::EXECUTION_STATUS_TIMEOUT));
  {
    // Per reason: its count, and the most recent execution of it (ties: the last inserted).
    auto rows = statement(
        "SELECT failure_reason, n, last_scheduled, execution_id, error_message FROM (SELECT e.failure_reason, "
        "COUNT(*) OVER (PARTITION BY e.failure_reason) AS n, e.scheduled_unix_ms AS last_scheduled, e.execution_id, "
        "e.error_message, ROW_NUMBER() OVER (PARTITION BY e.failure_reason ORDER BY e.scheduled_unix_ms DESC, "
        "e.rowid DESC) AS recency FROM executions e" +
        where.where() + " AND " + failed +
        " AND e.failure_reason <> '') AS reasons WHERE recency = 1 ORDER BY n DESC, failure_reason LIMIT ?");
    rows.bind(rows.bind_all(where.values()), top_n);
    while (rows.next()) {
      auto& reason = *out.mutable_summary()->add_top_failure_reasons();
      reason.set_reason(rows.text(0));
      reason.set_count(static_cast<std::uint64_t>(rows.int64(1)));
      reason.set_last_scheduled_unix_ms(rows.int64(2));
      reason.set_last_execution_id(rows.text(3));
      reason.set_example_error_message(rows.text(4));
    }
  }
  if (query.task_id().empty()) {
    // The task's name: the catalog's, else the one its latest execution recorded.
    auto rows = statement(fmt::format(
        "SELECT task_id, COALESCE((SELECT t.name FROM tasks t WHERE t.id = ranked.task_id), (SELECT e2.task_name FROM "
        "executions e2 WHERE e2.task_id = ranked.task_id ORDER BY e2.scheduled_unix_ms DESC, e2.rowid DESC LIMIT 1)), "
        "failures, finished, successes FROM (SELECT e.task_id, SUM(CASE WHEN {} THEN 1 ELSE 0 END) AS failures, "
        "SUM(CASE WHEN e.status BETWEEN {} AND {} THEN 1 ELSE 0 END) AS finished, SUM(CASE WHEN e.status = {} THEN 1 "
        "ELSE 0 END) AS successes FROM executions e{} GROUP BY e.task_id) AS ranked WHERE failures > 0 "
        "ORDER BY failures DESC, task_id LIMIT ?",
        failed, static_cast<int>(v1::EXECUTION_STATUS_SUCCESS), static_cast<int>(v1::EXECUTION_STATUS_CANCELLED),
        static_cast<int>(v1::EXECUTION_STATUS_SUCCESS), where.where()));
    rows.bind(rows.bind_all(where.values()), top_n);
    while (rows.next()) {
      auto& task = *out.add_top_failing_tasks();
      task.set_task_id(rows.text(0));
      task.set_task_name(rows.text(1));
      task.set_failure_count(static_cast<std::uint64_t>(rows.int64(2)));
      task.set_total(static_cast<std::uint64_t>(rows.int64(3)));
      const auto success = rows.int64(4);
      task.set_success_rate_percent(
          task.total() == 0 ? 0.0 : static_cast<double>(success) * 100.0 / static_cast<double>(task.total()));
    }
  }
  return out;
}

}  // namespace quartzflow::detail
