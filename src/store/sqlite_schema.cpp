// SPDX-License-Identifier: Apache-2.0
// Coordinator store migrations: each step runs once, in order, inside one transaction with
// the `PRAGMA user_version` bump, so a crash mid-migration leaves the previous version.
#include "sqlite_schema.hpp"

#include <vector>

#include <fmt/format.h>

namespace quartzflow::detail {
namespace {

// Version 1. Each object is its protobuf record in a BLOB plus the columns that queries
// filter and sort on; repeated fields that filters need (task groups and labels, group tags,
// agent labels and IPs) are relations. Executions have one index per list filter, each
// ending in scheduled_unix_ms (the default order, newest first).
constexpr const char* k_schema_v1 = R"sql(
CREATE TABLE config_versions (
  version INTEGER PRIMARY KEY NOT NULL,
  at_unix_ms INTEGER NOT NULL,
  summary TEXT NOT NULL
);

CREATE TABLE tasks (
  id TEXT PRIMARY KEY NOT NULL,
  name TEXT NOT NULL UNIQUE,
  description TEXT NOT NULL,
  enabled INTEGER NOT NULL,
  all_agents INTEGER NOT NULL,
  created_at_unix_ms INTEGER NOT NULL,
  updated_at_unix_ms INTEGER NOT NULL,
  record BLOB NOT NULL
);
CREATE INDEX tasks_by_created ON tasks (created_at_unix_ms);
CREATE INDEX tasks_by_updated ON tasks (updated_at_unix_ms);
CREATE INDEX tasks_global ON tasks (id) WHERE all_agents = 1;

CREATE TABLE task_groups (
  task_id TEXT NOT NULL,
  group_id TEXT NOT NULL,
  PRIMARY KEY (task_id, group_id)
) WITHOUT ROWID;
CREATE INDEX task_groups_by_group ON task_groups (group_id, task_id);

CREATE TABLE task_labels (
  task_id TEXT NOT NULL,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (task_id, key)
) WITHOUT ROWID;
CREATE INDEX task_labels_by_label ON task_labels (key, value);

CREATE TABLE groups (
  id TEXT PRIMARY KEY NOT NULL,
  name TEXT NOT NULL UNIQUE,
  description TEXT NOT NULL,
  created_at_unix_ms INTEGER NOT NULL,
  record BLOB NOT NULL
);

CREATE TABLE group_tags (
  group_id TEXT NOT NULL,
  tag TEXT NOT NULL,
  PRIMARY KEY (group_id, tag)
) WITHOUT ROWID;
CREATE INDEX group_tags_by_tag ON group_tags (tag, group_id);

CREATE TABLE agents (
  id TEXT PRIMARY KEY NOT NULL,
  hostname TEXT NOT NULL,
  group_id TEXT NOT NULL,
  state INTEGER NOT NULL,
  push_state INTEGER NOT NULL,
  last_heartbeat_unix_ms INTEGER NOT NULL,
  running_executions INTEGER NOT NULL,
  record BLOB NOT NULL
);
CREATE INDEX agents_by_group ON agents (group_id, state);
CREATE INDEX agents_by_hostname ON agents (hostname);

CREATE TABLE agent_labels (
  agent_id TEXT NOT NULL,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  PRIMARY KEY (agent_id, key)
) WITHOUT ROWID;
CREATE INDEX agent_labels_by_label ON agent_labels (key, value);

CREATE TABLE agent_ips (
  agent_id TEXT NOT NULL,
  ip TEXT NOT NULL,
  PRIMARY KEY (agent_id, ip)
) WITHOUT ROWID;

CREATE TABLE executions (
  execution_id TEXT PRIMARY KEY NOT NULL,
  task_id TEXT NOT NULL,
  agent_id TEXT NOT NULL,
  group_id TEXT NOT NULL,
  status INTEGER NOT NULL,
  trigger INTEGER NOT NULL,
  scheduled_unix_ms INTEGER NOT NULL,
  started_unix_ms INTEGER NOT NULL,
  ended_unix_ms INTEGER NOT NULL,
  duration_ms INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  task_name TEXT NOT NULL,
  failure_reason TEXT NOT NULL,
  error_message TEXT NOT NULL,
  record BLOB NOT NULL
);
CREATE INDEX executions_by_task ON executions (task_id, scheduled_unix_ms);
CREATE INDEX executions_by_task_status ON executions (task_id, status, scheduled_unix_ms);
CREATE INDEX executions_by_agent ON executions (agent_id, scheduled_unix_ms);
CREATE INDEX executions_by_group ON executions (group_id, scheduled_unix_ms);
CREATE INDEX executions_by_status ON executions (status, scheduled_unix_ms);
CREATE INDEX executions_by_scheduled ON executions (scheduled_unix_ms);

CREATE TABLE logs (
  execution_id TEXT PRIMARY KEY NOT NULL,
  data BLOB NOT NULL,
  updated_unix_ms INTEGER NOT NULL
);

CREATE TABLE audit (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at_unix_ms INTEGER NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  target_type TEXT NOT NULL,
  target_id TEXT NOT NULL,
  target_name TEXT NOT NULL,
  detail TEXT NOT NULL,
  record BLOB NOT NULL
);
CREATE INDEX audit_by_at ON audit (at_unix_ms);
CREATE INDEX audit_by_actor ON audit (actor, at_unix_ms);
CREATE INDEX audit_by_target ON audit (target_type, target_id, at_unix_ms);

CREATE TABLE fire_state (
  task_id TEXT PRIMARY KEY NOT NULL,
  last_fire_unix_ms INTEGER,
  next_fire_unix_ms INTEGER
);
)sql";

// Version 2: the daily stats agents report (their own counts, kept beside the executions
// the coordinator received, so the two can be compared).
constexpr const char* k_schema_v2 = R"sql(
CREATE TABLE agent_daily_stats (
  agent_id TEXT NOT NULL,
  date TEXT NOT NULL,
  task_id TEXT NOT NULL,
  total INTEGER NOT NULL,
  success INTEGER NOT NULL,
  updated_unix_ms INTEGER NOT NULL,
  record BLOB NOT NULL,
  PRIMARY KEY (agent_id, date, task_id)
);
CREATE INDEX agent_daily_stats_by_date ON agent_daily_stats (date, task_id);
)sql";

