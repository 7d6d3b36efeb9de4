// SPDX-License-Identifier: Apache-2.0
// The SQLite Store: the writer thread group-commits queued transactions (each in its own
// savepoint) on the read-write connection, the reader thread runs read transactions on a
// read-only connection (WAL: readers never wait for the writer).
#include <memory>
#include <mutex>

#include <fmt/format.h>
#include <sqlite3.h>

#include <quartzflow/store.hpp>

#include "../sqlite/sqlite.hpp"
#include "sql_transaction.hpp"
#include "sqlite_schema.hpp"
#include "sqlite_session.hpp"
#include "store_worker.hpp"

namespace quartzflow {
namespace {

using detail::SqliteDatabase;
using detail::SqliteSession;
using detail::SqliteTransaction;
using detail::SqlStoreTransaction;
using detail::StoreJob;

constexpr int k_busy_timeout_ms = 5000;

class SqliteStore final : public detail::BatchingStore {
 public:
  SqliteStore(boost::asio::any_io_executor executor, SqliteStoreOptions options)
      : BatchingStore(std::move(executor)), options_(std::move(options)) {}

  ~SqliteStore() override { stop_lanes(); }  // drains both queues: everything queued runs and completes

  bool open(error_code& ec, std::string* detail) {
    const auto fail = [&](error_code code, std::string why) {
      ec = code;
      if (detail) *detail = std::move(why);
      return false;
    };
    if (options_.path.empty()) return fail(errc::invalid_argument, "path: is empty");
    const bool memory = options_.path == ":memory:";
    write_db_ = SqliteDatabase::open(options_.path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, ec, detail);
    if (ec) return false;
    sqlite3_busy_timeout(write_db_.get(), k_busy_timeout_ms);
    if (!memory) {
      auto journal = write_db_.prepare("PRAGMA journal_mode = WAL", ec);
      const bool row = !ec && journal.step(ec);
      const std::string mode = row ? journal.text(0) : std::string();
      journal = {};
      if (mode != "wal")
        return fail(errc::store_failed, fmt::format("{}: cannot switch to WAL mode: {}", options_.path,
                                                    mode.empty() ? write_db_.error_message() : "journal mode " + mode));
    }
    // The hot pages of an insert are spread over every index (one leaf per task, agent,
    // group...): a cache that holds them keeps the writer off the disk between commits.
    // A checkpoint copies the WAL into the database and syncs it: fewer, larger ones write
    // each hot page once for many commits (10,000 pages: a WAL of about 40 MB). Savepoint
    // journals and sorts stay in memory.
    const auto cache = options_.cache_mb == 0 ? std::string("SELECT 1")  // SQLite's default
                                              : fmt::format("PRAGMA cache_size = -{}", options_.cache_mb * 1024);
    if (!write_db_.exec("PRAGMA synchronous = FULL", ec) || !write_db_.exec(cache, ec) ||
        !write_db_.exec("PRAGMA wal_autocheckpoint = 10000", ec) || !write_db_.exec("PRAGMA temp_store = MEMORY", ec))
      return fail(ec, fmt::format("{}: {}", options_.path, write_db_.error_message()));
    if (!detail::migrate_coordinator_store(write_db_, ec, detail)) {
      if (detail) *detail = fmt::format("{}: {}", options_.path, *detail);
      return false;
    }
    if (memory) {
      // A second connection to ":memory:" would be another, empty database: reads share
      // the writer's connection and take turns with the batches.
      read_db_ = &write_db_;
      shared_connection_ = true;
    } else {
      std::string why;
      own_read_db_ = SqliteDatabase::open(options_.path, SQLITE_OPEN_READONLY, ec, &why);
      if (ec) return fail(ec, std::move(why));
      sqlite3_busy_timeout(own_read_db_.get(), k_busy_timeout_ms);
      if (!own_read_db_.exec(cache, ec) || !own_read_db_.exec("PRAGMA temp_store = MEMORY", ec))
        return fail(ec, fmt::format("{}: {}", options_.path, own_read_db_.error_message()));
      read_db_ = &own_read_db_;
    }
    // Prepared once: a batch runs three of them per transaction.
    savepoint_ = write_db_.prepare("SAVEPOINT work", ec, true);
    if (!ec) rollback_to_savepoint_ = write_db_.prepare("ROLLBACK TO work", ec, true);
    if (!ec) release_savepoint_ = write_db_.prepare("RELEASE work", ec, true);
    if (ec) return fail(ec, fmt::format("{}: {}", options_.path, write_db_.error_message()));
    write_session_ = std::make_unique<SqliteSession>(write_db_);
    read_session_ = memory ? nullptr : std::make_unique<SqliteSession>(*read_db_);
    write_tx_ = std::make_unique<SqlStoreTransaction>(*write_session_, true);
    // With one shared connection, both transactions use its one statement cache.
    read_tx_ = std::make_unique<SqlStoreTransaction>(memory ? *write_session_ : *read_session_, false);
    start_lanes(options_.max_batch_delay, options_.max_batch_duration);
    return true;
  }

