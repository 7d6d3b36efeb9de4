// SPDX-License-Identifier: Apache-2.0
// qf-coordinator's configuration file checked as a whole before anything is created: every
// bad value is reported with the field it is in and why.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include <quartzflow/admin.hpp>
#include <quartzflow/auth.hpp>
#include <quartzflow/coordinator.hpp>
#include <quartzflow/quic.hpp>
#include <quartzflow/v1/config.pb.h>

#include "../common/host_port.hpp"
#include "../common/readable.hpp"
#include "coordinator/retention_service.hpp"

namespace quartzflow::examples {

/// What qf-coordinator needs to start, with every path made absolute.
struct CoordinatorSettings {
  std::filesystem::path config_file;
  std::string log_level;
  v1::LogConfig log;  ///< `log:` (the log file), started by main with start_log_file
  std::filesystem::path data_dir;
  std::filesystem::path database_file;  ///< SQLite (when postgres_dsn is empty)
  std::string postgres_dsn;             ///< several coordinators share this database
  std::string postgres_password_file;   ///< absolute; empty = QF_PG_PASSWORD or libpq's own
  HostPort agent_listen;
  QuicOptions quic;
  CoordinatorOptions options;
  std::optional<std::filesystem::path> manifest_file;
  v1::TaskManifest manifest;
  AdminServerOptions admin;           ///< the admin API's endpoint (HTTPS with admin_tls)
  AuthOptions auth;
  std::filesystem::path alert_secret_key_file;  ///< seals channel secrets (alerts.secret_key_file)
  bool create_alert_secret_key = false;         ///< not configured: made in data_dir at the first start
  std::chrono::seconds alert_p95_refresh{600};  ///< alerts.p95_refresh_seconds
  std::string alert_console_url;                ///< links in notifications (alerts.console_url), no trailing '/'
  detail::RetentionOptions retention;           ///< retention_days and retention: what is purged when
  std::vector<std::string> warnings;  ///< fields read but not used by this build
};

/**
 * Reads and checks `config_file` (YAML CoordinatorConfig); relative paths are relative to
 * its directory. `log_level_override` (from --log-level) wins over the file's. On failure
 * returns nullopt with `error` as `<file>: <field>: <reason>`.
 */
std::optional<CoordinatorSettings> load_coordinator_settings(const std::string& config_file,
                                                             const std::string& log_level_override,
                                                             std::string& error);

}  // namespace quartzflow::examples
