// SPDX-License-Identifier: Apache-2.0
// Retention under load: a coordinator Store holding N old executions is purged by the
// RetentionService (slices of --batch rows, --pause between them) while fires go on at a
// steady --rate; the fire skew (a fire's record committed vs. when it was due) is measured
// first without purging, then while purging, and both are reported side by side.
//
//   qf-bench-retention [--executions=N] [--rate=R] [--seconds=S] [--batch=B] [--pause-ms=P]
//                      [--store=sqlite|postgres] [--db=PATH]
//
// A fire is what the coordinator's scheduler writes when a task falls due: the PENDING record
// of the run and the task's fire state, one transaction. N defaults to 1,000,000 (10,000,000
// takes ~10 min to build here); the SQLite file is rebuilt each run.
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <quartzflow/store.hpp>

#include "bench_postgres.hpp"
#include "common/clock.hpp"
#include "coordinator/retention_service.hpp"

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::int64_t k_day_ms = 86'400'000;
constexpr int k_tasks = 200;

v1::Execution old_execution(std::int64_t i, std::int64_t base_ms) {
  v1::Execution e;
  e.set_execution_id(fmt::format("old-{}", i));
  e.set_task_id(fmt::format("task-{}", i % k_tasks));
  e.set_task_name(fmt::format("task {}", i % k_tasks));
  e.set_agent_id(fmt::format("agent-{}", i % 50));
  e.set_status(i % 10 == 0 ? v1::EXECUTION_STATUS_FAILURE : v1::EXECUTION_STATUS_SUCCESS);
  e.set_trigger(v1::TRIGGER_TYPE_SCHEDULED);
  e.set_scheduled_unix_ms(base_ms + i * 250);  // four a second, oldest first
  e.set_started_unix_ms(e.scheduled_unix_ms());
  e.set_ended_unix_ms(e.scheduled_unix_ms() + 1200);
  e.set_duration_ms(1200);
  e.set_attempt(1);
  e.set_output("done\n");
  return e;
}

/// Runs handlers until `done()`; an io_context out of work stops and is restarted.
template <typename Pred>
void run_until(boost::asio::io_context& io, Pred done) {
  while (!done()) {
    if (io.stopped()) io.restart();
    io.run_one_for(std::chrono::milliseconds{100});
  }
}

struct Skew {
  std::vector<double> ms;
  std::string summary() {
    if (ms.empty()) return "no fires";
    std::sort(ms.begin(), ms.end());
    const auto at = [&](double q) { return ms[std::min(ms.size() - 1, static_cast<std::size_t>(q * ms.size()))]; };
    return fmt::format("{} fires, skew p50 {:.2f} ms, p99 {:.2f} ms, p99.9 {:.2f} ms, max {:.2f} ms", ms.size(),
                       at(0.5), at(0.99), at(0.999), ms.back());
  }
};