 private:
  std::unique_lock<std::mutex> lock_shared_connection() {
    return shared_connection_ ? std::unique_lock(connection_mutex_) : std::unique_lock<std::mutex>();
  }

  /// BEGIN IMMEDIATE, each job in its own savepoint (a failing job rolls back only itself)
  /// until the deadline, COMMIT. A failed BEGIN or COMMIT fails them all.
  std::size_t write_batch(std::span<StoreJob> batch, std::vector<error_code>& results, error_code& batch_ec,
                          std::chrono::steady_clock::time_point deadline) override {
    const auto lock = lock_shared_connection();
    write_tx_->trim_statement_cache();
    SqliteTransaction transaction(write_db_, batch_ec);
    std::size_t ran = 0;
    for (; ran < batch.size() && !batch_ec; ++ran) {
      if (ran > 0 && std::chrono::steady_clock::now() >= deadline) break;
      results[ran] = run_in_savepoint(batch[ran], batch_ec);
    }
    if (!batch_ec) transaction.commit(batch_ec);
    return ran;
  }  // a transaction still active here rolls back

  error_code run_in_savepoint(StoreJob& job, error_code& batch_ec) {
    if (!savepoint_.reset().run(batch_ec)) return batch_ec;
    const auto ec = detail::run_store_work(job, *write_tx_);
    if (ec) rollback_to_savepoint_.reset().run(batch_ec);
    if (!batch_ec) release_savepoint_.reset().run(batch_ec);
    // An I/O error, a full disk or an interrupt may make SQLite roll back the whole
    // transaction: then the work of the jobs before this one is gone too.
    if (!batch_ec && sqlite3_get_autocommit(write_db_.get()) != 0) batch_ec = errc::store_failed;
    return ec;
  }

  error_code read_one(StoreJob& job) override {
    error_code ec;
    const auto lock = lock_shared_connection();
    read_tx_->trim_statement_cache();
    if (read_db_->exec("BEGIN", ec)) {
      ec = detail::run_store_work(job, *read_tx_);
      error_code end_ec;
      read_db_->exec("COMMIT", end_ec);  // nothing to commit: only ends the snapshot
      if (end_ec) sqlite3_exec(read_db_->get(), "ROLLBACK", nullptr, nullptr, nullptr);
    }
    return ec;
  }

  SqliteStoreOptions options_;

  // Connections before the sessions and transactions that hold their statements.
  SqliteDatabase write_db_;
  SqliteDatabase own_read_db_;
  SqliteDatabase* read_db_ = nullptr;  // own_read_db_, or write_db_ for ":memory:"
  bool shared_connection_ = false;
  std::mutex connection_mutex_;  // taken by both threads when the connection is shared
  detail::SqliteStatement savepoint_;
  detail::SqliteStatement rollback_to_savepoint_;
  detail::SqliteStatement release_savepoint_;
  std::unique_ptr<SqliteSession> write_session_;
  std::unique_ptr<SqliteSession> read_session_;
  std::unique_ptr<SqlStoreTransaction> write_tx_;
  std::unique_ptr<SqlStoreTransaction> read_tx_;
};

}  // namespace

std::unique_ptr<Store> open_sqlite_store(boost::asio::any_io_executor executor, SqliteStoreOptions options,
                                         error_code& ec, std::string* detail) {
  auto store = std::make_unique<SqliteStore>(std::move(executor), std::move(options));
  if (!store->open(ec, detail)) return nullptr;
  ec = {};
  return store;
}

}  // namespace quartzflow