// Version 3: admin API users, API tokens and console sessions. Secrets are kept only as
// SHA-256 hashes (hex); passwords as PBKDF2 strings. Usernames and token hashes are unique;
// token names are unique per user.
constexpr const char* k_schema_v3 = R"sql(
CREATE TABLE users (
  id TEXT PRIMARY KEY NOT NULL,
  username TEXT NOT NULL UNIQUE,
  display_name TEXT NOT NULL,
  email TEXT NOT NULL,
  role INTEGER NOT NULL,
  record BLOB NOT NULL,
  password_hash TEXT NOT NULL,
  totp_secret TEXT NOT NULL,
  totp_pending_secret TEXT NOT NULL,
  totp_last_step INTEGER NOT NULL,
  failed_logins INTEGER NOT NULL,
  locked_until_unix_ms INTEGER NOT NULL
);

CREATE TABLE api_tokens (
  id TEXT PRIMARY KEY NOT NULL,
  user_id TEXT NOT NULL,
  name TEXT NOT NULL,
  secret_sha256 TEXT NOT NULL UNIQUE,
  record BLOB NOT NULL,
  UNIQUE (user_id, name)
);

CREATE TABLE sessions (
  token_sha256 TEXT PRIMARY KEY NOT NULL,
  user_id TEXT NOT NULL,
  expires_at_unix_ms INTEGER NOT NULL,
  created_unix_ms INTEGER NOT NULL,
  source_ip TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at_unix_ms);
)sql";

// Version 4: users who must change their password before anything else (the one-time
// password of the first start). Login locks are kept per (account, source address) in the
// coordinator's memory from now on: the account-wide ones end here.
constexpr const char* k_schema_v4 = R"sql(
ALTER TABLE users ADD COLUMN password_change_required INTEGER NOT NULL DEFAULT 0;
UPDATE users SET failed_logins = 0, locked_until_unix_ms = 0;
)sql";

