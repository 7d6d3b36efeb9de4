// SPDX-License-Identifier: Apache-2.0
// qf-coordinator: the catalog, the scheduler and the agent endpoint (QUIC, mutual TLS) over
// a SQLite store, configured by a YAML file. SIGTERM/SIGINT: graceful stop, exit 0.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <iostream>
#include <memory>
#include <sstream>
#include <thread>
#include <unordered_set>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <quartzflow/admin.hpp>
#include <quartzflow/alert_secrets.hpp>
#include <quartzflow/auth.hpp>
#include <quartzflow/coordinator.hpp>
#include <quartzflow/execution_status.hpp>
#include <quartzflow/log.hpp>
#include <quartzflow/pg_store.hpp>
#include <quartzflow/quic.hpp>
#include <quartzflow/store.hpp>
#include <quartzflow/version.hpp>
#include <quartzflow/yaml_config.hpp>

#include "alerts/alert_service.hpp"
#include "console_embedded.hpp"
#include "settings.hpp"
#include "../common/service.hpp"

namespace asio = boost::asio;
namespace fs = std::filesystem;
namespace qf = quartzflow;

namespace {

constexpr int k_exit_failure = 1;
constexpr int k_exit_invalid_config = 2;
/// After Goodbye to the agents, before the endpoint closes: time for the frames to leave.
constexpr auto k_goodbye_delay = std::chrono::milliseconds{300};
constexpr std::size_t k_remembered_runs = 100'000;

/// Logs each final run once (agents re-send results until acknowledged).
class RunLog {
 public:
  void record(const qf::v1::Execution& run) {
    if (!qf::is_final(run.status()) || !logged_.insert(run.execution_id()).second) return;
    order_.push_back(run.execution_id());
    if (order_.size() > k_remembered_runs) {
      logged_.erase(order_.front());
      order_.pop_front();
    }
    std::string task = run.task_name().empty() ? run.task_id() : run.task_name();
    if (run.shard_total() > 0) task += fmt::format(" shard={}/{}", run.shard_index(), run.shard_total());
    const std::string status = qf::v1::ExecutionStatus_Name(run.status()).substr(std::string("EXECUTION_STATUS_").size());
    const std::string error = !run.error_message().empty() ? run.error_message() : run.skip_detail();
    qf::logger()->info("run task={} execution={} agent={} status={} duration_ms={}{}", task, run.execution_id(),
                       run.agent_id().empty() ? "-" : run.agent_id(), status, run.duration_ms(),
                       error.empty() ? "" : fmt::format(" error=\"{}\"", error));
  }

