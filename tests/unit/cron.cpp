// SPDX-License-Identifier: Apache-2.0
// The cron dialect element by element, with hand-checked instants, and its error messages.
#include <set>

#include <catch2/catch.hpp>

#include <quartzflow/cron.hpp>

namespace qf = quartzflow;

namespace {

qf::Instant at(const char* text) {
  const auto t = qf::parse_rfc3339(text);
  REQUIRE(t);
  return *t;
}

/// The first `count` fires after `from`, as RFC 3339 text.
std::vector<std::string> fires(const char* expression, const char* from, std::size_t count,
                               qf::CronOptions options = {}) {
  const auto expr = qf::CronExpr::parse(expression, options);
  std::vector<std::string> out;
  for (auto t : expr.next_n(at(from), count)) out.push_back(qf::format_rfc3339(t));
  return out;
}

std::string error_of(const char* expression, qf::CronOptions options = {}) {
  try {
    qf::CronExpr::parse(expression, options);
  } catch (const qf::error& e) {
    return e.what();
  }
  return "no error";
}

using V = std::vector<std::string>;

qf::CronOptions in_zone(const char* zone) {
  qf::CronOptions options;
  options.time_zone = zone;
  return options;
}

}  // namespace

TEST_CASE("five fields fire on the minute", "[cron]") {
  CHECK(fires("*/20 * * * *", "2026-01-01T00:00:00Z", 3) ==
        V{"2026-01-01T00:20:00Z", "2026-01-01T00:40:00Z", "2026-01-01T01:00:00Z"});
  CHECK(fires("0 2 * * *", "2026-01-01T02:00:00Z", 2) ==
        V{"2026-01-02T02:00:00Z", "2026-01-03T02:00:00Z"});
}

TEST_CASE("six fields put seconds first and seven add the year", "[cron]") {
  CHECK(fires("*/15 * * * * *", "2026-01-01T00:00:00Z", 3) ==
        V{"2026-01-01T00:00:15Z", "2026-01-01T00:00:30Z", "2026-01-01T00:00:45Z"});
  CHECK(fires("0 0 12 1 1 * 2028,2030", "2026-01-01T00:00:00Z", 3) ==
        V{"2028-01-01T12:00:00Z", "2030-01-01T12:00:00Z"});
  CHECK(fires("0 0 0 1 1 * 2199", "2198-06-01T00:00:00Z", 2) == V{"2199-01-01T00:00:00Z"});
}

TEST_CASE("names are case-insensitive and day-of-week 7 is Sunday", "[cron]") {
  CHECK(fires("0 0 * feb Sun", "2026-01-01T00:00:00Z", 2) ==
        V{"2026-02-01T00:00:00Z", "2026-02-08T00:00:00Z"});
  CHECK(fires("0 0 * * 7", "2026-01-01T00:00:00Z", 1) == fires("0 0 * * 0", "2026-01-01T00:00:00Z", 1));
  CHECK(fires("0 0 * * MON-FRI", "2026-01-02T00:00:00Z", 2) ==
        V{"2026-01-05T00:00:00Z", "2026-01-06T00:00:00Z"});  // 2 Jan 2026 is a Friday
}

TEST_CASE("lists, ranges, steps and wrapping ranges", "[cron]") {
  CHECK(fires("5,10-12,50/5 * * * *", "2026-01-01T00:00:00Z", 6) ==
        V{"2026-01-01T00:05:00Z", "2026-01-01T00:10:00Z", "2026-01-01T00:11:00Z",
          "2026-01-01T00:12:00Z", "2026-01-01T00:50:00Z", "2026-01-01T00:55:00Z"});
  CHECK(fires("0 22-1 * * *", "2026-01-01T00:30:00Z", 4) ==
        V{"2026-01-01T01:00:00Z", "2026-01-01T22:00:00Z", "2026-01-01T23:00:00Z",
          "2026-01-02T00:00:00Z"});
  CHECK(fires("0 0 * * FRI-MON", "2026-01-01T00:00:00Z", 4) ==
        V{"2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z", "2026-01-04T00:00:00Z",
          "2026-01-05T00:00:00Z"});
  CHECK(fires("0 1-10/4 * * *", "2026-01-01T00:00:00Z", 3) ==
        V{"2026-01-01T01:00:00Z", "2026-01-01T05:00:00Z", "2026-01-01T09:00:00Z"});
}

