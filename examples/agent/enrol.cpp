// SPDX-License-Identifier: Apache-2.0
// qf-agent --join and certificate renewal: the admin API's /api/v1/enrol routes over HTTPS
// (qfctl's client), the key and certificate files written all-or-nothing with mode 0600.
#include "enrol.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include <fcntl.h>
#include <unistd.h>

#include <boost/asio/post.hpp>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <quartzflow/enrolment.hpp>
#include <quartzflow/log.hpp>
#include <quartzflow/yaml_config.hpp>

#include "../../tools/qfctl/api_client.hpp"

namespace quartzflow::examples {

namespace fs = std::filesystem;

namespace {

constexpr int k_exit_invalid_input = 2;
constexpr std::chrono::seconds k_http_timeout{30};

struct Failure {
  int status;
  std::string message;
};

/// `https://host[:port][/prefix]`: plain HTTP is refused (the token would cross in clear).
qfctl::ServerUrl parse_url(const std::string& text) {
  constexpr std::string_view scheme = "https://";
  if (text.rfind(scheme, 0) != 0)
    throw Failure{k_exit_invalid_input, fmt::format("--join: \"{}\" must be the coordinator's https:// admin URL "
                                                    "(the join token must not cross the network in clear)",
                                                    text)};
  qfctl::ServerUrl url;
  url.https = true;
  url.text = text;
  std::string rest = text.substr(scheme.size());
  const auto slash = rest.find('/');
  if (slash != std::string::npos) {
    url.base_path = rest.substr(slash);
    while (!url.base_path.empty() && url.base_path.back() == '/') url.base_path.pop_back();
    rest = rest.substr(0, slash);
  }
  url.port = "443";
  if (!rest.empty() && rest.front() == '[') {
    const auto close = rest.find(']');
    if (close == std::string::npos)
      throw Failure{k_exit_invalid_input, fmt::format("--join: \"{}\": unclosed [", text)};
    url.host = rest.substr(1, close - 1);
    if (close + 1 < rest.size() && rest[close + 1] == ':') url.port = rest.substr(close + 2);
  } else {
    const auto colon = rest.find(':');
    url.host = rest.substr(0, colon);
    if (colon != std::string::npos) url.port = rest.substr(colon + 1);
  }
  if (url.host.empty() || url.port.empty() || url.port.find_first_not_of("0123456789") != std::string::npos)
    throw Failure{k_exit_invalid_input, fmt::format("--join: \"{}\" is not https://host[:port]", text)};
  return url;
}

std::string to_json_text(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

/// Sends one request; the answer's `data` into `out`, or a Failure with the API's message.
void call_api(const qfctl::ServerUrl& url, const qfctl::TlsSettings& tls, const std::string& method,
              const std::string& path, const google::protobuf::Message* body, google::protobuf::Message& out) {
  qfctl::HttpRequest request;
  request.method = method;
  request.target = url.base_path + path;
  if (body != nullptr) request.body = to_json_text(*body);
  std::string failure;
  const auto response = qfctl::send_http_request(url, tls, k_http_timeout, request, failure);
  if (!response) throw Failure{1, fmt::format("{}: {}", url.text, failure)};
  google::protobuf::Struct envelope;
  const bool json = google::protobuf::util::JsonStringToMessage(response->body, &envelope).ok();
  const auto& fields = envelope.fields();
  if (!json || response->status >= 300 || !fields.count("data")) {
    std::string message =
        json && fields.count("message") ? fields.at("message").string_value() : response->body.substr(0, 300);
    throw Failure{response->status >= 400 && response->status < 500 ? k_exit_invalid_input : 1,
                  fmt::format("{} {}: {} {}", method, path, response->status, message)};
  }
  std::string data;
  (void)google::protobuf::util::MessageToJsonString(fields.at("data"), &data);
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;  // a newer coordinator may say more
  if (!google::protobuf::util::JsonStringToMessage(data, &out, options).ok())
    throw Failure{1, fmt::format("{} {}: the answer does not parse", method, path)};
}

/// Writes `content` to `path` with `mode` through a temporary file and a rename.
void write_file(const fs::path& path, const std::string& content, mode_t mode) {
  const std::string temp = path.string() + ".tmp";
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) throw Failure{1, fmt::format("{}: cannot create: {}", temp, std::strerror(errno))};
  bool ok = ::fchmod(fd, mode) == 0;
  std::size_t written = 0;
  while (ok && written < content.size()) {
    const ssize_t n = ::write(fd, content.data() + written, content.size() - written);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    if (ok) written += static_cast<std::size_t>(n);
  }
  ok = ok && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(temp.c_str(), path.c_str()) != 0) {
    const int saved = errno;
    ::unlink(temp.c_str());
    throw Failure{1, fmt::format("{}: cannot write: {}", path.string(), std::strerror(saved))};
  }
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Failure{1, fmt::format("{}: cannot read", path.string())};
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

fs::path data_dir_of(const v1::AgentConfig& config, const fs::path& config_file) {
  return (config_file.parent_path() / (config.data_dir().empty() ? "qf-agent-data" : config.data_dir()))
      .lexically_normal();
}

fs::path resolve(const fs::path& config_file, const std::string& path) {
  return (config_file.parent_path() / path).lexically_normal();
}

}  // namespace

int join_cluster(const JoinOptions& options) {
  try {
    std::string reason;
    const auto token = parse_join_token(options.token, reason);
    if (!token) throw Failure{k_exit_invalid_input, "--token: " + reason};
    const auto url = parse_url(options.url);
    const fs::path config_file = fs::absolute(options.config_file);
    v1::AgentConfig config;
    if (fs::exists(config_file)) {
      YamlError error;
      if (!yaml_file_to_message(config_file.string(), config, error))
        throw Failure{k_exit_invalid_input, error.message()};
    }
    if (!config.enrolment().url().empty() && !config.tls().cert_file().empty() &&
        fs::exists(resolve(config_file, config.tls().cert_file()))) {
      std::cerr << fmt::format(
          "qf-agent: {} is already enrolled (its certificate is {}); --join is ignored. To enrol "
          "again, remove enrolment and tls from the configuration\n",
          config_file.string(), config.tls().cert_file());
      return 0;
    }

    // The CA: the one --ca names verifies the endpoint; without it, the CA the coordinator
    // shows is taken only when it hashes to the token's (kubeadm's discovery hash).
    qfctl::TlsSettings discovery;
    discovery.ca_file = options.ca_file;
    discovery.insecure = options.ca_file.empty();
    v1::EnrolmentCaResponse ca;
    call_api(url, discovery, "GET", "/api/v1/enrol/ca", nullptr, ca);
    std::string detail;
    const std::string ca_hash = certificate_sha256(ca.ca_pem(), true, detail);
    if (ca_hash != token->ca_sha256)
      throw Failure{1, fmt::format("{}: the coordinator's cluster CA (sha256 {}) is not the one the token names ({}): "
                                   "another cluster, or someone in the middle; nothing was sent",
                                   url.text, ca_hash.empty() ? detail : ca_hash, token->ca_sha256)};

    const fs::path data_dir = data_dir_of(config, config_file);
    const fs::path tls_dir = data_dir / "tls";
    const fs::path ca_path = tls_dir / "ca.pem";
    const std::string agent_id = options.agent_id.empty() ? config.agent_id() : options.agent_id;
    KeyAndRequest pair;
    if (auto ec = make_key_and_request(agent_id, pair, detail))
      throw Failure{k_exit_invalid_input, "--agent-id: " + detail};

    v1::EnrolRequest request;
    request.set_join_token(options.token);
    request.set_csr_pem(pair.csr_pem);
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    request.set_hostname(config.hostname().empty() ? host : config.hostname());
    // The admin endpoint is verified from here on: by --ca, or by the cluster CA just checked
    // (in a temporary file: a refused join leaves nothing behind).
    std::string checked_ca = (fs::temp_directory_path() / "qf-join-ca-XXXXXX").string();
    const int ca_fd = ::mkstemp(checked_ca.data());
    if (ca_fd < 0) throw Failure{1, fmt::format("{}: cannot create: {}", checked_ca, std::strerror(errno))};
    ::close(ca_fd);
    struct RemoveFile {
      std::string path;
      ~RemoveFile() { ::unlink(path.c_str()); }
    } remove_checked_ca{checked_ca};
    write_file(checked_ca, ca.ca_pem(), 0600);
    qfctl::TlsSettings verified;
    verified.ca_file = options.ca_file.empty() ? checked_ca : options.ca_file;
    v1::EnrolResponse enrolled;
    call_api(url, verified, "POST", "/api/v1/enrol", &request, enrolled);

    fs::create_directories(tls_dir);
    fs::permissions(tls_dir, fs::perms::owner_all);
    write_file(ca_path, ca.ca_pem(), 0644);  // the one checked against the token
    const fs::path key_path = tls_dir / "agent.key";
    const fs::path cert_path = tls_dir / "agent.pem";
    write_file(key_path, pair.key_pem, 0600);
    write_file(cert_path, enrolled.certificate_pem(), 0600);

    config.set_agent_id(enrolled.agent_id());
    if (config.coordinators_size() == 0)
      for (const auto& address : enrolled.coordinators()) config.add_coordinators(address);
    if (!enrolled.group_id().empty()) config.set_group_id(enrolled.group_id());
    auto& tls = *config.mutable_tls();
    tls.set_ca_file(ca_path.string());
    tls.set_cert_file(cert_path.string());
    tls.set_key_file(key_path.string());
    config.mutable_enrolment()->set_url(options.url);
    config.mutable_enrolment()->set_ca_file(options.ca_file.empty() ? std::string()
                                                                    : fs::absolute(options.ca_file).string());
    // JSON is YAML: the file stays readable by --config (comments of an earlier file are lost).
    write_file(config_file,
               fmt::format("# qf-agent configuration, written by qf-agent --join ({}); JSON is YAML.\n{}\n", url.text,
                           to_json_text(config)),
               0640);
    std::cerr << fmt::format("qf-agent: enrolled as {} (group \"{}\"); key and certificate in {}; configuration {}\n",
                             enrolled.agent_id(), enrolled.group_id(), tls_dir.string(), config_file.string());
    return 0;
  } catch (const Failure& failure) {
    std::cerr << "qf-agent: join refused, nothing changed: " << failure.message << "\n";
    return failure.status;
  } catch (const std::exception& e) {
    std::cerr << "qf-agent: join failed: " << e.what() << "\n";
    return 1;
  }
}

std::optional<std::chrono::system_clock::time_point> renewal_time(const v1::AgentConfig& config,
                                                                  const fs::path& config_file) {
  if (config.enrolment().url().empty()) return std::nullopt;
  try {
    return certificate_renewal_time(read_text(resolve(config_file, config.tls().cert_file())));
  } catch (const Failure&) {
    return std::nullopt;
  }
}

std::optional<std::string> renew_certificate(const v1::AgentConfig& config, const fs::path& config_file) {
  try {
    const auto url = parse_url(config.enrolment().url());
    const fs::path cert_path = resolve(config_file, config.tls().cert_file());
    const fs::path key_path = resolve(config_file, config.tls().key_file());
    const std::string current_cert = read_text(cert_path);
    const std::string current_key = read_text(key_path);
    std::string detail;
    KeyAndRequest pair;
    if (auto ec = make_key_and_request(config.agent_id(), pair, detail)) return detail;
    v1::RenewCertificateRequest request;
    request.set_certificate_pem(current_cert);
    request.set_csr_pem(pair.csr_pem);
    request.set_signed_at_unix_ms(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
            .count());
    std::string signature;
    if (auto ec =
            sign_with_key(current_key, renewal_message(pair.csr_pem, request.signed_at_unix_ms()), signature, detail))
      return detail;
    request.set_signature(signature);
    qfctl::TlsSettings tls;
    tls.ca_file = config.enrolment().ca_file().empty() ? resolve(config_file, config.tls().ca_file()).string()
                                                       : config.enrolment().ca_file();
    v1::EnrolResponse renewed;
    call_api(url, tls, "POST", "/api/v1/enrol/renew", &request, renewed);
    // The key first: a connection made between the two renames loads a mismatched pair,
    // which fails to load and keeps the previous credentials until the certificate follows.
    write_file(key_path, pair.key_pem, 0600);
    write_file(cert_path, renewed.certificate_pem(), 0600);
    return std::nullopt;
  } catch (const Failure& failure) {
    return failure.message;
  } catch (const std::exception& e) {
    return std::string(e.what());
  }
}

CertificateRenewal::CertificateRenewal(boost::asio::io_context& io, v1::AgentConfig config, fs::path config_file)
    : io_(io), config_(std::move(config)), config_file_(std::move(config_file)), timer_(io) {}

CertificateRenewal::~CertificateRenewal() { stop(); }

void CertificateRenewal::start() {
  if (const auto at = renewal_time(config_, config_file_)) {
    logger()->info("certificate renewal at {:%Y-%m-%d %H:%M:%S} UTC ({})",
                   fmt::gmtime(std::chrono::system_clock::to_time_t(*at)), config_.enrolment().url());
    arm(*at);
  }
}

void CertificateRenewal::stop() {
  stopped_ = true;
  timer_.cancel();
  if (worker_.joinable()) worker_.join();
}

void CertificateRenewal::arm(std::chrono::system_clock::time_point at) {
  const auto delay = std::max(std::chrono::system_clock::duration::zero(), at - std::chrono::system_clock::now());
  timer_.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(delay));
  timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec && !stopped_) renew();
  });
}

void CertificateRenewal::renew() {
  if (worker_.joinable()) worker_.join();
  worker_ = std::thread([this] {
    auto failure = renew_certificate(config_, config_file_);
    boost::asio::post(io_, [this, failure = std::move(failure)] {
      if (stopped_) return;
      if (!failure) {
        logger()->info("certificate renewed; the next connection uses it");
        if (const auto at = renewal_time(config_, config_file_)) return arm(*at);
        return logger()->error("the renewed certificate does not parse; no further renewal");
      }
      const auto retry = std::chrono::seconds{60};
      logger()->warn("certificate renewal failed ({}); trying again in {} s", *failure, retry.count());
      arm(std::chrono::system_clock::now() + retry);
    });
  });
}

}  // namespace quartzflow::examples