 private:
  std::unordered_set<std::string> logged_;
  std::deque<std::string> order_;
};

std::string listen_text(const qf::examples::HostPort& address, std::uint16_t port) {
  const bool ipv6 = address.host.find(':') != std::string::npos;
  return ipv6 ? fmt::format("[{}]:{}", address.host, port) : fmt::format("{}:{}", address.host, port);
}

/// One line saying what a manifest changed.
void log_applied(const std::string& manifest, const qf::ManifestApplyResult& result) {
  std::string changes;
  if (!result.value.created.empty()) changes += fmt::format("; created {}", fmt::join(result.value.created, ", "));
  if (!result.value.updated.empty()) changes += fmt::format("; updated {}", fmt::join(result.value.updated, ", "));
  qf::logger()->info("manifest {} applied: {} created, {} updated, {} unchanged{}", manifest, result.value.created.size(),
                     result.value.updated.size(), result.value.unchanged.size(), changes);
}

/// `--init-admin NAME`: creates or resets an admin, then the process exits.
int initialize_admin(asio::io_context& io, qf::Authenticator& auth, qf::Store& store, const std::string& username) {
  std::string password;
  if (const char* env = std::getenv("QF_ADMIN_PASSWORD"); env && *env) password = env;
  else std::getline(std::cin, password);
  int code = 0;
  bool done = false;
  auth.ensure_admin(username, password, [&](qf::ApiResult<qf::v1::User> r) {
    done = true;
    if (!r) {
      std::cerr << fmt::format("qf-coordinator: --init-admin: {}\n", r.failure().message);
      code = k_exit_invalid_config;
    } else {
      std::cout << fmt::format("admin user \"{}\" is ready (role ADMIN)\n", r.value().username());
    }
  });
  while (!done) io.run_one();
  store.flush();
  return code;
}

/**
 * The first start's one-time password goes to the terminal that started the process, never
 * to a log: when stderr is not a terminal (a service manager, a redirection into a file),
 * it is written to `<data_dir>/initial-admin-password` (mode 0600) and stderr names the file.
 */
void give_out_one_time_password(const std::string& password, const fs::path& data_dir) {
  const char* change = "log in (qfctl login --user admin) and change it (qfctl user passwd admin): until it is "
                       "changed, the admin API refuses everything else";
  if (::isatty(STDERR_FILENO)) {
    std::cerr << fmt::format("qf-coordinator: created user \"admin\" with the one-time password {}\n  {}\n", password,
                             change);
    return;
  }
  const auto path = data_dir / "initial-admin-password";
  std::error_code ignored;
  fs::remove(path, ignored);  // a stale one, and never a link planted in its place
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, S_IRUSR | S_IWUSR);
  const std::string line = password + "\n";
  bool written = fd >= 0 && ::fchmod(fd, S_IRUSR | S_IWUSR) == 0 &&
                 ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size()) && ::fsync(fd) == 0;
  const int saved_errno = errno;
  if (fd >= 0 && ::close(fd) != 0) written = false;
  if (!written) {
    fs::remove(path, ignored);
    qf::logger()->error("created user \"admin\" with a one-time password, but cannot write it to {}: {}; set a "
                        "password with qf-coordinator --init-admin admin",
                        path.string(), std::strerror(saved_errno));
    return;
  }
  std::cerr << fmt::format("qf-coordinator: created user \"admin\"; its one-time password is in {} (mode 0600; not "
                           "printed, stderr is not a terminal)\n  {}; then delete the file\n",
                           path.string(), change);
}

// The store the configuration names: PostgreSQL (several coordinators) or SQLite.
std::unique_ptr<qf::Store> open_store(asio::io_context& io, const qf::examples::CoordinatorSettings& settings,
                                      qf::error_code& ec, std::string& detail) {
  if (!settings.postgres_dsn.empty()) {
    qf::PostgresStoreOptions options;
    options.dsn = settings.postgres_dsn;
    options.password_file = settings.postgres_password_file;
    return qf::open_postgres_store(io.get_executor(), options, ec, &detail);
  }
  qf::SqliteStoreOptions options;
  options.path = settings.database_file.string();
  return qf::open_sqlite_store(io.get_executor(), options, ec, &detail);
}

/// The libpq connection string without its password (key=value or URI form), for advice.
std::string dsn_without_password(const std::string& dsn) {
  if (dsn.rfind("postgres", 0) == 0) {  // postgresql://user:password@host/db
    const auto scheme_end = dsn.find("://");
    const auto at = dsn.find('@');
    const auto colon = scheme_end == std::string::npos ? std::string::npos : dsn.find(':', scheme_end + 3);
    if (at != std::string::npos && colon != std::string::npos && colon < at)
      return dsn.substr(0, colon) + dsn.substr(at);
    return dsn;
  }
  std::string out;
  std::istringstream words(dsn);
  for (std::string word; words >> word;)
    if (word.rfind("password=", 0) != 0) out += (out.empty() ? "" : " ") + word;
  return out;
}

