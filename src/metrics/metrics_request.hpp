// SPDX-License-Identifier: Apache-2.0
// The sans-I/O part of MetricsServer: what the head of a request asks, decided from the bytes
// received so far (tested directly and fuzzed: tests/fuzz/fuzz_metrics_request.cpp).
#pragma once

#include <string_view>

namespace quartzflow::detail {

/// What the bytes of a request received so far ask.
enum class MetricsRequest {
  incomplete,  ///< no blank line yet: read more (up to the size limit)
  metrics,     ///< GET /metrics (a query string is ignored)
  not_found,   ///< GET of another path
  bad_method,  ///< a method other than GET
  malformed,   ///< not an HTTP/1.x request: close without an answer
};

/**
 * Decides from `received` (the start of a connection's bytes). Any answer but `incomplete`
 * stays the same whatever bytes follow, so a caller may act on the first one; bytes after
 * the head's blank line are not looked at.
 */
MetricsRequest parse_metrics_request(std::string_view received);

}  // namespace quartzflow::detail
