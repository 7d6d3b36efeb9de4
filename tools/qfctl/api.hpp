// SPDX-License-Identifier: Apache-2.0
// qfctl as a client of the admin API: where the server and the credentials come from
// (flags, environment, config file), the {"code":0,"data":...} envelope and API errors as
// CommandFailure, and the output formats shared by the API commands.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <google/protobuf/message.h>

namespace YAML {
class Emitter;
}

#include "api_client.hpp"
#include "commands.hpp"

namespace qfctl {

/// Exit status of failures that are not the user's input: server errors, no connection.
inline constexpr int k_exit_failure = 1;

/// The server used when none is given anywhere: the coordinator's default admin_listen.
inline constexpr std::string_view k_default_server = "http://127.0.0.1:8443";

enum class OutputFormat { table, json, yaml };

/// What every API command takes on its command line (see add_api_flags).
struct ApiFlags {
  std::string server;
  std::string token;
  std::string ca_file;
  bool insecure = false;
  int timeout_seconds = 30;
  std::string output = "table";

  OutputFormat format() const;
};

/// Adds --server, --token, --ca-file, --insecure, --timeout and -o/--output to `command`.
void add_api_flags(CLI::App& command, ApiFlags& flags);
/// Names those flags in the help of `command`'s sub-commands (they take them too).
void mention_api_flags(CLI::App& command);

/// The config file's contents: `server:`, `token:`, `ca_file:` (all optional).
struct CliConfig {
  std::string server;
  std::string token;
  std::string ca_file;
};

/// `$XDG_CONFIG_HOME/quartzflow/qfctl.yaml`, else `$HOME/.config/quartzflow/qfctl.yaml`.
std::filesystem::path config_file_path();

/// Reads the config file; a missing file is an empty config. Unknown keys are refused.
CliConfig read_cli_config(const std::filesystem::path& path);

/// Writes the config file with mode 0600 (its directory 0700), replacing it atomically.
void write_cli_config(const std::filesystem::path& path, const CliConfig& config);

/// The environment variables qfctl reads: QF_SERVER, QF_TOKEN, QF_CA_FILE.
struct CliEnvironment {
  std::string server;
  std::string token;
  std::string ca_file;
  static CliEnvironment from_process();
};

/// Where to connect and with which credentials, each value with where it came from.
struct Connection {
  ServerUrl server;
  TlsSettings tls;
  std::string token;
  std::string token_source;  ///< `--token`, `QF_TOKEN`, the config file's path, or empty
  std::chrono::seconds timeout{30};
};

/**
 * Picks each of server, token and CA file from the flags, else the environment, else the
 * config file; the server defaults to k_default_server. The config file's token and CA file
 * belong to the config file's server: they are not sent to another server given by a flag or
 * QF_SERVER. Throws CommandFailure (invalid input) for a malformed server URL.
 */
Connection resolve_connection(const ApiFlags& flags, const CliEnvironment& environment, const CliConfig& config,
                              const std::string& config_source);

/// `http://host:port[/prefix]` or `https://...`; a missing scheme is refused (it decides TLS).
ServerUrl parse_server_url(std::string_view text);

/// Query parameters in order; repeated names are repeated fields.
using Query = std::vector<std::pair<std::string, std::string>>;

/// Percent-encoding of one path segment or query component.
std::string url_encode(std::string_view text);

/// A failure the API answered with: the HTTP status and the error name (`NOT_FOUND`) besides
/// the text and exit status every command failure has.
struct ApiCallFailure : CommandFailure {
  unsigned http_status = 0;
  std::string error;
};

/**
 * The admin API over HTTP(S). Every call returns the reply's `data` parsed into `out`, or
 * throws ApiCallFailure (a CommandFailure): the API's message and one `  field: reason` line per detail, status 2
 * for 4xx answers, 1 for 5xx answers and unreachable servers (naming the URL and why).
 * Not thread-safe.
 */
class ApiClient {
 public:
  explicit ApiClient(Connection connection) : connection_(std::move(connection)) {}
  /// Reads the flags, the environment and the config file.
  static ApiClient from_flags(const ApiFlags& flags);

  void call(std::string_view method, std::string_view path, const Query& query,
            const google::protobuf::Message* body, google::protobuf::Message* out);

