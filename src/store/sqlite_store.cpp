// SPDX-License-Identifier: Apache-2.0
// The SQLite Store: a writer thread that group-commits queued transactions (each in its own
// savepoint) and posts completions after the commit, and a reader thread that runs read
// transactions on a read-only connection (WAL: readers never wait for the writer).
#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <fmt/format.h>
#include <sqlite3.h>

#include <quartzflow/log.hpp>
#include <quartzflow/store.hpp>

#include "../sqlite/sqlite.hpp"
#include "sqlite_schema.hpp"
#include "sqlite_transaction.hpp"

namespace quartzflow {
namespace {

using detail::SqliteDatabase;
using detail::SqliteStoreTransaction;
using detail::SqliteTransaction;

constexpr int k_busy_timeout_ms = 5000;

/// One queued transaction. `tracked` counts as outstanding work on the executor from the
/// call until its completion is posted, as any Asio operation does, so that
/// io_context::run() does not return while a completion is still owed.
struct Job {
  Store::Work work;
  Store::Done done;
  boost::asio::any_io_executor tracked;
};

void complete(Job& job, error_code ec) {
  if (job.done) boost::asio::post(job.tracked, [done = std::move(job.done), ec] { done(ec); });
  job.tracked = {};  // the posted completion holds the work from here on
}

/// Runs `work`, turning what it throws into its error code.
error_code run_work(Job& job, SqliteStoreTransaction& tx) {
  error_code ec;
  try {
    if (job.work) job.work(tx, ec);
  } catch (const boost::system::system_error& e) {
    // quartzflow::error included: a validation failure, a conflict, a storage failure.
    ec = e.code() ? e.code() : error_code(errc::store_failed);
    logger()->debug("store: transaction failed: {}", e.what());
  } catch (const std::exception& e) {
    ec = errc::store_failed;
    logger()->error("store: transaction threw: {}", e.what());
  }
  return ec;
}

/// A queue served by one thread: `process` gets everything queued at once.
class Lane {
 public:
  using Process = std::function<void(std::vector<Job>&)>;

  ~Lane() { stop(); }

  void start(const char* thread_name, std::chrono::milliseconds batch_delay, Process process) {
    batch_delay_ = batch_delay;
    process_ = std::move(process);
    thread_ = std::thread([this, thread_name] {
      pthread_setname_np(pthread_self(), thread_name);
      run();
    });
  }

  void push(Job job) {
    std::lock_guard lock(mutex_);
    const bool was_empty = queue_.empty();
    queue_.push_back(std::move(job));
    ++enqueued_;
    // The thread only sleeps on an empty queue or in its companion wait, which ends by
    // itself: waking it for every call would cost a context switch each.
    if (was_empty) wake_.notify_one();
  }

  void flush() {
    std::unique_lock lock(mutex_);
    if (!thread_.joinable()) return;
    const auto target = enqueued_;
    ++flush_waiters_;
    wake_.notify_all();
    progress_.wait(lock, [&] { return finished_ >= target; });
    --flush_waiters_;
  }

  void stop() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void run() {
    std::unique_lock lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and everything queued is done
      if (!stopping_ && flush_waiters_ == 0 && batch_delay_.count() > 0) {
        // Group commit: give concurrent callers a moment to join this batch.
        wake_.wait_until(lock, std::chrono::steady_clock::now() + batch_delay_,
                         [&] { return stopping_ || flush_waiters_ > 0; });
      }
      std::vector<Job> batch(std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()));
      queue_.clear();
      lock.unlock();
      process_(batch);
      lock.lock();
      finished_ += batch.size();
      progress_.notify_all();
    }
  }

  std::chrono::milliseconds batch_delay_{0};
  Process process_;
  std::mutex mutex_;
  std::condition_variable wake_;      // the thread: work arrived, flush or stop
  std::condition_variable progress_;  // flush(): a batch finished
  std::deque<Job> queue_;
  std::uint64_t enqueued_ = 0;
  std::uint64_t finished_ = 0;
  std::size_t flush_waiters_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

class SqliteStore final : public Store {
 public:
  SqliteStore(boost::asio::any_io_executor executor, SqliteStoreOptions options)
      : executor_(std::move(executor)), options_(std::move(options)) {}

