// SPDX-License-Identifier: Apache-2.0
// LocalStore: the agent's durable record (SQLite): executions, full logs, daily stats, the
// sync queue and the cached task configuration. Writes are batched on a store thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/post.hpp>

#include <quartzflow/error.hpp>
#include <quartzflow/time.hpp>
#include <quartzflow/v1/execution.pb.h>
#include <quartzflow/v1/task.pb.h>

namespace quartzflow {

struct LocalStoreOptions {
  std::string path;                            ///< SQLite file (":memory:" in unit tests)
  std::uint32_t full_logs_per_task = 20;       ///< full output kept for the last N runs per task
  std::chrono::hours retention{24 * 7};        ///< records older than this are purged
  /// Purge also records the coordinator has not acknowledged (standalone agents, which have
  /// no coordinator). Off: a record is purged only once synced, so none is ever lost.
  bool purge_unsynced = false;
  std::string stats_time_zone = "UTC";         ///< the zone whose local days the stats count
  std::size_t output_head_bytes = 10 * 1024;   ///< `Execution.output` keeps this much
  bool read_only = false;                      ///< qfctl local: never writes, works while the agent runs
  /// fsync every commit (survives power loss); off: commits survive process crashes only.
  bool fsync_each_commit = false;
  /// How long a write may wait for companions. 0: none; writes that arrive during a commit
  /// still form the next batch together (natural group commit), at the lowest latency.
  std::chrono::milliseconds max_batch_delay{0};
  /// Bound of the write queue, in bytes: each queued write counts its record's encoded size,
  /// its full log and a fixed 256 bytes, from `async_record` until its completion is posted
  /// (the batch being committed included). A record that would pass the bound is not queued:
  /// it completes at once (posted) with `boost::system::errc::resource_unavailable_try_again`
  /// (EAGAIN), and the caller still holds it. The other writes (mark synced, config, purge,
  /// probe) are small and rare: always queued, and counted. 0: unbounded. The TaskEngine
  /// starts no new run while more than half of it is queued (see `StoreHealth::backlogged`),
  /// so that the records of runs in progress always find room. Destruction and
  /// `TaskEngine::stop` drain at most this much.
  std::size_t max_queued_bytes = 64u << 20;
};

/// Filters for execution queries; all optional, combined with AND.
struct ExecutionQuery {
  std::optional<std::string> task_id;
  std::optional<v1::ExecutionStatus> status;
  std::optional<Instant> scheduled_from;  ///< inclusive
  std::optional<Instant> scheduled_to;    ///< exclusive
  std::size_t limit = 1000;
  std::size_t offset = 0;
  bool newest_first = true;
};

/// The last known configuration, as cached for an agent restarted without its coordinator.
struct CachedConfig {
  std::vector<v1::Task> tasks;
  std::uint64_t version = 0;
};

/// A change to the cached configuration: what a `v1::ConfigDelta` changed, as applied.
struct CachedConfigDelta {
  std::vector<v1::Task> upserts;               ///< tasks added or replaced
  std::vector<std::string> removed_task_ids;   ///< tasks no longer held
  std::uint64_t version = 0;                   ///< the configuration version after the change
};

/// Counters of the store thread, for metrics and tests. Totals since open.
struct LocalStoreMetrics {
  std::uint64_t writes_committed = 0;   ///< write operations whose transaction committed
  std::uint64_t batches_committed = 0;  ///< transactions committed (one per group commit)
  std::uint64_t writes_failed = 0;      ///< write operations completed with an error
  /// Of `writes_failed`, those whose batch failed because the disk (or the database) was
  /// full: SQLITE_FULL, which SQLite reports for ENOSPC.
  std::uint64_t writes_failed_disk_full = 0;
  /// Records refused because the write queue was at `max_queued_bytes` (not in `writes_failed`).
  std::uint64_t writes_refused_queue_full = 0;
  std::uint64_t queued_writes = 0;  ///< writes queued or being committed now
  std::uint64_t queued_bytes = 0;   ///< their size as counted against `max_queued_bytes`
  /// Rows of the cached configuration written or deleted (one per task; committed or not).
  /// A delta costs what it changes: tests use it to see that saving stays O(changed tasks).
  std::uint64_t config_rows_written = 0;
};

/// Why the last batch of writes failed (see `LocalStore::last_write_error`).
struct LocalStoreWriteError {
  bool disk_full = false;      ///< SQLITE_FULL: no space on the disk (ENOSPC) or in the database
  std::string message;         ///< SQLite's message, e.g. `database or disk is full`
  std::int64_t unix_ms = 0;    ///< when the batch failed
};

/**
 * The agent's durable local record.
 *
 * Durability: a completion of `async_record` (and the other `async_` writes) is delivered
 * only after the transaction holding the write is committed (WAL mode), so it survives
 * kill -9 of the process at any later moment. With `fsync_each_commit` each commit is also
 * flushed to the disk (`synchronous=FULL`), so it survives a power loss too, at the cost of
 * one fsync per batch (milliseconds on common disks).
 *
 * Idempotence: records are upserts by `execution_id`. Daily stats count an execution once,
 * when it first reaches a final state (SUCCESS, FAILURE, TIMEOUT, CANCELLED, SKIPPED,
 * MISSED); a record that arrives again is merged, never double counted. The first final
 * state wins: a later record with another status for the same id is ignored.
 *
 * Threads: writes go to one store thread that batches them (group commit); completions are
 * posted to the executor given at open. Reads run on the calling thread over their own
 * connection and may be called from any thread. Not copyable or movable.
 *
 * Batches: every write queued while the store thread waits (up to `max_batch_delay`) shares
 * one transaction; when it fails, every write of the batch completes with
 * `errc::store_failed` and none of it is stored. Invalid records (no execution_id or
 * task_id, UNSPECIFIED status) are refused alone with `errc::invalid_argument`; a store
 * opened `read_only` completes writes with `errc::store_read_only`. A full disk (SQLITE_FULL,
 * which SQLite reports for ENOSPC) fails batches like any other error (`errc::store_failed`);
 * `last_write_error()` and `metrics().writes_failed_disk_full` tell it apart, and
 * `async_probe` tells when commits succeed again. Nothing of a failed batch is kept: the
 * caller holds what it must write again.
 *
 * Bounded queue: at most `max_queued_bytes` of record writes wait for the store thread; a
 * record beyond that completes with EAGAIN without being queued (back-pressure: the
 * caller decides; the TaskEngine stops starting runs well before).
 *
 * Cancellation: none; a queued write is always committed (or fails) and completes. A pending
 * completion counts as outstanding work on the executor, as an Asio operation does.
 */
class LocalStore {
 public:
  using WriteHandler = std::function<void(error_code)>;

