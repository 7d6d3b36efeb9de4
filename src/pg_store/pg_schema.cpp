// SPDX-License-Identifier: Apache-2.0
// Coordinator store migrations on PostgreSQL: each step runs once, in order, inside one
// transaction with the schema_version update.
#include "pg_schema.hpp"

#include <libpq-fe.h>

#include <charconv>
#include <vector>

#include <fmt/format.h>

namespace quartzflow::detail {
namespace {

// Version 1: the tables of SQLite's version 4, in PostgreSQL's types: BIGINT for unix ms and
// counters, BYTEA for protobuf records and logs, TEXT in the "C" collation so that names sort
// and compare by bytes as on SQLite, and an identity column `rowid` for the insertion order
// that breaks ties in the execution lists (SQLite's implicit rowid).
constexpr const char* k_schema_v1 = R"sql(
CREATE TABLE config_versions (
  version BIGINT PRIMARY KEY,
  at_unix_ms BIGINT NOT NULL,
  summary TEXT COLLATE "C" NOT NULL
);

CREATE TABLE tasks (
  id TEXT COLLATE "C" PRIMARY KEY,
  name TEXT COLLATE "C" NOT NULL UNIQUE,
  description TEXT COLLATE "C" NOT NULL,
  enabled INTEGER NOT NULL,
  all_agents INTEGER NOT NULL,
  created_at_unix_ms BIGINT NOT NULL,
  updated_at_unix_ms BIGINT NOT NULL,
  record BYTEA NOT NULL
);
CREATE INDEX tasks_by_created ON tasks (created_at_unix_ms);
CREATE INDEX tasks_by_updated ON tasks (updated_at_unix_ms);
CREATE INDEX tasks_global ON tasks (id) WHERE all_agents = 1;

CREATE TABLE task_groups (
  task_id TEXT COLLATE "C" NOT NULL,
  group_id TEXT COLLATE "C" NOT NULL,
  PRIMARY KEY (task_id, group_id)
);
CREATE INDEX task_groups_by_group ON task_groups (group_id, task_id);

CREATE TABLE task_labels (
  task_id TEXT COLLATE "C" NOT NULL,
  key TEXT COLLATE "C" NOT NULL,
  value TEXT COLLATE "C" NOT NULL,
  PRIMARY KEY (task_id, key)
);
CREATE INDEX task_labels_by_label ON task_labels (key, value);

CREATE TABLE groups (
  id TEXT COLLATE "C" PRIMARY KEY,
  name TEXT COLLATE "C" NOT NULL UNIQUE,
  description TEXT COLLATE "C" NOT NULL,
  created_at_unix_ms BIGINT NOT NULL,
  record BYTEA NOT NULL
);

CREATE TABLE group_tags (
  group_id TEXT COLLATE "C" NOT NULL,
  tag TEXT COLLATE "C" NOT NULL,
  PRIMARY KEY (group_id, tag)
);
CREATE INDEX group_tags_by_tag ON group_tags (tag, group_id);

CREATE TABLE agents (
  id TEXT COLLATE "C" PRIMARY KEY,
  hostname TEXT COLLATE "C" NOT NULL,
  group_id TEXT COLLATE "C" NOT NULL,
  state INTEGER NOT NULL,
  push_state INTEGER NOT NULL,
  last_heartbeat_unix_ms BIGINT NOT NULL,
  running_executions BIGINT NOT NULL,
  record BYTEA NOT NULL
);
CREATE INDEX agents_by_group ON agents (group_id, state);
CREATE INDEX agents_by_hostname ON agents (hostname);

CREATE TABLE agent_labels (
  agent_id TEXT COLLATE "C" NOT NULL,
  key TEXT COLLATE "C" NOT NULL,
  value TEXT COLLATE "C" NOT NULL,
  PRIMARY KEY (agent_id, key)
);
CREATE INDEX agent_labels_by_label ON agent_labels (key, value);

CREATE TABLE agent_ips (
  agent_id TEXT COLLATE "C" NOT NULL,
  ip TEXT COLLATE "C" NOT NULL,
  PRIMARY KEY (agent_id, ip)
);

CREATE TABLE executions (
  execution_id TEXT COLLATE "C" PRIMARY KEY,
  rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
  task_id TEXT COLLATE "C" NOT NULL,
  agent_id TEXT COLLATE "C" NOT NULL,
  group_id TEXT COLLATE "C" NOT NULL,
  status INTEGER NOT NULL,
  trigger INTEGER NOT NULL,
  scheduled_unix_ms BIGINT NOT NULL,
  started_unix_ms BIGINT NOT NULL,
  ended_unix_ms BIGINT NOT NULL,
  duration_ms BIGINT NOT NULL,
  attempt BIGINT NOT NULL,
  task_name TEXT COLLATE "C" NOT NULL,
  failure_reason TEXT COLLATE "C" NOT NULL,
  error_message TEXT COLLATE "C" NOT NULL,
  record BYTEA NOT NULL
);
CREATE INDEX executions_by_task ON executions (task_id, scheduled_unix_ms, rowid);
CREATE INDEX executions_by_task_status ON executions (task_id, status, scheduled_unix_ms, rowid);
CREATE INDEX executions_by_agent ON executions (agent_id, scheduled_unix_ms, rowid);
CREATE INDEX executions_by_group ON executions (group_id, scheduled_unix_ms, rowid);
CREATE INDEX executions_by_status ON executions (status, scheduled_unix_ms, rowid);
CREATE INDEX executions_by_scheduled ON executions (scheduled_unix_ms, rowid);

CREATE TABLE logs (
  execution_id TEXT COLLATE "C" PRIMARY KEY,
  data BYTEA NOT NULL,
  updated_unix_ms BIGINT NOT NULL
);

CREATE TABLE audit (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at_unix_ms BIGINT NOT NULL,
  actor TEXT COLLATE "C" NOT NULL,
  action TEXT COLLATE "C" NOT NULL,
  target_type TEXT COLLATE "C" NOT NULL,
  target_id TEXT COLLATE "C" NOT NULL,
  target_name TEXT COLLATE "C" NOT NULL,
  detail TEXT COLLATE "C" NOT NULL,
  record BYTEA NOT NULL
);
CREATE INDEX audit_by_at ON audit (at_unix_ms);
CREATE INDEX audit_by_actor ON audit (actor, at_unix_ms);
CREATE INDEX audit_by_target ON audit (target_type, target_id, at_unix_ms);

CREATE TABLE fire_state (
  task_id TEXT COLLATE "C" PRIMARY KEY,
  last_fire_unix_ms BIGINT,
  next_fire_unix_ms BIGINT
);

CREATE TABLE agent_daily_stats (
  agent_id TEXT COLLATE "C" NOT NULL,
  date TEXT COLLATE "C" NOT NULL,
  task_id TEXT COLLATE "C" NOT NULL,
  total BIGINT NOT NULL,
  success BIGINT NOT NULL,
  updated_unix_ms BIGINT NOT NULL,
  record BYTEA NOT NULL,
  PRIMARY KEY (agent_id, date, task_id)
);
CREATE INDEX agent_daily_stats_by_date ON agent_daily_stats (date, task_id);

CREATE TABLE users (
  id TEXT COLLATE "C" PRIMARY KEY,
  username TEXT COLLATE "C" NOT NULL UNIQUE,
  display_name TEXT COLLATE "C" NOT NULL,
  email TEXT COLLATE "C" NOT NULL,
  role INTEGER NOT NULL,
  record BYTEA NOT NULL,
  password_hash TEXT COLLATE "C" NOT NULL,
  totp_secret TEXT COLLATE "C" NOT NULL,
  totp_pending_secret TEXT COLLATE "C" NOT NULL,
  totp_last_step BIGINT NOT NULL,
  failed_logins BIGINT NOT NULL,
  locked_until_unix_ms BIGINT NOT NULL,
  password_change_required INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE api_tokens (
  id TEXT COLLATE "C" PRIMARY KEY,
  user_id TEXT COLLATE "C" NOT NULL,
  name TEXT COLLATE "C" NOT NULL,
  secret_sha256 TEXT COLLATE "C" NOT NULL UNIQUE,
  record BYTEA NOT NULL,
  UNIQUE (user_id, name)
);

CREATE TABLE sessions (
  token_sha256 TEXT COLLATE "C" PRIMARY KEY,
  user_id TEXT COLLATE "C" NOT NULL,
  expires_at_unix_ms BIGINT NOT NULL,
  created_unix_ms BIGINT NOT NULL,
  source_ip TEXT COLLATE "C" NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_id);
CREATE INDEX sessions_by_expiry ON sessions (expires_at_unix_ms);
)sql";

// Version 2: what each config version changed (SQLite's version 5).
constexpr const char* k_schema_v2 = R"sql(
CREATE TABLE config_changes (
  version BIGINT NOT NULL,
  target INTEGER NOT NULL,
  id TEXT COLLATE "C" NOT NULL,
  PRIMARY KEY (version, target, id)
);
)sql";

// Version 3: several coordinators (SQLite's version 6): the leader lease row (epoch + 1 on
// every takeover, expiry in the server's clock) and the coordinators registry.
constexpr const char* k_schema_v3 = R"sql(
CREATE TABLE leader_lease (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  holder_id TEXT COLLATE "C" NOT NULL,
  agent_address TEXT COLLATE "C" NOT NULL,
  admin_address TEXT COLLATE "C" NOT NULL,
  epoch BIGINT NOT NULL,
  expires_at_unix_ms BIGINT NOT NULL
);
INSERT INTO leader_lease (id, holder_id, agent_address, admin_address, epoch, expires_at_unix_ms)
  VALUES (1, '', '', '', 0, 0);

CREATE TABLE coordinators (
  id TEXT COLLATE "C" PRIMARY KEY,
  last_seen_unix_ms BIGINT NOT NULL,
  record BYTEA NOT NULL
);
)sql";

