// SPDX-License-Identifier: Apache-2.0
// qf-agent: runs tasks on this host with the TaskEngine and records every run in the
// LocalStore. Standalone (manifest_file, no coordinators): the tasks of a YAML manifest,
// SIGHUP reloads it. Connected (coordinators): see connected.cpp. SIGTERM/SIGINT: graceful.
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>

#include <sys/resource.h>
#include <unistd.h>

#include <utility>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <quartzflow/log.hpp>
#include <quartzflow/task_engine.hpp>
#include <quartzflow/version.hpp>
#include <quartzflow/yaml_config.hpp>

#include "agent_metrics.hpp"
#include "connected.hpp"
#include "enrol.hpp"
#include "../common/service.hpp"

namespace asio = boost::asio;
namespace fs = std::filesystem;
namespace qf = quartzflow;

namespace {

constexpr int k_exit_invalid_config = 2;

/// The agent id kept in the data directory, created on first start.
std::string stable_agent_id(const fs::path& data_dir) {
  const fs::path file = data_dir / "agent_id";
  std::ifstream in(file);
  std::string id;
  if (in && std::getline(in, id) && !id.empty()) return id;
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  std::string base;
  for (char c : std::string(host)) base += std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' ? c : '-';
  std::random_device random;
  id = fmt::format("{}-{:06x}", base.empty() ? "agent" : base.substr(0, 40), random() & 0xffffff);
  std::ofstream(file) << id << "\n";
  return id;
}

struct Agent {
  asio::io_context io;
  qf::v1::AgentConfig config;
  fs::path config_path;
  fs::path manifest_path;
  std::unique_ptr<qf::LocalStore> store;
  std::unique_ptr<qf::TaskEngine> engine;
  std::uint64_t version = 0;

  /// Loads and applies the manifest; on error the running config stays in force.
  bool load_manifest() {
    qf::v1::TaskManifest manifest;
    qf::YamlError error;
    if (!qf::load_task_manifest(manifest_path.string(), manifest, error)) {
      if (version > 0) qf::logger()->error("manifest refused, the previous config stays in force: {}", error.message());
      std::cerr << "qf-agent: " << error.message() << "\n";
      return false;
    }
    std::vector<qf::v1::Task> tasks(manifest.tasks().begin(), manifest.tasks().end());
    qf::ValidationError invalid;
    if (!engine->apply(tasks, version + 1, &invalid)) {
      if (version > 0) qf::logger()->error("manifest refused, the previous config stays in force: {}", invalid.message());
      std::cerr << "qf-agent: " << invalid.message() << "\n";
      return false;
    }
    ++version;
    store->async_save_config(qf::CachedConfig{tasks, version}, [](qf::error_code ec) {
      if (ec) qf::logger()->warn("caching the config failed: {}", ec.message());
    });
    qf::logger()->info("loaded {} task(s) from {} (config version {})", tasks.size(), manifest_path.string(), version);
    return true;
  }
};

void log_execution(const qf::v1::Execution& e) {
  const auto status = qf::v1::ExecutionStatus_Name(e.status()).substr(std::string("EXECUTION_STATUS_").size());
  if (e.status() == qf::v1::EXECUTION_STATUS_RUNNING && e.duration_ms() == 0) {
    qf::logger()->info("{} RUNNING (attempt {})", e.execution_id(), e.attempt());
    return;
  }
  if (e.status() == qf::v1::EXECUTION_STATUS_RUNNING || e.status() == qf::v1::EXECUTION_STATUS_PENDING) return;
  std::string detail = e.error_message().empty() ? e.skip_detail() : e.error_message();
  qf::logger()->info("{} {} in {} ms{}{}", e.execution_id(), status, e.duration_ms(), detail.empty() ? "" : ": ", detail);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string notify_socket = qf::examples::take_notify_socket();
  CLI::App app{"qf-agent: run QuartzFlow tasks on this host"};
  std::string config_file;
  std::string log_level;
  int shutdown_grace = 10;
  app.add_option("--config", config_file, "agent configuration (YAML)")->required();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error (overrides the config)");
  app.add_option("--shutdown-grace", shutdown_grace, "seconds running tasks get on SIGTERM")
      ->check(CLI::Range(0, 3600))->capture_default_str();
  qf::examples::JoinOptions join;
  app.add_option("--join", join.url,
                 "enrol first: the coordinator's admin URL (https://host:port); writes the key, the certificate "
                 "and the configuration (--config), then runs");
  app.add_option("--token", join.token, "with --join: the join token (qfctl token create --enrol)");
  app.add_option("--ca", join.ca_file,
                 "with --join: CA file that verifies the admin endpoint (default: the cluster CA, checked against "
                 "the hash in the token)");
  app.add_option("--agent-id", join.agent_id, "with --join: the agent id to ask for (default: the coordinator picks)");
  app.set_version_flag("--version", qf::version);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : k_exit_invalid_config;
  }

  if (!join.url.empty() || !join.token.empty()) {
    if (join.url.empty() || join.token.empty()) {
      std::cerr << "qf-agent: --join and --token go together\n";
      return k_exit_invalid_config;
    }
    join.config_file = config_file;
    if (const int status = qf::examples::join_cluster(join); status != 0) return status;
  }