  ~SqliteStore() override {
    // Drains both queues: everything queued runs and completes.
    writes_.stop();
    reads_.stop();
  }

  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  boost::asio::any_io_executor get_executor() const noexcept override { return executor_; }

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
        return fail(errc::store_failed,
                    fmt::format("{}: cannot switch to WAL mode: {}", options_.path,
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
    write_tx_ = std::make_unique<SqliteStoreTransaction>(write_db_, true);
    read_tx_ = std::make_unique<SqliteStoreTransaction>(*read_db_, false);
    writes_.start("qf-store-write", options_.max_batch_delay, [this](std::vector<Job>& batch) { write(batch); });
    reads_.start("qf-store-read", std::chrono::milliseconds{0}, [this](std::vector<Job>& batch) { read(batch); });
    return true;
  }

  void transact(Work work, Done done) override { writes_.push(job_of(std::move(work), std::move(done))); }

  void read(Work work, Done done) override { reads_.push(job_of(std::move(work), std::move(done))); }

  void flush() override {
    writes_.flush();
    reads_.flush();
  }

  StoreMetrics metrics() const noexcept override {
    return {transactions_committed_.load(std::memory_order_relaxed),
            transactions_failed_.load(std::memory_order_relaxed), commits_.load(std::memory_order_relaxed),
            reads_run_.load(std::memory_order_relaxed)};
  }

 private:
  Job job_of(Work work, Done done) {
    return {std::move(work), std::move(done),
            boost::asio::prefer(executor_, boost::asio::execution::outstanding_work.tracked)};
  }

  std::unique_lock<std::mutex> lock_shared_connection() {
    return shared_connection_ ? std::unique_lock(connection_mutex_) : std::unique_lock<std::mutex>();
  }

  /// One batch: BEGIN IMMEDIATE, each job in its own savepoint (a failing job rolls back
  /// only itself), COMMIT, then every completion. A failed BEGIN or COMMIT fails them all.
  void write(std::vector<Job>& batch) {
    std::vector<error_code> results(batch.size());
    error_code batch_ec;
    {
      const auto lock = lock_shared_connection();
      write_tx_->trim_statement_cache();
      SqliteTransaction transaction(write_db_, batch_ec);
      for (std::size_t i = 0; i < batch.size() && !batch_ec; ++i) results[i] = run_in_savepoint(batch[i], batch_ec);
      if (!batch_ec) transaction.commit(batch_ec);
    }  // a transaction still active here rolls back
    if (batch_ec) {
      logger()->error("store: a batch of {} transactions failed: {}", batch.size(), batch_ec.message());
      for (auto& ec : results) ec = batch_ec;
    }
    // Counted before the completions run, so that a completion sees its own commit counted.
    const auto committed = static_cast<std::uint64_t>(
        std::count_if(results.begin(), results.end(), [](const error_code& ec) { return !ec; }));
    if (!batch_ec) commits_.fetch_add(1, std::memory_order_relaxed);
    transactions_committed_.fetch_add(committed, std::memory_order_relaxed);
    transactions_failed_.fetch_add(batch.size() - committed, std::memory_order_relaxed);
    for (std::size_t i = 0; i < batch.size(); ++i) complete(batch[i], results[i]);
  }

  error_code run_in_savepoint(Job& job, error_code& batch_ec) {
    if (!savepoint_.reset().run(batch_ec)) return batch_ec;
    const auto ec = run_work(job, *write_tx_);
    if (ec) rollback_to_savepoint_.reset().run(batch_ec);
    if (!batch_ec) release_savepoint_.reset().run(batch_ec);
    // An I/O error, a full disk or an interrupt may make SQLite roll back the whole
    // transaction: then the work of the jobs before this one is gone too.
    if (!batch_ec && sqlite3_get_autocommit(write_db_.get()) != 0) batch_ec = errc::store_failed;
    return ec;
  }

  void read(std::vector<Job>& batch) {
    for (auto& job : batch) {
      error_code ec;
      {
        const auto lock = lock_shared_connection();
        read_tx_->trim_statement_cache();
        if (read_db_->exec("BEGIN", ec)) {
          ec = run_work(job, *read_tx_);
          error_code end_ec;
          read_db_->exec("COMMIT", end_ec);  // nothing to commit: only ends the snapshot
          if (end_ec) sqlite3_exec(read_db_->get(), "ROLLBACK", nullptr, nullptr, nullptr);
        }
      }
      reads_run_.fetch_add(1, std::memory_order_relaxed);
      complete(job, ec);
    }
  }

  boost::asio::any_io_executor executor_;
  SqliteStoreOptions options_;

  // Connections before the transactions that hold their statements, and both before the
  // lanes, so that the threads stop first on destruction.
  SqliteDatabase write_db_;
  SqliteDatabase own_read_db_;
  SqliteDatabase* read_db_ = nullptr;  // own_read_db_, or write_db_ for ":memory:"
  bool shared_connection_ = false;
  std::mutex connection_mutex_;  // taken by both threads when the connection is shared
  detail::SqliteStatement savepoint_;
  detail::SqliteStatement rollback_to_savepoint_;
  detail::SqliteStatement release_savepoint_;
  std::unique_ptr<SqliteStoreTransaction> write_tx_;
  std::unique_ptr<SqliteStoreTransaction> read_tx_;

  std::atomic<std::uint64_t> transactions_committed_{0};
  std::atomic<std::uint64_t> transactions_failed_{0};
  std::atomic<std::uint64_t> commits_{0};
  std::atomic<std::uint64_t> reads_run_{0};

  Lane writes_;
  Lane reads_;
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
