// SPDX-License-Identifier: Apache-2.0
// What both daemons do as services: the log file from `log:`, readiness for systemd
// (Type=notify), and the version they announce.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <quartzflow/log.hpp>
#include <quartzflow/v1/config.pb.h>
#include <quartzflow/version.hpp>

namespace quartzflow::examples {

/// Sends the log to `log.file` too (relative to `base`), rotated by size; stderr only when
/// it is empty. Empty on success, else `log.<field>: <reason>`.
inline std::string start_log_file(const v1::LogConfig& log, const std::filesystem::path& base) {
  if (log.file().empty()) {
    if (log.max_size_mb() != 0 || log.max_files() != 0)
      return "log.file: is required with log.max_size_mb or log.max_files";
    return {};
  }
  if (log.max_size_mb() > 1'048'576)
    return "log.max_size_mb: " + std::to_string(log.max_size_mb()) + " is above 1048576";
  LogFileOptions options;
  options.path = (base / log.file()).lexically_normal().string();
  if (log.max_size_mb() > 0) options.max_size_bytes = std::size_t{log.max_size_mb()} << 20;
  if (log.max_files() > 0) options.max_files = log.max_files();
  error_code ec;
  std::string detail;
  log_to_file(options, ec, &detail);
  if (!ec) return {};
  return detail.empty() ? "log.file: " + options.path + ": " + ec.message() : detail + " (" + options.path + ")";
}

/// Reads and removes $NOTIFY_SOCKET (set by systemd for Type=notify), so the commands the
/// agent runs do not inherit it. Call first in main, before any thread exists.
inline std::string take_notify_socket() {
  const char* socket_path = std::getenv("NOTIFY_SOCKET");
  std::string taken = socket_path != nullptr ? socket_path : "";
  ::unsetenv("NOTIFY_SOCKET");
  return taken;
}

/**
 * Tells systemd the service is ready (`READY=1` and `STATUS=<status>`). The sd_notify
 * protocol is one datagram to the unix socket systemd named in $NOTIFY_SOCKET (a leading
 * `@` names an abstract socket), so no libsystemd is needed. Does nothing when
 * `socket_path` is empty (not started by systemd).
 */
inline void notify_ready(const std::string& socket_path, std::string_view status) {
  sockaddr_un address{};
  if (socket_path.empty() || socket_path.size() >= sizeof address.sun_path) return;
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, socket_path.data(), socket_path.size());
  if (address.sun_path[0] == '@') address.sun_path[0] = '\0';
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  const std::string message = "READY=1\nSTATUS=" + std::string(status);
  (void)::sendto(fd, message.data(), message.size(), MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&address),
                 static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket_path.size()));
  ::close(fd);
}

/// The version announced to the other side of the agent protocol: this build's, or, for
/// the version-skew tests only, $QUARTZFLOW_TEST_ANNOUNCED_VERSION (`--version` is unchanged).
inline std::string announced_version() {
  const char* override_version = std::getenv("QUARTZFLOW_TEST_ANNOUNCED_VERSION");
  return override_version != nullptr && override_version[0] != '\0' ? override_version : version;
}

}  // namespace quartzflow::examples
