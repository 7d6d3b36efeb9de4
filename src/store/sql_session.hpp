// SPDX-License-Identifier: Apache-2.0
// The seam between the coordinator store's queries (one StoreTransaction, sql_transaction.hpp)
// and a database: a connection that prepares and caches statements, and a statement that
// binds, steps and reads columns. SQLite (src/store/sqlite_session.*) and PostgreSQL
// (src/pg_store/pg_session.*) implement it; the SQL the queries write runs on both.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "store_rules.hpp"  // SqlValue

namespace quartzflow::detail {

/**
 * How a database differs where the shared SQL cannot hide it. The SQL itself is written in
 * the dialect both understand: `?` or `?N` placeholders (PostgreSQL's session numbers
 * them `$N`), `ON CONFLICT` upserts, `lower(x) LIKE ? ESCAPE '\'` keywords, CASE inside
 * aggregates, aliased subqueries, and an insertion order column named `rowid`.
 */
struct SqlDialect {
  /// Where NULLs sort by default: SQLite puts them first ascending, PostgreSQL last.
  bool nulls_sort_high = false;
  /// The database's clock in unix ms, as an SQL expression: the leader lease's clock, so the
  /// coordinators' own clocks never decide who leads (PostgreSQL:
  /// `CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)`).
  const char* now_unix_ms_sql = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";
  /// Appended to the SELECT of the lease row before a takeover decision (PostgreSQL:
  /// ` FOR UPDATE`) and in a fencing check (PostgreSQL: ` FOR SHARE`, held to the commit, so
  /// a takeover's UPDATE waits for the fire transactions that checked the old epoch). SQLite
  /// has one writer: none needed.
  const char* lock_for_update = "";
  const char* lock_for_share = "";
  /// Run before numbering a config version: makes concurrent bumps wait for each other's
  /// commit (PostgreSQL: a transaction-scoped advisory lock). SQLite has one writer: none.
  const char* serialize_config_versions_sql = "";
  /// Whether a database trigger appends to `execution_changes` on every insert or update of
  /// an execution (PostgreSQL: no round trip more per upsert). SQLite's upsert appends it
  /// itself: a trigger there makes each upsert a two-table statement with a statement journal,
  /// about 8 times the writer's CPU per record in a batch of 1,000 (measured: 120 against 15 us).
  bool execution_changes_by_trigger = false;
};

/**
 * A prepared statement of a SqlSession, cached by it. Use: bind, next() until false (the
 * first call runs it), reset(). Parameters are 1-based, columns 0-based. Every failure
 * throws quartzflow::error (store_failed, store_unavailable when the connection is gone,
 * conflict on a unique violation). Text and blobs are copied at bind.
 */
class SqlStatement {
 public:
  virtual ~SqlStatement() = default;
  /// Ready to run again, bindings cleared; never throws.
  virtual void reset() noexcept = 0;
  virtual void bind(int index, std::int64_t value) = 0;
  virtual void bind(int index, std::string_view text) = 0;
  virtual void bind_blob(int index, std::string_view bytes) = 0;
  virtual void bind_null(int index) = 0;
  /// Runs (on the first call) or advances: true with a row ready, false when done.
  virtual bool next() = 0;
  /// Rows the statement inserted, updated or deleted (after it ran).
  virtual std::int64_t changes() const = 0;
  virtual bool is_null(int column) const = 0;
  virtual std::int64_t int64(int column) const = 0;
  virtual std::string text(int column) const = 0;
  /// Valid until the next call of next() or reset().
  virtual std::string_view blob(int column) const = 0;
};

/// A connection's statement cache, for one thread at a time.
class SqlSession {
 public:
  virtual ~SqlSession() = default;
  virtual const SqlDialect& dialect() const noexcept = 0;
  /// The cached statement of `sql`, prepared on first use; throws store_failed.
  virtual SqlStatement& statement(std::string_view sql) = 0;
  /// Called between transactions: bounds the cache (list queries vary by filter).
  virtual void trim_statement_cache() = 0;
  /// Changes whenever cached statements were dropped (a trim, a reconnect): references
  /// from statement() taken before are gone.
  virtual std::uint64_t cache_generation() const noexcept = 0;
};

/// A cached statement borrowed for one use: reset when it goes out of scope, so nothing
/// stays open across a savepoint rollback or a commit.
class BorrowedStatement {
 public:
  explicit BorrowedStatement(SqlStatement& statement) noexcept : statement_(statement) { statement_.reset(); }
  ~BorrowedStatement() { statement_.reset(); }
  BorrowedStatement(const BorrowedStatement&) = delete;
  BorrowedStatement& operator=(const BorrowedStatement&) = delete;

  BorrowedStatement& bind(int index, std::int64_t value) {
    statement_.bind(index, value);
    return *this;
  }
  BorrowedStatement& bind(int index, std::string_view text) {
    statement_.bind(index, text);
    return *this;
  }
  BorrowedStatement& bind_blob(int index, std::string_view bytes) {
    statement_.bind_blob(index, bytes);
    return *this;
  }
  BorrowedStatement& bind_optional(int index, std::optional<std::int64_t> value) {
    if (value) statement_.bind(index, *value);
    else statement_.bind_null(index);
    return *this;
  }
  /// Binds `values` from `first` on; returns the next free index.
  int bind_all(const std::vector<SqlValue>& values, int first = 1);

  /// Steps once: true with a row ready, false when done.
  bool next() { return statement_.next(); }
  /// Runs to completion; returns the rows it changed.
  std::int64_t run();

  bool is_null(int column) const { return statement_.is_null(column); }
  std::int64_t int64(int column) const { return statement_.int64(column); }
  std::string text(int column) const { return statement_.text(column); }
  std::string_view blob(int column) const { return statement_.blob(column); }

 private:
  SqlStatement& statement_;
};

}  // namespace quartzflow::detail
