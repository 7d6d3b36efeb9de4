// SPDX-License-Identifier: Apache-2.0
// Building blocks of the store's SQL, the same for every database: conditions with their
// parameters, keyword patterns, paging, sort keys through a whitelist, label selectors, and
// protobuf records in BLOBs. User text only ever reaches the database as a bound parameter.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <google/protobuf/message_lite.h>

#include <quartzflow/error.hpp>

#include "../common/clock.hpp"        // now_unix_ms
#include "../common/label_selector.hpp"  // parse_label_selector (the store's filters read selectors)
#include "../common/proto_bytes.hpp"  // serialize_deterministic
#include "../common/text.hpp"         // lower_ascii: SQL lower() folds alike (ASCII), keywords go through it

namespace quartzflow::detail {

/// A parameter of a statement: an integer or a text.
using SqlValue = std::variant<std::int64_t, std::string>;

/// Conditions joined by AND; each uses anonymous `?` placeholders whose values follow in
/// order, so the statement binds `values()` from index 1.
class SqlConditions {
 public:
  void add(std::string condition, std::vector<SqlValue> values = {});
  /// ` WHERE a AND b`, or empty when there is no condition.
  std::string where() const;
  const std::vector<SqlValue>& values() const noexcept { return values_; }

 private:
  std::vector<std::string> conditions_;
  std::vector<SqlValue> values_;
};

/// LIMIT and OFFSET of a list request: page 1-based (0 = 1), page_size 0 = 20, at most 500.
struct Paging {
  std::int64_t limit = 20;
  std::int64_t offset = 0;
};
Paging paging_of(std::uint32_t page, std::uint32_t page_size) noexcept;

/**
 * Adds `(lower(c1) LIKE ? ESCAPE '\' OR ...)` over `columns` for a case-insensitive substring
 * match of `keyword` (ASCII folding; `%`, `_` and `\` in it match themselves). Each column
 * is an SQL expression; `{}` in one stands for the placeholder (`EXISTS (... lower(x) LIKE {}
 * ESCAPE '\')` for a related table).
 */
void add_keyword_condition(SqlConditions& where, std::string_view keyword, std::span<const std::string_view> columns);

/// A sort key a request may name, and the SQL expression it orders by.
struct SortKey {
  std::string_view name;
  std::string_view expression;
  bool nullable = false;  ///< rows without a value sort last in both directions
};

/**
 * `ORDER BY <expression> <direction>, <tie_breaker> <direction>` for `requested` (a key
 * name, `-` prefixed for descending; empty = `fallback`). Throws quartzflow::error
 * (invalid_argument, field `sort`) for a key that is not in `keys`.
 */
std::string order_by(std::string_view requested, std::string_view fallback, std::span<const SortKey> keys,
                     std::string_view tie_breaker, std::string_view input, bool nulls_sort_high);

/// Parses a stored record; throws store_failed when the bytes are not one.
void parse_record(std::string_view bytes, google::protobuf::MessageLite& into);

/// Throws quartzflow::error(invalid_argument) naming `field` with `reason`.
[[noreturn]] void throw_invalid(std::string_view input, std::string_view field, std::string reason);

/// Throws quartzflow::error(conflict) naming `field`: `"<value>" is already used by <owner>`.
[[noreturn]] void throw_taken(std::string_view input, std::string_view field, std::string_view value,
                              std::string_view owner);

}  // namespace quartzflow::detail