// Version 4: alerts (issue 16; SQLite's version 7). Rules, channels, silences and heartbeat monitors as their
// records (a channel's inline secrets sealed by the coordinator's key; a monitor's ping token
// only as its SHA-256); the alerts the engine raises; the outbox of deliveries
// (notifications and result callbacks), one row per message and receiver, its attempts in
// the record.
constexpr const char* k_schema_v4 = R"sql(
CREATE TABLE alert_rules (
  id TEXT COLLATE "C" PRIMARY KEY,
  record BYTEA NOT NULL
);

CREATE TABLE alert_channels (
  id TEXT COLLATE "C" PRIMARY KEY,
  record BYTEA NOT NULL
);

CREATE TABLE alert_silences (
  id TEXT COLLATE "C" PRIMARY KEY,
  ends_unix_ms BIGINT NOT NULL,
  record BYTEA NOT NULL
);

CREATE TABLE alert_monitors (
  id TEXT COLLATE "C" PRIMARY KEY,
  token_sha256 TEXT COLLATE "C" NOT NULL UNIQUE,
  record BYTEA NOT NULL
);

CREATE TABLE alerts (
  id TEXT COLLATE "C" PRIMARY KEY,
  rule_id TEXT COLLATE "C" NOT NULL,
  state BIGINT NOT NULL,
  task_id TEXT COLLATE "C" NOT NULL,
  started_unix_ms BIGINT NOT NULL,
  record BYTEA NOT NULL
);
CREATE INDEX alerts_by_state ON alerts (state, started_unix_ms);
CREATE INDEX alerts_by_rule ON alerts (rule_id, started_unix_ms);
CREATE INDEX alerts_by_task ON alerts (task_id, started_unix_ms);

