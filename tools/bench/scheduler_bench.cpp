// SPDX-License-Identifier: Apache-2.0
// Coordinator fires in one process: N `one`-placement tasks each firing every second,
// every fire recorded PENDING in the store before it is sent (to a sink that accepts at
// once): a SQLite file, or (`postgres:1`) PostgreSQL (QF_BENCH_STORE=sqlite|postgres|both,
// default both; bench_postgres.hpp: QF_BENCH_PG_DSN or a throwaway server). Reports sustained fires/s and the skew
// between the scheduled instant and the send (p50, p99, max). Target: 100,000 fires/s with p99 skew under 5 ms.
#include <algorithm>
#include <filesystem>

#include <unistd.h>

#include <benchmark/benchmark.h>

#include <utility>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <quartzflow/scheduler.hpp>

#include "bench_postgres.hpp"

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

struct Agents : qf::AgentDirectory {
  std::vector<qf::AgentLoad> online;
  std::vector<qf::AgentLoad> eligible_agents(const v1::Task&) override { return online; }
};

struct AcceptingSink : qf::RunSink {
  explicit AcceptingSink(boost::asio::io_context& io) : io_(io) {}
  std::vector<double> skew_ms;
  void send_run(const std::string&, const v1::RunRequest& run, std::function<void(bool)> done) override {
    const auto now = std::chrono::duration<double, std::milli>(std::chrono::system_clock::now().time_since_epoch()).count();
    skew_ms.push_back(now - static_cast<double>(run.scheduled_unix_ms()));
    boost::asio::post(io_, [done] { done(true); });
  }
  boost::asio::io_context& io_;
};

void BM_one_placement_fires_every_second(benchmark::State& state) {
  const auto tasks = static_cast<std::size_t>(state.range(0));
  const bool postgres = state.range(1) != 0;
  const auto path = fs::temp_directory_path() / ("qf-bench-scheduler-" + std::to_string(::getpid()) + ".db");
  boost::asio::io_context io;
  qf::error_code ec;
  std::string detail;
  auto store = postgres ? qf::bench::open_bench_postgres_store(io.get_executor(), detail)
                        : qf::open_sqlite_store(io.get_executor(), {path.string()}, ec, &detail);
  if (!store) {
    state.SkipWithError(("cannot open the store: " + detail).c_str());
    return;
  }
  Agents agents;
  for (int i = 0; i < 10; ++i) agents.online.push_back({"agent-" + std::to_string(i), 0});
  AcceptingSink sink(io);
  qf::Scheduler scheduler(io.get_executor(), *store, agents, sink);
  for (std::size_t i = 0; i < tasks; ++i) {
    v1::Task task;
    task.set_id("t" + std::to_string(i));
    task.set_name(task.id());
    task.set_enabled(true);
    task.set_revision(1);
    task.mutable_shell()->set_script("true");
    task.mutable_placement()->set_mode(v1::PLACEMENT_MODE_ONE);
    task.mutable_schedule()->set_cron("* * * * * *");
    scheduler.upsert_task(task);
  }
  bool ready = false;
  scheduler.start([&] { ready = true; });
  while (!ready) io.run_one();
  io.run_for(1500ms);  // warm up: skip the first partial second
  sink.skew_ms.clear();
  const auto fires_before = scheduler.stats().fires;
  const auto cpu_before = std::clock();
  for (auto _ : state) io.run_for(5s);
  const double cpu_s = static_cast<double>(std::clock() - cpu_before) / CLOCKS_PER_SEC;
  const auto fires = scheduler.stats().fires - fires_before;
  auto& skew = sink.skew_ms;
  std::sort(skew.begin(), skew.end());
  state.counters["fires_per_s"] = static_cast<double>(fires) / (5.0 * static_cast<double>(state.iterations()));
  state.counters["sent_per_s"] = static_cast<double>(skew.size()) / (5.0 * static_cast<double>(state.iterations()));
  if (!skew.empty()) {
    state.counters["skew_p50_ms"] = skew[skew.size() / 2];
    state.counters["skew_p99_ms"] = skew[skew.size() * 99 / 100];
    state.counters["skew_max_ms"] = skew.back();
  }
  state.counters["cpu_cores"] = cpu_s / (5.0 * static_cast<double>(state.iterations()));
  store.reset();
  fs::remove(path);
  fs::remove(path.string() + "-wal");
  fs::remove(path.string() + "-shm");
}
BENCHMARK(BM_one_placement_fires_every_second)
    ->ArgNames({"tasks", "postgres"})
    ->Apply([](benchmark::internal::Benchmark* b) {
      const auto stores = qf::bench::stores_wanted("both");
      for (const int postgres : {0, 1}) {
        if (!(postgres ? stores.postgres : stores.sqlite)) continue;
        b->Args({10'000, postgres});
        b->Args({100'000, postgres});
      }
    })
    ->Iterations(1)
    ->Unit(benchmark::kSecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
