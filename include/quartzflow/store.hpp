// SPDX-License-Identifier: Apache-2.0
// Store: the coordinator's durable catalog and history (tasks, groups, agents, executions,
// logs, audit, config versions, scheduler fire state). SQLite now, PostgreSQL later: the
// interface speaks protobuf types and never SQLite's.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/system_executor.hpp>

#include <quartzflow/async.hpp>
#include <quartzflow/error.hpp>
#include <quartzflow/time.hpp>
#include <quartzflow/v1/admin.pb.h>
#include <quartzflow/v1/agent.pb.h>
#include <quartzflow/v1/alerts.pb.h>
#include <quartzflow/v1/execution.pb.h>
#include <quartzflow/v1/enrolment.pb.h>
#include <quartzflow/v1/group.pb.h>
#include <quartzflow/v1/task.pb.h>
#include <quartzflow/v1/command.pb.h>

namespace quartzflow {

/// A page of results and the total that matched (ignoring paging).
template <typename T>
struct Listing {
  std::vector<T> items;
  std::uint64_t total = 0;
};

/**
 * What an execution upsert did. Final states: SUCCESS, FAILURE, TIMEOUT, CANCELLED,
 * SKIPPED, MISSED. A known id whose stored record is not final, or is final with the same
 * status as the new one, is merged: fields the new record sets replace the stored ones,
 * fields it leaves empty keep theirs (a re-sent result without output keeps the output).
 */
enum class UpsertResult {
  inserted,  ///< a new execution id
  merged,    ///< an update of a known id that was not final yet (a state change)
  repeated,  ///< a final record already stored with this status (a re-sent result): merged,
             ///< counted once, not a new state
  ignored,   ///< refused by the rules: a final state never changes (the first final wins)
};

/// Counters of a store since it was opened.
struct StoreMetrics {
  std::uint64_t transactions_committed = 0;  ///< transact() calls whose work committed
  std::uint64_t transactions_failed = 0;     ///< rolled back: by their own error or their batch's
  std::uint64_t commits = 0;                 ///< SQL transactions committed (one per group commit)
  std::uint64_t reads = 0;                   ///< read() calls run
};

/// Where the scheduler stands for one coordinator-fired task (survives restarts).
struct FireState {
  std::optional<Instant> last_fire;  ///< the last nominal fire handled
  std::optional<Instant> next_fire;  ///< the next nominal fire planned
};

/// Where a coordinator is reached: agents connect to `agent`, people and qfctl to `admin`.
struct CoordinatorAddresses {
  std::string agent;  ///< `host:port` of its agent listener (QUIC)
  std::string admin;  ///< `host:port` (or URL) of its admin API
};

/**
 * The leader lease of a cluster of coordinators sharing one database (one row). The holder
 * fires runs; `epoch` increases on every takeover, and fire transactions and run requests
 * carry it (fencing). Times are the database's clock.
 */
struct LeaderLease {
  std::string holder_id;  ///< empty: nobody holds it (never taken, or released)
  CoordinatorAddresses holder_addresses;
  std::uint64_t epoch = 0;              ///< 0: never taken
  std::int64_t expires_at_unix_ms = 0;  ///< the holder leads until then unless it renews
  std::int64_t now_unix_ms = 0;         ///< the database's clock when this was read

