// SPDX-License-Identifier: Apache-2.0
// RunMetrics: final execution records counted by task (bounded), group and status, the
// last success of each task, and the MISSED / SKIPPED totals, as Prometheus text.
#include <algorithm>

#include <fmt/format.h>

#include <quartzflow/execution_status.hpp>
#include <quartzflow/metrics.hpp>

#include "../common/enum_names.hpp"

namespace quartzflow {

namespace {

constexpr std::string_view k_other = "_other";
constexpr std::string_view k_no_group = "_none";

std::size_t status_index(v1::ExecutionStatus status) {
  const auto& all = RunMetrics::k_final_statuses;
  return static_cast<std::size_t>(std::find(all.begin(), all.end(), status) - all.begin());
}

const std::string& status_label(v1::ExecutionStatus status) {
  // Built once: the short names never change (`success`, `missed`, ...).
  static const auto labels = [] {
    std::array<std::string, RunMetrics::k_final_statuses.size()> out;
    const auto& names = detail::EnumNames::of(v1::ExecutionStatus_descriptor());
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = names.short_name(RunMetrics::k_final_statuses[i]);
    return out;
  }();
  return labels[status_index(status)];
}

/// `{task="x",group="y",` (the caller closes it), the group left out when not labelled.
std::string task_labels(std::string_view task, std::string_view group, bool with_group) {
  std::string out = "{task=\"";
  append_label_value(out, task);
  out += '"';
  if (with_group) {
    out += ",group=\"";
    append_label_value(out, group.empty() ? k_no_group : group);
    out += '"';
  }
  return out;
}

}  // namespace

void append_label_value(std::string& out, std::string_view value) {
  for (const char c : value) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      default: out += c;
    }
  }
}

RunMetrics::RunMetrics(RunMetricsOptions options) : options_(options) {
  options_.max_task_series = std::max<std::size_t>(1, options_.max_task_series);
  other_.group = std::string(k_other);
}

void RunMetrics::count(const v1::Execution& record,
                       const std::function<std::string(const std::string& task_id)>& group_of) {
  if (!is_final(record.status())) return;
  const auto index = status_index(record.status());
  if (index >= k_final_statuses.size()) return;
  TaskSeries* series = nullptr;
  if (auto it = tasks_.find(record.task_id()); it != tasks_.end()) {
    series = &it->second;
  } else if (tasks_.size() < options_.max_task_series) {
    TaskSeries fresh;
    fresh.group = group_of ? group_of(record.task_id()) : record.group_id();
    series = &tasks_.emplace(record.task_id(), std::move(fresh)).first->second;
  } else {
    series = &other_;
  }
  ++series->runs[index];
  if (record.status() == v1::EXECUTION_STATUS_SUCCESS) {
    const std::int64_t ended = record.ended_unix_ms() > 0 ? record.ended_unix_ms() : record.updated_unix_ms();
    series->last_success_unix_ms = std::max(series->last_success_unix_ms, ended);
  }
  if (record.status() == v1::EXECUTION_STATUS_MISSED) ++missed_;
  if (record.status() == v1::EXECUTION_STATUS_SKIPPED) ++skipped_by_reason_[record.skip_reason()];
}

void RunMetrics::note_last_success(const std::string& task_id, const std::string& group, std::int64_t ended_unix_ms) {
  auto it = tasks_.find(task_id);
  if (it == tasks_.end()) {
    if (tasks_.size() >= options_.max_task_series) return;
    TaskSeries fresh;
    fresh.group = group;
    it = tasks_.emplace(task_id, std::move(fresh)).first;
  }
  it->second.last_success_unix_ms = std::max(it->second.last_success_unix_ms, ended_unix_ms);
}

void RunMetrics::write(std::string& out, std::string_view prefix) const {
  const bool group = options_.group_label;
  out += fmt::format(
      "# HELP {0}runs_total Final execution records, by task{1} and status; tasks beyond the first {2} "
      "count under task=\"_other\".\n# TYPE {0}runs_total counter\n",
      prefix, group ? ", group" : "", options_.max_task_series);
  const auto runs = [&](std::string_view task, const TaskSeries& series) {
    const std::string labels = task_labels(task, series.group, group);
    for (std::size_t i = 0; i < k_final_statuses.size(); ++i)
      out += fmt::format("{}runs_total{},status=\"{}\"}} {}\n", prefix, labels, status_label(k_final_statuses[i]),
                         series.runs[i]);
  };
  for (const auto& [task, series] : tasks_) runs(task, series);
  runs(k_other, other_);

  out += fmt::format(
      "# HELP {0}task_last_success_timestamp_seconds When the task's latest known SUCCESS ended "
      "(tasks with series of their own).\n"
      "# TYPE {0}task_last_success_timestamp_seconds gauge\n",
      prefix);
  for (const auto& [task, series] : tasks_) {
    if (series.last_success_unix_ms <= 0) continue;
    out +=
        fmt::format("{}task_last_success_timestamp_seconds{}}} {:.3f}\n", prefix,
                    task_labels(task, series.group, group), static_cast<double>(series.last_success_unix_ms) / 1000.0);
  }

  out += fmt::format(
      "# HELP {0}runs_missed_total MISSED records (fires owed and not run under the misfire "
      "policy).\n# TYPE {0}runs_missed_total counter\n{0}runs_missed_total {1}\n",
      prefix, missed_);
  out += fmt::format(
      "# HELP {0}runs_skipped_total SKIPPED records, by skip reason.\n"
      "# TYPE {0}runs_skipped_total counter\n",
      prefix);
  const auto& reasons = detail::EnumNames::of(v1::SkipReason_descriptor());
  const auto* type = v1::SkipReason_descriptor();
  for (int i = 0; i < type->value_count(); ++i) {
    const int number = type->value(i)->number();
    const auto it = skipped_by_reason_.find(number);
    const std::uint64_t n = it == skipped_by_reason_.end() ? 0 : it->second;
    out += fmt::format("{}runs_skipped_total{{reason=\"{}\"}} {}\n", prefix, reasons.short_name(number), n);
  }
}

}  // namespace quartzflow
