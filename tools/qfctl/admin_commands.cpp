// SPDX-License-Identifier: Apache-2.0
// `qfctl admin backup FILE`: an online, consistent copy of the coordinator's store (SQLite)
// through the admin API, written 0600; PostgreSQL answers with the pg_dump command to run.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>

#include <fmt/format.h>

#include "api.hpp"
#include "commands.hpp"

namespace qfctl {
namespace {

constexpr std::uint64_t k_max_backup_bytes = 16ull << 30;  // the copy is held in memory on both sides
constexpr std::string_view k_sqlite_header{"SQLite format 3\0", 16};

void run_backup(const ApiFlags& flags, const std::string& file) {
  auto api = ApiClient::from_flags(flags);
  const auto bytes = api.download("/admin/backup", k_max_backup_bytes);
  if (bytes.size() < 100 || std::string_view(bytes).substr(0, k_sqlite_header.size()) != k_sqlite_header)
    throw CommandFailure{k_exit_failure, fmt::format("the coordinator's answer ({} bytes) is not a SQLite database; "
                                                     "nothing was written",
                                                     bytes.size())};
  // Written beside the target and renamed: FILE is either the whole copy or untouched.
  const std::string partial = file + ".partial";
  const int fd = ::open(partial.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw CommandFailure{k_exit_failure, fmt::format("{}: {}", partial, std::strerror(errno))};
  std::size_t written = 0;
  while (written < bytes.size()) {
    const auto n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = std::strerror(errno);
      ::close(fd);
      ::unlink(partial.c_str());
      throw CommandFailure{k_exit_failure, fmt::format("{}: {}", partial, why)};
    }
    written += static_cast<std::size_t>(n);
  }
  const bool synced = ::fsync(fd) == 0;
  ::close(fd);
  if (!synced || ::rename(partial.c_str(), file.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(partial.c_str());
    throw CommandFailure{k_exit_failure, fmt::format("{}: {}", file, why)};
  }
  std::cout << fmt::format(
      "wrote {} ({} bytes): a consistent copy of the coordinator's store\n"
      "restore: stop qf-coordinator, replace its data_dir/coordinator.db with this file (remove "
      "coordinator.db-wal and -shm), keep alert-secret.key, start it\n",
      file, bytes.size());
}

}  // namespace

void add_admin_commands(CLI::App& app) {
  auto* admin = app.add_subcommand("admin", "administration of the coordinator (admin API)");
  admin->require_subcommand(1);
  auto flags = std::make_shared<ApiFlags>();
  add_api_flags(*admin, *flags);
  admin->fallthrough();
  auto file = std::make_shared<std::string>();
  auto* backup =
      admin->add_subcommand("backup", "an online, consistent copy of the coordinator's store (SQLite) to FILE");
  backup->add_option("file", *file, "where to write the copy (mode 0600)")->required();
  backup->callback([flags, file] { run_backup(*flags, *file); });
}

}  // namespace qfctl
