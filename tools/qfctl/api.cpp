// SPDX-License-Identifier: Apache-2.0
// The admin API client of qfctl without the socket: flags, environment and config file,
// URLs, the response envelope and error bodies, secrets from a terminal (output: api_output.cpp).
#include "api.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>

#include <fmt/format.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <yaml-cpp/yaml.h>

#include <quartzflow/time.hpp>
#include <quartzflow/v1/admin.pb.h>
#include <quartzflow/yaml_config.hpp>

#include "common/text.hpp"  // src/: lower_ascii

namespace qfctl {
namespace {

namespace fs = std::filesystem;
namespace pb = google::protobuf;
namespace qf = quartzflow;

using qf::detail::lower_ascii;

std::string env_or_empty(const char* name) {
  const char* value = std::getenv(name);
  return value ? std::string(value) : std::string();
}

bool same_server(const ServerUrl& a, const ServerUrl& b) {
  return a.https == b.https && lower_ascii(a.host) == lower_ascii(b.host) && a.port == b.port && a.base_path == b.base_path;
}

/// The config file's CA file is relative to the config file's directory.
std::string config_relative(const std::string& file, const std::string& config_source) {
  if (file.empty() || fs::path(file).is_absolute() || config_source.empty()) return file;
  return (fs::path(config_source).parent_path() / file).string();
}

/// Message and details of an error body; empty message when the body is not one.
struct ErrorBody {
  std::string message;
  std::string name;
  std::string request_id;
  std::vector<std::pair<std::string, std::string>> details;
};

ErrorBody error_body_of(const pb::Value& envelope) {
  ErrorBody out;
  if (envelope.kind_case() != pb::Value::kStructValue) return out;
  const auto& fields = envelope.struct_value().fields();
  const auto text = [&](const char* name) {
    const auto found = fields.find(name);
    return found == fields.end() ? std::string() : found->second.string_value();
  };
  out.message = text("message");
  out.name = text("error");
  out.request_id = text("request_id");
  if (const auto details = fields.find("details"); details != fields.end()) {
    for (const auto& item : details->second.list_value().values()) {
      const auto& d = item.struct_value().fields();
      const auto field = d.find("field");
      const auto reason = d.find("reason");
      out.details.emplace_back(field == d.end() ? "" : field->second.string_value(),
                               reason == d.end() ? "" : reason->second.string_value());
    }
  }
  return out;
}

std::string body_excerpt(const std::string& body) {
  std::string text = body.substr(0, 200);
  std::replace(text.begin(), text.end(), '\n', ' ');
  return body.size() > 200 ? text + "..." : text;
}

/// Echo off on the terminal for as long as it lives.
class NoEcho {
 public:
  NoEcho() {
    if (tcgetattr(STDIN_FILENO, &saved_) != 0) return;
    termios quiet = saved_;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    active_ = tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0;
  }
  ~NoEcho() {
    if (active_) tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_);
  }
  NoEcho(const NoEcho&) = delete;
  NoEcho& operator=(const NoEcho&) = delete;

 private:
  termios saved_{};
  bool active_ = false;
};

}  // namespace

// --- flags, environment, config file --------------------------------------------------------

OutputFormat ApiFlags::format() const {
  if (output == "json") return OutputFormat::json;
  if (output == "yaml") return OutputFormat::yaml;
  return OutputFormat::table;
}

void add_api_flags(CLI::App& command, ApiFlags& flags) {
  command.add_option("--server", flags.server,
                     "admin API URL, e.g. https://coord:8443 (else $QF_SERVER, the config file, " +
                         std::string(k_default_server) + ")");
  command.add_option("--token", flags.token, "API or session token (else $QF_TOKEN, the config file)");
  command.add_option("--ca-file", flags.ca_file, "PEM CA bundle to verify an HTTPS server with (else $QF_CA_FILE, "
                                                 "the config file, the system store)");
  command.add_flag("--insecure", flags.insecure, "do not verify the HTTPS server's certificate (unsafe)");
  command.add_option("--timeout", flags.timeout_seconds, "seconds for connecting and each request")
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  command.add_option("-o,--output", flags.output, "table (for people), json or yaml (the API's data)")
      ->check(CLI::IsMember({"table", "json", "yaml"}))
      ->capture_default_str();
}