  /// Held by someone, not expired when read.
  bool held() const noexcept { return !holder_id.empty() && expires_at_unix_ms > now_unix_ms; }
};

/**
 * One entry of the store's execution change feed: every insert or update of an execution
 * record appends one (a database trigger, whoever writes), numbered by an increasing `seq`.
 * Standby coordinators read it to publish the leader's runs to their WebSocket clients.
 */
struct ExecutionChange {
  std::int64_t seq = 0;
  v1::ExecutionStatus status = v1::EXECUTION_STATUS_UNSPECIFIED;  ///< the status this change wrote
  std::int64_t at_unix_ms = 0;                                    ///< the database's clock
  v1::Execution record;  ///< the execution as stored now (without `output`); it may have moved on
};

/// A log the retention purge removed, for its archive.
struct ArchivedLog {
  std::string execution_id;
  std::string text;
  std::int64_t at_unix_ms = 0;  ///< its execution's scheduled time, else when it was last written
};

/// What kind of catalog object a config version changed.
enum class ConfigTarget : std::uint8_t { task = 1, group = 2, agent = 3 };

/// One object a config version changed (StoreTransaction::record_config_change).
struct ConfigChangeRef {
  ConfigTarget target = ConfigTarget::task;
  std::string id;
  friend bool operator==(const ConfigChangeRef&, const ConfigChangeRef&) = default;
};

/**
 * A user with its login credentials, as the store keeps it. The admin API only ever shows
 * `user`; the rest never leaves the coordinator.
 */
struct StoredUser {
  v1::User user;
  std::string password_hash;              ///< `pbkdf2-sha256$<iterations>$<salt>$<hash>` (auth.hpp)
  std::string totp_secret;                ///< active TOTP secret, base32; empty = TOTP off
  std::string totp_pending_secret;        ///< enrolled, not confirmed yet, base32; empty = none
  std::int64_t totp_last_step = 0;        ///< the last 30 s step a code was accepted for (no replay)
  std::uint32_t failed_logins = 0;        ///< consecutive failed logins
  std::int64_t locked_until_unix_ms = 0;  ///< login refused until then; 0 = not locked
};

/// An API token with the SHA-256 (hex) of its secret; the secret itself is never stored.
struct StoredApiToken {
  v1::ApiToken token;
  std::string secret_sha256;
};

/// A join token with the SHA-256 (hex) of its secret; the secret itself is never stored.
struct StoredEnrolmentToken {
  v1::EnrolmentToken token;
  std::string secret_sha256;
};

/// A console session, keyed by the SHA-256 (hex) of its token; the token is never stored.
struct StoredSession {
  std::string token_sha256;
  std::string user_id;
  std::int64_t created_unix_ms = 0;
  std::int64_t expires_at_unix_ms = 0;
  std::string source_ip;
};

/// A heartbeat monitor with the SHA-256 (hex) of its ping token; the token itself is never
/// stored (`monitor.token` keeps only its hint).
struct StoredMonitor {
  v1::Monitor monitor;
  std::string token_sha256;
};

/// Which alerts StoreTransaction::list_alerts returns: every set filter must match.
struct AlertFilter {
  v1::AlertState state = v1::ALERT_STATE_UNSPECIFIED;  ///< UNSPECIFIED: any
  std::string rule_id;
  std::string task_id;
  std::uint32_t page = 0;       ///< 1-based; 0 = 1
  std::uint32_t page_size = 0;  ///< 0 = 20, at most 500
};

/// Which deliveries StoreTransaction::list_deliveries returns: every set filter must match.
struct DeliveryFilter {
  v1::DeliveryState state = v1::DELIVERY_STATE_UNSPECIFIED;  ///< UNSPECIFIED: any
  v1::DeliveryKind kind = v1::DELIVERY_KIND_UNSPECIFIED;     ///< UNSPECIFIED: any
  std::string channel_id;
  std::string execution_id;
  std::uint32_t page = 0;       ///< 1-based; 0 = 1
  std::uint32_t page_size = 0;  ///< 0 = 20, at most 500
};

/**
 * One transaction. Only valid inside the function given to `Store::transact` or
 * `Store::read`, on the store's thread. Storage failures throw `quartzflow::error` (the
 * transaction then rolls back); "not found" is an empty optional or false, never a throw.
 * In a read transaction every write throws errc::store_read_only.
 *
 * Lists take the admin API's requests: `page` 1-based (0 = 1), `page_size` 0 = 20 and at
 * most 500, `sort` one of the keys named below (`-` prefix for descending; ties broken by
 * id or insertion order in the same direction, missing values last), keywords
 * case-insensitive substrings (ASCII folding), label selectors `k=v[,k=v...]` that must
 * all match. An unknown sort key or a malformed selector throws errc::invalid_argument
 * naming the field (`sort`, `label_selector`). `total` counts every match, ignoring paging.
 */
class StoreTransaction {
 public:
  virtual ~StoreTransaction() = default;

  // Config versions: monotonic, one per committed catalog change.
  virtual std::uint64_t config_version() = 0;
  /// Increments and returns the config version, recording `summary` with it.
  virtual std::uint64_t bump_config_version(std::string_view summary) = 0;
  /// Records that config `version` (bumped in this transaction) changed `target`, so that
  /// the other coordinators on the database reload only that (CatalogFollower). The catalog
  /// records every object each change touches. Default: nothing recorded.
  virtual void record_config_change(std::uint64_t version, ConfigTarget target, std::string_view id) {
    (void)version, (void)target, (void)id;
  }
  /**
   * What the config versions in (`after`, `upto`] changed, each target once, in no given
   * order; nullopt when the history cannot tell: a version of the range has no change
   * recorded (pruned, or committed before changes were recorded) or the range spans more
   * than 10,000 versions. The caller then reloads the whole catalog. Default: nullopt.
   */
  virtual std::optional<std::vector<ConfigChangeRef>> config_changes_since(std::uint64_t after, std::uint64_t upto) {
    (void)after, (void)upto;
    return std::nullopt;
  }

