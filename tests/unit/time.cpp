// SPDX-License-Identifier: Apache-2.0
// RFC 3339 instants and durations.
#include <catch2/catch.hpp>

#include <quartzflow/time.hpp>

namespace qf = quartzflow;
using std::chrono::seconds;

TEST_CASE("RFC 3339 instants round-trip and offsets are applied", "[time]") {
  const auto t = qf::parse_rfc3339("2026-03-08T07:00:00Z");
  REQUIRE(t);
  CHECK(qf::format_rfc3339(*t) == "2026-03-08T07:00:00Z");
  CHECK(qf::parse_rfc3339("2026-03-08T02:00:00-05:00") == t);
  CHECK(qf::parse_rfc3339("2026-03-08 07:00:00Z") == t);
  CHECK(qf::parse_rfc3339("2026-03-08t07:00:00z") == t);
  CHECK(t->time_since_epoch().count() == 1772953200);
}

TEST_CASE("malformed instants are refused", "[time]") {
  for (const char* s : {"", "2026-03-08", "2026-03-08T07:00Z", "2026-13-08T07:00:00Z", "2026-03-08T07:00:00",
                        "2026-03-08T07:00:00.5Z", "2026-03-08T07:00:00Zjunk", "yesterday",
                        // Found by fuzzing: date::parse reached a NaN (undefined behaviour) on it.
                        "2026-12-01T00:00.00Z", "2026-12-01T00:00:00+0100", "2026-12-01X00:00:00Z"}) {
    INFO(s);
    CHECK_FALSE(qf::parse_rfc3339(s));
  }
}

TEST_CASE("durations in Go style", "[time]") {
  CHECK(qf::parse_duration("90s") == seconds{90});
  CHECK(qf::parse_duration("1h30m") == seconds{5400});
  CHECK(qf::parse_duration("2d") == seconds{172800});
  CHECK(qf::parse_duration("1h0m5s") == seconds{3605});
  for (const char* s : {"", "5", "h", "1x", "-5s", "1.5h", "99999999999999999999s", "4000d"}) {
    INFO(s);
    CHECK_FALSE(qf::parse_duration(s));
  }
  CHECK(qf::format_duration(seconds{5400}) == "1h30m");
  CHECK(qf::format_duration(seconds{90}) == "1m30s");
  CHECK(qf::format_duration(seconds{172800}) == "2d");
}
