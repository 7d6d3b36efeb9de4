// SPDX-License-Identifier: Apache-2.0
// Small RAII wrappers over the SQLite C API: a connection, a prepared statement and a
// transaction that rolls back unless committed. Errors become errc::store_failed + a log line.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <quartzflow/error.hpp>

struct sqlite3;
struct sqlite3_stmt;

namespace quartzflow::detail {

class SqliteStatement;

/// One SQLite connection. Not thread-safe: one thread at a time (opened NOMUTEX).
class SqliteDatabase {
 public:
  SqliteDatabase() = default;
  ~SqliteDatabase();
  SqliteDatabase(SqliteDatabase&& other) noexcept;
  SqliteDatabase& operator=(SqliteDatabase&& other) noexcept;
  SqliteDatabase(const SqliteDatabase&) = delete;
  SqliteDatabase& operator=(const SqliteDatabase&) = delete;

  /// Opens `path` with SQLITE_OPEN_* `flags`; on failure `ec` = store_failed and `detail`
  /// holds SQLite's message.
  static SqliteDatabase open(const std::string& path, int flags, error_code& ec, std::string* detail);

  explicit operator bool() const noexcept { return db_ != nullptr; }
  sqlite3* get() const noexcept { return db_; }

  /// Runs one or more statements without results; false with `ec` on failure.
  bool exec(const std::string& sql, error_code& ec);
  /// Prepares one statement; an empty statement with `ec` on failure. `persistent` hints
  /// that the statement is kept for the life of the connection.
  SqliteStatement prepare(std::string_view sql, error_code& ec, bool persistent = false);
  /// Runs a statement returning one integer (`PRAGMA user_version`, `SELECT COUNT(*)`).
  std::int64_t query_int(const std::string& sql, error_code& ec);

  /// Rows changed by the last INSERT, UPDATE or DELETE.
  std::int64_t changes() const noexcept;
  /// SQLite's message for the last error on this connection.
  std::string error_message() const;

 private:
  explicit SqliteDatabase(sqlite3* db) noexcept : db_(db) {}
  sqlite3* db_ = nullptr;
};

/// A prepared statement. Use: reset(), bind..., step() until not SQLITE_ROW.
class SqliteStatement {
 public:
  SqliteStatement() = default;
  SqliteStatement(sqlite3* db, sqlite3_stmt* stmt) noexcept : db_(db), stmt_(stmt) {}
  ~SqliteStatement();
  SqliteStatement(SqliteStatement&& other) noexcept;
  SqliteStatement& operator=(SqliteStatement&& other) noexcept;
  SqliteStatement(const SqliteStatement&) = delete;
  SqliteStatement& operator=(const SqliteStatement&) = delete;

  explicit operator bool() const noexcept { return stmt_ != nullptr; }

  /// Makes the statement ready to run again and clears its bindings.
  SqliteStatement& reset() noexcept;

  // Parameters are 1-based; text and blobs are copied by SQLite.
  SqliteStatement& bind(int index, std::int64_t value) noexcept;
  SqliteStatement& bind(int index, std::string_view text) noexcept;
  SqliteStatement& bind_blob(int index, std::string_view bytes) noexcept;
  SqliteStatement& bind_null(int index) noexcept;

  /// Runs one step: true with a row ready, false when done or failed (then `ec` is set).
  bool step(error_code& ec);
  /// Runs to completion, ignoring rows; false with `ec` on failure.
  bool run(error_code& ec);

  // Columns are 0-based.
  bool is_null(int column) const noexcept;
  std::int64_t int64(int column) const noexcept;
  std::string text(int column) const;
  std::string_view blob(int column) const noexcept;

 private:
  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
  int bind_status_ = 0;  // the first failed bind, reported by the next step
};

/// `BEGIN IMMEDIATE` ... `COMMIT`; rolls back in its destructor unless committed.
class SqliteTransaction {
 public:
  SqliteTransaction(SqliteDatabase& db, error_code& ec);
  ~SqliteTransaction();
  SqliteTransaction(const SqliteTransaction&) = delete;
  SqliteTransaction& operator=(const SqliteTransaction&) = delete;

  bool active() const noexcept { return active_; }
  bool commit(error_code& ec);

 private:
  SqliteDatabase& db_;
  bool active_ = false;
};

/// The last SQLite failure on the calling thread (any connection), kept so that a caller
/// can tell a full disk (SQLITE_FULL) from other failures after the statement is gone.
struct SqliteFailure {
  int code = 0;         ///< extended result code; 0 = none since the last reset
  std::string message;  ///< SQLite's message, e.g. `database or disk is full`
};
/// Thread safety: per thread (thread-local).
SqliteFailure& last_sqlite_failure() noexcept;
/// While true on the calling thread, failures are logged at debug level, not error: for a
/// caller that already said loudly that the same failure is going on (a full disk).
void set_sqlite_failures_quiet(bool quiet) noexcept;

/// One step of a schema: the SQL that brings a database to `version`.
struct SchemaStep {
  int version;
  std::string sql;
};

/**
 * Brings `db` to the last step's version in one transaction, tracked by PRAGMA
 * user_version. A database newer than this build fails with errc::store_version; any
 * failure leaves the database as it was, with `detail` saying which step failed.
 */
bool migrate_schema(SqliteDatabase& db, const std::vector<SchemaStep>& steps, error_code& ec, std::string* detail);

}  // namespace quartzflow::detail
