// SPDX-License-Identifier: Apache-2.0
// The bridges between the protobuf `Schedule` and `ScheduleSpec`: a plain field-by-field
// mapping, without validation (Schedule::create does that).
#include <quartzflow/task.hpp>

namespace quartzflow {

namespace {

using std::chrono::seconds;

// Schedules resolve to whole seconds; a stray sub-second part is dropped toward the past so
// that negative instants round the same way as positive ones.
Instant from_unix_ms(std::int64_t ms) {
  std::int64_t whole = ms / 1000;
  if (ms % 1000 < 0) --whole;
  return Instant{seconds{whole}};
}

std::int64_t to_unix_ms(Instant t) { return t.time_since_epoch().count() * 1000; }

}  // namespace

ScheduleSpec schedule_spec_from_proto(const v1::Schedule& schedule) {
  ScheduleSpec spec;
  switch (schedule.kind_case()) {
    case v1::Schedule::kCron:
      spec.kind = ScheduleKind::cron;
      spec.cron = schedule.cron();
      break;
    case v1::Schedule::kIntervalSeconds:
      spec.kind = ScheduleKind::interval;
      spec.period = seconds{schedule.interval_seconds()};
      break;
    case v1::Schedule::kFixedDelaySeconds:
      spec.kind = ScheduleKind::fixed_delay;
      spec.period = seconds{schedule.fixed_delay_seconds()};
      break;
    case v1::Schedule::kOnceAtUnixMs:
      spec.kind = ScheduleKind::once;
      spec.at = from_unix_ms(schedule.once_at_unix_ms());
      break;
    case v1::Schedule::kManual:
    case v1::Schedule::KIND_NOT_SET:
      spec.kind = ScheduleKind::manual;
      break;
    case v1::Schedule::kAgentStart: spec.kind = ScheduleKind::agent_start; break;
  }
  spec.time_zone = schedule.time_zone().empty() ? std::string("UTC") : schedule.time_zone();
  spec.gap = schedule.dst_gap_policy() == v1::DST_GAP_POLICY_SKIP ? DstGapPolicy::skip : DstGapPolicy::shift;
  switch (schedule.dst_overlap_policy()) {
    case v1::DST_OVERLAP_POLICY_LAST:
      spec.overlap = DstOverlapPolicy::last;
      break;
    case v1::DST_OVERLAP_POLICY_BOTH:
      spec.overlap = DstOverlapPolicy::both;
      break;
    default:
      spec.overlap = DstOverlapPolicy::first;
      break;
  }
  if (schedule.window_start_unix_ms() != 0) spec.window_start = from_unix_ms(schedule.window_start_unix_ms());
  if (schedule.window_end_unix_ms() != 0) spec.window_end = from_unix_ms(schedule.window_end_unix_ms());
  spec.max_runs = schedule.max_runs();
  spec.jitter = seconds{schedule.jitter_seconds()};
  return spec;
}

void schedule_spec_to_proto(const ScheduleSpec& spec, v1::Schedule& out) {
  out.Clear();
  switch (spec.kind) {
    case ScheduleKind::manual:
      out.mutable_manual();
      break;
    case ScheduleKind::agent_start: out.mutable_agent_start(); break;
    case ScheduleKind::cron:
      out.set_cron(spec.cron);
      break;
    case ScheduleKind::interval:
      out.set_interval_seconds(static_cast<std::uint32_t>(spec.period.count()));
      break;
    case ScheduleKind::fixed_delay:
      out.set_fixed_delay_seconds(static_cast<std::uint32_t>(spec.period.count()));
      break;
    case ScheduleKind::once:
      out.set_once_at_unix_ms(spec.at ? to_unix_ms(*spec.at) : 0);
      break;
  }
  // UTC is the proto's empty default; keeping it empty keeps JSON and YAML output minimal.
  if (spec.time_zone != "UTC") out.set_time_zone(spec.time_zone);
  if (spec.gap == DstGapPolicy::skip) out.set_dst_gap_policy(v1::DST_GAP_POLICY_SKIP);
  switch (spec.overlap) {
    case DstOverlapPolicy::first:
      break;
    case DstOverlapPolicy::last:
      out.set_dst_overlap_policy(v1::DST_OVERLAP_POLICY_LAST);
      break;
    case DstOverlapPolicy::both:
      out.set_dst_overlap_policy(v1::DST_OVERLAP_POLICY_BOTH);
      break;
  }
  if (spec.window_start) out.set_window_start_unix_ms(to_unix_ms(*spec.window_start));
  if (spec.window_end) out.set_window_end_unix_ms(to_unix_ms(*spec.window_end));
  out.set_max_runs(spec.max_runs);
  out.set_jitter_seconds(static_cast<std::uint32_t>(spec.jitter.count()));
}

}  // namespace quartzflow