TEST_CASE("both day fields restricted means either matches (Vixie)", "[cron]") {
  // The 13th or any Friday. 2026-02-06 is a Friday, 2026-02-13 both.
  CHECK(fires("0 0 13 * 5", "2026-02-01T00:00:00Z", 3) ==
        V{"2026-02-06T00:00:00Z", "2026-02-13T00:00:00Z", "2026-02-20T00:00:00Z"});
  // 1-31 is restricted, so OR applies and every day matches.
  CHECK(fires("0 0 1-31 * 5", "2026-02-01T00:00:00Z", 2) ==
        V{"2026-02-02T00:00:00Z", "2026-02-03T00:00:00Z"});
  // */2 is not restricted, so both must match: odd days that are Fridays.
  CHECK(fires("0 0 */2 * 5", "2026-02-01T00:00:00Z", 2) ==
        V{"2026-02-13T00:00:00Z", "2026-02-27T00:00:00Z"});
  // ? is any.
  CHECK(fires("0 0 ? * 5", "2026-02-01T00:00:00Z", 1) == V{"2026-02-06T00:00:00Z"});
}

TEST_CASE("L, L-n, nW and LW in day-of-month", "[cron]") {
  CHECK(fires("0 0 L * *", "2024-01-31T00:00:00Z", 3) ==
        V{"2024-02-29T00:00:00Z", "2024-03-31T00:00:00Z", "2024-04-30T00:00:00Z"});
  CHECK(fires("0 0 L-2 2 *", "2023-01-01T00:00:00Z", 2) ==
        V{"2023-02-26T00:00:00Z", "2024-02-27T00:00:00Z"});
  // 2026-08-15 is a Saturday -> Friday 14th; 2026-03-01 is a Sunday -> Monday 2nd;
  // 2026-08-01 is a Saturday -> Monday 3rd (never crossing into July).
  CHECK(fires("0 0 15W 8 *", "2026-01-01T00:00:00Z", 1) == V{"2026-08-14T00:00:00Z"});
  CHECK(fires("0 0 1W 3 *", "2026-01-01T00:00:00Z", 1) == V{"2026-03-02T00:00:00Z"});
  CHECK(fires("0 0 1W 8 *", "2026-01-01T00:00:00Z", 1) == V{"2026-08-03T00:00:00Z"});
  // 2026-05-31 is a Sunday -> Friday 29th (never crossing into June).
  CHECK(fires("0 0 31W 5 *", "2026-01-01T00:00:00Z", 1) == V{"2026-05-29T00:00:00Z"});
  // LW: 2026-01-31 is a Saturday -> 30th; 2026-05-31 Sunday -> 29th.
  CHECK(fires("0 0 LW * *", "2026-01-01T00:00:00Z", 1) == V{"2026-01-30T00:00:00Z"});
  CHECK(fires("0 0 LW 5 *", "2026-01-01T00:00:00Z", 1) == V{"2026-05-29T00:00:00Z"});
}

TEST_CASE("nL and n#k in day-of-week", "[cron]") {
  CHECK(fires("0 0 * * 5L", "2026-01-01T00:00:00Z", 2) ==
        V{"2026-01-30T00:00:00Z", "2026-02-27T00:00:00Z"});
  CHECK(fires("0 0 * * MON#2", "2026-01-01T00:00:00Z", 2) ==
        V{"2026-01-12T00:00:00Z", "2026-02-09T00:00:00Z"});
  // A fifth Thursday exists only in some months: Jan 2026 (29th), Apr (30th), Jul (30th).
  CHECK(fires("0 0 * * 4#5", "2026-01-01T00:00:00Z", 3) ==
        V{"2026-01-29T00:00:00Z", "2026-04-30T00:00:00Z", "2026-07-30T00:00:00Z"});
}

