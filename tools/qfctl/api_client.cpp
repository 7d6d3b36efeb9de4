// SPDX-License-Identifier: Apache-2.0
// send_http_request: one HTTP/1.1 exchange over TCP or TLS (Beast), bounded by one deadline.
// The only translation unit of qfctl with Beast in it (they compile slowly).
#include "api_client.hpp"

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp uses std::exchange

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <fmt/format.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <quartzflow/version.hpp>

namespace qfctl {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;

/// Log pages are at most 1 MiB; lists at most 500 items.
constexpr std::uint64_t k_max_response_bytes = 64u << 20;

/// What one exchange needs and what it found out; outlives the coroutine.
struct Exchange {
  const ServerUrl& server;
  const TlsSettings& tls;
  std::chrono::steady_clock::time_point deadline;
  http::request<http::string_body> request;
  std::string stage = "resolve";  ///< where a failure happened, for the message
  long verify_result = X509_V_OK;  ///< the certificate check's verdict after a failed handshake
  HttpResponse response;
  std::uint64_t max_response_bytes = 0;  ///< 0 = k_max_response_bytes
};

bool is_ip_address(const std::string& host) {
  boost::system::error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

http::request<http::string_body> make_request(const ServerUrl& server, const HttpRequest& in) {
  http::request<http::string_body> req;
  const auto verb = http::string_to_verb(in.method);
  if (verb == http::verb::unknown) req.method_string(in.method);
  else req.method(verb);
  req.target(server.base_path + in.target);
  req.version(11);
  const bool default_port = server.port == (server.https ? "443" : "80");
  const std::string host = server.host.find(':') != std::string::npos ? "[" + server.host + "]" : server.host;
  req.set(http::field::host, default_port ? host : host + ":" + server.port);
  req.set(http::field::user_agent, fmt::format("qfctl/{}", quartzflow::version));
  req.set(http::field::accept, "application/json");
  if (!in.bearer_token.empty()) req.set(http::field::authorization, "Bearer " + in.bearer_token);
  if (!in.body.empty()) {
    req.set(http::field::content_type, "application/json");
    req.body() = in.body;
  }
  req.keep_alive(false);
  req.prepare_payload();
  return req;
}

template <typename Stream>
asio::awaitable<void> talk(Stream& stream, Exchange& x) {
  x.stage = "send";
  co_await http::async_write(stream, x.request, asio::use_awaitable);
  x.stage = "receive";
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(x.max_response_bytes ? x.max_response_bytes : k_max_response_bytes);
  co_await http::async_read(stream, buffer, parser, asio::use_awaitable);
  auto& res = parser.get();
  x.response.status = res.result_int();
  x.response.content_type = std::string(res[http::field::content_type]);
  x.response.body = std::move(res.body());
}

asio::awaitable<void> run(Exchange& x, tcp::resolver& resolver, ssl::context* tls_context) {
  auto executor = co_await asio::this_coro::executor;
  x.stage = "resolve";
  const auto endpoints = co_await resolver.async_resolve(x.server.host, x.server.port, asio::use_awaitable);
  beast::tcp_stream tcp_stream(executor);
  tcp_stream.expires_at(x.deadline);
  x.stage = "connect";
  co_await tcp_stream.async_connect(endpoints, asio::use_awaitable);
  if (tls_context == nullptr) {
    co_await talk(tcp_stream, x);
    co_return;
  }
  beast::ssl_stream<beast::tcp_stream> tls_stream(std::move(tcp_stream), *tls_context);
  beast::get_lowest_layer(tls_stream).expires_at(x.deadline);
  // SNI carries names only (RFC 6066); the macro SSL_set_tlsext_host_name is SSL_ctrl.
  if (!is_ip_address(x.server.host))
    SSL_ctrl(tls_stream.native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
             const_cast<char*>(x.server.host.c_str()));
  // OpenSSL's own name check, so that a mismatch is reported as one (not as "unspecified").
  if (!x.tls.insecure) {
    X509_VERIFY_PARAM* param = SSL_get0_param(tls_stream.native_handle());
    if (is_ip_address(x.server.host)) X509_VERIFY_PARAM_set1_ip_asc(param, x.server.host.c_str());
    else X509_VERIFY_PARAM_set1_host(param, x.server.host.c_str(), 0);
  }
  x.stage = "TLS handshake";
  try {
    co_await tls_stream.async_handshake(ssl::stream_base::client, asio::use_awaitable);
  } catch (const boost::system::system_error&) {
    x.verify_result = SSL_get_verify_result(tls_stream.native_handle());
    throw;
  }
  co_await talk(tls_stream, x);
}

std::string describe_failure(const Exchange& x, const boost::system::error_code& ec, std::chrono::seconds timeout) {
  if (ec == beast::error::timeout || ec == asio::error::operation_aborted)
    return fmt::format("{}: no answer within {} s (--timeout)", x.stage, timeout.count());
  if (x.stage == "TLS handshake" && x.verify_result != X509_V_OK) {
    const char* reason = X509_verify_cert_error_string(x.verify_result);
    if (x.verify_result == X509_V_ERR_HOSTNAME_MISMATCH || x.verify_result == X509_V_ERR_IP_ADDRESS_MISMATCH)
      return fmt::format("TLS handshake: the server's certificate is not valid for \"{}\" ({})", x.server.host, reason);
    return fmt::format("TLS handshake: the server's certificate did not verify against {} ({}); give the cluster CA "
                       "with --ca-file (or ca_file: in the config file), or --insecure to skip the check",
                       x.tls.ca_file.empty() ? std::string("the system trust store") : x.tls.ca_file, reason);
  }
  if (x.stage == "TLS handshake" && ec.category() == asio::error::get_ssl_category())
    return fmt::format("TLS handshake: {} (is the server speaking HTTPS?)", ec.message());
  if (x.stage == "receive" && ec == http::error::end_of_stream)
    return "receive: the server closed the connection without an answer (if it serves HTTPS, use an https:// URL)";
  return fmt::format("{}: {}", x.stage, ec.message());
}

}  // namespace

std::optional<HttpResponse> send_http_request(const ServerUrl& server, const TlsSettings& tls,
                                              std::chrono::seconds timeout, const HttpRequest& request,
                                              std::string& failure) {
  asio::io_context io;
  Exchange x{server,
             tls,
             std::chrono::steady_clock::now() + timeout,
             make_request(server, request),
             {},
             {},
             {},
             request.max_response_bytes};
  x.stage = "resolve";

  std::optional<ssl::context> tls_context;
  if (server.https) {
    tls_context.emplace(ssl::context::tls_client);
    tls_context->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                             ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    boost::system::error_code ec;
    if (tls.insecure) {
      tls_context->set_verify_mode(ssl::verify_none);
    } else {
      tls_context->set_verify_mode(ssl::verify_peer);
      if (!tls.ca_file.empty()) tls_context->load_verify_file(tls.ca_file, ec);
      else tls_context->set_default_verify_paths(ec);
      if (ec) {
        failure = tls.ca_file.empty() ? fmt::format("cannot load the system trust store: {}", ec.message())
                                      : fmt::format("cannot load the CA file {}: {}", tls.ca_file, ec.message());
        return std::nullopt;
      }
    }
  }

  // Name resolution has no timeout of its own: the deadline cancels it.
  tcp::resolver resolver(io);
  asio::steady_timer resolve_deadline(io);
  resolve_deadline.expires_at(x.deadline);
  resolve_deadline.async_wait([&resolver](boost::system::error_code ec) {
    if (!ec) resolver.cancel();
  });

  boost::system::error_code result;
  std::string unexpected;  // a failure that is not an error_code
  bool finished = false;
  asio::co_spawn(io, run(x, resolver, tls_context ? &*tls_context : nullptr),
                 [&](std::exception_ptr error) {
                   finished = true;
                   resolve_deadline.cancel();
                   if (!error) return;
                   try {
                     std::rethrow_exception(error);
                   } catch (const boost::system::system_error& e) {
                     result = e.code();
                   } catch (const std::exception& e) {
                     unexpected = fmt::format("{}: {}", x.stage, e.what());
                   }
                 });
  io.run();
  if (!unexpected.empty()) {
    failure = unexpected;
    return std::nullopt;
  }
  if (!finished || result) {
    failure = describe_failure(x, result, timeout);
    return std::nullopt;
  }
  return std::move(x.response);
}

}  // namespace qfctl
