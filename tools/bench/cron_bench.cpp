// SPDX-License-Identifier: Apache-2.0
// Parse and next() over a mix of expressions, in UTC and in a DST zone.
// Targets: median next() under 1 us in UTC and under 3 us in a DST zone.
#include <array>
#include <vector>

#include <benchmark/benchmark.h>

#include <quartzflow/cron.hpp>

namespace qf = quartzflow;

namespace {

constexpr std::array k_mix{
    "0 2 * * *",          "*/5 * * * *",         "0 9 * * MON-FRI",     "30 1 * * *",
    "0 0 L * *",          "0 15 10 ? * 6L",      "*/10 * * * * *",      "0 0 12 1W * ?",
    "0 0 * * 1#2",        "15,45 8-18 * * 1-5",  "0 0 0 29 2 *",        "0 30 2 * * * 2026-2030",
    "@hourly",            "H H * * *",           "0 0/20 6-22 * * ?",   "0 0 1 1 *",
};

std::vector<qf::CronExpr> parse_all(const char* zone) {
  std::vector<qf::CronExpr> out;
  qf::CronOptions options;
  options.time_zone = zone;
  options.hash_key = "bench-task";
  for (const char* text : k_mix) out.push_back(qf::CronExpr::parse(text, options));
  return out;
}

void BM_parse(benchmark::State& state) {
  std::size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(qf::CronExpr::parse(k_mix[i++ % k_mix.size()]));
  }
}
BENCHMARK(BM_parse);

/// next() from instants spread over a year, so transitions and month ends are included.
void next_in_zone(benchmark::State& state, const char* zone) {
  const auto exprs = parse_all(zone);
  const qf::Instant start = *qf::parse_rfc3339("2026-01-01T00:00:00Z");
  std::size_t i = 0;
  for (auto _ : state) {
    const auto& expr = exprs[i % exprs.size()];
    const auto after = start + std::chrono::seconds{static_cast<long>((i * 7919) % 31'536'000)};
    benchmark::DoNotOptimize(expr.next(after));
    ++i;
  }
}
void BM_next_utc(benchmark::State& state) { next_in_zone(state, "UTC"); }
void BM_next_new_york(benchmark::State& state) { next_in_zone(state, "America/New_York"); }
void BM_next_lord_howe(benchmark::State& state) { next_in_zone(state, "Australia/Lord_Howe"); }
BENCHMARK(BM_next_utc);
BENCHMARK(BM_next_new_york);
BENCHMARK(BM_next_lord_howe);

}  // namespace

BENCHMARK_MAIN();
