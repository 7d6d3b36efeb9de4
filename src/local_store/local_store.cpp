// SPDX-License-Identifier: Apache-2.0
// LocalStore: a store thread that group-commits queued writes in one SQLite transaction per
// batch and posts completions after the commit; reads over their own read-only connection.
#include <quartzflow/execution_status.hpp>
#include <quartzflow/local_store.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <limits>
#include <mutex>
#include <set>
#include <thread>
#include <variant>

#include <boost/asio/execution/outstanding_work.hpp>
#include <date/tz.h>
#include <fmt/format.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <sqlite3.h>

#include <quartzflow/log.hpp>
#include <quartzflow/v1/config.pb.h>

#include "../common/clock.hpp"
#include "../common/proto_bytes.hpp"
#include "../sqlite/sqlite.hpp"
#include "local_store_reads.hpp"
#include "schema.hpp"

namespace quartzflow {

using detail::SqliteDatabase;
using detail::SqliteStatement;
using detail::SqliteTransaction;
using detail::serialize_deterministic;
using detail::StatsRow;
using detail::clamp_to_int64;
using detail::k_stats_hour_column;
using detail::read_stats_row;
using detail::stats_columns;
using detail::to_unix_ms;
namespace local_store_reads = detail::local_store_reads;

namespace {

constexpr int k_busy_timeout_ms = 5000;

/// Runs that ran (DailyStats.total): success, failure, timeout, cancelled.
bool counts_in_total(v1::ExecutionStatus status) noexcept {
  return is_final(status) && status != v1::EXECUTION_STATUS_SKIPPED && status != v1::EXECUTION_STATUS_MISSED;
}

/// Cuts `text` to at most `limit` bytes without splitting a UTF-8 sequence.
void truncate_utf8(std::string& text, std::size_t limit) {
  if (text.size() <= limit) return;
  std::size_t cut = limit;
  // Step back over continuation bytes (10xxxxxx) so the cut lands on a sequence start.
  for (int back = 0; back < 3 && cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0U) == 0x80U; ++back) --cut;
  if ((static_cast<unsigned char>(text[cut]) & 0xC0U) == 0x80U) cut = limit;  // not UTF-8: cut bytes
  text.resize(cut);
}

struct LocalDay {
  std::string date;  // YYYY-MM-DD
  int hour = 0;      // 0-23
};

LocalDay local_day(const date::time_zone* zone, std::int64_t unix_ms) {
  const date::sys_time<std::chrono::milliseconds> instant{std::chrono::milliseconds{unix_ms}};
  const auto local = zone->to_local(instant);
  const auto day = date::floor<date::days>(local);
  const date::year_month_day ymd{day};
  const auto hour = date::floor<std::chrono::hours>(local - day).count();
  return {fmt::format("{:04}-{:02}-{:02}", static_cast<int>(ymd.year()), static_cast<unsigned>(ymd.month()),
                      static_cast<unsigned>(ymd.day())),
          static_cast<int>(hour)};
}

/// Resets a statement when leaving a scope, so that no statement stays active across the
/// COMMIT or ROLLBACK of a batch.
class ResetOnExit {
 public:
  explicit ResetOnExit(SqliteStatement& statement) noexcept : statement_(statement) { statement_.reset(); }
  ~ResetOnExit() { statement_.reset(); }
  ResetOnExit(const ResetOnExit&) = delete;
  ResetOnExit& operator=(const ResetOnExit&) = delete;

 private:
  SqliteStatement& statement_;
};

// ---- queued writes ----

struct RecordWrite {
  v1::Execution record;
  std::string full_log;
};
struct MarkSyncedWrite {
  std::vector<std::string> execution_ids;
};
struct SaveConfigWrite {
  CachedConfig config;
};
struct SaveConfigDeltaWrite {
  CachedConfigDelta delta;
};
struct PurgeWrite {
  Instant now;
};
/// Raises a `meta` value (never lowers it).
struct RaiseMetaWrite {
  std::string key;
  std::int64_t value = 0;
};
/// Needs a page of space and leaves nothing behind: tells whether a commit can succeed.
struct ProbeWrite {};

/// Probe rows use an execution id no execution has (ids are never empty).
constexpr std::size_t k_probe_bytes = 4096;

}  // namespace

struct LocalStore::Impl {
  struct Op {
    std::variant<RecordWrite, MarkSyncedWrite, SaveConfigWrite, SaveConfigDeltaWrite, PurgeWrite, ProbeWrite,
                 RaiseMetaWrite>
        write;
    WriteHandler done;        // every write but purge
    PurgeHandler purge_done;  // purge
    std::uint64_t purged = 0;
    // Counts as outstanding work on the executor while queued, as any Asio operation does,
    // so that io_context::run() does not return before the completion is delivered.
    boost::asio::any_io_executor work{};
    std::size_t bytes = 0;  // counted against max_queued_bytes while queued or committing
  };