void mention_api_flags(CLI::App& command) {
  const std::string footer = fmt::format(
      "Also: --server URL, --token TOKEN, --ca-file PEM, --insecure, --timeout SECONDS, -o table|json|yaml "
      "(see qfctl {} --help)",
      command.get_name());
  for (auto* sub : command.get_subcommands({})) sub->footer(footer);
}

fs::path config_file_path() {
  if (const auto xdg = env_or_empty("XDG_CONFIG_HOME"); !xdg.empty() && fs::path(xdg).is_absolute())
    return fs::path(xdg) / "quartzflow" / "qfctl.yaml";
  const auto home = env_or_empty("HOME");
  if (home.empty())
    throw CommandFailure{k_exit_invalid_input,
                         "cannot locate the config file: neither XDG_CONFIG_HOME nor HOME is set"};
  return fs::path(home) / ".config" / "quartzflow" / "qfctl.yaml";
}

CliConfig read_cli_config(const fs::path& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) {
    if (errno == ENOENT) return {};
    throw CommandFailure{k_exit_failure, fmt::format("{}: {}", path.string(), std::strerror(errno))};
  }
  YAML::Node root;
  try {
    root = YAML::LoadFile(path.string());
  } catch (const YAML::Exception& e) {
    throw CommandFailure{k_exit_invalid_input,
                         fmt::format("{}:{}:{}: {}", path.string(), e.mark.line + 1, e.mark.column + 1, e.msg)};
  }
  CliConfig config;
  if (root.IsNull()) return config;
  if (!root.IsMap())
    throw CommandFailure{k_exit_invalid_input, fmt::format("{}: expected a map with server, token, ca_file", path.string())};
  for (const auto& pair : root) {
    const auto key = pair.first.as<std::string>("");
    const YAML::Node value = pair.second;
    std::string* target = key == "server" ? &config.server : key == "token" ? &config.token
                        : key == "ca_file" ? &config.ca_file : nullptr;
    if (!target)
      throw CommandFailure{k_exit_invalid_input,
                           fmt::format("{}:{}: unknown key \"{}\" (the keys are server, token, ca_file)", path.string(),
                                       pair.first.Mark().line + 1, key)};
    if (!value.IsNull() && !value.IsScalar())
      throw CommandFailure{k_exit_invalid_input,
                           fmt::format("{}:{}: {}: expected a string", path.string(), value.Mark().line + 1, key)};
    *target = value.IsNull() ? std::string() : value.Scalar();
  }
  if (!config.token.empty() && (info.st_mode & 077) != 0)
    std::cerr << fmt::format("qfctl: warning: {} holds a token and is readable by others (mode {:04o}); "
                             "run chmod 600 on it\n",
                             path.string(), info.st_mode & 0777);
  return config;
}

