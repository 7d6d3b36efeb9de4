// SPDX-License-Identifier: Apache-2.0
// HTTP executor: one request (and its redirects) per attempt on Asio/Beast, TLS through
// OpenSSL. The only translation unit that includes Beast: keep it that way (compile cost).
#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <utility>
#include <boost/algorithm/string/predicate.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <fmt/format.h>

#include <quartzflow/executor.hpp>
#include <quartzflow/version.hpp>

#include "../common/text.hpp"
#include "placeholders.hpp"

namespace quartzflow {
namespace {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;
using boost::system::error_code;

constexpr int k_max_redirects = 5;
/// Reading stops here: the body beyond it is neither kept nor counted.
constexpr std::uint64_t k_max_read_bytes = 64ull << 20;
constexpr std::uint32_t k_max_header_bytes = 64u << 10;

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && detail::lower_ascii(a) == detail::lower_ascii(b);
}

bool is_ip_literal(const std::string& host) {
  error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

/// An absolute http(s) URL taken apart; user info is dropped (never sent, never logged).
struct Url {
  bool tls = false;
  std::string host;    ///< without IPv6 brackets
  std::string port;    ///< numeric
  std::string target;  ///< path and query, at least "/"

  bool default_port() const { return port == (tls ? "443" : "80"); }
  std::string host_for_authority() const { return host.find(':') != std::string::npos ? "[" + host + "]" : host; }
  /// The Host header value.
  std::string authority() const { return default_port() ? host_for_authority() : host_for_authority() + ":" + port; }
  /// scheme://host[:port], for messages: no path or query (they may carry secrets).
  std::string origin() const { return (tls ? "https://" : "http://") + authority(); }
  bool same_origin(const Url& other) const {
    return tls == other.tls && iequals(host, other.host) && port == other.port;
  }
};

std::optional<Url> parse_url(std::string_view text, std::string& problem) {
  const auto scheme_end = text.find("://");
  const std::string scheme =
      scheme_end == std::string_view::npos ? "" : detail::lower_ascii(text.substr(0, scheme_end));
  if (scheme != "http" && scheme != "https") {
    problem = fmt::format("\"{}\" is not an absolute http:// or https:// URL", text);
    return std::nullopt;
  }
  for (char c : text) {
    if (std::isspace(static_cast<unsigned char>(c)) != 0 || std::iscntrl(static_cast<unsigned char>(c)) != 0) {
      problem = "the URL contains white space or control characters";
      return std::nullopt;
    }
  }
  Url url;
  url.tls = scheme == "https";
  std::string_view rest = text.substr(scheme_end + 3);
  const auto authority_end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, authority_end);
  std::string_view target = authority_end == std::string_view::npos ? std::string_view{} : rest.substr(authority_end);
  if (const auto at = authority.rfind('@'); at != std::string_view::npos) authority = authority.substr(at + 1);
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) {
      problem = "the URL has an unterminated IPv6 address";
      return std::nullopt;
    }
    url.host = std::string(authority.substr(1, close - 1));
    const auto after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') {
        problem = "the URL has characters after its IPv6 address";
        return std::nullopt;
      }
      port = after.substr(1);
    }
  } else {
    const auto colon = authority.rfind(':');
    url.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (url.host.empty()) {
    problem = "the URL has no host";
    return std::nullopt;
  }
  if (port.empty()) {
    url.port = url.tls ? "443" : "80";
  } else {
    const bool digits = port.size() <= 5 && std::all_of(port.begin(), port.end(), [](char c) {
      return std::isdigit(static_cast<unsigned char>(c)) != 0;
    });
    if (!digits || std::stoul(std::string(port)) == 0 || std::stoul(std::string(port)) > 65535) {
      problem = fmt::format("the URL port \"{}\" is not a number in 1-65535", port);
      return std::nullopt;
    }
    url.port = std::to_string(std::stoul(std::string(port)));
  }
  target = target.substr(0, target.find('#'));
  url.target = target.empty() || target.front() != '/' ? "/" + std::string(target) : std::string(target);
  return url;
}