/// GET /api/v1/admin/backup: SQLite's backup API on a thread of its own (the copy takes as
/// long as the file is large); PostgreSQL: the pg_dump command.
void serve_backups(const qf::examples::CoordinatorSettings& settings, qf::AdminServerOptions& admin) {
  if (!settings.postgres_dsn.empty()) {
    admin.backup = [dsn = dsn_without_password(settings.postgres_dsn)](auto done) {
      done(qf::errc::invalid_argument, "",
           fmt::format("the store is PostgreSQL: back it up with pg_dump, e.g. pg_dump --format=custom "
                       "--file=quartzflow.dump '{}' (restore: pg_restore --clean --dbname '<dsn>' quartzflow.dump)",
                       dsn));
    };
    return;
  }
  admin.backup = [database = settings.database_file.string(), dir = settings.data_dir](auto done) {
    static std::atomic<unsigned> counter{0};
    const auto copy = (dir / fmt::format(".backup-{}-{}.db", ::getpid(), ++counter)).string();
    std::thread([database, copy, done = std::move(done)] {
      std::string detail;
      const auto ec = qf::backup_sqlite_store(database, copy, &detail);
      done(ec, ec ? std::string() : copy, detail);
    }).detach();
  };
}

std::string store_description(const qf::examples::CoordinatorSettings& settings) {
  return settings.postgres_dsn.empty() ? settings.database_file.string() : "on PostgreSQL (store.postgres_dsn)";
}

}  // namespace

