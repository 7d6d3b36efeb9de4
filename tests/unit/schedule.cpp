// SPDX-License-Identifier: Apache-2.0
// Schedule kinds, windows, run limits, jitter and misfire plans.
#include <set>

#include <catch2/catch.hpp>

#include <quartzflow/schedule.hpp>

namespace qf = quartzflow;
using std::chrono::seconds;

namespace {

qf::Instant at(const char* text) {
  const auto t = qf::parse_rfc3339(text);
  REQUIRE(t);
  return *t;
}

std::vector<std::string> nominal(const std::vector<qf::Fire>& fires) {
  std::vector<std::string> out;
  for (const auto& f : fires) out.push_back(qf::format_rfc3339(f.scheduled));
  return out;
}

using V = std::vector<std::string>;

}  // namespace

TEST_CASE("the text form selects the kind of schedule", "[schedule]") {
  CHECK(qf::ScheduleSpec::from_text("@every 1h30m").kind == qf::ScheduleKind::interval);
  CHECK(qf::ScheduleSpec::from_text("@every 1h30m").period == seconds{5400});
  CHECK(qf::ScheduleSpec::from_text("@delay 5m").kind == qf::ScheduleKind::fixed_delay);
  CHECK(qf::ScheduleSpec::from_text("@once 2026-12-01T00:00:00Z").at == at("2026-12-01T00:00:00Z"));
  CHECK(qf::ScheduleSpec::from_text("@manual").kind == qf::ScheduleKind::manual);
  CHECK(qf::ScheduleSpec::from_text("@daily").kind == qf::ScheduleKind::cron);
  qf::error_code ec;
  qf::ValidationError detail;
  CHECK_FALSE(qf::ScheduleSpec::from_text("@every soon", ec, &detail));
  CHECK(detail.message() ==
        R"(invalid schedule "@every soon": schedule: "soon" is not a duration such as 90s or 1h30m)");
  CHECK_FALSE(qf::ScheduleSpec::from_text("@every 0s", ec, &detail));
  CHECK_FALSE(qf::ScheduleSpec::from_text("@once tomorrow", ec, &detail));
}

TEST_CASE("an interval is aligned to the epoch or the window start", "[schedule]") {
  const auto every = qf::Schedule::create(qf::ScheduleSpec::from_text("@every 90s"));
  CHECK(nominal(every.next_n(at("2026-01-01T00:00:00Z"), 3)) ==
        V{"2026-01-01T00:01:30Z", "2026-01-01T00:03:00Z", "2026-01-01T00:04:30Z"});
  auto spec = qf::ScheduleSpec::from_text("@every 1h");
  spec.window_start = at("2026-01-01T00:20:00Z");
  const auto windowed = qf::Schedule::create(spec);
  CHECK(nominal(windowed.next_n(at("2025-12-01T00:00:00Z"), 2)) ==
        V{"2026-01-01T00:20:00Z", "2026-01-01T01:20:00Z"});
}

TEST_CASE("windows and run limits end a schedule", "[schedule]") {
  auto spec = qf::ScheduleSpec::from_text("0 0 * * *");
  spec.window_start = at("2026-01-10T00:00:00Z");
  spec.window_end = at("2026-01-12T00:00:00Z");
  const auto schedule = qf::Schedule::create(spec);
  CHECK(nominal(schedule.next_n(at("2026-01-01T00:00:00Z"), 10)) ==
        V{"2026-01-10T00:00:00Z", "2026-01-11T00:00:00Z", "2026-01-12T00:00:00Z"});

  auto limited = qf::ScheduleSpec::from_text("@hourly");
  limited.max_runs = 2;
  const auto two = qf::Schedule::create(limited);
  CHECK(two.next_n(at("2026-01-01T00:00:00Z"), 10).size() == 2);
  CHECK_FALSE(two.next(at("2026-01-01T00:00:00Z"), {std::nullopt, std::nullopt, 2}));
}

TEST_CASE("fixed delay waits for the previous run to end", "[schedule]") {
  const auto schedule = qf::Schedule::create(qf::ScheduleSpec::from_text("@delay 5m"));
  const auto start = at("2026-01-01T00:00:00Z");
  CHECK(schedule.next(start)->scheduled == start + seconds{300});
  qf::ScheduleState running{start + seconds{300}, std::nullopt, 1};
  CHECK_FALSE(schedule.next(start + seconds{300}, running));
  qf::ScheduleState ended{start + seconds{300}, start + seconds{420}, 1};
  CHECK(schedule.next(start + seconds{420}, ended)->scheduled == start + seconds{720});
}

TEST_CASE("one-shot and manual schedules", "[schedule]") {
  const auto once = qf::Schedule::create(qf::ScheduleSpec::from_text("@once 2026-06-01T12:00:00Z"));
  CHECK(nominal(once.next_n(at("2026-01-01T00:00:00Z"), 5)) == V{"2026-06-01T12:00:00Z"});
  CHECK_FALSE(once.next(at("2026-06-01T12:00:00Z")));
  const auto manual = qf::Schedule::create(qf::ScheduleSpec::from_text("@manual"));
  CHECK_FALSE(manual.next(at("2026-01-01T00:00:00Z")));
  CHECK(manual.describe() == "Only when triggered");
}

