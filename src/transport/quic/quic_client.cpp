// SPDX-License-Identifier: Apache-2.0
// The agent's QUIC side: each connect resolves the coordinator, opens a connected UDP
// socket (so a closed port fails fast through ICMP) and runs one handshake.
#include <filesystem>
#include <set>

#include <boost/asio/ip/udp.hpp>
#include <boost/asio/post.hpp>
#include <fmt/format.h>

#include <quartzflow/log.hpp>
#include <quartzflow/quic.hpp>

#include "quic_connection.hpp"

namespace quartzflow {

namespace asio = boost::asio;
using quic::QuicConnection;
using quic::udp;

namespace {

/// The socket of one client connection; the connection owns it through its hooks.
struct ClientSocket {
  explicit ClientSocket(asio::any_io_executor ex) : socket(ex) {}
  udp::socket socket;
  udp::endpoint local;
  udp::endpoint remote;
  std::array<std::uint8_t, 65536> buffer{};
};

void receive(const std::shared_ptr<ClientSocket>& client, std::weak_ptr<QuicConnection> weak_conn) {
  client->socket.async_receive(asio::buffer(client->buffer),
                               [weak = std::weak_ptr<ClientSocket>(client), weak_conn](const error_code& ec, std::size_t n) {
                                 auto self = weak.lock();
                                 auto conn = weak_conn.lock();
                                 if (!self || !conn || ec == asio::error::operation_aborted) return;
                                 if (ec == asio::error::connection_refused) {
                                   // ICMP port unreachable: nobody listens there (any more). The
                                   // error is reported before datagrams already queued, such as
                                   // the server's CONNECTION_CLOSE with its reason: read those first.
                                   for (int i = 0; i < 64; ++i) {
                                     error_code e;
                                     const std::size_t size = self->socket.receive(asio::buffer(self->buffer), 0, e);
                                     if (e) break;
                                     conn->on_datagram(self->local, self->remote, self->buffer.data(), size);
                                   }
                                   conn->fail("nobody listens at " + quic::endpoint_text(self->remote) +
                                              " (connection refused)");
                                   return;
                                 }
                                 if (!ec) conn->on_datagram(self->local, self->remote, self->buffer.data(), n);
                                 receive(self, weak_conn);
                               });
}

}  // namespace

struct QuicConnector::Impl : std::enable_shared_from_this<Impl> {
  Impl(asio::any_io_executor ex, std::string h, std::uint16_t p, std::string name, QuicOptions opts)
      : executor(ex), host(std::move(h)), port(p), server_name(std::move(name)), options(std::move(opts)), resolver(ex) {}

  asio::any_io_executor executor;
  std::string host;
  std::uint16_t port;
  std::string server_name;
  QuicOptions options;
  udp::resolver resolver;
  std::shared_ptr<quic::TlsCredentials> credentials;
  std::filesystem::file_time_type credentials_time{};  ///< of the cert file when loaded
  std::set<std::shared_ptr<QuicConnection>> handshaking;
  std::string last_error;

  void fail(const ConnectHandler& handler, error_code ec, std::string why) {
    last_error = std::move(why);
    asio::post(executor, [handler, ec] { handler(ec, nullptr); });
  }

  void connect(ConnectHandler handler) {
    // A certificate renewed on disk (qf-agent's enrolment renewal) is used from the next
    // connection on: the open one keeps the certificate it was made with.
    std::error_code time_error;
    const auto cert_time = std::filesystem::last_write_time(options.tls.cert_file, time_error);
    if (!credentials || (!time_error && cert_time != credentials_time)) {
      std::string detail;
      auto loaded = quic::TlsCredentials::load(options.tls, detail);
      if (!loaded && !credentials) return fail(handler, make_error_code(errc::invalid_argument), detail);
      if (loaded) {
        credentials = std::move(loaded);
        credentials_time = cert_time;
      }
    }
    resolver.async_resolve(host, std::to_string(port),
                           [weak = weak_from_this(), handler](const error_code& ec, udp::resolver::results_type results) {
                             auto self = weak.lock();
                             if (!self) return;
                             if (ec || results.empty())
                               return self->fail(handler, ec ? ec : make_error_code(errc::not_found),
                                                 fmt::format("cannot resolve {}: {}", self->host, ec.message()));
                             // IPv4 first: "localhost" often resolves to ::1 where nobody listens.
                             udp::endpoint remote = results.begin()->endpoint();
                             for (const auto& entry : results)
                               if (entry.endpoint().address().is_v4()) {
                                 remote = entry.endpoint();
                                 break;
                               }
                             self->handshake(remote, handler);
                           });
  }

  void handshake(const udp::endpoint& remote, const ConnectHandler& handler) {
    auto client = std::make_shared<ClientSocket>(executor);
    error_code ec;
    client->socket.open(remote.protocol(), ec);
    if (!ec) client->socket.connect(remote, ec);
    if (!ec) client->socket.non_blocking(true, ec);
    if (ec) return fail(handler, ec, fmt::format("UDP socket to {}: {}", quic::endpoint_text(remote), ec.message()));
    client->local = client->socket.local_endpoint(ec);
    client->remote = remote;

    auto connection = std::make_shared<QuicConnection>(executor, options, credentials);
    std::weak_ptr<QuicConnection> weak_conn = connection;
    quic::ConnectionHooks hooks;
    hooks.send = [client](const udp::endpoint&, std::span<const std::uint8_t> bytes) {
      error_code e;  // a full socket buffer loses the datagram: QUIC retransmits
      client->socket.send(asio::buffer(bytes.data(), bytes.size()), 0, e);
    };
    hooks.handshake_done = [weak = weak_from_this(), weak_conn, handler](const std::string& detail) {
      auto self = weak.lock();
      auto conn = weak_conn.lock();
      if (!self || !conn) return;
      self->handshaking.erase(conn);
      if (!detail.empty()) return self->fail(handler, make_error_code(boost::system::errc::connection_refused), detail);
      self->last_error.clear();
      asio::post(self->executor, [handler, conn] { handler({}, conn); });
    };
    connection->set_hooks(std::move(hooks));
    handshaking.insert(connection);
    receive(client, weak_conn);
    std::string detail;
    if (!connection->init_client(client->local, remote, server_name, detail)) {
      handshaking.erase(connection);
      connection->abandon();
      return fail(handler, make_error_code(errc::invalid_argument), detail);
    }
  }
};

QuicConnector::QuicConnector(asio::any_io_executor executor, std::string host, std::uint16_t port,
                             std::string server_name, QuicOptions options)
    : impl_(std::make_shared<Impl>(executor, std::move(host), port, std::move(server_name), std::move(options))) {}

QuicConnector::~QuicConnector() {
  for (const auto& connection : impl_->handshaking) connection->abandon();
}

void QuicConnector::connect(ConnectHandler handler) { impl_->connect(std::move(handler)); }

std::string QuicConnector::last_error() const { return impl_->last_error; }

}  // namespace quartzflow
