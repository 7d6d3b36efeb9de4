// SPDX-License-Identifier: Apache-2.0
// The LocalStore's read queries (local_store_reads.hpp); the writes and the store thread are
// in local_store.cpp.
#include "local_store_reads.hpp"

#include <algorithm>
#include <variant>

#include <fmt/format.h>

#include <quartzflow/log.hpp>
#include <quartzflow/v1/config.pb.h>

#include "schema.hpp"

namespace quartzflow::detail::local_store_reads {
namespace {

struct ExecutionFilter {
  std::string where;
  std::vector<std::variant<std::int64_t, std::string>> values;
};

ExecutionFilter filter_of(const ExecutionQuery& query) {
  ExecutionFilter f;
  f.where = " WHERE 1 = 1";
  if (query.task_id) {
    f.where += " AND task_id = ?";
    f.values.emplace_back(*query.task_id);
  }
  if (query.status) {
    f.where += " AND status = ?";
    f.values.emplace_back(static_cast<std::int64_t>(*query.status));
  }
  if (query.scheduled_from) {
    f.where += " AND scheduled_unix_ms >= ?";
    f.values.emplace_back(to_unix_ms(*query.scheduled_from));
  }
  if (query.scheduled_to) {
    f.where += " AND scheduled_unix_ms < ?";
    f.values.emplace_back(to_unix_ms(*query.scheduled_to));
  }
  return f;
}

void bind_all(SqliteStatement& statement, const ExecutionFilter& filter) {
  int index = 1;
  for (const auto& value : filter.values)
    std::visit([&](const auto& v) { statement.bind(index++, v); }, value);
}

/// Reads `SELECT record, synced ...` rows into records.
std::vector<v1::Execution> read_records(SqliteStatement& statement, error_code& ec) {
  std::vector<v1::Execution> out;
  while (statement.step(ec)) {
    const auto bytes = statement.blob(0);
    v1::Execution record;
    if (!record.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
      logger()->error("local store: a stored execution record does not parse");
      ec = errc::store_failed;
      return {};
    }
    record.set_synced(statement.int64(1) != 0);
    out.push_back(std::move(record));
  }
  if (ec) return {};
  return out;
}


std::uint32_t to_count(std::int64_t n) {
  return static_cast<std::uint32_t>(std::clamp<std::int64_t>(n, 0, std::numeric_limits<std::uint32_t>::max()));
}

}  // namespace

std::vector<v1::Execution> executions(SqliteDatabase& db, const ExecutionQuery& query, error_code& ec) {
  const auto filter = filter_of(query);
  const char* order = query.newest_first ? "DESC" : "ASC";
  auto statement = db.prepare(fmt::format("SELECT record, synced FROM executions{} ORDER BY scheduled_unix_ms {}, "
                                          "execution_id {} LIMIT ? OFFSET ?",
                                          filter.where, order, order),
                              ec);
  if (ec) return {};
  bind_all(statement, filter);
  const int next = static_cast<int>(filter.values.size()) + 1;
  statement.bind(next, clamp_to_int64(query.limit)).bind(next + 1, clamp_to_int64(query.offset));
  return read_records(statement, ec);
}

std::optional<v1::Execution> execution(SqliteDatabase& db, std::string_view execution_id, error_code& ec) {
  auto statement = db.prepare("SELECT record, synced FROM executions WHERE execution_id = ?1", ec);
  if (ec) return std::nullopt;
  statement.bind(1, execution_id);
  auto records = read_records(statement, ec);
  if (records.empty()) return std::nullopt;
  return std::move(records.front());
}

std::uint64_t count_executions(SqliteDatabase& db, const ExecutionQuery& query, error_code& ec) {
  const auto filter = filter_of(query);
  auto statement = db.prepare("SELECT COUNT(*) FROM executions" + filter.where, ec);
  if (ec) return 0;
  bind_all(statement, filter);
  if (!statement.step(ec)) return 0;
  return static_cast<std::uint64_t>(statement.int64(0));
}

std::optional<std::string> full_log(SqliteDatabase& db, std::string_view execution_id, error_code& ec) {
  auto statement = db.prepare("SELECT data FROM logs WHERE execution_id = ?1", ec);
  if (ec) return std::nullopt;
  statement.bind(1, execution_id);
  if (!statement.step(ec)) return std::nullopt;
  return std::string(statement.blob(0));
}

std::vector<v1::DailyStats> daily_stats(SqliteDatabase& db, std::string_view from_date, std::string_view to_date,
                                        const std::optional<std::string>& task_id, const std::string& time_zone,
                                        error_code& ec) {
  auto statement = db.prepare(fmt::format("SELECT date, task_id, {}, updated_unix_ms FROM daily_stats "
                                          "WHERE date >= ?1 AND date <= ?2{} ORDER BY date, task_id",
                                          stats_columns(), task_id ? " AND task_id = ?3" : ""),
                              ec);
  if (ec) return {};
  statement.bind(1, from_date).bind(2, to_date);
  if (task_id) statement.bind(3, *task_id);
  std::vector<v1::DailyStats> out;
  while (statement.step(ec)) {
    const StatsRow row = read_stats_row(statement, 2);
    v1::DailyStats& s = out.emplace_back();
    s.set_date(statement.text(0));
    s.set_time_zone(time_zone);
    s.set_task_id(statement.text(1));
    s.set_task_name(row.task_name);
    s.set_agent_id(row.agent_id);
    s.set_total(to_count(row.total));
    s.set_success(to_count(row.success));
    s.set_failure(to_count(row.failure));
    s.set_timeout(to_count(row.timeout));
    s.set_cancelled(to_count(row.cancelled));
    s.set_skipped(to_count(row.skipped));
    s.set_missed(to_count(row.missed));
    s.set_total_duration_ms(row.total_duration_ms);
    s.set_avg_duration_ms(row.timed_runs > 0 ? row.total_duration_ms / row.timed_runs : 0);
    s.set_min_duration_ms(row.min_duration_ms.value_or(0));
    s.set_max_duration_ms(row.max_duration_ms.value_or(0));
    for (const auto n : row.runs_per_hour) s.add_runs_per_hour(to_count(n));
    s.set_updated_unix_ms(statement.int64(2 + k_stats_hour_column + 24));
  }
  if (ec) return {};
  return out;
}

std::vector<v1::Execution> unsynced(SqliteDatabase& db, std::size_t limit, error_code& ec) {
  // `synced = 0` spelled out so that the partial index executions_unsynced applies.
  auto statement = db.prepare(
      "SELECT record, synced FROM executions WHERE synced = 0 ORDER BY scheduled_unix_ms, execution_id LIMIT ?1",
      ec);
  if (ec) return {};
  statement.bind(1, clamp_to_int64(limit));
  return read_records(statement, ec);
}

std::uint64_t unsynced_count(SqliteDatabase& db, error_code& ec) {
  // Counted over the partial index executions_unsynced (only the backlog's rows).
  auto statement = db.prepare("SELECT COUNT(*) FROM executions WHERE synced = 0", ec);
  if (ec || !statement.step(ec)) return 0;
  return static_cast<std::uint64_t>(statement.int64(0));
}

std::vector<v1::Execution> unfinished(SqliteDatabase& db, error_code& ec) {
  auto statement = db.prepare(
      "SELECT record, synced FROM executions WHERE status IN (?1, ?2) ORDER BY scheduled_unix_ms, execution_id", ec);
  if (ec) return {};
  statement.bind(1, static_cast<std::int64_t>(v1::EXECUTION_STATUS_PENDING))
      .bind(2, static_cast<std::int64_t>(v1::EXECUTION_STATUS_RUNNING));
  return read_records(statement, ec);
}

std::optional<Instant> last_scheduled(SqliteDatabase& db, std::string_view task_id, error_code& ec) {
  auto statement =
      db.prepare("SELECT MAX(scheduled_unix_ms) FROM executions WHERE task_id = ?1 AND trigger IN (?2, ?3)", ec);
  if (ec) return std::nullopt;
  statement.bind(1, task_id)
      .bind(2, static_cast<std::int64_t>(v1::TRIGGER_TYPE_SCHEDULED))
      .bind(3, static_cast<std::int64_t>(v1::TRIGGER_TYPE_MISFIRE_CATCHUP));
  if (!statement.step(ec) || statement.is_null(0)) return std::nullopt;
  return std::chrono::floor<std::chrono::seconds>(
      std::chrono::sys_time<std::chrono::milliseconds>{std::chrono::milliseconds{statement.int64(0)}});
}

std::uint64_t meta_value(SqliteDatabase& db, std::string_view key, error_code& ec) {
  auto statement = db.prepare("SELECT value FROM meta WHERE key = ?1", ec);
  if (ec) return 0;
  statement.bind(1, key);
  if (!statement.step(ec)) return 0;
  return static_cast<std::uint64_t>(statement.int64(0));
}

CachedConfig cached_config(SqliteDatabase& db, error_code& ec) {
  auto statement = db.prepare("SELECT version, tasks FROM config WHERE id = 1", ec);
  if (ec) return {};
  CachedConfig config;
  if (!statement.step(ec)) return config;
  config.version = static_cast<std::uint64_t>(statement.int64(0));
  const auto bytes = statement.blob(1);
  v1::TaskManifest manifest;
  if (!manifest.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
    logger()->error("local store: the cached configuration does not parse");
    ec = errc::store_failed;
    return {};
  }
  // Cached before `enabled` had presence, a disabled task omits it: say so explicitly, or
  // TaskEngine::apply would take the absence for "enabled".
  for (auto& task : *manifest.mutable_tasks()) task.set_enabled(task.enabled());
  config.tasks.assign(std::make_move_iterator(manifest.mutable_tasks()->begin()),
                      std::make_move_iterator(manifest.mutable_tasks()->end()));
  statement.reset();
  // Schema 2: one row per task (the blob above is empty, or a schema 1 store's until a
  // delta is saved, and then the rows are empty).
  auto rows = db.prepare("SELECT task FROM config_tasks ORDER BY id", ec);
  if (ec) return {};
  while (rows.step(ec)) {
    const auto task_bytes = rows.blob(0);
    v1::Task task;
    if (!task.ParseFromArray(task_bytes.data(), static_cast<int>(task_bytes.size()))) {
      logger()->error("local store: a cached task does not parse");
      ec = errc::store_failed;
      return {};
    }
    task.set_enabled(task.enabled());
    config.tasks.push_back(std::move(task));
  }
  if (ec) return {};
  return config;
}

}  // namespace quartzflow::detail::local_store_reads
