// SPDX-License-Identifier: Apache-2.0
// A heartbeat monitor's next deadline: period or cron (in its zone) after the last ping, plus grace.
#include <catch2/catch.hpp>

#include "alerts/monitor_schedule.hpp"

namespace qf = quartzflow;

namespace {

constexpr std::int64_t k_hour_ms = 3'600'000;
// 2026-03-28 12:00:00 UTC, a Saturday: Europe/Berlin goes to summer time the next night.
constexpr std::int64_t k_saturday_noon_utc = 1'774'699'200'000;

}  // namespace

TEST_CASE("a period monitor is due a period and its grace after its last ping", "[alerts][monitor]") {
  qf::v1::Monitor monitor;
  monitor.set_period_seconds(2);
  monitor.set_grace_seconds(1);
  monitor.set_created_unix_ms(1'000);
  CHECK(qf::alerts::monitor_next_deadline(monitor) == 4'000);  // never pinged: from its creation
  monitor.set_last_ping_unix_ms(10'500);
  CHECK(qf::alerts::monitor_next_deadline(monitor) == 13'500);
  monitor.set_last_fail_unix_ms(20'000);  // a /fail counts as the latest report too
  CHECK(qf::alerts::monitor_next_deadline(monitor) == 23'000);
  monitor.set_grace_seconds(0);  // 0 = 300 s
  CHECK(qf::alerts::monitor_deadline_after(monitor, 0) == 302'000);
  monitor.set_paused(true);
  CHECK(qf::alerts::monitor_next_deadline(monitor) == 0);
}

TEST_CASE("a cron monitor is due at the next fire in its zone plus grace", "[alerts][monitor]") {
  qf::v1::Monitor monitor;
  monitor.set_cron("0 3 * * *");
  monitor.set_time_zone("Europe/Berlin");
  monitor.set_grace_seconds(600);
  // Pinged at noon on Saturday: next 03:00 Berlin is Sunday 03:00 CEST (the clocks jump from
  // 02:00 to 03:00), 01:00 UTC, 13 hours later.
  CHECK(qf::alerts::monitor_deadline_after(monitor, k_saturday_noon_utc) ==
        k_saturday_noon_utc + 13 * k_hour_ms + 600'000);
  monitor.set_time_zone("");  // UTC: 03:00 UTC on Sunday, 15 hours later
  CHECK(qf::alerts::monitor_deadline_after(monitor, k_saturday_noon_utc) ==
        k_saturday_noon_utc + 15 * k_hour_ms + 600'000);
  monitor.set_cron("not a cron");
  CHECK(qf::alerts::monitor_deadline_after(monitor, k_saturday_noon_utc) == 0);
}
