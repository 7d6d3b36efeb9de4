// SPDX-License-Identifier: Apache-2.0
// qfctl sub-commands register themselves on the CLI11 app through these functions.
#pragma once

#include <memory>
#include <string>

#include <CLI/CLI.hpp>

namespace qfctl {

/// Exit status for invalid input (bad flags, bad expressions, unknown zones, API 4xx answers).
inline constexpr int k_exit_invalid_input = 2;

/// Thrown by a command to end with `status` after printing `message` on stderr.
struct CommandFailure {
  int status;
  std::string message;
};

/// `qfctl cron next|describe`.
void add_cron_commands(CLI::App& app);

/// `qfctl local stats|history|logs|export`.
void add_local_commands(CLI::App& app);

/// `qfctl certs init|issue`.
void add_certs_commands(CLI::App& app);

struct ApiFlags;

/// `qfctl task ls|get|create|apply|edit|rm|enable|disable|trigger|next` (admin API).
void add_task_commands(CLI::App& app);

/// `qfctl task apply` on the `task` command, sharing its API flags.
void add_task_apply_command(CLI::App& task, std::shared_ptr<ApiFlags> flags);

/// `qfctl group ...` and `qfctl agent ...` (admin API).
void add_catalog_commands(CLI::App& app);

/// `qfctl exec ...`, `qfctl stats`, `qfctl audit` (admin API).
void add_history_commands(CLI::App& app);

/// `qfctl login`, `qfctl logout`, `qfctl token ...`, `qfctl user ...` (admin API).
void add_auth_commands(CLI::App& app);

/// `qfctl import crontab` (no server involved).
void add_import_commands(CLI::App& app);

/// `qfctl alert ...`, `qfctl channel ...`, `qfctl silence ...`, `qfctl monitor ...` (admin API).
void add_alert_commands(CLI::App& app);
/// `qfctl admin backup FILE` (admin API).
void add_admin_commands(CLI::App& app);

}  // namespace qfctl
