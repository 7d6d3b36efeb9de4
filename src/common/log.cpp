// SPDX-License-Identifier: Apache-2.0
// The library logger: one spdlog logger, replaceable by the host.
#include <cerrno>
#include <cstdio>
#include <mutex>

#include <sys/stat.h>

#include <spdlog/sinks/rotating_file_sink.h>
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

void log_to_file(const LogFileOptions& options, error_code& ec, std::string* detail) {
  const auto invalid = [&](std::string why) {
    ec = errc::invalid_argument;
    if (detail) *detail = std::move(why);
  };
  if (options.path.empty()) return invalid("log.file: is empty");
  if (options.max_size_bytes == 0) return invalid("log.max_size_mb: must be at least 1");
  if (options.max_files == 0 || options.max_files > 1000)
    return invalid("log.max_files: " + std::to_string(options.max_files) + " is out of range 1-1000");
  spdlog::file_event_handlers handlers;
  // The current file and each one a rotation opens: 0640 whatever the umask.
  handlers.after_open = [](const spdlog::filename_t&, std::FILE* file) { (void)::fchmod(::fileno(file), 0640); };
  std::shared_ptr<spdlog::sinks::rotating_file_sink_mt> file_sink;
  errno = 0;
  try {
    file_sink = std::make_shared<spdlog::sinks::rotating_file_sink_mt>(options.path, options.max_size_bytes,
                                                                       options.max_files, false, handlers);
  } catch (const spdlog::spdlog_ex& e) {
    ec = error_code(errno != 0 ? errno : EIO, boost::system::system_category());
    if (detail) *detail = "log.file: " + std::string(e.what());
    return;
  }
  auto previous = logger();
  auto replacement = std::make_shared<spdlog::logger>(
      "quartzflow", spdlog::sinks_init_list{std::make_shared<spdlog::sinks::stderr_color_sink_mt>(), file_sink});
  replacement->set_level(previous->level());
  replacement->flush_on(spdlog::level::trace);
  set_logger(std::move(replacement));
  ec = {};
}

void log_to_file(const LogFileOptions& options) {
  error_code ec;
  std::string detail;
  log_to_file(options, ec, &detail);
  if (ec) throw error(ec, detail.empty() ? ec.message() : detail);
}

}  // namespace quartzflow