void write_cli_config(const fs::path& path, const CliConfig& config) {
  const auto dir = path.parent_path();
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    fs::create_directories(dir, ec);
    if (!ec) fs::permissions(dir, fs::perms::owner_all, ec);
    if (ec) throw CommandFailure{k_exit_failure, fmt::format("cannot create {}: {}", dir.string(), ec.message())};
  }
  YAML::Emitter out;
  out << YAML::BeginMap;
  for (const auto& [key, value] : {std::pair{"server", &config.server}, std::pair{"token", &config.token},
                                   std::pair{"ca_file", &config.ca_file}}) {
    if (value->empty()) continue;
    out << YAML::Key << key << YAML::Value;
    emit_string(out, *value);
  }
  out << YAML::EndMap;
  const std::string text = "# qfctl settings, written by `qfctl login`; keep it private (mode 0600)\n" +
                           (config.server.empty() && config.token.empty() && config.ca_file.empty()
                                ? std::string()
                                : std::string(out.c_str()) + "\n");
  const fs::path temporary = path.string() + fmt::format(".{}.tmp", ::getpid());
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw CommandFailure{k_exit_failure, fmt::format("cannot write {}: {}", temporary.string(), std::strerror(errno))};
  int failure = 0;  // errno of the first step that failed
  for (std::size_t written = 0; written < text.size() && failure == 0;) {
    const auto n = ::write(fd, text.data() + written, text.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) failure = errno;
    else written += static_cast<std::size_t>(n);
  }
  if (failure == 0 && (::fchmod(fd, 0600) != 0 || ::fsync(fd) != 0)) failure = errno;
  ::close(fd);
  if (failure == 0 && ::rename(temporary.c_str(), path.c_str()) != 0) failure = errno;
  if (failure != 0) {
    ::unlink(temporary.c_str());
    throw CommandFailure{k_exit_failure, fmt::format("cannot write {}: {}", path.string(), std::strerror(failure))};
  }
}

CliEnvironment CliEnvironment::from_process() {
  return {env_or_empty("QF_SERVER"), env_or_empty("QF_TOKEN"), env_or_empty("QF_CA_FILE")};
}

ServerUrl parse_server_url(std::string_view text) {
  const auto refuse = [&](std::string_view why) -> CommandFailure {
    return CommandFailure{k_exit_invalid_input, fmt::format("server \"{}\": {}", text, why)};
  };
  ServerUrl url;
  url.text = std::string(text);
  while (!url.text.empty() && url.text.back() == '/') url.text.pop_back();
  std::string_view rest = text;
  const std::string scheme = lower_ascii(rest.substr(0, rest.find("://")));
  if (rest.find("://") == std::string_view::npos || (scheme != "http" && scheme != "https"))
    throw refuse("give the scheme: http://HOST:PORT or https://HOST:PORT");
  url.https = scheme == "https";
  rest.remove_prefix(scheme.size() + 3);
  const auto slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string path(slash == std::string_view::npos ? std::string_view{} : rest.substr(slash));
  if (authority.find('@') != std::string_view::npos) throw refuse("user names in the URL are not supported; use --token");
  if (path.find_first_of("?#") != std::string::npos) throw refuse("a query or fragment is not allowed");
  while (!path.empty() && path.back() == '/') path.pop_back();
  // `https://host/api/v1` is what people copy from the logs: the API root is ours to add.
  constexpr std::string_view api_root = "/api/v1";
  if (path.size() >= api_root.size() && path.compare(path.size() - api_root.size(), api_root.size(), api_root) == 0)
    path.resize(path.size() - api_root.size());
  url.base_path = path;
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) throw refuse("unbalanced '[' in the host");
    url.host = std::string(authority.substr(1, close - 1));
    const auto after = authority.substr(close + 1);
    if (!after.empty() && after.front() != ':') throw refuse("expected ':' and a port after ']'");
    if (!after.empty()) port = after.substr(1);
  } else {
    const auto colon = authority.rfind(':');
    url.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
    if (url.host.find(':') != std::string::npos) throw refuse("an IPv6 address must be in brackets, e.g. [::1]:8443");
  }
  if (url.host.empty()) throw refuse("no host");
  if (port.empty()) {
    url.port = url.https ? "443" : "80";
  } else {
    unsigned number = 0;
    for (const char c : port) {
      if (!std::isdigit(static_cast<unsigned char>(c)) || number > 65535) throw refuse("the port must be 1-65535");
      number = number * 10 + static_cast<unsigned>(c - '0');
    }
    if (number == 0 || number > 65535) throw refuse("the port must be 1-65535");
    url.port = std::to_string(number);
  }
  return url;
}