CREATE TABLE deliveries (
  id TEXT COLLATE "C" PRIMARY KEY,
  rowid BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
  kind BIGINT NOT NULL,
  state BIGINT NOT NULL,
  channel_id TEXT COLLATE "C" NOT NULL,
  execution_id TEXT COLLATE "C" NOT NULL,
  created_unix_ms BIGINT NOT NULL,
  next_attempt_unix_ms BIGINT NOT NULL,
  updated_unix_ms BIGINT NOT NULL,
  record BYTEA NOT NULL
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_unix_ms);
CREATE INDEX deliveries_by_created ON deliveries (created_unix_ms);
CREATE INDEX deliveries_by_channel ON deliveries (channel_id, created_unix_ms);
CREATE INDEX deliveries_by_execution ON deliveries (execution_id, created_unix_ms);
CREATE INDEX deliveries_by_updated ON deliveries (state, updated_unix_ms);
)sql";

// Version 5: commands through any coordinator and the execution change feed (SQLite's
// version 8). Every insert or update of an execution appends to `execution_changes` through a
// trigger, so the feed costs the writer no round trip.
constexpr const char* k_schema_v5 = R"sql(
CREATE TABLE commands (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  state INTEGER NOT NULL,
  deadline_unix_ms BIGINT NOT NULL,
  claimed_epoch BIGINT NOT NULL,
  updated_unix_ms BIGINT NOT NULL,
  record BYTEA NOT NULL
);
CREATE INDEX commands_by_state ON commands (state, id);

CREATE TABLE execution_changes (
  seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  execution_id TEXT COLLATE "C" NOT NULL,
  status INTEGER NOT NULL,
  at_unix_ms BIGINT NOT NULL
);
CREATE FUNCTION qf_execution_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO execution_changes (execution_id, status, at_unix_ms)
    VALUES (NEW.execution_id, NEW.status, CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT));
  RETURN NULL;