  // Tasks (bindings to groups are the task's `group_ids`, stored as a relation).
  virtual std::optional<v1::Task> task(std::string_view id) = 0;
  virtual std::optional<v1::Task> task_by_name(std::string_view name) = 0;
  /// Insert or replace by id. Another task with the same name (case-sensitive) throws
  /// errc::conflict naming the field `name`. `group_names` is output only: filled from the
  /// groups' current names on every read.
  virtual void put_task(const v1::Task& task) = 0;
  /// Removes the task, its bindings, labels and fire state; its executions stay.
  virtual bool delete_task(std::string_view id) = 0;
  /// Filters: keyword (id, name, description), enabled, group_id (bound directly),
  /// last_status (of its execution scheduled last), label_selector. Sort: name (default),
  /// created_at_unix_ms (or created), updated_at_unix_ms (or updated), next_fire_unix_ms
  /// (from the fire state), last_scheduled_unix_ms.
  virtual Listing<v1::Task> list_tasks(const v1::ListTasksRequest& request) = 0;
  /**
   * The counts a TaskSummary carries beside its task, for each of `task_ids` in that order
   * (an id given twice gets its counts twice; an unknown id gets zeros); only these fields
   * are set, so a caller merges them into its summary (`MergeFrom`). At most three queries
   * whatever the number of ids (a list page: one call, not one per task):
   * - over every stored execution of the task: `run_count` (SUCCESS, FAILURE, TIMEOUT and
   *   CANCELLED), `success_count`, `failure_count` (FAILURE and TIMEOUT), `running_count`
   *   (RUNNING now);
   * - `target_agent_count`: the agents the task is placed on, those in its groups (every
   *   agent for an `all_agents` task); `online_agent_count`: those of them whose record is
   *   ONLINE (a registered session, as GroupSummary counts them).
   */
  virtual std::vector<v1::TaskSummary> task_counts(std::span<const std::string> task_ids) = 0;
  /// Tasks bound to a group (directly) or global (`all_agents`).
  virtual std::vector<v1::Task> tasks_for_group(std::string_view group_id) = 0;
  virtual std::vector<v1::Task> all_tasks() = 0;

  // Groups.
  virtual std::optional<v1::Group> group(std::string_view id) = 0;
  virtual std::optional<v1::Group> group_by_name(std::string_view name) = 0;
  /// Insert or replace by id; a name another group has throws errc::conflict (`name`).
  virtual void put_group(const v1::Group& group) = 0;
  /// Removes the group and its tags; task bindings and agents' group ids are left to the
  /// caller (the catalog refuses to delete a group that tasks are bound to).
  virtual bool delete_group(std::string_view id) = 0;
  /// Filters: keyword (name, description), tag. Sort: name (default), created_at_unix_ms,
  /// agent_count, online_agent_count (agents ONLINE), task_count (bound directly).
  virtual Listing<v1::GroupSummary> list_groups(const v1::ListGroupsRequest& request) = 0;
  /// Ids of the tasks bound to `group_id`.
  virtual std::vector<std::string> tasks_bound_to(std::string_view group_id) = 0;

  // Agents.
  /// `group_name` is output only: filled from the group's current name on every read.
  virtual std::optional<v1::Agent> agent(std::string_view id) = 0;
  virtual void put_agent(const v1::Agent& agent) = 0;
  /// Removes an agent's record, labels and IPs (its executions and daily stats stay);
  /// false when there was none.
  virtual bool delete_agent(std::string_view id) = 0;
  /// Filters: keyword (id, hostname, any IP), group_id, state, label_selector, push_state.
  /// Sort: hostname (default), last_heartbeat_unix_ms, state, running_executions.
  virtual Listing<v1::Agent> list_agents(const v1::ListAgentsRequest& request) = 0;
  virtual std::vector<v1::Agent> agents_in_group(std::string_view group_id) = 0;

