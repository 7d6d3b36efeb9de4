// SPDX-License-Identifier: Apache-2.0
// CronExpr and Schedule for Python: instants cross the boundary as Unix seconds (the
// package turns them into zone-aware datetimes), policies as their lower-case names.
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <pybind11/stl.h>

#include <quartzflow/cron.hpp>
#include <quartzflow/schedule.hpp>

#include "native.hpp"

namespace py = pybind11;

namespace quartzflow::python {

namespace {

using UnixSeconds = std::int64_t;

Instant to_instant(UnixSeconds s) { return Instant{std::chrono::seconds{s}}; }
UnixSeconds to_unix(Instant t) { return t.time_since_epoch().count(); }

DstGapPolicy gap_from(const std::string& name) {
  if (name == "shift") return DstGapPolicy::shift;
  if (name == "skip") return DstGapPolicy::skip;
  raise_invalid({"DST gap policy \"" + name + "\"", "gap", "must be one of shift, skip"});
}

DstOverlapPolicy overlap_from(const std::string& name) {
  if (name == "first") return DstOverlapPolicy::first;
  if (name == "last") return DstOverlapPolicy::last;
  if (name == "both") return DstOverlapPolicy::both;
  raise_invalid({"DST overlap policy \"" + name + "\"", "overlap", "must be one of first, last, both"});
}

const char* gap_name(DstGapPolicy p) { return p == DstGapPolicy::skip ? "skip" : "shift"; }
const char* overlap_name(DstOverlapPolicy p) {
  switch (p) {
    case DstOverlapPolicy::last: return "last";
    case DstOverlapPolicy::both: return "both";
    default: return "first";
  }
}

const char* rule_name(DstRule rule) {
  switch (rule) {
    case DstRule::gap_shifted: return "gap_shifted";
    case DstRule::overlap_first: return "overlap_first";
    case DstRule::overlap_second: return "overlap_second";
    default: return "none";
  }
}

const char* kind_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::cron: return "cron";
    case ScheduleKind::interval: return "interval";
    case ScheduleKind::fixed_delay: return "fixed_delay";
    case ScheduleKind::once: return "once";
    default: return "manual";
  }
}

ScheduleKind kind_from(const std::string& name) {
  if (name == "cron") return ScheduleKind::cron;
  if (name == "interval") return ScheduleKind::interval;
  if (name == "fixed_delay") return ScheduleKind::fixed_delay;
  if (name == "once") return ScheduleKind::once;
  if (name == "manual") return ScheduleKind::manual;
  raise_invalid({"schedule kind \"" + name + "\"", "kind", "must be one of cron, interval, fixed_delay, once, manual"});
}

CronExpr parse_cron(const std::string& text, const std::string& time_zone, const std::string& gap,
                    const std::string& overlap, const std::string& hash_key) {
  CronOptions options;
  options.time_zone = time_zone;
  options.hash_key = hash_key;
  options.gap = gap_from(gap);
  options.overlap = overlap_from(overlap);
  error_code ec;
  ValidationError detail;
  std::optional<CronExpr> expr;
  {
    py::gil_scoped_release unlocked;
    expr = CronExpr::parse(text, options, ec, &detail);
  }
  if (!expr) raise_invalid(detail);
  return std::move(*expr);
}

py::dict spec_dict(const ScheduleSpec& spec) {
  py::dict d;
  d["kind"] = kind_name(spec.kind);
  d["cron"] = spec.cron;
  d["period"] = spec.period.count();
  d["at"] = spec.at ? py::cast(to_unix(*spec.at)) : py::none();
  d["time_zone"] = spec.time_zone;
  d["gap"] = gap_name(spec.gap);
  d["overlap"] = overlap_name(spec.overlap);
  d["window_start"] = spec.window_start ? py::cast(to_unix(*spec.window_start)) : py::none();
  d["window_end"] = spec.window_end ? py::cast(to_unix(*spec.window_end)) : py::none();
  d["max_runs"] = spec.max_runs;
  d["jitter"] = spec.jitter.count();
  return d;
}

Schedule create_schedule(const ScheduleSpec& spec, const std::string& name) {
  error_code ec;
  ValidationError detail;
  auto schedule = Schedule::create(spec, name, ec, &detail);
  if (!schedule) raise_invalid(detail);
  return std::move(*schedule);
}

py::object fire_tuple(const std::optional<Fire>& fire) {
  if (!fire) return py::none();
  return py::make_tuple(to_unix(fire->scheduled), to_unix(fire->start_at));
}

}  // namespace

