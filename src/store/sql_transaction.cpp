// SPDX-License-Identifier: Apache-2.0
// The borrowed-statement guard and the statement lookups shared by the store's queries.
#include "sql_transaction.hpp"

#include <fmt/format.h>

namespace quartzflow::detail {

int BorrowedStatement::bind_all(const std::vector<SqlValue>& values, int first) {
  for (const auto& value : values) {
    if (const auto* number = std::get_if<std::int64_t>(&value)) statement_.bind(first++, *number);
    else statement_.bind(first++, std::string_view(std::get<std::string>(value)));
  }
  return first;
}

std::int64_t BorrowedStatement::run() {
  while (next()) {}
  return statement_.changes();
}

void SqlStoreTransaction::trim_statement_cache() { db_.trim_statement_cache(); }

BorrowedStatement SqlStoreTransaction::literal_statement(const char* sql, std::size_t size) {
  if (literal_generation_ != db_.cache_generation()) {
    literal_statements_.clear();
    literal_generation_ = db_.cache_generation();
  }
  auto found = literal_statements_.find(sql);
  if (found == literal_statements_.end())
    found = literal_statements_.emplace(sql, &db_.statement(std::string_view(sql, size))).first;
  return BorrowedStatement(*found->second);
}

BorrowedStatement SqlStoreTransaction::statement(std::string_view sql) { return BorrowedStatement(db_.statement(sql)); }

void SqlStoreTransaction::require_writable(std::string_view operation) const {
  if (!writable_)
    throw error(errc::store_read_only, fmt::format("store: {} is a write, refused in a read transaction", operation));
}

std::uint64_t SqlStoreTransaction::count(const std::string& sql, const std::vector<SqlValue>& values) {
  auto rows = statement(sql);
  rows.bind_all(values);
  return rows.next() ? static_cast<std::uint64_t>(rows.int64(0)) : 0;
}

}  // namespace quartzflow::detail
