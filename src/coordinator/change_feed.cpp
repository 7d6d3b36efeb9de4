// SPDX-License-Identifier: Apache-2.0
// ExecutionChangeFeed: a standby's poll of the Store's execution change feed while it has
// listeners, the cursor over seqs that commit out of order, and the leader's purge.
#include "change_feed.hpp"

#include <boost/asio/steady_timer.hpp>

#include <quartzflow/execution_status.hpp>
#include <quartzflow/log.hpp>

#include "../common/clock.hpp"

namespace quartzflow::detail {

namespace asio = boost::asio;

namespace {

constexpr std::chrono::seconds k_purge_interval{10};
/// Changes removed per purge transaction; a full purge is followed by the next at once.
constexpr std::size_t k_purge_rows = 10'000;

std::int64_t now_mono_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

std::vector<bool> ChangeFeedCursor::accept(const std::vector<std::int64_t>& seqs, std::int64_t now_ms) {
  std::vector<bool> fresh;
  fresh.reserve(seqs.size());
  for (const auto seq : seqs) {
    if (seq > high_) {
      // The seqs skipped on the way may belong to transactions that commit later.
      for (std::int64_t missing = high_ + 1; missing < seq && holes_.size() < max_holes_; ++missing)
        holes_.emplace(missing, now_ms);
      high_ = seq;
      fresh.push_back(true);
    } else {
      fresh.push_back(holes_.erase(seq) > 0);
    }
  }
  std::erase_if(holes_, [&](const auto& hole) { return now_ms - hole.second >= hole_wait_ms_; });
  return fresh;
}

v1::Execution execution_as_of(v1::Execution current, v1::ExecutionStatus status) {
  if (current.status() == status) return current;
  current.set_status(status);
  if (is_final(status)) return current;
  current.clear_ended_unix_ms();
  current.clear_duration_ms();
  current.clear_exit_code();
  current.clear_signal();
  current.clear_error_message();
  current.clear_failure_reason();
  current.clear_http_status();
  current.clear_output_bytes();
  current.clear_output_truncated();
  current.clear_cancelled_by();
  current.clear_skip_reason();
  current.clear_skip_detail();
  if (status == v1::EXECUTION_STATUS_PENDING) current.clear_started_unix_ms();
  return current;
}

struct ExecutionChangeFeed::Impl : std::enable_shared_from_this<ExecutionChangeFeed::Impl> {
  Impl(asio::any_io_executor ex, Store& s, ChangeFeedOptions o, ChangeFeedHooks h)
      : executor(ex), store(s), options(o), hooks(std::move(h)), timer(ex) {}

  asio::any_io_executor executor;
  Store& store;
  ChangeFeedOptions options;
  ChangeFeedHooks hooks;
  asio::steady_timer timer;
  ChangeFeedCursor cursor;
  bool reading = false;    // the cursor is positioned: changes after it are published
  bool in_flight = false;  // a read or the purge is under way
  bool stopped = true;
  std::uint64_t generation = 0;  // +1 whenever reading stops: an old read publishes nothing
  std::chrono::steady_clock::time_point next_purge = std::chrono::steady_clock::now() + k_purge_interval;

  void arm(std::chrono::milliseconds after) {
    if (stopped) return;
    timer.expires_after(after);
    timer.async_wait([weak = weak_from_this()](const error_code& ec) {
      auto self = weak.lock();
      if (!self || ec) return;
      self->tick();
    });
  }

  void tick() {
    if (in_flight) return arm(options.poll);
    const bool leading = hooks.leading && hooks.leading();
    if (leading) {
      if (reading) stop_reading();
      if (std::chrono::steady_clock::now() >= next_purge) {
        next_purge = std::chrono::steady_clock::now() + k_purge_interval;
        return purge();
      }
      return arm(options.poll);
    }
    if (!hooks.wanted || !hooks.wanted()) {
      if (reading) stop_reading();
      return arm(options.poll);
    }
    if (!reading) return position();
    read();
  }

  void stop_reading() {
    reading = false;
    ++generation;
  }

  /// Starts at the newest change: what happened before anyone listened is not replayed.
  void position() {
    in_flight = true;
    auto latest = std::make_shared<std::int64_t>(0);
    store.read([latest](StoreTransaction& tx, error_code&) { *latest = tx.latest_execution_change(); },
               [weak = weak_from_this(), latest, of = generation](error_code ec) {
                 auto self = weak.lock();
                 if (!self) return;
                 self->in_flight = false;
                 if (!ec && of == self->generation) {
                   self->cursor.start_at(*latest);
                   self->reading = true;
                 }
                 self->arm(self->options.poll);
               });
  }

  void read() {
    in_flight = true;
    auto changes = std::make_shared<std::vector<ExecutionChange>>();
    store.read([changes, after = cursor.after(), holes = cursor.holes(), limit = options.batch](
                   StoreTransaction& tx, error_code&) { *changes = tx.execution_changes(after, holes, limit); },
               [weak = weak_from_this(), changes, of = generation](error_code ec) {
                 auto self = weak.lock();
                 if (!self) return;
                 self->in_flight = false;
                 if (ec || of != self->generation || self->stopped) return self->arm(self->options.poll);
                 std::vector<std::int64_t> seqs;
                 seqs.reserve(changes->size());
                 for (const auto& c : *changes) seqs.push_back(c.seq);
                 const auto fresh = self->cursor.accept(seqs, now_mono_ms());
                 for (std::size_t i = 0; i < changes->size(); ++i) {
                   if (!fresh[i] || !self->hooks.publish) continue;
                   auto& c = (*changes)[i];
                   self->hooks.publish(execution_as_of(std::move(c.record), c.status));
                 }
                 // A full batch: more are waiting, read on at once.
                 self->arm(changes->size() >= self->options.batch ? std::chrono::milliseconds{0} : self->options.poll);
               });
  }

  void purge() {
    in_flight = true;
    const std::int64_t before = now_unix_ms() - options.keep.count();
    auto purged = std::make_shared<std::size_t>(0);
    store.transact([before, purged](StoreTransaction& tx,
                                    error_code&) { *purged = tx.purge_execution_changes(before, k_purge_rows); },
                   [weak = weak_from_this(), purged](error_code ec) {
                     if (ec) logger()->warn("change feed: purging old changes failed: {}", ec.message());
                     auto self = weak.lock();
                     if (!self) return;
                     self->in_flight = false;
                     // A backlog (a busy cluster): the next slice soon, not in one long transaction.
                     if (*purged >= k_purge_rows) self->next_purge = std::chrono::steady_clock::now();
                     self->arm(self->options.poll);
                   });
  }
};

ExecutionChangeFeed::ExecutionChangeFeed(asio::any_io_executor executor, Store& store, ChangeFeedOptions options,
                                         ChangeFeedHooks hooks)
    : impl_(std::make_shared<Impl>(executor, store, options, std::move(hooks))) {}

ExecutionChangeFeed::~ExecutionChangeFeed() {
  impl_->stopped = true;
  impl_->timer.cancel();
}

void ExecutionChangeFeed::start() {
  if (!impl_->stopped) return;
  impl_->stopped = false;
  impl_->arm(std::chrono::milliseconds{0});
}

void ExecutionChangeFeed::stop() {
  impl_->stopped = true;
  impl_->stop_reading();
  impl_->timer.cancel();
}

}  // namespace quartzflow::detail