Connection resolve_connection(const ApiFlags& flags, const CliEnvironment& environment, const CliConfig& config,
                              const std::string& config_source) {
  Connection c;
  const std::string server_text = !flags.server.empty()        ? flags.server
                                  : !environment.server.empty() ? environment.server
                                  : !config.server.empty()      ? config.server
                                                                : std::string(k_default_server);
  c.server = parse_server_url(server_text);
  // The config file's credentials go to the config file's server only (the default one when
  // it names none).
  bool config_applies = false;
  try {
    config_applies = same_server(parse_server_url(config.server.empty() ? k_default_server : config.server), c.server);
  } catch (const CommandFailure&) {
    config_applies = false;  // a broken server line: its token goes nowhere
  }
  if (!flags.token.empty()) {
    c.token = flags.token;
    c.token_source = "--token";
  } else if (!environment.token.empty()) {
    c.token = environment.token;
    c.token_source = "QF_TOKEN";
  } else if (config_applies && !config.token.empty()) {
    c.token = config.token;
    c.token_source = config_source;
  }
  c.tls.ca_file = !flags.ca_file.empty()         ? flags.ca_file
                  : !environment.ca_file.empty() ? environment.ca_file
                  : config_applies               ? config_relative(config.ca_file, config_source)
                                                 : std::string();
  c.tls.insecure = flags.insecure;
  c.timeout = std::chrono::seconds{flags.timeout_seconds};
  return c;
}

std::string url_encode(std::string_view text) {
  std::string out;
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '.' || c == '_' || c == '~') out += c;
    else out += fmt::format("%{:02X}", static_cast<unsigned>(u));
  }
  return out;
}

// --- the client --------------------------------------------------------------------------

ApiClient ApiClient::from_flags(const ApiFlags& flags) {
  const auto path = config_file_path();
  const auto config = read_cli_config(path);
  auto connection = resolve_connection(flags, CliEnvironment::from_process(), config, path.string());
  if (connection.tls.insecure && connection.server.https)
    std::cerr << "qfctl: warning: --insecure: the server's certificate is not verified; anyone on the path can "
                 "read the token\n";
  return ApiClient(std::move(connection));
}

void ApiClient::call(std::string_view method, std::string_view path, const Query& query, const pb::Message* body,
                     pb::Message* out) {
  HttpRequest request;
  request.method = std::string(method);
  request.target = "/api/v1" + std::string(path);
  for (std::size_t i = 0; i < query.size(); ++i)
    request.target += (i == 0 ? "?" : "&") + url_encode(query[i].first) + "=" + url_encode(query[i].second);
  if (body) {
    pb::util::JsonPrintOptions options;
    options.preserve_proto_field_names = true;
    (void)pb::util::MessageToJsonString(*body, &request.body, options);
  }
  request.bearer_token = connection_.token;

  if (connection_.server.https && !connection_.tls.insecure && !connection_.tls.ca_file.empty() &&
      ::access(connection_.tls.ca_file.c_str(), R_OK) != 0)
    throw CommandFailure{k_exit_invalid_input,
                         fmt::format("CA file {}: {}", connection_.tls.ca_file, std::strerror(errno))};
  std::string failure;
  const auto response = send_http_request(connection_.server, connection_.tls, connection_.timeout, request, failure);
  const std::string what = fmt::format("{} {}", method, connection_.server.base_path + "/api/v1" + std::string(path));
  if (!response)
    throw CommandFailure{k_exit_failure,
                         fmt::format("cannot reach the coordinator at {} ({}): {}", connection_.server.text, what, failure)};

  pb::Value envelope;
  const bool is_json = pb::util::JsonStringToMessage(response->body, &envelope).ok() &&
                       envelope.kind_case() == pb::Value::kStructValue;
  if (response->status >= 200 && response->status < 300) {
    if (!is_json)
      throw CommandFailure{k_exit_failure, fmt::format("{} ({}) answered HTTP {} without the API's JSON: {}",
                                                       connection_.server.text, what, response->status,
                                                       body_excerpt(response->body))};
    if (!out) return;
    const auto& fields = envelope.struct_value().fields();
    const auto data = fields.find("data");
    if (data == fields.end())
      throw CommandFailure{k_exit_failure, fmt::format("{} ({}): the answer has no \"data\"", connection_.server.text, what)};
    std::string data_json;
    (void)pb::util::MessageToJsonString(data->second, &data_json);
    pb::util::JsonParseOptions options;
    options.ignore_unknown_fields = true;  // a newer server may send more
    if (const auto status = pb::util::JsonStringToMessage(data_json, out, options); !status.ok())
      throw CommandFailure{k_exit_failure, fmt::format("{} ({}): cannot read the answer as {}: {}", connection_.server.text,
                                                       what, out->GetDescriptor()->name(), status.message().as_string())};
    return;
  }

  throw_failure(*response, what);
}

