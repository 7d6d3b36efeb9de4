// SPDX-License-Identifier: Apache-2.0
#include "label_selector.hpp"

#include <fmt/format.h>

#include <quartzflow/error.hpp>

namespace quartzflow::detail {
namespace {

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> parse_label_selector(std::string_view text, std::string_view input) {
  std::vector<std::pair<std::string, std::string>> out;
  if (trim(text).empty()) return out;
  std::size_t start = 0;
  for (;;) {
    const auto comma = text.find(',', start);
    const auto length = comma == std::string_view::npos ? std::string_view::npos : comma - start;
    const auto part = trim(text.substr(start, length));
    const auto equals = part.find('=');
    if (equals == std::string_view::npos || trim(part.substr(0, equals)).empty())
      throw error(errc::invalid_argument,
                  ValidationError{std::string(input), "label_selector", fmt::format("\"{}\" is not key=value", part)});
    out.emplace_back(std::string(trim(part.substr(0, equals))), std::string(trim(part.substr(equals + 1))));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

}  // namespace quartzflow::detail