TEST_CASE("jitter is deterministic per task and fire, and bounded", "[schedule]") {
  auto spec = qf::ScheduleSpec::from_text("@hourly");
  spec.jitter = seconds{300};
  const auto a = qf::Schedule::create(spec, "task-a");
  const auto a_again = qf::Schedule::create(spec, "task-a");
  const auto fires = a.next_n(at("2026-01-01T00:00:00Z"), 50);
  REQUIRE(fires == a_again.next_n(at("2026-01-01T00:00:00Z"), 50));
  std::set<long> delays;
  for (const auto& f : fires) {
    const auto delay = (f.start_at - f.scheduled).count();
    CHECK(delay >= 0);
    CHECK(delay <= 300);
    delays.insert(delay);
  }
  CHECK(delays.size() > 10);  // spread, not a constant
}

TEST_CASE("misfire policies decide what is owed after downtime", "[schedule]") {
  const auto hourly = qf::Schedule::create(qf::ScheduleSpec::from_text("@hourly"));
  const auto last = at("2026-01-01T00:00:00Z");
  const auto now = at("2026-01-01T05:30:00Z");  // 01:00 ... 05:00 are owed

  const auto skip = hourly.misfires(last, now, qf::MisfirePolicy::skip);
  CHECK(skip.run.empty());
  CHECK(skip.missed_total == 5);
  CHECK(nominal(skip.missed).front() == "2026-01-01T01:00:00Z");

  const auto once = hourly.misfires(last, now, qf::MisfirePolicy::fire_once);
  CHECK(nominal(once.run) == V{"2026-01-01T05:00:00Z"});
  CHECK(once.missed_total == 4);

  const auto all = hourly.misfires(last, now, qf::MisfirePolicy::fire_all);
  CHECK(all.run.size() == 5);
  CHECK(all.missed_total == 0);

  const auto bounded = hourly.misfires(last, now, qf::MisfirePolicy::fire_all, 3);
  CHECK(nominal(bounded.run) == V{"2026-01-01T03:00:00Z", "2026-01-01T04:00:00Z", "2026-01-01T05:00:00Z"});
  CHECK(bounded.missed_total == 2);

  const auto nothing = hourly.misfires(last, at("2026-01-01T00:59:59Z"), qf::MisfirePolicy::fire_once);
  CHECK(nothing.run.empty());
  CHECK(nothing.missed_total == 0);

  const auto per_second = qf::Schedule::create(qf::ScheduleSpec::from_text("* * * * * *"));
  const auto capped = per_second.misfires(last, last + seconds{86400}, qf::MisfirePolicy::skip, 10, 1000);
  CHECK(capped.missed.size() == 10);
  CHECK(capped.missed_total == 1000);
  CHECK(capped.missed_total_capped);
}

TEST_CASE("schedule errors carry the field path", "[schedule]") {
  auto check = [](qf::ScheduleSpec spec, const std::string& expected) {
    qf::error_code ec;
    qf::ValidationError detail;
    CHECK_FALSE(qf::Schedule::create(spec, "t", ec, &detail));
    CHECK(detail.message() == expected);
  };
  check(qf::ScheduleSpec::from_text("61 * * * *"),
        R"(invalid cron expression "61 * * * *": schedule.cron.minute: 61 is out of range 0-59)");
  auto zone = qf::ScheduleSpec::from_text("@daily");
  zone.time_zone = "Europe/Atlantis";
  check(zone, R"(invalid schedule: schedule.time_zone: "Europe/Atlantis" is not a known IANA time zone)");
  auto window = qf::ScheduleSpec::from_text("@daily");
  window.window_start = at("2026-02-01T00:00:00Z");
  window.window_end = at("2026-01-01T00:00:00Z");
  check(window, "invalid schedule: schedule.window_end: 2026-01-01T00:00:00Z is before window_start "
                "2026-02-01T00:00:00Z");
  qf::ScheduleSpec once;
  once.kind = qf::ScheduleKind::once;
  check(once, "invalid schedule: schedule.at: is required for a one-shot schedule");
  qf::ScheduleSpec interval;
  interval.kind = qf::ScheduleKind::interval;
  check(interval, "invalid schedule: schedule.period: 0s is out of range 1s-366d");
}

TEST_CASE("describe names the kind and the zone", "[schedule]") {
  auto spec = qf::ScheduleSpec::from_text("0 2 * * *");
  spec.time_zone = "Europe/Paris";
  CHECK(qf::Schedule::create(spec).describe() == "At 02:00, every day (Europe/Paris)");
  CHECK(qf::Schedule::create(qf::ScheduleSpec::from_text("@every 1h30m")).describe() == "Every 1h30m");
}
