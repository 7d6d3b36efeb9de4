// SPDX-License-Identifier: Apache-2.0
// The execution change feed in the StoreTransaction: `execution_changes` rows, appended by
// database triggers on every insert or update of an execution (schema: SQLite 8, PostgreSQL
// 5), read by seq with the execution's current record, purged by age.
#include <fmt/format.h>

#include "sql_transaction.hpp"

namespace quartzflow::detail {

std::int64_t SqlStoreTransaction::latest_execution_change() {
  auto rows = statement("SELECT MAX(seq) FROM execution_changes");
  if (!rows.next() || rows.is_null(0)) return 0;
  return rows.int64(0);
}

std::vector<ExecutionChange> SqlStoreTransaction::execution_changes(std::int64_t after,
                                                                    std::span<const std::int64_t> also,
                                                                    std::size_t limit) {
  std::string sql =
      "SELECT c.seq, c.status, c.at_unix_ms, e.record FROM execution_changes c "
      "JOIN executions e ON e.execution_id = c.execution_id WHERE c.seq > ?1";
  if (!also.empty()) {
    sql += " OR c.seq IN (";
    for (std::size_t i = 0; i < also.size(); ++i) sql += fmt::format("{}?{}", i ? ", " : "", i + 3);
    sql += ")";
  }
  sql += " ORDER BY c.seq LIMIT ?2";
  auto rows = statement(sql);
  rows.bind(1, after).bind(2, static_cast<std::int64_t>(limit));
  for (std::size_t i = 0; i < also.size(); ++i) rows.bind(static_cast<int>(i + 3), also[i]);
  std::vector<ExecutionChange> out;
  while (rows.next()) {
    auto& change = out.emplace_back();
    change.seq = rows.int64(0);
    change.status = static_cast<v1::ExecutionStatus>(rows.int64(1));
    change.at_unix_ms = rows.int64(2);
    parse_record(rows.blob(3), change.record);
    change.record.clear_output();
  }
  return out;
}

std::size_t SqlStoreTransaction::purge_execution_changes(std::int64_t older_than_unix_ms, std::size_t max_rows) {
  require_writable("purge_execution_changes");
  // Changes are appended in time order: the old ones are a prefix of the seq order. Only the
  // first `max_rows` are looked at (no index on the time), and removed up to the last old one.
  std::optional<std::int64_t> last_old;
  {
    auto rows = statement(
        "SELECT MAX(s.seq) FROM (SELECT seq, at_unix_ms FROM execution_changes ORDER BY seq LIMIT ?2) s "
        "WHERE s.at_unix_ms < ?1");
    rows.bind(1, older_than_unix_ms).bind(2, static_cast<std::int64_t>(max_rows));
    if (rows.next() && !rows.is_null(0)) last_old = rows.int64(0);
  }
  if (!last_old) return 0;
  return static_cast<std::size_t>(statement("DELETE FROM execution_changes WHERE seq <= ?1").bind(1, *last_old).run());
}

}  // namespace quartzflow::detail
