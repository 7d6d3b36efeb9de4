// SPDX-License-Identifier: Apache-2.0
// Small RAII wrappers over libpq: a connection (opened with timeouts, a password that is
// never logged), a result, and errors mapped to quartzflow codes (a lost connection is
// store_unavailable, a unique violation conflict naming its column, the rest store_failed).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include <quartzflow/error.hpp>

struct pg_conn;
struct pg_result;

namespace quartzflow::detail {

/// How to reach the database. `password` is passed to libpq only, never logged.
struct PgConnectOptions {
  std::string dsn;  ///< libpq connection string or URI (host, port, dbname, user, sslmode, ...)
  std::string password;
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds statement_timeout{30'000};
  std::chrono::milliseconds idle_in_transaction_timeout{1'000};
  std::string schema;  ///< search_path; empty = the server's default
};

/// `dsn` with any password replaced by `***` (`password=...` and `user:password@` of a URI).
std::string redact_dsn(std::string_view dsn);

/// An owned PGresult.
class PgResult {
 public:
  PgResult() = default;
  explicit PgResult(pg_result* result) noexcept : result_(result) {}
  ~PgResult();
  PgResult(PgResult&& other) noexcept;
  PgResult& operator=(PgResult&& other) noexcept;
  PgResult(const PgResult&) = delete;
  PgResult& operator=(const PgResult&) = delete;

  pg_result* get() const noexcept { return result_; }
  int rows() const noexcept;
  bool is_null(int row, int column) const noexcept;
  std::string_view text(int row, int column) const noexcept;
  bool is_bytea(int column) const noexcept;
  /// Rows an INSERT, UPDATE or DELETE changed.
  std::int64_t changes() const noexcept;
  /// The command tag, e.g. `COMMIT` (or `ROLLBACK` for a commit of a failed transaction).
  std::string_view command() const noexcept;

 private:
  pg_result* result_ = nullptr;
};

/// One connection. Not thread-safe: one thread at a time.
class PgConnection {
 public:
  PgConnection() = default;
  ~PgConnection();
  PgConnection(PgConnection&& other) noexcept;
  PgConnection& operator=(PgConnection&& other) noexcept;
  PgConnection(const PgConnection&) = delete;
  PgConnection& operator=(const PgConnection&) = delete;

  /// Connects and sets the session up (UTF-8, statement timeout, search_path). On failure
  /// `ec` is store_unavailable (cannot reach the server) or store_failed, and `detail` says
  /// why with the DSN redacted.
  static PgConnection connect(const PgConnectOptions& options, error_code& ec, std::string* detail);

  pg_conn* get() const noexcept { return conn_; }
  /// The connection is up as far as libpq knows (it learns of a loss on the next use).
  bool connected() const noexcept;
  /// Inside a transaction that an error aborted (only ROLLBACK [TO SAVEPOINT] works).
  bool in_failed_transaction() const noexcept;
  /// Inside a transaction block (healthy or failed).
  bool in_transaction() const noexcept;

  /// Runs `sql` (one or more statements, no parameters); false with `ec` (and `detail`)
  /// on failure.
  bool exec(const std::string& sql, error_code& ec, std::string* detail = nullptr);
  /// The same, returning the result of the last statement; throws quartzflow::error.
  PgResult exec(const std::string& sql);
  /// Prepares `sql` ($1...) as `name`; throws quartzflow::error.
  void prepare(const std::string& name, const std::string& sql);
  /// Runs a prepared statement with text (format 0) or binary (format 1) parameters, a null
  /// pointer for NULL; results in text. Throws quartzflow::error.
  PgResult exec_prepared(const std::string& name, std::string_view sql, int count, const char* const* values,
                         const int* lengths, const int* formats);

 private:
  explicit PgConnection(pg_conn* conn) noexcept : conn_(conn) {}
  /// The error of a failed result (or of the connection when there is none), as a code
  /// and a message; `what` is the SQL (shortened) for the log and the message.
  [[noreturn]] void throw_failure(const pg_result* result, std::string_view what) const;
  error_code failure(const pg_result* result, std::string_view what, std::string& message) const;

  pg_conn* conn_ = nullptr;
};

}  // namespace quartzflow::detail