  /// Statements of the store thread, prepared once after the migration.
  struct WriteStatements {
    SqliteStatement select_execution;
    SqliteStatement upsert_execution;
    SqliteStatement insert_log;
    SqliteStatement insert_log_if_absent;
    SqliteStatement prune_logs;
    SqliteStatement select_stats;
    SqliteStatement replace_stats;
    SqliteStatement mark_synced;
    SqliteStatement upsert_config_task;
    SqliteStatement delete_config_task;
  };

  /// What one batch touched, settled before its commit.
  struct BatchState {
    std::set<std::string> tasks_with_new_logs;
    std::int64_t now_ms = 0;
  };

  Impl(boost::asio::any_io_executor ex, LocalStoreOptions opts)
      : executor(std::move(ex)), options(std::move(opts)) {}

  ~Impl() { stop(); }

  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  // ---- open ----

  bool open(error_code& ec, std::string* detail) {
    auto fail = [&](error_code code, std::string why) {
      ec = code;
      if (detail) *detail = std::move(why);
      return false;
    };
    try {
      zone = date::locate_zone(options.stats_time_zone);
    } catch (const std::exception&) {
      return fail(errc::unknown_time_zone,
                  fmt::format("stats_time_zone: unknown time zone \"{}\"", options.stats_time_zone));
    }
    if (options.path.empty()) return fail(errc::invalid_argument, "path: is empty");
    const bool memory = options.path == ":memory:";
    return options.read_only ? open_read_only(memory, fail) : open_writable(memory, fail, ec, detail);
  }

  template <typename Fail>
  bool open_read_only(bool memory, Fail& fail) {
    if (memory) return fail(errc::invalid_argument, "path: a read-only store needs a file, not :memory:");
    std::error_code fs_error;
    if (!std::filesystem::is_regular_file(options.path, fs_error))
      return fail(errc::store_not_found, fmt::format("no agent store at {}", options.path));
    error_code ec;
    std::string why;
    own_read_db = SqliteDatabase::open(options.path, SQLITE_OPEN_READONLY, ec, &why);
    if (ec) return fail(ec, std::move(why));
    sqlite3_busy_timeout(own_read_db.get(), k_busy_timeout_ms);
    read_db = &own_read_db;
    const auto version = own_read_db.query_int("PRAGMA user_version", ec);
    if (ec) return fail(ec, fmt::format("{}: {}", options.path, own_read_db.error_message()));
    const int latest = detail::local_store_schema_version();
    if (version == 0) return fail(errc::store_not_found, fmt::format("no agent store at {}", options.path));
    if (version != latest)
      return fail(errc::store_version,
                  fmt::format("{} has schema version {}; this build reads version {}{}", options.path, version, latest,
                              version < latest ? " (open it writable once to upgrade it)" : ""));
    return true;
  }