void bind_cron(py::module_& m) {
  py::class_<CronExpr>(m, "CronExpr", "A parsed cron expression bound to a time zone and DST policy.")
      .def_static("parse", &parse_cron, py::arg("text"), py::arg("time_zone") = "UTC", py::arg("gap") = "shift",
                  py::arg("overlap") = "first", py::arg("hash_key") = "",
                  "Parses `text`; raises InvalidSchedule naming the field and the reason.")
      .def(
          "next_n",
          [](const CronExpr& e, UnixSeconds after, std::size_t count) {
            py::gil_scoped_release unlocked;
            std::vector<UnixSeconds> out;
            for (Instant t : e.next_n(to_instant(after), count)) out.push_back(to_unix(t));
            return out;
          },
          py::arg("after"), py::arg("count"), "Up to `count` fires strictly after `after` (Unix seconds).")
      .def(
          "prev",
          [](const CronExpr& e, UnixSeconds before) -> std::optional<UnixSeconds> {
            py::gil_scoped_release unlocked;
            auto t = e.prev(to_instant(before));
            return t ? std::optional<UnixSeconds>(to_unix(*t)) : std::nullopt;
          },
          py::arg("before"), "The last fire strictly before `before`, or None.")
      .def(
          "explain_next",
          [](const CronExpr& e, UnixSeconds after) -> py::object {
            std::optional<ExplainedFire> fire;
            {
              py::gil_scoped_release unlocked;
              fire = e.explain_next(to_instant(after));
            }
            if (!fire) return py::none();
            return py::make_tuple(to_unix(fire->at), fire->utc_offset.count(), fire->abbreviation,
                                  rule_name(fire->rule), fire->near_transition);
          },
          py::arg("after"), "(at, utc_offset_seconds, abbreviation, rule, near_transition) of the next fire, or None.")
      .def("describe", &CronExpr::describe)
      .def_property_readonly("text", &CronExpr::text)
      .def_property_readonly("time_zone", [](const CronExpr& e) { return e.options().time_zone; })
      .def_property_readonly("gap", [](const CronExpr& e) { return gap_name(e.options().gap); })
      .def_property_readonly("overlap", [](const CronExpr& e) { return overlap_name(e.options().overlap); })
      .def_property_readonly("hash_key", [](const CronExpr& e) { return e.options().hash_key; })
      .def_property_readonly("is_fixed_time", &CronExpr::is_fixed_time);

  py::class_<Schedule>(m, "Schedule", "A validated schedule (cron, interval, fixed delay, once, manual).")
      .def_static(
          "create",
          [](const std::string& kind, const std::string& cron, std::int64_t period, std::optional<UnixSeconds> at,
             const std::string& time_zone, const std::string& gap, const std::string& overlap,
             std::optional<UnixSeconds> window_start, std::optional<UnixSeconds> window_end, std::uint64_t max_runs,
             std::int64_t jitter, const std::string& name) {
            ScheduleSpec spec;
            spec.kind = kind_from(kind);
            spec.cron = cron;
            spec.period = std::chrono::seconds{period};
            if (at) spec.at = to_instant(*at);
            spec.time_zone = time_zone;
            spec.gap = gap_from(gap);
            spec.overlap = overlap_from(overlap);
            if (window_start) spec.window_start = to_instant(*window_start);
            if (window_end) spec.window_end = to_instant(*window_end);
            spec.max_runs = max_runs;
            spec.jitter = std::chrono::seconds{jitter};
            return create_schedule(spec, name);
          },
          py::arg("kind"), py::arg("cron") = "", py::arg("period") = 0, py::arg("at") = py::none(),
          py::arg("time_zone") = "UTC", py::arg("gap") = "shift", py::arg("overlap") = "first",
          py::arg("window_start") = py::none(), py::arg("window_end") = py::none(), py::arg("max_runs") = 0,
          py::arg("jitter") = 0, py::arg("name") = "")
      .def_static(
          "from_text",
          [](const std::string& text, const std::string& time_zone, const std::string& name) {
            error_code ec;
            ValidationError detail;
            auto spec = ScheduleSpec::from_text(text, ec, &detail);
            if (!spec) raise_invalid(detail);
            spec->time_zone = time_zone;
            return create_schedule(*spec, name);
          },
          py::arg("text"), py::arg("time_zone") = "UTC", py::arg("name") = "",
          "`*/5 * * * *`, `@every 90s`, `@delay 5m`, `@once 2026-12-01T00:00:00Z`, `@manual`.")
      .def(
          "next",
          [](const Schedule& s, UnixSeconds after, std::optional<UnixSeconds> last_scheduled,
             std::optional<UnixSeconds> last_run_end, std::uint64_t runs) {
            ScheduleState state;
            if (last_scheduled) state.last_scheduled = to_instant(*last_scheduled);
            if (last_run_end) state.last_run_end = to_instant(*last_run_end);
            state.runs = runs;
            std::optional<Fire> fire;
            {
              py::gil_scoped_release unlocked;
              fire = s.next(to_instant(after), state);
            }
            return fire_tuple(fire);
          },
          py::arg("after"), py::arg("last_scheduled") = py::none(), py::arg("last_run_end") = py::none(),
          py::arg("runs") = 0, "(scheduled, start_at) of the first fire after `after`, or None.")
      .def(
          "next_n",
          [](const Schedule& s, UnixSeconds after, std::size_t count) {
            std::vector<Fire> fires;
            {
              py::gil_scoped_release unlocked;
              fires = s.next_n(to_instant(after), count);
            }
            std::vector<std::pair<UnixSeconds, UnixSeconds>> out;
            for (const Fire& f : fires) out.emplace_back(to_unix(f.scheduled), to_unix(f.start_at));
            return out;
          },
          py::arg("after"), py::arg("count"), "Up to `count` (scheduled, start_at) pairs after `after`.")
      .def("describe", &Schedule::describe)
      .def("spec", [](const Schedule& s) { return spec_dict(s.spec()); })
      .def_property_readonly("cron", [](const Schedule& s) -> py::object {
        if (const CronExpr* e = s.cron()) return py::cast(*e);
        return py::none();
      });
}

}  // namespace quartzflow::python
