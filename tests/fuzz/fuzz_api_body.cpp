// SPDX-License-Identifier: Apache-2.0
// Fuzzes the admin API's request path up to the router, without a socket. Input starting
// with '/' is a request target: path segments are percent-decoded and the query fills list
// requests (parse_query), as http_server.cpp and the routes do. Anything else is a JSON body
// for a v1::Task (parse_body, then validate_task when it parses). Every reply (error or data)
// is valid UTF-8 JSON, and a parsed task survives a JSON round trip unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <quartzflow/task.hpp>
#include <quartzflow/v1/admin.pb.h>

#include "admin/api.hpp"
#include "common/utf8.hpp"

namespace qf = quartzflow;
namespace pb = google::protobuf;

namespace {

[[noreturn]] void fail(const char* what, std::string_view detail = {}) {
  std::fprintf(stderr, "invariant broken: %s: %.*s\n", what, static_cast<int>(detail.size()), detail.data());
  std::abort();
}

void check_json(const std::string& body) {
  if (qf::detail::first_invalid_utf8(body) != std::string::npos) fail("a reply that is not UTF-8", body);
  pb::Value value;
  if (!pb::util::JsonStringToMessage(body, &value).ok()) fail("a reply that is not JSON", body);
  if (value.kind_case() != pb::Value::kStructValue) fail("a reply that is not a JSON object", body);
}

void check_failure(const qf::ApiFailure& failure) {
  if (failure.message.empty()) fail("a failure without a message");
  const auto response = qf::detail::error_response(failure, "fuzz-request");
  if (response.status < 400 || response.status > 599) fail("a failure with a non-error status", response.body);
  check_json(response.body);
}

std::string deterministic_bytes(const pb::Message& message) {
  std::string out;
  {
    pb::io::StringOutputStream stream(&out);
    pb::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    (void)message.ByteSizeLong();
    message.SerializeWithCachedSizes(&coded);
  }
  return out;
}

template <typename Message>
void check_query(const std::vector<std::pair<std::string, std::string>>& query) {
  Message request;
  if (auto failure = qf::detail::parse_query(query, request)) check_failure(*failure);
  else check_json(qf::detail::data_response(request).body);
}

// The request target as the server splits it (split_target in http_server.cpp).
void check_target(std::string_view target) {
  const auto q = target.find('?');
  std::string_view path = target.substr(0, q);
  while (!path.empty()) {
    const auto slash = path.find('/');
    const auto segment = path.substr(0, slash);
    if (auto decoded = qf::detail::percent_decode(segment, false)) {
      if (decoded->find('\0') != std::string::npos) fail("a decoded segment holds NUL");
      if (decoded->size() > segment.size()) fail("decoding made a segment longer");
    }
    if (slash == std::string_view::npos) break;
    path.remove_prefix(slash + 1);
  }
  if (q == std::string_view::npos) return;
  std::vector<std::pair<std::string, std::string>> query;
  std::string_view rest = target.substr(q + 1);
  while (!rest.empty()) {
    const auto amp = rest.find('&');
    const auto item = rest.substr(0, amp);
    if (!item.empty()) {
      const auto eq = item.find('=');
      auto name = qf::detail::percent_decode(item.substr(0, eq), true);
      auto value = qf::detail::percent_decode(eq == std::string_view::npos ? std::string_view{} : item.substr(eq + 1), true);
      if (!name || !value) return;  // the server answers 400 without reaching the router
      query.emplace_back(std::move(*name), std::move(*value));
    }
    if (amp == std::string_view::npos) break;
    rest.remove_prefix(amp + 1);
  }
  check_query<qf::v1::ListTasksRequest>(query);
  check_query<qf::v1::ListExecutionsRequest>(query);
  check_query<qf::v1::ListAuditRequest>(query);
}

void check_task_body(std::string_view body) {
  qf::v1::Task task;
  if (auto failure = qf::detail::parse_body(body, task)) {
    check_failure(*failure);
    return;
  }
  if (auto problem = qf::validate_task(task)) {
    check_failure(qf::detail::failure_of(make_error_code(qf::errc::invalid_argument), *problem));
    return;
  }
  const auto response = qf::detail::data_response(task, 201);
  check_json(response.body);
  const std::string json = qf::detail::to_json(task);
  qf::v1::Task again;
  if (auto failure = qf::detail::parse_body(json, again)) fail("a task's own JSON does not parse", failure->message);
  if (deterministic_bytes(again) != deterministic_bytes(task)) fail("a task changed on a JSON round trip", json);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > 64 * 1024) return -1;
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  if (!input.empty() && input.front() == '/') check_target(input);
  else check_task_body(input);
  return 0;
}
