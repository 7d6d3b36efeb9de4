// SPDX-License-Identifier: Apache-2.0
// The coordinator's StoreTransaction, written once over a SqlSession (SQLite or PostgreSQL):
// the catalog (tasks, groups, agents, config versions, fire state, audit) in store_catalog.cpp,
// executions and logs in store_history.cpp, statistics in store_stats.cpp, users/tokens/sessions
// in store_auth.cpp.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <quartzflow/store.hpp>

#include "sql_session.hpp"
#include "store_rules.hpp"

namespace quartzflow::detail {

struct RecordTable;  // store_alerts.cpp

/**
 * The StoreTransaction of one connection, reused for every transaction on it (the session
 * keeps the connection's prepared statements). The store begins and ends the SQL transaction around
 * it; this class only reads and writes inside it. A read-only one throws store_read_only
 * from every write.
 */
class SqlStoreTransaction final : public StoreTransaction {
 public:
  SqlStoreTransaction(SqlSession& db, bool writable) noexcept : db_(db), writable_(writable) {}

  /// Called between transactions: bounds the statement cache (list queries vary by filter).
  void trim_statement_cache();

  std::uint64_t config_version() override;
  std::uint64_t bump_config_version(std::string_view summary) override;
  // store_config_changes.cpp
  void record_config_change(std::uint64_t version, ConfigTarget target, std::string_view id) override;
  std::optional<std::vector<ConfigChangeRef>> config_changes_since(std::uint64_t after, std::uint64_t upto) override;

  std::optional<v1::Task> task(std::string_view id) override;
  std::optional<v1::Task> task_by_name(std::string_view name) override;
  void put_task(const v1::Task& task) override;
  bool delete_task(std::string_view id) override;
  Listing<v1::Task> list_tasks(const v1::ListTasksRequest& request) override;
  std::vector<v1::TaskSummary> task_counts(std::span<const std::string> task_ids) override;
  std::vector<v1::Task> tasks_for_group(std::string_view group_id) override;
  std::vector<v1::Task> all_tasks() override;

  std::optional<v1::Group> group(std::string_view id) override;
  std::optional<v1::Group> group_by_name(std::string_view name) override;
  void put_group(const v1::Group& group) override;
  bool delete_group(std::string_view id) override;
  Listing<v1::GroupSummary> list_groups(const v1::ListGroupsRequest& request) override;
  std::vector<std::string> tasks_bound_to(std::string_view group_id) override;

  std::optional<v1::Agent> agent(std::string_view id) override;
  void put_agent(const v1::Agent& agent) override;
  bool delete_agent(std::string_view id) override;
  Listing<v1::Agent> list_agents(const v1::ListAgentsRequest& request) override;
  std::vector<v1::Agent> agents_in_group(std::string_view group_id) override;

  UpsertResult upsert_execution(const v1::Execution& execution) override;
  std::optional<v1::Execution> execution(std::string_view id) override;
  std::optional<v1::Execution> latest_execution(std::string_view task_id) override;
  Listing<v1::Execution> list_executions(const v1::ListExecutionsRequest& request) override;
  v1::StatsResponse stats(const v1::StatsQuery& query) override;
  void put_agent_daily_stats(const v1::DailyStats& stats) override;
  std::vector<v1::DailyStats> agent_daily_stats(std::string_view agent_id, std::string_view from_date,
                                                std::string_view to_date) override;
  void put_log(std::string_view execution_id, std::string_view text) override;
  std::optional<std::string> log(std::string_view execution_id) override;

  FireState fire_state(std::string_view task_id) override;
  void put_fire_state(std::string_view task_id, const FireState& state) override;

