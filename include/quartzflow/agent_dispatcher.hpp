// SPDX-License-Identifier: Apache-2.0
// The agent side of the agent protocol (agent_protocol.proto) over a Transport: registers,
// pulls and applies its configuration, runs what it is sent, reports every state change and
// syncs its queue until acknowledged. Includes nothing of the coordinator side.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/any_io_executor.hpp>

#include <quartzflow/local_store.hpp>
#include <quartzflow/task_engine.hpp>
#include <quartzflow/transport.hpp>

namespace quartzflow {

struct AgentDispatcherOptions {
  std::string agent_id{};  ///< stable across restarts; required
  std::string hostname{};
  std::vector<std::string> ips{};
  std::map<std::string, std::string> labels{};
  std::string config_group{};  ///< group id or name from the agent's config
  /// Announced at registration (a coordinator accepts its own major and minor version +-1);
  /// empty = this library's version.
  std::string agent_version{};
  std::chrono::milliseconds reconnect_min{200};  ///< first reconnect delay
  /// Backoff cap (plus up to 20 % jitter); keep it under the coordinator's `agent_grace`.
  std::chrono::milliseconds reconnect_max{8'000};
  std::chrono::milliseconds heartbeat_interval{15'000};  ///< until the coordinator says otherwise
  /// Unacknowledged records are sent again after this; also the session's answer timeout.
  std::chrono::milliseconds ack_timeout{5'000};
  std::uint32_t max_batch_records = 500;
  /// How often the agent's daily stats are reported (also right after registering).
  std::chrono::milliseconds daily_stats_interval{300'000};
  /// Every execution event, after the dispatcher saw it (the host's own sink).
  ExecutionSink on_execution{};
};

struct AgentDispatcherStats {
  std::uint64_t connects = 0;         ///< sessions registered
  std::uint64_t configs_applied = 0;  ///< snapshots and deltas applied
  std::uint64_t records_sent = 0;     ///< final records sent (re-sends included)
  std::uint64_t records_acked = 0;
  std::int64_t last_ack_unix_ms = 0;  ///< when the coordinator last acknowledged records; 0 = never
  std::uint64_t runs_received = 0;
};

/**
 * The agent side. Owns the TaskEngine's sink (use `options.on_execution` to observe).
 * While disconnected the engine keeps running its configuration (from the LocalStore's
 * cache after a restart) and records wait in the sync queue; after reconnecting the agent
 * registers, pulls its configuration, then syncs the queue in batches until acknowledged.
 *
 * Thread safety: not thread-safe; use from its executor. Cancellation: `stop` says
 * Goodbye and stops reconnecting; the engine is left to its owner.
 */
class AgentDispatcher {
 public:
  AgentDispatcher(boost::asio::any_io_executor executor, TaskEngine& engine, LocalStore& store, Connector& connector,
                  AgentDispatcherOptions options);
  ~AgentDispatcher();
  AgentDispatcher(const AgentDispatcher&) = delete;
  AgentDispatcher& operator=(const AgentDispatcher&) = delete;

  /// Applies the cached configuration when the engine holds none, then connects (and keeps
  /// reconnecting with exponential backoff and jitter).
  void start();
  /// Goodbye (SHUTDOWN), close, no more reconnects. With runs in progress: Goodbye
  /// DRAINING, and the session closes once their results are acknowledged.
  void stop();
  /// Ends a drain that has not finished (Goodbye SHUTDOWN, close); results not acknowledged
  /// stay in the sync queue for the next start. For owners about to stop their io_context.
  void close_now();
  /// True while a registered session is open.
  bool connected() const noexcept;
  const AgentDispatcherStats& stats() const noexcept;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace quartzflow
