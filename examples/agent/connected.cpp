// SPDX-License-Identifier: Apache-2.0
// Connected mode: config checks, the coordinator connector (several addresses tried in
// turn), the dispatcher over the engine and the store, and a graceful stop.
#include "connected.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include <quartzflow/certs.hpp>
#include <quartzflow/agent_dispatcher.hpp>
#include <quartzflow/local_store.hpp>
#include <quartzflow/log.hpp>
#include <quartzflow/quic.hpp>
#include <quartzflow/version.hpp>

#include "../common/host_port.hpp"
#include "../common/readable.hpp"
#include "../common/service.hpp"
#include "agent_metrics.hpp"
#include "enrol.hpp"

namespace quartzflow::examples {

namespace asio = boost::asio;
namespace fs = std::filesystem;

namespace {

constexpr int k_exit_invalid_config = 2;
/// Between two "still unreachable" lines while the coordinator stays down.
constexpr auto k_unreachable_log_interval = std::chrono::seconds{30};
/// After Goodbye, before the loop ends: time for the frames to leave.
constexpr auto k_goodbye_delay = std::chrono::milliseconds{200};
// At most this long after the engine stopped for the coordinator to acknowledge the last results.
constexpr auto k_drain_wait = std::chrono::milliseconds{5000};

/// The host's addresses (not loopback, not IPv6 link-local), for group CIDR rules.
std::vector<std::string> host_ips() {
  std::set<std::string> ips;
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return {};
  for (ifaddrs* item = list; item != nullptr; item = item->ifa_next) {
    if (item->ifa_addr == nullptr || (item->ifa_flags & IFF_LOOPBACK) != 0) continue;
    char text[INET6_ADDRSTRLEN] = {};
    if (item->ifa_addr->sa_family == AF_INET) {
      const auto* v4 = reinterpret_cast<const sockaddr_in*>(item->ifa_addr);
      if (::inet_ntop(AF_INET, &v4->sin_addr, text, sizeof text)) ips.insert(text);
    } else if (item->ifa_addr->sa_family == AF_INET6) {
      const auto* v6 = reinterpret_cast<const sockaddr_in6*>(item->ifa_addr);
      if (IN6_IS_ADDR_LINKLOCAL(&v6->sin6_addr)) continue;
      if (::inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof text)) ips.insert(text);
    }
  }
  ::freeifaddrs(list);
  return {ips.begin(), ips.end()};
}

std::string system_host_name() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return host;
}

/// The coordinators of the config, tried in order: a failed connect moves to the next; a
/// standby's redirect names the leader, tried next (added when the config does not list it).
class FailoverConnector final : public Connector {
 public:
  struct Target {
    std::string address;  ///< as written in the config, for logs
    std::unique_ptr<QuicConnector> connector;
  };
  /// Makes the connector of an address a redirect names (`host:port`); nullptr when bad.
  using MakeTarget = std::function<std::unique_ptr<QuicConnector>(const HostPort&)>;

  FailoverConnector(std::vector<Target> targets, MakeTarget make)
      : targets_(std::move(targets)), make_(std::move(make)) {}

  void redirect(std::string_view address) override {
    if (address.empty()) {  // no leader known: the next coordinator of the list
      current_ = (current_ + 1) % targets_.size();
      return;
    }
    std::string reason;
    const auto wanted = parse_host_port(address, false, reason);
    if (!wanted) return logger()->warn("ignoring a redirect to \"{}\": {}", address, reason);
    for (std::size_t i = 0; i < targets_.size(); ++i) {
      std::string ignored;
      const auto known = parse_host_port(targets_[i].address, false, ignored);
      if (targets_[i].address == address || (known && known->host == wanted->host && known->port == wanted->port)) {
        current_ = i;
        return;
      }
    }
    if (targets_.size() >= k_max_targets) return;
    if (auto connector = make_(*wanted)) {
      logger()->info("coordinator {} (named by a redirect) added to the coordinators tried", address);
      targets_.push_back({std::string(address), std::move(connector)});
      current_ = targets_.size() - 1;
    }
  }

