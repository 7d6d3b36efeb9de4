// SPDX-License-Identifier: Apache-2.0
// Offsets after the last transition a TZif file lists (2037): the footer's POSIX rule,
// checked against glibc's localtime_r (which applies the footer) at random instants.
#include <cstdlib>
#include <ctime>
#include <random>

#include <catch2/catch.hpp>

#include <quartzflow/cron.hpp>

#include "common/zone_rules.hpp"  // internal: the footer rule

namespace qf = quartzflow;
using qf::detail::PosixTimeZone;

namespace {

/// glibc's offset and abbreviation for `zone` at `t`: the reference.
std::pair<long, std::string> libc_local(const char* zone, std::time_t t) {
  ::setenv("TZ", (std::string(":") + zone).c_str(), 1);
  ::tzset();
  std::tm tm{};
  ::localtime_r(&t, &tm);
  return {tm.tm_gmtoff, tm.tm_zone};
}

}  // namespace

TEST_CASE("POSIX TZ strings of TZif footers parse, odd forms included", "[time]") {
  const auto ny = PosixTimeZone::parse("EST5EDT,M3.2.0,M11.1.0");
  REQUIRE(ny);
  CHECK(ny->std_offset == std::chrono::hours{-5});
  CHECK(ny->dst_offset == std::chrono::hours{-4});
  CHECK(ny->start.month == 3);
  CHECK(ny->start.week == 2);
  CHECK(ny->end.time == std::chrono::hours{2});
  const auto lord_howe = PosixTimeZone::parse("<+1030>-10:30<+11>-11,M10.1.0,M4.1.0");
  REQUIRE(lord_howe);
  CHECK(lord_howe->std_abbrev == "+1030");
  CHECK(lord_howe->dst_offset - lord_howe->std_offset == std::chrono::minutes{30});
  const auto nuuk = PosixTimeZone::parse("<-02>2<-01>,M3.5.0/-1,M10.5.0/0");
  REQUIRE(nuuk);
  CHECK(nuuk->start.time == std::chrono::hours{-1});
  CHECK(PosixTimeZone::parse("JST-9"));
  CHECK(PosixTimeZone::parse("XXX3YYY,J60/2,300/2"));
  for (const char* bad : {"", "E5", "EST", "EST5EDT", "EST5EDT,M13.1.0,M11.1.0", "EST5EDT,M3.2.0", "<+03"})
    CHECK_FALSE(PosixTimeZone::parse(bad));
}

TEST_CASE("offsets after 2037 follow each zone's rule, as glibc computes them", "[time]") {
  const char* zones[] = {"America/New_York", "Europe/London",   "Europe/Dublin",    "Australia/Lord_Howe",
                         "Australia/Sydney", "America/Santiago", "Pacific/Auckland", "America/Nuuk",
                         "Europe/Berlin",    "America/Havana",   "Asia/Tokyo",       "Pacific/Chatham"};
  std::mt19937_64 random(2037);
  const std::time_t from = 2145916800;  // 2038-01-01
  const std::time_t to = 7258118400;    // 2200-01-01
  const char* saved = std::getenv("TZ");
  const std::string saved_tz = saved ? saved : "";
  for (const char* name : zones) {
    const date::time_zone* zone = date::locate_zone(name);
    for (int i = 0; i < 400; ++i) {
      const std::time_t t = from + static_cast<std::time_t>(random() % static_cast<std::uint64_t>(to - from));
      const auto [offset, abbrev] = libc_local(name, t);
      const auto info = qf::detail::zone_info(zone, qf::Instant{std::chrono::seconds{t}});
      INFO(name << " at " << t);
      REQUIRE(info.offset.count() == offset);
      REQUIRE(info.abbrev == abbrev);
      REQUIRE(info.begin <= qf::Instant{std::chrono::seconds{t}});
      REQUIRE(qf::Instant{std::chrono::seconds{t}} < info.end);
    }
  }
  if (saved) ::setenv("TZ", saved_tz.c_str(), 1);
  else ::unsetenv("TZ");
  ::tzset();
}

TEST_CASE("a daily noon in London fires at 11:00Z in July 2055 (BST)", "[time][cron]") {
  const auto expr = qf::CronExpr::parse("0 12 * * *", {"Europe/London", "", {}, {}});
  const auto from = qf::parse_rfc3339("2055-07-01T00:00:00Z");
  REQUIRE(from);
  const auto next = expr.next(*from);
  REQUIRE(next);
  CHECK(qf::format_rfc3339(*next) == "2055-07-01T11:00:00Z");
  // And the DST gap in New York in 2100 shifts a 02:30 job to 03:00 EDT = 07:00Z.
  const auto ny = qf::CronExpr::parse("30 2 * * *", {"America/New_York", "", {}, {}});
  const auto gap = ny.next(*qf::parse_rfc3339("2100-03-13T12:00:00Z"));
  REQUIRE(gap);
  CHECK(qf::format_rfc3339(*gap) == "2100-03-14T07:00:00Z");
}
