// SPDX-License-Identifier: Apache-2.0
// The statement cache and the borrowed-statement guard shared by the store's queries.
#include "sqlite_transaction.hpp"

#include <fmt/format.h>

namespace quartzflow::detail {
namespace {

// List queries differ by which filters are present, so their texts are many but bounded;
// the cache is emptied between transactions once it holds more than this.
constexpr std::size_t k_max_cached_statements = 256;

[[noreturn]] void throw_store_failed(SqliteDatabase& db, std::string_view what) {
  throw error(errc::store_failed, fmt::format("store: {} ({})", db.error_message(), what.substr(0, 120)));
}

}  // namespace

BorrowedStatement::BorrowedStatement(SqliteDatabase& db, SqliteStatement& statement) noexcept
    : db_(db), statement_(statement) {
  statement_.reset();
}

BorrowedStatement::~BorrowedStatement() { statement_.reset(); }

BorrowedStatement& BorrowedStatement::bind(int index, std::int64_t value) noexcept {
  statement_.bind(index, value);
  return *this;
}

BorrowedStatement& BorrowedStatement::bind(int index, std::string_view text) noexcept {
  statement_.bind(index, text);
  return *this;
}

BorrowedStatement& BorrowedStatement::bind_blob(int index, std::string_view bytes) noexcept {
  statement_.bind_blob(index, bytes);
  return *this;
}

BorrowedStatement& BorrowedStatement::bind_optional(int index, std::optional<std::int64_t> value) noexcept {
  if (value)
    statement_.bind(index, *value);
  else
    statement_.bind_null(index);
  return *this;
}

int BorrowedStatement::bind_all(const std::vector<SqlValue>& values, int first) noexcept {
  for (const auto& value : values) {
    if (const auto* number = std::get_if<std::int64_t>(&value))
      statement_.bind(first++, *number);
    else
      statement_.bind(first++, std::string_view(std::get<std::string>(value)));
  }
  return first;
}

bool BorrowedStatement::next() {
  error_code ec;
  const bool row = statement_.step(ec);
  if (ec) throw_store_failed(db_, "step");
  return row;
}

void BorrowedStatement::run() {
  while (next()) {
  }
}

void SqliteStoreTransaction::trim_statement_cache() {
  if (statements_.size() <= k_max_cached_statements) return;
  literal_statements_.clear();
  statements_.clear();
}

BorrowedStatement SqliteStoreTransaction::literal_statement(const char* sql, std::size_t size) {
  auto found = literal_statements_.find(sql);
  if (found == literal_statements_.end()) {
    const std::string_view text(sql, size);
    auto cached = statements_.find(text);
    if (cached == statements_.end()) {
      error_code ec;
      auto prepared = db_.prepare(text, ec, true);
      if (ec) throw_store_failed(db_, text);
      cached = statements_.emplace(std::string(text), std::move(prepared)).first;
    }
    found = literal_statements_.emplace(sql, &cached->second).first;
  }
  return {db_, *found->second};
}

BorrowedStatement SqliteStoreTransaction::statement(std::string_view sql) {
  auto found = statements_.find(sql);
  if (found == statements_.end()) {
    error_code ec;
    auto prepared = db_.prepare(sql, ec, true);
    if (ec) throw_store_failed(db_, sql);
    found = statements_.emplace(std::string(sql), std::move(prepared)).first;
  }
  return {db_, found->second};
}

void SqliteStoreTransaction::require_writable(std::string_view operation) const {
  if (!writable_)
    throw error(errc::store_read_only, fmt::format("store: {} is a write, refused in a read transaction", operation));
}

std::uint64_t SqliteStoreTransaction::count(const std::string& sql, const std::vector<SqlValue>& values) {
  auto rows = statement(sql);
  rows.bind_all(values);
  return rows.next() ? static_cast<std::uint64_t>(rows.int64(0)) : 0;
}

}  // namespace quartzflow::detail
