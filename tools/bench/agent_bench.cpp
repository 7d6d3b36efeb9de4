// SPDX-License-Identifier: Apache-2.0
// Agent benchmarks: LocalStore write latency under a steady 1,000 runs/s, `qfctl local
// stats` over 7 days of 100,000 runs a day, engine overhead per trivial plugin run, and how
// many concurrent `sleep 30` shell runs one engine holds, and memory and stop time when
// scheduled fires outrun the store (back-pressure).
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <thread>

#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <benchmark/benchmark.h>
#include <date/date.h>

#include <utility>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <quartzflow/agent_dispatcher.hpp>
#include <quartzflow/task_engine.hpp>
#include <quartzflow/transport.hpp>

namespace qf = quartzflow;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

fs::path scratch(const std::string& name) {
  const auto dir = fs::temp_directory_path() / ("qf-bench-" + std::to_string(::getuid()));
  fs::create_directories(dir);
  return dir / name;
}

std::unique_ptr<qf::LocalStore> open_store(boost::asio::io_context& io, const fs::path& path, bool fresh,
                                           bool fsync_each_commit = false) {
  if (fresh) {
    fs::remove(path);
    fs::remove(path.string() + "-wal");
    fs::remove(path.string() + "-shm");
  }
  qf::LocalStoreOptions options;
  options.path = path.string();
  options.fsync_each_commit = fsync_each_commit;
  qf::error_code ec;
  std::string detail;
  auto store = qf::LocalStore::open(io.get_executor(), options, ec, &detail);
  if (!store) throw std::runtime_error("cannot open store: " + detail);
  return store;
}

qf::v1::Execution sample_record(const std::string& task, std::int64_t scheduled_ms, int i) {
  qf::v1::Execution r;
  r.set_execution_id(task + ":" + std::to_string(scheduled_ms) + ":bench-agent");
  r.set_task_id(task);
  r.set_task_name(task);
  r.set_agent_id("bench-agent");
  r.set_trigger(qf::v1::TRIGGER_TYPE_SCHEDULED);
  r.set_status(i % 10 == 0 ? qf::v1::EXECUTION_STATUS_FAILURE : qf::v1::EXECUTION_STATUS_SUCCESS);
  r.set_scheduled_unix_ms(scheduled_ms);
  r.set_started_unix_ms(scheduled_ms + 3);
  r.set_ended_unix_ms(scheduled_ms + 3 + i % 500);
  r.set_duration_ms(i % 500);
  r.set_exit_code(i % 10 == 0 ? 1 : 0);
  r.set_attempt(1);
  r.set_output("ok\n");
  return r;
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// Durable record latency (enqueue -> commit -> completion) at a steady 1,000 writes/s;
/// argument 1 = fsync each commit (power-loss durability), 0 = the default.
void BM_record_latency_at_1000_per_s(benchmark::State& state) {
  boost::asio::io_context io;
  auto store = open_store(io, scratch("latency.db"), true, state.range(0) != 0);
  std::vector<double> latencies_us;
  std::int64_t base = now_ms() - 86'400'000;
  int i = 0;
  for (auto _ : state) {
    // One second of traffic: 1,000 writes paced 1 ms apart on the io_context's timer.
    latencies_us.clear();
    boost::asio::steady_timer pace(io);
    int sent = 0;
    int done = 0;
    std::function<void()> send = [&] {
      const auto start = std::chrono::steady_clock::now();
      ++i;
      store->async_record(sample_record("latency", base + i * 1000, i), "ok\n", [&, start](qf::error_code) {
        latencies_us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count());
        ++done;
      });
      if (++sent < 1000) {
        pace.expires_at(pace.expiry() + 1ms);
        pace.async_wait([&](const qf::error_code&) { send(); });
      }
    };
    pace.expires_after(0ms);
    pace.async_wait([&](const qf::error_code&) { send(); });
    while (done < 1000) {
      if (io.stopped()) io.restart();
      io.run_one_for(10ms);
    }
  }
  std::sort(latencies_us.begin(), latencies_us.end());
  state.counters["p50_us"] = latencies_us[latencies_us.size() / 2];
  state.counters["p99_us"] = latencies_us[latencies_us.size() * 99 / 100];
  state.counters["max_us"] = latencies_us.back();
}
BENCHMARK(BM_record_latency_at_1000_per_s)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();