  template <typename Out>
  Out get(std::string_view path, const Query& query = {}) {
    Out out;
    call("GET", path, query, nullptr, &out);
    return out;
  }
  template <typename Out>
  Out post(std::string_view path, const google::protobuf::Message* body = nullptr) {
    Out out;
    call("POST", path, {}, body, &out);
    return out;
  }
  template <typename Out>
  Out put(std::string_view path, const google::protobuf::Message& body, const Query& query = {}) {
    Out out;
    call("PUT", path, query, &body, &out);
    return out;
  }
  void remove(std::string_view path) { call("DELETE", path, {}, nullptr, nullptr); }
  /// GET of a file the API sends as it is (not the JSON envelope), up to `max_bytes`; API
  /// errors are thrown as by `call`.
  std::string download(std::string_view path, std::uint64_t max_bytes);

  const Connection& connection() const { return connection_; }

 private:
  [[noreturn]] void throw_failure(const HttpResponse& response, const std::string& what) const;
  Connection connection_;
};

/// The group id for a group id or name (the API's paths and filters take ids); unknown
/// references are returned as they are, for the server to refuse.
std::string group_id_of(ApiClient& api, const std::string& reference);

// --- output -------------------------------------------------------------------------------

/// Protobuf JSON with proto field names and every primitive field (as the API sends it).
std::string message_to_json(const google::protobuf::Message& message, bool pretty = true);

struct YamlStyle {
  bool include_defaults = true;   ///< every primitive field, as in the API's JSON
  bool short_enum_names = false;  ///< `one` instead of `PLACEMENT_MODE_ONE`
  std::vector<std::string> omit;  ///< top-level fields left out (output-only fields for editing)
};
/// Block-style YAML of a message (proto field names), readable by yaml_to_message.
std::string message_to_yaml(const google::protobuf::Message& message, const YamlStyle& style = {});
/// One YAML string: a literal block for multi-line text, quoted where a reader would take it for
/// something else (a boolean, a number, null).
void emit_string(YAML::Emitter& out, const std::string& text);

/// Prints `message` as JSON or YAML for -o json / -o yaml.
void print_message(const google::protobuf::Message& message, OutputFormat format);

/// `2026-03-08T07:00:00Z`, or `-` for 0.
std::string time_text(std::int64_t unix_ms);
/// `850ms`, `2.5s`, `3m05s`, `2h10m`.
std::string duration_text(std::int64_t ms);
/// The value's name without its enum's prefix, lower case: `success` for EXECUTION_STATUS_SUCCESS.
std::string short_enum_name(const google::protobuf::EnumDescriptor* type, int value);
/// Parses `short_enum_name` (or the full name) back; nullopt when unknown.
std::optional<int> parse_enum_name(const google::protobuf::EnumDescriptor* type, std::string_view text);
/// The short names of an enum's values except UNSPECIFIED, comma-separated, for messages.
std::string enum_choices(const google::protobuf::EnumDescriptor* type);
/// Unix ms of an RFC 3339 instant given to `flag`; throws CommandFailure (invalid input).
std::int64_t unix_ms_of(const std::string& text, std::string_view flag);
/// `yes` / `no`.
inline std::string yes_no(bool value) { return value ? "yes" : "no"; }

/// `key: value` lines with the values aligned, for one object in table mode.
void print_fields(const std::vector<std::pair<std::string, std::string>>& fields);
/// `(20 of 57 shown: --page 2 for more)` after a table when more pages exist.
void print_paging(std::size_t shown, std::uint64_t total, std::uint32_t page, std::uint32_t page_size);

/**
 * Reads a message from a YAML or JSON file (JSON when the name ends in `.json` or the text
 * starts with `{`), `-` for stdin, through the library's YAML mapping (yaml_to_message).
 * Throws CommandFailure (invalid input) naming the file, line and field.
 */
void read_message_file(const std::string& path, google::protobuf::Message& out);

/// A secret from the terminal without echo, or one line of stdin when it is not a terminal
/// (or `from_stdin`). Throws CommandFailure when nothing can be read.
std::string read_secret(std::string_view prompt, bool from_stdin);

}  // namespace qfctl