// Version 5: what each config version changed (task, group or agent ids), so that the other
// coordinators on a shared database reload only that (CatalogFollower). Versions committed
// before it have no rows: a reader of such a range reloads the whole catalog.
constexpr const char* k_schema_v5 = R"sql(
CREATE TABLE config_changes (
  version INTEGER NOT NULL,
  target INTEGER NOT NULL,
  id TEXT NOT NULL,
  PRIMARY KEY (version, target, id)
) WITHOUT ROWID;
)sql";

// Version 6: several coordinators on one database. The leader lease (one row: holder,
// addresses, epoch increasing on every takeover, expiry in the store's clock) and the
// coordinators registry (each coordinator's last report, for GET /api/v1/cluster).
constexpr const char* k_schema_v6 = R"sql(
CREATE TABLE leader_lease (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  holder_id TEXT NOT NULL,
  agent_address TEXT NOT NULL,
  admin_address TEXT NOT NULL,
  epoch INTEGER NOT NULL,
  expires_at_unix_ms INTEGER NOT NULL
);
INSERT INTO leader_lease (id, holder_id, agent_address, admin_address, epoch, expires_at_unix_ms)
  VALUES (1, '', '', '', 0, 0);

CREATE TABLE coordinators (
  id TEXT PRIMARY KEY NOT NULL,
  last_seen_unix_ms INTEGER NOT NULL,
  record BLOB NOT NULL
);
)sql";

// Version 7: alerts (issue 16). Rules, channels, silences and heartbeat monitors as their
// records (a channel's inline secrets sealed by the coordinator's key; a monitor's ping token
// only as its SHA-256); the alerts the engine raises; the outbox of deliveries
// (notifications and result callbacks), one row per message and receiver, its attempts in
// the record.
constexpr const char* k_schema_v7 = R"sql(
CREATE TABLE alert_rules (
  id TEXT PRIMARY KEY NOT NULL,
  record BLOB NOT NULL
);

CREATE TABLE alert_channels (
  id TEXT PRIMARY KEY NOT NULL,
  record BLOB NOT NULL
);

CREATE TABLE alert_silences (
  id TEXT PRIMARY KEY NOT NULL,
  ends_unix_ms INTEGER NOT NULL,
  record BLOB NOT NULL
);

CREATE TABLE alert_monitors (
  id TEXT PRIMARY KEY NOT NULL,
  token_sha256 TEXT NOT NULL UNIQUE,
  record BLOB NOT NULL
);

CREATE TABLE alerts (
  id TEXT PRIMARY KEY NOT NULL,
  rule_id TEXT NOT NULL,
  state INTEGER NOT NULL,
  task_id TEXT NOT NULL,
  started_unix_ms INTEGER NOT NULL,
  record BLOB NOT NULL
);
CREATE INDEX alerts_by_state ON alerts (state, started_unix_ms);
CREATE INDEX alerts_by_rule ON alerts (rule_id, started_unix_ms);
CREATE INDEX alerts_by_task ON alerts (task_id, started_unix_ms);

CREATE TABLE deliveries (
  id TEXT PRIMARY KEY NOT NULL,
  kind INTEGER NOT NULL,
  state INTEGER NOT NULL,
  channel_id TEXT NOT NULL,
  execution_id TEXT NOT NULL,
  created_unix_ms INTEGER NOT NULL,
  next_attempt_unix_ms INTEGER NOT NULL,
  updated_unix_ms INTEGER NOT NULL,
  record BLOB NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_unix_ms);
CREATE INDEX deliveries_by_created ON deliveries (created_unix_ms);
CREATE INDEX deliveries_by_channel ON deliveries (channel_id, created_unix_ms);
CREATE INDEX deliveries_by_execution ON deliveries (execution_id, created_unix_ms);
CREATE INDEX deliveries_by_updated ON deliveries (state, updated_unix_ms);
)sql";