/// The 7-day stats query of `qfctl local stats --days 7` over 100,000 runs a day (20 tasks).
void BM_local_stats_7_days_of_100k_runs(benchmark::State& state) {
  const auto path = scratch("stats-7x100k.db");
  const int runs_per_day = static_cast<int>(state.range(0));
  boost::asio::io_context io;
  const auto today_ms = now_ms() / 86'400'000 * 86'400'000;
  {
    // Built once and reused by later runs of the benchmark (it takes a while).
    auto store = open_store(io, path, false);
    qf::error_code ec;
    if (store->count_executions({}, ec) < static_cast<std::uint64_t>(runs_per_day) * 7) {
      store.reset();
      store = open_store(io, path, true);
      int outstanding = 0;
      for (int day = 0; day < 7; ++day) {
        for (int n = 0; n < runs_per_day; ++n) {
          const std::string task = "task-" + std::to_string(n % 20);
          ++outstanding;
          store->async_record(sample_record(task, today_ms - day * 86'400'000LL + n * 800LL + n % 20, n), {},
                              [&](qf::error_code) { --outstanding; });
          if (outstanding > 20'000)
            while (outstanding > 1000) {
              if (io.stopped()) io.restart();
              io.run_one_for(10ms);
            }
        }
      }
      store->flush();
      io.restart();
      io.run();
    }
  }
  qf::LocalStoreOptions options;
  options.path = path.string();
  options.read_only = true;
  qf::error_code ec;
  auto reader = qf::LocalStore::open(io.get_executor(), options, ec);
  const auto from = date::format("%F", date::sys_days{date::days{today_ms / 86'400'000 - 6}});
  const auto to = date::format("%F", date::sys_days{date::days{today_ms / 86'400'000}});
  std::size_t rows = 0;
  for (auto _ : state) {
    auto stats = reader->daily_stats(from, to, std::nullopt, ec);
    rows = stats.size();
    benchmark::DoNotOptimize(stats);
  }
  state.counters["rows"] = static_cast<double>(rows);
}
BENCHMARK(BM_local_stats_7_days_of_100k_runs)->Arg(100'000)->Unit(benchmark::kMillisecond);

/// Engine overhead per trivial plugin run: trigger -> run -> durable record -> sink.
void BM_engine_trivial_plugin_run(benchmark::State& state) {
  boost::asio::io_context io;
  auto store = open_store(io, scratch("plugin.db"), true);
  qf::TaskEngine engine(io.get_executor(), *store);
  engine.plugins().add("noop", [](const qf::PluginCall&) { return qf::PluginResult{}; });
  qf::v1::Task task;
  task.set_id("noop");
  task.set_name("noop");
  task.set_enabled(true);
  task.mutable_plugin()->set_name("noop");
  task.set_overlap_policy(qf::v1::OVERLAP_POLICY_ALLOW);
  engine.apply({task}, 1);
  std::size_t finished = 0;
  engine.set_sink([&](const qf::v1::Execution& e) {
    if (e.status() == qf::v1::EXECUTION_STATUS_SUCCESS) ++finished;
  });
  const std::size_t batch = 1000;
  for (auto _ : state) {
    const std::size_t target = finished + batch;
    qf::error_code ec;
    for (std::size_t i = 0; i < batch; ++i) engine.trigger("noop", {}, ec);
    while (finished < target) {
      if (io.stopped()) io.restart();
      io.run_one_for(10ms);
    }
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations() * batch));
  state.counters["us_per_run"] = benchmark::Counter(static_cast<double>(state.iterations() * batch),
                                                    benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_engine_trivial_plugin_run)->Unit(benchmark::kMillisecond)->UseRealTime();

/// How many concurrent `sleep` runs one engine holds (each: a process and a pipe), and how
/// long until every one of them is executing `sleep` (counted in /proc, not by the engine).
void BM_concurrent_sleep_runs(benchmark::State& state) {
  rlimit files{};
  ::getrlimit(RLIMIT_NOFILE, &files);
  files.rlim_cur = files.rlim_max;
  ::setrlimit(RLIMIT_NOFILE, &files);
  const auto wanted = static_cast<std::size_t>(state.range(0));
  // Runs whose exec has returned: children of this process, or of its spawner (which clones
  // with CLONE_VFORK, so a child it lists is past exec, but for the one being cloned). Read
  // from the kernel's children lists: scanning all of /proc cost more than the spawns.
  auto children_of = [](long pid) {
    std::vector<long> out;
    for (const auto& thread : fs::directory_iterator(fs::path("/proc") / std::to_string(pid) / "task")) {
      std::ifstream in(thread.path() / "children");
      for (long child = 0; in >> child;) out.push_back(child);
    }
    return out;
  };
  auto started_runs = [&] {
    std::size_t count = 0;
    for (long child : children_of(::getpid())) {
      std::ifstream comm(fs::path("/proc") / std::to_string(child) / "comm");
      std::string name;
      std::getline(comm, name);
      count += name == "qf-spawner" ? children_of(child).size() : 1;
    }
    return count;
  };
  boost::asio::io_context io;
  auto store = open_store(io, scratch("sleep.db"), true);
  for (auto _ : state) {
    qf::TaskEngine engine(io.get_executor(), *store);
    qf::v1::Task task;
    task.set_id("sleeper");
    task.set_name("sleeper");
    task.set_enabled(true);
    task.mutable_shell()->add_argv("sleep");
    task.mutable_shell()->add_argv("600");  // outlives the start-up of every run
    task.set_overlap_policy(qf::v1::OVERLAP_POLICY_ALLOW);
    engine.apply({task}, 1);
    std::size_t failed = 0;
    engine.set_sink([&](const qf::v1::Execution& e) {
      if (e.status() == qf::v1::EXECUTION_STATUS_FAILURE) ++failed;
    });
    qf::error_code ec;
    const auto start = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < wanted; ++i) engine.trigger("sleeper", {}, ec);
    state.counters["trigger_all_s"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    // Started = exec returned: spawns complete after trigger returns.
    const auto give_up = start + 120s;
    std::size_t started = 0;
    while (std::chrono::steady_clock::now() < give_up) {
      // Not more often: reading a children list holds the kernel's task list lock, which
      // every clone and exit also takes (13 ms at 10,000 children).
      const auto poll_until = std::chrono::steady_clock::now() + 200ms;
      while (std::chrono::steady_clock::now() < poll_until) {
        if (io.stopped()) io.restart();
        io.run_one_for(5ms);
      }
      started = started_runs();
      if (started + failed >= wanted) break;
    }
    state.counters["start_all_s"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    state.counters["started"] = static_cast<double>(started);
    // Let every spawn failure reach its (durable) record before counting.
    const auto settle = std::chrono::steady_clock::now() + 3s;
    while (std::chrono::steady_clock::now() < settle) {
      if (io.stopped()) io.restart();
      io.run_one_for(10ms);
    }
    state.counters["running"] = static_cast<double>(engine.running_count());
    state.counters["spawn_failures"] = static_cast<double>(failed);
    bool stopped = false;
    engine.stop(0s, [&] { stopped = true; });
    while (!stopped) {
      if (io.stopped()) io.restart();
      io.run_one_for(10ms);
    }
  }
  state.counters["fd_limit"] = static_cast<double>(files.rlim_cur);
}
BENCHMARK(BM_concurrent_sleep_runs)->Arg(1000)->Arg(10000)->Unit(benchmark::kMillisecond)->Iterations(1)->UseRealTime();

/// `count` tasks t0..t<count-1> running plugin `plugin` every second.
std::vector<qf::v1::Task> every_second_plugin_tasks(int count, const std::string& plugin) {
  std::vector<qf::v1::Task> tasks;
  for (int i = 0; i < count; ++i) {
    qf::v1::Task task;
    task.set_id("t" + std::to_string(i));
    task.set_name(task.id());
    task.set_enabled(true);
    task.mutable_plugin()->set_name(plugin);
    task.mutable_schedule()->set_cron("* * * * * *");
    tasks.push_back(std::move(task));
  }
  return tasks;
}

/// Resident memory of this process now, bytes (VmRSS).
std::size_t resident_bytes() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmRSS:", 0) == 0) return static_cast<std::size_t>(std::stoull(line.substr(6))) * 1024;
  return 0;
}

/// Overload: N trivial plugin tasks every second (N fires/s, durable records) for 10 s, run
/// by one engine on a store with the default 64 MiB write queue. Above the sustainable rate
/// the queue stays bounded, the fires not started are counted and recorded SKIPPED, and stop
/// is prompt. Counters: peak RSS growth, peak queue, runs, skips, stop time.
void BM_engine_overload_bounded(benchmark::State& state) {
  const auto task_count = static_cast<int>(state.range(0));
  for (auto _ : state) {
    boost::asio::io_context io;
    auto store = open_store(io, scratch("overload.db"), true);
    qf::TaskEngine engine(io.get_executor(), *store);
    engine.plugins().add("noop", [](const qf::PluginCall&) { return qf::PluginResult{}; });
    engine.apply(every_second_plugin_tasks(task_count, "noop"), 1);
    std::uint64_t succeeded = 0, skipped = 0;
    engine.set_sink([&](const qf::v1::Execution& e) {
      if (e.status() == qf::v1::EXECUTION_STATUS_SUCCESS) ++succeeded;
      if (e.status() == qf::v1::EXECUTION_STATUS_SKIPPED) ++skipped;
    });
    const std::size_t rss_before = resident_bytes();
    std::size_t rss_peak = rss_before, queue_peak = 0;
    engine.start();
    const auto until = std::chrono::steady_clock::now() + 10s;
    auto next_sample = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() < until) {
      if (io.stopped()) io.restart();
      io.run_one_for(10ms);
      queue_peak = std::max(queue_peak, store->queued_bytes());
      if (std::chrono::steady_clock::now() >= next_sample) {
        rss_peak = std::max(rss_peak, resident_bytes());
        next_sample += 100ms;
      }
    }
    bool stopped = false;
    const auto stop_started = std::chrono::steady_clock::now();
    engine.stop(1s, [&] { stopped = true; });
    while (!stopped) {
      if (io.stopped()) io.restart();
      io.run_one_for(10ms);
    }
    const auto health = engine.store_health();
    state.counters["stop_s"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - stop_started).count();
    state.counters["rss_growth_MB"] = static_cast<double>(rss_peak - rss_before) / (1 << 20);
    state.counters["queue_peak_MB"] = static_cast<double>(queue_peak) / (1 << 20);
    state.counters["runs_per_s"] = static_cast<double>(succeeded) / 10.0;
    state.counters["skipped"] = static_cast<double>(skipped);
    state.counters["not_started"] = static_cast<double>(health.backlog_fires_not_started_total);
    state.counters["not_recorded"] = static_cast<double>(health.backlog_fires_not_recorded_total);
  }
}
BENCHMARK(BM_engine_overload_bounded)->Arg(10'000)->Arg(20'000)->Unit(benchmark::kMillisecond)->Iterations(1)->UseRealTime();

/// Start skew of locally fired tasks (issue 12): N trivial plugin tasks every second, all due
/// at the same instants; skew = the wall clock at the body's start - the scheduled instant,
/// in microseconds, over the fires of 5 s after 1 s of warm-up.
void BM_engine_start_skew(benchmark::State& state) {
  const auto task_count = static_cast<int>(state.range(0));
  for (auto _ : state) {
    boost::asio::io_context io;
    auto store = open_store(io, scratch("skew.db"), true);
    qf::TaskEngine engine(io.get_executor(), *store);
    std::vector<double> skew_us;
    skew_us.reserve(static_cast<std::size_t>(task_count) * 6);
    bool collecting = false;
    engine.plugins().add("stamp", [&](const qf::PluginCall& call) {
      if (collecting)
        skew_us.push_back(std::chrono::duration<double, std::micro>(std::chrono::system_clock::now() -
                                                                    call.request->scheduled)
                              .count());
      return qf::PluginResult{};
    });
    engine.apply(every_second_plugin_tasks(task_count, "stamp"), 1);
    engine.start();
    auto run_for = [&](std::chrono::steady_clock::duration span) {
      const auto until = std::chrono::steady_clock::now() + span;
      while (std::chrono::steady_clock::now() < until) {
        if (io.stopped()) io.restart();
        io.run_one_for(10ms);
      }
    };
    run_for(1s);
    collecting = true;
    run_for(5s);
    collecting = false;
    bool stopped = false;
    engine.stop(1s, [&] { stopped = true; });
    while (!stopped) {
      if (io.stopped()) io.restart();
      io.run_one_for(10ms);
    }
    std::sort(skew_us.begin(), skew_us.end());
    auto at = [&](double p) {
      return skew_us.empty() ? 0.0 : skew_us[std::min(skew_us.size() - 1, static_cast<std::size_t>(p * skew_us.size()))];
    };
    state.counters["fires"] = static_cast<double>(skew_us.size());
    state.counters["skew_min_us"] = skew_us.empty() ? 0 : skew_us.front();
    state.counters["skew_p50_us"] = at(0.5);
    state.counters["skew_p99_us"] = at(0.99);
    state.counters["skew_max_us"] = skew_us.empty() ? 0 : skew_us.back();
  }
}
BENCHMARK(BM_engine_start_skew)->Arg(1'000)->Unit(benchmark::kMillisecond)->Iterations(1)->UseRealTime();

/// Memory per task an agent holds (issue 12): N shell tasks (a cron schedule, a one-line
/// script) applied to an engine and armed; the growth of this process's RSS / N. The tasks
/// fire every 6 hours, so nothing runs while it is measured.
void BM_engine_memory_per_task(benchmark::State& state) {
  const auto task_count = static_cast<int>(state.range(0));
  for (auto _ : state) {
    boost::asio::io_context io;
    auto store = open_store(io, scratch("memory.db"), true);
    ::malloc_trim(0);
    const std::size_t rss_before = resident_bytes();
    {
      qf::TaskEngine engine(io.get_executor(), *store);
      std::vector<qf::v1::Task> tasks;
      tasks.reserve(static_cast<std::size_t>(task_count));
      for (int i = 0; i < task_count; ++i) {
        qf::v1::Task task;
        task.set_id("task-" + std::to_string(i));
        task.set_name("nightly-clean-up-" + std::to_string(i));
        task.set_enabled(true);
        task.add_group_ids("web");
        task.mutable_shell()->set_script("/usr/local/bin/cleanup --older-than 7d");
        task.mutable_schedule()->set_cron("0 */6 * * *");
        task.mutable_schedule()->set_time_zone("UTC");
        tasks.push_back(std::move(task));
      }
      qf::ValidationError error;
      if (!engine.apply(std::move(tasks), 1, &error)) {
        state.SkipWithError(error.message().c_str());
        return;
      }
      engine.start();
      io.poll();
      ::malloc_trim(0);  // what is held, not what malloc kept of the transient copies
      const std::size_t rss_after = resident_bytes();
      state.counters["tasks"] = static_cast<double>(engine.task_count());
      state.counters["bytes_per_task"] =
          static_cast<double>(rss_after - rss_before) / static_cast<double>(task_count);
      state.counters["rss_growth_MB"] = static_cast<double>(rss_after - rss_before) / (1 << 20);
    }
  }
}
BENCHMARK(BM_engine_memory_per_task)->Arg(100'000)->Unit(benchmark::kMillisecond)->Iterations(1)->UseRealTime();

/// The same, for a whole agent (AgentDispatcher over a TaskEngine and its LocalStore) that
/// starts from its cached configuration of N tasks (as after a restart with the coordinator
/// unreachable): RSS growth from before the cache is read to after the tasks are armed, / N.
void BM_agent_memory_per_task(benchmark::State& state) {
  const auto task_count = static_cast<int>(state.range(0));
  for (auto _ : state) {
    boost::asio::io_context io;
    auto store = open_store(io, scratch("agent-memory.db"), true);
    {
      qf::CachedConfig cached;
      cached.version = 1;
      for (int i = 0; i < task_count; ++i) {
        qf::v1::Task task;
        task.set_id("task-" + std::to_string(i));
        task.set_name("nightly-clean-up-" + std::to_string(i));
        task.set_enabled(true);
        task.add_group_ids("web");
        task.mutable_shell()->set_script("/usr/local/bin/cleanup --older-than 7d");
        task.mutable_schedule()->set_cron("0 */6 * * *");
        task.mutable_schedule()->set_time_zone("UTC");
        cached.tasks.push_back(std::move(task));
      }
      bool saved = false;
      store->async_save_config(std::move(cached), [&](qf::error_code) { saved = true; });
      while (!saved) {
        if (io.stopped()) io.restart();
        io.run_one_for(10ms);
      }
    }
    qf::InprocNetwork network(io.get_executor());
    ::malloc_trim(0);
    const std::size_t rss_before = resident_bytes();
    qf::TaskEngine engine(io.get_executor(), *store);
    auto connector = network.connector("coordinator", "bench-agent");  // nobody listens
    qf::AgentDispatcherOptions options;
    options.agent_id = "bench-agent";
    options.reconnect_min = 10s;
    qf::AgentDispatcher dispatcher(io.get_executor(), engine, *store, *connector, options);
    dispatcher.start();
    engine.start();
    io.poll();
    ::malloc_trim(0);  // what is held, not what malloc kept of the transient copies
    const std::size_t rss_after = resident_bytes();
    state.counters["tasks"] = static_cast<double>(engine.task_count());
    state.counters["bytes_per_task"] = static_cast<double>(rss_after - rss_before) / static_cast<double>(task_count);
    dispatcher.close_now();
  }
}
BENCHMARK(BM_agent_memory_per_task)->Arg(100'000)->Unit(benchmark::kMillisecond)->Iterations(1)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
