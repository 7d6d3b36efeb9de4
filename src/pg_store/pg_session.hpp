// SPDX-License-Identifier: Apache-2.0
// The SqlSession of one PostgreSQL connection: the store's shared SQL (`?`/`?N` placeholders)
// numbered `$N` and prepared once per connection, and a reconnect that drops them.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include "../store/sql_session.hpp"
#include "pg.hpp"

namespace quartzflow::detail {

/// `?` and `?N` outside string literals as `$N` (a bare `?` takes the next number);
/// `count` gets the highest number used.
std::string numbered_placeholders(std::string_view sql, int& count);

/// Not thread-safe: one thread at a time, as the connection.
class PgSession final : public SqlSession {
 public:
  explicit PgSession(PgConnectOptions options) : options_(std::move(options)) {}

  /// Connects (again, when the connection was lost); false with `ec` and `detail`.
  bool connect(error_code& ec, std::string* detail);
  PgConnection& connection() noexcept { return connection_; }

  const SqlDialect& dialect() const noexcept override;
  SqlStatement& statement(std::string_view sql) override;
  void trim_statement_cache() override;
  std::uint64_t cache_generation() const noexcept override { return generation_; }

 private:
  void drop_statements();

  PgConnectOptions options_;
  PgConnection connection_;
  std::map<std::string, std::unique_ptr<SqlStatement>, std::less<>> statements_;
  std::uint64_t generation_ = 0;
  std::uint64_t next_name_ = 0;
};

}  // namespace quartzflow::detail
