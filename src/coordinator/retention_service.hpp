// SPDX-License-Identifier: Apache-2.0
// The coordinator's retention: executions, logs and audit entries older than their retention
// are deleted in small slices (executions rolled up into daily stats first, the roll-ups kept
// 400 days), optionally archived as gzip-compressed JSON lines per day before they go.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/any_io_executor.hpp>

#include <quartzflow/error.hpp>
#include <quartzflow/store.hpp>

namespace quartzflow::detail {

struct RetentionOptions {
  std::chrono::hours executions{24 * 30};  ///< final executions scheduled before now - this go
  std::chrono::hours logs{24 * 30};        ///< logs last written before now - this go (and with their execution)
  std::chrono::hours audit{24 * 30};       ///< audit entries made before now - this go
  std::chrono::hours rollups{24 * 400};    ///< daily roll-ups of dates before now - this go
  /// Directory of the archive: `executions-DAY.jsonl.gz`, `logs-DAY.jsonl.gz`,
  /// `audit-DAY.jsonl.gz` (UTC days of the rows, protobuf JSON one per line, appended as
  /// further gzip members). Empty: nothing is archived.
  std::string archive_dir;
  std::size_t batch_rows = 1000;                  ///< rows per transaction
  std::chrono::milliseconds pause{100};           ///< between two slices of a pass
  std::chrono::milliseconds interval{3'600'000};  ///< between passes
  std::chrono::milliseconds first_pass{60'000};   ///< from start() to the first pass
};

/// What retention deleted (one pass, or since start).
struct RetentionCounts {
  std::uint64_t executions = 0;
  std::uint64_t logs = 0;  ///< logs purged by age (those of purged executions are not counted)
  std::uint64_t audit = 0;
  std::uint64_t rollups = 0;
  RetentionCounts& operator+=(const RetentionCounts& o) noexcept {
    executions += o.executions;
    logs += o.logs;
    audit += o.audit;
    rollups += o.rollups;
    return *this;
  }
};

/**
 * Runs retention passes over a Store: one slice of at most `batch_rows` rows per
 * transaction (on the store's worker, so scheduling waits for one short transaction at
 * most), `pause` between slices, a pass every `interval`. With several coordinators on one
 * database only the leader purges (`leading`, asked before every slice).
 *
 * Thread safety: use from its executor. Cancellation: stop() ends the pass after the slice
 * in flight; destruction after stop() is safe while a slice is in flight.
 */
class RetentionService {
 public:
  RetentionService(
      boost::asio::any_io_executor executor, Store& store, RetentionOptions options,
      std::function<bool()> leading = [] { return true; });
  ~RetentionService();
  RetentionService(const RetentionService&) = delete;
  RetentionService& operator=(const RetentionService&) = delete;

  void start();
  void stop();
  /// Runs a whole pass now (unless one is running: then `done` waits for it);
  /// `done(ec, counts)` on the executor.
  void run_pass(std::function<void(error_code, RetentionCounts)> done);
  /// Totals since construction.
  RetentionCounts totals() const noexcept;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

/// Appends JSON lines to `dir/<prefix>-<YYYY-MM-DD>.jsonl.gz` (a new gzip member per call);
/// throws quartzflow::error (store_failed) naming the file when it cannot.
void append_archive(const std::string& dir, std::string_view prefix, std::string_view day, const std::string& lines);

}  // namespace quartzflow::detail
