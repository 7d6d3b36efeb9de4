// SPDX-License-Identifier: Apache-2.0
// Admin API bodies: protobuf's JSON mapping (proto field names), the {"code":0,"data":...}
// envelope, error bodies with field details, and query parameters read into messages.
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>

#include <map>
#include <memory>
#include <mutex>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/type.pb.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/type_resolver.h>
#include <google/protobuf/util/type_resolver_util.h>

#include <quartzflow/time.hpp>

#include "../common/enum_names.hpp"
#include "../common/json_text.hpp"
#include "../common/text.hpp"
#include "../common/message_limits.hpp"
#include "../common/utf8.hpp"
#include "api.hpp"

namespace quartzflow::detail {
namespace {

namespace pb = google::protobuf;

std::string upper(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return out;
}

/// Enum values by full name (`EXECUTION_STATUS_SUCCESS`), short name (`success`) or number.
const pb::EnumValueDescriptor* find_enum_value(const pb::EnumDescriptor& type, std::string_view text) {
  if (const auto* v = EnumNames::of(&type).find(text)) return v;
  int number = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
  if (ec == std::errc{} && end == text.data() + text.size()) return type.FindValueByNumber(number);
  return nullptr;
}

template <typename T>
bool parse_integer(std::string_view text, T& out) {
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc{} && end == text.data() + text.size() && !text.empty();
}

/// Sets one field (or appends to a repeated one); the reason when the value does not fit.
std::optional<std::string> set_field(pb::Message& out, const pb::FieldDescriptor& field, std::string_view value) {
  const auto* reflection = out.GetReflection();
  const bool repeated = field.is_repeated();
  switch (field.cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_STRING:
      repeated ? reflection->AddString(&out, &field, std::string(value))
               : reflection->SetString(&out, &field, std::string(value));
      return std::nullopt;
    case pb::FieldDescriptor::CPPTYPE_BOOL: {
      const std::string v = upper(value);
      if (v != "TRUE" && v != "FALSE" && v != "1" && v != "0") return "must be true or false";
      const bool b = v == "TRUE" || v == "1";
      repeated ? reflection->AddBool(&out, &field, b) : reflection->SetBool(&out, &field, b);
      return std::nullopt;
    }
    case pb::FieldDescriptor::CPPTYPE_INT32: {
      std::int32_t n = 0;
      if (!parse_integer(value, n)) return "must be an integer";
      repeated ? reflection->AddInt32(&out, &field, n) : reflection->SetInt32(&out, &field, n);
      return std::nullopt;
    }
    case pb::FieldDescriptor::CPPTYPE_INT64: {
      std::int64_t n = 0;
      if (!parse_integer(value, n)) return "must be an integer";
      repeated ? reflection->AddInt64(&out, &field, n) : reflection->SetInt64(&out, &field, n);
      return std::nullopt;
    }
    case pb::FieldDescriptor::CPPTYPE_UINT32: {
      std::uint32_t n = 0;
      if (!parse_integer(value, n)) return "must be a non-negative integer";
      repeated ? reflection->AddUInt32(&out, &field, n) : reflection->SetUInt32(&out, &field, n);
      return std::nullopt;
    }
    case pb::FieldDescriptor::CPPTYPE_UINT64: {
      std::uint64_t n = 0;
      if (!parse_integer(value, n)) return "must be a non-negative integer";
      repeated ? reflection->AddUInt64(&out, &field, n) : reflection->SetUInt64(&out, &field, n);
      return std::nullopt;
    }
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
    case pb::FieldDescriptor::CPPTYPE_FLOAT: {
      const std::string text(value);
      char* end = nullptr;
      const double d = std::strtod(text.c_str(), &end);
      if (text.empty() || end != text.c_str() + text.size()) return "must be a number";
      if (field.cpp_type() == pb::FieldDescriptor::CPPTYPE_DOUBLE)
        repeated ? reflection->AddDouble(&out, &field, d) : reflection->SetDouble(&out, &field, d);
      else
        repeated ? reflection->AddFloat(&out, &field, static_cast<float>(d))
                 : reflection->SetFloat(&out, &field, static_cast<float>(d));
      return std::nullopt;
    }
    case pb::FieldDescriptor::CPPTYPE_ENUM: {
      const auto* v = find_enum_value(*field.enum_type(), value);
      if (!v) {
        std::vector<std::string> names;
        for (int i = 1; i < field.enum_type()->value_count(); ++i) names.push_back(field.enum_type()->value(i)->name());
        return fmt::format("\"{}\" is not one of {}", value, fmt::join(names, ", "));
      }
      repeated ? reflection->AddEnum(&out, &field, v) : reflection->SetEnum(&out, &field, v);
      return std::nullopt;
    }
    case pb::FieldDescriptor::CPPTYPE_MESSAGE:
      break;
  }
  return "cannot be given as a query parameter";
}

/// Protobuf's parse errors name the field in their own words; keep the field for details.
ApiFailure body_failure(std::string_view status_message) {
  std::string reason(status_message);
  std::string field = "body";
  // Protobuf 3.21 says `<field path>: <why>` (e.g. `colour: Cannot find field.`).
  const auto colon = reason.find(": ");
  if (colon != std::string::npos && colon > 0 && reason.find(' ') > colon) {
    field = reason.substr(0, colon);
    reason = reason.substr(colon + 2);
    if (field.size() > 2 && field.front() == '(' && field.back() == ')') field = field.substr(1, field.size() - 2);
    if (reason.rfind("Cannot find field", 0) == 0) reason = "unknown field";
  }
  while (!reason.empty() && reason.back() == '.') reason.pop_back();
  return {v1::API_ERROR_CODE_INVALID_ARGUMENT,
          fmt::format("invalid request body: {}: {}", field, reason),
          {field_violation(field, reason)}};
}

void append_json_string(std::string& out, std::string_view raw) {
  // A message may quote what a client sent; the reply stays UTF-8, hence JSON, whatever it was.
  out += '"';
  append_json_escaped(out, valid_utf8(raw));
  out += '"';
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

constexpr std::string_view k_type_url_prefix = "type.googleapis.com";

/**
 * MessageToJsonString builds protobuf's `Type` description of every message it prints, on
 * every call, from the descriptors (most of an API read's CPU, measured with
 * qf-bench-admin). Types never change in a process: resolve each once and copy it out.
 * Thread safety: as TypeResolver requires, any thread (a mutex guards the cache).
 */
class CachingTypeResolver final : public pb::util::TypeResolver {
 public:
  CachingTypeResolver()
      : inner_(pb::util::NewTypeResolverForDescriptorPool(std::string(k_type_url_prefix),
                                                         pb::DescriptorPool::generated_pool())) {}

  pb::util::Status ResolveMessageType(const std::string& url, pb::Type* type) override {
    std::lock_guard lock(mutex_);
    auto it = types_.find(url);
    if (it == types_.end()) {
      pb::Type resolved;
      if (auto status = inner_->ResolveMessageType(url, &resolved); !status.ok()) return status;
      it = types_.emplace(url, std::move(resolved)).first;
    }
    *type = it->second;
    return {};
  }

  pb::util::Status ResolveEnumType(const std::string& url, pb::Enum* type) override {
    std::lock_guard lock(mutex_);
    auto it = enums_.find(url);
    if (it == enums_.end()) {
      pb::Enum resolved;
      if (auto status = inner_->ResolveEnumType(url, &resolved); !status.ok()) return status;
      it = enums_.emplace(url, std::move(resolved)).first;
    }
    *type = it->second;
    return {};
  }

 private:
  std::unique_ptr<pb::util::TypeResolver> inner_;
  std::mutex mutex_;
  std::map<std::string, pb::Type> types_;
  std::map<std::string, pb::Enum> enums_;
};

}  // namespace

std::optional<std::string> percent_decode(std::string_view in, bool plus_is_space) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return std::nullopt;
      const int hi = hex_value(in[i + 1]), lo = hex_value(in[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      c = ' ';
    }
    if (c == '\0') return std::nullopt;
    out += c;
  }
  // Ids and query values reach protobuf strings and replies: UTF-8 only, like bodies.
  if (first_invalid_utf8(out) != std::string_view::npos) return std::nullopt;
  return out;
}

std::string to_json(const google::protobuf::Message& message) {
  static CachingTypeResolver resolver;
  pb::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string out;
  (void)pb::util::BinaryToJsonString(&resolver, std::string(k_type_url_prefix) + "/" + message.GetDescriptor()->full_name(),
                                     message.SerializeAsString(), &out, options);
  return out;
}

ApiResponse raw_data_response(std::string_view json, unsigned status) {
  ApiResponse r;
  r.status = status;
  r.body.reserve(json.size() + 20);
  r.body += R"({"code":0,"data":)";
  r.body += json;
  r.body += '}';
  return r;
}

ApiResponse data_response(const google::protobuf::Message& data, unsigned status) {
  return raw_data_response(to_json(data), status);
}

ApiResponse error_response(const ApiFailure& failure, std::string_view request_id) {
  ApiResponse r;
  r.status = http_status_of(failure.code);
  r.body = fmt::format(R"({{"code":{},"error":"{}","message":)", static_cast<int>(failure.code),
                       v1::ApiErrorCode_Name(failure.code).substr(std::string_view("API_ERROR_CODE_").size()));
  append_json_string(r.body, failure.message);
  r.body += R"(,"details":[)";
  for (std::size_t i = 0; i < failure.violations.size(); ++i) {
    if (i) r.body += ',';
    r.body += R"({"field":)";
    append_json_string(r.body, failure.violations[i].field());
    r.body += R"(,"reason":)";
    append_json_string(r.body, failure.violations[i].reason());
    r.body += '}';
  }
  r.body += R"(],"request_id":)";
  append_json_string(r.body, request_id);
  r.body += '}';
  return r;
}

std::optional<std::string> cross_origin_problem(const ApiRequest& request) {
  if (request.origin.empty() || request.method == "GET" || request.method == "HEAD" || request.method == "OPTIONS")
    return std::nullopt;
  const std::string own = fmt::format("{}://{}", request.secure ? "https" : "http", request.host);
  if (!request.host.empty() && lower_ascii(request.origin) == lower_ascii(own))
    return std::nullopt;
  return fmt::format("cross-origin request refused: Origin {} is not this server ({})", valid_utf8(request.origin.substr(0, 200)),
                     valid_utf8(own.substr(0, 200)));
}

std::optional<ApiFailure> parse_body(std::string_view body, google::protobuf::Message& out) {
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos)
    return ApiFailure{v1::API_ERROR_CODE_INVALID_ARGUMENT,
                      "invalid request body: body: a JSON object is required",
                      {field_violation("body", "a JSON object is required")}};
  // JSON text is UTF-8 (RFC 8259 8.1); protobuf would keep invalid bytes in string fields.
  if (const auto at = first_invalid_utf8(body); at != std::string_view::npos) {
    const std::string reason = fmt::format("is not valid UTF-8 (byte {} of the body)", at);
    return ApiFailure{v1::API_ERROR_CODE_INVALID_ARGUMENT,
                      "invalid request body: body: " + reason,
                      {field_violation("body", reason)}};
  }
  pb::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const auto status = pb::util::JsonStringToMessage(pb::StringPiece(body.data(), body.size()), &out, options);
  if (!status.ok()) return body_failure(status.message().as_string());
  if (auto oversized = oversized_repeated_field(out, k_max_body_list_elements)) {
    out.Clear();
    return ApiFailure{v1::API_ERROR_CODE_INVALID_ARGUMENT,
                      fmt::format("invalid request body: {}: {}", oversized->first, oversized->second),
                      {field_violation(oversized->first, oversized->second)}};
  }
  return std::nullopt;
}

