// SPDX-License-Identifier: Apache-2.0
// HTTP executor against small servers on 127.0.0.1 (plain Asio, same io_context): status
// mapping, what the request carries, transport errors, stop, TLS with a certificate made at
// run time, redirects, capture limits, and retries through the TaskEngine.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <catch2/catch.hpp>

#include "run_until.hpp"

#include <utility>
#include <boost/asio/buffers_iterator.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>

#include <quartzflow/executor.hpp>
#include <quartzflow/task_engine.hpp>
#include <quartzflow/version.hpp>

namespace qf = quartzflow;
namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
namespace fs = std::filesystem;
using tcp = boost::asio::ip::tcp;
using boost::system::error_code;
using namespace std::chrono_literals;

using quartzflow::testing::run_until;

namespace {

void run_for(asio::io_context& io, std::chrono::milliseconds span) {
  run_until(io, [] { return false; }, span);
}

// ---- a tiny HTTP/1.1 server -------------------------------------------------------------

/// A request as the test server saw it; header names in lower case.
struct SeenRequest {
  std::string method;
  std::string target;
  std::map<std::string, std::string> headers;
  std::string body;
  std::string header(const std::string& name) const {
    auto it = headers.find(name);
    return it == headers.end() ? std::string{} : it->second;
  }
};

struct Reply {
  unsigned status = 200;
  std::string reason = "OK";
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::chrono::milliseconds delay{0};  ///< before the response is written
  bool content_length = true;          ///< false: the body ends with the connection
};

using Handler = std::function<Reply(const SeenRequest&)>;

struct ServerState {
  ServerState(asio::io_context& io, Handler h, std::shared_ptr<ssl::context> c)
      : acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)), handler(std::move(h)), tls(std::move(c)) {}
  tcp::acceptor acceptor;
  Handler handler;
  std::shared_ptr<ssl::context> tls;
  std::vector<SeenRequest> requests;
};

