// SPDX-License-Identifier: Apache-2.0
// SQLite statements behind the store's SqlStatement: bind, step and read columns, every
// failure thrown as store_failed with SQLite's message.
#include "sqlite_session.hpp"

#include <fmt/format.h>
#include <sqlite3.h>

namespace quartzflow::detail {
namespace {

// List queries differ by which filters are present, so their texts are many but bounded;
// the cache is emptied between transactions once it holds more than this.
constexpr std::size_t k_max_cached_statements = 256;

[[noreturn]] void throw_store_failed(SqliteDatabase& db, std::string_view what) {
  throw error(errc::store_failed, fmt::format("store: {} ({})", db.error_message(), what.substr(0, 120)));
}

class SqliteSessionStatement final : public SqlStatement {
 public:
  SqliteSessionStatement(SqliteDatabase& db, SqliteStatement statement) noexcept
      : db_(db), statement_(std::move(statement)) {}

  void reset() noexcept override { statement_.reset(); }
  void bind(int index, std::int64_t value) override { statement_.bind(index, value); }
  void bind(int index, std::string_view text) override { statement_.bind(index, text); }
  void bind_blob(int index, std::string_view bytes) override { statement_.bind_blob(index, bytes); }
  void bind_null(int index) override { statement_.bind_null(index); }
  bool next() override {
    error_code ec;
    const bool row = statement_.step(ec);
    if (ec) throw_store_failed(db_, "step");
    return row;
  }
  std::int64_t changes() const override { return db_.changes(); }
  bool is_null(int column) const override { return statement_.is_null(column); }
  std::int64_t int64(int column) const override { return statement_.int64(column); }
  std::string text(int column) const override { return statement_.text(column); }
  std::string_view blob(int column) const override { return statement_.blob(column); }

 private:
  SqliteDatabase& db_;
  SqliteStatement statement_;
};

}  // namespace

const SqlDialect& SqliteSession::dialect() const noexcept {
  static constexpr SqlDialect k_sqlite{.nulls_sort_high = false};
  return k_sqlite;
}

SqlStatement& SqliteSession::statement(std::string_view sql) {
  auto found = statements_.find(sql);
  if (found == statements_.end()) {
    error_code ec;
    auto prepared = db_.prepare(sql, ec, true);
    if (ec) throw_store_failed(db_, sql);
    found =
        statements_.emplace(std::string(sql), std::make_unique<SqliteSessionStatement>(db_, std::move(prepared))).first;
  }
  return *found->second;
}

void SqliteSession::trim_statement_cache() {
  if (statements_.size() <= k_max_cached_statements) return;
  statements_.clear();
  ++generation_;
}

}  // namespace quartzflow::detail
