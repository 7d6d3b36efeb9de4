// SPDX-License-Identifier: Apache-2.0
// The LocalStore schema and its migrations, tracked by `PRAGMA user_version`.
#pragma once

#include <string>

#include "../sqlite/sqlite.hpp"

namespace quartzflow::detail {

/// The schema version this build reads and writes.
int local_store_schema_version() noexcept;

/// Brings a writable store to the current version in one transaction. Fails with
/// errc::store_version when the file was written by a newer build.
bool migrate_local_store(SqliteDatabase& db, error_code& ec, std::string* detail);

/// The `h00, h01, ... h23` column list of daily_stats (runs by local start hour).
const std::string& hour_columns();

}  // namespace quartzflow::detail