std::string lower(std::string text) {
  for (auto& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

/// One connection: (TLS handshake), one request, one response, close.
template <typename Stream>
class ServerSession : public std::enable_shared_from_this<ServerSession<Stream>> {
 public:
  ServerSession(Stream stream, std::shared_ptr<ServerState> state)
      : stream_(std::move(stream)), timer_(stream_.get_executor()), state_(std::move(state)) {}

  void start() {
    if constexpr (std::is_same_v<Stream, tcp::socket>) {
      read_head();
    } else {
      stream_.async_handshake(ssl::stream_base::server, [self = this->shared_from_this()](const error_code& ec) {
        if (!ec) self->read_head();
      });
    }
  }

 private:
  void read_head() {
    asio::async_read_until(stream_, input_, "\r\n\r\n",
                           [self = this->shared_from_this()](const error_code& ec, std::size_t n) {
                             if (!ec) self->on_head(n);
                           });
  }

  void on_head(std::size_t n) {
    const auto data = input_.data();
    const std::string head(asio::buffers_begin(data), asio::buffers_begin(data) + static_cast<std::ptrdiff_t>(n));
    input_.consume(n);
    std::size_t line_end = head.find("\r\n");
    const std::string request_line = head.substr(0, line_end);
    const auto space = request_line.find(' ');
    request_.method = request_line.substr(0, space);
    request_.target = request_line.substr(space + 1, request_line.rfind(' ') - space - 1);
    while (line_end + 2 < head.size()) {
      const auto next = head.find("\r\n", line_end + 2);
      const std::string line = head.substr(line_end + 2, next - line_end - 2);
      line_end = next;
      const auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string value = line.substr(colon + 1);
      value.erase(0, value.find_first_not_of(' '));
      request_.headers[lower(line.substr(0, colon))] = value;
    }
    const std::size_t length = request_.headers.count("content-length") != 0
                                   ? std::stoul(request_.headers["content-length"])
                                   : 0;
    if (input_.size() >= length) return on_body(length);
    asio::async_read(stream_, input_, asio::transfer_exactly(length - input_.size()),
                     [self = this->shared_from_this(), length](const error_code& ec, std::size_t) {
                       if (!ec) self->on_body(length);
                     });
  }

  void on_body(std::size_t length) {
    const auto data = input_.data();
    request_.body.assign(asio::buffers_begin(data), asio::buffers_begin(data) + static_cast<std::ptrdiff_t>(length));
    state_->requests.push_back(request_);
    const Reply reply = state_->handler(request_);
    output_ = "HTTP/1.1 " + std::to_string(reply.status) + " " + reply.reason + "\r\n";
    for (const auto& [name, value] : reply.headers) output_ += name + ": " + value + "\r\n";
    if (reply.content_length) output_ += "Content-Length: " + std::to_string(reply.body.size()) + "\r\n";
    output_ += "Connection: close\r\n\r\n" + reply.body;
    if (reply.delay.count() == 0) return write();
    timer_.expires_after(reply.delay);
    timer_.async_wait([self = this->shared_from_this()](const error_code& ec) {
      if (!ec) self->write();
    });
  }

  void write() {
    asio::async_write(stream_, asio::buffer(output_), [self = this->shared_from_this()](const error_code&, std::size_t) {
      error_code ignored;
      self->lowest().shutdown(tcp::socket::shutdown_send, ignored);
      self->lowest().close(ignored);
    });
  }

  tcp::socket& lowest() {
    if constexpr (std::is_same_v<Stream, tcp::socket>) {
      return stream_;
    } else {
      return stream_.next_layer();
    }
  }

  Stream stream_;
  asio::steady_timer timer_;
  std::shared_ptr<ServerState> state_;
  asio::streambuf input_;
  SeenRequest request_;
  std::string output_;
};

/// Accepts on 127.0.0.1 with an ephemeral port until destroyed; HTTPS when given a context.
class TestServer {
 public:
  TestServer(asio::io_context& io, Handler handler, std::shared_ptr<ssl::context> tls = nullptr)
      : state_(std::make_shared<ServerState>(io, std::move(handler), std::move(tls))) {
    accept(state_);
  }
  ~TestServer() {
    error_code ignored;
    state_->acceptor.close(ignored);
  }
  TestServer(const TestServer&) = delete;
  TestServer& operator=(const TestServer&) = delete;

  unsigned short port() const { return state_->acceptor.local_endpoint().port(); }
  std::string url(const std::string& path) const {
    return std::string(state_->tls ? "https" : "http") + "://127.0.0.1:" + std::to_string(port()) + path;
  }
  const std::vector<SeenRequest>& requests() const { return state_->requests; }

 private:
  static void accept(std::shared_ptr<ServerState> state) {
    auto& acceptor = state->acceptor;
    acceptor.async_accept([state = std::move(state)](const error_code& ec, tcp::socket socket) mutable {
      if (ec) return;  // closed: the server is gone
      if (state->tls) {
        std::make_shared<ServerSession<ssl::stream<tcp::socket>>>(
            ssl::stream<tcp::socket>(std::move(socket), *state->tls), state)
            ->start();
      } else {
        std::make_shared<ServerSession<tcp::socket>>(std::move(socket), state)->start();
      }
      accept(std::move(state));
    });
  }

  std::shared_ptr<ServerState> state_;
};

// ---- certificates made at run time ------------------------------------------------------

struct TestCertificate {
  std::string certificate_pem;
  std::string key_pem;
};

std::string drain(BIO* bio) {
  std::string out(BIO_ctrl_pending(bio), '\0');
  const int n = BIO_read(bio, out.data(), static_cast<int>(out.size()));
  out.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  return out;
}

/// A self-signed P-256 certificate for `subject_alt_names` (OpenSSL syntax, e.g. `IP:127.0.0.1`).
TestCertificate make_certificate(const char* subject_alt_names) {
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"),
                                                         &EVP_PKEY_free);
  REQUIRE(key);
  std::unique_ptr<X509, decltype(&X509_free)> cert(X509_new(), &X509_free);
  REQUIRE(cert);
  static std::atomic<long> serial{1};
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), serial++);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 86400);
  X509_set_pubkey(cert.get(), key.get());
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("quartzflow test"), -1, -1,
                             0);
  X509_set_issuer_name(cert.get(), name);
  X509V3_CTX context;
  X509V3_set_ctx(&context, cert.get(), cert.get(), nullptr, nullptr, 0);
  X509_EXTENSION* san = X509V3_EXT_conf_nid(nullptr, &context, NID_subject_alt_name, subject_alt_names);
  REQUIRE(san);
  X509_add_ext(cert.get(), san, -1);
  X509_EXTENSION_free(san);
  REQUIRE(X509_sign(cert.get(), key.get(), EVP_sha256()) > 0);

  TestCertificate out;
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new(BIO_s_mem()), &BIO_free);
  PEM_write_bio_X509(bio.get(), cert.get());
  out.certificate_pem = drain(bio.get());
  PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  out.key_pem = drain(bio.get());
  return out;
}