  /// Opens (creating and migrating when writable) the store; nullptr with `ec` and `detail`.
  static std::unique_ptr<LocalStore> open(boost::asio::any_io_executor executor,
                                          LocalStoreOptions options, error_code& ec,
                                          std::string* detail = nullptr);
  /// The same, throwing `quartzflow::error` (with the detail) on failure.
  static std::unique_ptr<LocalStore> open(boost::asio::any_io_executor executor, LocalStoreOptions options) {
    return value_or_throw([&](error_code& ec, std::string& detail) { return open(executor, options, ec, &detail); });
  }
  /// Flushes queued writes (their completions are still posted), then stops the store thread.
  ~LocalStore();
  LocalStore(const LocalStore&) = delete;
  LocalStore& operator=(const LocalStore&) = delete;

  /// Upserts an execution; for a final record `full_log` (may be empty) is kept as its log.
  /// `output` is cut to `output_head_bytes` (setting `output_truncated`) before it is stored.
  /// A new or changed record joins the sync queue; a final record is never replaced by a
  /// non-final one (such a late report is ignored and completes without error). Daily stats
  /// take the execution as it first reached a final state.
  template <typename CompletionToken>
  auto async_record(v1::Execution record, std::string full_log, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(error_code)>(
        [this](auto handler, v1::Execution r, std::string log) {
          enqueue_record(std::move(r), std::move(log), wrap(std::move(handler)));
        },
        token, std::move(record), std::move(full_log));
  }

  /// Marks records as acknowledged by the coordinator (removes them from the sync queue).
  template <typename CompletionToken>
  auto async_mark_synced(std::vector<std::string> execution_ids, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(error_code)>(
        [this](auto handler, std::vector<std::string> ids) {
          enqueue_mark_synced(std::move(ids), wrap(std::move(handler)));
        },
        token, std::move(execution_ids));
  }

  /// Replaces the cached task configuration.
  template <typename CompletionToken>
  auto async_save_config(CachedConfig config, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(error_code)>(
        [this](auto handler, CachedConfig c) { enqueue_save_config(std::move(c), wrap(std::move(handler))); },
        token, std::move(config));
  }

  /**
   * Changes the cached task configuration by a delta: writes only the rows of the tasks it
   * upserts or removes, and the version, in one transaction (kill -9 at any moment leaves
   * the previous or the new version, never a mix). Completion: `void(error_code)`.
   */
  template <typename CompletionToken>
  auto async_save_config_delta(CachedConfigDelta delta, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(error_code)>(
        [this](auto handler, CachedConfigDelta d) { enqueue_save_config_delta(std::move(d), wrap(std::move(handler))); },
        token, std::move(delta));
  }

  /// Deletes final records scheduled before `now - retention`, their logs, and stats of
  /// local dates before that instant's; completes with the number of records deleted.
  /// PENDING and RUNNING records stay: a restart still owes them a final state. Records not
  /// yet acknowledged by a coordinator stay too, unless `purge_unsynced`.
  template <typename CompletionToken>
  auto async_purge(Instant now, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(error_code, std::uint64_t)>(
        [this](auto handler, Instant t) {
          auto shared = std::make_shared<decltype(handler)>(std::move(handler));
          auto work = boost::asio::prefer(get_executor(), boost::asio::execution::outstanding_work.tracked);
          enqueue_purge(t, [shared, work](error_code ec, std::uint64_t n) { (*shared)(ec, n); });
        },
        token, now);
  }