TEST_CASE("leap years and month ends", "[cron]") {
  CHECK(fires("0 0 29 2 *", "2025-01-01T00:00:00Z", 2) ==
        V{"2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"});
  // 2100 is not a leap year.
  CHECK(fires("0 0 29 2 *", "2096-03-01T00:00:00Z", 1) == V{"2104-02-29T00:00:00Z"});
  CHECK(fires("0 0 31 * *", "2026-01-31T00:00:00Z", 3) ==
        V{"2026-03-31T00:00:00Z", "2026-05-31T00:00:00Z", "2026-07-31T00:00:00Z"});
}

TEST_CASE("macros expand to their cron forms", "[cron]") {
  const char* from = "2026-05-17T10:11:12Z";
  CHECK(fires("@yearly", from, 1) == V{"2027-01-01T00:00:00Z"});
  CHECK(fires("@annually", from, 1) == V{"2027-01-01T00:00:00Z"});
  CHECK(fires("@monthly", from, 1) == V{"2026-06-01T00:00:00Z"});
  CHECK(fires("@weekly", from, 1) == V{"2026-05-24T00:00:00Z"});
  CHECK(fires("@daily", from, 1) == V{"2026-05-18T00:00:00Z"});
  CHECK(fires("@midnight", from, 1) == V{"2026-05-18T00:00:00Z"});
  CHECK(fires("@HOURLY", from, 1) == V{"2026-05-17T11:00:00Z"});
}

TEST_CASE("H picks a stable value from the task name", "[cron]") {
  qf::CronOptions a;
  a.hash_key = "backup-db";
  qf::CronOptions b;
  b.hash_key = "rotate-logs";
  const auto first = qf::CronExpr::parse("H H * * *", a).next(at("2026-01-01T00:00:00Z"));
  const auto again = qf::CronExpr::parse("H H * * *", a).next(at("2026-01-01T00:00:00Z"));
  CHECK(first == again);
  // Pinned so that a change of hash function (which would move every task) fails here.
  CHECK(fires("H H * * *", "2026-01-01T00:00:00Z", 1, a) == fires("H H * * *", "2026-01-01T00:00:00Z", 1, a));
  const auto pinned = fires("H H(0-5) * * *", "2026-01-01T00:00:00Z", 1, a);
  CHECK(pinned == V{"2026-01-01T01:17:00Z"});

  // Over many names, H spreads: not everything at minute 0, and every value in range.
  std::set<long> minutes;
  for (int i = 0; i < 200; ++i) {
    qf::CronOptions o;
    o.hash_key = "task-" + std::to_string(i);
    const auto t = qf::CronExpr::parse("H(10-39) * * * *", o).next(at("2026-01-01T00:00:00Z"));
    const long minute = (t->time_since_epoch().count() / 60) % 60;
    CHECK(minute >= 10);
    CHECK(minute <= 39);
    minutes.insert(minute);
  }
  CHECK(minutes.size() >= 25);
  // H/15: one offset in 0-14, then every 15 minutes.
  const auto quarter = fires("H/15 * * * *", "2026-01-01T00:00:00Z", 4, b);
  REQUIRE(quarter.size() == 4);
  const auto q0 = qf::parse_rfc3339(quarter[0])->time_since_epoch().count();
  const auto q1 = qf::parse_rfc3339(quarter[1])->time_since_epoch().count();
  CHECK(q1 - q0 == 15 * 60);
  CHECK((q0 / 60) % 15 == (q0 / 60) % 60);
}

TEST_CASE("prev is the mirror of next", "[cron]") {
  const auto expr = qf::CronExpr::parse("0 30 9 ? * MON-FRI");
  CHECK(expr.prev(at("2026-01-05T09:30:00Z")) == at("2026-01-02T09:30:00Z"));
  CHECK(expr.prev(at("2026-01-05T09:30:01Z")) == at("2026-01-05T09:30:00Z"));
  CHECK(qf::CronExpr::parse("0 0 0 1 1 * 1970").prev(at("1970-01-01T00:00:00Z")) == std::nullopt);
}

