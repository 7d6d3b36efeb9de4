// SPDX-License-Identifier: Apache-2.0
// A PostgreSQL server for the tests of one binary run (tests/pg/pg_server.sh): started on
// first use, stopped and removed at exit (a watchdog process stops it if the binary dies),
// Unix socket only. Each test asks for a database of its own.
#pragma once

#include <string>

namespace quartzflow::testing {

/**
 * The DSN of a new, empty database on the test server (`CREATE DATABASE t_<n>`). Throws
 * std::runtime_error, with the reason, when the server cannot start (the PostgreSQL server
 * binaries missing included): a PostgreSQL test fails then, it is never skipped.
 */
std::string postgres_test_database();

/// Runs `sql` (any statements) on the database of `dsn` as the superuser; throws
/// std::runtime_error with the server's message on failure. For fault injection.
void postgres_exec(const std::string& dsn, const std::string& sql);

}  // namespace quartzflow::testing
