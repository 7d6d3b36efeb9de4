// SPDX-License-Identifier: Apache-2.0
// The SqlSession of one SQLite connection: its prepared statements, cached by SQL text.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "../sqlite/sqlite.hpp"
#include "sql_session.hpp"

namespace quartzflow::detail {

/// Not thread-safe: one thread at a time, as the connection.
class SqliteSession final : public SqlSession {
 public:
  explicit SqliteSession(SqliteDatabase& db) noexcept : db_(db) {}

  const SqlDialect& dialect() const noexcept override;
  SqlStatement& statement(std::string_view sql) override;
  void trim_statement_cache() override;
  std::uint64_t cache_generation() const noexcept override { return generation_; }

 private:
  SqliteDatabase& db_;
  std::map<std::string, std::unique_ptr<SqlStatement>, std::less<>> statements_;
  std::uint64_t generation_ = 0;
};

}  // namespace quartzflow::detail
