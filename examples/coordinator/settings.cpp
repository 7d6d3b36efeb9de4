// SPDX-License-Identifier: Apache-2.0
// CoordinatorConfig -> CoordinatorSettings: defaults from config.proto, checks in file order.
#include "settings.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include <unistd.h>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/ip/address.hpp>
#include <fmt/format.h>

#include <quartzflow/alert_secrets.hpp>
#include <quartzflow/certs.hpp>
#include <quartzflow/enrolment.hpp>
#include <quartzflow/log.hpp>
#include <quartzflow/version.hpp>
#include <quartzflow/yaml_config.hpp>

#include "../common/service.hpp"

namespace quartzflow::examples {

namespace fs = std::filesystem;

namespace {

constexpr const char* k_default_data_dir = "/var/lib/quartzflow/coordinator";
constexpr const char* k_default_agent_listen = "0.0.0.0:7443";

std::string system_host_name() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return host[0] != '\0' ? host : "coordinator";
}

/// Several coordinators: the catalog the others commit is followed by a poll of its version
/// (500 ms by default on PostgreSQL; off on SQLite, where this coordinator is the only
/// writer). The reason a value is refused, or empty.
std::string set_catalog_poll_interval(const v1::CoordinatorConfig& config, CoordinatorOptions& options) {
  std::uint32_t poll_ms = config.store().has_postgres_dsn() ? 500 : 0;
  if (config.cluster().has_catalog_poll_interval_ms()) poll_ms = config.cluster().catalog_poll_interval_ms();
  if (poll_ms != 0 && (poll_ms < 50 || poll_ms > 60'000))
    return fmt::format("{} is out of range 50-60000 (0 = off)", poll_ms);
  options.catalog_poll_interval = std::chrono::milliseconds{poll_ms};
  return {};
}

/// Agent enrolment: the cluster CA's key (with agent_tls.ca_file) signs joining agents'
/// requests. `{field, reason}` of a refused value, or an empty field.
template <typename Resolve>
std::pair<std::string, std::string> set_enrolment(const v1::CoordinatorEnrolmentConfig& config,
                                                  CoordinatorSettings& settings, const Resolve& resolve) {
  auto& enrolment = settings.admin.enrolment;
  enrolment.agent_port = settings.agent_listen.port;
  if (config.ca_key_file().empty()) {
    if (config.certificate_validity_seconds() != 0 || config.advertise_agent_addresses_size() != 0)
      return {"enrolment.ca_key_file", "is required with the other enrolment settings"};
    return {};
  }
  auto read = [](const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  const auto key_path = resolve(config.ca_key_file());
  if (auto why = unreadable_reason(key_path); !why.empty())
    return {"enrolment.ca_key_file", fmt::format("cannot read {}: {}", key_path.string(), why)};
  std::string warning;
  if (auto problem = key_file_permission_problem(key_path.string(), warning))
    return {"enrolment.ca_key_file", *problem};
  enrolment.ca_key_pem = read(key_path);
  enrolment.ca_cert_pem = read(settings.quic.tls.ca_file);
  const auto validity = config.certificate_validity_seconds();
  if (validity != 0 && (validity < 10 || validity > 315'360'000))
    return {"enrolment.certificate_validity_seconds", fmt::format("{} is out of range 10-315360000", validity)};
  if (validity != 0) enrolment.certificate_validity = std::chrono::seconds{validity};
  // A trial signature: a key that is not the CA's is refused now, not at the first join.
  KeyAndRequest probe;
  SignedAgentCertificate signed_probe;
  std::string detail;
  if (make_key_and_request("probe", probe, detail) ||
      sign_agent_request(enrolment.ca_cert_pem, enrolment.ca_key_pem, probe.csr_pem, "probe", std::chrono::seconds{60},
                         signed_probe, detail))
    return {"enrolment.ca_key_file", fmt::format("{} with agent_tls.ca_file: {}", key_path.string(), detail)};
  std::string reason;
  for (int i = 0; i < config.advertise_agent_addresses_size(); ++i) {
    if (!parse_host_port(config.advertise_agent_addresses(i), true, reason))
      return {fmt::format("enrolment.advertise_agent_addresses[{}]", i),
              fmt::format("\"{}\": {}", config.advertise_agent_addresses(i), reason)};
    enrolment.agent_addresses.push_back(config.advertise_agent_addresses(i));
  }
  const auto& host = settings.agent_listen.host;
  if (enrolment.agent_addresses.empty() && host != "0.0.0.0" && host != "::")
    enrolment.agent_addresses.push_back(fmt::format(
        "{}:{}", host.find(':') != std::string::npos ? "[" + host + "]" : host, settings.agent_listen.port));
  return {};
}

/// Several coordinators: the lease and the addresses the others show. `{field, reason}` of a
/// refused value, or an empty field.
std::pair<std::string, std::string> set_cluster(const v1::ClusterConfig& cluster, const CoordinatorSettings& settings,
                                                bool has_configured_id, bool https, ClusterOptions& options) {
  // The lease holder's id must be unique among the coordinators: the configured id, else the
  // host name with the agent port (two coordinators on one host differ by their port).
  options.coordinator_id = has_configured_id ? settings.options.dispatcher.coordinator_id
                                             : fmt::format("{}:{}", system_host_name(), settings.agent_listen.port);
  options.version = QUARTZFLOW_VERSION_STRING;
  if (cluster.lease_ttl_ms() != 0) {
    if (cluster.lease_ttl_ms() < 300 || cluster.lease_ttl_ms() > 60'000)
      return {"cluster.lease_ttl_ms", fmt::format("{} is out of range 300-60000", cluster.lease_ttl_ms())};
    options.lease_ttl = std::chrono::milliseconds{cluster.lease_ttl_ms()};
  }
  // A wildcard listen address is no address to give others: the host name stands for it.
  auto shown_host = [](const std::string& host) {
    return host == "0.0.0.0" || host == "::" ? system_host_name() : host;
  };
  std::string reason;
  if (!cluster.advertise_agent_address().empty()) {
    if (!parse_host_port(cluster.advertise_agent_address(), true, reason))
      return {"cluster.advertise_agent_address", fmt::format("\"{}\": {}", cluster.advertise_agent_address(), reason)};
    options.advertise_agent_address = cluster.advertise_agent_address();
  } else {
    options.advertise_agent_address =
        fmt::format("{}:{}", shown_host(settings.agent_listen.host), settings.agent_listen.port);
  }
  options.advertise_admin_address =
      !cluster.advertise_admin_address().empty()
          ? cluster.advertise_admin_address()
          : fmt::format("{}://{}:{}", https ? "https" : "http", shown_host(settings.admin.host), settings.admin.port);
  return {};
}

}  // namespace

std::optional<CoordinatorSettings> load_coordinator_settings(const std::string& config_file,
                                                             const std::string& log_level_override,
                                                             std::string& error) {
  CoordinatorSettings settings;
  settings.config_file = fs::absolute(config_file);
  const std::string file = settings.config_file.string();
  auto fail = [&](const std::string& field, const std::string& reason) {
    error = fmt::format("{}: {}: {}", file, field, reason);
    return std::nullopt;
  };

  v1::CoordinatorConfig config;
  YamlError yaml_error;
  if (!yaml_file_to_message(file, config, yaml_error)) {
    error = yaml_error.message();
    return std::nullopt;
  }
  const fs::path base = settings.config_file.parent_path();
  auto resolve = [&](const std::string& path) { return (base / path).lexically_normal(); };

  settings.log_level = !log_level_override.empty() ? log_level_override
                                                   : (config.log_level().empty() ? "info" : config.log_level());
  if (!set_log_level(settings.log_level))
    return fail(log_level_override.empty() ? "log_level" : "--log-level",
                fmt::format("\"{}\" is not one of trace, debug, info, warn, error, critical, off", settings.log_level));
  settings.log = config.log();

  settings.data_dir = resolve(config.data_dir().empty() ? k_default_data_dir : config.data_dir());
  if (config.store().has_postgres_dsn()) {
    if (config.store().postgres_dsn().empty())
      return fail("store.postgres_dsn", "is empty; give a libpq connection string (host=... dbname=... user=...)");
    settings.postgres_dsn = config.store().postgres_dsn();
  }
  if (!config.store().password_file().empty()) {
    if (settings.postgres_dsn.empty()) return fail("store.password_file", "is for store.postgres_dsn only");
    const fs::path path = resolve(config.store().password_file());
    if (auto why = unreadable_reason(path); !why.empty())
      return fail("store.password_file", fmt::format("cannot read {}: {}", path.string(), why));
    settings.postgres_password_file = path.string();
  }
  settings.database_file = config.store().has_sqlite_path() && !config.store().sqlite_path().empty()
                               ? resolve(config.store().sqlite_path())
                               : settings.data_dir / "coordinator.db";

  const std::string listen = config.agent_listen().empty() ? k_default_agent_listen : config.agent_listen();
  std::string reason;
  auto address = parse_host_port(listen, true, reason);
  if (!address) return fail("agent_listen", fmt::format("\"{}\": {}", listen, reason));
  boost::system::error_code ip_error;
  boost::asio::ip::make_address(address->host, ip_error);
  if (ip_error)
    return fail("agent_listen", fmt::format("\"{}\": \"{}\" is not an IP address (e.g. 0.0.0.0, 127.0.0.1, [::])",
                                            listen, address->host));
  settings.agent_listen = std::move(*address);

  // Mutual TLS: the coordinator's own pair and the CA that signed the agents' certificates.
  const auto& tls = config.agent_tls();
  const std::pair<const char*, const std::string*> tls_files[] = {
      {"agent_tls.ca_file", &tls.ca_file()}, {"agent_tls.cert_file", &tls.cert_file()}, {"agent_tls.key_file", &tls.key_file()}};
  for (const auto& [field, value] : tls_files) {
    if (value->empty()) return fail(field, "is required (agents and the coordinator authenticate each other)");
    const fs::path path = resolve(*value);
    if (auto why = unreadable_reason(path); !why.empty()) return fail(field, fmt::format("cannot read {}: {}", path.string(), why));
  }
  settings.quic.tls = TlsFiles{resolve(tls.ca_file()).string(), resolve(tls.cert_file()).string(),
                               resolve(tls.key_file()).string()};
  if (!tls.server_name().empty()) return fail("agent_tls.server_name", "is for agents only; remove it here");
  if (auto why = set_enrolment(config.enrolment(), settings, resolve); !why.first.empty())
    return fail(why.first, why.second);

  auto& dispatcher = settings.options.dispatcher;
  dispatcher.coordinator_id = config.coordinator_id().empty() ? system_host_name() : config.coordinator_id();
  dispatcher.coordinator_version = announced_version();
  if (config.heartbeat_interval_seconds() > 3600)
    return fail("heartbeat_interval_seconds", fmt::format("{} is out of range 1-3600", config.heartbeat_interval_seconds()));
  if (config.heartbeat_interval_seconds() > 0)
    dispatcher.heartbeat_interval = std::chrono::seconds{config.heartbeat_interval_seconds()};
  if (auto why = set_catalog_poll_interval(config, settings.options); !why.empty())
    return fail("cluster.catalog_poll_interval_ms", why);

  if (!config.manifest_file().empty()) {
    settings.manifest_file = resolve(config.manifest_file());
    if (!load_task_manifest(settings.manifest_file->string(), settings.manifest, yaml_error)) {
      error = fmt::format("{}: manifest_file: {}", file, yaml_error.message());
      return std::nullopt;
    }
  }

  // The admin API: HTTPS with admin_tls; without it plain HTTP, by default on loopback only
  // (passwords and tokens would cross the network in clear).
  const auto& admin_tls = config.admin_tls();
  const bool https = !admin_tls.cert_file().empty() || !admin_tls.key_file().empty();
  if (https) {
    const std::pair<const char*, const std::string*> admin_files[] = {{"admin_tls.cert_file", &admin_tls.cert_file()},
                                                                       {"admin_tls.key_file", &admin_tls.key_file()}};
    for (const auto& [field, value] : admin_files) {
      if (value->empty()) return fail(field, "is required with the other admin_tls file");
      const fs::path path = resolve(*value);
      if (auto why = unreadable_reason(path); !why.empty()) return fail(field, fmt::format("cannot read {}: {}", path.string(), why));
    }
    settings.admin.tls_cert_file = resolve(admin_tls.cert_file()).string();
    settings.admin.tls_key_file = resolve(admin_tls.key_file()).string();
  }
  if (!admin_tls.ca_file().empty() || !admin_tls.server_name().empty())
    return fail("admin_tls", "takes cert_file and key_file only (clients authenticate with passwords and tokens)");
  const std::string admin_listen =
      config.admin_listen().empty() ? (https ? "0.0.0.0:8443" : "127.0.0.1:8443") : config.admin_listen();
  auto admin_address = parse_host_port(admin_listen, true, reason);
  if (!admin_address) return fail("admin_listen", fmt::format("\"{}\": {}", admin_listen, reason));
  const auto admin_ip = boost::asio::ip::make_address(admin_address->host, ip_error);
  if (ip_error)
    return fail("admin_listen", fmt::format("\"{}\": \"{}\" is not an IP address (e.g. 127.0.0.1, 0.0.0.0, [::])",
                                            admin_listen, admin_address->host));
  if (!https && !admin_ip.is_loopback())
    settings.warnings.push_back(fmt::format(
        "admin_listen {}: plain HTTP off this host: passwords and tokens cross the network in clear; set admin_tls",
        admin_listen));
  settings.admin.host = admin_address->host;
  settings.admin.port = admin_address->port;
  if (config.session_ttl_seconds() > 30 * 86400)
    return fail("session_ttl_seconds", fmt::format("{} is out of range 60-2592000", config.session_ttl_seconds()));
  if (config.session_ttl_seconds() != 0 && config.session_ttl_seconds() < 60)
    return fail("session_ttl_seconds", fmt::format("{} is out of range 60-2592000", config.session_ttl_seconds()));
  if (config.session_ttl_seconds() != 0) settings.auth.session_ttl = std::chrono::seconds{config.session_ttl_seconds()};
  settings.admin.session_ttl = settings.auth.session_ttl;
  settings.auth.require_totp_for_admins = config.require_totp_for_admins();
  if (!config.console_dir().empty()) {
    const auto console_dir = resolve(config.console_dir());
    std::error_code exists_error;
    if (!std::filesystem::exists(console_dir / "index.html", exists_error))
      return fail("console_dir", fmt::format("{}: no index.html (a built console: src/admin/console/dist after "
                                             "npm run build)", console_dir.string()));
    settings.admin.console_dir = console_dir.string();
  }
  if (config.metrics().max_task_series() > 100'000)
    return fail("metrics.max_task_series",
                fmt::format("{} is out of range 1-100000 (0 = 1000)", config.metrics().max_task_series()));
  if (config.metrics().max_task_series() != 0) settings.admin.max_task_series = config.metrics().max_task_series();
  // The key that seals channel secrets: the configured file (every coordinator of a cluster
  // needs the same), else one made in data_dir at the first start.
  settings.create_alert_secret_key = config.alerts().secret_key_file().empty();
  settings.alert_secret_key_file = settings.create_alert_secret_key ? settings.data_dir / k_alert_secret_key_file_name
                                                                    : resolve(config.alerts().secret_key_file());
  if (!settings.create_alert_secret_key) {
    if (auto why = unreadable_reason(settings.alert_secret_key_file); !why.empty())
      return fail("alerts.secret_key_file",
                  fmt::format("cannot read {}: {}", settings.alert_secret_key_file.string(), why));
    std::string key_error;
    auto key = load_alert_secret_key(settings.alert_secret_key_file.string(), false, key_error);
    if (!key) return fail("alerts.secret_key_file", key_error);
    settings.admin.alert_secret_key = std::move(*key);
  }
  if (const auto& url = config.alerts().console_url(); !url.empty()) {
    if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0)
      return fail("alerts.console_url", fmt::format("\"{}\": the scheme must be http:// or https://", url));
    settings.alert_console_url = url.back() == '/' ? url.substr(0, url.size() - 1) : url;
  }
  if (const auto seconds = config.alerts().p95_refresh_seconds(); seconds != 0) {
    if (seconds > 86'400) return fail("alerts.p95_refresh_seconds", fmt::format("{}: at most 86400 (a day)", seconds));
    settings.alert_p95_refresh = std::chrono::seconds{seconds};
  }
  if (config.retention_days() > 36'500)
    return fail("retention_days", fmt::format("{} is out of range 1-36500 (0 = 30)", config.retention_days()));
  const std::chrono::hours default_retention{24 * (config.retention_days() == 0 ? 30 : config.retention_days())};
  const auto& retention = config.retention();
  struct RetentionKind {
    const char* field;
    std::uint32_t days;
    std::chrono::hours* out;
  };
  for (const auto& kind :
       {RetentionKind{"retention.executions_days", retention.executions_days(), &settings.retention.executions},
        RetentionKind{"retention.logs_days", retention.logs_days(), &settings.retention.logs},
        RetentionKind{"retention.audit_days", retention.audit_days(), &settings.retention.audit}}) {
    if (kind.days > 36'500)
      return fail(kind.field, fmt::format("{} is out of range 1-36500 (0 = retention_days)", kind.days));
    *kind.out = kind.days == 0 ? default_retention : std::chrono::hours{24 * kind.days};
  }
  if (retention.interval_hours() > 168)
    return fail("retention.interval_hours",
                fmt::format("{} is out of range 1-168 (0 = 1)", retention.interval_hours()));
  if (retention.interval_hours() != 0) settings.retention.interval = std::chrono::hours{retention.interval_hours()};
  if (!retention.archive_dir().empty()) settings.retention.archive_dir = resolve(retention.archive_dir()).string();
  if (auto [field, why] =
          set_cluster(config.cluster(), settings, !config.coordinator_id().empty(), https, settings.options.cluster);
      !field.empty())
    return fail(field, why);
  return settings;
}

}  // namespace quartzflow::examples