  /// Upsert by id with the merge rules of UpsertResult. An empty execution_id or task_id,
  /// or an UNSPECIFIED status, throws errc::invalid_argument naming the field.
  virtual UpsertResult upsert_execution(const v1::Execution& execution) = 0;
  virtual std::optional<v1::Execution> execution(std::string_view id) = 0;
  /// The execution of a task scheduled last (without `output`), if any.
  virtual std::optional<v1::Execution> latest_execution(std::string_view task_id) = 0;
  /// Filters: task_id, agent_id, group_id (the agent's group when it ran), status (any of
  /// those listed), trigger, scheduled time range [from, to), keyword (task name, execution
  /// id, failure reason, error message). Sort: -scheduled_unix_ms (default),
  /// scheduled_unix_ms, started_unix_ms, duration_ms, status. Items come without `output`.
  virtual Listing<v1::Execution> list_executions(const v1::ListExecutionsRequest& request) = 0;
  /**
   * Statistics of the executions scheduled in [from, to) of a task, agent and/or group:
   * counts by status, success rate, average and nearest-rank p50 / p95 / max duration of
   * the runs that started, failure reasons (non-empty Execution.failure_reason of FAILURE
   * and TIMEOUT runs) and failing tasks ranked, top_n of each (default 10, at most 100).
   * With a granularity, `series` has one bucket per hour / local day / ISO week / month in
   * `time_zone` (the first and last cut to the range; at most 10,000 buckets); the buckets
   * carry no failure reasons. With a group_by, `groups` has the same figures (no failure
   * reasons) per agent or task with executions in the range, most executions first, at
   * most 1,000 (`group_count` says how many there were). A bad range, zone, granularity or
   * group_by throws naming the field.
   */
  virtual v1::StatsResponse stats(const v1::StatsQuery& query) = 0;
  /// Daily stats an agent reported (DailyStatsReport): each (agent, date, task) entry is the
  /// agent's full count for that day and replaces the previous one.
  virtual void put_agent_daily_stats(const v1::DailyStats& stats) = 0;
  /// Reported daily stats for local dates in [from_date, to_date] (YYYY-MM-DD), of one agent
  /// (or every agent when empty), by date then agent then task.
  virtual std::vector<v1::DailyStats> agent_daily_stats(std::string_view agent_id, std::string_view from_date,
                                                        std::string_view to_date) = 0;
  virtual void put_log(std::string_view execution_id, std::string_view text) = 0;
  virtual std::optional<std::string> log(std::string_view execution_id) = 0;

  // Scheduler state of coordinator-fired tasks.
  virtual FireState fire_state(std::string_view task_id) = 0;
  virtual void put_fire_state(std::string_view task_id, const FireState& state) = 0;

  // Users, API tokens and sessions (the Authenticator's; secrets only as SHA-256 hashes).
  virtual std::optional<StoredUser> user(std::string_view id) = 0;
  virtual std::optional<StoredUser> user_by_username(std::string_view username) = 0;
  /// Insert or replace by `user.id`. An empty id or username throws errc::invalid_argument;
  /// a username another user has (case-sensitive) throws errc::conflict naming `username`.
  virtual void put_user(const StoredUser& user) = 0;
  /// Removes the user and its sessions; its API tokens are left to the caller (revoked
  /// tokens stay for the audit trail).
  virtual bool delete_user(std::string_view id) = 0;
  /// Filters: keyword (username, display name, e-mail), role. Sorted by username.
  virtual Listing<v1::User> list_users(const v1::ListUsersRequest& request) = 0;

  virtual std::optional<StoredApiToken> api_token(std::string_view id) = 0;
  virtual std::optional<StoredApiToken> api_token_by_hash(std::string_view secret_sha256) = 0;
  /// Insert or replace by `token.id`. Empty id, user id, name or hash throw
  /// errc::invalid_argument; a name the same user already gave another token throws
  /// errc::conflict naming `name`; a hash another token has throws errc::conflict.
  virtual void put_api_token(const StoredApiToken& token) = 0;
  virtual bool delete_api_token(std::string_view id) = 0;
  /// The tokens of one user (every user's when empty), by user id then name.
  virtual std::vector<v1::ApiToken> api_tokens(std::string_view user_id) = 0;

  // Agent enrolment (store_enrolment.cpp): join tokens by id with the SHA-256 (hex) of their
  // secret, and the certificates the coordinator issued, by the SHA-256 of their DER.
  virtual std::optional<StoredEnrolmentToken> enrolment_token(std::string_view id) = 0;
  /// Insert or replace by `token.id`; an empty id or hash throws errc::invalid_argument.
  virtual void put_enrolment_token(const StoredEnrolmentToken& token) = 0;
  /// Every join token, newest first.
  virtual std::vector<v1::EnrolmentToken> enrolment_tokens() = 0;
  /// Insert or replace by `sha256`; an empty hash or agent id throws errc::invalid_argument.
  virtual void put_agent_certificate(const v1::AgentCertificate& certificate) = 0;
  virtual std::optional<v1::AgentCertificate> agent_certificate(std::string_view sha256) = 0;
  /// The certificates issued to one agent, oldest first.
  virtual std::vector<v1::AgentCertificate> agent_certificates(std::string_view agent_id) = 0;
  /// The SHA-256 of every revoked certificate.
  virtual std::vector<std::string> revoked_certificate_hashes() = 0;

