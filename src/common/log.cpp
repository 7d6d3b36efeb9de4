// SPDX-License-Identifier: Apache-2.0
// The library logger: one spdlog logger, replaceable by the host.
#include <mutex>

#include <spdlog/sinks/stdout_color_sinks.h>

#include <quartzflow/log.hpp>

namespace quartzflow {
namespace {

std::mutex logger_mutex;
std::shared_ptr<spdlog::logger>& current() {
  static std::shared_ptr<spdlog::logger> instance = spdlog::stderr_color_mt("quartzflow");
  return instance;
}

}  // namespace

std::shared_ptr<spdlog::logger> logger() {
  std::lock_guard lock(logger_mutex);
  return current();
}

void set_logger(std::shared_ptr<spdlog::logger> replacement) {
  std::lock_guard lock(logger_mutex);
  if (replacement) current() = std::move(replacement);
}

bool set_log_level(std::string_view level) {
  const auto parsed = spdlog::level::from_str(std::string(level));
  if (parsed == spdlog::level::off && level != "off") return false;
  logger()->set_level(parsed);
  return true;
}

}  // namespace quartzflow
