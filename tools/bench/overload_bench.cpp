// SPDX-License-Identifier: Apache-2.0
// qf-bench-overload: an agent-local engine (TaskEngine + a real LocalStore file) driven at a
// base rate, then at `--factor` times it for `--overload` seconds, then at the base rate again;
// every (task, instant) the schedules imply is accounted for through the runs' side effect and
// the store's records. `--help` for the flags; exit status 1 when the accounting fails.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/io_context.hpp>
#include <CLI/CLI.hpp>

#include <quartzflow/log.hpp>
#include <quartzflow/task_engine.hpp>

#include "bench_support.hpp"

namespace qf = quartzflow;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::system_clock;

namespace {

struct Profile {
  int base_rate = 10'000;       // tasks b0.. firing every second for the whole run
  double factor = 2.0;          // x<i> tasks add (factor - 1) * base_rate during the overload
  int warmup_s = 5;
  int overload_s = 60;
  int after_s = 20;
  std::size_t queue_kb = 64 << 10;  // LocalStoreOptions::max_queued_bytes
  std::size_t held_skips = qf::TaskEngineOptions{}.max_recorded_backlog_skips;
  double rss_bound_mb = 256;
  std::string db;
};

/// Resident memory of this process now, bytes (VmRSS).
std::size_t resident_bytes() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmRSS:", 0) == 0) return static_cast<std::size_t>(std::stoull(line.substr(6))) * 1024;
  return 0;
}

std::int64_t unix_ms(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}


/// Per second of scheduled instants: start skew of the runs, durable latency of their final
/// records, and the fires that did not run.
struct Second {
  std::vector<float> skew_ms;     // body start - instant
  std::vector<float> durable_ms;  // final record durable (sink) - instant
  std::uint64_t skipped = 0, missed = 0;
};

