// SPDX-License-Identifier: Apache-2.0
// SQL building blocks of the coordinator store: conditions, keywords, paging, sort whitelist,
// labels.
#include "store_rules.hpp"

#include <algorithm>
#include <chrono>

#include <fmt/format.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

namespace quartzflow::detail {

void SqlConditions::add(std::string condition, std::vector<SqlValue> values) {
  conditions_.push_back(std::move(condition));
  for (auto& value : values) values_.push_back(std::move(value));
}

std::string SqlConditions::where() const {
  std::string out;
  for (std::size_t i = 0; i < conditions_.size(); ++i) {
    out += i == 0 ? " WHERE " : " AND ";
    out += conditions_[i];
  }
  return out;
}

void add_keyword_condition(SqlConditions& where, std::string_view keyword, std::span<const std::string_view> columns) {
  std::string pattern = "%";
  for (const char c : lower_ascii(keyword)) {
    if (c == '%' || c == '_' || c == '\\') pattern += '\\';
    pattern += c;
  }
  pattern += '%';
  std::string condition;
  std::vector<SqlValue> values;
  for (const auto column : columns) {
    condition += condition.empty() ? "(" : " OR ";
    if (column.find("{}") != std::string_view::npos) condition += fmt::format(fmt::runtime(column), "?");
    else condition += fmt::format("lower({}) LIKE ? ESCAPE '\\'", column);
    values.emplace_back(pattern);
  }
  where.add(condition + ")", std::move(values));
}

Paging paging_of(std::uint32_t page, std::uint32_t page_size) noexcept {
  constexpr std::uint32_t k_default_page_size = 20;
  constexpr std::uint32_t k_max_page_size = 500;
  Paging paging;
  paging.limit = page_size == 0 ? k_default_page_size : std::min(page_size, k_max_page_size);
  paging.offset = (static_cast<std::int64_t>(std::max<std::uint32_t>(page, 1)) - 1) * paging.limit;
  return paging;
}

std::string order_by(std::string_view requested, std::string_view fallback, std::span<const SortKey> keys,
                     std::string_view tie_breaker, std::string_view input, bool nulls_sort_high) {
  std::string_view name = requested.empty() ? fallback : requested;
  const bool descending = !name.empty() && name.front() == '-';
  if (descending) name.remove_prefix(1);
  const auto key = std::find_if(keys.begin(), keys.end(), [&](const SortKey& k) { return k.name == name; });
  if (key == keys.end()) {
    std::string known;
    for (const auto& k : keys) known += fmt::format("{}{}", known.empty() ? "" : ", ", k.name);
    throw_invalid(
        input, "sort",
        fmt::format("unknown sort key \"{}\"; expected one of {} (`-` prefix for descending)", requested, known));
  }
  const char* direction = descending ? "DESC" : "ASC";
  // Only spelled out where it differs from the database's default, which an index can serve.
  const char* nulls = key->nullable && descending == nulls_sort_high ? " NULLS LAST" : "";
  return fmt::format(" ORDER BY {} {}{}, {} {}", key->expression, direction, nulls, tie_breaker, direction);
}

void parse_record(std::string_view bytes, google::protobuf::MessageLite& into) {
  if (!into.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())))
    throw error(errc::store_failed, fmt::format("store: a stored {} record does not parse", into.GetTypeName()));
}

void throw_invalid(std::string_view input, std::string_view field, std::string reason) {
  throw error(errc::invalid_argument, ValidationError{std::string(input), std::string(field), std::move(reason)});
}

void throw_taken(std::string_view input, std::string_view field, std::string_view value, std::string_view owner) {
  throw error(errc::conflict, ValidationError{std::string(input), std::string(field),
                                              fmt::format("\"{}\" is already used by {}", value, owner)});
}

}  // namespace quartzflow::detail