/// RFC 3986 5.2.4: removes `.` and `..` segments from an absolute path.
std::string remove_dot_segments(std::string_view path) {
  std::vector<std::string_view> segments;
  std::size_t start = 1;  // path starts with '/'
  while (start <= path.size()) {
    const auto slash = path.find('/', start);
    const auto segment = path.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    const bool last = slash == std::string_view::npos;
    if (segment == "..") {
      if (!segments.empty()) segments.pop_back();
      if (last) segments.emplace_back();
    } else if (segment == ".") {
      if (last) segments.emplace_back();
    } else {
      segments.push_back(segment);
    }
    if (last) break;
    start = slash + 1;
  }
  std::string out;
  for (const auto& segment : segments) {
    out += '/';
    out += segment;
  }
  return out.empty() ? "/" : out;
}

/// Resolves a Location header against the URL that answered with it.
std::optional<Url> resolve_location(const Url& base, std::string_view location, std::string& problem) {
  location = location.substr(0, location.find('#'));
  const auto colon = location.find(':');
  const auto first_delimiter = location.find_first_of("/?");
  if (colon != std::string_view::npos && colon < first_delimiter && colon > 0 &&
      std::isalpha(static_cast<unsigned char>(location.front())) != 0) {
    return parse_url(location, problem);  // absolute, any scheme: parse_url rejects non-http
  }
  if (location.substr(0, 2) == "//") return parse_url((base.tls ? "https:" : "http:") + std::string(location), problem);
  Url next = base;
  const std::string_view base_target = base.target;
  const std::string_view base_path = base_target.substr(0, base_target.find('?'));
  if (location.empty()) return next;
  if (location.front() == '?') {
    next.target = std::string(base_path) + std::string(location);
    return next;
  }
  std::string merged;
  if (location.front() == '/') {
    merged = std::string(location);
  } else {
    merged = std::string(base_path.substr(0, base_path.rfind('/') + 1)) + std::string(location);
  }
  const auto query = merged.find('?');
  next.target = remove_dot_segments(std::string_view(merged).substr(0, query)) +
                (query == std::string::npos ? "" : merged.substr(query));
  return next;
}

