// SPDX-License-Identifier: Apache-2.0
// Execution history in the StoreTransaction: upserts by execution id under the
// first-final-wins rules, lookups, filtered and paged lists, and logs.
#include <algorithm>
#include <array>
#include <set>

#include <fmt/format.h>

#include <quartzflow/execution_status.hpp>

#include "../common/clock.hpp"
#include "sql_transaction.hpp"

namespace quartzflow::detail {
namespace {

/// The run time the statistics use: the record's, or ended - started when it left it out.
std::int64_t duration_of(const v1::Execution& e) noexcept {
  if (e.duration_ms() != 0 || e.started_unix_ms() == 0 || e.ended_unix_ms() <= e.started_unix_ms())
    return std::max<std::int64_t>(e.duration_ms(), 0);
  return e.ended_unix_ms() - e.started_unix_ms();
}

constexpr std::array k_execution_sort_keys{
    SortKey{"scheduled_unix_ms", "e.scheduled_unix_ms"},
    SortKey{"started_unix_ms", "e.started_unix_ms"},
    SortKey{"duration_ms", "e.duration_ms"},
    SortKey{"status", "e.status"},
};

constexpr std::array<std::string_view, 4> k_execution_keyword_columns{"e.task_name", "e.execution_id",
                                                                      "e.failure_reason", "e.error_message"};

}  // namespace

UpsertResult SqlStoreTransaction::upsert_execution(const v1::Execution& incoming) {
  require_writable("upsert_execution");
  if (incoming.execution_id().empty()) throw_invalid("execution", "execution_id", "is empty");
  if (incoming.task_id().empty()) throw_invalid("execution", "task_id", "is empty");
  if (incoming.status() == v1::EXECUTION_STATUS_UNSPECIFIED) throw_invalid("execution", "status", "is unspecified");

  v1::Execution merged;
  std::string stored_bytes;
  bool existed = false;
  bool was_final = false;
  {
    auto rows = statement("SELECT status, record FROM executions WHERE execution_id = ?1");
    rows.bind(1, incoming.execution_id());
    if (rows.next()) {
      existed = true;
      const auto stored_status = rows.int64(0);
      // The first final state wins: a final record never goes back to PENDING or RUNNING,
      // nor turns into another final state; the same final state may complete the record.
      if (is_final(stored_status) && stored_status != static_cast<std::int64_t>(incoming.status()))
        return UpsertResult::ignored;
      was_final = is_final(stored_status);
      stored_bytes = rows.blob(1);
    }
  }
  if (existed) {
    parse_record(stored_bytes, merged);
    // Fields the newer report sets replace the stored ones; fields it leaves empty keep
    // theirs, so a re-sent result without its output does not erase it.
    merged.MergeFrom(incoming);
  } else {
    merged = incoming;
  }
  merged.set_synced(false);  // agent side only
  auto bytes = serialize_deterministic(merged);
  const auto known = was_final ? UpsertResult::repeated : UpsertResult::merged;
  if (existed && bytes == stored_bytes) return known;
  statement(
      "INSERT INTO executions (execution_id, task_id, agent_id, group_id, status, trigger, scheduled_unix_ms, "
      "started_unix_ms, ended_unix_ms, duration_ms, attempt, task_name, failure_reason, error_message, record) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) "
      "ON CONFLICT (execution_id) DO UPDATE SET task_id = excluded.task_id, agent_id = excluded.agent_id, "
      "group_id = excluded.group_id, status = excluded.status, trigger = excluded.trigger, "
      "scheduled_unix_ms = excluded.scheduled_unix_ms, started_unix_ms = excluded.started_unix_ms, "
      "ended_unix_ms = excluded.ended_unix_ms, duration_ms = excluded.duration_ms, attempt = excluded.attempt, "
      "task_name = excluded.task_name, failure_reason = excluded.failure_reason, "
      "error_message = excluded.error_message, record = excluded.record")
      .bind(1, merged.execution_id())
      .bind(2, merged.task_id())
      .bind(3, merged.agent_id())
      .bind(4, merged.group_id())
      .bind(5, static_cast<std::int64_t>(merged.status()))
      .bind(6, static_cast<std::int64_t>(merged.trigger()))
      .bind(7, merged.scheduled_unix_ms())
      .bind(8, merged.started_unix_ms())
      .bind(9, merged.ended_unix_ms())
      .bind(10, duration_of(merged))
      .bind(11, static_cast<std::int64_t>(merged.attempt()))
      .bind(12, merged.task_name())
      .bind(13, merged.failure_reason())
      .bind(14, merged.error_message())
      .bind_blob(15, bytes)
      .run();
  // The change feed that standby coordinators read (store_change_feed.cpp).
  if (!db_.dialect().execution_changes_by_trigger)
    statement("INSERT INTO execution_changes (execution_id, status, at_unix_ms) VALUES (?1, ?2, ?3)")
        .bind(1, merged.execution_id())
        .bind(2, static_cast<std::int64_t>(merged.status()))
        .bind(3, now_unix_ms())
        .run();
  return existed ? known : UpsertResult::inserted;
}

std::optional<v1::Execution> SqlStoreTransaction::execution(std::string_view id) {
  auto rows = statement("SELECT record FROM executions WHERE execution_id = ?1");
  rows.bind(1, id);
  if (!rows.next()) return std::nullopt;
  v1::Execution out;
  parse_record(rows.blob(0), out);
  return out;
}

std::optional<v1::Execution> SqlStoreTransaction::latest_execution(std::string_view task_id) {
  // The (task_id, scheduled_unix_ms) index answers this without a scan.
  auto rows = statement("SELECT record FROM executions WHERE task_id = ?1 ORDER BY scheduled_unix_ms DESC LIMIT 1");
  rows.bind(1, task_id);
  if (!rows.next()) return std::nullopt;
  v1::Execution out;
  parse_record(rows.blob(0), out);
  out.clear_output();
  return out;
}

Listing<v1::Execution> SqlStoreTransaction::list_executions(const v1::ListExecutionsRequest& request) {
  constexpr std::string_view input = "execution list request";
  SqlConditions where;  // every filter but the statuses
  if (!request.task_id().empty()) where.add("e.task_id = ?", {request.task_id()});
  if (!request.agent_id().empty()) where.add("e.agent_id = ?", {request.agent_id()});
  // The group the agent was in when it ran (Execution.group_id), not its group today.
  if (!request.group_id().empty()) where.add("e.group_id = ?", {request.group_id()});
  if (request.trigger() != v1::TRIGGER_TYPE_UNSPECIFIED)
    where.add("e.trigger = ?", {static_cast<std::int64_t>(request.trigger())});
  if (request.from_unix_ms() != 0) where.add("e.scheduled_unix_ms >= ?", {request.from_unix_ms()});
  if (request.to_unix_ms() != 0) where.add("e.scheduled_unix_ms < ?", {request.to_unix_ms()});
  if (!request.keyword().empty()) add_keyword_condition(where, request.keyword(), k_execution_keyword_columns);
  // Which index serves a status filter: the task's (task, status, time) index; else the
  // agent's or group's index, checking the status row by row (the `+` keeps SQLite from
  // picking the status index, a poor choice with a handful of distinct statuses; PostgreSQL
  // plans by statistics and reads it as a no-op); else the status index.
  const bool by_owner = request.task_id().empty() && (!request.agent_id().empty() || !request.group_id().empty());
  const char* status_column = by_owner ? "+e.status" : "e.status";
  const std::set<std::int64_t> statuses(request.status().begin(), request.status().end());
  auto with_status = where;
  if (!statuses.empty()) {
    std::string placeholders;
    std::vector<SqlValue> values;
    for (const auto status : statuses) {
      placeholders += placeholders.empty() ? "?" : ", ?";
      values.emplace_back(status);
    }
    with_status.add(fmt::format("{} IN ({})", status_column, placeholders), std::move(values));
  }
  // rowid (insertion order; a column of that name in PostgreSQL) breaks ties: every SQLite
  // index ends with it, so the order costs no sort.
  const auto order = order_by(request.sort(), "-scheduled_unix_ms", k_execution_sort_keys, "e.rowid", input,
                              db_.dialect().nulls_sort_high);
  const auto paging = paging_of(request.page(), request.page_size());

  Listing<v1::Execution> out;
  out.total = count("SELECT COUNT(*) FROM executions e" + with_status.where(), with_status.values());

  std::string sql;
  std::vector<SqlValue> values;
  const std::string_view sort = request.sort().empty() ? std::string_view("-scheduled_unix_ms") : request.sort();
  if (statuses.size() > 1 && (sort == "scheduled_unix_ms" || sort == "-scheduled_unix_ms")) {
    // Several statuses in time order: the database would sort every match of `status IN (...)`.
    // Instead each status reads its own index in order, only as far as the page reaches,
    // and the few rows read are merged.
    const char* direction = sort.front() == '-' ? "DESC" : "ASC";
    for (const auto status : statuses) {
      auto part = where;
      part.add(fmt::format("{} = ?", status_column), {status});
      sql += fmt::format(
          "{}SELECT * FROM (SELECT e.record, e.scheduled_unix_ms AS scheduled, e.rowid AS position FROM executions e{} "
          "ORDER BY e.scheduled_unix_ms {}, e.rowid {} LIMIT ?) AS part",
          sql.empty() ? "" : " UNION ALL ", part.where(), direction, direction);
      values.insert(values.end(), part.values().begin(), part.values().end());
      values.emplace_back(paging.offset + paging.limit);
    }
    sql = fmt::format("SELECT record FROM ({}) AS merged ORDER BY scheduled {}, position {} LIMIT ? OFFSET ?", sql,
                      direction, direction);
  } else {
    sql = "SELECT e.record FROM executions e" + with_status.where() + order + " LIMIT ? OFFSET ?";
    values = with_status.values();
  }
  auto rows = statement(sql);
  const int next = rows.bind_all(values);
  rows.bind(next, paging.limit).bind(next + 1, paging.offset);
  while (rows.next()) {
    auto& execution = out.items.emplace_back();
    parse_record(rows.blob(0), execution);
    execution.clear_output();  // lists carry no output (ListExecutionsResponse)
  }
  return out;
}

void SqlStoreTransaction::put_log(std::string_view execution_id, std::string_view text) {
  require_writable("put_log");
  if (execution_id.empty()) throw_invalid("log", "execution_id", "is empty");
  statement(
      "INSERT INTO logs (execution_id, data, updated_unix_ms) VALUES (?1, ?2, ?3) ON CONFLICT (execution_id) DO UPDATE "
      "SET data = excluded.data, updated_unix_ms = excluded.updated_unix_ms")
      .bind(1, execution_id)
      .bind_blob(2, text)
      .bind(3, now_unix_ms())
      .run();
}

namespace {
bool is_date(std::string_view d) {
  return d.size() == 10 && d[4] == '-' && d[7] == '-' &&
         std::all_of(d.begin(), d.end(), [](char c) { return c == '-' || (c >= '0' && c <= '9'); });
}
}  // namespace

void SqlStoreTransaction::put_agent_daily_stats(const v1::DailyStats& stats) {
  require_writable("put_agent_daily_stats");
  if (stats.agent_id().empty()) throw_invalid("daily stats", "agent_id", "is empty");
  if (stats.task_id().empty()) throw_invalid("daily stats", "task_id", "is empty");
  if (!is_date(stats.date()))
    throw_invalid("daily stats", "date", fmt::format("\"{}\" is not a date (YYYY-MM-DD)", stats.date()));
  statement(
      "INSERT INTO agent_daily_stats (agent_id, date, task_id, total, success, updated_unix_ms, record) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (agent_id, date, task_id) DO UPDATE SET total = excluded.total, "
      "success = excluded.success, updated_unix_ms = excluded.updated_unix_ms, record = excluded.record")
      .bind(1, stats.agent_id())
      .bind(2, stats.date())
      .bind(3, stats.task_id())
      .bind(4, static_cast<std::int64_t>(stats.total()))
      .bind(5, static_cast<std::int64_t>(stats.success()))
      .bind(6, now_unix_ms())
      .bind_blob(7, serialize_deterministic(stats))
      .run();
}

std::vector<v1::DailyStats> SqlStoreTransaction::agent_daily_stats(std::string_view agent_id,
                                                                   std::string_view from_date,
                                                                   std::string_view to_date) {
  auto rows = statement(
      "SELECT record FROM agent_daily_stats WHERE (?1 = '' OR agent_id = ?1) AND date >= ?2 AND date <= ?3 "
      "ORDER BY date, agent_id, task_id");
  rows.bind(1, agent_id).bind(2, from_date).bind(3, to_date);
  std::vector<v1::DailyStats> out;
  while (rows.next()) parse_record(rows.blob(0), out.emplace_back());
  return out;
}

std::optional<std::string> SqlStoreTransaction::log(std::string_view execution_id) {
  auto rows = statement("SELECT data FROM logs WHERE execution_id = ?1");
  rows.bind(1, execution_id);
  if (!rows.next()) return std::nullopt;
  return std::string(rows.blob(0));
}

}  // namespace quartzflow::detail
