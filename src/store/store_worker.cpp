// SPDX-License-Identifier: Apache-2.0
// The store's lanes (a queue and its thread) and the batching front-end every backend uses.
#include "store_worker.hpp"

#include <pthread.h>

#include <algorithm>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>

#include <quartzflow/log.hpp>

namespace quartzflow::detail {
namespace {

void complete(StoreJob& job, error_code ec) {
  if (job.done) boost::asio::post(job.tracked, [done = std::move(job.done), ec] { done(ec); });
  job.tracked = {};  // the posted completion holds the work from here on
}

}  // namespace

error_code run_store_work(StoreJob& job, StoreTransaction& tx) {
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

void StoreLane::start(const char* thread_name, std::chrono::milliseconds batch_delay, Process process) {
  batch_delay_ = batch_delay;
  process_ = std::move(process);
  thread_ = std::thread([this, thread_name] {
    pthread_setname_np(pthread_self(), thread_name);
    run();
  });
}

void StoreLane::push(StoreJob job) {
  std::lock_guard lock(mutex_);
  const bool was_empty = queue_.empty();
  queue_.push_back(std::move(job));
  ++enqueued_;
  // The thread only sleeps on an empty queue or in its companion wait, which ends by
  // itself: waking it for every call would cost a context switch each.
  if (was_empty) wake_.notify_one();
}

void StoreLane::push_front(StoreJob job) {
  std::lock_guard lock(mutex_);
  queue_.insert(queue_.begin() + static_cast<std::ptrdiff_t>(urgent_), std::move(job));  // urgent jobs in order
  ++urgent_;
  ++enqueued_;
  wake_.notify_one();  // also ends a companion wait: urgent work waits for nobody
}

void StoreLane::flush() {
  std::unique_lock lock(mutex_);
  if (!thread_.joinable()) return;
  const auto target = enqueued_;
  ++flush_waiters_;
  wake_.notify_all();
  progress_.wait(lock, [&] { return finished_ >= target; });
  --flush_waiters_;
}

void StoreLane::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void StoreLane::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping, and everything queued is done
    if (urgent_ == 0 && !stopping_ && flush_waiters_ == 0 && batch_delay_.count() > 0) {
      // Group commit: give concurrent callers a moment to join this batch.
      wake_.wait_until(lock, std::chrono::steady_clock::now() + batch_delay_,
                       [&] { return stopping_ || flush_waiters_ > 0 || urgent_ > 0; });
    }
    // Urgent jobs make a batch of their own, so that they do not wait for the rest of the
    // queue to run before their commit.
    const auto taken = static_cast<std::ptrdiff_t>(urgent_ > 0 ? urgent_ : queue_.size());
    std::vector<StoreJob> batch(std::make_move_iterator(queue_.begin()),
                                std::make_move_iterator(queue_.begin() + taken));
    queue_.erase(queue_.begin(), queue_.begin() + taken);
    urgent_ = 0;
    lock.unlock();
    const auto processed = std::clamp<std::size_t>(process_(batch), 1, batch.size());
    lock.lock();
    finished_ += processed;
    // What the batch left (it ran out of time) goes first again, behind urgent jobs queued
    // meanwhile.
    queue_.insert(queue_.begin() + static_cast<std::ptrdiff_t>(urgent_),
                  std::make_move_iterator(batch.begin() + static_cast<std::ptrdiff_t>(processed)),
                  std::make_move_iterator(batch.end()));
    progress_.notify_all();
  }
}

void BatchingStore::transact(Work work, Done done) { writes_.push(job_of(std::move(work), std::move(done))); }

void BatchingStore::transact_urgent(Work work, Done done) {
  writes_.push_front(job_of(std::move(work), std::move(done)));
}

void BatchingStore::read(Work work, Done done) { reads_.push(job_of(std::move(work), std::move(done))); }

void BatchingStore::flush() {
  writes_.flush();
  reads_.flush();
}

StoreMetrics BatchingStore::metrics() const noexcept {
  return {transactions_committed_.load(std::memory_order_relaxed), transactions_failed_.load(std::memory_order_relaxed),
          commits_.load(std::memory_order_relaxed), reads_run_.load(std::memory_order_relaxed)};
}

void BatchingStore::start_lanes(std::chrono::milliseconds max_batch_delay,
                                std::chrono::milliseconds max_batch_duration) {
  max_batch_duration_ = max_batch_duration;
  writes_.start("qf-store-write", max_batch_delay, [this](std::span<StoreJob> batch) { return run_writes(batch); });
  reads_.start("qf-store-read", std::chrono::milliseconds{0},
               [this](std::span<StoreJob> batch) { return run_reads(batch); });
}

void BatchingStore::stop_lanes() {
  writes_.stop();
  reads_.stop();
}

StoreJob BatchingStore::job_of(Work work, Done done) {
  return {std::move(work), std::move(done),
          boost::asio::prefer(executor_, boost::asio::execution::outstanding_work.tracked)};
}

std::size_t BatchingStore::run_writes(std::span<StoreJob> batch) {
  std::vector<error_code> results(batch.size());
  error_code batch_ec;
  const auto deadline = std::chrono::steady_clock::now() + max_batch_duration_;
  auto ran = std::clamp<std::size_t>(write_batch(batch, results, batch_ec, deadline), 1, batch.size());
  if (batch_ec) {
    ran = batch.size();  // failed, every one
    logger()->error("store: a batch of {} transactions failed: {}", batch.size(), batch_ec.message());
    for (auto& ec : results) ec = batch_ec;
  }
  batch = batch.first(ran);
  results.resize(ran);
  // Counted before the completions run, so that a completion sees its own commit counted.
  const auto committed = static_cast<std::uint64_t>(
      std::count_if(results.begin(), results.end(), [](const error_code& ec) { return !ec; }));
  if (!batch_ec) commits_.fetch_add(1, std::memory_order_relaxed);
  transactions_committed_.fetch_add(committed, std::memory_order_relaxed);
  transactions_failed_.fetch_add(batch.size() - committed, std::memory_order_relaxed);
  for (std::size_t i = 0; i < batch.size(); ++i) complete(batch[i], results[i]);
  return ran;
}

std::size_t BatchingStore::run_reads(std::span<StoreJob> batch) {
  for (auto& job : batch) {
    const auto ec = read_one(job);
    reads_run_.fetch_add(1, std::memory_order_relaxed);
    complete(job, ec);
  }
  return batch.size();
}

}  // namespace quartzflow::detail
