// SPDX-License-Identifier: Apache-2.0
// What every coordinator Store backend shares: the queues served by a writer thread (group
// commit) and a reader thread, the completions posted to the executor, and the counters.
// A backend says how one batch of writes and one read run on its connections.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include <quartzflow/store.hpp>

namespace quartzflow::detail {

/// One queued transaction. `tracked` counts as outstanding work on the executor from the
/// call until its completion is posted, as any Asio operation does, so that
/// io_context::run() does not return while a completion is still owed.
struct StoreJob {
  Store::Work work;
  Store::Done done;
  boost::asio::any_io_executor tracked;
};

/// Runs the job's work, turning what it throws into its error code (a quartzflow::error
/// gives its code, anything else store_failed).
error_code run_store_work(StoreJob& job, StoreTransaction& tx);

/// A queue served by one named thread: `process` gets everything queued at once, after
/// waiting up to `batch_delay` for companions (group commit), or only the urgent jobs when
/// some are queued. It returns how many jobs it processed (at least one); the rest go back
/// to the head of the queue, behind urgent jobs queued meanwhile.
class StoreLane {
 public:
  using Process = std::function<std::size_t(std::span<StoreJob>)>;

  ~StoreLane() { stop(); }

  void start(const char* thread_name, std::chrono::milliseconds batch_delay, Process process);
  void push(StoreJob job);
  /// Queues `job` ahead of everything queued: the next batch holds only the urgent jobs.
  void push_front(StoreJob job);
  /// Blocks until everything queued before the call is processed.
  void flush();
  /// Processes what is queued, then ends the thread.
  void stop();

 private:
  void run();

  std::chrono::milliseconds batch_delay_{0};
  Process process_;
  std::mutex mutex_;
  std::condition_variable wake_;      // the thread: work arrived, flush or stop
  std::condition_variable progress_;  // flush(): a batch finished
  std::deque<StoreJob> queue_;
  std::size_t urgent_ = 0;  // the first jobs of queue_ that came through push_front
  std::uint64_t enqueued_ = 0;
  std::uint64_t finished_ = 0;
  std::size_t flush_waiters_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

/**
 * The Store front-end of a backend: transact() and read() queue jobs on two lanes
 * (`qf-store-write`, `qf-store-read`), the write lane hands batches to `write_batch`, the
 * read lane each job to `read_one`; completions are posted to the executor after the batch.
 * A write batch stops taking jobs once it has run for `max_batch_duration` (the rest wait
 * for the next one), and transact_urgent() work commits in a batch of its own: so urgent
 * work (the lease renewal) waits at most for one bounded batch, however long the queue.
 * A derived class calls start_lanes() once open and stop_lanes() first in its destructor
 * (the threads call its virtual functions).
 */
class BatchingStore : public Store {
 public:
  explicit BatchingStore(boost::asio::any_io_executor executor) : executor_(std::move(executor)) {}
  BatchingStore(const BatchingStore&) = delete;
  BatchingStore& operator=(const BatchingStore&) = delete;

  boost::asio::any_io_executor get_executor() const noexcept override { return executor_; }
  void transact(Work work, Done done) override;
  void transact_urgent(Work work, Done done) override;
  void read(Work work, Done done) override;
  void flush() override;
  StoreMetrics metrics() const noexcept override;

 protected:
  void start_lanes(std::chrono::milliseconds max_batch_delay, std::chrono::milliseconds max_batch_duration);
  /// Runs and completes everything queued, then ends the threads.
  void stop_lanes();

  /**
   * Runs jobs of `batch` in order in one database transaction, each in its own savepoint,
   * and commits; once `deadline` has passed it starts no further job (the first always
   * runs). Returns how many jobs ran. `results` (one per job, sized) gets each job's own
   * error; `batch_ec` a failure of the whole batch (BEGIN, COMMIT, a lost connection),
   * which then fails every job of `batch`.
   */
  virtual std::size_t write_batch(std::span<StoreJob> batch, std::vector<error_code>& results, error_code& batch_ec,
                                  std::chrono::steady_clock::time_point deadline) = 0;
  /// Runs one read job in a read-only transaction; returns its error.
  virtual error_code read_one(StoreJob& job) = 0;

 private:
  StoreJob job_of(Work work, Done done);
  std::size_t run_writes(std::span<StoreJob> batch);
  std::size_t run_reads(std::span<StoreJob> batch);

  boost::asio::any_io_executor executor_;
  std::atomic<std::uint64_t> transactions_committed_{0};
  std::atomic<std::uint64_t> transactions_failed_{0};
  std::atomic<std::uint64_t> commits_{0};
  std::atomic<std::uint64_t> reads_run_{0};
  std::chrono::milliseconds max_batch_duration_{0};
  StoreLane writes_;
  StoreLane reads_;
};

}  // namespace quartzflow::detail
