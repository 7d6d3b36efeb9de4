// SPDX-License-Identifier: Apache-2.0
// The schedule engine at work: the next fires of sample schedules in a few time zones,
// across the 2026 DST changes. `qf-schedule-demo` prints this preview.
#include <iostream>
#include <string_view>

#include <date/tz.h>
#include <fmt/format.h>

#include <quartzflow/schedule.hpp>

namespace qf = quartzflow;

namespace {

struct Sample {
  const char* text;
  const char* time_zone;
  const char* why;
};

constexpr Sample k_samples[] = {
    {"30 2 * * *", "America/New_York", "nightly job at 02:30, across the March gap"},
    {"30 1 * * *", "America/New_York", "01:30 happens twice on 1 November: runs once"},
    {"*/30 1 * * *", "America/New_York", "every half hour in 01:xx follows elapsed time"},
    {"0 9 * * MON-FRI", "Europe/London", "weekdays at 09:00 local"},
    {"0 0 L * *", "Asia/Tokyo", "last day of every month"},
    {"0 15 10 ? * 6L", "Australia/Lord_Howe", "last Friday of the month, 10:15:00"},
    {"H H(0-5) * * *", "UTC", "spread by task name: each task its own minute"},
    {"@every 1h30m", "UTC", "interval, aligned to the epoch"},
};

void show(const Sample& sample, qf::Instant from, std::size_t count) {
  auto spec = qf::ScheduleSpec::from_text(sample.text);
  spec.time_zone = sample.time_zone;
  const auto schedule = qf::Schedule::create(spec, "demo-task");
  const auto* zone = date::locate_zone(sample.time_zone);
  std::cout << fmt::format("\n{}  [{}]\n  {} — {}\n", sample.text, sample.time_zone,
                           schedule.describe(), sample.why);
  for (const auto& fire : schedule.next_n(from, count)) {
    const auto local = zone->to_local(fire.scheduled);
    const auto info = zone->get_info(fire.scheduled);
    std::cout << fmt::format("  {}  local {} {}\n", qf::format_rfc3339(fire.scheduled),
                             date::format("%F %T", local), info.abbrev);
  }
}

}  // namespace

int main(int argc, char** argv) {
  // Default start: just before the US spring-forward night, to show the DST rules.
  std::string_view from_text = "2026-03-07T12:00:00Z";
  if (argc == 3 && std::string_view(argv[1]) == "--from") from_text = argv[2];
  const auto from = qf::parse_rfc3339(from_text);
  if (!from) {
    std::cerr << "qf-schedule-demo: --from wants an RFC 3339 instant, e.g. 2026-03-07T12:00:00Z\n";
    return 2;
  }
  std::cout << "QuartzFlow schedule engine: next fires after " << qf::format_rfc3339(*from) << "\n";
  for (const auto& sample : k_samples) show(sample, *from, 4);
  const auto autumn = *qf::parse_rfc3339("2026-10-31T12:00:00Z");
  std::cout << "\nAnd across the November fall-back (" << qf::format_rfc3339(autumn) << "):";
  show(k_samples[1], autumn, 3);
  show(k_samples[2], autumn, 5);
  std::cout << "\nTry it yourself: build/tools/qfctl/qfctl cron next --tz Europe/Paris --count 5 "
               "--explain '0 30 2 * * *'\n";
  return 0;
}