TEST_CASE("a past year has no next fire", "[cron]") {
  const auto expr = qf::CronExpr::parse("0 0 0 1 1 * 2020");
  CHECK(expr.next(at("2026-01-01T00:00:00Z")) == std::nullopt);
  CHECK(expr.next_n(at("2026-01-01T00:00:00Z"), 5).empty());
}

TEST_CASE("errors name the field and the reason", "[cron]") {
  CHECK(error_of("61 * * * *") == R"(invalid cron expression "61 * * * *": minute: 61 is out of range 0-59)");
  CHECK(error_of("* 24 * * *") == R"(invalid cron expression "* 24 * * *": hour: 24 is out of range 0-23)");
  CHECK(error_of("* * 0 * *") == R"(invalid cron expression "* * 0 * *": day-of-month: 0 is out of range 1-31)");
  CHECK(error_of("* * * 13 *") == R"(invalid cron expression "* * * 13 *": month: 13 is out of range 1-12)");
  CHECK(error_of("* * * * 8") == R"(invalid cron expression "* * * * 8": day-of-week: 8 is out of range 0-7)");
  CHECK(error_of("* * * *") == R"(invalid cron expression "* * * *": expected 5, 6 or 7 fields, got 4)");
  CHECK(error_of("0 0 0 1 1 * 2200") ==
        R"(invalid cron expression "0 0 0 1 1 * 2200": year: 2200 is out of range 1970-2199)");
  CHECK(error_of("*/0 * * * *") == R"(invalid cron expression "*/0 * * * *": minute: step 0 must be at least 1)");
  CHECK(error_of("* * * FOO *") == R"(invalid cron expression "* * * FOO *": month: "FOO" is not a valid value)");
  CHECK(error_of("? * * * *") ==
        R"(invalid cron expression "? * * * *": minute: ? is only allowed in the day-of-month and day-of-week fields)");
  CHECK(error_of("0 0 * * 5#6") == R"(invalid cron expression "0 0 * * 5#6": day-of-week: "5#6": the week number after # must be 1-5)");
  CHECK(error_of("@fortnightly").find("unknown macro") != std::string::npos);
  CHECK(error_of("") == "invalid cron expression \"\": is empty");
  CHECK(error_of("1,,2 * * * *").find("minute: empty list item") != std::string::npos);
  CHECK(error_of("0 0 * * *", in_zone("Mars/Olympus_Mons")) ==
        R"(invalid time zone: time_zone: "Mars/Olympus_Mons" is not a known IANA time zone)");
}

TEST_CASE("expressions that can never fire are refused at parse time", "[cron]") {
  CHECK(error_of("0 0 30 2 *") ==
        R"(invalid cron expression "0 0 30 2 *": never fires: no date matches its day-of-month, month, day-of-week and year fields)");
  CHECK(error_of("0 0 0 29 2 * 2027").find("never fires") != std::string::npos);
  CHECK(error_of("0 0 31 4,6,9,11 *").find("never fires") != std::string::npos);
  qf::error_code ec;
  CHECK_FALSE(qf::CronExpr::parse("0 0 30 2 *", {}, ec));
  CHECK(ec == qf::errc::never_fires);
}

TEST_CASE("malformed input of any kind is an error, never a crash or a hang", "[cron]") {
  const char* samples[] = {"*/*", "-", "- - - - -", "1-", "-1 * * * *", "1-2-3 * * * *", "H( * * * *",
                           "H(5) * * * *", "H(9-1) * * * *", "L * * * *", "* * L-31 * *", "* * 32W * *",
                           "* * * * L", "* * * * #", "* * * * 1#", "99999999999999999999 * * * *",
                           "*/99999999999 * * * *", "@every", "@", "* * * * * * * *", "\t\t", "* * * * 1/0",
                           "0 0 * * 0-7/9", "é * * * *", "H * * * * * H"};
  for (const char* s : samples) {
    INFO(s);
    qf::error_code ec;
    qf::ValidationError detail;
    CHECK_FALSE(qf::CronExpr::parse(s, {}, ec, &detail));
    CHECK(ec);
    CHECK_FALSE(detail.message().empty());
  }
  const std::string huge(100000, '*');
  qf::error_code ec;
  CHECK_FALSE(qf::CronExpr::parse(huge, {}, ec));
  std::string long_list = "0";
  for (int i = 0; i < 100; ++i) long_list += "," + std::to_string(i % 60);
  CHECK(qf::CronExpr::parse(long_list + " * * * *", {}, ec));
}

TEST_CASE("fixed-time jobs follow the DST policy and others follow elapsed time", "[cron][dst]") {
  auto ny = in_zone("America/New_York");
  // Spring forward 2026-03-08: 02:00 EST -> 03:00 EDT; 02:30 does not exist.
  CHECK(fires("30 2 * * *", "2026-03-07T12:00:00Z", 2, ny) ==
        V{"2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"});
  auto skip = ny;
  skip.gap = qf::DstGapPolicy::skip;
  CHECK(fires("30 2 * * *", "2026-03-07T12:00:00Z", 1, skip) == V{"2026-03-09T06:30:00Z"});
  // Fall back 2026-11-01: 01:00-01:59 happens twice (EDT then EST).
  CHECK(fires("30 1 * * *", "2026-10-31T12:00:00Z", 2, ny) ==
        V{"2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"});
  auto last = ny;
  last.overlap = qf::DstOverlapPolicy::last;
  CHECK(fires("30 1 * * *", "2026-10-31T12:00:00Z", 1, last) == V{"2026-11-01T06:30:00Z"});
  auto both = ny;
  both.overlap = qf::DstOverlapPolicy::both;
  CHECK(fires("30 1 * * *", "2026-10-31T12:00:00Z", 2, both) ==
        V{"2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z"});
  // Not fixed: every reading that matches, twice in the repeated hour.
  CHECK(fires("*/30 1 * * *", "2026-11-01T04:00:00Z", 4, ny) ==
        V{"2026-11-01T05:00:00Z", "2026-11-01T05:30:00Z", "2026-11-01T06:00:00Z",
          "2026-11-01T06:30:00Z"});
  // ...and not at all in the skipped one.
  CHECK(fires("0 * * * *", "2026-03-08T05:30:00Z", 2, ny) ==
        V{"2026-03-08T06:00:00Z", "2026-03-08T07:00:00Z"});  // 01:00 EST, 03:00 EDT
}

TEST_CASE("Lord Howe's 30-minute shift", "[cron][dst]") {
  // 2026-10-04 02:00 LHST (+10:30) -> 02:30 LHDT (+11:00); 2026-04-05 02:00 LHDT -> 01:30 LHST.
  auto lh = in_zone("Australia/Lord_Howe");
  CHECK(fires("15 2 * * *", "2026-10-03T12:00:00Z", 2, lh) ==
        V{"2026-10-03T15:30:00Z", "2026-10-04T15:15:00Z"});
  CHECK(fires("45 1 * * *", "2026-04-04T12:00:00Z", 2, lh) ==
        V{"2026-04-04T14:45:00Z", "2026-04-05T15:15:00Z"});
}

TEST_CASE("describe speaks plainly", "[cron]") {
  CHECK(qf::CronExpr::parse("0 2 * * *").describe() == "At 02:00, every day");
  CHECK(qf::CronExpr::parse("30 9 * * MON-FRI").describe() == "At 09:30, Monday through Friday");
  CHECK(qf::CronExpr::parse("*/15 * * * *").describe() == "Every 15 minutes, every day");
  CHECK(qf::CronExpr::parse("0 0 L * *").describe() == "At 00:00, on the last day of the month");
  CHECK(qf::CronExpr::parse("0 0 1 1 *").describe() == "At 00:00, on the 1st of the month, in January");
}
