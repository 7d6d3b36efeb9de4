// SPDX-License-Identifier: Apache-2.0
// The admin API without a socket: requests and responses as plain values, the JSON body
// conventions, and the route table the HTTP server, the OpenAPI document and the tests share.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <google/protobuf/message.h>

#include <quartzflow/auth.hpp>
#include <quartzflow/error.hpp>
#include <quartzflow/v1/admin.pb.h>

namespace quartzflow::detail {

/// One HTTP request as the router sees it (the server has already enforced the limits).
struct ApiRequest {
  std::string method;                               ///< GET, POST, PUT, DELETE
  std::string path;                                 ///< as sent (percent-encoded), no query
  std::vector<std::pair<std::string, std::string>> query;  ///< decoded, in order
  std::string body;
  std::string content_type;
  std::string authorization;                        ///< the Authorization header
  std::string cookie;                               ///< the Cookie header
  std::string user_agent;
  std::string origin;                               ///< the Origin header, when sent
  std::string host;                                 ///< the Host header
  std::string peer_ip;
  std::string request_id;
  bool secure = false;                              ///< arrived over TLS (cookies get Secure)
};

struct ApiResponse {
  unsigned status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  ///< extra, e.g. Set-Cookie
};

using ApiReply = std::function<void(ApiResponse)>;

/// `{"code":N,"message":"...","details":[{"field":"...","reason":"..."}],"request_id":"..."}`:
/// the failure's violations are the details.
ApiResponse error_response(const ApiFailure& failure, std::string_view request_id);
/// `{"code":0,"data":<message as JSON>}` with the given status.
ApiResponse data_response(const google::protobuf::Message& data, unsigned status = 200);
/// `{"code":0,"data":<json>}` around JSON text already made.
ApiResponse raw_data_response(std::string_view json, unsigned status = 200);

/// Percent-decoding; `plus_is_space` for query strings. nullopt on a broken escape or NUL.
std::optional<std::string> percent_decode(std::string_view in, bool plus_is_space);

/// Protobuf JSON with proto field names and every field printed (defaults too).
std::string to_json(const google::protobuf::Message& message);
/// Why a state-changing request (not GET, HEAD or OPTIONS) from a browser page of another
/// origin is refused: its `Origin` is not this server's own (scheme://Host). nullopt when
/// allowed, also when no Origin was sent (qfctl, curl). Besides SameSite=Strict cookies and
/// the JSON content type, this stops cross-site request forgery.
std::optional<std::string> cross_origin_problem(const ApiRequest& request);

/// The most elements any repeated field or map of a request body may hold; the objects'
/// own rules are tighter (a task's lists: see validate_task).
inline constexpr std::size_t k_max_body_list_elements = 10000;
/// Parses a JSON body into `out` (unknown fields, invalid UTF-8 and lists over
/// k_max_body_list_elements refused). nullopt when valid.
std::optional<ApiFailure> parse_body(std::string_view body, google::protobuf::Message& out);
/// Fills `out` from query parameters named like its fields: scalars, enums (full value name,
/// the name without its prefix, any case, or the number), bools, repeated fields by
/// repetition. Unknown names and bad values are refused naming the parameter.
std::optional<ApiFailure> parse_query(const std::vector<std::pair<std::string, std::string>>& query,
                                      google::protobuf::Message& out);

/// Another name a query parameter is accepted under, so a client written from the
/// requirements' section 8 works unchanged (`client_id` for `agent_id`). A `time` alias of an
/// int64 unix-ms field also takes RFC 3339 text (`2025-01-10T02:00:00Z`).
struct QueryAlias {
  std::string_view message;  ///< full name of the request message
  std::string_view alias;    ///< the other name
  std::string_view field;    ///< the field it sets
  bool time = false;
};
/// Every alias parse_query accepts (listed in the OpenAPI document too).
const std::vector<QueryAlias>& query_aliases();
/// A library error (errc + ValidationError) as an API failure.
ApiFailure failure_of(error_code ec, const ValidationError& error, std::string_view fallback = {});

}  // namespace quartzflow::detail