END
$$;
CREATE TRIGGER executions_changed AFTER INSERT OR UPDATE ON executions
  FOR EACH ROW EXECUTE FUNCTION qf_execution_changed();
)sql";

// Version 6: agent enrolment (SQLite's version 10): join tokens by the SHA-256 of their
// secret, the certificates the coordinators issued with their revocation.
constexpr const char* k_schema_v6 = R"sql(
CREATE TABLE enrolment_tokens (
  id TEXT COLLATE "C" PRIMARY KEY,
  secret_sha256 TEXT COLLATE "C" NOT NULL UNIQUE,
  created_unix_ms BIGINT NOT NULL,
  record BYTEA NOT NULL
);
CREATE TABLE agent_certificates (
  sha256 TEXT COLLATE "C" PRIMARY KEY,
  agent_id TEXT COLLATE "C" NOT NULL,
  revoked_unix_ms BIGINT NOT NULL,
  record BYTEA NOT NULL
);
CREATE INDEX agent_certificates_by_agent ON agent_certificates (agent_id);
CREATE INDEX agent_certificates_revoked ON agent_certificates (revoked_unix_ms);
)sql";

// Version 7: retention (SQLite's version 11): daily roll-ups of the executions purged, and
// logs by age.
constexpr const char* k_schema_v7 = R"sql(
CREATE TABLE execution_daily_rollups (
  date TEXT COLLATE "C" NOT NULL,
  task_id TEXT COLLATE "C" NOT NULL,
  agent_id TEXT COLLATE "C" NOT NULL,
  record BYTEA NOT NULL,
  PRIMARY KEY (date, task_id, agent_id)
);
CREATE INDEX logs_by_updated ON logs (updated_unix_ms);
)sql";

struct Step {
  int version;
  const char* sql;
};

// Any constant: the key of the advisory lock that serialises migrations.
constexpr std::int64_t k_migration_lock = 0x71660001;

}  // namespace

int postgres_store_schema_version() noexcept { return 7; }

bool migrate_postgres_store(PgConnection& connection, const std::string& schema, error_code& ec, std::string* detail) {
  static const std::vector<Step> steps{{1, k_schema_v1}, {2, k_schema_v2}, {3, k_schema_v3}, {4, k_schema_v4},
                                       {5, k_schema_v5}, {6, k_schema_v6}, {7, k_schema_v7}};
  const auto fail = [&](error_code code, std::string why) {
    ec = code;
    if (detail) *detail = std::move(why);
    error_code ignored;
    if (connection.in_transaction()) connection.exec("ROLLBACK", ignored);
    return false;
  };
  std::string why;
  std::string begin = fmt::format("BEGIN; SELECT pg_advisory_xact_lock({})", k_migration_lock);
  if (!schema.empty()) {
    char* quoted = PQescapeIdentifier(connection.get(), schema.c_str(), schema.size());
    if (!quoted) return fail(errc::invalid_argument, "schema: cannot be quoted");
    begin += fmt::format("; CREATE SCHEMA IF NOT EXISTS {}", quoted);
    PQfreemem(quoted);
  }
  begin += "; CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)";
  if (!connection.exec(begin, ec, &why)) return fail(ec, "migration: " + why);
  int version = 0;
  try {
    auto current = connection.exec("SELECT version FROM schema_version");
    if (current.rows() == 0) {
      connection.exec("INSERT INTO schema_version (version) VALUES (0)");
    } else {
      const auto text = current.text(0, 0);
      std::from_chars(text.data(), text.data() + text.size(), version);
    }
  } catch (const error& e) {
    return fail(e.code(), std::string("migration: ") + e.what());
  }
  if (version > postgres_store_schema_version())
    return fail(errc::store_version, fmt::format("schema version {} is newer than this build's {}", version,
                                                 postgres_store_schema_version()));
  for (const auto& step : steps) {
    if (step.version <= version) continue;
    if (!connection.exec(step.sql, ec, &why) ||
        !connection.exec(fmt::format("UPDATE schema_version SET version = {}", step.version), ec, &why))
      return fail(ec, fmt::format("migration to version {}: {}", step.version, why));
  }
  if (!connection.exec("COMMIT", ec, &why)) return fail(ec, "migration: " + why);
  ec = {};
  return true;
}

}  // namespace quartzflow::detail