  void connect(ConnectHandler handler) override {
    const std::size_t index = current_;
    targets_[index].connector->connect(
        [this, index, handler = std::move(handler)](error_code ec, std::shared_ptr<Connection> connection) {
          auto& target = targets_[index];
          if (!ec) {
            if (failures_ > 0)
              logger()->info("reached coordinator {} after {} failed attempt(s)", target.address, failures_);
            else
              logger()->debug("connected to coordinator {}", target.address);
            failures_ = 0;
            return handler(ec, std::move(connection));
          }
          ++failures_;
          const auto now = std::chrono::steady_clock::now();
          if (failures_ == 1 || now - last_logged_ >= k_unreachable_log_interval) {
            last_logged_ = now;
            const std::string why = target.connector->last_error();
            logger()->warn("coordinator {} unreachable ({}); the agent keeps running its cached configuration and "
                           "retries{}",
                           target.address, why.empty() ? ec.message() : why,
                           targets_.size() > 1 ? " with the next coordinator" : "");
          }
          current_ = (index + 1) % targets_.size();
          handler(ec, nullptr);
        });
  }

 private:
  static constexpr std::size_t k_max_targets = 64;  // redirects cannot grow the list without bound
  std::vector<Target> targets_;
  MakeTarget make_;
  std::size_t current_ = 0;
  std::uint64_t failures_ = 0;
  std::chrono::steady_clock::time_point last_logged_{};
};

struct ConnectedSettings {
  std::string agent_id;
  std::string hostname;
  fs::path data_dir;
  QuicOptions quic;
  std::vector<std::pair<std::string, HostPort>> coordinators;  ///< as written, parsed
  std::string server_name;                                     ///< empty = each address's host
};

std::optional<ConnectedSettings> check_config(const v1::AgentConfig& config, const fs::path& config_file,
                                              std::string& error) {
  auto fail = [&](const std::string& field, const std::string& reason) {
    error = fmt::format("{}: {}: {}", config_file.string(), field, reason);
    return std::nullopt;
  };
  ConnectedSettings settings;
  const fs::path base = config_file.parent_path();
  if (!config.manifest_file().empty())
    return fail("manifest_file", "is for standalone mode; with coordinators the tasks come from the coordinator "
                                 "(remove manifest_file or coordinators)");
  for (int i = 0; i < config.coordinators_size(); ++i) {
    std::string reason;
    auto address = parse_host_port(config.coordinators(i), false, reason);
    if (!address) return fail(fmt::format("coordinators[{}]", i), fmt::format("\"{}\": {}", config.coordinators(i), reason));
    settings.coordinators.emplace_back(config.coordinators(i), std::move(*address));
  }
  const auto& tls = config.tls();
  const std::pair<const char*, const std::string*> files[] = {
      {"tls.ca_file", &tls.ca_file()}, {"tls.cert_file", &tls.cert_file()}, {"tls.key_file", &tls.key_file()}};
  for (const auto& [field, value] : files) {
    if (value->empty()) return fail(field, "is required in connected mode (the agent and the coordinator authenticate each other)");
    const fs::path path = (base / *value).lexically_normal();
    if (auto why = unreadable_reason(path); !why.empty()) return fail(field, fmt::format("cannot read {}: {}", path.string(), why));
  }
  settings.quic.tls = TlsFiles{(base / tls.ca_file()).lexically_normal().string(),
                               (base / tls.cert_file()).lexically_normal().string(),
                               (base / tls.key_file()).lexically_normal().string()};
  settings.server_name = tls.server_name();

  // The coordinator accepts an agent only under the common name of its certificate.
  settings.agent_id = config.agent_id();
  error_code ec;
  std::string detail;
  const std::string common_name = certificate_common_name(settings.quic.tls.cert_file, ec, detail);
  if (ec) return fail("tls.cert_file", detail.empty() ? ec.message() : detail);
  // An expired certificate would fail every handshake with a vague alert: refuse at start.
  std::string warning;
  if (auto problem = certificate_date_problem(settings.quic.tls.cert_file, std::chrono::system_clock::now(), warning))
    return fail("tls.cert_file", *problem);
  if (auto problem = key_file_permission_problem(settings.quic.tls.key_file, warning))
    return fail("tls.key_file", *problem);
  if (settings.agent_id.empty()) settings.agent_id = common_name;
  else if (settings.agent_id != common_name)
    return fail("agent_id", fmt::format("\"{}\" differs from the common name \"{}\" of tls.cert_file; the coordinator "
                                        "accepts an agent only under its certificate's name (leave agent_id empty)",
                                        settings.agent_id, common_name));
  settings.hostname = config.hostname().empty() ? system_host_name() : config.hostname();
  settings.data_dir = (base / (config.data_dir().empty() ? "qf-agent-data" : config.data_dir())).lexically_normal();
  return settings;
}

}  // namespace

