// SPDX-License-Identifier: Apache-2.0
// The coordinator's QUIC endpoint: one UDP socket, connections found by connection id.
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include <boost/asio/ip/address.hpp>
#include <fmt/format.h>

#include <quartzflow/log.hpp>
#include <quartzflow/quic.hpp>

#include "datagram_check.hpp"
#include "quic_connection.hpp"

namespace quartzflow {

namespace asio = boost::asio;
using quic::QuicConnection;
using quic::udp;

namespace {
constexpr std::size_t k_datagrams_per_turn = 256;
}  // namespace

struct QuicServer::Impl : std::enable_shared_from_this<Impl> {
  Impl(asio::any_io_executor ex, QuicOptions opts) : executor(ex), options(std::move(opts)) {}

  asio::any_io_executor executor;
  QuicOptions options;
  std::shared_ptr<quic::TlsCredentials> credentials;
  std::optional<udp::socket> socket;
  udp::endpoint local;
  AcceptHandler accept;
  std::unordered_map<std::string, std::shared_ptr<QuicConnection>> by_cid;
  std::unordered_set<std::shared_ptr<QuicConnection>> connections;
  std::size_t handshaking = 0;  // connections not yet authenticated
  QuicServerStats stats;
  std::array<std::uint8_t, 65536> buffer{};
  udp::endpoint from;

  void receive() {
    socket->async_receive_from(asio::buffer(buffer), from, [weak = weak_from_this()](const error_code& ec, std::size_t n) {
      auto self = weak.lock();
      if (!self || !self->socket) return;
      if (!ec) self->datagram(n);
      else if (ec == asio::error::operation_aborted) return;
      // Drain what else is waiting before going back to the reactor.
      for (std::size_t i = 0; i < k_datagrams_per_turn && self->socket; ++i) {
        error_code e;
        const std::size_t size = self->socket->receive_from(asio::buffer(self->buffer), self->from, 0, e);
        if (e) break;
        self->datagram(size);
      }
      if (self->socket) self->receive();
    });
  }

  void datagram(std::size_t size) {
    ++stats.datagrams_received;
    const std::uint8_t* data = buffer.data();
    if (const char* problem = quic::datagram_problem({data, size})) {
      // Unauthenticated input: counted, and logged rarely so a flood cannot fill the disk.
      if (stats.datagrams_malformed++ % 10000 == 0)
        logger()->info("QUIC: dropped a datagram from {}: {} ({} dropped so far)", from.address().to_string(), problem,
                       stats.datagrams_malformed);
      return;
    }
    ngtcp2_version_cid vc{};
    if (ngtcp2_pkt_decode_version_cid(&vc, data, size, quic::k_connection_id_length) != 0) return;
    const std::string key(reinterpret_cast<const char*>(vc.dcid), vc.dcidlen);
    if (auto it = by_cid.find(key); it != by_cid.end()) {
      auto connection = it->second;  // it may remove itself while reading
      connection->on_datagram(local, from, data, size);
      return;
    }
    ngtcp2_pkt_hd hd{};
    if (ngtcp2_accept(&hd, data, size) != 0) return;  // not a client Initial: nothing to say
    // Handshakes cost CPU and a slot each: a flood of them must not lock out agents that
    // already hold sessions, nor grow without bound.
    if (connections.size() >= options.max_connections || handshaking >= options.max_handshakes) {
      if (stats.connections_refused++ % 1000 == 0)
        logger()->warn("QUIC: refusing new connections ({} open, {} in handshake; limits {} and {}); {} refused so far",
                       connections.size(), handshaking, options.max_connections, options.max_handshakes,
                       stats.connections_refused);
      return;
    }
    auto connection = std::make_shared<QuicConnection>(executor, options, credentials);
    connection->set_hooks(hooks_for(connection));
    std::string detail;
    if (!connection->init_server(local, from, hd, detail)) {
      logger()->error("QUIC: cannot set up a connection from {}: {}", from.address().to_string(), detail);
      connection->abandon();
      return;
    }
    connections.insert(connection);
    ++handshaking;
    connection->on_datagram(local, from, data, size);
  }