const std::vector<QueryAlias>& query_aliases() {
  static const std::vector<QueryAlias> aliases{
      {"quartzflow.v1.ListExecutionsRequest", "client_id", "agent_id"},
      {"quartzflow.v1.ListExecutionsRequest", "start_time", "from_unix_ms", true},
      {"quartzflow.v1.ListExecutionsRequest", "end_time", "to_unix_ms", true},
      {"quartzflow.v1.StatsQuery", "client_id", "agent_id"},
      {"quartzflow.v1.StatsQuery", "date_range", "range"},
      {"quartzflow.v1.StatsQuery", "start_time", "from_unix_ms", true},
      {"quartzflow.v1.StatsQuery", "end_time", "to_unix_ms", true},
  };
  return aliases;
}

std::optional<ApiFailure> parse_query(const std::vector<std::pair<std::string, std::string>>& query,
                                      google::protobuf::Message& out) {
  const auto* descriptor = out.GetDescriptor();
  for (const auto& [name, given] : query) {
    const auto* field = descriptor->FindFieldByName(name);
    std::string value = given;
    std::optional<std::string> why;
    if (!field) {
      for (const auto& alias : query_aliases())
        if (alias.message == descriptor->full_name() && alias.alias == name) {
          field = descriptor->FindFieldByName(std::string(alias.field));
          std::int64_t ms = 0;
          if (alias.time && !parse_integer(std::string_view(value), ms)) {
            if (auto at = parse_rfc3339(value))
              value =
                  std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(at->time_since_epoch()).count());
            else why = "must be RFC 3339 (2025-01-10T02:00:00Z) or unix milliseconds";
          }
        }
    }
    if (why) field = nullptr;
    else if (!field) why = "unknown query parameter";
    else if (!field->is_repeated() && out.GetReflection()->HasField(out, field)) why = "given more than once";
    else why = set_field(out, *field, value);
    if (why)
      return ApiFailure{v1::API_ERROR_CODE_INVALID_ARGUMENT,
                        fmt::format("invalid query: {}: {}", name, *why),
                        {field_violation(name, *why)}};
  }
  return std::nullopt;
}

