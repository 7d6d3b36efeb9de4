// SPDX-License-Identifier: Apache-2.0
// The LocalStore schema and its migrations, tracked by `PRAGMA user_version`.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>

#include "../sqlite/sqlite.hpp"

namespace quartzflow::detail {

/// The schema version this build reads and writes.
int local_store_schema_version() noexcept;

/// Brings a writable store to the current version in one transaction. Fails with
/// errc::store_version when the file was written by a newer build.
bool migrate_local_store(SqliteDatabase& db, error_code& ec, std::string* detail);

/// The `h00, h01, ... h23` column list of daily_stats (runs by local start hour).
const std::string& hour_columns();

/// One daily_stats row while it is being updated.
struct StatsRow {
  std::string task_name;
  std::string agent_id;
  std::int64_t total = 0, success = 0, failure = 0, timeout = 0, cancelled = 0, skipped = 0, missed = 0;
  std::int64_t timed_runs = 0, total_duration_ms = 0;
  std::optional<std::int64_t> min_duration_ms, max_duration_ms;
  std::array<std::int64_t, 24> runs_per_hour{};
};

/// The columns of a daily_stats row after `date, task_id`, in StatsRow's order.
const std::string& stats_columns();

// Column positions in stats_columns(): 13 scalars, then the 24 hours.
constexpr int k_stats_hour_column = 13;

/// The StatsRow of `row`, whose stats_columns() start at column `first`.
StatsRow read_stats_row(const SqliteStatement& row, int first);

}  // namespace quartzflow::detail