std::shared_ptr<ssl::context> server_context(const TestCertificate& certificate) {
  auto context = std::make_shared<ssl::context>(ssl::context::tls_server);
  context->use_certificate_chain(asio::buffer(certificate.certificate_pem));
  context->use_private_key(asio::buffer(certificate.key_pem), ssl::context::pem);
  return context;
}

/// A file removed when the test ends.
struct TempFile {
  explicit TempFile(const std::string& content) {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("qf-http-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + ".pem");
    std::ofstream(path) << content;
  }
  ~TempFile() {
    std::error_code ignored;
    fs::remove(path, ignored);
  }
  fs::path path;
};

// ---- the executor under test ------------------------------------------------------------

struct Client {
  explicit Client(asio::io_context& context) : io(context), executor(qf::make_http_executor(io.get_executor())) {}

  void start(const qf::v1::HttpSpec& spec, std::size_t capture_limit = 1 << 20,
             std::map<std::string, std::string> params = {}) {
    qf::RunRequest request;
    request.execution_id = "task-1:1700000000:agent-1";
    auto task = std::make_shared<qf::v1::Task>();
    task->set_id("task-1");
    *task->mutable_http() = spec;
    request.task = std::move(task);
    request.params = std::move(params);
    request.capture_limit = capture_limit;
    started = std::chrono::steady_clock::now();
    running = executor->start(request, [this](qf::RunOutcome o) {
      ++completions;
      finished = std::chrono::steady_clock::now();
      outcome = std::move(o);
    });
    CHECK(completions == 0);  // never inline
  }
  bool wait(std::chrono::milliseconds limit = 10s) {
    return run_until(io, [this] { return outcome.has_value(); }, limit);
  }
  std::chrono::milliseconds elapsed() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(finished - started);
  }

  asio::io_context& io;
  std::unique_ptr<qf::Executor> executor;
  std::unique_ptr<qf::RunningTask> running;
  std::optional<qf::RunOutcome> outcome;
  int completions = 0;
  std::chrono::steady_clock::time_point started, finished;
};

qf::v1::HttpSpec get(const std::string& url) {
  qf::v1::HttpSpec spec;
  spec.set_url(url);
  return spec;
}

Reply reply(unsigned status, std::string reason, std::string body = {}) {
  Reply r;
  r.status = status;
  r.reason = std::move(reason);
  r.body = std::move(body);
  return r;
}

}  // namespace

TEST_CASE("a 200 response is SUCCESS with the body as output", "[http]") {
  asio::io_context io;
  TestServer server(io, [](const SeenRequest&) { return reply(200, "OK", "hello from the server"); });
  Client client(io);
  client.start(get(server.url("/hello?x=1")));
  REQUIRE(client.wait());
  const auto& outcome = *client.outcome;
  CHECK(outcome.status == qf::v1::EXECUTION_STATUS_SUCCESS);
  CHECK(outcome.http_status == 200);
  CHECK(outcome.output == "hello from the server");
  CHECK(outcome.output_bytes == outcome.output.size());
  CHECK(outcome.failure_reason.empty());

  REQUIRE(server.requests().size() == 1);
  const auto& seen = server.requests().front();
  CHECK(seen.method == "GET");
  CHECK(seen.target == "/hello?x=1");
  CHECK(seen.header("host") == "127.0.0.1:" + std::to_string(server.port()));
  CHECK(seen.header("user-agent") == std::string("quartzflow/") + qf::version);
  CHECK(seen.header("x-qf-execution-id") == "task-1:1700000000:agent-1");
  CHECK(seen.header("x-qf-task-id") == "task-1");

  run_for(io, 100ms);
  CHECK(client.completions == 1);
}