ApiFailure failure_of(error_code ec, const ValidationError& error, std::string_view fallback) {
  ApiFailure f;
  if (ec == errc::not_found) f.code = v1::API_ERROR_CODE_NOT_FOUND;
  else if (ec == errc::conflict) f.code = v1::API_ERROR_CODE_CONFLICT;
  else if (ec == errc::invalid_argument || ec == errc::never_fires || ec == errc::unknown_time_zone)
    f.code = v1::API_ERROR_CODE_INVALID_ARGUMENT;
  else if (ec == errc::store_failed || ec == errc::store_unavailable) f.code = v1::API_ERROR_CODE_UNAVAILABLE;
  else if (ec == errc::fenced) {
    // A standby (or a leader that just lost its lease): the reason names the leader.
    f.code = v1::API_ERROR_CODE_NOT_LEADER;
    f.message = !error.reason.empty() ? error.reason : !fallback.empty() ? std::string(fallback) : ec.message();
    return f;
  } else f.code = v1::API_ERROR_CODE_INTERNAL;
  f.message = !error.reason.empty() ? error.message() : !fallback.empty() ? std::string(fallback) : ec.message();
  if (!error.field.empty() || !error.reason.empty()) f.add_violation(error.field, error.reason);
  return f;
}

}  // namespace quartzflow::detail