double percentile(std::vector<float>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

int run(const Profile& profile) {
  const int extra_rate = static_cast<int>(std::lround(profile.base_rate * (profile.factor - 1.0)));
  const int task_count = profile.base_rate + extra_rate;
  const int total_s = profile.warmup_s + profile.overload_s + profile.after_s;
  const fs::path db = profile.db.empty() ? qf::bench::make_temp_dir("qf-bench-overload") / "agent.db" : fs::path(profile.db);
  fs::remove(db);
  fs::remove(db.string() + "-wal");
  fs::remove(db.string() + "-shm");

  boost::asio::io_context io;
  qf::LocalStoreOptions store_options;
  store_options.path = db.string();
  store_options.max_queued_bytes = profile.queue_kb << 10;
  qf::error_code ec;
  std::string detail;
  auto store = qf::LocalStore::open(io.get_executor(), store_options, ec, &detail);
  if (!store) {
    std::fprintf(stderr, "cannot open the store: %s\n", detail.c_str());
    return 2;
  }
  qf::TaskEngineOptions engine_options;
  engine_options.agent_id = "overload";
  engine_options.max_recorded_backlog_skips = profile.held_skips;
  qf::TaskEngine engine(io.get_executor(), *store, engine_options);

  // The schedules: every second within a window, so the instants each task owes are exact.
  const auto t0 = std::chrono::ceil<std::chrono::seconds>(Clock::now()) + 3s;
  const std::int64_t t0_ms = unix_ms(t0);
  const std::int64_t overload_from_ms = t0_ms + profile.warmup_s * 1000LL;
  const std::int64_t overload_to_ms = overload_from_ms + profile.overload_s * 1000LL;  // exclusive
  std::vector<qf::v1::Task> tasks;
  tasks.reserve(static_cast<std::size_t>(task_count));
  for (int i = 0; i < task_count; ++i) {
    const bool extra = i >= profile.base_rate;
    qf::v1::Task task;
    task.set_id(std::to_string(i));
    task.set_name((extra ? "x" : "b") + task.id());
    task.set_enabled(true);
    task.mutable_plugin()->set_name("record");
    auto& schedule = *task.mutable_schedule();
    schedule.set_cron("* * * * * *");
    schedule.set_window_start_unix_ms(extra ? overload_from_ms : t0_ms);
    schedule.set_window_end_unix_ms(extra ? overload_to_ms - 1000 : t0_ms + (total_s - 1) * 1000LL);
    tasks.push_back(std::move(task));
  }
  auto owed = [&](int task, int second) {
    return task < profile.base_rate ||
           (second >= profile.warmup_s && second < profile.warmup_s + profile.overload_s);
  };

  // The side effect: each body counts its (task, instant) here; nothing else writes it.
  std::vector<std::uint8_t> executed(static_cast<std::size_t>(task_count) * total_s, 0);
  std::vector<Second> seconds(static_cast<std::size_t>(total_s));
  for (int s = 0; s < total_s; ++s) {
    const int rate = profile.base_rate + (owed(task_count - 1, s) ? extra_rate : 0);
    seconds[s].skew_ms.reserve(static_cast<std::size_t>(rate));
    seconds[s].durable_ms.reserve(static_cast<std::size_t>(rate));
  }
  std::uint64_t outside_window = 0, bad_ids = 0;
  auto second_of = [&](std::int64_t scheduled_ms) -> int {
    const auto offset = scheduled_ms - t0_ms;
    if (offset < 0 || offset % 1000 != 0 || offset / 1000 >= total_s) return -1;
    return static_cast<int>(offset / 1000);
  };
  engine.plugins().add("record", [&](const qf::PluginCall& call) {
    const auto started = Clock::now();
    const auto& id = call.request->task->id();
    int task = -1;
    if (std::from_chars(id.data(), id.data() + id.size(), task).ec != std::errc{} || task < 0 || task >= task_count) {
      ++bad_ids;
      return qf::PluginResult{};
    }
    const int second = second_of(unix_ms(call.request->scheduled));
    if (second < 0) {
      ++outside_window;
      return qf::PluginResult{};
    }
    auto& count = executed[static_cast<std::size_t>(task) * total_s + second];
    if (count < 255) ++count;
    seconds[second].skew_ms.push_back(
        std::chrono::duration<float, std::milli>(started - call.request->scheduled).count());
    return qf::PluginResult{};
  });
  engine.set_sink([&](const qf::v1::Execution& e) {
    const int second = second_of(e.scheduled_unix_ms());
    if (second < 0) return;
    switch (e.status()) {
      case qf::v1::EXECUTION_STATUS_SUCCESS:
        seconds[second].durable_ms.push_back(static_cast<float>(unix_ms(Clock::now()) - e.scheduled_unix_ms()));
        break;
      case qf::v1::EXECUTION_STATUS_SKIPPED: ++seconds[second].skipped; break;
      case qf::v1::EXECUTION_STATUS_MISSED: ++seconds[second].missed; break;
      default: break;
    }
  });
  qf::ValidationError error;
  if (!engine.apply(std::move(tasks), 1, &error)) {
    std::fprintf(stderr, "apply: %s\n", error.message().c_str());
    return 2;
  }
  engine.start();
  io.poll();

  // RSS and the store's queue, sampled apart from the io thread (which the load saturates).
  std::atomic<bool> sampling{true};
  const std::size_t rss_baseline = resident_bytes();
  std::atomic<std::size_t> rss_peak{rss_baseline}, queue_peak{0};
  std::vector<std::size_t> rss_per_second(static_cast<std::size_t>(total_s) + 30, 0);
  std::thread sampler([&] {
    while (sampling.load()) {
      const auto rss = resident_bytes();
      rss_peak.store(std::max(rss_peak.load(), rss));
      queue_peak.store(std::max(queue_peak.load(), store->queued_bytes()));
      const auto s = (unix_ms(Clock::now()) - t0_ms) / 1000;
      if (s >= 0 && s < static_cast<std::int64_t>(rss_per_second.size()))
        rss_per_second[static_cast<std::size_t>(s)] = std::max(rss_per_second[static_cast<std::size_t>(s)], rss);
      std::this_thread::sleep_for(50ms);
    }
  });

  std::printf("qf-bench-overload: %d tasks every second for %d s, %d more (x%.2g) from %d s to %d s; store queue "
              "bound %zu KiB, held skips %zu, db %s\n",
              profile.base_rate, total_s, extra_rate, profile.factor, profile.warmup_s,
              profile.warmup_s + profile.overload_s, profile.queue_kb, profile.held_skips, db.c_str());
  std::fflush(stdout);
  // Every instant's fires, plus 2 s for the last records to become durable.
  const auto end = t0 + std::chrono::seconds(total_s) + 2s;
  while (Clock::now() < end) {
    if (io.stopped()) io.restart();
    io.run_one_for(10ms);
  }
  const auto stop_started = std::chrono::steady_clock::now();
  bool stopped = false;
  engine.stop(5s, [&] { stopped = true; });
  qf::bench::run_io_until(io, [&] { return stopped; }, 120s);
  const double stop_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - stop_started).count();
  store->flush();
  io.restart();
  io.poll();
  sampling = false;
  sampler.join();
  const auto health = engine.store_health();

  // What the store says of every (task, instant).
  enum Kind : std::uint8_t { none, success, skipped, missed, other };
  std::vector<std::uint8_t> recorded(executed.size(), none);
  std::map<std::string, std::uint64_t> skip_details;
  std::uint64_t records = 0, unexpected_records = 0, unfinished = 0;
  for (int task = 0; task < task_count; ++task) {
    qf::ExecutionQuery query;
    query.task_id = std::to_string(task);
    query.limit = static_cast<std::size_t>(total_s) + 100;
    for (const auto& e : store->executions(query, ec)) {
      ++records;
      const int second = second_of(e.scheduled_unix_ms());
      if (second < 0 || !owed(task, second)) {
        ++unexpected_records;
        continue;
      }
      Kind kind = other;
      if (e.status() == qf::v1::EXECUTION_STATUS_SUCCESS) kind = success;
      if (e.status() == qf::v1::EXECUTION_STATUS_SKIPPED || e.status() == qf::v1::EXECUTION_STATUS_MISSED) {
        kind = e.status() == qf::v1::EXECUTION_STATUS_SKIPPED ? skipped : missed;
        auto reason = e.skip_detail().substr(0, e.skip_detail().find(':'));
        ++skip_details[qf::v1::ExecutionStatus_Name(e.status()) + " " + reason];
      }
      if (e.status() == qf::v1::EXECUTION_STATUS_RUNNING || e.status() == qf::v1::EXECUTION_STATUS_PENDING) ++unfinished;
      recorded[static_cast<std::size_t>(task) * total_s + second] = kind;
    }
    if (ec) {
      std::fprintf(stderr, "reading the store: %s\n", ec.message().c_str());
      return 2;
    }
  }
  std::uint64_t implied = 0, ran = 0, duplicated = 0, missing = 0, ran_not_recorded = 0, recorded_not_ran = 0,
                n_skipped = 0, n_missed = 0, n_other = 0;
  for (int task = 0; task < task_count; ++task)
    for (int s = 0; s < total_s; ++s) {
      const auto i = static_cast<std::size_t>(task) * total_s + s;
      if (!owed(task, s)) {
        if (executed[i]) ++outside_window;
        continue;
      }
      ++implied;
      const int runs = executed[i];
      if (runs > 0) ++ran;
      if (runs > 1) ++duplicated;
      switch (recorded[i]) {
        case none: runs == 0 ? ++missing : ++ran_not_recorded; break;
        case success: if (runs == 0) ++recorded_not_ran; break;
        case skipped: ++n_skipped; if (runs) ++ran_not_recorded; break;
        case missed: ++n_missed; if (runs) ++ran_not_recorded; break;
        default: ++n_other; break;
      }
    }

  // Skew per second; normal = the warm-up's p99 (its first second left out).
  std::printf("\n%6s %8s %8s %9s %9s %9s %11s %8s %8s %8s\n", "second", "fires", "ran", "skew_p50", "skew_p99",
              "skew_max", "durable_p99", "skipped", "missed", "rss_MB");
  std::vector<double> p99(static_cast<std::size_t>(total_s), 0);
  std::vector<std::uint64_t> not_run(static_cast<std::size_t>(total_s), 0);
  for (int s = 0; s < total_s; ++s) {
    auto& sec = seconds[s];
    const int fires = profile.base_rate + (owed(task_count - 1, s) ? extra_rate : 0);
    const auto ran_now = sec.skew_ms.size();
    const double p50 = percentile(sec.skew_ms, 0.5);
    p99[s] = percentile(sec.skew_ms, 0.99);
    const double max = sec.skew_ms.empty() ? 0.0 : sec.skew_ms.back();
    not_run[s] = static_cast<std::uint64_t>(fires) - std::min<std::uint64_t>(fires, ran_now);
    std::printf("%6d %8d %8zu %9.1f %9.1f %9.1f %11.1f %8llu %8llu %8.0f\n", s, fires, ran_now, p50, p99[s], max,
                percentile(sec.durable_ms, 0.99), static_cast<unsigned long long>(sec.skipped),
                static_cast<unsigned long long>(sec.missed), static_cast<double>(rss_per_second[s]) / (1 << 20));
  }
  double normal_p99 = 0;
  for (int s = 1; s < profile.warmup_s; ++s) normal_p99 = std::max(normal_p99, p99[s]);
  const double normal_bound = std::max(2 * normal_p99, normal_p99 + 10.0);
  const int load_drop = profile.warmup_s + profile.overload_s;
  int recovered_after = -1;
  for (int s = total_s - 1; s >= load_drop; --s) {
    if (p99[s] > normal_bound || not_run[s] > 0) break;
    recovered_after = s - load_drop;
  }
  std::uint64_t overload_ran = 0, overload_fires = 0;
  for (int s = profile.warmup_s; s < load_drop; ++s) {
    overload_ran += seconds[s].skew_ms.size();
    overload_fires += static_cast<std::uint64_t>(profile.base_rate + extra_rate);
  }
  const double rss_growth_mb = static_cast<double>(rss_peak.load() - rss_baseline) / (1 << 20);
  const bool accounted = missing == 0 && duplicated == 0 && ran_not_recorded == 0 && recorded_not_ran == 0 &&
                         n_other == 0 && outside_window == 0 && bad_ids == 0 && unexpected_records == 0;
  const bool bounded = rss_growth_mb <= profile.rss_bound_mb;

  std::printf("\nimplied=%llu ran=%llu skipped=%llu missed=%llu missing=%llu duplicated=%llu ran_not_recorded=%llu "
              "recorded_not_ran=%llu other_status=%llu unfinished=%llu unexpected_records=%llu records=%llu\n",
              static_cast<unsigned long long>(implied), static_cast<unsigned long long>(ran),
              static_cast<unsigned long long>(n_skipped), static_cast<unsigned long long>(n_missed),
              static_cast<unsigned long long>(missing), static_cast<unsigned long long>(duplicated),
              static_cast<unsigned long long>(ran_not_recorded), static_cast<unsigned long long>(recorded_not_ran),
              static_cast<unsigned long long>(n_other), static_cast<unsigned long long>(unfinished),
              static_cast<unsigned long long>(unexpected_records), static_cast<unsigned long long>(records));
  for (const auto& [what, count] : skip_details)
    std::printf("  %s: %llu\n", what.c_str(), static_cast<unsigned long long>(count));
  std::printf("overload: %.0f runs/s of %.0f fires/s\n", static_cast<double>(overload_ran) / profile.overload_s,
              static_cast<double>(overload_fires) / profile.overload_s);
  std::printf("engine: backlogs=%llu fires_not_started=%llu not_recorded(counted only)=%llu\n",
              static_cast<unsigned long long>(health.backlogs),
              static_cast<unsigned long long>(health.backlog_fires_not_started_total),
              static_cast<unsigned long long>(health.backlog_fires_not_recorded_total));
  std::printf("rss: baseline %.0f MB, peak growth %.1f MB (bound %.0f MB), store queue peak %.1f MB; stop %.2f s\n",
              static_cast<double>(rss_baseline) / (1 << 20), rss_growth_mb, profile.rss_bound_mb,
              static_cast<double>(queue_peak.load()) / (1 << 20), stop_s);
  std::printf("skew: normal p99 %.1f ms (warm-up); after the load drops, every second within %.1f ms and all fires "
              "run from second %d on\n",
              normal_p99, normal_bound, recovered_after);
  std::printf("result: accounting %s, memory %s, recovery %s\n", accounted ? "ok" : "FAILED",
              bounded ? "bounded" : "OVER THE BOUND",
              recovered_after >= 0 && recovered_after <= 10 ? "within 10 s" : "NOT within 10 s");
  std::error_code remove_ec;
  if (profile.db.empty()) fs::remove_all(db.parent_path(), remove_ec);
  return accounted && bounded ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Profile profile;
  bool smoke = false;
  CLI::App app{"qf-bench-overload: an agent-local TaskEngine with its LocalStore at a base rate of plugin fires, "
               "then --factor times it, then the base rate again; every (task, instant) accounted for"};
  app.add_option("--rate", profile.base_rate, "base rate: tasks firing every second")->capture_default_str();
  app.add_option("--factor", profile.factor, "the overload: this many times the base rate")->capture_default_str();
  app.add_option("--warmup", profile.warmup_s, "seconds at the base rate before the overload")->capture_default_str();
  app.add_option("--overload", profile.overload_s, "seconds of overload")->capture_default_str();
  app.add_option("--after", profile.after_s, "seconds at the base rate after it")->capture_default_str();
  app.add_option("--queue-kb", profile.queue_kb, "the LocalStore's write queue bound, KiB")->capture_default_str();
  app.add_option("--held-skips", profile.held_skips, "TaskEngineOptions::max_recorded_backlog_skips")
      ->capture_default_str();
  app.add_option("--rss-bound-mb", profile.rss_bound_mb, "the stated bound on RSS growth")->capture_default_str();
  app.add_option("--db", profile.db, "the store's file (default: a new temporary directory)");
  app.add_flag("--smoke", smoke,
               "a short run for the tests: 500 tasks, x61 for 3 s on a 256 KiB queue, so that more than 20,000 "
               "fires wait for the backlog (once the most held, the rest were counted only)");
  app.add_flag("--verbose", qf::bench::verbose, "the engine's log on stderr");
  app.allow_extras();  // `./tools/qf bench ARGS` passes Google Benchmark's flags to every bench
  CLI11_PARSE(app, argc, argv);
  if (smoke) {
    profile.base_rate = 500;
    profile.factor = 61;
    profile.warmup_s = 2;
    profile.overload_s = 3;
    profile.after_s = 4;
    profile.queue_kb = 256;
  }
  if (!qf::bench::verbose) qf::set_log_level("error");
  try {
    return run(profile);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "qf-bench-overload: %s\n", e.what());
    return 2;
  }
}