  std::optional<StoredUser> user(std::string_view id) override;
  std::optional<StoredUser> user_by_username(std::string_view username) override;
  void put_user(const StoredUser& user) override;
  bool delete_user(std::string_view id) override;
  Listing<v1::User> list_users(const v1::ListUsersRequest& request) override;
  std::optional<StoredApiToken> api_token(std::string_view id) override;
  std::optional<StoredApiToken> api_token_by_hash(std::string_view secret_sha256) override;
  void put_api_token(const StoredApiToken& token) override;
  bool delete_api_token(std::string_view id) override;
  std::vector<v1::ApiToken> api_tokens(std::string_view user_id) override;
  // store_enrolment.cpp
  std::optional<StoredEnrolmentToken> enrolment_token(std::string_view id) override;
  void put_enrolment_token(const StoredEnrolmentToken& token) override;
  std::vector<v1::EnrolmentToken> enrolment_tokens() override;
  void put_agent_certificate(const v1::AgentCertificate& certificate) override;
  std::optional<v1::AgentCertificate> agent_certificate(std::string_view sha256) override;
  std::vector<v1::AgentCertificate> agent_certificates(std::string_view agent_id) override;
  std::vector<std::string> revoked_certificate_hashes() override;
  std::optional<StoredSession> session(std::string_view token_sha256) override;
  void put_session(const StoredSession& session) override;
  bool delete_session(std::string_view token_sha256) override;
  std::size_t delete_sessions_of(std::string_view user_id, std::string_view except_sha256) override;
  std::size_t delete_expired_sessions(std::int64_t now_unix_ms) override;

  void append_audit(const v1::AuditEntry& entry) override;
  Listing<v1::AuditEntry> list_audit(const v1::ListAuditRequest& request) override;

  // store_alerts.cpp
  std::optional<v1::AlertRule> alert_rule(std::string_view id) override;
  void put_alert_rule(const v1::AlertRule& rule) override;
  bool delete_alert_rule(std::string_view id) override;
  Listing<v1::AlertRule> list_alert_rules(std::uint32_t page, std::uint32_t page_size) override;
  std::vector<v1::AlertRule> all_alert_rules() override;
  std::optional<v1::Channel> channel(std::string_view id) override;
  void put_channel(const v1::Channel& channel) override;
  bool delete_channel(std::string_view id) override;
  Listing<v1::Channel> list_channels(std::uint32_t page, std::uint32_t page_size) override;
  std::vector<v1::Channel> all_channels() override;
  std::optional<v1::Silence> silence(std::string_view id) override;
  void put_silence(const v1::Silence& silence) override;
  bool delete_silence(std::string_view id) override;
  Listing<v1::Silence> list_silences(std::int64_t active_at_unix_ms, std::uint32_t page,
                                     std::uint32_t page_size) override;
  std::optional<StoredMonitor> monitor(std::string_view id) override;
  std::optional<StoredMonitor> monitor_by_token_sha256(std::string_view token_sha256) override;
  void put_monitor(const StoredMonitor& monitor) override;
  bool delete_monitor(std::string_view id) override;
  Listing<v1::Monitor> list_monitors(std::uint32_t page, std::uint32_t page_size) override;
  std::vector<v1::Monitor> all_monitors() override;
  void upsert_alert(const v1::Alert& alert) override;
  std::optional<v1::Alert> alert(std::string_view id) override;
  Listing<v1::Alert> list_alerts(const AlertFilter& filter) override;
  std::vector<v1::Alert> firing_alerts() override;
  void enqueue_delivery(const v1::Delivery& delivery) override;
  std::optional<v1::Delivery> delivery(std::string_view id) override;
  std::vector<v1::Delivery> due_deliveries(std::int64_t now_unix_ms, int limit) override;
  void record_delivery_attempt(const std::string& id, const v1::DeliveryAttempt& attempt, v1::DeliveryState state,
                               std::int64_t next_attempt_unix_ms) override;
  Listing<v1::Delivery> list_deliveries(const DeliveryFilter& filter) override;
  std::size_t purge_deliveries(std::int64_t older_than_unix_ms) override;

  // store_cluster.cpp
  LeaderLease acquire_or_renew_leader(std::string_view holder_id, const CoordinatorAddresses& addresses,
                                      std::chrono::milliseconds ttl) override;
  bool release_leader(std::string_view holder_id) override;
  LeaderLease leader_lease() override;
  void check_fence(std::uint64_t epoch) override;
  void put_coordinator_heartbeat(const v1::CoordinatorInfo& coordinator) override;
  std::vector<v1::CoordinatorInfo> list_coordinators() override;

