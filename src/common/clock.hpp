// SPDX-License-Identifier: Apache-2.0
// The wall clock as the records hold it: milliseconds since the Unix epoch.
#pragma once

#include <chrono>
#include <cstdint>

namespace quartzflow::detail {

/// Now, in milliseconds since 1970-01-01T00:00:00Z (the system clock: it may step).
inline std::int64_t now_unix_ms() noexcept {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace quartzflow::detail