// Version 8: commands through any coordinator and the execution change feed (issue 15). A
// standby queues a trigger, retry or cancel in `commands` (its record: arguments, caller,
// claim, answer); the leader claims and answers it. Every insert or update of an execution
// appends to `execution_changes` (triggers, whoever writes), which standbys read to publish
// the leader's runs; both are purged by age.
constexpr const char* k_schema_v8 = R"sql(
CREATE TABLE commands (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  state INTEGER NOT NULL,
  deadline_unix_ms INTEGER NOT NULL,
  claimed_epoch INTEGER NOT NULL,
  updated_unix_ms INTEGER NOT NULL,
  record BLOB NOT NULL
);
CREATE INDEX commands_by_state ON commands (state, id);

CREATE TABLE execution_changes (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  execution_id TEXT NOT NULL,
  status INTEGER NOT NULL,
  at_unix_ms INTEGER NOT NULL
);
CREATE TRIGGER executions_changed_on_insert AFTER INSERT ON executions BEGIN
  INSERT INTO execution_changes (execution_id, status, at_unix_ms)
    VALUES (NEW.execution_id, NEW.status, CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER));
END;
CREATE TRIGGER executions_changed_on_update AFTER UPDATE ON executions BEGIN
  INSERT INTO execution_changes (execution_id, status, at_unix_ms)
    VALUES (NEW.execution_id, NEW.status, CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER));
END;
)sql";

// Version 9: the upsert appends to execution_changes itself. The triggers of version 8 made
// every upsert a statement on two tables, which SQLite runs with a statement journal: about 8
// times the writer's CPU per record in a batch of 1,000 (qf-bench-store: 120 against 15 us).
constexpr const char* k_schema_v9 = R"sql(
DROP TRIGGER IF EXISTS executions_changed_on_insert;
DROP TRIGGER IF EXISTS executions_changed_on_update;
)sql";

// Version 10: agent enrolment (issue 17). Join tokens are kept as the SHA-256 (hex) of their
// secret; the certificates the coordinator issued, by SHA-256 of their DER, with their
// revocation (a revoked one is refused at the agent endpoint).
constexpr const char* k_schema_v10 = R"sql(
CREATE TABLE enrolment_tokens (
  id TEXT PRIMARY KEY NOT NULL,
  secret_sha256 TEXT NOT NULL UNIQUE,
  created_unix_ms INTEGER NOT NULL,
  record BLOB NOT NULL
);
CREATE TABLE agent_certificates (
  sha256 TEXT PRIMARY KEY NOT NULL,
  agent_id TEXT NOT NULL,
  revoked_unix_ms INTEGER NOT NULL,
  record BLOB NOT NULL
);
CREATE INDEX agent_certificates_by_agent ON agent_certificates (agent_id);
CREATE INDEX agent_certificates_revoked ON agent_certificates (revoked_unix_ms);
)sql";

// Version 11: retention (issue 17). Daily roll-ups of the executions purged (a v1::DailyStats
// per UTC date, task and agent, kept 400 days), and logs by age for `retention.logs_days`.
constexpr const char* k_schema_v11 = R"sql(
CREATE TABLE execution_daily_rollups (
  date TEXT NOT NULL,
  task_id TEXT NOT NULL,
  agent_id TEXT NOT NULL,
  record BLOB NOT NULL,
  PRIMARY KEY (date, task_id, agent_id)
);
CREATE INDEX logs_by_updated ON logs (updated_unix_ms);
)sql";

}  // namespace

int coordinator_store_schema_version() noexcept { return 11; }

bool migrate_coordinator_store(SqliteDatabase& db, error_code& ec, std::string* detail) {
  static const std::vector<SchemaStep> steps{{1, k_schema_v1}, {2, k_schema_v2},   {3, k_schema_v3},  {4, k_schema_v4},
                                             {5, k_schema_v5}, {6, k_schema_v6},   {7, k_schema_v7},  {8, k_schema_v8},
                                             {9, k_schema_v9}, {10, k_schema_v10}, {11, k_schema_v11}};
  return migrate_schema(db, steps, ec, detail);
}

}  // namespace quartzflow::detail
