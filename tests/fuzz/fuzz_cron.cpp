// SPDX-License-Identifier: Apache-2.0
// Fuzzes the cron parser and search: arbitrary text (an optional second line names the time
// zone) is parsed; a parsed expression's next fires after fixed instants are strictly later,
// in order and before 2200, its previous fire is strictly earlier, and it describes itself.
// The same text also goes through ScheduleSpec::from_text and Schedule::create.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <string>
#include <string_view>

#include <quartzflow/cron.hpp>
#include <quartzflow/schedule.hpp>

namespace qf = quartzflow;
using namespace std::chrono_literals;

namespace {

[[noreturn]] void fail(const char* what, std::string_view text) {
  std::fprintf(stderr, "invariant broken: %s for %.*s\n", what, static_cast<int>(text.size()), text.data());
  std::abort();
}

// 2026-03-08T01:59:59Z, just before a US DST change; 2026-10-25T00:30:00Z, an EU overlap;
// 1970-01-01; 2199-12-31T23:00:00Z, the end of the search range.
constexpr qf::Instant k_instants[] = {qf::Instant{1772935199s}, qf::Instant{1792887000s}, qf::Instant{0s},
                                      qf::Instant{7258114800s}};
constexpr qf::Instant k_search_end{7258118400s};  // 2200-01-01T00:00:00Z

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 512) return -1;  // expressions are short; longer input only slows the search
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto newline = input.find('\n');
  const std::string_view text = input.substr(0, newline);
  qf::CronOptions options;
  options.hash_key = "fuzz-task";
  if (newline != std::string_view::npos) options.time_zone = std::string(input.substr(newline + 1));
  if (size > 0) {
    options.gap = (data[size - 1] & 1) ? qf::DstGapPolicy::skip : qf::DstGapPolicy::shift;
    options.overlap = static_cast<qf::DstOverlapPolicy>((data[size - 1] >> 1) % 3);
  }

  qf::error_code ec;
  qf::ValidationError detail;
  if (auto expr = qf::CronExpr::parse(text, options, ec, &detail)) {
    if (ec) fail("parse returned an expression and an error", input);
    (void)expr->describe();
    (void)expr->is_fixed_time();
    for (const qf::Instant after : k_instants) {
      const auto next = expr->next(after);
      if (next && *next <= after) fail("next fire not after the instant", input);
      if (next && *next >= k_search_end) fail("next fire past 2199", input);
      const auto explained = expr->explain_next(after);
      if (next.has_value() != explained.has_value() || (next && explained->at != *next))
        fail("explain_next disagrees with next", input);
      if (next) {
        if (const auto back = expr->prev(*next); back && *back >= *next) fail("prev not before the fire", input);
      }
      const auto fires = expr->next_n(after, 4);
      qf::Instant previous = after;
      for (const qf::Instant fire : fires) {
        if (fire <= previous) fail("next_n not strictly increasing", input);
        previous = fire;
      }
      if (!fires.empty() && (!next || fires.front() != *next)) fail("next_n disagrees with next", input);
    }
  } else if (!ec) {
    fail("parse failed without an error", input);
  }

  ec.clear();
  if (auto spec = qf::ScheduleSpec::from_text(text, ec)) {
    spec->time_zone = options.time_zone;
    if (auto schedule = qf::Schedule::create(*spec, "fuzz-task", ec)) {
      (void)schedule->describe();
      const qf::Instant after = k_instants[0];
      if (const auto fire = schedule->next(after); fire && fire->scheduled <= after)
        fail("schedule fire not after the instant", input);
      (void)schedule->misfires(after, after + 3h, qf::MisfirePolicy::fire_all, 10, 1000);
    }
  }
  return 0;
}
