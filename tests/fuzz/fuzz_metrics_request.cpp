// SPDX-License-Identifier: Apache-2.0
// Fuzzes the head parser of qf-agent's /metrics endpoint (src/metrics/metrics_request.hpp):
// any bytes are decided without crashing; a decision other than `incomplete` made on a prefix
// is the decision on the whole input (the server acts on the first one); `metrics` only for a
// complete GET of /metrics.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "metrics/metrics_request.hpp"

namespace {

using quartzflow::detail::MetricsRequest;
using quartzflow::detail::parse_metrics_request;

[[noreturn]] void fail(const char* what, std::string_view text) {
  std::fprintf(stderr, "invariant broken: %s for %zu bytes\n", what, text.size());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), std::min<std::size_t>(size, 16 * 1024));
  const auto whole = parse_metrics_request(input);
  if (whole == MetricsRequest::metrics &&
      (input.rfind("GET /metrics", 0) != 0 || input.find("\r\n\r\n") == std::string_view::npos))
    fail("metrics without a complete GET /metrics", input);
  // The server reads in pieces: a prefix's decision must not change with the bytes after it.
  const std::size_t checked = std::min<std::size_t>(input.size(), 512);
  for (std::size_t k = 0; k <= checked; ++k) {
    const auto early = parse_metrics_request(input.substr(0, k));
    if (early != MetricsRequest::incomplete && early != whole) fail("a decision changed with more bytes", input);
  }
  return 0;
}