std::string ApiClient::download(std::string_view path, std::uint64_t max_bytes) {
  HttpRequest request;
  request.method = "GET";
  request.target = "/api/v1" + std::string(path);
  request.bearer_token = connection_.token;
  request.max_response_bytes = max_bytes;
  std::string failure;
  auto response = send_http_request(connection_.server, connection_.tls, connection_.timeout, request, failure);
  const std::string what = fmt::format("GET {}", connection_.server.base_path + "/api/v1" + std::string(path));
  if (!response)
    throw CommandFailure{k_exit_failure, fmt::format("cannot reach the coordinator at {} ({}): {}",
                                                     connection_.server.text, what, failure)};
  if (response->status >= 200 && response->status < 300) return std::move(response->body);
  throw_failure(*response, what);
}

void ApiClient::throw_failure(const HttpResponse& reply, const std::string& what) const {
  const auto* response = &reply;
  pb::Value envelope;
  const bool is_json =
      pb::util::JsonStringToMessage(response->body, &envelope).ok() && envelope.kind_case() == pb::Value::kStructValue;
  const auto error = is_json ? error_body_of(envelope) : ErrorBody{};
  std::string text = !error.message.empty()
                         ? error.message
                         : fmt::format("{} ({}) answered HTTP {}: {}", connection_.server.text, what, response->status,
                                       body_excerpt(response->body));
  for (const auto& [field, reason] : error.details) {
    if (field.empty() && reason.empty()) continue;
    text += fmt::format("\n  {}: {}", field.empty() ? "-" : field, reason);
  }
  if (response->status == 401 && error.name != "TOTP_REQUIRED") {
    text += connection_.token.empty()
                ? "\n  (no token was sent: run `qfctl login --user NAME`, or give --token or QF_TOKEN)"
                : fmt::format("\n  (the token from {} was refused: log in again or give another token)",
                              connection_.token_source);
  }
  if (response->status >= 500 && !error.request_id.empty()) text += fmt::format("\n  (request id {})", error.request_id);
  ApiCallFailure failure_thrown;
  failure_thrown.status = response->status >= 500 ? k_exit_failure : k_exit_invalid_input;
  failure_thrown.message = std::move(text);
  failure_thrown.http_status = response->status;
  failure_thrown.error = error.name;
  throw failure_thrown;
}

std::string group_id_of(ApiClient& api, const std::string& reference) {
  if (reference.empty()) return reference;
  const auto listing = api.get<quartzflow::v1::ListGroupsResponse>("/groups", {{"keyword", reference}, {"page_size", "500"}});
  for (const auto& g : listing.items())
    if (g.group().id() == reference) return reference;
  for (const auto& g : listing.items())
    if (g.group().name() == reference) return g.group().id();
  return reference;
}

std::string read_secret(std::string_view prompt, bool from_stdin) {
  std::string line;
  if (!from_stdin && ::isatty(STDIN_FILENO)) {
    std::cerr << prompt << std::flush;
    {
      NoEcho quiet;
      std::getline(std::cin, line);
    }
    std::cerr << "\n";
  } else if (!std::getline(std::cin, line)) {
    std::string_view what = prompt;
    while (!what.empty() && (what.back() == ' ' || what.back() == ':')) what.remove_suffix(1);
    throw CommandFailure{k_exit_invalid_input, fmt::format("stdin ended; expected a line for \"{}\"", what)};
  }
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

}  // namespace qfctl