int run_connected_agent(const v1::AgentConfig& config, const fs::path& config_file, int shutdown_grace_seconds,
                        ExecutionSink on_execution, const std::string& notify_socket) {
  std::string error;
  auto settings = check_config(config, config_file, error);
  if (!settings) {
    std::cerr << "qf-agent: " << error << "\n";
    return k_exit_invalid_config;
  }

  asio::io_context io;
  // Registered first: a signal that arrives while starting waits for the loop, never kills us.
  asio::signal_set stop_signals(io, SIGTERM, SIGINT);
  asio::signal_set reload_signal(io, SIGHUP);

  std::error_code fs_error;
  fs::create_directories(settings->data_dir, fs_error);
  if (fs_error) {
    std::cerr << "qf-agent: data_dir: cannot create " << settings->data_dir.string() << ": " << fs_error.message() << "\n";
    return k_exit_invalid_config;
  }
  LocalStoreOptions store_options;
  store_options.path = (settings->data_dir / "agent.db").string();
  if (config.retention_days() > 0) store_options.retention = std::chrono::hours{24 * config.retention_days()};
  if (!config.stats_time_zone().empty()) store_options.stats_time_zone = config.stats_time_zone();
  store_options.fsync_each_commit = config.fsync_each_commit();
  store_options.purge_unsynced = false;  // records wait in the sync queue until the coordinator acknowledges them
  error_code ec;
  std::string detail;
  auto store = LocalStore::open(io.get_executor(), store_options, ec, &detail);
  if (!store) {
    std::cerr << "qf-agent: cannot open the store: " << (detail.empty() ? ec.message() : detail) << "\n";
    return 1;
  }

  TaskEngineOptions engine_options;
  engine_options.agent_id = settings->agent_id;
  engine_options.hostname = settings->hostname;
  TaskEngine engine(io.get_executor(), *store, engine_options);
  auto metrics = AgentMetrics::make(io.get_executor(), config.metrics(), settings->agent_id, engine, *store, error);
  if (!error.empty()) {
    std::cerr << "qf-agent: " << config_file.string() << ": " << error << "\n";
    return k_exit_invalid_config;
  }
  const fs::path base = config_file.parent_path();
  for (const auto& dir : config.plugin_dirs()) {
    std::vector<std::string> errors;
    load_plugins(engine.plugins(), (base / dir).string(), errors);
    for (const auto& e : errors) logger()->warn("plugin not loaded: {}", e);
  }

  QuicOptions quic = settings->quic;
  if (settings->coordinators.size() > 1) {
    // Several coordinators: a killed leader is noticed within ~0.5 s (its host answers a
    // PING with ICMP port unreachable, see QuicOptions::keep_alive), a paused one or a dead
    // host within 3 s (the PINGs keep a live connection busy), and a redirect to a leader
    // that stopped answering costs 2 s at most, not the 10 s handshake default.
    quic.keep_alive = std::chrono::milliseconds{500};
    quic.idle_timeout = std::min(quic.idle_timeout, std::chrono::milliseconds{3'000});
    quic.handshake_timeout = std::min(quic.handshake_timeout, std::chrono::milliseconds{2'000});
  }
  auto make_target = [&io, &settings, quic](const HostPort& address) {
    const std::string server_name = settings->server_name.empty() ? address.host : settings->server_name;
    return std::make_unique<QuicConnector>(io.get_executor(), address.host, address.port, server_name, quic);
  };
  std::vector<FailoverConnector::Target> targets;
  for (const auto& [text, address] : settings->coordinators) targets.push_back({text, make_target(address)});
  FailoverConnector connector(std::move(targets), make_target);

  AgentDispatcherOptions dispatcher_options;
  dispatcher_options.agent_id = settings->agent_id;
  dispatcher_options.hostname = settings->hostname;
  dispatcher_options.ips = host_ips();
  dispatcher_options.labels = {config.labels().begin(), config.labels().end()};
  dispatcher_options.config_group = config.group_id();
  dispatcher_options.agent_version = announced_version();
  if (config.daily_stats_interval_seconds() > 0)
    dispatcher_options.daily_stats_interval = std::chrono::seconds{config.daily_stats_interval_seconds()};
  if (metrics) {
    dispatcher_options.on_execution = [&metrics, sink = std::move(on_execution)](const v1::Execution& record) {
      metrics->count(record);
      if (sink) sink(record);
    };
  } else {
    dispatcher_options.on_execution = std::move(on_execution);
  }
  AgentDispatcher dispatcher(io.get_executor(), engine, *store, connector, dispatcher_options);
  if (metrics) {
    metrics->set_dispatcher(&dispatcher);
    if (!metrics->listen(error)) {
      std::cerr << "qf-agent: " << config_file.string() << ": " << error << "\n";
      return k_exit_invalid_config;
    }
    logger()->info("metrics at http://{}/metrics", config.metrics().listen());
  }
  dispatcher.start();
  engine.start();
  logger()->info("qf-agent {} started as {} (connected mode: {} coordinator(s), first {}); store {}", version,
                 settings->agent_id, settings->coordinators.size(), settings->coordinators.front().first,
                 store_options.path);
  notify_ready(notify_socket, "running; connecting to " + settings->coordinators.front().first);

  // An enrolled agent renews its certificate before it expires; the connector takes the new
  // pair at its next connection, the open one goes on.
  CertificateRenewal renewal(io, config, config_file);
  renewal.start();

  // Retention: purge at start and then daily (synced records only).
  asio::steady_timer purge_timer(io);
  std::function<void()> purge = [&] {
    store->async_purge(std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()),
                       [](error_code e, std::uint64_t removed) {
                         if (e) logger()->warn("retention clean-up failed: {}", e.message());
                         else if (removed > 0) logger()->info("retention removed {} old record(s)", removed);
                       });
    purge_timer.expires_after(std::chrono::hours{24});
    purge_timer.async_wait([&](const error_code& e) { if (!e) purge(); });
  };
  purge();

  std::function<void()> wait_reload = [&] {
    reload_signal.async_wait([&](const error_code& e, int) {
      if (e) return;
      logger()->info("SIGHUP: nothing to reload in connected mode (the coordinator pushes the tasks)");
      wait_reload();
    });
  };
  wait_reload();

  asio::steady_timer goodbye_timer(io);
  stop_signals.async_wait([&](const error_code& e, int signal) {
    if (e) return;
    logger()->info("signal {}: stopping; running tasks get {} s", signal, shutdown_grace_seconds);
    reload_signal.cancel();
    purge_timer.cancel();
    renewal.stop();
    dispatcher.stop();
    engine.stop(std::chrono::seconds{shutdown_grace_seconds}, [&] {
      // The session closes once the last results are acknowledged (a drain): wait for it, a
      // bounded time, so that the coordinator sees a goodbye rather than a silent peer.
      auto waited = std::make_shared<std::chrono::milliseconds>(0);
      auto check = std::make_shared<std::function<void()>>();
      *check = [&, waited, check] {
        if (dispatcher.connected() && *waited < k_drain_wait) {
          *waited += k_goodbye_delay;
          goodbye_timer.expires_after(k_goodbye_delay);
          goodbye_timer.async_wait([check](const error_code&) { (*check)(); });
          return;
        }
        dispatcher.close_now();
        goodbye_timer.expires_after(k_goodbye_delay);  // time for the close to leave
        goodbye_timer.async_wait([&, check](const error_code&) {
          *check = nullptr;
          store->flush();
          logger()->info("stopped; every record is flushed (unsent ones stay queued for the next start)");
          io.stop();
        });
      };
      (*check)();
    });
  });
  io.run();
  return 0;
}

}  // namespace quartzflow::examples
