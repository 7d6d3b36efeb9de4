// SPDX-License-Identifier: Apache-2.0
// Coordinator store migrations on PostgreSQL, tracked in a schema_version table.
#pragma once

#include <string>

#include "pg.hpp"

namespace quartzflow::detail {

/// The schema version this build writes.
int postgres_store_schema_version() noexcept;

/**
 * Brings the database (the connection's search_path; `schema` is created when not empty)
 * to this build's version in one transaction under an advisory lock, so that two
 * coordinators starting together migrate once. A newer database fails with
 * errc::store_version; any failure leaves it as it was, with `detail` saying why.
 */
bool migrate_postgres_store(PgConnection& connection, const std::string& schema, error_code& ec, std::string* detail);

}  // namespace quartzflow::detail
