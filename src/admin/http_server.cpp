// SPDX-License-Identifier: Apache-2.0
// The admin endpoint's sockets (Beast): HTTP/1.1 with keep-alive or HTTPS, limits on header,
// body, request time and connections, /healthz /readyz /metrics, and the events WebSocket.
// The only Beast-heavy translation unit of the admin API; the routes live in AdminApi.
#include <algorithm>
#include <deque>
#include <memory>
#include <set>
#include <unordered_map>
#include <string>

#include <utility>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <fmt/format.h>

#include <quartzflow/admin.hpp>
#include <quartzflow/certs.hpp>
#include <quartzflow/log.hpp>

#include "admin_api.hpp"
#include "console_files.hpp"

namespace quartzflow {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using detail::AdminApi;
using detail::ApiRequest;
using detail::ApiResponse;

/// Fills path and query of `out` from a request target; false when it cannot be decoded.
bool split_target(std::string_view target, ApiRequest& out) {
  const auto q = target.find('?');
  // The path stays encoded: the router splits it at '/' first, then decodes each segment,
  // so an encoded '/' stays inside its segment (an id), never a path separator.
  out.path = std::string(target.substr(0, q));
  if (out.path.empty() || out.path.front() != '/') return false;
  if (q == std::string_view::npos) return true;
  std::string_view query = target.substr(q + 1);
  while (!query.empty()) {
    const auto amp = query.find('&');
    const auto item = query.substr(0, amp);
    if (!item.empty()) {
      const auto eq = item.find('=');
      auto name = detail::percent_decode(item.substr(0, eq), true);
      auto value = detail::percent_decode(eq == std::string_view::npos ? std::string_view{} : item.substr(eq + 1), true);
      if (!name || !value) return false;
      out.query.emplace_back(std::move(*name), std::move(*value));
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return true;
}

std::string text_of(beast::string_view s) { return std::string(s.data(), s.size()); }

}  // namespace

struct AdminServer::Impl : std::enable_shared_from_this<AdminServer::Impl> {
  Impl(asio::any_io_executor ex, Coordinator& coordinator, Authenticator& auth, AdminServerOptions o)
      : executor(ex), options(std::move(o)), api(std::make_shared<AdminApi>(ex, coordinator, auth, options)),
        acceptor(ex) {
    api->start();
  }

  asio::any_io_executor executor;
  AdminServerOptions options;
  std::shared_ptr<AdminApi> api;
  detail::ConsoleFiles console;
  tcp::acceptor acceptor;
  std::unique_ptr<asio::ssl::context> tls;
  AdminServerStats stats;
  std::size_t active = 0;
  std::unordered_map<std::string, std::size_t> active_by_address;
  bool stopped = false;
  bool ready = false;
  std::uint64_t next_request = 0;
  /// Open connections' closers, so stop() ends them.
  std::map<std::uint64_t, std::function<void()>> closers;
  std::uint64_t next_connection = 0;

  void accept() {
    acceptor.async_accept([self = shared_from_this()](beast::error_code ec, tcp::socket socket) {
      if (self->stopped) return;
      if (!ec) self->start_connection(std::move(socket));
      else if (ec != asio::error::operation_aborted) logger()->warn("admin: accept failed: {}", ec.message());
      self->accept();
    });
  }

  void start_connection(tcp::socket socket);

  void release_slot(const std::string& address) {
    --active;
    if (auto it = active_by_address.find(address); it != active_by_address.end() && --it->second == 0)
      active_by_address.erase(it);
  }
};

namespace {

/// One connection: requests one after another (keep-alive), or a WebSocket after an upgrade.
template <typename Stream>
class HttpSession : public std::enable_shared_from_this<HttpSession<Stream>> {
 public:
  HttpSession(std::shared_ptr<AdminServer::Impl> server, Stream stream, std::string peer, std::uint64_t id)
      : server_(server), stream_(std::move(stream)), peer_(std::move(peer)), id_(id) {}

  ~HttpSession() {
    if (auto s = server_.lock()) {
      s->release_slot(peer_);
      s->closers.erase(id_);
    }
  }

  void start() {
    if (auto s = server_.lock())
      s->closers[id_] = [weak = this->weak_from_this()] {
        if (auto self = weak.lock()) {
          beast::error_code ignored;
          beast::get_lowest_layer(self->stream_).socket().shutdown(tcp::socket::shutdown_both, ignored);
          beast::get_lowest_layer(self->stream_).close();
        }
      };
    if constexpr (std::is_same_v<Stream, beast::ssl_stream<beast::tcp_stream>>) {
      beast::get_lowest_layer(stream_).expires_after(timeout());
      stream_.async_handshake(asio::ssl::stream_base::server, [self = this->shared_from_this()](beast::error_code ec) {
        if (ec) return;  // not TLS, or gave up: nothing to answer
        self->read();
      });
    } else {
      read();
    }
  }

 private:
  std::chrono::milliseconds timeout() const {
    auto s = server_.lock();
    return s ? s->options.request_timeout : std::chrono::milliseconds{30'000};
  }

  void read() {
    auto s = server_.lock();
    if (!s || s->stopped) return;
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(s->options.max_header_bytes));
    parser_->body_limit(s->options.max_body_bytes);
    beast::get_lowest_layer(stream_).expires_after(s->options.request_timeout);
    http::async_read(stream_, buffer_, *parser_, [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
      self->on_read(ec);
    });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == asio::error::operation_aborted) return close();
    if (ec == http::error::body_limit) return send_error(413, "request body too large");
    if (ec == http::error::header_limit) return send_error(431, "request header fields too large");
    if (ec) return send_error(400, fmt::format("malformed request: {}", ec.message()));
    auto s = server_.lock();
    if (!s) return;
    ++s->stats.requests;
    auto& req = parser_->get();
    keep_alive_ = req.keep_alive();
    ApiRequest api;
    api.method = text_of(req.method_string());
    api.peer_ip = peer_;
    api.secure = std::is_same_v<Stream, beast::ssl_stream<beast::tcp_stream>>;
    api.request_id = fmt::format("{:x}-{}", id_, ++s->next_request);
    if (!split_target(text_of(req.target()), api)) return send_error(400, "malformed request target");
    if (auto it = req.find(http::field::authorization); it != req.end()) api.authorization = text_of(it->value());
    if (auto it = req.find(http::field::cookie); it != req.end()) api.cookie = text_of(it->value());
    if (auto it = req.find(http::field::user_agent); it != req.end()) api.user_agent = text_of(it->value().substr(0, 256));
    if (auto it = req.find(http::field::content_type); it != req.end()) api.content_type = text_of(it->value());
    if (auto it = req.find(http::field::origin); it != req.end()) api.origin = text_of(it->value());
    if (auto it = req.find(http::field::host); it != req.end()) api.host = text_of(it->value());
    if (const auto problem = detail::cross_origin_problem(api)) return send_error(403, *problem);

    if (api.path == "/healthz" && api.method == "GET") return send_text(200, "ok\n", "text/plain");
    if (api.path == "/readyz" && api.method == "GET") {
      if (!s->ready) return send_text(503, "starting\n", "text/plain");
      if (!s->api->store_reachable()) return send_text(503, "database unreachable\n", "text/plain");
      return send_text(200, "ready\n", "text/plain");
    }
    if (api.path == "/metrics" && api.method == "GET")
      return send_text(200, s->api->metrics_text(), "text/plain; version=0.0.4");
    if (api.path == "/api/v1/events" && websocket::is_upgrade(req)) return upgrade(std::move(api));
    if (api.method == "GET") {
      const auto accept_encoding = req.find(http::field::accept_encoding);
      if (auto file = s->console.serve(api.path, accept_encoding == req.end() ? "" : text_of(accept_encoding->value())))
        return send(std::move(*file));
    }

    api.body = std::move(req.body());
    // The session lives until its answer is written (the handler may wait for the store
    // or a password hash); every route answers.
    s->api->handle(std::move(api), [self = this->shared_from_this()](ApiResponse response) {
      self->send(std::move(response));
    });
  }

  void send_text(unsigned status, std::string body, const char* type) {
    ApiResponse r;
    r.status = status;
    r.body = std::move(body);
    r.content_type = type;
    send(std::move(r));
  }

  void send_error(unsigned status, const std::string& message) {
    keep_alive_ = false;
    const auto code = status == 413 || status == 431 ? v1::API_ERROR_CODE_RESOURCE_EXHAUSTED
                      : status == 403                ? v1::API_ERROR_CODE_PERMISSION_DENIED
                                                     : v1::API_ERROR_CODE_INVALID_ARGUMENT;
    auto r = detail::error_response({code, message, {}}, "");
    r.status = status;
    send(std::move(r));
  }

  void send(ApiResponse r) {
    auto res = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(r.status), 11);
    res->set(http::field::server, "quartzflow");
    res->set(http::field::content_type, r.content_type);
    // API answers are never cached; console files say otherwise in their own headers.
    const bool has_cache_control = std::any_of(r.headers.begin(), r.headers.end(),
                                               [](const auto& h) { return beast::iequals(h.first, "Cache-Control"); });
    if (!has_cache_control) res->set(http::field::cache_control, "no-store");
    res->set("X-Content-Type-Options", "nosniff");
    for (auto& [name, value] : r.headers) res->insert(name, value);
    res->keep_alive(keep_alive_);
    res->body() = std::move(r.body);
    res->prepare_payload();
    beast::get_lowest_layer(stream_).expires_after(timeout());
    http::async_write(stream_, *res, [self = this->shared_from_this(), res](beast::error_code ec, std::size_t) {
      if (ec || !self->keep_alive_) return self->close();
      self->read();
    });
  }

  void close() {
    beast::error_code ignored;
    beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_send, ignored);
  }

