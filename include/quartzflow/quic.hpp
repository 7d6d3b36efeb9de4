// SPDX-License-Identifier: Apache-2.0
// QUIC transport (ngtcp2 + GnuTLS, TLS 1.3, ALPN "quartzflow/1"): the agent protocol
// between processes. Each connection carries one bidirectional control stream of varint
// length-prefixed Envelopes. Both ends authenticate with certificates signed by the
// cluster CA (mutual TLS); a peer without one is refused during the handshake.
// Everything runs on the host's executor: UDP sockets and timers, no extra threads.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/any_io_executor.hpp>

#include <quartzflow/error.hpp>
#include <quartzflow/transport.hpp>

namespace quartzflow {

/// PEM files of one end: the cluster CA that signs peers, and this end's own pair.
struct TlsFiles {
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
};

struct QuicOptions {
  TlsFiles tls;
  /// A message larger than this closes the connection (PROTOCOL_VIOLATION-like reason).
  std::size_t max_message_bytes = 4 << 20;
  /// Bytes queued for a peer that does not read (flow control); beyond, the connection is
  /// closed with "peer not reading" instead of buffering without bound.
  std::size_t max_send_buffer_bytes = 16 << 20;
  /// No packet from the peer this long: the connection is gone (both ends).
  std::chrono::milliseconds idle_timeout{45'000};
  /// A PING when nothing else was sent this long; 0 = idle_timeout / 3. An agent of several
  /// coordinators uses 500 ms: a killed coordinator on a live host answers the PING with
  /// ICMP port unreachable, so the agent leaves it within ~0.5 s instead of at its next
  /// heartbeat (a dead host is noticed at the idle timeout).
  std::chrono::milliseconds keep_alive{0};
  std::chrono::milliseconds handshake_timeout{10'000};
  /// Server only: connections beyond this are refused.
  std::size_t max_connections = 20'000;
  /// Server only: handshakes in progress beyond this are refused (a flood of Initials
  /// cannot take every connection slot; agents retry with backoff).
  std::size_t max_handshakes = 1'000;
};

struct QuicServerStats {
  std::uint64_t connections_accepted = 0;  ///< handshakes completed, peer authenticated
  std::uint64_t handshakes_failed = 0;     ///< TLS or certificate errors, timeouts
  std::uint64_t connections_refused = 0;   ///< over max_connections, or not a QUIC Initial
  std::uint64_t datagrams_received = 0;
  std::uint64_t datagrams_malformed = 0;   ///< dropped before decoding: not shaped like QUIC
  std::uint64_t datagrams_sent = 0;
  std::size_t connections_open = 0;
};

/**
 * Listens on one UDP address; hands every authenticated connection to `accept`.
 * `Connection::remote_address` is "ip:port"; `Connection::peer_identity` is the common name
 * of the peer's certificate (the agent id it may register as).
 * Thread safety: not thread-safe; use from its executor. `close` (or destruction) ends
 * every connection.
 */
class QuicServer {
 public:
  QuicServer(boost::asio::any_io_executor executor, QuicOptions options);
  ~QuicServer();
  QuicServer(const QuicServer&) = delete;
  QuicServer& operator=(const QuicServer&) = delete;

  /// Loads the TLS files and binds `host:port` (port 0 picks one). Errors name the file or
  /// the address; nothing is listening then.
  error_code listen(const std::string& host, std::uint16_t port, AcceptHandler accept, std::string& detail);
  /// The same, throwing `quartzflow::error` (with the detail) on failure.
  void listen(const std::string& host, std::uint16_t port, AcceptHandler accept) {
    std::string detail;
    if (auto ec = listen(host, port, std::move(accept), detail)) throw_error(ec, detail);
  }
  /// The bound port (after a successful listen).
  std::uint16_t port() const noexcept;
  void close();
  QuicServerStats stats() const noexcept;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

/**
 * Connects to a coordinator over QUIC; each `connect` is a new handshake. The server's
 * certificate must be signed by the CA and name `server_name` (DNS or IP SAN, or CN).
 */
class QuicConnector final : public Connector {
 public:
  QuicConnector(boost::asio::any_io_executor executor, std::string host, std::uint16_t port,
                std::string server_name, QuicOptions options);
  ~QuicConnector() override;
  void connect(ConnectHandler handler) override;
  /// Why the last connect failed (TLS, certificate, timeout), for logs.
  std::string last_error() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace quartzflow
