// SPDX-License-Identifier: Apache-2.0
// The LocalStore's read queries over one connection: executions, logs, daily statistics,
// what is unsynced or unfinished, the cached configuration. The caller holds the connection.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <quartzflow/local_store.hpp>

#include "../sqlite/sqlite.hpp"

namespace quartzflow::detail {

/// SQLite integers are signed: counts beyond INT64_MAX are clamped.
inline std::int64_t clamp_to_int64(std::uint64_t n) {
  return n > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())
             ? std::numeric_limits<std::int64_t>::max()
             : static_cast<std::int64_t>(n);
}

inline std::int64_t to_unix_ms(Instant t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

namespace local_store_reads {

/// `YYYY-MM-DD`, digits only where digits go.
inline bool is_date(std::string_view text) {
  if (text.size() != 10 || text[4] != '-' || text[7] != '-') return false;
  for (std::size_t i = 0; i < text.size(); ++i)
    if (i != 4 && i != 7 && (text[i] < '0' || text[i] > '9')) return false;
  return true;
}

std::vector<v1::Execution> executions(SqliteDatabase& db, const ExecutionQuery& query, error_code& ec);
std::optional<v1::Execution> execution(SqliteDatabase& db, std::string_view execution_id, error_code& ec);
std::uint64_t count_executions(SqliteDatabase& db, const ExecutionQuery& query, error_code& ec);
std::optional<std::string> full_log(SqliteDatabase& db, std::string_view execution_id, error_code& ec);
/// The rows between two `YYYY-MM-DD` dates (checked by the caller), labelled with `time_zone`.
std::vector<v1::DailyStats> daily_stats(SqliteDatabase& db, std::string_view from_date, std::string_view to_date,
                                        const std::optional<std::string>& task_id, const std::string& time_zone,
                                        error_code& ec);
std::vector<v1::Execution> unsynced(SqliteDatabase& db, std::size_t limit, error_code& ec);
std::uint64_t unsynced_count(SqliteDatabase& db, error_code& ec);
std::vector<v1::Execution> unfinished(SqliteDatabase& db, error_code& ec);
std::optional<Instant> last_scheduled(SqliteDatabase& db, std::string_view task_id, error_code& ec);
CachedConfig cached_config(SqliteDatabase& db, error_code& ec);
/// A `meta` value; 0 when the key was never written.
std::uint64_t meta_value(SqliteDatabase& db, std::string_view key, error_code& ec);

}  // namespace local_store_reads
}  // namespace quartzflow::detail