  virtual std::optional<StoredSession> session(std::string_view token_sha256) = 0;
  /// Insert or replace by `token_sha256`; an empty hash or user id throws invalid_argument.
  virtual void put_session(const StoredSession& session) = 0;
  virtual bool delete_session(std::string_view token_sha256) = 0;
  /// Removes the sessions of a user but `except_sha256` (when not empty); returns how many.
  virtual std::size_t delete_sessions_of(std::string_view user_id, std::string_view except_sha256) = 0;
  /// Removes the sessions that expired at or before `now_unix_ms`; returns how many.
  virtual std::size_t delete_expired_sessions(std::int64_t now_unix_ms) = 0;

  // Commands through any coordinator (store_commands.cpp): a standby queues a trigger, retry
  // or cancel; the leader claims it (after its fencing check, in the same transaction), runs
  // it and records the answer; the standby reads the answer. Times are the database's clock.
  /**
   * Queues `command` (kind, target, arguments, actor, origin) as QUEUED, with `queued_unix_ms`
   * now and `deadline_unix_ms` now + `wait`; returns it with its id assigned. An UNSPECIFIED
   * kind or an empty target throws invalid_argument naming the field.
   */
  virtual v1::Command queue_command(const v1::Command& command, std::chrono::milliseconds wait) = 0;
  /// Whether a command is QUEUED, or CLAIMED under an older epoch than `epoch` and not
  /// answered (the leader's poll: one index probe).
  virtual bool commands_waiting(std::uint64_t epoch) = 0;
  /**
   * For the leader of `epoch` (`holder_id`), which called check_fence(epoch) first in this
   * transaction: answers the commands a leader of an older epoch claimed more than
   * `abandon_after` ago and never answered (errc::fenced: they may have run once, they are
   * never run again; until then that leader may still answer or requeue them), withdraws the
   * QUEUED ones past their deadline, then claims at most `limit` QUEUED ones (oldest first)
   * and returns them CLAIMED.
   */
  virtual std::vector<v1::Command> claim_commands(std::uint64_t epoch, std::string_view holder_id, std::size_t limit,
                                                  std::chrono::milliseconds abandon_after) = 0;
  /// Records the answer of a command `epoch` claimed: ANSWERED. False (nothing changed) when it
  /// is not CLAIMED by `epoch` any more.
  virtual bool answer_command(std::int64_t id, std::uint64_t epoch, const v1::CommandResult& result) = 0;
  /// Puts a command `epoch` claimed back to QUEUED (its run was fenced: nothing was recorded);
  /// false when it is not CLAIMED by `epoch` any more.
  virtual bool requeue_command(std::int64_t id, std::uint64_t epoch) = 0;
  /// The stored commands among `ids` (unknown ids are left out), by id.
  virtual std::vector<v1::Command> commands(std::span<const std::int64_t> ids) = 0;
  /// Withdraws a QUEUED command (its waiter gives up; no leader may take it after this) and
  /// returns it as stored after the call: WITHDRAWN, or CLAIMED / ANSWERED when a leader took
  /// it first; nullopt for an unknown id.
  virtual std::optional<v1::Command> withdraw_command(std::int64_t id) = 0;
  /// Removes ANSWERED and WITHDRAWN commands last changed, and QUEUED ones whose deadline
  /// passed, before `older_than_unix_ms`; returns how many.
  virtual std::size_t purge_commands(std::int64_t older_than_unix_ms) = 0;

  // The execution change feed (store_change_feed.cpp; see ExecutionChange).
  /// The newest change's seq; 0 when there is none.
  virtual std::int64_t latest_execution_change() = 0;
  /**
   * The changes with `seq` > `after` and those of `also` (seqs skipped earlier that may have
   * committed since), by seq, at most `limit`; a change whose execution is gone is left out.
   */
  virtual std::vector<ExecutionChange> execution_changes(std::int64_t after, std::span<const std::int64_t> also,
                                                         std::size_t limit) = 0;
  /// Removes the changes made before `older_than_unix_ms`, at most `max_rows` of them (the
  /// oldest; a purge is one short transaction whatever the backlog); returns how many.
  virtual std::size_t purge_execution_changes(std::int64_t older_than_unix_ms, std::size_t max_rows) = 0;