  /// Raises the highest leader epoch seen (RunRequest.leader_epoch) to `epoch`; a lower
  /// one leaves it. Completion: `void(error_code)`.
  template <typename CompletionToken>
  auto async_raise_leader_epoch(std::uint64_t epoch, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(error_code)>(
        [this](auto handler, std::uint64_t e) { enqueue_raise_leader_epoch(e, wrap(std::move(handler))); }, token,
        epoch);
  }

  /**
   * Checks that a transaction that needs space can commit now: writes and deletes a 4 KB
   * row in one transaction (nothing stays). Completes with `errc::store_failed` while the
   * disk is full (see `last_write_error`); used to notice that space has returned.
   */
  template <typename CompletionToken>
  auto async_probe(CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(error_code)>(
        [this](auto handler) { enqueue_probe(wrap(std::move(handler))); }, token);
  }

  /// Blocks until every write queued so far is committed (its completion is posted).
  void flush();

  /// Bytes of writes queued or being committed now (see `max_queued_bytes`).
  /// Thread safety: may be called from any thread.
  std::size_t queued_bytes() const noexcept;

  // Reads (calling thread; see the class note).
  std::vector<v1::Execution> executions(const ExecutionQuery& query, error_code& ec) const;
  std::optional<v1::Execution> execution(std::string_view execution_id, error_code& ec) const;
  /// Total matching `query`, ignoring limit and offset.
  std::uint64_t count_executions(const ExecutionQuery& query, error_code& ec) const;
  /// The full log of an execution while retention and `full_logs_per_task` keep it.
  std::optional<std::string> full_log(std::string_view execution_id, error_code& ec) const;
  /// Daily stats for local dates in [from_date, to_date] (YYYY-MM-DD), optionally one task.
  std::vector<v1::DailyStats> daily_stats(std::string_view from_date, std::string_view to_date,
                                          std::optional<std::string> task_id, error_code& ec) const;
  /// Records not yet acknowledged by a coordinator (final or not), oldest scheduled first.
  std::vector<v1::Execution> unsynced(std::size_t limit, error_code& ec) const;
  /// How many records wait for a coordinator's acknowledgement (the sync backlog).
  std::uint64_t unsynced_count(error_code& ec) const;
  /// Records that are not final (PENDING / RUNNING): what a restart must resolve.
  std::vector<v1::Execution> unfinished(error_code& ec) const;
  /// The latest scheduled time recorded for a task's SCHEDULED and MISFIRE_CATCHUP fires
  /// (where the misfire evaluation resumes after a restart).
  std::optional<Instant> last_scheduled(std::string_view task_id, error_code& ec) const;
  CachedConfig cached_config(error_code& ec) const;
  /// The highest leader epoch saved (async_raise_leader_epoch); 0 when none.
  std::uint64_t leader_epoch(error_code& ec) const;

  const LocalStoreOptions& options() const noexcept;
  /// The executor completions are posted to.
  boost::asio::any_io_executor get_executor() const noexcept;
  /// Thread safety: may be called from any thread.
  LocalStoreMetrics metrics() const noexcept;
  /// Why the last batch failed; nullopt once a batch has committed since (or none failed).
  /// A failing batch is logged at error level once; while the same failure repeats, at
  /// debug level (the engine says loudly that the store is unavailable).
  /// Thread safety: may be called from any thread.
  std::optional<LocalStoreWriteError> last_write_error() const;

  struct Impl;

 private:
  using PurgeHandler = std::function<void(error_code, std::uint64_t)>;
  explicit LocalStore(std::unique_ptr<Impl> impl);

  template <typename Handler>
  WriteHandler wrap(Handler handler) {
    // std::function needs a copyable target; Asio handlers may be move-only.
    auto shared = std::make_shared<Handler>(std::move(handler));
    // Outstanding work: the io_context must not run out of work while a write is pending.
    auto work = boost::asio::prefer(get_executor(), boost::asio::execution::outstanding_work.tracked);
    return [shared, work](error_code ec) { (*shared)(ec); };
  }
  void enqueue_record(v1::Execution record, std::string full_log, WriteHandler done);
  void enqueue_mark_synced(std::vector<std::string> ids, WriteHandler done);
  void enqueue_save_config(CachedConfig config, WriteHandler done);
  void enqueue_save_config_delta(CachedConfigDelta delta, WriteHandler done);
  void enqueue_purge(Instant now, PurgeHandler done);
  void enqueue_probe(WriteHandler done);
  void enqueue_raise_leader_epoch(std::uint64_t epoch, WriteHandler done);

  std::unique_ptr<Impl> impl_;
};

}  // namespace quartzflow