  // store_commands.cpp
  v1::Command queue_command(const v1::Command& command, std::chrono::milliseconds wait) override;
  bool commands_waiting(std::uint64_t epoch) override;
  std::vector<v1::Command> claim_commands(std::uint64_t epoch, std::string_view holder_id, std::size_t limit,
                                          std::chrono::milliseconds abandon_after) override;
  bool answer_command(std::int64_t id, std::uint64_t epoch, const v1::CommandResult& result) override;
  bool requeue_command(std::int64_t id, std::uint64_t epoch) override;
  std::vector<v1::Command> commands(std::span<const std::int64_t> ids) override;
  std::optional<v1::Command> withdraw_command(std::int64_t id) override;
  std::size_t purge_commands(std::int64_t older_than_unix_ms) override;
  // store_change_feed.cpp
  std::int64_t latest_execution_change() override;
  std::vector<ExecutionChange> execution_changes(std::int64_t after, std::span<const std::int64_t> also,
                                                 std::size_t limit) override;
  std::size_t purge_execution_changes(std::int64_t older_than_unix_ms, std::size_t max_rows) override;
  // store_retention.cpp
  std::size_t purge_executions(std::int64_t before_unix_ms, std::size_t max_rows, std::vector<v1::Execution>* archived,
                               std::vector<ArchivedLog>* archived_logs) override;
  std::size_t purge_logs(std::int64_t before_unix_ms, std::size_t max_rows,
                         std::vector<ArchivedLog>* archived) override;
  std::size_t purge_audit(std::int64_t before_unix_ms, std::size_t max_rows,
                          std::vector<v1::AuditEntry>* archived) override;
  std::vector<v1::DailyStats> execution_rollups(std::string_view from_date, std::string_view to_date) override;
  std::size_t purge_execution_rollups(std::string_view before_date) override;

 private:
  BorrowedStatement statement(std::string_view sql);
  /// A statement whose SQL is a string literal: found by the literal's address, so the hot
  /// paths never compare long SQL strings.
  template <std::size_t N>
  BorrowedStatement statement(const char (&sql)[N]) {
    return literal_statement(sql, N - 1);
  }
  BorrowedStatement literal_statement(const char* sql, std::size_t size);
  /// Deletes the rows of `table` whose `column` is one of `keys`, 100 per statement.
  void delete_keys(std::string_view table, std::string_view column, const std::vector<std::string>& keys);
  void require_writable(std::string_view operation) const;
  std::uint64_t count(const std::string& sql, const std::vector<SqlValue>& values);

  /// Tasks from `SELECT record ...` rows, with their output-only group names filled in.
  std::vector<v1::Task> read_tasks(BorrowedStatement& rows);
  std::vector<v1::Agent> read_agents(BorrowedStatement& rows);
  /// The lease row and the database's clock; `lock`: the dialect's row lock clause.
  LeaderLease read_lease(const char* lock);
  /// The database's clock in unix ms (the lease's clock; store_commands.cpp).
  std::int64_t database_now_unix_ms();
  void fill_group_names(v1::Task& task, std::unordered_map<std::string, std::string>& names_seen);

  // store_alerts.cpp: records by id in a RecordTable; the callers check writability and input.
  template <typename T>
  std::optional<T> get_record(const RecordTable& table, std::string_view id);
  void put_record(const RecordTable& table, std::string_view id, const std::vector<SqlValue>& columns,
                  const google::protobuf::MessageLite& record);
  bool delete_record(const RecordTable& table, std::string_view id);
  template <typename T>
  Listing<T> list_records(const RecordTable& table, std::uint32_t page, std::uint32_t page_size);
  template <typename T>
  Listing<T> list_records(const RecordTable& table, const SqlConditions& where, std::string_view order_by,
                          const Paging& paging);
  template <typename T>
  std::vector<T> all_records(const RecordTable& table);

  SqlSession& db_;
  bool writable_;
  std::uint64_t literal_generation_ = 0;                               // db_'s cache_generation()
  std::unordered_map<const char*, SqlStatement*> literal_statements_;  // into db_'s cache
};

}  // namespace quartzflow::detail
