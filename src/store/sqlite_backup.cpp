// SPDX-License-Identifier: Apache-2.0
// An online, consistent copy of the coordinator's SQLite store (SQLite's backup API over a
// read connection of its own: one read transaction, a snapshot; WAL lets the store write on).
#include <sqlite3.h>
#include <sys/stat.h>

#include <filesystem>

#include <fmt/format.h>

#include <quartzflow/store.hpp>

#include "../sqlite/sqlite.hpp"

namespace quartzflow {

error_code backup_sqlite_store(const std::string& database_file, const std::string& to_file, std::string* detail) {
  const auto fail = [&](std::string why) {
    if (detail) *detail = std::move(why);
    std::error_code ignored;
    std::filesystem::remove(to_file, ignored);
    return error_code(errc::store_failed);
  };
  error_code ec;
  std::string why;
  auto source = detail::SqliteDatabase::open(database_file, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, ec, &why);
  if (!source) return fail(fmt::format("cannot open {}: {}", database_file, why));
  std::error_code fs_error;
  std::filesystem::remove(to_file, fs_error);
  auto target =
      detail::SqliteDatabase::open(to_file, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, ec, &why);
  if (!target) return fail(fmt::format("cannot create {}: {}", to_file, why));
  ::chmod(to_file.c_str(), 0600);  // it holds password hashes and sealed secrets
  sqlite3_backup* backup = sqlite3_backup_init(target.get(), "main", source.get(), "main");
  if (!backup) return fail(fmt::format("backup of {}: {}", database_file, target.error_message()));
  // All pages in one step: one read transaction, so the copy is one consistent snapshot.
  const int stepped = sqlite3_backup_step(backup, -1);
  const int finished = sqlite3_backup_finish(backup);
  if (stepped != SQLITE_DONE || finished != SQLITE_OK)
    return fail(
        fmt::format("backup of {}: {}", database_file, sqlite3_errstr(stepped != SQLITE_DONE ? stepped : finished)));
  // The copy is a single file: no WAL to carry along.
  if (!target.exec("PRAGMA journal_mode = DELETE", ec))
    return fail(fmt::format("{}: {}", to_file, target.error_message()));
  return {};
}

}  // namespace quartzflow