  void upgrade(ApiRequest api);

  std::weak_ptr<AdminServer::Impl> server_;
  Stream stream_;
  std::string peer_;
  std::uint64_t id_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  bool keep_alive_ = true;
};

/// The events WebSocket: the client sends EventSubscription JSON, the server Event JSON.
/// Events queue per client; one that falls `max_event_backlog` behind is closed.
template <typename Stream>
class EventSession : public std::enable_shared_from_this<EventSession<Stream>> {
 public:
  EventSession(std::shared_ptr<AdminServer::Impl> server, Stream stream)
      : server_(server), ws_(std::move(stream)), backlog_(server->options.max_event_backlog) {}

  ~EventSession() {
    if (auto s = server_.lock()) s->api->events().unsubscribe(subscription_);
  }

  void accept(http::request<http::string_body> req) {
    beast::get_lowest_layer(ws_).expires_never();
    ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::server));
    ws_.read_message_max(64 * 1024);
    ws_.async_accept(req, [self = this->shared_from_this()](beast::error_code ec) {
      if (ec) return;
      auto s = self->server_.lock();
      if (!s) return;
      ++s->stats.websocket_clients;
      self->subscription_ = s->api->events().subscribe([weak = self->weak_from_this()](const std::string& json) {
        if (auto me = weak.lock()) me->enqueue(json);
      });
      self->read();
    });
  }

 private:
  void enqueue(const std::string& json) {
    if (closing_) return;
    if (queue_.size() >= backlog_) {
      // Never slow the coordinator: a client this far behind is dropped with the reason.
      closing_ = true;
      if (auto s = server_.lock()) {
        ++s->stats.websocket_dropped;
        s->api->events().unsubscribe(subscription_);
      }
      queue_.clear();
      ws_.async_close(websocket::close_reason(websocket::close_code::policy_error,
                                              fmt::format("slow consumer: more than {} events behind", backlog_)),
                      [self = this->shared_from_this()](beast::error_code) {});
      return;
    }
    queue_.push_back(json);
    if (queue_.size() == 1) write();
  }

  void write() {
    ws_.text(true);
    ws_.async_write(asio::buffer(queue_.front()), [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec || self->closing_) return;
      self->queue_.pop_front();
      if (!self->queue_.empty()) self->write();
    });
  }

  void read() {
    ws_.async_read(in_, [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return;  // closed, or the connection broke: the destructor unsubscribes
      auto s = self->server_.lock();
      if (!s) return;
      v1::EventSubscription filter;
      const auto text = beast::buffers_to_string(self->in_.data());
      self->in_.consume(self->in_.size());
      std::string refused;
      if (auto failure = detail::parse_body(text, filter)) refused = failure->message;
      else refused = detail::EventHub::validate(filter);
      if (!refused.empty()) {
        self->closing_ = true;
        self->ws_.async_close(websocket::close_reason(websocket::close_code::policy_error, refused.substr(0, 120)),
                              [self](beast::error_code) {});
        return;
      }
      s->api->events().set_filter(self->subscription_, std::move(filter));
      self->read();
    });
  }

  std::weak_ptr<AdminServer::Impl> server_;
  websocket::stream<Stream> ws_;
  std::size_t backlog_;
  std::uint64_t subscription_ = 0;
  std::deque<std::string> queue_;
  beast::flat_buffer in_;
  bool closing_ = false;
};

