// SPDX-License-Identifier: Apache-2.0
// Events from the whole cluster: a standby reads the Store's execution change feed (every
// insert or update of an execution, numbered by seq) and hands each change to its observers,
// so its WebSocket clients see the runs the leader handles. The leader publishes directly
// and purges the feed.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/any_io_executor.hpp>

#include <quartzflow/store.hpp>

namespace quartzflow::detail {

/**
 * Which changes of the feed a reader has taken, sans-I/O. A seq is assigned when the writing
 * transaction inserts the row, not when it commits: on PostgreSQL a later seq may be visible
 * before an earlier one (two writers), and a rolled-back transaction leaves a seq unused.
 * The cursor asks for the seqs above the highest one taken and again for the gaps below it
 * (holes), until a hole is filled or `hole_wait` has passed since it was seen.
 */
class ChangeFeedCursor {
 public:
  explicit ChangeFeedCursor(std::int64_t hole_wait_ms = 2'000, std::size_t max_holes = 1'000)
      : hole_wait_ms_(hole_wait_ms), max_holes_(max_holes) {}

  /// Nothing at or below `seq` is wanted (a reader starts at the newest change).
  void start_at(std::int64_t seq) {
    high_ = seq;
    holes_.clear();
  }
  /// Ask for the seqs above this ...
  std::int64_t after() const noexcept { return high_; }
  /// ... and for these.
  std::vector<std::int64_t> holes() const {
    std::vector<std::int64_t> out;
    out.reserve(holes_.size());
    for (const auto& [seq, seen] : holes_) out.push_back(seq);
    return out;
  }
  /**
   * The seqs a read returned (ascending) at `now_ms` (monotonic): returns, for each, whether it
   * is new (to publish). Holes older than `hole_wait` are given up.
   */
  std::vector<bool> accept(const std::vector<std::int64_t>& seqs, std::int64_t now_ms);

 private:
  std::int64_t hole_wait_ms_;
  std::size_t max_holes_;
  std::int64_t high_ = 0;
  std::map<std::int64_t, std::int64_t> holes_;  // seq -> when first missed (monotonic ms)
};

/**
 * The execution as it was when a change wrote `status`: `current` itself when it still has
 * that status; else (the run moved on before the reader looked) `current` with that status
 * and without the fields of the later states (end, duration, exit, errors, skip reasons, and
 * for PENDING the start).
 */
v1::Execution execution_as_of(v1::Execution current, v1::ExecutionStatus status);

struct ChangeFeedHooks {
  /// True while this coordinator leads: it publishes its own records then, and purges.
  std::function<bool()> leading;
  /// True while someone listens (a standby reads the feed only then).
  std::function<bool()> wanted;
  /// One change, in seq order.
  std::function<void(const v1::Execution&)> publish;
};

struct ChangeFeedOptions {
  std::chrono::milliseconds poll{250};
  std::size_t batch = 500;                 ///< changes per read; a full batch reads again at once
  std::chrono::milliseconds keep{60'000};  ///< the leader purges older changes (every 10 s)
};

/**
 * Thread safety: not thread-safe; use from its executor. Cancellation: `stop` ends the timer;
 * a read in flight publishes nothing after it.
 */
class ExecutionChangeFeed {
 public:
  ExecutionChangeFeed(boost::asio::any_io_executor executor, Store& store, ChangeFeedOptions options,
                      ChangeFeedHooks hooks);
  ~ExecutionChangeFeed();
  ExecutionChangeFeed(const ExecutionChangeFeed&) = delete;
  ExecutionChangeFeed& operator=(const ExecutionChangeFeed&) = delete;

  void start();
  void stop();

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace quartzflow::detail