TEST_CASE("a 503 response is FAILURE with the status, its reason and the body", "[http]") {
  asio::io_context io;
  TestServer server(io, [](const SeenRequest&) { return reply(503, "Service Unavailable", "try later"); });
  Client client(io);
  client.start(get(server.url("/")));
  REQUIRE(client.wait());
  const auto& outcome = *client.outcome;
  CHECK(outcome.status == qf::v1::EXECUTION_STATUS_FAILURE);
  CHECK(outcome.http_status == 503);
  CHECK(outcome.failure_reason == "http 503");
  CHECK(outcome.error_message == "HTTP 503 Service Unavailable");
  CHECK(outcome.output == "try later");
}

TEST_CASE("configured success codes and classes decide what counts as success", "[http]") {
  asio::io_context io;
  TestServer server(io, [](const SeenRequest& r) {
    if (r.target == "/missing") return reply(404, "Not Found");
    if (r.target == "/moved") return reply(302, "Found");
    return reply(204, "No Content");
  });
  Client client(io);

  SECTION("an exact code makes a 404 a success") {
    auto spec = get(server.url("/missing"));
    spec.add_success_status_codes(404);
    client.start(spec);
    REQUIRE(client.wait());
    CHECK(client.outcome->status == qf::v1::EXECUTION_STATUS_SUCCESS);
    CHECK(client.outcome->http_status == 404);
  }
  SECTION("listing classes replaces the 2xx default") {
    auto spec = get(server.url("/empty"));
    spec.add_success_status_classes(3);
    client.start(spec);
    REQUIRE(client.wait());
    CHECK(client.outcome->status == qf::v1::EXECUTION_STATUS_FAILURE);
    CHECK(client.outcome->failure_reason == "http 204");
  }
  SECTION("a 3xx class accepts a redirect that is not followed") {
    auto spec = get(server.url("/moved"));
    spec.add_success_status_classes(3);
    client.start(spec);
    REQUIRE(client.wait());
    CHECK(client.outcome->status == qf::v1::EXECUTION_STATUS_SUCCESS);
    CHECK(client.outcome->http_status == 302);
  }
}

TEST_CASE("a POST carries the spec's body and headers, and params stay out of the request", "[http]") {
  asio::io_context io;
  TestServer server(io, [](const SeenRequest& r) {
    const bool as_sent = r.method == "POST" && r.body == R"({"report":"daily"})" &&
                         r.header("content-type") == "application/json" && r.header("x-custom") == "yes" &&
                         r.header("content-length") == "18";
    return as_sent ? reply(201, "Created", "stored") : reply(400, "Bad Request");
  });
  Client client(io);
  auto spec = get(server.url("/reports"));
  spec.set_method("POST");
  spec.set_body(R"({"report":"daily"})");
  (*spec.mutable_headers())["Content-Type"] = "application/json";
  (*spec.mutable_headers())["X-Custom"] = "yes";
  client.start(spec, 1 << 20, {{"token", "s3cr3t-param"}});
  REQUIRE(client.wait());
  CHECK(client.outcome->status == qf::v1::EXECUTION_STATUS_SUCCESS);
  CHECK(client.outcome->http_status == 201);
  REQUIRE(server.requests().size() == 1);
  const auto& seen = server.requests().front();
  CHECK(seen.target == "/reports");
  for (const auto& [name, value] : seen.headers) CHECK(value.find("s3cr3t-param") == std::string::npos);
  CHECK(seen.body.find("s3cr3t-param") == std::string::npos);
}

TEST_CASE("${name} placeholders take the run's params: URL-encoded, JSON-escaped, as is in headers", "[http]") {
  asio::io_context io;
  TestServer server(io, [](const SeenRequest&) { return reply(200, "OK"); });
  Client client(io);
  auto spec = get(server.url("/reports/${region}?day=${day}&literal=$${kept}"));
  spec.set_method("POST");
  spec.set_body(R"({"note":"${note}","day":"${day}","missing":"${absent}"})");
  (*spec.mutable_headers())["X-Region"] = "r-${region}";
  client.start(spec, 1 << 20, {{"region", "eu west/1"}, {"day", "2026-12-04"}, {"note", "say \"hi\"\n\\"}});
  REQUIRE(client.wait());
  CHECK(client.outcome->status == qf::v1::EXECUTION_STATUS_SUCCESS);
  REQUIRE(server.requests().size() == 1);
  const auto& seen = server.requests().front();
  CHECK(seen.target == "/reports/eu%20west%2F1?day=2026-12-04&literal=${kept}");
  CHECK(seen.header("x-region") == "r-eu west/1");
  CHECK(seen.body == R"({"note":"say \"hi\"\n\\","day":"2026-12-04","missing":""})");

  // A plain-text body takes values as they are.
  Client plain(io);
  auto text = get(server.url("/t"));
  text.set_method("POST");
  text.set_body("note: ${note}");
  (*text.mutable_headers())["Content-Type"] = "text/plain";
  plain.start(text, 1 << 20, {{"note", "a \"b\""}});
  REQUIRE(plain.wait());
  REQUIRE(server.requests().size() == 2);
  CHECK(server.requests().back().body == "note: a \"b\"");

  // A value that would split a header is refused, not sent.
  Client split(io);
  auto header = get(server.url("/h"));
  (*header.mutable_headers())["X-Region"] = "${region}";
  split.start(header, 1 << 20, {{"region", "x\r\nInjected: yes"}});
  REQUIRE(split.wait());
  CHECK(split.outcome->status == qf::v1::EXECUTION_STATUS_FAILURE);
  CHECK(server.requests().size() == 2);
}

