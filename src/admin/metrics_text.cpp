// SPDX-License-Identifier: Apache-2.0
// The coordinator's /metrics text: scheduler, dispatcher, store and HTTP counters, the runs
// by task, group and status (bounded, see RunMetrics), latency histograms, cluster state.
#include <fmt/format.h>

#include <quartzflow/log.hpp>

#include "admin_api.hpp"

namespace quartzflow::detail {

void AdminApi::count_run(const v1::Execution& record) {
  // The group label is the task's first group as the catalog has it when the task gets its
  // series (a record from an agent carries the agent's group, which may differ).
  runs_.count(record, [this, &record](const std::string& task_id) {
    const auto task = coordinator_.dispatcher().task(task_id);
    if (!task) return record.group_id();
    return task->group_ids().empty() ? std::string{} : task->group_ids(0);
  });
}

void AdminApi::load_last_successes() {
  struct LastSuccess {
    std::string task_id;
    std::string group;
    std::int64_t ended_unix_ms = 0;
  };
  auto found = std::make_shared<std::vector<LastSuccess>>();
  coordinator_.store().read(
      [found, limit = options_.max_task_series](StoreTransaction& tx, error_code&) {
        // One indexed query per task, on the store's reader thread, once at start.
        // At most `limit` queries: the first tasks of the catalog, whether they succeeded or not.
        std::size_t asked = 0;
        for (const auto& task : tx.all_tasks()) {
          if (asked++ >= limit) break;
          v1::ListExecutionsRequest request;
          request.set_task_id(task.id());
          request.add_status(v1::EXECUTION_STATUS_SUCCESS);
          request.set_sort("-started_unix_ms");
          request.set_page_size(1);
          auto listing = tx.list_executions(request);
          if (listing.items.empty()) continue;
          const auto& latest = listing.items.front();
          found->push_back({task.id(), task.group_ids().empty() ? std::string{} : task.group_ids(0),
                            latest.ended_unix_ms() > 0 ? latest.ended_unix_ms() : latest.updated_unix_ms()});
        }
      },
      [weak = weak_from_this(), found](error_code ec) {
        auto self = weak.lock();
        if (!self) return;
        if (ec) return logger()->warn("metrics: reading the tasks' last successes failed: {}", ec.message());
        for (const auto& f : *found) self->runs_.note_last_success(f.task_id, f.group, f.ended_unix_ms);
      });
}

std::string AdminApi::metrics_text() const {
  std::string out;
  const auto& sched = coordinator_.scheduler().stats();
  const auto& disp = coordinator_.dispatcher().stats();
  const auto store = coordinator_.store().metrics();
  const auto counter = [&out](std::string_view name, std::string_view help, std::uint64_t value) {
    out += fmt::format("# HELP {0} {1}\n# TYPE {0} counter\n{0} {2}\n", name, help, value);
  };
  counter("qf_scheduler_fires_total", "Nominal fires the scheduler handled.", sched.fires);
  counter("qf_scheduler_dispatched_total", "Runs an agent accepted.", sched.dispatched);
  counter("qf_scheduler_failovers_total", "Refusals that moved a run to another agent.", sched.failovers);
  counter("qf_scheduler_not_dispatched_total", "Runs no agent took.", sched.not_dispatched);
  counter("qf_push_sent_total", "Config pushes sent, re-pushes included.", disp.pushes_sent);
  counter("qf_push_failures_total", "Config pushes never acknowledged.", disp.pushes_failed);
  counter("qf_records_ingested_total", "Execution records stored from agents.", disp.records_ingested);
  counter("qf_runs_lost_total", "Runs failed as agent lost.", disp.runs_lost);
  counter("qf_protocol_errors_total", "Malformed or unexpected agent messages.", disp.protocol_errors);
  counter("qf_store_commits_total", "SQL transactions committed.", store.commits);
  counter("qf_store_transactions_failed_total", "Store transactions rolled back.", store.transactions_failed);
  // Every final record this coordinator stored: its own (MISSED, SKIPPED, not dispatched,
  // agent lost, cancelled before dispatch) and those agents synced, each once.
  runs_.write(out, "qf_");
  out += fmt::format(
      "# HELP qf_agents_online Agents with an open session.\n# TYPE qf_agents_online gauge\nqf_agents_online {}\n",
      coordinator_.dispatcher().online_agents().size());
  out +=
      "# HELP qf_dispatch_latency_seconds From a run's scheduled instant to its start on an agent.\n"
      "# TYPE qf_dispatch_latency_seconds histogram\n";
  dispatch_latency_.print(out, "qf_dispatch_latency_seconds", "");
  out +=
      "# HELP qf_store_latency_seconds Store reads made by the admin API, queue to completion.\n"
      "# TYPE qf_store_latency_seconds histogram\n";
  store_latency_.print(out, "qf_store_latency_seconds", "");
  out +=
      "# HELP qf_http_request_duration_seconds Admin API requests, arrival to response.\n"
      "# TYPE qf_http_request_duration_seconds histogram\n";
  request_latency_.print(out, "qf_http_request_duration_seconds", "");
  out += "# HELP qf_http_responses_total Admin API responses by HTTP status.\n# TYPE qf_http_responses_total counter\n";
  for (const auto& [code, n] : responses_by_code_)
    out += fmt::format("qf_http_responses_total{{code=\"{}\"}} {}\n", code, n);
  if (server_stats_) {
    const auto s = server_stats_();
    counter("qf_http_connections_total", "Admin connections accepted.", s.connections);
    counter("qf_http_connections_refused_total", "Admin connections over the limit.", s.connections_refused);
    counter("qf_events_clients_dropped_total", "Event WebSocket clients dropped for falling behind.",
            s.websocket_dropped);
  }
  out += fmt::format(
      "# HELP qf_events_clients Event WebSocket clients connected.\n# TYPE qf_events_clients gauge\nqf_events_clients "
      "{}\n",
      events_.size());
  out += cluster_metrics_text();
  if (options_.alerts.metrics_text) out += options_.alerts.metrics_text();
  return out;
}

}  // namespace quartzflow::detail