  // Each running shell task holds three descriptors (two pipes and a pidfd): allow many.
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }

  Agent agent;
  // Registered first: a signal that arrives while starting waits for the loop, never kills us.
  asio::signal_set stop_signals(agent.io, SIGTERM, SIGINT);
  asio::signal_set reload_signal(agent.io, SIGHUP);
  agent.config_path = fs::absolute(config_file);
  qf::YamlError yaml_error;
  if (!qf::yaml_file_to_message(agent.config_path.string(), agent.config, yaml_error)) {
    std::cerr << "qf-agent: " << yaml_error.message() << "\n";
    return k_exit_invalid_config;
  }
  const auto& config = agent.config;
  const std::string level = log_level.empty() ? (config.log_level().empty() ? "info" : config.log_level()) : log_level;
  if (!qf::set_log_level(level)) {
    std::cerr << "qf-agent: log_level: \"" << level << "\" is not one of trace, debug, info, warn, error, critical, off\n";
    return k_exit_invalid_config;
  }
  if (const auto log_error = qf::examples::start_log_file(config.log(), agent.config_path.parent_path());
      !log_error.empty()) {
    std::cerr << "qf-agent: " << agent.config_path.string() << ": " << log_error << "\n";
    return k_exit_invalid_config;
  }
  if (config.coordinators_size() > 0)
    return qf::examples::run_connected_agent(config, agent.config_path, shutdown_grace, log_execution, notify_socket);
  const fs::path base = agent.config_path.parent_path();
  const fs::path data_dir = base / (config.data_dir().empty() ? "qf-agent-data" : config.data_dir());
  if (config.manifest_file().empty()) {
    std::cerr << "qf-agent: " << agent.config_path.string() << ": manifest_file: is required in standalone mode\n";
    return k_exit_invalid_config;
  }
  agent.manifest_path = base / config.manifest_file();
  std::error_code fs_error;
  fs::create_directories(data_dir, fs_error);
  if (fs_error) {
    std::cerr << "qf-agent: data_dir: cannot create " << data_dir.string() << ": " << fs_error.message() << "\n";
    return k_exit_invalid_config;
  }

  qf::LocalStoreOptions store_options;
  store_options.path = (data_dir / "agent.db").string();
  if (config.retention_days() > 0) store_options.retention = std::chrono::hours{24 * config.retention_days()};
  if (!config.stats_time_zone().empty()) store_options.stats_time_zone = config.stats_time_zone();
  store_options.fsync_each_commit = config.fsync_each_commit();
  store_options.purge_unsynced = true;  // standalone: no coordinator will ever acknowledge them
  qf::error_code ec;
  std::string detail;
  agent.store = qf::LocalStore::open(agent.io.get_executor(), store_options, ec, &detail);
  if (!agent.store) {
    std::cerr << "qf-agent: cannot open the store: " << (detail.empty() ? ec.message() : detail) << "\n";
    return 1;
  }

  qf::TaskEngineOptions engine_options;
  engine_options.agent_id = config.agent_id().empty() ? stable_agent_id(data_dir) : config.agent_id();
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  engine_options.hostname = config.hostname().empty() ? host : config.hostname();
  agent.engine = std::make_unique<qf::TaskEngine>(agent.io.get_executor(), *agent.store, engine_options);
  std::string metrics_error;
  auto metrics = qf::examples::AgentMetrics::make(agent.io.get_executor(), config.metrics(), engine_options.agent_id,
                                                  *agent.engine, *agent.store, metrics_error);
  if (!metrics_error.empty() || (metrics && !metrics->listen(metrics_error))) {
    std::cerr << "qf-agent: " << agent.config_path.string() << ": " << metrics_error << "\n";
    return k_exit_invalid_config;
  }
  if (metrics) {
    agent.engine->set_sink([&metrics](const qf::v1::Execution& record) {
      metrics->count(record);
      log_execution(record);
    });
  } else {
    agent.engine->set_sink(log_execution);
  }
  for (const auto& dir : config.plugin_dirs()) {
    std::vector<std::string> errors;
    qf::load_plugins(agent.engine->plugins(), (base / dir).string(), errors);
    for (const auto& e : errors) qf::logger()->warn("plugin not loaded: {}", e);
  }
  if (!agent.load_manifest()) return k_exit_invalid_config;
  agent.engine->start();
  qf::logger()->info("qf-agent {} started as {}; store {}", qf::version, engine_options.agent_id, store_options.path);
  qf::examples::notify_ready(notify_socket, "running standalone");

  // Retention: purge at start and then daily.
  asio::steady_timer purge_timer(agent.io);
  std::function<void()> purge = [&] {
    agent.store->async_purge(std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()),
                             [](qf::error_code e, std::uint64_t removed) {
                               if (e) qf::logger()->warn("retention clean-up failed: {}", e.message());
                               else if (removed > 0) qf::logger()->info("retention removed {} old record(s)", removed);
                             });
    purge_timer.expires_after(std::chrono::hours{24});
    purge_timer.async_wait([&](const qf::error_code& e) { if (!e) purge(); });
  };
  purge();

  std::function<void()> wait_reload = [&] {
    reload_signal.async_wait([&](const qf::error_code& e, int) {
      if (e) return;
      qf::logger()->info("SIGHUP: reloading {}", agent.manifest_path.string());
      agent.load_manifest();
      wait_reload();
    });
  };
  wait_reload();
  stop_signals.async_wait([&](const qf::error_code& e, int signal) {
    if (e) return;
    qf::logger()->info("signal {}: stopping; running tasks get {} s", signal, shutdown_grace);
    reload_signal.cancel();
    purge_timer.cancel();
    agent.engine->stop(std::chrono::seconds{shutdown_grace}, [&] {
      agent.store->flush();
      qf::logger()->info("stopped; every record is flushed");
      agent.io.stop();
    });
  });
  agent.io.run();
  return 0;
}
