// SPDX-License-Identifier: Apache-2.0
// RAII wrappers over the SQLite C API; every failure is logged with SQLite's own message.
#include "sqlite.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <utility>

#include <fmt/format.h>
#include <sqlite3.h>

#include <quartzflow/log.hpp>

namespace quartzflow::detail {
namespace {

thread_local SqliteFailure t_last_failure;
thread_local bool t_quiet_failures = false;

error_code fail(sqlite3* db, int rc, std::string_view what) {
  const char* message = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  t_last_failure.code = rc;
  t_last_failure.message = message;
  logger()->log(t_quiet_failures ? spdlog::level::debug : spdlog::level::err,
                "local store: SQLite error {} ({}) in: {}", rc, message, what);
  return errc::store_failed;
}

}  // namespace

SqliteFailure& last_sqlite_failure() noexcept { return t_last_failure; }
void set_sqlite_failures_quiet(bool quiet) noexcept { t_quiet_failures = quiet; }

SqliteDatabase::~SqliteDatabase() {
  // close_v2 defers the close until statements still alive are finalized.
  if (db_) sqlite3_close_v2(db_);
}

SqliteDatabase::SqliteDatabase(SqliteDatabase&& other) noexcept : db_(std::exchange(other.db_, nullptr)) {}

SqliteDatabase& SqliteDatabase::operator=(SqliteDatabase&& other) noexcept {
  if (this != &other) {
    if (db_) sqlite3_close_v2(db_);
    db_ = std::exchange(other.db_, nullptr);
  }
  return *this;
}

SqliteDatabase SqliteDatabase::open(const std::string& path, int flags, error_code& ec, std::string* detail) {
  // The files hold run output, password hashes and TOTP secrets: owner only. SQLite creates
  // a database 0644 (less the umask) and gives its -wal and -shm files the database's mode,
  // so the database file is made (or narrowed to) 0600 before SQLite opens it.
  if ((flags & SQLITE_OPEN_CREATE) != 0 && !path.empty() && path != ":memory:" && path.front() != '\0') {
    if (const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600); fd >= 0) {
      struct stat info {};
      if (::fstat(fd, &info) == 0 && (info.st_mode & 077) != 0) (void)::fchmod(fd, 0600);
      ::close(fd);
    }
  }
  sqlite3* db = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &db, flags | SQLITE_OPEN_NOMUTEX, nullptr);
  SqliteDatabase owned(db);  // closes db on failure too: open_v2 may allocate it anyway
  if (rc != SQLITE_OK) {
    ec = errc::store_failed;
    if (detail) *detail = path + ": " + (db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    return {};
  }
  sqlite3_extended_result_codes(db, 1);
  ec = {};
  return owned;
}

bool SqliteDatabase::exec(const std::string& sql, error_code& ec) {
  const int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) {
    ec = fail(db_, rc, sql.substr(0, 200));
    return false;
  }
  ec = {};
  return true;
}

SqliteStatement SqliteDatabase::prepare(std::string_view sql, error_code& ec, bool persistent) {
  sqlite3_stmt* stmt = nullptr;
  const int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                                    persistent ? SQLITE_PREPARE_PERSISTENT : 0, &stmt, nullptr);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(stmt);
    ec = fail(db_, rc, sql.substr(0, 200));
    return {};
  }
  ec = {};
  return {db_, stmt};
}

std::int64_t SqliteDatabase::query_int(const std::string& sql, error_code& ec) {
  auto stmt = prepare(sql, ec);
  if (ec) return 0;
  if (!stmt.step(ec)) {
    if (!ec) ec = fail(db_, SQLITE_DONE, sql + " returned no row");
    return 0;
  }
  return stmt.int64(0);
}

std::int64_t SqliteDatabase::changes() const noexcept { return sqlite3_changes64(db_); }

std::string SqliteDatabase::error_message() const { return db_ ? sqlite3_errmsg(db_) : "not open"; }

SqliteStatement::~SqliteStatement() { sqlite3_finalize(stmt_); }

SqliteStatement::SqliteStatement(SqliteStatement&& other) noexcept
    : db_(other.db_), stmt_(std::exchange(other.stmt_, nullptr)), bind_status_(other.bind_status_) {}

SqliteStatement& SqliteStatement::operator=(SqliteStatement&& other) noexcept {
  if (this != &other) {
    sqlite3_finalize(stmt_);
    db_ = other.db_;
    stmt_ = std::exchange(other.stmt_, nullptr);
    bind_status_ = other.bind_status_;
  }
  return *this;
}

SqliteStatement& SqliteStatement::reset() noexcept {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
  bind_status_ = SQLITE_OK;
  return *this;
}