  quic::ConnectionHooks hooks_for(const std::shared_ptr<QuicConnection>& connection) {
    quic::ConnectionHooks h;
    h.send = [weak = weak_from_this()](const udp::endpoint& to, std::span<const std::uint8_t> bytes) {
      auto self = weak.lock();
      if (!self || !self->socket) return;
      error_code ec;  // a full socket buffer loses the datagram: QUIC retransmits
      self->socket->send_to(asio::buffer(bytes.data(), bytes.size()), to, 0, ec);
      ++self->stats.datagrams_sent;
    };
    std::weak_ptr<QuicConnection> weak_conn = connection;  // weakly: the connection owns its hooks
    h.route = [weak = weak_from_this(), weak_conn](const std::string& cid, bool add) {
      auto self = weak.lock();
      if (!self) return;
      if (!add) {
        if (auto it = self->by_cid.find(cid); it != self->by_cid.end() && it->second == weak_conn.lock())
          self->by_cid.erase(it);
      } else if (auto conn = weak_conn.lock()) {
        self->by_cid[cid] = conn;
      }
    };
    h.handshake_done = [weak = weak_from_this(), weak_conn](const std::string& detail) {
      auto self = weak.lock();
      auto conn = weak_conn.lock();
      if (!self || !conn) return;
      --self->handshaking;
      if (!detail.empty()) {
        // Logged, but not one line per packet of a flood.
        if (self->stats.handshakes_failed++ < 100 || self->stats.handshakes_failed % 1000 == 0)
          logger()->warn("QUIC: refused {}: {} ({} refused so far)", conn->remote_address(), detail,
                         self->stats.handshakes_failed);
        return;
      }
      ++self->stats.connections_accepted;
      logger()->debug("QUIC: {} authenticated as \"{}\"", conn->remote_address(), conn->peer_identity());
      if (self->accept) self->accept(conn);
    };
    h.finished = [weak = weak_from_this(), weak_conn] {
      auto self = weak.lock();
      if (auto conn = weak_conn.lock(); self && conn) self->connections.erase(conn);
    };
    return h;
  }

  void close() {
    auto all = std::move(connections);
    connections.clear();
    for (const auto& connection : all) {
      connection->close_now("the coordinator is shutting down");
      connection->abandon();
    }
    by_cid.clear();
    handshaking = 0;
    if (socket) {
      error_code ec;
      socket->close(ec);
      socket.reset();
    }
  }
};

QuicServer::QuicServer(asio::any_io_executor executor, QuicOptions options)
    : impl_(std::make_shared<Impl>(executor, std::move(options))) {}

QuicServer::~QuicServer() { impl_->close(); }

error_code QuicServer::listen(const std::string& host, std::uint16_t port, AcceptHandler accept, std::string& detail) {
  impl_->close();
  impl_->credentials = quic::TlsCredentials::load(impl_->options.tls, detail);
  if (!impl_->credentials) return make_error_code(errc::invalid_argument);
  error_code ec;
  const auto address = asio::ip::make_address(host, ec);
  if (ec) {
    detail = fmt::format("listen address: \"{}\" is not an IP address", host);
    return make_error_code(errc::invalid_argument);
  }
  udp::socket socket(impl_->executor);
  const udp::endpoint endpoint(address, port);
  if (socket.open(endpoint.protocol(), ec); !ec) socket.bind(endpoint, ec);
  if (!ec) socket.non_blocking(true, ec);
  if (ec) {
    detail = fmt::format("cannot listen on UDP {}: {}", quic::endpoint_text(endpoint), ec.message());
    return ec;
  }
  // Room for bursts from many agents at once (thousands of ACKs after a push). The kernel
  // caps the request at net.core.rmem_max: say so, since overflow shows up as slow pushes.
  constexpr int k_socket_buffer = 4 << 20;
  socket.set_option(asio::socket_base::receive_buffer_size(k_socket_buffer), ec);
  socket.set_option(asio::socket_base::send_buffer_size(k_socket_buffer), ec);
  asio::socket_base::receive_buffer_size granted;
  socket.get_option(granted, ec);
  if (!ec && granted.value() < k_socket_buffer)
    logger()->warn("QUIC: UDP receive buffer is {} KiB, not {} KiB (net.core.rmem_max): with thousands of agents "
                   "raise it, e.g. sysctl -w net.core.rmem_max={}",
                   granted.value() / 1024, k_socket_buffer / 1024, k_socket_buffer);
  impl_->local = socket.local_endpoint();
  impl_->socket.emplace(std::move(socket));
  impl_->accept = std::move(accept);
  impl_->receive();
  logger()->info("QUIC: listening on UDP {} (ALPN {})", quic::endpoint_text(impl_->local), quic::k_alpn);
  return {};
}

std::uint16_t QuicServer::port() const noexcept { return impl_->local.port(); }

void QuicServer::close() { impl_->close(); }

QuicServerStats QuicServer::stats() const noexcept {
  QuicServerStats s = impl_->stats;
  s.connections_open = impl_->connections.size();
  return s;
}

}  // namespace quartzflow
