// SPDX-License-Identifier: Apache-2.0
// qf-agent's connected mode: the tasks come from a coordinator (QUIC, mutual TLS) through
// the AgentDispatcher; without one the agent keeps running its cached configuration.
#pragma once

#include <filesystem>
#include <string>

#include <quartzflow/task_engine.hpp>
#include <quartzflow/v1/config.pb.h>

namespace quartzflow::examples {

/**
 * Runs the agent until SIGTERM/SIGINT; returns the exit status (2 for a bad config value,
 * named with its field). `config` was read from `config_file` and has coordinators.
 * `on_execution` sees every execution event (the host's log). `notify_socket` (from
 * take_notify_socket) is told READY=1 once the agent runs.
 */
int run_connected_agent(const v1::AgentConfig& config, const std::filesystem::path& config_file,
                        int shutdown_grace_seconds, ExecutionSink on_execution, const std::string& notify_socket);

}  // namespace quartzflow::examples