  template <typename Fail>
  bool open_writable(bool memory, Fail& fail, error_code& ec, std::string* detail) {
    write_db = SqliteDatabase::open(options.path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, ec, detail);
    if (ec) return false;
    sqlite3_busy_timeout(write_db.get(), k_busy_timeout_ms);
    if (!memory) {
      auto journal = write_db.prepare("PRAGMA journal_mode = WAL", ec);
      const bool row = !ec && journal.step(ec);
      const std::string mode = row ? journal.text(0) : std::string();
      journal = {};
      if (mode != "wal")
        return fail(errc::store_failed, fmt::format("{}: cannot switch to WAL mode: {}", options.path,
                                                    mode.empty() ? write_db.error_message() : "journal mode " + mode));
    }
    // NORMAL in WAL mode: a commit is in the OS before it completes, so it survives any crash
    // of this process (kill -9); FULL also fsyncs each commit, for power loss, at ~ms cost.
    if (!write_db.exec(options.fsync_each_commit ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL", ec))
      return fail(ec, fmt::format("{}: {}", options.path, write_db.error_message()));
    if (!detail::migrate_local_store(write_db, ec, detail)) {
      if (detail) *detail = fmt::format("{}: {}", options.path, *detail);
      return false;
    }
    if (memory) {
      // A second connection to ":memory:" would be another, empty database.
      read_db = &write_db;
      shared_connection = true;
    } else {
      std::string why;
      own_read_db = SqliteDatabase::open(options.path, SQLITE_OPEN_READONLY, ec, &why);
      if (ec) return fail(ec, std::move(why));
      sqlite3_busy_timeout(own_read_db.get(), k_busy_timeout_ms);
      read_db = &own_read_db;
    }
    if (!prepare_write_statements(ec)) return fail(ec, fmt::format("{}: {}", options.path, write_db.error_message()));
    if (!memory) start_checkpointer();
    thread = std::thread([this] { run(); });
    return true;
  }

  /// WAL checkpoints copy the log into the database and flush it: done inside a commit they
  /// stall that commit (and every write waiting on it) for milliseconds. A thread with its
  /// own connection runs them PASSIVE instead (never blocking the writer), twice a second.
  void start_checkpointer() {
    error_code ec;
    if (!write_db.exec("PRAGMA wal_autocheckpoint = 0", ec)) return;
    std::string why;
    checkpoint_db = SqliteDatabase::open(options.path, SQLITE_OPEN_READWRITE, ec, &why);
    if (ec) {
      // Without it SQLite's own checkpoints carry on: slower commits, nothing lost.
      write_db.exec("PRAGMA wal_autocheckpoint = 1000", ec);
      return;
    }
    sqlite3_busy_timeout(checkpoint_db.get(), k_busy_timeout_ms);
    checkpointer = std::thread([this] {
      std::unique_lock lock(checkpoint_mutex);
      while (!checkpoint_stop) {
        checkpoint_wake.wait_for(lock, std::chrono::milliseconds(500), [&] { return checkpoint_stop; });
        lock.unlock();
        error_code failed;
        checkpoint_db.exec("PRAGMA wal_checkpoint(PASSIVE)", failed);
        // A full disk fails every checkpoint: said once, then quiet until one succeeds.
        detail::set_sqlite_failures_quiet(static_cast<bool>(failed));
        lock.lock();
      }
    });
  }

  void stop_checkpointer() {
    {
      std::lock_guard lock(checkpoint_mutex);
      checkpoint_stop = true;
    }
    checkpoint_wake.notify_all();
    if (checkpointer.joinable()) checkpointer.join();
  }

  bool prepare_write_statements(error_code& ec) {
    auto prepare = [&](SqliteStatement& into, const std::string& sql) {
      if (!ec) into = write_db.prepare(sql, ec, true);
    };
    prepare(statements.select_execution, "SELECT status, record FROM executions WHERE execution_id = ?1");
    prepare(statements.upsert_execution,
            "INSERT INTO executions (execution_id, task_id, status, trigger, scheduled_unix_ms, started_unix_ms, "
            "ended_unix_ms, duration_ms, exit_code, attempt, synced, updated_unix_ms, record) "
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, ?11, ?12) "
            "ON CONFLICT (execution_id) DO UPDATE SET task_id = excluded.task_id, status = excluded.status, "
            "trigger = excluded.trigger, scheduled_unix_ms = excluded.scheduled_unix_ms, "
            "started_unix_ms = excluded.started_unix_ms, ended_unix_ms = excluded.ended_unix_ms, "
            "duration_ms = excluded.duration_ms, exit_code = excluded.exit_code, attempt = excluded.attempt, "
            "synced = 0, updated_unix_ms = excluded.updated_unix_ms, record = excluded.record");
    prepare(statements.insert_log,
            "INSERT OR REPLACE INTO logs (execution_id, task_id, scheduled_unix_ms, data, created_unix_ms) "
            "VALUES (?1, ?2, ?3, ?4, ?5)");
    prepare(statements.insert_log_if_absent,
            "INSERT OR IGNORE INTO logs (execution_id, task_id, scheduled_unix_ms, data, created_unix_ms) "
            "VALUES (?1, ?2, ?3, ?4, ?5)");
    prepare(statements.prune_logs,
            "DELETE FROM logs WHERE task_id = ?1 AND execution_id NOT IN (SELECT execution_id FROM logs "
            "WHERE task_id = ?1 ORDER BY scheduled_unix_ms DESC, execution_id DESC LIMIT ?2)");
    prepare(statements.select_stats,
            "SELECT " + stats_columns() + " FROM daily_stats WHERE date = ?1 AND task_id = ?2");
    std::string placeholders;
    for (int i = 1; i <= 2 + k_stats_hour_column + 24 + 1; ++i)
      placeholders += fmt::format("{}?{}", i == 1 ? "" : ", ", i);
    prepare(statements.replace_stats, "INSERT OR REPLACE INTO daily_stats (date, task_id, " + stats_columns() +
                                          ", updated_unix_ms) VALUES (" + placeholders + ")");
    prepare(statements.mark_synced, "UPDATE executions SET synced = 1 WHERE execution_id = ?1");
    prepare(statements.upsert_config_task, "INSERT OR REPLACE INTO config_tasks (id, task) VALUES (?1, ?2)");
    prepare(statements.delete_config_task, "DELETE FROM config_tasks WHERE id = ?1");
    return !ec;
  }

  // ---- queue and store thread ----

  void complete(Op& op, error_code ec) {
    const auto& target = op.work ? op.work : executor;
    if (op.purge_done) {
      boost::asio::post(target, [handler = std::move(op.purge_done), ec, n = ec ? 0 : op.purged] { handler(ec, n); });
    } else if (op.done) {
      boost::asio::post(target, [handler = std::move(op.done), ec] { handler(ec); });
    }
    op.work = {};  // the posted completion holds the executor's work from here on
  }

  static std::size_t size_of(const Op& op) {
    constexpr std::size_t k_overhead = 256;  // the Op, its handler and the message objects
    if (const auto* record = std::get_if<RecordWrite>(&op.write))
      return k_overhead + record->record.ByteSizeLong() + record->full_log.size();
    if (const auto* synced = std::get_if<MarkSyncedWrite>(&op.write)) {
      std::size_t n = k_overhead;
      for (const auto& id : synced->execution_ids) n += id.size() + 32;
      return n;
    }
    if (const auto* config = std::get_if<SaveConfigWrite>(&op.write)) {
      std::size_t n = k_overhead;
      for (const auto& task : config->config.tasks) n += task.ByteSizeLong();
      return n;
    }
    if (const auto* delta = std::get_if<SaveConfigDeltaWrite>(&op.write)) {
      std::size_t n = k_overhead;
      for (const auto& task : delta->delta.upserts) n += task.ByteSizeLong();
      for (const auto& id : delta->delta.removed_task_ids) n += id.size() + 32;
      return n;
    }
    return k_overhead;
  }

  void enqueue(Op op) {
    if (options.read_only) {
      writes_failed.fetch_add(1, std::memory_order_relaxed);
      complete(op, errc::store_read_only);
      return;
    }
    op.bytes = size_of(op);
    const bool bounded = options.max_queued_bytes > 0 && std::holds_alternative<RecordWrite>(op.write);
    std::unique_lock lock(queue_mutex);
    if (bounded && queued_bytes_now.load(std::memory_order_relaxed) + op.bytes > options.max_queued_bytes) {
      lock.unlock();
      writes_refused_queue_full.fetch_add(1, std::memory_order_relaxed);
      complete(op, make_error_code(boost::system::errc::resource_unavailable_try_again));
      return;
    }
    op.work = boost::asio::prefer(executor, boost::asio::execution::outstanding_work.tracked);
    queued_bytes_now.fetch_add(op.bytes, std::memory_order_relaxed);
    queued_writes_now.fetch_add(1, std::memory_order_relaxed);
    const bool was_empty = queue.empty();
    queue.push_back(std::move(op));
    ++enqueued;
    // The thread only sleeps on an empty queue or inside its companion wait, which ends
    // by itself; waking it for every write would cost a context switch each.
    if (was_empty) wake.notify_one();
  }

  void run() {
    std::unique_lock lock(queue_mutex);
    for (;;) {
      wake.wait(lock, [&] { return stopping || !queue.empty(); });
      if (queue.empty()) return;  // stopping, and everything is written
      if (!stopping && flush_waiters == 0 && options.max_batch_delay.count() > 0) {
        const auto deadline = std::chrono::steady_clock::now() + options.max_batch_delay;
        wake.wait_until(lock, deadline, [&] { return stopping || flush_waiters > 0; });
      }
      std::vector<Op> batch(std::make_move_iterator(queue.begin()), std::make_move_iterator(queue.end()));
      queue.clear();
      const std::size_t batch_size = batch.size();
      lock.unlock();
      run_batch(batch);
      std::size_t bytes = 0;
      for (const auto& op : batch) bytes += op.bytes;
      batch.clear();  // the records' memory goes before the bytes are given back
      lock.lock();
      queued_bytes_now.fetch_sub(bytes, std::memory_order_relaxed);
      queued_writes_now.fetch_sub(batch_size, std::memory_order_relaxed);
      finished += batch_size;
      progress.notify_all();
    }
  }

  void stop() {
    {
      std::lock_guard lock(queue_mutex);
      stopping = true;
    }
    wake.notify_all();
    if (thread.joinable()) thread.join();
    stop_checkpointer();
  }

  void flush() {
    std::unique_lock lock(queue_mutex);
    if (!thread.joinable()) return;
    const auto target = enqueued;
    ++flush_waiters;
    wake.notify_all();
    progress.wait(lock, [&] { return finished >= target; });
    --flush_waiters;
  }

  void run_batch(std::vector<Op>& batch) {
    error_code ec;
    detail::SqliteFailure failure;
    // A failure that repeats the previous batch's (a disk that stays full) was logged loudly
    // once; the engine says the rest.
    detail::set_sqlite_failures_quiet(repeating_failure);
    {
      std::unique_lock<std::mutex> shared_lock;
      if (shared_connection) shared_lock = std::unique_lock(read_mutex);
      try {
        SqliteTransaction transaction(write_db, ec);
        BatchState state;
        state.now_ms = detail::now_unix_ms();
        for (auto& op : batch) {
          if (ec) break;
          std::visit([&](auto& write) { apply(write, op, state, ec); }, op.write);
        }
        for (const auto& task_id : state.tasks_with_new_logs) {
          if (ec) break;
          auto& prune = statements.prune_logs;
          ResetOnExit reset(prune);
          prune.bind(1, task_id).bind(2, static_cast<std::int64_t>(options.full_logs_per_task)).run(ec);
        }
        detail::last_sqlite_failure() = {};
        if (!ec) transaction.commit(ec);
        // Before the transaction's rollback: what failed, not what the rollback said.
        if (ec) failure = detail::last_sqlite_failure();
      } catch (const std::exception& e) {
        logger()->error("local store: batch of {} writes failed: {}", batch.size(), e.what());
        ec = errc::store_failed;
        failure.message = e.what();
      }
    }
    detail::set_sqlite_failures_quiet(false);
    if (ec) {
      const bool disk_full = (failure.code & 0xff) == SQLITE_FULL;
      if (failure.message.empty()) failure.message = ec.message();
      logger()->log(repeating_failure ? spdlog::level::debug : spdlog::level::err,
                    "local store: batch of {} writes rolled back: {}", batch.size(), failure.message);
      writes_failed.fetch_add(batch.size(), std::memory_order_relaxed);
      if (disk_full) writes_failed_disk_full.fetch_add(batch.size(), std::memory_order_relaxed);
      std::lock_guard lock(error_mutex);
      repeating_failure = last_error && last_error->message == failure.message;
      last_error = LocalStoreWriteError{disk_full, failure.message, detail::now_unix_ms()};
    } else {
      writes_committed.fetch_add(batch.size(), std::memory_order_relaxed);
      batches_committed.fetch_add(1, std::memory_order_relaxed);
      std::lock_guard lock(error_mutex);
      if (last_error) logger()->info("local store: commits succeed again");
      last_error.reset();
      repeating_failure = false;
    }
    for (auto& op : batch) complete(op, ec);
  }

  // ---- the writes, inside the batch's transaction ----

  void apply(RecordWrite& write, Op&, BatchState& state, error_code& ec) {
    v1::Execution& record = write.record;
    bool existed = false;
    bool was_final = false;
    std::int64_t stored_status = 0;
    std::string stored;
    {
      auto& select = statements.select_execution;
      ResetOnExit reset(select);
      select.bind(1, record.execution_id());
      existed = select.step(ec);
      if (ec) return;
      if (existed) {
        stored_status = select.int64(0);
        was_final = is_final(stored_status);
        stored = select.blob(1);
      }
    }
    const bool now_final = is_final(record.status());
    // The first final state wins: a final record never goes back to PENDING/RUNNING, nor
    // turns into another final state (the daily stats counted the first one).
    if (was_final && (!now_final || stored_status != static_cast<std::int64_t>(record.status()))) return;

    record.set_synced(false);  // the column holds the flag; the blob never does
    const std::string bytes = serialize_deterministic(record);
    if (!existed || bytes != stored) {
      auto& upsert = statements.upsert_execution;
      ResetOnExit reset(upsert);
      upsert.bind(1, record.execution_id())
          .bind(2, record.task_id())
          .bind(3, static_cast<std::int64_t>(record.status()))
          .bind(4, static_cast<std::int64_t>(record.trigger()))
          .bind(5, record.scheduled_unix_ms())
          .bind(6, record.started_unix_ms())
          .bind(7, record.ended_unix_ms())
          .bind(8, record.duration_ms())
          .bind(10, static_cast<std::int64_t>(record.attempt()))
          .bind(11, record.updated_unix_ms())
          .bind_blob(12, bytes);
      if (record.has_exit_code()) upsert.bind(9, static_cast<std::int64_t>(record.exit_code()));
      if (!upsert.run(ec)) return;
    }
    if (!now_final) return;
    if (!was_final && !count_in_daily_stats(record, state, ec)) return;
    const bool ran = record.started_unix_ms() != 0;
    if (options.full_logs_per_task > 0 && (ran || !write.full_log.empty())) {
      // A repeated final record without a log keeps the log stored the first time.
      auto& insert = write.full_log.empty() ? statements.insert_log_if_absent : statements.insert_log;
      ResetOnExit reset(insert);
      insert.bind(1, record.execution_id())
          .bind(2, record.task_id())
          .bind(3, record.scheduled_unix_ms())
          .bind_blob(4, write.full_log)
          .bind(5, state.now_ms);
      if (!insert.run(ec)) return;
      state.tasks_with_new_logs.insert(record.task_id());
    }
  }

  bool count_in_daily_stats(const v1::Execution& record, const BatchState& state, error_code& ec) {
    const bool started = record.started_unix_ms() != 0;
    const auto day = local_day(zone, started ? record.started_unix_ms() : record.scheduled_unix_ms());
    StatsRow row;
    {
      auto& select = statements.select_stats;
      ResetOnExit reset(select);
      select.bind(1, day.date).bind(2, record.task_id());
      if (select.step(ec)) row = read_stats_row(select, 0);
      if (ec) return false;
    }
    if (!record.task_name().empty()) row.task_name = record.task_name();
    if (!record.agent_id().empty()) row.agent_id = record.agent_id();
    switch (record.status()) {
      case v1::EXECUTION_STATUS_SUCCESS: ++row.success; break;
      case v1::EXECUTION_STATUS_FAILURE: ++row.failure; break;
      case v1::EXECUTION_STATUS_TIMEOUT: ++row.timeout; break;
      case v1::EXECUTION_STATUS_CANCELLED: ++row.cancelled; break;
      case v1::EXECUTION_STATUS_SKIPPED: ++row.skipped; break;
      case v1::EXECUTION_STATUS_MISSED: ++row.missed; break;
      default: break;
    }
    if (counts_in_total(record.status())) {
      ++row.total;
      ++row.runs_per_hour[static_cast<std::size_t>(day.hour)];
      if (started) {
        std::int64_t duration = record.duration_ms();
        if (duration == 0 && record.ended_unix_ms() > record.started_unix_ms())
          duration = record.ended_unix_ms() - record.started_unix_ms();
        duration = std::max<std::int64_t>(duration, 0);
        ++row.timed_runs;
        row.total_duration_ms += duration;
        row.min_duration_ms = std::min(row.min_duration_ms.value_or(duration), duration);
        row.max_duration_ms = std::max(row.max_duration_ms.value_or(duration), duration);
      }
    }
    auto& replace = statements.replace_stats;
    ResetOnExit reset(replace);
    replace.bind(1, day.date)
        .bind(2, record.task_id())
        .bind(3, row.task_name)
        .bind(4, row.agent_id)
        .bind(5, row.total)
        .bind(6, row.success)
        .bind(7, row.failure)
        .bind(8, row.timeout)
        .bind(9, row.cancelled)
        .bind(10, row.skipped)
        .bind(11, row.missed)
        .bind(12, row.timed_runs)
        .bind(13, row.total_duration_ms);
    if (row.min_duration_ms) replace.bind(14, *row.min_duration_ms);
    if (row.max_duration_ms) replace.bind(15, *row.max_duration_ms);
    for (int h = 0; h < 24; ++h) replace.bind(16 + h, row.runs_per_hour[static_cast<std::size_t>(h)]);
    replace.bind(40, state.now_ms);
    return replace.run(ec);
  }

  void apply(MarkSyncedWrite& write, Op&, BatchState&, error_code& ec) {
    auto& mark = statements.mark_synced;
    for (const auto& id : write.execution_ids) {
      ResetOnExit reset(mark);
      if (!mark.bind(1, id).run(ec)) return;
    }
  }

  // The cached configuration: one `config_tasks` row per task and the version in the
  // `config` row, whose `tasks` blob (schema 1 kept every task there) stays empty.

  bool write_config_version(std::uint64_t version, error_code& ec) {
    auto replace = write_db.prepare("INSERT OR REPLACE INTO config (id, version, tasks) VALUES (1, ?1, x'')", ec);
    if (ec) return false;
    return replace.bind(1, clamp_to_int64(version)).run(ec);
  }

  bool upsert_config_task(const v1::Task& task, error_code& ec) {
    auto& upsert = statements.upsert_config_task;
    ResetOnExit reset(upsert);
    config_rows_written.fetch_add(1, std::memory_order_relaxed);
    return upsert.bind(1, task.id()).bind_blob(2, serialize_deterministic(task)).run(ec);
  }

  void apply(SaveConfigWrite& write, Op&, BatchState&, error_code& ec) {
    if (!write_db.exec("DELETE FROM config_tasks", ec)) return;
    for (const auto& task : write.config.tasks)
      if (!upsert_config_task(task, ec)) return;
    write_config_version(write.config.version, ec);
  }

  void apply(SaveConfigDeltaWrite& write, Op&, BatchState&, error_code& ec) {
    // A blob cached by schema 1 becomes rows first (once): the delta applies to those.
    {
      auto legacy = write_db.prepare("SELECT tasks FROM config WHERE id = 1 AND length(tasks) > 0", ec);
      if (ec) return;
      if (legacy.step(ec)) {
        const auto bytes = legacy.blob(0);
        v1::TaskManifest manifest;
        if (!manifest.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
          ec = errc::store_failed;
          return logger()->error("local store: the cached configuration does not parse");
        }
        legacy.reset();
        for (auto& task : *manifest.mutable_tasks()) {
          task.set_enabled(task.enabled());  // see cached_config
          if (!upsert_config_task(task, ec)) return;
        }
      }
      if (ec) return;
    }
    for (const auto& task : write.delta.upserts)
      if (!upsert_config_task(task, ec)) return;
    auto& remove = statements.delete_config_task;
    for (const auto& id : write.delta.removed_task_ids) {
      ResetOnExit reset(remove);
      config_rows_written.fetch_add(1, std::memory_order_relaxed);
      if (!remove.bind(1, id).run(ec)) return;
    }
    write_config_version(write.delta.version, ec);
  }

  void apply(RaiseMetaWrite& write, Op&, BatchState&, error_code& ec) {
    auto raise = write_db.prepare(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = "
        "max(value, excluded.value)",
        ec);
    if (ec) return;
    raise.bind(1, write.key).bind(2, write.value).run(ec);
  }

  void apply(ProbeWrite&, Op&, BatchState&, error_code& ec) {
    auto insert = write_db.prepare(
        "INSERT OR REPLACE INTO logs (execution_id, task_id, scheduled_unix_ms, data, created_unix_ms) "
        "VALUES ('', '', 0, zeroblob(?1), 0)",
        ec);
    if (ec || !insert.bind(1, static_cast<std::int64_t>(k_probe_bytes)).run(ec)) return;
    write_db.exec("DELETE FROM logs WHERE execution_id = ''", ec);
  }

  void apply(PurgeWrite& write, Op& op, BatchState&, error_code& ec) {
    const std::int64_t cutoff_ms =
        to_unix_ms(write.now) - std::chrono::duration_cast<std::chrono::milliseconds>(options.retention).count();
    auto executions = write_db.prepare(
        options.purge_unsynced ? "DELETE FROM executions WHERE scheduled_unix_ms < ?1 AND status NOT IN (?2, ?3)"
                               : "DELETE FROM executions WHERE scheduled_unix_ms < ?1 AND status NOT IN (?2, ?3) "
                                 "AND synced = 1",
        ec);
    if (ec) return;
    // PENDING and RUNNING records stay until a restart resolves them: they are owed a final state.
    executions.bind(1, cutoff_ms)
        .bind(2, static_cast<std::int64_t>(v1::EXECUTION_STATUS_PENDING))
        .bind(3, static_cast<std::int64_t>(v1::EXECUTION_STATUS_RUNNING));
    if (!executions.run(ec)) return;
    op.purged = static_cast<std::uint64_t>(write_db.changes());
    // The logs of the records just deleted. An old record that stayed (unfinished, or not yet
    // acknowledged by a coordinator, which may still ask for its full log) keeps its log.
    auto logs =
        write_db.prepare("DELETE FROM logs WHERE execution_id NOT IN (SELECT execution_id FROM executions)", ec);
    if (ec || !logs.run(ec)) return;
    auto stats = write_db.prepare("DELETE FROM daily_stats WHERE date < ?1", ec);
    if (ec) return;
    stats.bind(1, local_day(zone, cutoff_ms).date).run(ec);
  }

  // ---- reads ----

  template <typename Read>
  auto read(Read&& body) const {
    std::lock_guard lock(read_mutex);
    return body(*read_db);
  }

  boost::asio::any_io_executor executor;
  LocalStoreOptions options;
  const date::time_zone* zone = nullptr;

  SqliteDatabase write_db;  // the store thread's (empty when read-only)
  SqliteDatabase own_read_db;
  SqliteDatabase* read_db = nullptr;  // own_read_db, or write_db for ":memory:"
  bool shared_connection = false;     // read_db is write_db: batches take read_mutex too
  mutable std::mutex read_mutex;
  WriteStatements statements;

  std::mutex queue_mutex;
  std::condition_variable wake;      // the store thread: work arrived, flush or stop
  std::condition_variable progress;  // flush(): a batch finished
  std::deque<Op> queue;
  std::uint64_t enqueued = 0;
  std::uint64_t finished = 0;
  std::size_t flush_waiters = 0;
  bool stopping = false;
  std::thread thread;

  SqliteDatabase checkpoint_db;  // the checkpointer's own connection
  std::thread checkpointer;
  std::mutex checkpoint_mutex;
  std::condition_variable checkpoint_wake;
  bool checkpoint_stop = false;

  std::atomic<std::uint64_t> config_rows_written{0};
  std::atomic<std::uint64_t> writes_committed{0};
  std::atomic<std::uint64_t> batches_committed{0};
  std::atomic<std::uint64_t> writes_failed{0};
  std::atomic<std::uint64_t> writes_failed_disk_full{0};
  std::atomic<std::uint64_t> writes_refused_queue_full{0};
  std::atomic<std::size_t> queued_bytes_now{0};   // changed under queue_mutex, read anywhere
  std::atomic<std::size_t> queued_writes_now{0};

  mutable std::mutex error_mutex;
  std::optional<LocalStoreWriteError> last_error;  // guarded by error_mutex
  bool repeating_failure = false;                  // the store thread's; set under error_mutex
};

// ---- LocalStore ----

LocalStore::LocalStore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

LocalStore::~LocalStore() {
  if (impl_) impl_->stop();  // drains the queue: every queued write commits and completes
}

std::unique_ptr<LocalStore> LocalStore::open(boost::asio::any_io_executor executor, LocalStoreOptions options,
                                             error_code& ec, std::string* detail) {
  auto impl = std::make_unique<Impl>(std::move(executor), std::move(options));
  if (!impl->open(ec, detail)) return nullptr;
  ec = {};
  return std::unique_ptr<LocalStore>(new LocalStore(std::move(impl)));
}

const LocalStoreOptions& LocalStore::options() const noexcept { return impl_->options; }

LocalStoreMetrics LocalStore::metrics() const noexcept {
  return {impl_->writes_committed.load(std::memory_order_relaxed),
          impl_->batches_committed.load(std::memory_order_relaxed),
          impl_->writes_failed.load(std::memory_order_relaxed),
          impl_->writes_failed_disk_full.load(std::memory_order_relaxed),
          impl_->writes_refused_queue_full.load(std::memory_order_relaxed),
          impl_->queued_writes_now.load(std::memory_order_relaxed),
          impl_->queued_bytes_now.load(std::memory_order_relaxed),
          impl_->config_rows_written.load(std::memory_order_relaxed)};
}

std::size_t LocalStore::queued_bytes() const noexcept { return impl_->queued_bytes_now.load(std::memory_order_relaxed); }

std::optional<LocalStoreWriteError> LocalStore::last_write_error() const {
  std::lock_guard lock(impl_->error_mutex);
  return impl_->last_error;
}

void LocalStore::flush() { impl_->flush(); }

void LocalStore::enqueue_record(v1::Execution record, std::string full_log, WriteHandler done) {
  Impl::Op op{RecordWrite{}, std::move(done), {}, 0};
  if (record.execution_id().empty() || record.task_id().empty() ||
      record.status() == v1::EXECUTION_STATUS_UNSPECIFIED) {
    // Refused before the queue: one bad record must not fail the batch it would share.
    impl_->writes_failed.fetch_add(1, std::memory_order_relaxed);
    impl_->complete(op, errc::invalid_argument);
    return;
  }
  const std::size_t original_size = record.output().size();
  if (original_size > impl_->options.output_head_bytes) {
    truncate_utf8(*record.mutable_output(), impl_->options.output_head_bytes);
    record.set_output_truncated(true);
  }
  if (record.output_bytes() == 0) record.set_output_bytes(original_size);
  op.write = RecordWrite{std::move(record), std::move(full_log)};
  impl_->enqueue(std::move(op));
}

void LocalStore::enqueue_mark_synced(std::vector<std::string> ids, WriteHandler done) {
  impl_->enqueue(Impl::Op{MarkSyncedWrite{std::move(ids)}, std::move(done), {}, 0});
}

void LocalStore::enqueue_save_config(CachedConfig config, WriteHandler done) {
  impl_->enqueue(Impl::Op{SaveConfigWrite{std::move(config)}, std::move(done), {}, 0});
}

void LocalStore::enqueue_save_config_delta(CachedConfigDelta delta, WriteHandler done) {
  impl_->enqueue(Impl::Op{SaveConfigDeltaWrite{std::move(delta)}, std::move(done), {}, 0});
}

void LocalStore::enqueue_purge(Instant now, PurgeHandler done) {
  impl_->enqueue(Impl::Op{PurgeWrite{now}, {}, std::move(done), 0});
}

void LocalStore::enqueue_raise_leader_epoch(std::uint64_t epoch, WriteHandler done) {
  impl_->enqueue(Impl::Op{RaiseMetaWrite{"leader_epoch", clamp_to_int64(epoch)}, std::move(done), {}, 0});
}

std::uint64_t LocalStore::leader_epoch(error_code& ec) const {
  return impl_->read([&](SqliteDatabase& db) { return local_store_reads::meta_value(db, "leader_epoch", ec); });
}

void LocalStore::enqueue_probe(WriteHandler done) { impl_->enqueue(Impl::Op{ProbeWrite{}, std::move(done), {}, 0}); }

std::vector<v1::Execution> LocalStore::executions(const ExecutionQuery& query, error_code& ec) const {
  return impl_->read([&](SqliteDatabase& db) { return local_store_reads::executions(db, query, ec); });
}

std::optional<v1::Execution> LocalStore::execution(std::string_view execution_id, error_code& ec) const {
  return impl_->read([&](SqliteDatabase& db) { return local_store_reads::execution(db, execution_id, ec); });
}

std::uint64_t LocalStore::unsynced_count(error_code& ec) const {
  return impl_->read([&](SqliteDatabase& db) { return local_store_reads::unsynced_count(db, ec); });
}

std::uint64_t LocalStore::count_executions(const ExecutionQuery& query, error_code& ec) const {
  return impl_->read([&](SqliteDatabase& db) { return local_store_reads::count_executions(db, query, ec); });
}

std::optional<std::string> LocalStore::full_log(std::string_view execution_id, error_code& ec) const {
  return impl_->read([&](SqliteDatabase& db) { return local_store_reads::full_log(db, execution_id, ec); });
}

std::vector<v1::DailyStats> LocalStore::daily_stats(std::string_view from_date, std::string_view to_date,
                                                     std::optional<std::string> task_id, error_code& ec) const {
  if (!local_store_reads::is_date(from_date) || !local_store_reads::is_date(to_date)) {
    ec = errc::invalid_argument;
    return {};
  }
  return impl_->read([&](SqliteDatabase& db) {
    return local_store_reads::daily_stats(db, from_date, to_date, task_id, impl_->options.stats_time_zone, ec);
  });
}

std::vector<v1::Execution> LocalStore::unsynced(std::size_t limit, error_code& ec) const {
  return impl_->read([&](SqliteDatabase& db) { return local_store_reads::unsynced(db, limit, ec); });
}

std::vector<v1::Execution> LocalStore::unfinished(error_code& ec) const {
  return impl_->read([&](SqliteDatabase& db) { return local_store_reads::unfinished(db, ec); });
}

std::optional<Instant> LocalStore::last_scheduled(std::string_view task_id, error_code& ec) const {
  return impl_->read([&](SqliteDatabase& db) { return local_store_reads::last_scheduled(db, task_id, ec); });
}

CachedConfig LocalStore::cached_config(error_code& ec) const {
  return impl_->read([&](SqliteDatabase& db) { return local_store_reads::cached_config(db, ec); });
}

boost::asio::any_io_executor LocalStore::get_executor() const noexcept { return impl_->executor; }

}  // namespace quartzflow
