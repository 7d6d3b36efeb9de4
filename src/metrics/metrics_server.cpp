// SPDX-License-Identifier: Apache-2.0
// MetricsServer: GET /metrics over plain Asio (no Beast: the agent links nothing heavy for
// it). One request per connection, bounded in size, time and connections.
#include <array>
#include <set>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <fmt/format.h>

#include <quartzflow/log.hpp>
#include <quartzflow/metrics.hpp>

#include "metrics_request.hpp"

namespace quartzflow {

namespace asio = boost::asio;
using asio::ip::tcp;

struct MetricsServer::Impl : std::enable_shared_from_this<MetricsServer::Impl> {
  struct Client {
    explicit Client(asio::any_io_executor ex) : socket(ex), timer(ex) {}
    tcp::socket socket;
    asio::steady_timer timer;
    std::string received;
    std::array<char, 1024> chunk{};
    std::string answer;
  };

  Impl(asio::any_io_executor ex, MetricsServerOptions o, Render r)
      : executor(ex), options(std::move(o)), render(std::move(r)), acceptor(ex), retry_timer(ex) {}

  asio::any_io_executor executor;
  MetricsServerOptions options;
  Render render;
  tcp::acceptor acceptor;
  asio::steady_timer retry_timer;  // after an accept error (too many open files): wait, then accept again
  std::set<std::shared_ptr<Client>> clients;
  bool stopped = false;

  void accept() {
    if (stopped) return;
    auto client = std::make_shared<Client>(executor);
    acceptor.async_accept(client->socket, [weak = weak_from_this(), client](const error_code& ec) {
      auto self = weak.lock();
      if (!self || self->stopped || ec == asio::error::operation_aborted) return;
      if (ec) {
        logger()->warn("metrics endpoint: accept failed: {}", ec.message());
        self->retry_timer.expires_after(std::chrono::milliseconds{100});
        self->retry_timer.async_wait([weak](const error_code& e) {
          if (auto again = weak.lock(); again && !e) again->accept();
        });
        return;
      }
      if (self->clients.size() >= self->options.max_connections) {
        error_code ignored;
        client->socket.close(ignored);
      } else {
        self->clients.insert(client);
        client->timer.expires_after(self->options.request_timeout);
        client->timer.async_wait([weak, client](const error_code& e) {
          if (auto again = weak.lock(); again && !e) again->close(client);
        });
        self->read(client);
      }
      self->accept();
    });
  }

  void read(const std::shared_ptr<Client>& client) {
    client->socket.async_read_some(
        asio::buffer(client->chunk), [weak = weak_from_this(), client](const error_code& ec, std::size_t n) {
          auto self = weak.lock();
          if (!self || !self->clients.count(client)) return;
          if (ec) return self->close(client);
          client->received.append(client->chunk.data(), n);
          const auto request = detail::parse_metrics_request(client->received);
          if (request == detail::MetricsRequest::incomplete) {
            if (client->received.size() >= self->options.max_request_bytes) return self->close(client);
            return self->read(client);
          }
          if (client->received.size() > self->options.max_request_bytes || request == detail::MetricsRequest::malformed)
            return self->close(client);
          self->answer(client, request);
        });
  }

  void answer(const std::shared_ptr<Client>& client, detail::MetricsRequest request) {
    unsigned status = 200;
    std::string body;
    std::string_view type = "text/plain; charset=utf-8";
    std::string extra;
    switch (request) {
      case detail::MetricsRequest::metrics:
        body = render ? render() : std::string{};
        type = "text/plain; version=0.0.4; charset=utf-8";
        break;
      case detail::MetricsRequest::bad_method:
        status = 405;
        body = "only GET is served here\n";
        extra = "Allow: GET\r\n";
        break;
      default:
        status = 404;
        body = "not found: the metrics are at /metrics\n";
        break;
    }
    const std::string_view reason = status == 200 ? "OK" : status == 404 ? "Not Found" : "Method Not Allowed";
    client->answer =
        fmt::format("HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n", status,
                    reason, type, body.size(), extra);
    client->answer += body;
    asio::async_write(client->socket, asio::buffer(client->answer),
                      [weak = weak_from_this(), client](const error_code&, std::size_t) {
                        if (auto self = weak.lock()) self->close(client);
                      });
  }

  void close(const std::shared_ptr<Client>& client) {
    if (!clients.erase(client)) return;
    error_code ignored;
    client->timer.cancel();
    client->socket.shutdown(tcp::socket::shutdown_both, ignored);
    client->socket.close(ignored);
  }
};

MetricsServer::MetricsServer(asio::any_io_executor executor, MetricsServerOptions options, Render render)
    : impl_(std::make_shared<Impl>(executor, std::move(options), std::move(render))) {}

MetricsServer::~MetricsServer() { stop(); }

void MetricsServer::listen(error_code& ec, std::string* detail) {
  auto& impl = *impl_;
  const auto where = [&] { return fmt::format("{}:{}", impl.options.host, impl.options.port); };
  const auto address = asio::ip::make_address(impl.options.host, ec);
  if (ec) {
    if (detail) *detail = fmt::format("metrics listen address \"{}\": not an IP address", impl.options.host);
    ec = make_error_code(errc::invalid_argument);
    return;
  }
  const tcp::endpoint endpoint(address, impl.options.port);
  impl.acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl.acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) impl.acceptor.bind(endpoint, ec);
  if (!ec) impl.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    if (detail) *detail = fmt::format("metrics endpoint {}: {}", where(), ec.message());
    error_code ignored;
    impl.acceptor.close(ignored);
    return;
  }
  impl.stopped = false;
  asio::post(impl.executor, [weak = impl_->weak_from_this()] {
    if (auto self = weak.lock()) self->accept();
  });
}

void MetricsServer::listen() {
  error_code ec;
  std::string detail;
  listen(ec, &detail);
  if (ec) throw_error(ec, detail);
}

std::uint16_t MetricsServer::port() const noexcept {
  error_code ec;
  const auto endpoint = impl_->acceptor.local_endpoint(ec);
  return ec ? 0 : endpoint.port();
}

void MetricsServer::stop() {
  auto& impl = *impl_;
  impl.stopped = true;
  error_code ignored;
  impl.acceptor.close(ignored);
  impl.retry_timer.cancel();
  const auto open = impl.clients;  // close() erases from the set
  for (const auto& client : open) impl.close(client);
}

}  // namespace quartzflow
