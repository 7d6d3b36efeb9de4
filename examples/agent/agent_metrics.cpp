// SPDX-License-Identifier: Apache-2.0
// qf-agent's /metrics: the library's RunMetrics and MetricsServer (plain Asio, no Beast)
// with the agent's own gauges.
#include "agent_metrics.hpp"

#include <fmt/format.h>

#include <quartzflow/version.hpp>

#include "../common/host_port.hpp"

namespace quartzflow::examples {

std::unique_ptr<AgentMetrics> AgentMetrics::make(boost::asio::any_io_executor executor,
                                                 const v1::AgentMetricsConfig& config, const std::string& agent_id,
                                                 TaskEngine& engine, LocalStore& store, std::string& error) {
  if (config.max_task_series() > 100'000) {
    error = fmt::format("metrics.max_task_series: {} is out of range 1-100000 (0 = 1000)", config.max_task_series());
    return nullptr;
  }
  if (config.listen().empty()) {
    if (config.max_task_series() != 0) error = "metrics.max_task_series: needs metrics.listen (the endpoint's address)";
    return nullptr;
  }
  std::string reason;
  const auto address = parse_host_port(config.listen(), false, reason);
  if (!address) {
    error = fmt::format("metrics.listen: \"{}\": {}", config.listen(), reason);
    return nullptr;
  }
  MetricsServerOptions options;
  options.host = address->host;
  options.port = address->port;
  RunMetricsOptions run_options;
  run_options.group_label = false;  // the agent's runs are all of its own group
  if (config.max_task_series() != 0) run_options.max_task_series = config.max_task_series();
  return std::make_unique<AgentMetrics>(executor, options, run_options, agent_id, engine, store);
}

AgentMetrics::AgentMetrics(boost::asio::any_io_executor executor, MetricsServerOptions options,
                           RunMetricsOptions run_options, std::string agent_id, TaskEngine& engine, LocalStore& store)
    : agent_id_(std::move(agent_id)),
      engine_(engine),
      store_(store),
      runs_(run_options),
      server_(executor, std::move(options), [this] { return text(); }) {}

bool AgentMetrics::listen(std::string& error) {
  error_code ec;
  std::string detail;
  server_.listen(ec, &detail);
  if (!ec) return true;
  error = fmt::format("metrics.listen: {}", detail.empty() ? ec.message() : detail);
  return false;
}

std::string AgentMetrics::text() const {
  std::string out;
  const auto gauge = [&out](std::string_view name, std::string_view help, auto value) {
    out += fmt::format("# HELP {0} {1}\n# TYPE {0} gauge\n{0} {2}\n", name, help, value);
  };
  out += "# HELP qf_agent_info This agent (always 1).\n# TYPE qf_agent_info gauge\nqf_agent_info{agent_id=\"";
  append_label_value(out, agent_id_);
  out += "\",version=\"";
  append_label_value(out, version);
  out += "\"} 1\n";
  runs_.write(out, "qf_agent_");
  gauge("qf_agent_runs_running", "Executions running now.", engine_.running_count());
  gauge("qf_agent_runs_queued", "Fires waiting for a free slot (overlap policy queue).", engine_.queued_count());
  error_code ec;
  const auto backlog = store_.unsynced_count(ec);
  if (!ec)
    gauge("qf_agent_sync_backlog_records", "Records in the LocalStore not yet acknowledged by a coordinator.", backlog);
  const auto store = store_.metrics();
  gauge("qf_agent_store_queued_bytes", "LocalStore writes queued and not committed yet, bytes.", store.queued_bytes);
  if (dispatcher_) {
    const auto& stats = dispatcher_->stats();
    gauge("qf_agent_connected", "1 while a session with a coordinator is registered.",
          dispatcher_->connected() ? 1 : 0);
    gauge("qf_agent_last_sync_timestamp_seconds",
          "When a coordinator last acknowledged records of this agent (0: not since the agent started).",
          fmt::format("{:.3f}", static_cast<double>(stats.last_ack_unix_ms) / 1000.0));
    out += fmt::format(
        "# HELP qf_agent_records_acked_total Records a coordinator acknowledged.\n"
        "# TYPE qf_agent_records_acked_total counter\nqf_agent_records_acked_total {}\n",
        stats.records_acked);
    out += fmt::format(
        "# HELP qf_agent_connects_total Sessions registered with a coordinator.\n"
        "# TYPE qf_agent_connects_total counter\nqf_agent_connects_total {}\n",
        stats.connects);
  }
  return out;
}

}  // namespace quartzflow::examples
