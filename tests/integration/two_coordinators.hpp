// SPDX-License-Identifier: Apache-2.0
// Set-up for tests with a second coordinator in the Cluster's process: coordinator A on the
// Cluster's SQLite file or on a PostgreSQL database, and B with a store connection of its own.
#pragma once

#include <memory>
#include <string>

#include <catch2/catch.hpp>

#include <quartzflow/pg_store.hpp>

#include "../unit/pg_server.hpp"
#include "cluster.hpp"

/// Runs the test case once on the Cluster's SQLite file and once on PostgreSQL; declares
/// `const bool postgres`.
#define QUARTZFLOW_FOR_EACH_STORE()            \
  const bool postgres = GENERATE(false, true); \
  INFO("store: " << (postgres ? "PostgreSQL" : "SQLite file"))

namespace quartzflow::testing {

/// A store connection of its own to the PostgreSQL database `dsn`.
inline std::unique_ptr<Store> open_postgres_connection(Cluster& c, const std::string& dsn) {
  PostgresStoreOptions options;
  options.dsn = dsn;
  return open_postgres_store(c.io.get_executor(), options);
}

/// Starts `coordinator` on the Cluster's io_context and waits until it has started.
inline void start_coordinator(Cluster& c, Coordinator& coordinator) {
  bool started = false;
  coordinator.start([&](error_code ec) {
    REQUIRE_FALSE(ec);
    started = true;
  });
  REQUIRE(c.run_until([&] { return started; }));
}

/// Cluster::open_coordinator (with c.options), on the Cluster's SQLite file or, with
/// `postgres`, on a fresh database of the tests' PostgreSQL server. Returns that database's
/// DSN, empty on the file.
inline std::string open_coordinator_a(Cluster& c, bool postgres) {
  if (!postgres) {
    c.open_coordinator();
    return {};
  }
  std::string dsn = postgres_test_database();
  c.store = open_postgres_connection(c, dsn);
  c.coordinator = std::make_unique<Coordinator>(c.io.get_executor(), *c.store, c.options);
  c.coordinator->on_execution([&c](const v1::Execution& r) { c.ingested.push_back(r); });
  start_coordinator(c, *c.coordinator);
  c.network.listen("coordinator", [&c](std::shared_ptr<Connection> connection) {
    if (c.coordinator) c.coordinator->accept(std::move(connection));
  });
  return dsn;
}

/// A second connection to coordinator A's store: the PostgreSQL database `dsn`, or the
/// Cluster's SQLite file when `dsn` is empty.
inline std::unique_ptr<Store> open_second_store(Cluster& c, const std::string& dsn) {
  return dsn.empty() ? open_sqlite_store(c.io.get_executor(), SqliteStoreOptions{c.dir.file("coordinator.db")})
                     : open_postgres_connection(c, dsn);
}

/// Coordinator B on `store` with `options`, started.
inline std::unique_ptr<Coordinator> start_second_coordinator(Cluster& c, Store& store,
                                                             const CoordinatorOptions& options) {
  auto b = std::make_unique<Coordinator>(c.io.get_executor(), store, options);
  start_coordinator(c, *b);
  return b;
}

}  // namespace quartzflow::testing
