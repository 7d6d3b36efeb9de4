// SPDX-License-Identifier: Apache-2.0
// Retention in the StoreTransaction: slices of old executions (rolled up into daily stats
// first), logs and audit entries deleted oldest first, optionally handed back for an archive.
// Each call is one bounded slice; the RetentionService runs them in short transactions.
#include <algorithm>
#include <map>
#include <tuple>

#include <date/date.h>
#include <fmt/format.h>

#include <quartzflow/execution_status.hpp>

#include "sql_transaction.hpp"

namespace quartzflow::detail {
namespace {

constexpr std::size_t k_keys_per_delete = 100;

std::string utc_date(std::int64_t unix_ms) {
  const auto day =
      date::floor<date::days>(std::chrono::sys_time<std::chrono::milliseconds>{std::chrono::milliseconds{unix_ms}});
  return date::format("%F", day);
}

int utc_hour(std::int64_t unix_ms) {
  const auto ms_of_day = ((unix_ms % 86'400'000) + 86'400'000) % 86'400'000;
  return static_cast<int>(ms_of_day / 3'600'000);
}

/// Adds one purged run to a roll-up entry.
void add_run(v1::DailyStats& stats, v1::ExecutionStatus status, std::int64_t duration_ms, int hour) {
  if (stats.runs_per_hour_size() != 24) {
    stats.clear_runs_per_hour();
    for (int h = 0; h < 24; ++h) stats.add_runs_per_hour(0);
  }
  switch (status) {
    case v1::EXECUTION_STATUS_SUCCESS: stats.set_success(stats.success() + 1); break;
    case v1::EXECUTION_STATUS_FAILURE: stats.set_failure(stats.failure() + 1); break;
    case v1::EXECUTION_STATUS_TIMEOUT: stats.set_timeout(stats.timeout() + 1); break;
    case v1::EXECUTION_STATUS_CANCELLED: stats.set_cancelled(stats.cancelled() + 1); break;
    case v1::EXECUTION_STATUS_SKIPPED: stats.set_skipped(stats.skipped() + 1); return;
    case v1::EXECUTION_STATUS_MISSED: stats.set_missed(stats.missed() + 1); return;
    default: return;
  }
  // `total` counts runs that ran (as the agents' daily stats do): not SKIPPED nor MISSED.
  const bool first = stats.total() == 0;
  stats.set_total(stats.total() + 1);
  stats.set_runs_per_hour(hour, stats.runs_per_hour(hour) + 1);
  stats.set_total_duration_ms(stats.total_duration_ms() + duration_ms);
  stats.set_min_duration_ms(first ? duration_ms : std::min(stats.min_duration_ms(), duration_ms));
  stats.set_max_duration_ms(std::max(stats.max_duration_ms(), duration_ms));
  stats.set_avg_duration_ms(stats.total_duration_ms() / stats.total());
}

}  // namespace

void SqlStoreTransaction::delete_keys(std::string_view table, std::string_view column,
                                      const std::vector<std::string>& keys) {
  if (keys.empty()) return;
  // One statement shape per table: a short last chunk repeats its last key.
  std::string sql = fmt::format("DELETE FROM {} WHERE {} IN (", table, column);
  for (std::size_t i = 0; i < k_keys_per_delete; ++i) sql += fmt::format("{}?{}", i == 0 ? "" : ", ", i + 1);
  sql += ")";
  for (std::size_t at = 0; at < keys.size(); at += k_keys_per_delete) {
    auto del = statement(sql);
    for (std::size_t i = 0; i < k_keys_per_delete; ++i)
      del.bind(static_cast<int>(i + 1), keys[std::min(at + i, keys.size() - 1)]);
    del.run();
  }
}

std::size_t SqlStoreTransaction::purge_executions(std::int64_t before_unix_ms, std::size_t max_rows,
                                                  std::vector<v1::Execution>* archived,
                                                  std::vector<ArchivedLog>* archived_logs) {
  require_writable("purge_executions");
  if (max_rows == 0) return 0;
  struct Row {
    std::string id, task_id, agent_id, task_name;
    v1::ExecutionStatus status;
    std::int64_t scheduled_ms, duration_ms;
  };
  std::vector<Row> rows;
  {
    // The (scheduled_unix_ms) index walks the oldest first; PENDING and RUNNING stay.
    auto select = statement(
        "SELECT execution_id, task_id, agent_id, task_name, status, scheduled_unix_ms, duration_ms, record "
        "FROM executions WHERE scheduled_unix_ms < ?1 AND status NOT IN (?2, ?3) ORDER BY scheduled_unix_ms LIMIT ?4");
    select.bind(1, before_unix_ms)
        .bind(2, static_cast<std::int64_t>(v1::EXECUTION_STATUS_PENDING))
        .bind(3, static_cast<std::int64_t>(v1::EXECUTION_STATUS_RUNNING))
        .bind(4, static_cast<std::int64_t>(max_rows));
    while (select.next()) {
      rows.push_back({select.text(0), select.text(1), select.text(2), select.text(3),
                      static_cast<v1::ExecutionStatus>(select.int64(4)), select.int64(5), select.int64(6)});
      if (archived) parse_record(select.blob(7), archived->emplace_back());
    }
  }
  if (rows.empty()) return 0;
  // Roll up first, in the same transaction: the counts never lose a run nor count one twice.
  std::map<std::tuple<std::string, std::string, std::string>, v1::DailyStats> rollups;
  for (const auto& r : rows) {
    auto& entry = rollups[{utc_date(r.scheduled_ms), r.task_id, r.agent_id}];
    if (!r.task_name.empty()) entry.set_task_name(r.task_name);
    add_run(entry, r.status, std::max<std::int64_t>(r.duration_ms, 0), utc_hour(r.scheduled_ms));
  }
  const auto now = now_unix_ms();
  for (auto& [key, add] : rollups) {
    const auto& [day, task_id, agent_id] = key;
    v1::DailyStats merged;
    {
      auto read =
          statement("SELECT record FROM execution_daily_rollups WHERE date = ?1 AND task_id = ?2 AND agent_id = ?3");
      read.bind(1, day).bind(2, task_id).bind(3, agent_id);
      if (read.next()) parse_record(read.blob(0), merged);
    }
    merged.set_date(day);
    merged.set_time_zone("UTC");
    merged.set_task_id(task_id);
    merged.set_agent_id(agent_id);
    if (!add.task_name().empty()) merged.set_task_name(add.task_name());
    const bool had_runs = merged.total() > 0;
    if (merged.runs_per_hour_size() != 24) {
      merged.clear_runs_per_hour();
      for (int h = 0; h < 24; ++h) merged.add_runs_per_hour(0);
    }
    for (int h = 0; h < 24; ++h) merged.set_runs_per_hour(h, merged.runs_per_hour(h) + add.runs_per_hour(h));
    merged.set_total(merged.total() + add.total());
    merged.set_success(merged.success() + add.success());
    merged.set_failure(merged.failure() + add.failure());
    merged.set_timeout(merged.timeout() + add.timeout());
    merged.set_cancelled(merged.cancelled() + add.cancelled());
    merged.set_skipped(merged.skipped() + add.skipped());
    merged.set_missed(merged.missed() + add.missed());
    merged.set_total_duration_ms(merged.total_duration_ms() + add.total_duration_ms());
    if (add.total() > 0) {
      merged.set_min_duration_ms(had_runs ? std::min(merged.min_duration_ms(), add.min_duration_ms())
                                          : add.min_duration_ms());
      merged.set_max_duration_ms(std::max(merged.max_duration_ms(), add.max_duration_ms()));
    }
    merged.set_avg_duration_ms(merged.total() ? merged.total_duration_ms() / merged.total() : 0);
    merged.set_updated_unix_ms(now);
    statement(
        "INSERT INTO execution_daily_rollups (date, task_id, agent_id, record) VALUES (?1, ?2, ?3, ?4) "
        "ON CONFLICT (date, task_id, agent_id) DO UPDATE SET record = excluded.record")
        .bind(1, day)
        .bind(2, task_id)
        .bind(3, agent_id)
        .bind_blob(4, merged.SerializeAsString())
        .run();
  }
  std::vector<std::string> ids;
  std::vector<std::int64_t> scheduled;
  ids.reserve(rows.size());
  for (auto& r : rows) {
    ids.push_back(std::move(r.id));
    scheduled.push_back(r.scheduled_ms);
  }
  if (archived_logs) {
    for (std::size_t i = 0; i < ids.size(); ++i) {
      auto read = statement("SELECT data FROM logs WHERE execution_id = ?1");
      read.bind(1, ids[i]);
      if (read.next()) archived_logs->push_back({ids[i], std::string(read.blob(0)), scheduled[i]});
    }
  }
  delete_keys("logs", "execution_id", ids);
  delete_keys("executions", "execution_id", ids);
  return ids.size();
}

std::size_t SqlStoreTransaction::purge_logs(std::int64_t before_unix_ms, std::size_t max_rows,
                                            std::vector<ArchivedLog>* archived) {
  require_writable("purge_logs");
  if (max_rows == 0) return 0;
  std::vector<std::string> ids;
  {
    // The log of a run still going (PENDING, RUNNING) stays whatever its age.
    auto select = statement(
        "SELECT l.execution_id, l.data, l.updated_unix_ms FROM logs l WHERE l.updated_unix_ms < ?1 AND NOT EXISTS "
        "(SELECT 1 FROM "
        "executions e WHERE e.execution_id = l.execution_id AND e.status IN (?2, ?3)) ORDER BY l.updated_unix_ms "
        "LIMIT ?4");
    select.bind(1, before_unix_ms)
        .bind(2, static_cast<std::int64_t>(v1::EXECUTION_STATUS_PENDING))
        .bind(3, static_cast<std::int64_t>(v1::EXECUTION_STATUS_RUNNING))
        .bind(4, static_cast<std::int64_t>(max_rows));
    while (select.next()) {
      ids.push_back(select.text(0));
      if (archived) archived->push_back({ids.back(), std::string(select.blob(1)), select.int64(2)});
    }
  }
  delete_keys("logs", "execution_id", ids);
  return ids.size();
}

std::size_t SqlStoreTransaction::purge_audit(std::int64_t before_unix_ms, std::size_t max_rows,
                                             std::vector<v1::AuditEntry>* archived) {
  require_writable("purge_audit");
  if (max_rows == 0) return 0;
  std::vector<std::string> ids;
  {
    auto select = statement("SELECT id, record FROM audit WHERE at_unix_ms < ?1 ORDER BY at_unix_ms LIMIT ?2");
    select.bind(1, before_unix_ms).bind(2, static_cast<std::int64_t>(max_rows));
    while (select.next()) {
      ids.push_back(std::to_string(select.int64(0)));
      if (archived) parse_record(select.blob(1), archived->emplace_back());
    }
  }
  if (ids.empty()) return 0;
  // The same oldest entries the SELECT read: entries are appended at the current time, so no
  // other one can fall before the cut meanwhile.
  statement("DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at_unix_ms < ?1 ORDER BY at_unix_ms LIMIT ?2)")
      .bind(1, before_unix_ms)
      .bind(2, static_cast<std::int64_t>(ids.size()))
      .run();
  return ids.size();
}

std::vector<v1::DailyStats> SqlStoreTransaction::execution_rollups(std::string_view from_date,
                                                                   std::string_view to_date) {
  auto rows = statement(
      "SELECT record FROM execution_daily_rollups WHERE date >= ?1 AND date <= ?2 ORDER BY date, task_id, agent_id");
  rows.bind(1, from_date).bind(2, to_date);
  std::vector<v1::DailyStats> out;
  while (rows.next()) parse_record(rows.blob(0), out.emplace_back());
  return out;
}

std::size_t SqlStoreTransaction::purge_execution_rollups(std::string_view before_date) {
  require_writable("purge_execution_rollups");
  return static_cast<std::size_t>(
      statement("DELETE FROM execution_daily_rollups WHERE date < ?1").bind(1, before_date).run());
}

}  // namespace quartzflow::detail
