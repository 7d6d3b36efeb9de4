// SPDX-License-Identifier: Apache-2.0
// LocalStore migrations: each step runs once, in order, inside one transaction with the
// `PRAGMA user_version` bump, so a crash mid-migration leaves the previous version intact.
#include "schema.hpp"

#include <vector>

#include <fmt/format.h>

namespace quartzflow::detail {
namespace {

std::string hour_column_definitions() {
  std::string out;
  for (int h = 0; h < 24; ++h) out += fmt::format("  h{:02} INTEGER NOT NULL DEFAULT 0,\n", h);
  return out;
}

// Version 1: executions (the record as a protobuf BLOB plus the columns queries need),
// full logs, daily stats and the cached configuration.
std::string schema_v1() {
  return R"sql(
CREATE TABLE executions (
  execution_id TEXT PRIMARY KEY NOT NULL,
  task_id TEXT NOT NULL,
  status INTEGER NOT NULL,
  trigger INTEGER NOT NULL,
  scheduled_unix_ms INTEGER NOT NULL,
  started_unix_ms INTEGER NOT NULL,
  ended_unix_ms INTEGER NOT NULL,
  duration_ms INTEGER NOT NULL,
  exit_code INTEGER,
  attempt INTEGER NOT NULL,
  synced INTEGER NOT NULL DEFAULT 0,
  updated_unix_ms INTEGER NOT NULL,
  record BLOB NOT NULL
);
CREATE INDEX executions_by_task ON executions (task_id, scheduled_unix_ms);
CREATE INDEX executions_by_task_trigger ON executions (task_id, trigger, scheduled_unix_ms);
CREATE INDEX executions_by_scheduled ON executions (scheduled_unix_ms);
CREATE INDEX executions_by_status ON executions (status, scheduled_unix_ms);
CREATE INDEX executions_unsynced ON executions (scheduled_unix_ms, execution_id) WHERE synced = 0;

CREATE TABLE logs (
  execution_id TEXT PRIMARY KEY NOT NULL,
  task_id TEXT NOT NULL,
  scheduled_unix_ms INTEGER NOT NULL,
  data BLOB NOT NULL,
  created_unix_ms INTEGER NOT NULL
);
CREATE INDEX logs_by_task ON logs (task_id, scheduled_unix_ms);

CREATE TABLE daily_stats (
  date TEXT NOT NULL,
  task_id TEXT NOT NULL,
  task_name TEXT NOT NULL DEFAULT '',
  agent_id TEXT NOT NULL DEFAULT '',
  total INTEGER NOT NULL DEFAULT 0,
  success INTEGER NOT NULL DEFAULT 0,
  failure INTEGER NOT NULL DEFAULT 0,
  timeout INTEGER NOT NULL DEFAULT 0,
  cancelled INTEGER NOT NULL DEFAULT 0,
  skipped INTEGER NOT NULL DEFAULT 0,
  missed INTEGER NOT NULL DEFAULT 0,
  timed_runs INTEGER NOT NULL DEFAULT 0,
  total_duration_ms INTEGER NOT NULL DEFAULT 0,
  min_duration_ms INTEGER,
  max_duration_ms INTEGER,
)sql" + hour_column_definitions() +
         R"sql(  updated_unix_ms INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (date, task_id)
);

CREATE TABLE config (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  version INTEGER NOT NULL,
  tasks BLOB NOT NULL
);
)sql";
}

// Version 2: the cached configuration one row per task, so that a config delta writes only
// the tasks it changes (version 1's single blob was rewritten whole on every delta). The
// `config` row keeps the version; its `tasks` blob is empty once the rows hold the tasks (a
// blob left by version 1 is moved into rows by the first delta saved, see LocalStore).
std::string schema_v2() {
  return R"sql(
CREATE TABLE config_tasks (
  id TEXT PRIMARY KEY NOT NULL,
  task BLOB NOT NULL
) WITHOUT ROWID;
)sql";
}

// Version 3: small facts the agent keeps across restarts, one integer per key (the highest
// leader epoch a coordinator sent: run requests of a lower one are refused).
std::string schema_v3() {
  return R"sql(
CREATE TABLE meta (
  key TEXT PRIMARY KEY NOT NULL,
  value INTEGER NOT NULL
) WITHOUT ROWID;
)sql";
}

}  // namespace

int local_store_schema_version() noexcept { return 3; }

const std::string& hour_columns() {
  static const std::string columns = [] {
    std::string out;
    for (int h = 0; h < 24; ++h) out += fmt::format("{}h{:02}", h == 0 ? "" : ", ", h);
    return out;
  }();
  return columns;
}

bool migrate_local_store(SqliteDatabase& db, error_code& ec, std::string* detail) {
  static const std::vector<SchemaStep> steps{{1, schema_v1()}, {2, schema_v2()}, {3, schema_v3()}};
  return migrate_schema(db, steps, ec, detail);
}

const std::string& stats_columns() {
  static const std::string columns =
      "task_name, agent_id, total, success, failure, timeout, cancelled, skipped, missed, timed_runs, "
      "total_duration_ms, min_duration_ms, max_duration_ms, " +
      hour_columns();
  return columns;
}

StatsRow read_stats_row(const SqliteStatement& row, int first) {
  StatsRow s;
  s.task_name = row.text(first + 0);
  s.agent_id = row.text(first + 1);
  s.total = row.int64(first + 2);
  s.success = row.int64(first + 3);
  s.failure = row.int64(first + 4);
  s.timeout = row.int64(first + 5);
  s.cancelled = row.int64(first + 6);
  s.skipped = row.int64(first + 7);
  s.missed = row.int64(first + 8);
  s.timed_runs = row.int64(first + 9);
  s.total_duration_ms = row.int64(first + 10);
  if (!row.is_null(first + 11)) s.min_duration_ms = row.int64(first + 11);
  if (!row.is_null(first + 12)) s.max_duration_ms = row.int64(first + 12);
  for (int h = 0; h < 24; ++h)
    s.runs_per_hour[static_cast<std::size_t>(h)] = row.int64(first + k_stats_hour_column + h);
  return s;
}


}  // namespace quartzflow::detail