bool is_redirect(unsigned status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

/// Headers that must not follow a redirect to another origin.
bool is_credential_header(std::string_view name) {
  return iequals(name, "authorization") || iequals(name, "proxy-authorization") || iequals(name, "cookie");
}

bool is_success(const v1::HttpSpec& spec, unsigned status) {
  if (spec.success_status_codes_size() == 0 && spec.success_status_classes_size() == 0) return status / 100 == 2;
  for (auto code : spec.success_status_codes())
    if (code == status) return true;
  for (auto cls : spec.success_status_classes())
    if (cls == status / 100) return true;
  return false;
}

/// Short, rankable name of an error while sending or receiving.
std::string transport_reason(const error_code& ec) {
  if (ec == asio::error::connection_reset || ec == asio::error::broken_pipe) return "connection reset";
  if (ec == asio::error::eof || ec == http::error::end_of_stream || ec == ssl::error::stream_truncated ||
      ec == http::error::partial_message)
    return "connection closed";
  if (ec.category() == http::make_error_code(http::error::bad_version).category()) return "bad response";
  // After the handshake, e.g. a TLS 1.3 server refusing the client certificate with an alert.
  if (ec.category() == asio::error::get_ssl_category()) return "tls error";
  return "connection error";
}

std::string connect_reason(const error_code& ec) {
  if (ec == asio::error::connection_refused) return "connection refused";
  if (ec == asio::error::timed_out) return "connect timed out";
  if (ec == asio::error::host_unreachable || ec == asio::error::network_unreachable) return "host unreachable";
  return "connect failed";
}

/// Whether placeholders in the body are JSON-escaped: a Content-Type naming JSON, or none
/// and a body that starts like a JSON object or array.
bool json_body(const v1::HttpSpec& spec) {
  for (const auto& [name, value] : spec.headers()) {
    if (!boost::iequals(name, "content-type")) continue;
    return boost::icontains(value, "json");
  }
  const auto start = spec.body().find_first_not_of(" \t\r\n");
  return start != std::string::npos && (spec.body()[start] == '{' || spec.body()[start] == '[');
}

/// One attempt: resolve, connect, handshake, write, read; again for each redirect.
class HttpRun : public std::enable_shared_from_this<HttpRun> {
 public:
  HttpRun(asio::any_io_executor executor, const RunRequest& request, RunCompletion done)
      : executor_(executor), resolver_(executor), deadline_(executor), task_(request.task), spec_(task_->http()),
        execution_id_(request.execution_id), task_id_(task_->id()), capture_limit_(request.capture_limit),
        done_(std::move(done)) {
    method_ = spec_.method().empty() ? "GET" : spec_.method();
    using detail::PlaceholderEscape;
    url_text_ = detail::expand_placeholders(spec_.url(), request.params, PlaceholderEscape::url);
    for (const auto& [name, value] : spec_.headers())
      headers_.emplace_back(name, detail::expand_placeholders(value, request.params, PlaceholderEscape::none));
    body_ = detail::expand_placeholders(spec_.body(), request.params,
                                        json_body(spec_) ? PlaceholderEscape::json : PlaceholderEscape::none);
    // The map's order is unspecified; a stable order keeps requests reproducible.
    std::sort(headers_.begin(), headers_.end());
  }

  void start() {
    std::string problem;
    auto url = parse_url(url_text_, problem);
    if (!url) return fail("invalid request", fmt::format("http.url: {}", problem));
    for (const auto& [name, value] : headers_) {
      const auto bad = [](char c) { return c == '\r' || c == '\n' || c == '\0'; };
      if (name.empty() || std::any_of(name.begin(), name.end(), bad) || std::any_of(value.begin(), value.end(), bad) ||
          name.find(':') != std::string::npos)
        return fail("invalid request", fmt::format("http.headers: \"{}\" is not a valid header", name));
    }
    if (spec_.timeout_seconds() > 0) {
      deadline_.expires_after(std::chrono::seconds{spec_.timeout_seconds()});
      deadline_.async_wait([self = shared_from_this()](const error_code& ec) {
        if (ec || self->finished_) return;
        self->close_connection();
        self->finish_stopped(StopReason::timeout,
                             fmt::format("no complete response within {} s (http.timeout_seconds)",
                                         self->spec_.timeout_seconds()));
      });
    }
    begin_hop(std::move(*url));
  }

  void stop(StopReason reason) {
    if (finished_) return;
    close_connection();
    finish_stopped(reason, reason == StopReason::timeout ? "stopped after the task timeout" : "cancelled");
  }

 private:
  // ---- one hop: a connection, a request, a response -------------------------------------

  void begin_hop(Url url) {
    url_ = std::move(url);
    host_mismatch_ = false;
    buffer_.clear();
    resolver_.async_resolve(url_.host, url_.port, tcp::resolver::numeric_service,
                            [self = shared_from_this()](const error_code& ec, const tcp::resolver::results_type& results) {
                              self->on_resolve(ec, results);
                            });
  }

  void on_resolve(const error_code& ec, const tcp::resolver::results_type& results) {
    if (finished_) return;
    if (ec) return fail("dns lookup failed", fmt::format("cannot resolve {}: {}", url_.host, ec.message()));
    if (url_.tls) {
      if (!make_tls_context()) return;
      tls_.emplace(executor_, *tls_context_);
      socket_.reset();
    } else {
      socket_.emplace(executor_);
      tls_.reset();
    }
    asio::async_connect(lowest_layer(), results,
                        [self = shared_from_this()](const error_code& error, const tcp::endpoint&) {
                          self->on_connect(error);
                        });
  }

  void on_connect(const error_code& ec) {
    if (finished_) return;
    if (ec) return fail(connect_reason(ec), fmt::format("cannot connect to {}: {}", url_.authority(), ec.message()));
    if (!tls_) return write_request();
    SSL* ssl_handle = tls_->native_handle();
    // SNI carries names only (RFC 6066); the macro SSL_set_tlsext_host_name is SSL_ctrl.
    if (!is_ip_literal(url_.host))
      SSL_ctrl(ssl_handle, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, const_cast<char*>(url_.host.c_str()));
    if (spec_.insecure_skip_verify()) {
      tls_->set_verify_mode(ssl::verify_none);
    } else {
      tls_->set_verify_mode(ssl::verify_peer);
      // `this` outlives the callback: the stream holding it is a member.
      tls_->set_verify_callback([this, check = ssl::host_name_verification(url_.host)](
                                    bool preverified, ssl::verify_context& context) {
        const bool ok = check(preverified, context);
        if (preverified && !ok) host_mismatch_ = true;
        return ok;
      });
    }
    tls_->async_handshake(ssl::stream_base::client,
                          [self = shared_from_this()](const error_code& error) { self->on_handshake(error); });
  }

  void on_handshake(const error_code& ec) {
    if (finished_) return;
    if (!ec) return write_request();
    const long verify_result = SSL_get_verify_result(tls_->native_handle());
    const bool verify_failed = ec.category() == asio::error::get_ssl_category() &&
                               ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == SSL_R_CERTIFICATE_VERIFY_FAILED;
    if (host_mismatch_) {
      return fail("tls certificate verification failed",
                  fmt::format("the certificate of {} is not valid for the host {}", url_.origin(), url_.host));
    }
    if (verify_failed || (!spec_.insecure_skip_verify() && verify_result != X509_V_OK)) {
      return fail("tls certificate verification failed",
                  fmt::format("the certificate of {} failed verification: {}{}", url_.origin(),
                              verify_result != X509_V_OK ? X509_verify_cert_error_string(verify_result) : ec.message(),
                              spec_.ca_file().empty() ? " (checked against the system trust store)"
                                                      : " (checked against http.ca_file)"));
    }
    fail("tls handshake failed", fmt::format("TLS handshake with {} failed: {}", url_.origin(), ec.message()));
  }

  void write_request() {
    request_ = {};
    request_.method_string(method_);
    request_.target(url_.target);
    request_.version(11);
    request_.set(http::field::host, url_.authority());
    request_.set(http::field::user_agent, std::string("quartzflow/") + version);
    request_.set(http::field::connection, "close");  // one request per connection
    for (const auto& [name, value] : headers_) request_.set(name, value);
    request_.set("X-QF-Execution-Id", execution_id_);
    request_.set("X-QF-Task-Id", task_id_);
    request_.body() = body_;
    request_.prepare_payload();
    with_stream([this](auto& stream) {
      http::async_write(stream, request_, [self = shared_from_this()](const error_code& ec, std::size_t) {
        self->on_write(ec);
      });
    });
  }

  void on_write(const error_code& ec) {
    if (finished_) return;
    if (ec) {
      return fail(transport_reason(ec),
                  fmt::format("sending the request to {} failed: {}", url_.origin(), ec.message()));
    }
    read_header();
  }

  void read_header() {
    parser_.emplace();
    parser_->header_limit(k_max_header_bytes);
    // Counted here instead (k_max_read_bytes). Not boost::none: Beast 1.74 compares the
    // Content-Length against the optional, and every number is greater than none.
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    if (iequals(method_, "HEAD")) parser_->skip(true);
    with_stream([this](auto& stream) {
      http::async_read_header(stream, buffer_, *parser_, [self = shared_from_this()](const error_code& ec, std::size_t) {
        self->on_header(ec);
      });
    });
  }

  void on_header(const error_code& ec) {
    if (finished_) return;
    if (ec) {
      const bool closed_early = ec == http::error::end_of_stream || ec == asio::error::eof;
      return fail(transport_reason(ec),
                  closed_early ? fmt::format("{} closed the connection without a response", url_.origin())
                               : fmt::format("reading the response from {} failed: {}", url_.origin(), ec.message()));
    }
    const unsigned status = parser_->get().result_int();
    if (status / 100 == 1 && status != 101) return read_header();  // interim response: the real one follows
    if (spec_.follow_redirects() && is_redirect(status)) {
      const auto location = parser_->get()[http::field::location];
      if (!location.empty()) return follow(status, std::string_view(location.data(), location.size()));
    }
    read_body();
  }

  void follow(unsigned status, std::string_view location) {
    if (++redirects_ > k_max_redirects) {
      return fail("too many redirects",
                  fmt::format("more than {} redirects; the last from {}", k_max_redirects, url_.origin()));
    }
    std::string problem;
    auto next = resolve_location(url_, location, problem);
    if (!next) return fail("bad redirect", fmt::format("HTTP {} from {}: Location: {}", status, url_.origin(), problem));
    // What browsers and curl do: 303 always, and 301/302 after a POST, continue as GET.
    if ((status == 303 && !iequals(method_, "HEAD")) || ((status == 301 || status == 302) && iequals(method_, "POST"))) {
      method_ = "GET";
      body_.clear();
      std::erase_if(headers_, [](const auto& header) { return iequals(header.first, "content-type"); });
    }
    if (!next->same_origin(url_))
      std::erase_if(headers_, [](const auto& header) { return is_credential_header(header.first); });
    close_connection();
    begin_hop(std::move(*next));
  }

  void read_body() {
    if (parser_->is_done() || output_bytes_ >= k_max_read_bytes) return complete();
    auto& body = parser_->get().body();
    body.data = chunk_.data();
    body.size = static_cast<std::size_t>(std::min<std::uint64_t>(chunk_.size(), k_max_read_bytes - output_bytes_));
    chunk_in_use_ = body.size;
    with_stream([this](auto& stream) {
      http::async_read(stream, buffer_, *parser_, [self = shared_from_this()](error_code ec, std::size_t) {
        self->on_body(ec);
      });
    });
  }

  void on_body(error_code ec) {
    if (finished_) return;
    const std::size_t received = chunk_in_use_ - parser_->get().body().size;
    output_bytes_ += received;
    const std::size_t room = capture_limit_ - std::min(capture_limit_, output_.size());
    output_.append(chunk_.data(), std::min(room, received));
    if (ec == http::error::need_buffer) ec = {};
    // A body delimited by the connection's end, over TLS without close_notify: common enough
    // to accept, as curl does.
    if (ec == ssl::error::stream_truncated && parser_->need_eof()) parser_->put_eof(ec);
    if (ec) {
      // Reported as a transport error (http_status 0): the engine retries those whatever the status.
      return fail(transport_reason(ec), fmt::format("reading the body of the HTTP {} response from {} failed: {}",
                                                    parser_->get().result_int(), url_.origin(), ec.message()));
    }
    read_body();
  }

  void complete() {
    close_connection();
    const auto& response = parser_->get();
    const unsigned status = response.result_int();
    RunOutcome outcome;
    outcome.http_status = status;
    outcome.output = std::move(output_);
    outcome.output_bytes = output_bytes_;
    if (is_success(spec_, status)) {
      outcome.status = v1::EXECUTION_STATUS_SUCCESS;
    } else {
      std::string reason(response.reason());
      if (reason.empty()) reason = std::string(http::obsolete_reason(static_cast<http::status>(status)));
      if (reason == "<unknown-status>") reason.clear();
      outcome.status = v1::EXECUTION_STATUS_FAILURE;
      outcome.failure_reason = fmt::format("http {}", status);
      outcome.error_message = reason.empty() ? fmt::format("HTTP {}", status) : fmt::format("HTTP {} {}", status, reason);
    }
    finish(std::move(outcome));
  }

  // ---- plumbing ---------------------------------------------------------------------------

  /// The ssl::context of this attempt, made at the first https hop.
  bool make_tls_context() {
    if (tls_context_) return true;
    auto context = std::make_unique<ssl::context>(ssl::context::tls_client);
    error_code ec;
    std::string what;
    context->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                             ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1,
                         ec);
    if (!spec_.insecure_skip_verify()) {
      if (spec_.ca_file().empty()) {
        if (!ec) context->set_default_verify_paths(ec);
        what = "the system trust store";
      } else {
        if (!ec) context->load_verify_file(spec_.ca_file(), ec);
        what = "http.ca_file " + spec_.ca_file();
      }
    }
    if (!ec && !spec_.client_cert_file().empty()) {
      what = "http.client_cert_file " + spec_.client_cert_file();
      context->use_certificate_chain_file(spec_.client_cert_file(), ec);
      if (!ec) {
        what = "http.client_key_file " + spec_.client_key_file();
        context->use_private_key_file(spec_.client_key_file(), ssl::context::pem, ec);
      }
    }
    if (ec) {
      fail("tls setup failed", fmt::format("cannot load {}: {}", what.empty() ? "TLS settings" : what, ec.message()));
      return false;
    }
    tls_context_ = std::move(context);
    return true;
  }

  tcp::socket& lowest_layer() { return tls_ ? tls_->next_layer() : *socket_; }

  template <typename Function>
  void with_stream(Function&& function) {
    if (tls_) {
      function(*tls_);
    } else {
      function(*socket_);
    }
  }

  /// Pending operations on the connection then complete with an error; they find `finished_`.
  void close_connection() {
    error_code ignored;
    resolver_.cancel();
    if (tls_) tls_->next_layer().close(ignored);
    if (socket_) socket_->close(ignored);
  }

  void fail(std::string reason, std::string message) {
    RunOutcome outcome;
    outcome.status = v1::EXECUTION_STATUS_FAILURE;
    outcome.failure_reason = std::move(reason);
    outcome.error_message = std::move(message);
    outcome.output = std::move(output_);
    outcome.output_bytes = output_bytes_;
    close_connection();
    finish(std::move(outcome));
  }

  void finish_stopped(StopReason reason, std::string message) {
    RunOutcome outcome;
    const bool timeout = reason == StopReason::timeout;
    outcome.status = timeout ? v1::EXECUTION_STATUS_TIMEOUT : v1::EXECUTION_STATUS_CANCELLED;
    outcome.failure_reason = timeout ? "timeout" : "cancelled";
    outcome.error_message = std::move(message);
    outcome.output = std::move(output_);
    outcome.output_bytes = output_bytes_;
    finish(std::move(outcome));
  }

  /// Reports exactly once, always posted: never inline from `start` or `stop`.
  void finish(RunOutcome outcome) {
    if (finished_) return;
    finished_ = true;
    deadline_.cancel();
    asio::post(executor_, [done = std::move(done_), outcome = std::move(outcome)]() mutable { done(std::move(outcome)); });
  }

  asio::any_io_executor executor_;
  tcp::resolver resolver_;
  asio::steady_timer deadline_;
  std::shared_ptr<const v1::Task> task_;  // shared with the engine: keeps spec_ alive
  const v1::HttpSpec& spec_;
  std::string execution_id_;
  std::string task_id_;
  std::size_t capture_limit_;
  RunCompletion done_;

  std::string method_;
  std::string url_text_;  // the spec's URL with placeholders replaced
  std::string body_;
  std::vector<std::pair<std::string, std::string>> headers_;
  Url url_;
  int redirects_ = 0;

  std::unique_ptr<ssl::context> tls_context_;  // before the stream that refers to it
  std::optional<ssl::stream<tcp::socket>> tls_;
  std::optional<tcp::socket> socket_;
  bool host_mismatch_ = false;

  http::request<http::string_body> request_;
  boost::beast::flat_buffer buffer_;
  std::optional<http::response_parser<http::buffer_body>> parser_;
  std::array<char, 64 * 1024> chunk_{};
  std::size_t chunk_in_use_ = 0;

  std::string output_;
  std::uint64_t output_bytes_ = 0;
  bool finished_ = false;
};

class HttpHandle final : public RunningTask {
 public:
  explicit HttpHandle(std::weak_ptr<HttpRun> run) : run_(std::move(run)) {}
  void stop(StopReason reason) override {
    if (auto run = run_.lock()) run->stop(reason);
  }

 private:
  std::weak_ptr<HttpRun> run_;
};

class HttpExecutor final : public Executor {
 public:
  explicit HttpExecutor(asio::any_io_executor executor) : executor_(std::move(executor)) {}

  std::unique_ptr<RunningTask> start(RunRequest request, RunCompletion done) override {
    auto run = std::make_shared<HttpRun>(executor_, request, std::move(done));
    run->start();
    return std::make_unique<HttpHandle>(run);
  }

 private:
  asio::any_io_executor executor_;
};

}  // namespace

std::unique_ptr<Executor> make_http_executor(asio::any_io_executor executor) {
  return std::make_unique<HttpExecutor>(std::move(executor));
}

}  // namespace quartzflow
