// SPDX-License-Identifier: Apache-2.0
// Coordinator Store benchmarks: history queries (task + status, newest first, pages of 50)
// over N executions, statistics over a task, and upsert throughput in batches and as many
// concurrent group-committed transactions; on SQLite, PostgreSQL or both side by side
// (cases named sqlite/... and postgres/...).
//
//   qf-bench-store [--executions=N] [--db=PATH] [--store=sqlite|postgres|both] [benchmark flags]
//
// N defaults to 1,000,000. SQLite's file defaults to $TMPDIR/qf-bench-<uid>/store-<N>.db and
// is rebuilt only when it does not hold N executions; PostgreSQL's history is built in a
// schema of its own each run (bench_postgres.hpp: QF_BENCH_PG_DSN, else a throwaway server).
// --store defaults to QF_BENCH_STORE, else sqlite.
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <thread>

#include <benchmark/benchmark.h>
#include <fmt/format.h>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/io_context.hpp>

#include <quartzflow/store.hpp>

#include "bench_postgres.hpp"

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;
namespace fs = std::filesystem;

namespace {

constexpr int k_tasks = 100;
constexpr int k_agents = 50;
constexpr int k_groups = 5;
constexpr std::int64_t k_start_ms = 1'767'225'600'000;  // 2026-01-01T00:00:00Z
constexpr std::int64_t k_minute_ms = 60'000;

std::int64_t executions_wanted = 1'000'000;
fs::path db_path;

enum class Backend { sqlite, postgres };
/// PostgreSQL's history schema, built once per run for the query cases.
qf::PostgresStoreOptions postgres_history;

fs::path scratch(const std::string& name) {
  const auto dir = fs::temp_directory_path() / ("qf-bench-" + std::to_string(::getuid()));
  fs::create_directories(dir);
  return dir / name;
}

void remove_db(const fs::path& path) {
  for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(path.string() + suffix);
}

std::unique_ptr<qf::Store> open_store(boost::asio::io_context& io, const fs::path& path) {
  qf::error_code ec;
  std::string detail;
  auto store = qf::open_sqlite_store(io.get_executor(), {path.string(), std::chrono::milliseconds{1}}, ec, &detail);
  if (!store) throw std::runtime_error("cannot open the store: " + detail);
  return store;
}

std::unique_ptr<qf::Store> open_postgres(boost::asio::io_context& io, const qf::PostgresStoreOptions& options) {
  qf::error_code ec;
  std::string detail;
  auto store = qf::open_postgres_store(io.get_executor(), options, ec, &detail);
  if (!store) throw std::runtime_error("cannot open the PostgreSQL store: " + detail);
  return store;
}

/// The history store of `backend` (built by prepare_history).
std::unique_ptr<qf::Store> open_history(boost::asio::io_context& io, Backend backend) {
  return backend == Backend::sqlite ? open_store(io, db_path) : open_postgres(io, postgres_history);
}

/// A new, empty store of `backend` for a write case (SQLite: the file `name`, removed first).
std::unique_ptr<qf::Store> open_empty(boost::asio::io_context& io, Backend backend, const fs::path& path) {
  if (backend == Backend::postgres) return open_postgres(io, qf::bench::BenchPostgres::instance().new_store_options());
  remove_db(path);
  return open_store(io, path);
}

/// CPU time the store's writer thread has used, seconds (from /proc: unlike wall time, it
/// does not depend on what else the machine runs).
double writer_cpu_seconds() {
  for (const auto& entry : fs::directory_iterator("/proc/self/task")) {
    std::ifstream comm(entry.path() / "comm");
    std::string name;
    std::getline(comm, name);
    if (name != "qf-store-write") continue;
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    std::getline(stat, line);
    std::istringstream fields(line.substr(line.rfind(')') + 2));  // from field 3, the state
    std::string skipped;
    for (int field = 3; field <= 13; ++field) fields >> skipped;
    long user_ticks = 0, system_ticks = 0;
    fields >> user_ticks >> system_ticks;
    return static_cast<double>(user_ticks + system_ticks) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  }
  return 0;
}

/// Runs one store call and waits for its completion on this thread.
void wait(boost::asio::io_context& io, const std::function<void(qf::Store::Done)>& call) {
  qf::error_code result;
  call([&](qf::error_code ec) { result = ec; });
  io.restart();
  io.run();
  if (result) throw std::runtime_error("store call failed: " + result.message());
}

std::string task_id(int task) { return fmt::format("task-{:03}", task); }

/// Execution `i`: every minute each of the 100 tasks fires once, on agents in rotation;
/// 90% succeed, 6% fail, 2% time out, 1% are cancelled, 1% skipped.
v1::Execution sample_execution(std::int64_t i) {
  const int task = static_cast<int>(i % k_tasks);
  const std::int64_t minute = i / k_tasks;
  const int agent = static_cast<int>((minute + task) % k_agents);
  const std::int64_t scheduled = k_start_ms + minute * k_minute_ms;
  const std::uint64_t hash = static_cast<std::uint64_t>(i) * 0x9E3779B97F4A7C15ULL >> 40;
  const int roll = static_cast<int>(hash % 100);
  v1::Execution e;
  e.set_execution_id(fmt::format("{}:{}:agent-{:02}", task_id(task), scheduled, agent));
  e.set_task_id(task_id(task));
  e.set_task_name(fmt::format("Task number {}", task));
  e.set_agent_id(fmt::format("agent-{:02}", agent));
  e.set_agent_hostname(fmt::format("host-{:02}.example.com", agent));
  e.set_group_id(fmt::format("group-{}", agent % k_groups));
  e.set_trigger(v1::TRIGGER_TYPE_SCHEDULED);
  e.set_scheduled_unix_ms(scheduled);
  e.set_attempt(1);
  e.set_root_execution_id(e.execution_id());
  const auto status = roll < 90   ? v1::EXECUTION_STATUS_SUCCESS
                      : roll < 96 ? v1::EXECUTION_STATUS_FAILURE
                      : roll < 98 ? v1::EXECUTION_STATUS_TIMEOUT
                      : roll < 99 ? v1::EXECUTION_STATUS_CANCELLED
                                  : v1::EXECUTION_STATUS_SKIPPED;
  e.set_status(status);
  if (status != v1::EXECUTION_STATUS_SKIPPED) {
    const auto duration = static_cast<std::int64_t>(hash % 30'000);
    e.set_started_unix_ms(scheduled + 5);
    e.set_ended_unix_ms(scheduled + 5 + duration);
    e.set_duration_ms(duration);
  }
  if (status == v1::EXECUTION_STATUS_SUCCESS) {
    e.set_exit_code(0);
    e.set_output("backup complete: 1234 files, 56 MB\n");
  } else if (status == v1::EXECUTION_STATUS_FAILURE) {
    e.set_exit_code(static_cast<int>(1 + hash % 3));
    e.set_failure_reason(fmt::format("exit {}", e.exit_code()));
    e.set_error_message("process exited with status " + std::to_string(e.exit_code()));
  } else if (status == v1::EXECUTION_STATUS_TIMEOUT) {
    e.set_failure_reason("timeout");
  }
  return e;
}

std::uint64_t stored_executions(boost::asio::io_context& io, qf::Store& store) {
  std::uint64_t total = 0;
  wait(io, [&](qf::Store::Done done) {
    store.read(
        [&](qf::StoreTransaction& tx, qf::error_code&) {
          v1::ListExecutionsRequest all;
          all.set_page_size(1);
          total = tx.list_executions(all).total;
        },
        std::move(done));
  });
  return total;
}

void fill_history(boost::asio::io_context& io, qf::Store& store, const std::string& where);

/// Builds the SQLite history file unless it already holds the executions wanted.
void prepare_history(Backend backend) {
  boost::asio::io_context io;
  if (backend == Backend::postgres) {
    postgres_history = qf::bench::BenchPostgres::instance().new_store_options();
    auto store = open_postgres(io, postgres_history);
    fill_history(io, *store, "PostgreSQL schema " + postgres_history.schema);
    return;
  }
  if (fs::exists(db_path)) {
    auto store = open_store(io, db_path);
    if (stored_executions(io, *store) == static_cast<std::uint64_t>(executions_wanted)) {
      std::cerr << "reusing " << db_path << " (" << executions_wanted << " executions)\n";
      return;
    }
  }
  remove_db(db_path);
  auto store = open_store(io, db_path);
  fill_history(io, *store, db_path.string());
  std::cerr << fmt::format("{:.0f} MB\n", static_cast<double>(fs::file_size(db_path)) / 1e6);
}

void fill_history(boost::asio::io_context& io, qf::Store& store, const std::string& where) {
  std::cerr << "building " << where << " with " << executions_wanted << " executions...\n";
  const auto started = std::chrono::steady_clock::now();
  constexpr std::int64_t k_chunk = 20'000;
  for (std::int64_t first = 0; first < executions_wanted; first += k_chunk) {
    auto chunk = std::make_shared<std::vector<v1::Execution>>();
    for (auto i = first; i < std::min(first + k_chunk, executions_wanted); ++i) chunk->push_back(sample_execution(i));
    wait(io, [&](qf::Store::Done done) {
      store.transact(
          [chunk](qf::StoreTransaction& tx, qf::error_code&) {
            for (const auto& e : *chunk) tx.upsert_execution(e);
          },
          std::move(done));
    });
    if ((first / k_chunk) % 50 == 49)
      std::cerr << "  " << first + k_chunk << " after "
                << std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started).count()
                << " s\n";
  }
  const auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::cerr << fmt::format("built in {:.1f} s ({:.0f} upserts/s)\n", seconds,
                           static_cast<double>(executions_wanted) / seconds);
}

/// Times one read per iteration (store thread hand-off included) and reports percentiles.
void run_queries(benchmark::State& state, Backend backend, const std::function<void(qf::StoreTransaction&)>& query) {
  boost::asio::io_context io;
  auto store = open_history(io, backend);
  std::vector<double> ms;
  for (auto _ : state) {
    const auto start = std::chrono::steady_clock::now();
    wait(io, [&](qf::Store::Done done) {
      store->read([&](qf::StoreTransaction& tx, qf::error_code&) { query(tx); }, std::move(done));
    });
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  if (ms.empty()) return;
  state.counters["p50_ms"] = ms[ms.size() / 2];
  state.counters["p99_ms"] = ms[std::min(ms.size() - 1, ms.size() * 99 / 100)];
  state.counters["max_ms"] = ms.back();
}

/// The console's history page: one task, one status, newest first, 50 a page, with the total.
void BM_history_task_and_status(benchmark::State& state, Backend backend) {
  const auto status = static_cast<v1::ExecutionStatus>(state.range(0));
  const auto page = static_cast<std::uint32_t>(state.range(1));
  int task = 0;
  std::uint64_t total = 0;
  run_queries(state, backend, [&](qf::StoreTransaction& tx) {
    v1::ListExecutionsRequest request;
    request.set_task_id(task_id(task++ % k_tasks));
    request.add_status(status);
    request.set_page(page);
    request.set_page_size(50);
    const auto listing = tx.list_executions(request);
    total = listing.total;
    benchmark::DoNotOptimize(listing.items.data());
  });
  state.counters["matching"] = static_cast<double>(total);
}

/// Other history pages: one task (any status), one agent over a day, every failure.
void BM_history_other(benchmark::State& state, Backend backend) {
  const auto kind = state.range(0);
  int n = 0;
  std::uint64_t total = 0;
  const auto minutes = executions_wanted / k_tasks;
  run_queries(state, backend, [&](qf::StoreTransaction& tx) {
    v1::ListExecutionsRequest request;
    request.set_page_size(50);
    if (kind == 0) request.set_task_id(task_id(n % k_tasks));
    if (kind == 1) {
      request.set_agent_id(fmt::format("agent-{:02}", n % k_agents));
      const auto day_end = k_start_ms + minutes * k_minute_ms;
      request.set_from_unix_ms(day_end - 86'400'000);
      request.set_to_unix_ms(day_end);
    }
    if (kind == 2) {
      request.add_status(v1::EXECUTION_STATUS_FAILURE);
      request.add_status(v1::EXECUTION_STATUS_TIMEOUT);
    }
    ++n;
    const auto listing = tx.list_executions(request);
    total = listing.total;
    benchmark::DoNotOptimize(listing.items.data());
  });
  state.counters["matching"] = static_cast<double>(total);
}

/// Statistics of one task over its last 7 days, per day.
void BM_stats_task_7_days(benchmark::State& state, Backend backend) {
  int task = 0;
  const auto end = k_start_ms + (executions_wanted / k_tasks) * k_minute_ms;
  run_queries(state, backend, [&](qf::StoreTransaction& tx) {
    v1::StatsQuery query;
    query.set_task_id(task_id(task++ % k_tasks));
    query.set_to_unix_ms(end);
    query.set_range("7d");
    query.set_granularity(v1::STATS_GRANULARITY_DAY);
    const auto stats = tx.stats(query);
    benchmark::DoNotOptimize(stats.summary().total());
  });
}

/// Upserts in transactions of `batch` records each, one transaction in flight: records/s.
void BM_upsert_batches(benchmark::State& state, Backend backend) {
  const auto batch = state.range(0);
  const auto path = scratch("store-upserts.db");
  boost::asio::io_context io;
  auto store = open_empty(io, backend, path);
  std::int64_t next = 0;
  const double cpu_before = writer_cpu_seconds();
  for (auto _ : state) {
    auto chunk = std::make_shared<std::vector<v1::Execution>>();
    for (std::int64_t i = 0; i < batch; ++i) chunk->push_back(sample_execution(next++));
    wait(io, [&](qf::Store::Done done) {
      store->transact(
          [chunk](qf::StoreTransaction& tx, qf::error_code&) {
            for (const auto& e : *chunk) tx.upsert_execution(e);
          },
          std::move(done));
    });
  }
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["writer_cpu_us_per_record"] =
      (writer_cpu_seconds() - cpu_before) * 1e6 / static_cast<double>(std::max<std::int64_t>(next, 1));
  store.reset();
  if (backend == Backend::sqlite) remove_db(path);
}

/// `in_flight` independent transactions of one upsert each, queued at once and
/// group-committed by the store: records/s and commits per iteration.
void BM_upsert_concurrent(benchmark::State& state, Backend backend) {
  const auto in_flight = state.range(0);
  const auto path = scratch("store-concurrent.db");
  boost::asio::io_context io;
  auto store = open_empty(io, backend, path);
  std::int64_t next = 0;
  const double cpu_before = writer_cpu_seconds();
  for (auto _ : state) {
    std::int64_t completed = 0;
    for (std::int64_t i = 0; i < in_flight; ++i) {
      auto e = sample_execution(next++);
      store->transact([e](qf::StoreTransaction& tx, qf::error_code&) { tx.upsert_execution(e); },
                      [&](qf::error_code ec) {
                        if (!ec) ++completed;
                      });
    }
    io.restart();
    io.run();
    if (completed != in_flight) state.SkipWithError("an upsert failed");
  }
  state.SetItemsProcessed(state.iterations() * in_flight);
  state.counters["writer_cpu_us_per_record"] =
      (writer_cpu_seconds() - cpu_before) * 1e6 / static_cast<double>(std::max<std::int64_t>(next, 1));
  state.counters["commits_per_iteration"] = static_cast<double>(store->metrics().commits) /
                                            static_cast<double>(std::max<std::int64_t>(state.iterations(), 1));
  store.reset();
  if (backend == Backend::sqlite) remove_db(path);
}

}  // namespace

int main(int argc, char** argv) {
  // Our flags first; the rest belongs to Google Benchmark.
  std::vector<char*> rest{argv[0]};
  auto stores = qf::bench::stores_wanted("sqlite");
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.rfind("--executions=", 0) == 0)
      executions_wanted = std::stoll(std::string(arg.substr(std::strlen("--executions="))));
    else if (arg.rfind("--store=", 0) == 0) stores = qf::bench::parse_store_choice(arg.substr(std::strlen("--store=")));
    else if (arg.rfind("--db=", 0) == 0)
      db_path = std::string(arg.substr(std::strlen("--db=")));
    else
      rest.push_back(argv[i]);
  }
  if (db_path.empty()) db_path = scratch(fmt::format("store-{}.db", executions_wanted));
  int rest_count = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_count, rest.data());
  if (benchmark::ReportUnrecognizedArguments(rest_count, rest.data())) return 1;

  for (const auto backend : {Backend::sqlite, Backend::postgres}) {
    if (!(backend == Backend::sqlite ? stores.sqlite : stores.postgres)) continue;
    const std::string prefix = backend == Backend::sqlite ? "sqlite/" : "postgres/";
    prepare_history(backend);
    benchmark::RegisterBenchmark((prefix + "history/task+status").c_str(), BM_history_task_and_status, backend)
        ->ArgNames({"status", "page"})
        ->Args({v1::EXECUTION_STATUS_SUCCESS, 1})
        ->Args({v1::EXECUTION_STATUS_FAILURE, 1})
        ->Args({v1::EXECUTION_STATUS_SUCCESS, 20})
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((prefix + "history/other").c_str(), BM_history_other, backend)
        ->ArgName("task0_agentday1_failures2")
        ->DenseRange(0, 2)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((prefix + "stats/task_7_days_per_day").c_str(), BM_stats_task_7_days, backend)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((prefix + "upsert/batch").c_str(), BM_upsert_batches, backend)
        ->ArgName("records")
        ->Arg(1)
        ->Arg(100)
        ->Arg(1000)
        ->UseRealTime();
    benchmark::RegisterBenchmark((prefix + "upsert/concurrent").c_str(), BM_upsert_concurrent, backend)
        ->ArgName("in_flight")
        ->Arg(10)
        ->Arg(100)
        ->Arg(1000)
        ->UseRealTime();
  }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
