// SPDX-License-Identifier: Apache-2.0
// AdminServer: the coordinator's operator endpoint. REST under /api/v1 (JSON through the
// protobuf mapping, {"code":0,"data":...}), the live events WebSocket, /metrics, /healthz,
// /readyz and the OpenAPI document, over HTTP/1.1 or HTTPS on the coordinator's io_context.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/any_io_executor.hpp>

#include <quartzflow/error.hpp>

namespace quartzflow {

class Coordinator;
class Authenticator;

/// One file of the web console: its path under `/` and its bytes, with a gzip copy when
/// one was made at build time. The bytes outlive the server (static storage).
struct ConsoleFile {
  std::string_view path;  ///< relative, e.g. `index.html`, `assets/index-3f2a1b9c.js`
  std::string_view body;
  std::string_view gzip;  ///< the same bytes gzip-compressed; empty = none
};

namespace v1 {
class Channel;
class Delivery;
}  // namespace v1

/// What the admin API asks of the process's alerting (qf-coordinator: its AlertService);
/// each member may be empty.
struct AdminAlertHooks {
  /// Rules, channels, silences, monitors (a ping too) or an acknowledgement were written
  /// through this API: the leader's engine should read them again.
  std::function<void()> changed;
  /// POST /api/v1/channels/{id}/test: sends a TEST notification through `channel` (as
  /// stored) now; `done` gets the delivery recorded with its attempt. Empty: 503.
  std::function<void(const v1::Channel& channel, std::function<void(error_code, const v1::Delivery&)> done)>
      test_channel;
  /// Appended to /metrics (alert and delivery counters).
  std::function<std::string()> metrics_text;
};

/// Agent enrolment (qf-coordinator: `enrolment:`): the cluster CA that signs agents'
/// requests. Empty `ca_key_pem`: enrolment is off (POST /api/v1/enrol answers 503).
struct AdminEnrolmentOptions {
  std::string ca_cert_pem;  ///< the CA agents' certificates chain to (agent_tls.ca_file)
  std::string ca_key_pem;   ///< its private key
  std::chrono::seconds certificate_validity{90 * 24 * 3600};
  /// Agent endpoints given to joining agents; empty = `agent_port` on the host of the URL
  /// the agent joined with.
  std::vector<std::string> agent_addresses;
  std::uint16_t agent_port = 7443;
};

struct AdminServerOptions {
  std::string host = "127.0.0.1";               ///< an IP address to listen on
  std::uint16_t port = 8443;                    ///< 0: any free port (see `port()`)
  std::string tls_cert_file;                    ///< PEM; HTTPS when set (with the key)
  std::string tls_key_file;
  std::size_t max_header_bytes = 16 * 1024;     ///< larger: 431
  std::size_t max_body_bytes = 1024 * 1024;     ///< larger: 413
  std::chrono::milliseconds request_timeout{30'000};  ///< to read a request (and idle keep-alive)
  std::size_t max_connections = 1024;           ///< beyond: accepted, answered 503, closed
  std::size_t max_connections_per_address = 64; ///< from one client address; beyond: 503 as above
  std::size_t max_event_backlog = 1024;         ///< events queued for one WebSocket; beyond: dropped
  std::chrono::seconds session_ttl{43'200};     ///< console session lifetime (cookie Max-Age)
  /// /metrics: tasks with run series of their own (`qf_runs_total{task=...}`, the last
  /// success gauge); the runs of further tasks count under `task="_other"` (RunMetrics).
  std::size_t max_task_series = 1000;
  /// The web console served at `/`: the files built into the binary (empty: none; GET /
  /// then says the console was not built) ...
  std::span<const ConsoleFile> console_files;
  /// ... or, when set, a directory with a built console (index.html, assets/, `.gz`
  /// copies), read once by `listen`; it wins over `console_files`.
  std::string console_dir;
  /// The key (32 bytes) that seals the inline secrets of alert channels before they are
  /// stored (qf-coordinator: `alerts.secret_key_file`). Empty: inline secrets are refused
  /// (file and env references still work).
  std::string alert_secret_key;
  /// The process's alerting (pings, channel tests, metrics); see AdminAlertHooks.
  AdminAlertHooks alerts;
  /**
   * `GET /api/v1/admin/backup` (admins): makes a consistent copy of the store in a file and
   * completes (on any thread) with its path, which the API sends and then removes; or with
   * an error and the text the API answers (PostgreSQL: the pg_dump command to run instead).
   * Empty: the route answers that this server makes no backups.
   */
  std::function<void(std::function<void(error_code ec, std::string file, std::string detail)>)> backup;
  /// Agent enrolment with join tokens; see AdminEnrolmentOptions.
  AdminEnrolmentOptions enrolment;
};

/// Counters since start, for tests and /metrics.
struct AdminServerStats {
  std::uint64_t connections = 0;
  std::uint64_t connections_refused = 0;    ///< over max_connections or max_connections_per_address
  std::uint64_t requests = 0;
  std::uint64_t websocket_clients = 0;
  std::uint64_t websocket_dropped = 0;      ///< slow consumers closed
};

/**
 * The admin endpoint of a Coordinator. Every call is authenticated (session cookie or
 * `Authorization: Bearer`) and checked against the caller's role (viewer: reads; operator:
 * tasks, groups, agents, executions; admin: everything, users too), except `/healthz`,
 * `/readyz`, `/metrics`, `/api/v1/openapi.json` and login. Mutations are audited with
 * the caller, address, user agent and request id. Other GET paths serve the web console
 * (see `AdminServerOptions::console_files`): hashed assets cached for a year, `index.html`
 * (never cached) for the console's own routes, gzip when accepted, a strict CSP.
 *
 * Thread safety: not thread-safe; use from its executor (the coordinator's).
 * Cancellation: `stop` closes the listener and every connection.
 */
class AdminServer {
 public:
  AdminServer(boost::asio::any_io_executor executor, Coordinator& coordinator, Authenticator& auth,
              AdminServerOptions options = {});
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  /// Binds and starts accepting. On failure `detail` says why (bad TLS files, port in use).
  error_code listen(std::string& detail);
  /// The same, throwing `quartzflow::error` (with the detail) on failure.
  void listen() {
    std::string detail;
    if (auto ec = listen(detail)) throw_error(ec, detail);
  }
  /// The bound port (after listen).
  std::uint16_t port() const noexcept;
  /// `/readyz` answers 200 from now on (the coordinator has loaded its catalog).
  void set_ready(bool ready) noexcept;
  void stop();
  AdminServerStats stats() const noexcept;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace quartzflow