template <typename Stream>
void HttpSession<Stream>::upgrade(ApiRequest api) {
  auto s = server_.lock();
  if (!s) return;
  s->api->authenticate(api, [self = this->shared_from_this()](std::optional<Principal> who, ApiFailure failure) {
    if (!who) {
      auto r = detail::error_response(failure, "");
      self->keep_alive_ = false;
      return self->send(std::move(r));
    }
    auto server = self->server_.lock();
    if (!server) return;
    std::make_shared<EventSession<Stream>>(server, std::move(self->stream_))->accept(self->parser_->release());
  });
}

}  // namespace

void AdminServer::Impl::start_connection(tcp::socket socket) {
  beast::error_code ec;
  const auto remote = socket.remote_endpoint(ec);
  std::string peer = ec ? "" : remote.address().to_string();
  ++stats.connections;
  const auto id = ++next_connection;
  // One client holding idle connections must not make the API answer 503 to everyone.
  const auto from_address = active_by_address.find(peer);
  const std::size_t held = from_address == active_by_address.end() ? 0 : from_address->second;
  if (active >= options.max_connections || held >= options.max_connections_per_address) {
    ++stats.connections_refused;
    // Answered, not silently dropped: the client learns why.
    auto stream = std::make_shared<beast::tcp_stream>(std::move(socket));
    auto res = std::make_shared<std::string>(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n"
        "Content-Length: 72\r\n\r\n{\"code\":10,\"message\":\"too many connections to the admin API; try again\"}");
    stream->expires_after(std::chrono::seconds{5});
    asio::async_write(*stream, asio::buffer(*res), [stream, res](beast::error_code, std::size_t) {
      beast::error_code ignored;
      stream->socket().shutdown(tcp::socket::shutdown_both, ignored);
    });
    return;
  }
  ++active;
  ++active_by_address[peer];
  if (tls) {
    std::make_shared<HttpSession<beast::ssl_stream<beast::tcp_stream>>>(
        shared_from_this(), beast::ssl_stream<beast::tcp_stream>(std::move(socket), *tls), std::move(peer), id)
        ->start();
  } else {
    std::make_shared<HttpSession<beast::tcp_stream>>(shared_from_this(), beast::tcp_stream(std::move(socket)),
                                                     std::move(peer), id)
        ->start();
  }
}