  // Retention (the coordinator's RetentionService; ARCHITECTURE.md, "Retention").
  /**
   * Deletes at most `max_rows` final executions (never PENDING or RUNNING) scheduled before
   * `before_unix_ms`, oldest first, with their logs, after adding them to the daily roll-ups
   * (UTC days, per task and agent). When `archived` is given, the deleted records are
   * appended to it (with output), and their logs to `archived_logs`.
   * Returns how many executions were deleted.
   */
  virtual std::size_t purge_executions(std::int64_t before_unix_ms, std::size_t max_rows,
                                       std::vector<v1::Execution>* archived, std::vector<ArchivedLog>* archived_logs) {
    (void)before_unix_ms, (void)max_rows, (void)archived, (void)archived_logs;
    return 0;
  }
  /// Deletes at most `max_rows` logs last written before `before_unix_ms` whose execution is
  /// final (or gone), oldest first; appends them to `archived` when given. Returns how many.
  virtual std::size_t purge_logs(std::int64_t before_unix_ms, std::size_t max_rows,
                                 std::vector<ArchivedLog>* archived) {
    (void)before_unix_ms, (void)max_rows, (void)archived;
    return 0;
  }
  /// Deletes at most `max_rows` audit entries made before `before_unix_ms`, oldest first;
  /// appends them to `archived` when given. Returns how many.
  virtual std::size_t purge_audit(std::int64_t before_unix_ms, std::size_t max_rows,
                                  std::vector<v1::AuditEntry>* archived) {
    (void)before_unix_ms, (void)max_rows, (void)archived;
    return 0;
  }
  /// The daily roll-ups of purged executions for UTC dates in [from_date, to_date]
  /// (`YYYY-MM-DD`), by date, task and agent.
  virtual std::vector<v1::DailyStats> execution_rollups(std::string_view from_date, std::string_view to_date) {
    (void)from_date, (void)to_date;
    return {};
  }
  /// Deletes the roll-ups of dates before `before_date` (`YYYY-MM-DD`); returns how many.
  virtual std::size_t purge_execution_rollups(std::string_view before_date) {
    (void)before_date;
    return 0;
  }

  // Cluster: the leader lease and the coordinators registry (several coordinators on one
  // database; a single one takes the lease at start). The clock is the database's (SQLite:
  // the store's wall clock; PostgreSQL: clock_timestamp()), never the callers'.
  /**
   * Takes or renews the leader lease for `holder_id`: its own unexpired lease is renewed
   * (same epoch, expiry now + `ttl`, addresses updated); a free or expired lease (its own
   * expired one too) is taken with epoch + 1; a lease another holder has and has not let
   * expire is left alone. Returns the lease after the call: held by `holder_id` or not.
   */
  virtual LeaderLease acquire_or_renew_leader(std::string_view holder_id, const CoordinatorAddresses& addresses,
                                              std::chrono::milliseconds ttl) = 0;
  /// Gives the lease up at once when `holder_id` holds it (clean stop: a standby takes it
  /// at its next attempt, epoch + 1); false when it did not hold it.
  virtual bool release_leader(std::string_view holder_id) = 0;
  /// The lease as stored (an empty holder when never taken).
  virtual LeaderLease leader_lease() = 0;
  /**
   * Throws errc::fenced ("lease lost: epoch N is not the current one", or "... expired")
   * unless `epoch` is the lease's current epoch and the lease has not expired. Every
   * transaction that records a fire calls it first; PostgreSQL locks the lease row
   * (`FOR SHARE`) until the transaction ends, so a takeover cannot commit in between.
   */
  virtual void check_fence(std::uint64_t epoch) = 0;
  /// Inserts or replaces the coordinator's record by id; `last_seen_unix_ms` is set to the
  /// database's clock (the given one is ignored). An empty id throws invalid_argument.
  virtual void put_coordinator_heartbeat(const v1::CoordinatorInfo& coordinator) = 0;
  /// Every coordinator record, by id (`alive` left false: the caller decides it).
  virtual std::vector<v1::CoordinatorInfo> list_coordinators() = 0;

