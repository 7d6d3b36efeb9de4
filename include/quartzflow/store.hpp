// SPDX-License-Identifier: Apache-2.0
// Store: the coordinator's durable catalog and history (tasks, groups, agents, executions,
// logs, audit, config versions, scheduler fire state). SQLite now, PostgreSQL later: the
// interface speaks protobuf types and never SQLite's.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>

#include <quartzflow/error.hpp>
#include <quartzflow/time.hpp>
#include <quartzflow/v1/admin.pb.h>
#include <quartzflow/v1/agent.pb.h>
#include <quartzflow/v1/execution.pb.h>
#include <quartzflow/v1/group.pb.h>
#include <quartzflow/v1/task.pb.h>

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
  merged,    ///< an update of a known id (state change, re-sent result): counted once
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

/**
 * One transaction. Only valid inside the function given to `Store::transact` or
 * `Store::read`, on the store's thread. Storage failures throw `quartzflow::error` (the
 * transaction then rolls back); "not found" is an empty optional or false, never a throw.
 */
class StoreTransaction {
 public:
  virtual ~StoreTransaction() = default;

  // Config versions: monotonic, one per committed catalog change.
  virtual std::uint64_t config_version() = 0;
  /// Increments and returns the config version, recording `summary` with it.
  virtual std::uint64_t bump_config_version(std::string_view summary) = 0;

  // Tasks (bindings to groups are the task's `group_ids`, stored as a relation).
  virtual std::optional<v1::Task> task(std::string_view id) = 0;
  virtual std::optional<v1::Task> task_by_name(std::string_view name) = 0;
  virtual void put_task(const v1::Task& task) = 0;  ///< insert or replace by id
  virtual bool delete_task(std::string_view id) = 0;
  /// Filters: keyword (id, name, description), enabled, group_id, label_selector (k=v,...);
  /// sort: name (default), -name, updated, -updated, created, -created; page from 1.
  virtual Listing<v1::Task> list_tasks(const v1::ListTasksRequest& request) = 0;
  /// Tasks bound to a group (directly) or global (`all_agents`).
  virtual std::vector<v1::Task> tasks_for_group(std::string_view group_id) = 0;
  virtual std::vector<v1::Task> all_tasks() = 0;

  // Groups.
  virtual std::optional<v1::Group> group(std::string_view id) = 0;
  virtual std::optional<v1::Group> group_by_name(std::string_view name) = 0;
  virtual void put_group(const v1::Group& group) = 0;
  virtual bool delete_group(std::string_view id) = 0;
  virtual Listing<v1::GroupSummary> list_groups(const v1::ListGroupsRequest& request) = 0;
  /// Ids of the tasks bound to `group_id`.
  virtual std::vector<std::string> tasks_bound_to(std::string_view group_id) = 0;

  // Agents.
  virtual std::optional<v1::Agent> agent(std::string_view id) = 0;
  virtual void put_agent(const v1::Agent& agent) = 0;
  virtual Listing<v1::Agent> list_agents(const v1::ListAgentsRequest& request) = 0;
  virtual std::vector<v1::Agent> agents_in_group(std::string_view group_id) = 0;

  // Executions: upsert by id with the merge rules of UpsertResult.
  virtual UpsertResult upsert_execution(const v1::Execution& execution) = 0;
  virtual std::optional<v1::Execution> execution(std::string_view id) = 0;
  /// Filters: task, agent, group, status, scheduled time range; newest first; paging.
  virtual Listing<v1::Execution> list_executions(const v1::ListExecutionsRequest& request) = 0;
  /// Counts by status, success rate, avg / p50 / p95 duration, failure reasons ranked,
  /// grouped per task, group, agent or day as the query asks.
  virtual v1::StatsResponse stats(const v1::StatsQuery& query) = 0;
  virtual void put_log(std::string_view execution_id, std::string_view text) = 0;
  virtual std::optional<std::string> log(std::string_view execution_id) = 0;

  // Scheduler state of coordinator-fired tasks.
  virtual FireState fire_state(std::string_view task_id) = 0;
  virtual void put_fire_state(std::string_view task_id, const FireState& state) = 0;

  // Audit log (append-only).
  virtual void append_audit(const v1::AuditEntry& entry) = 0;
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
  /// Blocks until every queued transaction has committed (for shutdown and tests).
  virtual void flush() = 0;
  /// Counters since the store was opened; zeros when the implementation keeps none.
  virtual StoreMetrics metrics() const noexcept { return {}; }
};

struct SqliteStoreOptions {
  std::string path;                                  ///< file, or ":memory:" for tests
  std::chrono::milliseconds max_batch_delay{1};      ///< how long a commit waits for companions
};

/// Opens (creating and migrating) a SQLite store; nullptr with `ec` and `detail` on failure.
std::unique_ptr<Store> open_sqlite_store(boost::asio::any_io_executor executor, SqliteStoreOptions options,
                                         error_code& ec, std::string* detail = nullptr);

}  // namespace quartzflow