TEST_CASE("connection refused is a FAILURE with a transport reason and no status", "[http]") {
  asio::io_context io;
  unsigned short port = 0;
  {
    tcp::acceptor closed(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    port = closed.local_endpoint().port();
  }
  Client client(io);
  client.start(get("http://127.0.0.1:" + std::to_string(port) + "/"));
  REQUIRE(client.wait());
  CHECK(client.outcome->status == qf::v1::EXECUTION_STATUS_FAILURE);
  CHECK(client.outcome->http_status == 0);
  CHECK(client.outcome->failure_reason == "connection refused");
  CHECK(client.outcome->error_message.find("127.0.0.1:" + std::to_string(port)) != std::string::npos);
}

TEST_CASE("a host that does not resolve is a FAILURE with reason dns lookup failed", "[http]") {
  asio::io_context io;
  Client client(io);
  client.start(get("http://quartzflow-test.invalid/"));
  REQUIRE(client.wait(20s));
  CHECK(client.outcome->status == qf::v1::EXECUTION_STATUS_FAILURE);
  CHECK(client.outcome->http_status == 0);
  CHECK(client.outcome->failure_reason == "dns lookup failed");
  CHECK(client.outcome->error_message.find("quartzflow-test.invalid") != std::string::npos);
}

TEST_CASE("an invalid URL or header fails without a request", "[http]") {
  asio::io_context io;
  Client client(io);
  SECTION("a scheme other than http(s)") { client.start(get("ftp://127.0.0.1/file")); }
  SECTION("a header value with a line break") {
    auto spec = get("http://127.0.0.1:1/");
    (*spec.mutable_headers())["X-Injected"] = "a\r\nHost: elsewhere";
    client.start(spec);
  }
  REQUIRE(client.wait());
  CHECK(client.outcome->status == qf::v1::EXECUTION_STATUS_FAILURE);
  CHECK(client.outcome->failure_reason == "invalid request");
}

TEST_CASE("stop with timeout ends a slow request as TIMEOUT at once", "[http]") {
  asio::io_context io;
  TestServer server(io, [](const SeenRequest&) {
    auto r = reply(200, "OK", "late");
    r.delay = 30s;
    return r;
  });
  Client client(io);
  client.start(get(server.url("/slow")));
  REQUIRE(run_until(io, [&] { return !server.requests().empty(); }));
  client.started = std::chrono::steady_clock::now();
  client.running->stop(qf::StopReason::timeout);
  CHECK(client.completions == 0);  // posted, not inline
  REQUIRE(client.wait(2s));
  CHECK(client.elapsed() < 1s);
  CHECK(client.outcome->status == qf::v1::EXECUTION_STATUS_TIMEOUT);
  CHECK(client.outcome->failure_reason == "timeout");
  CHECK(client.outcome->http_status == 0);
  client.running->stop(qf::StopReason::cancel);  // a second stop changes nothing
  run_for(io, 200ms);
  CHECK(client.completions == 1);
}

TEST_CASE("cancel ends a request as CANCELLED, also while connecting", "[http]") {
  asio::io_context io;
  TestServer server(io, [](const SeenRequest&) {
    auto r = reply(200, "OK");
    r.delay = 30s;
    return r;
  });
  Client client(io);
  client.start(get(server.url("/slow")));
  SECTION("while waiting for the response") {
    REQUIRE(run_until(io, [&] { return !server.requests().empty(); }));
  }
  SECTION("before anything happened") {}
  client.running->stop(qf::StopReason::cancel);
  REQUIRE(client.wait(2s));
  CHECK(client.outcome->status == qf::v1::EXECUTION_STATUS_CANCELLED);
  CHECK(client.outcome->failure_reason == "cancelled");
  run_for(io, 200ms);
  CHECK(client.completions == 1);
}

TEST_CASE("http.timeout_seconds is a deadline of its own that ends as TIMEOUT", "[http]") {
  asio::io_context io;
  TestServer server(io, [](const SeenRequest&) {
    auto r = reply(200, "OK");
    r.delay = 30s;
    return r;
  });
  Client client(io);
  auto spec = get(server.url("/slow"));
  spec.set_timeout_seconds(1);
  client.start(spec);
  REQUIRE(client.wait(5s));
  CHECK(client.outcome->status == qf::v1::EXECUTION_STATUS_TIMEOUT);
  CHECK(client.outcome->failure_reason == "timeout");
  CHECK(client.elapsed() >= 900ms);
  CHECK(client.elapsed() < 3s);
}

TEST_CASE("HTTPS verifies the server certificate against ca_file or the system store", "[http]") {
  asio::io_context io;
  const auto certificate = make_certificate("IP:127.0.0.1,DNS:localhost");
  TempFile ca_file(certificate.certificate_pem);
  TestServer server(io, [](const SeenRequest&) { return reply(200, "OK", "secret stuff"); },
                    server_context(certificate));
  Client client(io);
  auto spec = get(server.url("/secure"));

  SECTION("trusted through ca_file") {
    spec.set_ca_file(ca_file.path.string());
    client.start(spec);
    REQUIRE(client.wait());
    INFO(client.outcome->error_message);
    CHECK(client.outcome->status == qf::v1::EXECUTION_STATUS_SUCCESS);
    CHECK(client.outcome->output == "secret stuff");
  }
  SECTION("not trusted by the system store") {
    client.start(spec);
    REQUIRE(client.wait());
    INFO(client.outcome->error_message);
    CHECK(client.outcome->status == qf::v1::EXECUTION_STATUS_FAILURE);
    CHECK(client.outcome->http_status == 0);
    CHECK(client.outcome->failure_reason == "tls certificate verification failed");
    CHECK(client.outcome->error_message.find("self-signed") != std::string::npos);
    CHECK(server.requests().empty());
  }
  SECTION("accepted without verification when asked") {
    spec.set_insecure_skip_verify(true);
    client.start(spec);
    REQUIRE(client.wait());
    INFO(client.outcome->error_message);
    CHECK(client.outcome->status == qf::v1::EXECUTION_STATUS_SUCCESS);
  }
  SECTION("a missing ca_file is reported") {
    spec.set_ca_file((ca_file.path.string() + ".missing"));
    client.start(spec);
    REQUIRE(client.wait());
    CHECK(client.outcome->status == qf::v1::EXECUTION_STATUS_FAILURE);
    CHECK(client.outcome->failure_reason == "tls setup failed");
  }
}

TEST_CASE("HTTPS rejects a trusted certificate issued for another host", "[http]") {
  asio::io_context io;
  const auto certificate = make_certificate("DNS:elsewhere.example");
  TempFile ca_file(certificate.certificate_pem);
  TestServer server(io, [](const SeenRequest&) { return reply(200, "OK"); }, server_context(certificate));
  Client client(io);
  auto spec = get(server.url("/"));
  spec.set_ca_file(ca_file.path.string());
  client.start(spec);
  REQUIRE(client.wait());
  CHECK(client.outcome->status == qf::v1::EXECUTION_STATUS_FAILURE);
  CHECK(client.outcome->failure_reason == "tls certificate verification failed");
  CHECK(client.outcome->error_message.find("not valid for the host 127.0.0.1") != std::string::npos);
}

TEST_CASE("HTTPS presents the client certificate of client_cert_file and client_key_file", "[http]") {
  asio::io_context io;
  const auto server_certificate = make_certificate("IP:127.0.0.1");
  const auto client_certificate = make_certificate("DNS:agent.quartzflow.test");
  TempFile ca_file(server_certificate.certificate_pem);
  TempFile client_cert_file(client_certificate.certificate_pem);
  TempFile client_key_file(client_certificate.key_pem);
  auto context = server_context(server_certificate);
  context->set_verify_mode(ssl::verify_peer | ssl::verify_fail_if_no_peer_cert);
  context->add_certificate_authority(asio::buffer(client_certificate.certificate_pem));
  TestServer server(io, [](const SeenRequest&) { return reply(200, "OK", "hello, agent"); }, context);
  Client client(io);
  auto spec = get(server.url("/mutual"));
  spec.set_ca_file(ca_file.path.string());

  SECTION("accepted with the client certificate") {
    spec.set_client_cert_file(client_cert_file.path.string());
    spec.set_client_key_file(client_key_file.path.string());
    client.start(spec);
    REQUIRE(client.wait());
    INFO(client.outcome->error_message);
    CHECK(client.outcome->status == qf::v1::EXECUTION_STATUS_SUCCESS);
    CHECK(client.outcome->output == "hello, agent");
  }
  SECTION("refused by the server without it") {
    client.start(spec);
    REQUIRE(client.wait());
    INFO(client.outcome->error_message);
    CHECK(client.outcome->status == qf::v1::EXECUTION_STATUS_FAILURE);
    CHECK(client.outcome->http_status == 0);
    CHECK(client.outcome->failure_reason.rfind("tls", 0) == 0);
    CHECK(server.requests().empty());
  }
}

TEST_CASE("redirects are followed when asked and are the final response when not", "[http]") {
  asio::io_context io;
  TestServer server(io, [](const SeenRequest& r) {
    Reply moved = reply(302, "Found", "see elsewhere");
    if (r.target == "/old") {
      moved.headers.push_back({"Location", "new?from=old"});
      return moved;
    }
    if (r.target == "/submit") {
      auto see_other = reply(303, "See Other");
      see_other.headers.push_back({"Location", "/result"});
      return see_other;
    }
    if (r.target.rfind("/loop", 0) == 0) {
      moved.headers.push_back({"Location", "/loop" + std::to_string(r.target.size())});
      return moved;
    }
    return reply(200, "OK", r.method + " " + r.target + " " + r.body);
  });
  Client client(io);

  SECTION("followed, relative to the URL that answered") {
    auto spec = get(server.url("/old"));
    spec.set_follow_redirects(true);
    client.start(spec);
    REQUIRE(client.wait());
    CHECK(client.outcome->status == qf::v1::EXECUTION_STATUS_SUCCESS);
    CHECK(client.outcome->output == "GET /new?from=old ");
    CHECK(server.requests().size() == 2);
  }
  SECTION("not followed unless asked") {
    client.start(get(server.url("/old")));
    REQUIRE(client.wait());
    CHECK(client.outcome->status == qf::v1::EXECUTION_STATUS_FAILURE);
    CHECK(client.outcome->http_status == 302);
    CHECK(client.outcome->output == "see elsewhere");
    CHECK(server.requests().size() == 1);
  }
  SECTION("a 303 after a POST continues as a GET without the body") {
    auto spec = get(server.url("/submit"));
    spec.set_method("POST");
    spec.set_body("payload");
    spec.set_follow_redirects(true);
    client.start(spec);
    REQUIRE(client.wait());
    CHECK(client.outcome->status == qf::v1::EXECUTION_STATUS_SUCCESS);
    CHECK(client.outcome->output == "GET /result ");
  }
  SECTION("at most 5 redirects") {
    auto spec = get(server.url("/loop"));
    spec.set_follow_redirects(true);
    client.start(spec);
    REQUIRE(client.wait());
    CHECK(client.outcome->status == qf::v1::EXECUTION_STATUS_FAILURE);
    CHECK(client.outcome->failure_reason == "too many redirects");
    CHECK(server.requests().size() == 6);
  }
}

TEST_CASE("a big body is captured up to capture_limit and counted whole", "[http]") {
  asio::io_context io;
  std::string big(3 << 20, 'x');
  for (std::size_t i = 0; i < big.size(); i += 97) big[i] = static_cast<char>('a' + (i / 97) % 26);
  TestServer server(io, [&big](const SeenRequest& r) {
    auto out = reply(200, "OK", big);
    out.content_length = r.target != "/until-close";
    return out;
  });
  Client client(io);
  SECTION("with Content-Length") { client.start(get(server.url("/big")), 1000); }
  SECTION("delimited by the end of the connection") { client.start(get(server.url("/until-close")), 1000); }
  REQUIRE(client.wait(20s));
  INFO(client.outcome->error_message);
  CHECK(client.outcome->status == qf::v1::EXECUTION_STATUS_SUCCESS);
  CHECK(client.outcome->output == big.substr(0, 1000));
  CHECK(client.outcome->output_bytes == big.size());
}

namespace {

/// An engine with the default executors on a store in a temporary directory, recording final records.
struct EngineFixture {
  asio::io_context io;
  std::unique_ptr<qf::LocalStore> store;
  std::unique_ptr<qf::TaskEngine> engine;
  std::vector<qf::v1::Execution> finals;
  fs::path dir;

  EngineFixture() {
    static int counter = 0;
    dir = fs::temp_directory_path() / ("qf-http-engine-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::create_directories(dir);
    qf::LocalStoreOptions options;
    options.path = (dir / "agent.db").string();
    qf::error_code ec;
    std::string detail;
    store = qf::LocalStore::open(io.get_executor(), options, ec, &detail);
    INFO(detail);
    REQUIRE(store);
    qf::TaskEngineOptions engine_options;
    engine_options.agent_id = "agent-1";
    engine = std::make_unique<qf::TaskEngine>(io.get_executor(), *store, engine_options);
    engine->set_sink([this](const qf::v1::Execution& e) {
      if (e.status() != qf::v1::EXECUTION_STATUS_PENDING && e.status() != qf::v1::EXECUTION_STATUS_RUNNING)
        finals.push_back(e);
    });
  }
  ~EngineFixture() {
    engine.reset();
    store.reset();
    std::error_code ignored;
    fs::remove_all(dir, ignored);
  }
  std::string trigger(const std::string& task) {
    qf::error_code ec;
    std::string detail;
    auto id = engine->trigger(task, {}, ec, &detail);
    INFO(detail);
    REQUIRE(id);
    return *id;
  }
  const qf::v1::Execution* final_of(const std::string& id) const {
    for (const auto& e : finals)
      if (e.execution_id() == id) return &e;
    return nullptr;
  }
};

qf::v1::Task http_task(const std::string& id, const std::string& url) {
  qf::v1::Task task;
  task.set_id(id);
  task.set_name(id);
  task.set_enabled(true);
  task.mutable_http()->set_url(url);
  task.mutable_schedule()->mutable_manual();
  task.mutable_retry()->set_max_retries(2);
  task.mutable_retry()->set_interval_seconds(1);
  return task;
}

}  // namespace

TEST_CASE("the engine runs HTTP tasks and retries a 503 but not a 404", "[http][engine]") {
  EngineFixture f;
  TestServer server(f.io, [](const SeenRequest& r) {
    return r.target == "/busy" ? reply(503, "Service Unavailable") : reply(404, "Not Found");
  });
  qf::ValidationError error;
  const bool applied =
      f.engine->apply({http_task("busy", server.url("/busy")), http_task("gone", server.url("/gone"))}, 1, &error);
  INFO(error.message());
  REQUIRE(applied);
  const auto busy = f.trigger("busy");
  const auto gone = f.trigger("gone");
  REQUIRE(run_until(f.io, [&] { return f.final_of(busy + ":r3") != nullptr && f.final_of(gone) != nullptr; }));
  run_for(f.io, 300ms);

  CHECK(f.final_of(busy)->status() == qf::v1::EXECUTION_STATUS_FAILURE);
  CHECK(f.final_of(busy)->http_status() == 503);
  CHECK(f.final_of(busy)->failure_reason() == "http 503");
  CHECK(f.final_of(busy + ":r3")->attempt() == 3);
  CHECK(f.final_of(busy + ":r4") == nullptr);
  CHECK(f.final_of(gone)->http_status() == 404);
  CHECK(f.final_of(gone + ":r2") == nullptr);

  std::vector<std::string> busy_ids;
  int gone_hits = 0;
  for (const auto& r : server.requests()) {
    if (r.target == "/busy") busy_ids.push_back(r.header("x-qf-execution-id"));
    if (r.target == "/gone") ++gone_hits;
  }
  CHECK(busy_ids == std::vector<std::string>{busy, busy + ":r2", busy + ":r3"});
  CHECK(gone_hits == 1);
}
