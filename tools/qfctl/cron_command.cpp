// SPDX-License-Identifier: Apache-2.0
// `qfctl cron next` and `qfctl cron describe`: preview a schedule exactly as the scheduler
// will run it, including what the DST rules do.
#include <iostream>
#include <memory>

#include <date/tz.h>
#include <fmt/format.h>

#include <quartzflow/schedule.hpp>

#include "commands.hpp"

namespace qfctl {
namespace {

namespace qf = quartzflow;

struct CronArgs {
  std::vector<std::string> words;
  std::string time_zone = "UTC";
  std::string from;
  std::size_t count = 5;
  std::string name;
  std::string gap = "shift";
  std::string overlap = "first";
  bool explain = false;
};

std::string joined(const std::vector<std::string>& words) {
  std::string text;
  for (const auto& w : words) text += (text.empty() ? "" : " ") + w;
  return text;
}

qf::Schedule make_schedule(const CronArgs& args) {
  qf::error_code ec;
  qf::ValidationError detail;
  auto spec = qf::ScheduleSpec::from_text(joined(args.words), ec, &detail);
  if (!spec) throw CommandFailure{k_exit_invalid_input, detail.message()};
  spec->time_zone = args.time_zone;
  spec->gap = args.gap == "skip" ? qf::DstGapPolicy::skip : qf::DstGapPolicy::shift;
  spec->overlap = args.overlap == "last"   ? qf::DstOverlapPolicy::last
                  : args.overlap == "both" ? qf::DstOverlapPolicy::both
                                           : qf::DstOverlapPolicy::first;
  auto schedule = qf::Schedule::create(*spec, args.name, ec, &detail);
  if (!schedule) throw CommandFailure{k_exit_invalid_input, detail.message()};
  return std::move(*schedule);
}

std::string offset_text(std::chrono::seconds offset) {
  const auto total = offset.count();
  const auto magnitude = total < 0 ? -total : total;
  return fmt::format("{}{:02}:{:02}", total < 0 ? '-' : '+', magnitude / 3600, magnitude % 3600 / 60);
}

std::string rule_text(const qf::ExplainedFire& fire, const CronArgs& args, bool fixed_time) {
  switch (fire.rule) {
    case qf::DstRule::gap_shifted:
      return "DST gap: the local time does not exist; fires at the first instant after the "
             "gap (--gap=shift)";
    case qf::DstRule::overlap_first:
      return fixed_time ? fmt::format("DST overlap: local time happens twice; first occurrence "
                                      "(--overlap={})", args.overlap)
                        : "DST overlap: local time happens twice; fires in both (elapsed time)";
    case qf::DstRule::overlap_second:
      return fixed_time ? fmt::format("DST overlap: local time happens twice; second occurrence "
                                      "(--overlap={})", args.overlap)
                        : "DST overlap: local time happens twice; fires in both (elapsed time)";
    case qf::DstRule::none:
      break;
  }
  if (fire.near_transition)
    return fixed_time ? fmt::format("next to a DST transition (fixed time: --gap={} --overlap={})",
                                    args.gap, args.overlap)
                      : "next to a DST transition (follows elapsed time)";
  return {};
}

void run_next(const CronArgs& args) {
  const auto schedule = make_schedule(args);
  qf::Instant from = std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now());
  if (!args.from.empty()) {
    const auto parsed = qf::parse_rfc3339(args.from);
    if (!parsed)
      throw CommandFailure{k_exit_invalid_input,
                           fmt::format("invalid --from \"{}\": expected an RFC 3339 instant such as "
                                       "2026-03-08T07:00:00Z", args.from)};
    from = *parsed;
  }
  std::string out;
  if (!args.explain) {
    for (const auto& fire : schedule.next_n(from, args.count)) out += qf::format_rfc3339(fire.scheduled) + "\n";
    std::cout << out << std::flush;
    return;
  }
  const auto* zone = args.time_zone == "UTC" ? nullptr : date::locate_zone(args.time_zone);
  qf::Instant after = from;
  for (std::size_t i = 0; i < args.count; ++i) {
    std::optional<qf::ExplainedFire> fire;
    if (const auto* cron = schedule.cron()) {
      fire = cron->explain_next(after);
    } else if (auto next = schedule.next(after, {after, after, i})) {
      const auto info = zone ? zone->get_info(next->scheduled) : date::sys_info{};
      fire = qf::ExplainedFire{next->scheduled, zone ? info.offset : std::chrono::seconds{0},
                               zone ? info.abbrev : "UTC", qf::DstRule::none, false};
    }
    if (!fire) break;
    const auto local = date::local_seconds{fire->at.time_since_epoch() + fire->utc_offset};
    std::string line = fmt::format("{}  {}{} {}", qf::format_rfc3339(fire->at),
                                   date::format("%FT%T", local), offset_text(fire->utc_offset),
                                   fire->abbreviation);
    const bool fixed_time = schedule.cron() && schedule.cron()->is_fixed_time();
    if (auto note = rule_text(*fire, args, fixed_time); !note.empty()) line += "  " + note;
    out += line + "\n";
    after = fire->at;
  }
  std::cout << out << std::flush;
}

void run_describe(const CronArgs& args) {
  const auto schedule = make_schedule(args);
  std::cout << schedule.describe() << "\n";
}

void add_common(CLI::App& cmd, CronArgs& args) {
  cmd.add_option("expression", args.words,
                 "cron expression (quote it), macro, or @every/@delay/@once/@manual form")
      ->required()
      ->expected(1, 7);
  cmd.add_option("--tz", args.time_zone, "IANA time zone the expression is read in")
      ->capture_default_str();
  cmd.add_option("--name", args.name, "task name: the seed of H fields and jitter");
  cmd.add_option("--gap", args.gap, "fixed-time jobs on a skipped local time")
      ->check(CLI::IsMember({"shift", "skip"}))
      ->capture_default_str();
  cmd.add_option("--overlap", args.overlap, "fixed-time jobs on a repeated local time")
      ->check(CLI::IsMember({"first", "last", "both"}))
      ->capture_default_str();
}

}  // namespace

void add_cron_commands(CLI::App& app) {
  auto* cron = app.add_subcommand("cron", "preview and explain schedules");
  cron->require_subcommand(1);

  auto args = std::make_shared<CronArgs>();
  auto* next = cron->add_subcommand("next", "print the next fires as RFC 3339 UTC instants");
  add_common(*next, *args);
  next->add_option("--from", args->from, "start strictly after this RFC 3339 instant (default now)");
  next->add_option("--count", args->count, "how many fires")->check(CLI::Range(1, 100000))->capture_default_str();
  next->add_flag("--explain", args->explain, "show local time, offset and the DST rule applied");
  next->callback([args] { run_next(*args); });

  auto describe_args = std::make_shared<CronArgs>();
  auto* describe = cron->add_subcommand("describe", "describe a schedule in plain language");
  add_common(*describe, *describe_args);
  describe->callback([describe_args] { run_describe(*describe_args); });
}

}  // namespace qfctl