int main(int argc, char** argv) {
  const std::string notify_socket = qf::examples::take_notify_socket();
  CLI::App app{"qf-coordinator: schedule QuartzFlow tasks and dispatch them to agents over QUIC"};
  std::string config_file;
  std::string log_level;
  app.add_option("--config", config_file, "coordinator configuration (YAML CoordinatorConfig)")->required();
  app.add_option("--log-level", log_level, "trace, debug, info, warn, error (overrides the config)");
  std::string init_admin;
  app.add_option("--init-admin", init_admin,
                 "create (or reset) this admin user with the password in $QF_ADMIN_PASSWORD (else one line of "
                 "stdin), then exit");
  app.set_version_flag("--version", qf::version);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : k_exit_invalid_config;
  }

  // Everything is checked before anything is created.
  std::string error;
  auto settings = qf::examples::load_coordinator_settings(config_file, log_level, error);
  if (!settings) {
    std::cerr << "qf-coordinator: " << error << "\n";
    return k_exit_invalid_config;
  }
  // --init-admin (often run as root) leaves the service's log file alone.
  const auto log_error =
      init_admin.empty() ? qf::examples::start_log_file(settings->log, settings->config_file.parent_path()) : "";
  if (!log_error.empty()) {
    std::cerr << "qf-coordinator: " << settings->config_file.string() << ": " << log_error << "\n";
    return k_exit_invalid_config;
  }
  for (const auto& warning : settings->warnings) qf::logger()->warn("{}", warning);

  asio::io_context io;
  // Registered first: a signal that arrives while starting waits for the loop, never kills us.
  asio::signal_set stop_signals(io, SIGTERM, SIGINT);
  asio::signal_set reload_signal(io, SIGHUP);
  int exit_code = 0;

  // The endpoint first: a bad certificate or a port in use is found before a store exists.
  // Agents that connect while the catalog loads wait in `early_connections`.
  bool ready = false;
  std::vector<std::shared_ptr<qf::Connection>> early_connections;
  std::unique_ptr<qf::Store> store;  // destroyed after the coordinator that uses it
  std::unique_ptr<qf::Coordinator> coordinator;
  qf::QuicServer server(io.get_executor(), settings->quic);
  std::string detail;
  // --init-admin only touches the store: it works beside a running coordinator.
  const auto listen_ec = !init_admin.empty() ? qf::error_code{} : server.listen(
      settings->agent_listen.host, settings->agent_listen.port,
      [&](std::shared_ptr<qf::Connection> connection) {
        if (ready) coordinator->accept(std::move(connection));
        else early_connections.push_back(std::move(connection));
      },
      detail);
  if (listen_ec) {
    std::cerr << fmt::format("qf-coordinator: {}: agent_listen / agent_tls: cannot listen on {}: {}\n",
                             settings->config_file.string(),
                             listen_text(settings->agent_listen, settings->agent_listen.port),
                             detail.empty() ? listen_ec.message() : detail);
    return k_exit_invalid_config;
  }

  std::error_code fs_error;
  fs::create_directories(settings->data_dir, fs_error);
  if (fs_error) {
    std::cerr << fmt::format("qf-coordinator: data_dir: cannot create {}: {}\n", settings->data_dir.string(),
                             fs_error.message());
    return k_exit_failure;
  }
  if (settings->create_alert_secret_key) {  // a configured key file was read with the settings
    std::string key_error;
    auto alert_key = qf::load_alert_secret_key(settings->alert_secret_key_file.string(), true, key_error);
    if (!alert_key) {
      std::cerr << fmt::format("qf-coordinator: alerts.secret_key_file: {}\n", key_error);
      return k_exit_failure;
    }
    settings->admin.alert_secret_key = std::move(*alert_key);
  }
  qf::error_code ec;
  store = open_store(io, *settings, ec, detail);
  if (!store) {
    std::cerr << fmt::format("qf-coordinator: cannot open the store {}: {}\n", store_description(*settings),
                             detail.empty() ? ec.message() : detail);
    return k_exit_failure;
  }
  qf::Authenticator auth(*store, io.get_executor(), settings->auth);
  if (!init_admin.empty()) return initialize_admin(io, auth, *store, init_admin);
  coordinator = std::make_unique<qf::Coordinator>(io.get_executor(), *store, settings->options);
  // Alerting runs on the leader only; the admin API of any coordinator tells it of changes.
  qf::alerts::AlertServiceOptions alert_options;
  alert_options.secret_key = settings->admin.alert_secret_key;
  alert_options.console_url = settings->alert_console_url;
  alert_options.p95_refresh = settings->alert_p95_refresh;
  qf::alerts::AlertService alerts(io, *coordinator, alert_options);
  settings->admin.alerts.changed = [&alerts] { alerts.refresh(); };
  settings->admin.alerts.test_channel = [&alerts](const qf::v1::Channel& channel, auto done) {
    alerts.test_channel(channel, [done = std::move(done)](qf::error_code e, qf::v1::Delivery sent) { done(e, sent); });
  };
  settings->admin.alerts.metrics_text = [&alerts] { return alerts.metrics_text(); };
  settings->admin.console_files = qf::examples::embedded_console_files();
  serve_backups(*settings, settings->admin);
  qf::AdminServer admin(io.get_executor(), *coordinator, auth, settings->admin);
  if (const auto admin_ec = admin.listen(detail)) {
    std::cerr << fmt::format("qf-coordinator: {}: admin_listen / admin_tls: {}\n", settings->config_file.string(), detail);
    return k_exit_invalid_config;
  }
  // First start: an admin with a one-time password, shown once and never logged.
  auth.bootstrap([data_dir = settings->data_dir](qf::ApiResult<std::optional<std::string>> r) {
    if (!r) return qf::logger()->error("creating the first admin failed: {}", r.failure().message);
    if (!r.value()) return;
    give_out_one_time_password(*r.value(), data_dir);
    qf::logger()->warn("created user \"admin\" with a one-time password (not logged); it must be changed at first "
                       "login");
  });
  alerts.start();
  // Retention: the leader purges old history in short slices (the store's worker).
  auto retention_options = settings->retention;
  // Test-only: the first pass at once rather than a minute after start (tests/api/test_retention_e2e.py).
  if (const char* ms = std::getenv("QUARTZFLOW_TEST_RETENTION_FIRST_PASS_MS"))
    retention_options.first_pass = std::chrono::milliseconds{std::strtoll(ms, nullptr, 10)};
  qf::detail::RetentionService retention(io.get_executor(), *store, retention_options,
                                         [&coordinator] { return coordinator->leading(); });
  retention.start();
  RunLog run_log;
  coordinator->on_execution([&](const qf::v1::Execution& run) { run_log.record(run); });

  bool stopping = false;
  asio::steady_timer goodbye_timer(io);
  auto stop = [&](int code) {
    if (stopping) return;
    stopping = true;
    exit_code = code;
    stop_signals.cancel();
    reload_signal.cancel();
    coordinator->stop();
    alerts.stop();
    retention.stop();
    goodbye_timer.expires_after(k_goodbye_delay);
    goodbye_timer.async_wait([&](const qf::error_code&) {
      server.close();
      admin.stop();
      store->flush();
      qf::logger()->info("stopped; the store is flushed");
      io.stop();
    });
  };
  stop_signals.async_wait([&](const qf::error_code& e, int signal) {
    if (e) return;
    qf::logger()->info("signal {}: stopping", signal);
    stop(0);
  });

  coordinator->start([&](qf::error_code start_ec) {
    if (stopping) return;
    if (start_ec) {
      std::cerr << fmt::format("qf-coordinator: the coordinator did not start: {}\n", start_ec.message());
      return stop(k_exit_failure);
    }
    auto go = [&] {
      ready = true;
      for (auto& connection : early_connections) coordinator->accept(std::move(connection));
      early_connections.clear();
      admin.set_ready(true);
      qf::logger()->info("qf-coordinator {} ({}) listening for agents on {} (QUIC); store {}", qf::version,
                         settings->options.dispatcher.coordinator_id,
                         listen_text(settings->agent_listen, server.port()), settings->database_file.string());
      qf::logger()->info("admin API on {}://{}/api/v1 (OpenAPI: /api/v1/openapi.json, metrics: /metrics)",
                         settings->admin.tls_cert_file.empty() ? "http" : "https",
                         listen_text({settings->admin.host, 0}, admin.port()));
      qf::examples::notify_ready(notify_socket, fmt::format("listening for agents on {}, admin API on {}",
                                                            listen_text(settings->agent_listen, server.port()),
                                                            listen_text({settings->admin.host, 0}, admin.port())));
    };
    if (!settings->manifest_file) return go();
    qf::apply_manifest(*coordinator, settings->manifest, qf::Actor{"qf-coordinator", {}}, true,
                       [&, go](qf::ManifestApplyResult result) {
                         if (stopping) return;
                         const std::string manifest = settings->manifest_file->string();
                         if (result.ec) {
                           std::cerr << fmt::format("qf-coordinator: {}: manifest_file: {}: {}: {}\n",
                                                    settings->config_file.string(), manifest, result.error.field,
                                                    result.error.reason);
                           return stop(k_exit_invalid_config);
                         }
                         log_applied(manifest, result);
                         go();
                       });
  });

  // SIGHUP: the manifest file is read and applied again (the changes are pushed to the
  // agents); a manifest with an error is refused and what is in force stays.
  std::function<void()> wait_reload = [&] {
    reload_signal.async_wait([&](const qf::error_code& e, int) {
      if (e || stopping) return;
      wait_reload();
      if (!settings->manifest_file || !ready) {
        qf::logger()->info("SIGHUP: {}", ready ? "no manifest_file to reload" : "still starting; ignored");
        return;
      }
      const std::string manifest_path = settings->manifest_file->string();
      qf::v1::TaskManifest manifest;
      qf::YamlError yaml_error;
      if (!qf::load_task_manifest(manifest_path, manifest, yaml_error)) {
        qf::logger()->error("SIGHUP: manifest refused, the current tasks stay in force: {}", yaml_error.message());
        return;
      }
      qf::apply_manifest(*coordinator, std::move(manifest), qf::Actor{"qf-coordinator", {}}, true,
                         [&, manifest_path](qf::ManifestApplyResult result) {
                           if (stopping) return;
                           if (result.ec)
                             return qf::logger()->error(
                                 "SIGHUP: manifest {} refused, the current tasks stay in force: {}: {}", manifest_path,
                                 result.error.field, result.error.reason);
                           log_applied(manifest_path, result);
                         });
    });
  };
  wait_reload();
  io.run();
  return exit_code;
}