AdminServer::AdminServer(asio::any_io_executor executor, Coordinator& coordinator, Authenticator& auth,
                         AdminServerOptions options)
    : impl_(std::make_shared<Impl>(executor, coordinator, auth, std::move(options))) {
  impl_->api->set_server_stats([weak = std::weak_ptr<Impl>(impl_)] {
    auto self = weak.lock();
    return self ? self->stats : AdminServerStats{};
  });
}

AdminServer::~AdminServer() { stop(); }

error_code AdminServer::listen(std::string& detail) {
  auto& impl = *impl_;
  if (!impl.options.tls_cert_file.empty() || !impl.options.tls_key_file.empty()) {
    std::string warning;
    if (auto problem = certificate_date_problem(impl.options.tls_cert_file, std::chrono::system_clock::now(), warning)) {
      detail = "admin_tls.cert_file: " + *problem;
      return make_error_code(errc::invalid_argument);
    }
    if (!warning.empty()) logger()->warn("admin_tls.cert_file: {}", warning);
    if (auto problem = key_file_permission_problem(impl.options.tls_key_file, warning)) {
      detail = "admin_tls.key_file: " + *problem;
      return make_error_code(errc::invalid_argument);
    }
    if (!warning.empty()) logger()->warn("admin_tls.key_file: {}", warning);
    try {
      auto context = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
      context->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                           asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
      context->use_certificate_chain_file(impl.options.tls_cert_file);
      context->use_private_key_file(impl.options.tls_key_file, asio::ssl::context::pem);
      impl.tls = std::move(context);
    } catch (const boost::system::system_error& e) {
      detail = fmt::format("admin_tls: cannot load {} / {}: {}", impl.options.tls_cert_file, impl.options.tls_key_file,
                           e.code().message());
      return e.code();
    }
  }
  if (!impl.options.console_dir.empty()) {
    std::string problem;
    impl.console = detail::ConsoleFiles::read_directory(impl.options.console_dir, problem);
    if (impl.console.empty()) {
      detail = "console_dir: " + problem;
      return make_error_code(errc::invalid_argument);
    }
    logger()->info("web console: {} files from {}", impl.console.size(), impl.options.console_dir);
  } else {
    impl.console = detail::ConsoleFiles(impl.options.console_files);
    if (!impl.console.empty()) logger()->info("web console: {} files built in, served at /", impl.console.size());
    else
      logger()->warn("web console: not part of this build (qf-coordinator embeds it when Node.js is there at build "
                     "time; console_dir serves one from a directory); GET / says so, the API is served");
  }
  beast::error_code ec;
  const auto address = asio::ip::make_address(impl.options.host, ec);
  if (ec) {
    detail = fmt::format("\"{}\" is not an IP address", impl.options.host);
    return ec;
  }
  const tcp::endpoint endpoint(address, impl.options.port);
  impl.acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl.acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl.acceptor.bind(endpoint, ec);
  if (!ec) impl.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    detail = fmt::format("cannot listen on {}:{}: {}", impl.options.host, impl.options.port, ec.message());
    beast::error_code ignored;
    impl.acceptor.close(ignored);
    return ec;
  }
  impl.accept();
  return {};
}

std::uint16_t AdminServer::port() const noexcept {
  beast::error_code ec;
  const auto endpoint = impl_->acceptor.local_endpoint(ec);
  return ec ? 0 : endpoint.port();
}

void AdminServer::set_ready(bool ready) noexcept {
  impl_->ready = ready;
  impl_->api->set_ready(ready);
}

void AdminServer::stop() {
  auto& impl = *impl_;
  if (impl.stopped) return;
  impl.stopped = true;
  beast::error_code ignored;
  impl.acceptor.close(ignored);
  auto closers = std::move(impl.closers);
  for (auto& [id, close] : closers) close();
}

AdminServerStats AdminServer::stats() const noexcept { return impl_->stats; }

}  // namespace quartzflow