namespace {
int first_failure(int so_far, int rc) { return so_far != SQLITE_OK ? so_far : rc; }
}  // namespace

SqliteStatement& SqliteStatement::bind(int index, std::int64_t value) noexcept {
  bind_status_ = first_failure(bind_status_, sqlite3_bind_int64(stmt_, index, value));
  return *this;
}

// SQLite binds a null pointer as NULL, not as an empty text: a default-constructed
// string_view has one, and `column = ?` or `column <> ?` would then match nothing.
SqliteStatement& SqliteStatement::bind(int index, std::string_view text) noexcept {
  const char* data = text.data() != nullptr ? text.data() : "";
  bind_status_ =
      first_failure(bind_status_, sqlite3_bind_text64(stmt_, index, data, text.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
  return *this;
}

SqliteStatement& SqliteStatement::bind_blob(int index, std::string_view bytes) noexcept {
  bind_status_ =
      first_failure(bind_status_, sqlite3_bind_blob64(stmt_, index, bytes.data(), bytes.size(), SQLITE_TRANSIENT));
  return *this;
}

SqliteStatement& SqliteStatement::bind_null(int index) noexcept {
  bind_status_ = first_failure(bind_status_, sqlite3_bind_null(stmt_, index));
  return *this;
}

bool SqliteStatement::step(error_code& ec) {
  if (bind_status_ != SQLITE_OK) {
    ec = fail(db_, bind_status_, sqlite3_sql(stmt_));
    return false;
  }
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) {
    ec = {};
    return true;
  }
  if (rc == SQLITE_DONE) {
    ec = {};
    return false;
  }
  ec = fail(db_, rc, sqlite3_sql(stmt_));
  // A failed statement must be reset before the connection can roll back cleanly.
  sqlite3_reset(stmt_);
  return false;
}

bool SqliteStatement::run(error_code& ec) {
  while (step(ec)) {
  }
  return !ec;
}

bool SqliteStatement::is_null(int column) const noexcept { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }

std::int64_t SqliteStatement::int64(int column) const noexcept { return sqlite3_column_int64(stmt_, column); }

std::string SqliteStatement::text(int column) const {
  const auto* data = sqlite3_column_text(stmt_, column);
  const int size = sqlite3_column_bytes(stmt_, column);
  if (!data) return {};
  return {reinterpret_cast<const char*>(data), static_cast<std::size_t>(size)};
}

std::string_view SqliteStatement::blob(int column) const noexcept {
  const void* data = sqlite3_column_blob(stmt_, column);
  const int size = sqlite3_column_bytes(stmt_, column);
  if (!data) return {};
  return {static_cast<const char*>(data), static_cast<std::size_t>(size)};
}

SqliteTransaction::SqliteTransaction(SqliteDatabase& db, error_code& ec) : db_(db) {
  active_ = db_.exec("BEGIN IMMEDIATE", ec);
}

SqliteTransaction::~SqliteTransaction() {
  if (active_) sqlite3_exec(db_.get(), "ROLLBACK", nullptr, nullptr, nullptr);
}

bool SqliteTransaction::commit(error_code& ec) {
  if (!active_) {
    ec = errc::store_failed;
    return false;
  }
  if (!db_.exec("COMMIT", ec)) return false;  // still active: the destructor rolls back
  active_ = false;
  return true;
}

bool migrate_schema(SqliteDatabase& db, const std::vector<SchemaStep>& steps, error_code& ec, std::string* detail) {
  SqliteTransaction transaction(db, ec);
  if (ec) {
    if (detail) *detail = "cannot start the migration: " + db.error_message();
    return false;
  }
  const auto found = db.query_int("PRAGMA user_version", ec);
  if (ec) {
    if (detail) *detail = "cannot read the schema version: " + db.error_message();
    return false;
  }
  const int latest = steps.empty() ? 0 : steps.back().version;
  if (found > latest) {
    ec = errc::store_version;
    if (detail) *detail = fmt::format("schema version {} is newer than this build's {}", found, latest);
    return false;
  }
  for (const auto& step : steps) {
    if (step.version <= found) continue;
    if (!db.exec(step.sql, ec)) {
      if (detail) *detail = fmt::format("migration to version {} failed: {}", step.version, db.error_message());
      return false;
    }
  }
  if (found != latest && !db.exec(fmt::format("PRAGMA user_version = {}", latest), ec)) {
    if (detail) *detail = "cannot set the schema version: " + db.error_message();
    return false;
  }
  if (!transaction.commit(ec)) {
    if (detail) *detail = "cannot commit the migration: " + db.error_message();
    return false;
  }
  return true;
}

}  // namespace quartzflow::detail
