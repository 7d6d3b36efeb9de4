// SPDX-License-Identifier: Apache-2.0
// Keeps the error lines a test provokes on purpose out of its output.
#pragma once

#include <quartzflow/log.hpp>

namespace quartzflow::testing {

/// Turns the library's logger off for its lifetime, then restores its level.
struct QuietLog {
  spdlog::level::level_enum saved = logger()->level();
  QuietLog() { logger()->set_level(spdlog::level::off); }
  ~QuietLog() { logger()->set_level(saved); }
  QuietLog(const QuietLog&) = delete;
  QuietLog& operator=(const QuietLog&) = delete;
};

}  // namespace quartzflow::testing
