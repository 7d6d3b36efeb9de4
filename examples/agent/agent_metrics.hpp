// SPDX-License-Identifier: Apache-2.0
// qf-agent's opt-in /metrics (AgentConfig.metrics): runs by task and status, runs in
// progress, the sync backlog, the coordinator connection and the last sync, as Prometheus text.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/any_io_executor.hpp>

#include <quartzflow/agent_dispatcher.hpp>
#include <quartzflow/local_store.hpp>
#include <quartzflow/metrics.hpp>
#include <quartzflow/task_engine.hpp>
#include <quartzflow/v1/config.pb.h>

namespace quartzflow::examples {

/**
 * The agent's metrics endpoint. Its run counters are `qf_agent_*`, apart from the
 * coordinator's `qf_runs_*` (which count the same records once they are synced), so a sum
 * over every scraped process never counts a run twice.
 *
 * Thread safety: not thread-safe; use from the agent's io_context.
 */
class AgentMetrics {
 public:
  /// Checks `config`: nullptr with `error` naming the field when it is wrong, nullptr with
  /// `error` empty when no endpoint is configured (the default).
  static std::unique_ptr<AgentMetrics> make(boost::asio::any_io_executor executor, const v1::AgentMetricsConfig& config,
                                            const std::string& agent_id, TaskEngine& engine, LocalStore& store,
                                            std::string& error);

  /// The connected mode's dispatcher, once it exists (its connection and last sync).
  void set_dispatcher(const AgentDispatcher* dispatcher) noexcept { dispatcher_ = dispatcher; }
  /// Every execution event the engine reports (final ones are counted).
  void count(const v1::Execution& record) { runs_.count(record); }
  /// Starts serving; false with `error` (address in use, ...).
  bool listen(std::string& error);
  std::string text() const;

  AgentMetrics(boost::asio::any_io_executor executor, MetricsServerOptions options, RunMetricsOptions run_options,
               std::string agent_id, TaskEngine& engine, LocalStore& store);

 private:
  std::string agent_id_;
  TaskEngine& engine_;
  LocalStore& store_;
  const AgentDispatcher* dispatcher_ = nullptr;
  RunMetrics runs_;
  MetricsServer server_;
};

}  // namespace quartzflow::examples
