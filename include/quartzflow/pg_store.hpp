// SPDX-License-Identifier: Apache-2.0
// The coordinator's Store on PostgreSQL (libpq): the same interface and semantics as the
// SQLite store, for a coordinator whose catalog and history live in a database server.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include <quartzflow/store.hpp>

namespace quartzflow {

/**
 * How to reach the database. TLS is libpq's: `sslmode=verify-full sslrootcert=/path/ca.pem`
 * (and `sslcert=`/`sslkey=` for a client certificate) in the DSN. The password is never
 * logged nor put in error details (a DSN is shown with `password=***`).
 */
struct PostgresStoreOptions {
  /// libpq connection string (`host=db.example.com dbname=quartzflow user=qf sslmode=verify-full`)
  /// or URI (`postgresql://qf@db.example.com/quartzflow`). Empty: libpq's defaults (PGHOST, ...).
  std::string dsn;
  /// A file whose first line is the password. Empty: the environment's QF_PG_PASSWORD, else
  /// libpq's own (a password in the DSN, PGPASSWORD, ~/.pgpass).
  std::string password_file;
  std::chrono::milliseconds max_batch_delay{1};         ///< how long a commit waits for companions
  /// A commit takes no further transactions once its batch has run this long (the rest wait
  /// for the next commit), so that the lease renewal waits for one short batch at most.
  std::chrono::milliseconds max_batch_duration{200};
  std::chrono::milliseconds connect_timeout{10'000};    ///< per connection attempt (libpq rounds to s, >= 2 s)
  std::chrono::milliseconds statement_timeout{30'000};  ///< the server cancels a statement running longer
  /**
   * The server ends a connection that leaves a transaction open without sending anything
   * for longer (its transaction rolls back, its row locks are released). A coordinator
   * paused mid-transaction (SIGSTOP, a VM freeze) would otherwise hold the lease row's lock
   * and block the takeover for as long as it sleeps. Keep it under the lease TTL; 0 = off.
   */
  std::chrono::milliseconds idle_in_transaction_timeout{1'000};
  /// The schema the tables live in (created by the first migration); empty = the user's
  /// search_path (normally `public`).
  std::string schema;
};

/**
 * Opens a PostgreSQL store: connects twice (a writer and a reader connection), creates or
 * migrates the tables, and starts the store's threads. nullptr with `ec` and `detail` on
 * failure: errc::store_unavailable when the server cannot be reached, errc::store_version
 * for a database newer than this build, errc::invalid_argument for an unreadable
 * password file, errc::store_failed otherwise.
 *
 * The Store's semantics are the SQLite store's (store.hpp): group commit with a savepoint
 * per transaction, reads in their own REPEATABLE READ, READ ONLY transactions on the second
 * connection. A connection lost fails the batch (or read) it happened in with
 * errc::store_unavailable; the next one connects again (and a batch whose BEGIN finds the
 * connection gone reconnects once at once).
 */
std::unique_ptr<Store> open_postgres_store(boost::asio::any_io_executor executor, PostgresStoreOptions options,
                                           error_code& ec, std::string* detail = nullptr);
/// The same, throwing `quartzflow::error` (with the detail) on failure.
inline std::unique_ptr<Store> open_postgres_store(boost::asio::any_io_executor executor, PostgresStoreOptions options) {
  return value_or_throw(
      [&](error_code& ec, std::string& detail) { return open_postgres_store(executor, options, ec, &detail); });
}

}  // namespace quartzflow