  // Alerts (store_alerts.cpp): rules, channels, silences and monitors are stored as given
  // (validation is the admin API's); puts insert or replace by id and throw
  // errc::invalid_argument for an empty id. Lists are by id, paged as above; `all_*` return
  // every one (the alert engine's view).
  virtual std::optional<v1::AlertRule> alert_rule(std::string_view id) = 0;
  virtual void put_alert_rule(const v1::AlertRule& rule) = 0;
  virtual bool delete_alert_rule(std::string_view id) = 0;
  virtual Listing<v1::AlertRule> list_alert_rules(std::uint32_t page, std::uint32_t page_size) = 0;
  virtual std::vector<v1::AlertRule> all_alert_rules() = 0;
  /// Channels as stored: inline secrets only in their sealed form (Secret.sealed).
  virtual std::optional<v1::Channel> channel(std::string_view id) = 0;
  virtual void put_channel(const v1::Channel& channel) = 0;
  virtual bool delete_channel(std::string_view id) = 0;
  virtual Listing<v1::Channel> list_channels(std::uint32_t page, std::uint32_t page_size) = 0;
  virtual std::vector<v1::Channel> all_channels() = 0;
  virtual std::optional<v1::Silence> silence(std::string_view id) = 0;
  virtual void put_silence(const v1::Silence& silence) = 0;
  virtual bool delete_silence(std::string_view id) = 0;
  /// Silences by end, latest first; `active_at_unix_ms` > 0: only those not ended then.
  virtual Listing<v1::Silence> list_silences(std::int64_t active_at_unix_ms, std::uint32_t page,
                                             std::uint32_t page_size) = 0;
  virtual std::optional<StoredMonitor> monitor(std::string_view id) = 0;
  /// By the SHA-256 (hex) of its ping token (POST /api/v1/ping/{token}).
  virtual std::optional<StoredMonitor> monitor_by_token_sha256(std::string_view token_sha256) = 0;
  /// Insert or replace by id; an empty token hash throws invalid_argument, a hash another
  /// monitor has throws errc::conflict.
  virtual void put_monitor(const StoredMonitor& monitor) = 0;
  virtual bool delete_monitor(std::string_view id) = 0;
  virtual Listing<v1::Monitor> list_monitors(std::uint32_t page, std::uint32_t page_size) = 0;
  virtual std::vector<v1::Monitor> all_monitors() = 0;

  /// Insert or replace an alert by id (empty id or rule id: invalid_argument).
  virtual void upsert_alert(const v1::Alert& alert) = 0;
  virtual std::optional<v1::Alert> alert(std::string_view id) = 0;
  /// Newest first (started_unix_ms descending, then id).
  virtual Listing<v1::Alert> list_alerts(const AlertFilter& filter) = 0;
  /// Every FIRING alert, oldest first.
  virtual std::vector<v1::Alert> firing_alerts() = 0;

  // The delivery outbox (notifications and result callbacks).
  /**
   * Adds `delivery` (id assigned by the caller; empty id or UNSPECIFIED state throws
   * invalid_argument). An id already stored is left as it is: an enqueue retried after a
   * crash does not duplicate, nor reset its attempts.
   */
  virtual void enqueue_delivery(const v1::Delivery& delivery) = 0;
  virtual std::optional<v1::Delivery> delivery(std::string_view id) = 0;
  /// At most `limit` PENDING deliveries with next_attempt_unix_ms <= `now_unix_ms`, oldest
  /// (created_unix_ms, then insertion order) first.
  virtual std::vector<v1::Delivery> due_deliveries(std::int64_t now_unix_ms, int limit) = 0;
  /// Appends `attempt` (the record keeps the last 100; attempt_count counts them all) and
  /// sets the state and the next attempt's time. An unknown id changes nothing.
  virtual void record_delivery_attempt(const std::string& id, const v1::DeliveryAttempt& attempt,
                                       v1::DeliveryState state, std::int64_t next_attempt_unix_ms) = 0;
  /// Newest first (created_unix_ms descending, then insertion order).
  virtual Listing<v1::Delivery> list_deliveries(const DeliveryFilter& filter) = 0;
  /// Removes DELIVERED and FAILED deliveries last changed before `older_than_unix_ms`
  /// (PENDING ones are never purged); returns how many.
  virtual std::size_t purge_deliveries(std::int64_t older_than_unix_ms) = 0;

  // Audit log (append-only).
  /// Appends `entry`; its `id` is assigned (increasing), `at_unix_ms` 0 = now.
  virtual void append_audit(const v1::AuditEntry& entry) = 0;
  /// Filters: actor, action (exact, or a prefix ending in `.` such as `task.`),
  /// target_type, target_id, time range, keyword (target name, detail). Sort: -at_unix_ms
  /// (default), at_unix_ms.
  virtual Listing<v1::AuditEntry> list_audit(const v1::ListAuditRequest& request) = 0;
};

/**
 * The coordinator's store. Work runs on the store's own thread, never on the io_context:
 * `transact` batches concurrent transactions into one commit (group commit; each keeps its
 * own atomicity through a savepoint) and posts each completion to the executor after the
 * commit. Thread safety: `transact` and `read` may be called from any thread; work items
 * run one at a time, in the order they were queued (reads in their own order).
 *
 * Work reports failure by setting `ec` or by throwing (a `quartzflow::error` gives its
 * code to `done`; anything else gives errc::store_failed): either way only that work item
 * is rolled back. A storage failure of the batch (BEGIN or COMMIT) fails every item of it.
 * While a completion is owed, the store holds outstanding work on the executor.
 *
 * SQLite: one writer thread owns the read-write connection (WAL, synchronous=FULL); reads
 * run on a second thread over a read-only connection, each in its own read transaction
 * (a snapshot; WAL readers never wait for the writer). With ":memory:" both threads share
 * the one connection and take turns. Destruction runs and completes everything queued.
 * Work must not call `flush()` (it would wait for itself).
 */
class Store {
 public:
  /// The body of a transaction. Setting `ec` (e.g. a validation error) rolls it back.
  using Work = std::function<void(StoreTransaction& tx, error_code& ec)>;
  using Done = std::function<void(error_code ec)>;

