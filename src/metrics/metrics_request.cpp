// SPDX-License-Identifier: Apache-2.0
// What the head of a request to MetricsServer asks: GET /metrics, another path, another
// method, or no HTTP/1.x at all.
#include "metrics_request.hpp"

namespace quartzflow::detail {

namespace {

/// A byte no request line or header has (tab, CR and LF aside, handled by the parser).
bool control(char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; }

}  // namespace

MetricsRequest parse_metrics_request(std::string_view received) {
  const auto head_end = received.find("\r\n\r\n");
  // Only the head counts: what follows its blank line never changes the decision.
  const std::string_view head = head_end == std::string_view::npos ? received : received.substr(0, head_end + 2);
  const auto line_end = head.find("\r\n");
  const std::string_view line = line_end == std::string_view::npos ? head : head.substr(0, line_end);
  for (std::size_t i = 0; i < line.size(); ++i)
    if (control(line[i]) && !(line[i] == '\r' && i + 1 == line.size())) return MetricsRequest::malformed;
  for (const char c : head)
    if (control(c) && c != '\r' && c != '\n' && c != '\t') return MetricsRequest::malformed;
  if (line_end == std::string_view::npos) return MetricsRequest::incomplete;
  const auto first_space = line.find(' ');
  const auto last_space = line.rfind(' ');
  if (first_space == std::string_view::npos || first_space == 0 || last_space == first_space)
    return MetricsRequest::malformed;
  const std::string_view method = line.substr(0, first_space);
  const std::string_view target = line.substr(first_space + 1, last_space - first_space - 1);
  const std::string_view version = line.substr(last_space + 1);
  if (version != "HTTP/1.1" && version != "HTTP/1.0") return MetricsRequest::malformed;
  if (target.empty() || target.front() != '/' || target.find(' ') != std::string_view::npos)
    return MetricsRequest::malformed;
  for (const char c : method)
    if (c < 'A' || c > 'Z') return MetricsRequest::malformed;
  if (head_end == std::string_view::npos) return MetricsRequest::incomplete;
  if (method != "GET") return MetricsRequest::bad_method;
  const std::string_view path = target.substr(0, target.find('?'));
  return path == "/metrics" ? MetricsRequest::metrics : MetricsRequest::not_found;
}

}  // namespace quartzflow::detail