/// Fires at `rate` per second for `seconds` (or until `until()` is true when given), each a
/// transaction; returns the skew of each fire's commit against its due time.
Skew fire_steadily(boost::asio::io_context& io, qf::Store& store, int rate, double seconds,
                   const std::function<bool()>& until, std::int64_t& fire_seq) {
  Skew skew;
  const auto start = Clock::now();
  const auto period = std::chrono::nanoseconds{1'000'000'000 / rate};
  std::int64_t issued = 0;
  std::int64_t completed = 0;
  bool done_firing = false;
  boost::asio::steady_timer tick(io);
  std::function<void()> arm = [&] {
    tick.expires_after(std::chrono::milliseconds{1});
    tick.async_wait([&](const qf::error_code&) {
      const auto now = Clock::now();
      const bool time_up = until ? until() : now - start >= std::chrono::duration<double>(seconds);
      if (time_up) {
        done_firing = true;
        return;
      }
      while (start + issued * period <= now) {
        const auto due = start + issued * period;
        ++issued;
        const auto seq = fire_seq++;
        store.transact(
            [seq](qf::StoreTransaction& tx, qf::error_code&) {
              v1::Execution e;
              const auto now_ms = qf::detail::now_unix_ms();
              e.set_execution_id(fmt::format("fire-{}", seq));
              e.set_task_id(fmt::format("task-{}", seq % k_tasks));
              e.set_agent_id(fmt::format("agent-{}", seq % 50));
              e.set_status(v1::EXECUTION_STATUS_PENDING);
              e.set_trigger(v1::TRIGGER_TYPE_SCHEDULED);
              e.set_scheduled_unix_ms(now_ms);
              e.set_attempt(1);
              tx.upsert_execution(e);
              tx.put_fire_state(e.task_id(), {qf::Instant{std::chrono::seconds{now_ms / 1000}}, std::nullopt});
            },
            [&, due](qf::error_code ec) {
              ++completed;
              if (ec) std::cerr << "fire failed: " << ec.message() << "\n";
              skew.ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - due).count());
            });
      }
      arm();
    });
  };
  arm();
  run_until(io, [&] { return done_firing && completed == issued; });
  return skew;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qf-bench-retention: the fire skew without and while purging a large history"};
  std::int64_t executions = 1'000'000;
  int rate = 1000;
  double seconds = 20;
  std::size_t batch = 1000;
  int pause_ms = 20;
  std::string backend = "sqlite";
  std::string db;
  app.add_option("--executions", executions, "old executions to purge")->capture_default_str();
  app.add_option("--rate", rate, "fires per second")->check(CLI::Range(1, 100000))->capture_default_str();
  app.add_option("--seconds", seconds, "length of the baseline phase")->capture_default_str();
  app.add_option("--batch", batch, "rows per purge transaction")->capture_default_str();
  app.add_option("--pause-ms", pause_ms, "pause between purge slices")->capture_default_str();
  app.add_option("--store", backend, "sqlite or postgres")->check(CLI::IsMember({"sqlite", "postgres"}));
  app.add_option("--db", db, "SQLite file (default $TMPDIR/qf-bench-<uid>/retention.db)");
  CLI11_PARSE(app, argc, argv);

  boost::asio::io_context io;
  std::unique_ptr<qf::Store> store;
  std::string detail;
  qf::error_code ec;
  if (backend == "sqlite") {
    if (db.empty()) {
      const auto dir = fs::temp_directory_path() / ("qf-bench-" + std::to_string(::getuid()));
      fs::create_directories(dir);
      db = (dir / "retention.db").string();
    }
    for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(db + suffix);
    store = qf::open_sqlite_store(io.get_executor(), {db, std::chrono::milliseconds{1}}, ec, &detail);
  } else {
    store = qf::bench::open_bench_postgres_store(io.get_executor(), detail);
  }
  if (!store) {
    std::cerr << "cannot open the store: " << detail << "\n";
    return 1;
  }

  // The history to purge: 60 days old and older.
  const auto build_start = Clock::now();
  const std::int64_t base_ms = qf::detail::now_unix_ms() - 60 * k_day_ms - executions * 250;
  constexpr std::int64_t k_per_tx = 20'000;
  std::int64_t built = 0;
  while (built < executions) {
    const auto from = built;
    const auto to = std::min(executions, built + k_per_tx);
    bool done = false;
    store->transact(
        [from, to, base_ms](qf::StoreTransaction& tx, qf::error_code&) {
          for (auto i = from; i < to; ++i) tx.upsert_execution(old_execution(i, base_ms));
        },
        [&](qf::error_code e) {
          if (e) std::cerr << "build failed: " << e.message() << "\n";
          done = true;
        });
    run_until(io, [&] { return done; });
    built = to;
  }
  store->transact([](qf::StoreTransaction& tx, qf::error_code&) { tx.purge_execution_changes(INT64_MAX, 100'000'000); },
                  [](qf::error_code) {});
  store->flush();
  io.restart();
  io.poll();
  const double build_s = std::chrono::duration<double>(Clock::now() - build_start).count();
  std::cout << fmt::format("store: {}; built {} old executions in {:.1f} s\n", backend, executions, build_s);

  std::int64_t fire_seq = 0;
  auto baseline = fire_steadily(io, *store, rate, seconds, {}, fire_seq);
  std::cout << fmt::format("without purging ({} fires/s, {:.0f} s): {}\n", rate, seconds, baseline.summary());

  qf::detail::RetentionOptions options;
  options.executions = options.logs = options.audit = std::chrono::hours{24 * 30};
  options.batch_rows = batch;
  options.pause = std::chrono::milliseconds{pause_ms};
  qf::detail::RetentionService retention(io.get_executor(), *store, options);
  bool purged = false;
  qf::detail::RetentionCounts counts;
  const auto purge_start = Clock::now();
  double purge_s = 0;
  retention.run_pass([&](qf::error_code e, qf::detail::RetentionCounts c) {
    if (e) std::cerr << "purge failed: " << e.message() << "\n";
    counts = c;
    purged = true;
    purge_s = std::chrono::duration<double>(Clock::now() - purge_start).count();
  });
  auto during = fire_steadily(
      io, *store, rate, 0, [&] { return purged; }, fire_seq);
  std::cout << fmt::format("while purging  ({} fires/s, {:.1f} s): {}\n", rate, purge_s, during.summary());
  std::cout << fmt::format("purged {} executions in {:.1f} s ({:.0f} rows/s; slices of {}, {} ms pause)\n",
                           counts.executions, purge_s, counts.executions / std::max(purge_s, 1e-9), batch, pause_ms);
  store.reset();
  if (backend == "sqlite")
    for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(db + suffix);
  return counts.executions == static_cast<std::uint64_t>(executions) ? 0 : 1;
}