  virtual ~Store() = default;
  /// Runs `work` in a read-write transaction; `done` gets its error (or a storage error).
  virtual void transact(Work work, Done done) = 0;
  /// Runs `work` in a read-only transaction (writes throw).
  virtual void read(Work work, Done done) = 0;
  /**
   * `transact` for work that must not wait behind the queued transactions: the leader
   * lease's renewal, which a backlog of fire writes would otherwise delay past the lease's
   * TTL. It goes to the head of the queue and commits in a batch of its own, next (it
   * still waits for the batch being committed, which the store's `max_batch_duration`
   * bounds). The default queues it as `transact` does.
   */
  virtual void transact_urgent(Work work, Done done) { transact(std::move(work), std::move(done)); }
  /// Blocks until every queued transaction has committed (for shutdown and tests).
  virtual void flush() = 0;
  /**
   * Asks to be told when another process may have committed a catalog change (a new config
   * version), for stores that hear of it at once (PostgreSQL: LISTEN/NOTIFY). `changed` is
   * called on the store's executor, any number of times (spurious calls allowed), until the
   * store is destroyed; the listener then reads `config_version()` itself, so it must not
   * rely on one call per version. A later call replaces the earlier listener. Default: never
   * called; the CatalogFollower's poll (`catalog_poll_interval`) is the safety net either way.
   */
  virtual void watch_config_version(std::function<void()> changed) { (void)changed; }
  /// Counters since the store was opened; zeros when the implementation keeps none.
  virtual StoreMetrics metrics() const noexcept { return {}; }
  /// The executor completions run on (the one the store was opened with).
  virtual boost::asio::any_io_executor get_executor() const noexcept { return boost::asio::system_executor(); }

  /// `transact` with an Asio completion token (callback, `use_awaitable`, ...).
  template <typename Token>
  auto async_transact(Work work, Token&& token) {
    return detail::async_from_callback<void(error_code)>(
        get_executor(), std::forward<Token>(token),
        [this, work = std::move(work)](auto done) mutable { transact(std::move(work), std::move(done)); });
  }
  /// `read` with an Asio completion token: a read-only transaction, e.g. a query that fills
  /// a variable the caller owns until completion.
  template <typename Token>
  auto async_read(Work work, Token&& token) {
    return detail::async_from_callback<void(error_code)>(
        get_executor(), std::forward<Token>(token),
        [this, work = std::move(work)](auto done) mutable { read(std::move(work), std::move(done)); });
  }
};

struct SqliteStoreOptions {
  std::string path;                                  ///< file, or ":memory:" for tests
  std::chrono::milliseconds max_batch_delay{1};      ///< how long a commit waits for companions
  std::size_t cache_mb = 64;                         ///< page cache per connection; 0 = SQLite's 2 MB
  /// A commit takes no further transactions once its batch has run this long (the rest wait
  /// for the next commit), so that the lease renewal waits for one short batch at most.
  std::chrono::milliseconds max_batch_duration{200};
};

/// Opens (creating and migrating) a SQLite store; nullptr with `ec` and `detail` on failure.
std::unique_ptr<Store> open_sqlite_store(boost::asio::any_io_executor executor, SqliteStoreOptions options,
                                         error_code& ec, std::string* detail = nullptr);
/**
 * Copies the SQLite store `database_file` to `to_file` (replaced; mode 0600) while it is in
 * use: SQLite's backup API in one read transaction, so the copy is one consistent snapshot
 * and the store's writer goes on meanwhile (WAL). Blocks for the copy: call it off the
 * io_context. Returns store_failed with `detail` when it cannot (`to_file` is then removed).
 */
error_code backup_sqlite_store(const std::string& database_file, const std::string& to_file,
                               std::string* detail = nullptr);
/// The same, throwing `quartzflow::error` (with the detail) on failure.
inline std::unique_ptr<Store> open_sqlite_store(boost::asio::any_io_executor executor, SqliteStoreOptions options) {
  return value_or_throw(
      [&](error_code& ec, std::string& detail) { return open_sqlite_store(executor, options, ec, &detail); });
}

}  // namespace quartzflow
