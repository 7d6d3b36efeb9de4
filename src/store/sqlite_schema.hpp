// SPDX-License-Identifier: Apache-2.0
// The coordinator store's schema and its migrations, tracked by `PRAGMA user_version`.
#pragma once

#include <string>

#include "../sqlite/sqlite.hpp"

namespace quartzflow::detail {

/// The schema version this build reads and writes.
int coordinator_store_schema_version() noexcept;

/// Brings a writable store to the current version in one transaction. Fails with
/// errc::store_version when the file was written by a newer build.
bool migrate_coordinator_store(SqliteDatabase& db, error_code& ec, std::string* detail);

}  // namespace quartzflow::detail
