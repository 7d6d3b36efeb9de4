// SPDX-License-Identifier: Apache-2.0
#include "placeholders.hpp"

#include "../common/json_text.hpp"

#include <cctype>

#include <fmt/format.h>

namespace quartzflow::detail {

namespace {

bool is_name_char(char c, bool first) {
  return c == '_' || std::isalpha(static_cast<unsigned char>(c)) != 0 ||
         (!first && std::isdigit(static_cast<unsigned char>(c)) != 0);
}

void append_escaped(std::string& out, std::string_view value, PlaceholderEscape escape) {
  switch (escape) {
    case PlaceholderEscape::none:
      out += value;
      return;
    case PlaceholderEscape::url:
      for (const char c : value) {
        const auto u = static_cast<unsigned char>(c);
        if (std::isalnum(u) != 0 || c == '-' || c == '.' || c == '_' || c == '~') out += c;
        else out += fmt::format("%{:02X}", u);
      }
      return;
    case PlaceholderEscape::json:
      append_json_escaped(out, value);
      return;
  }
}

/// Walks `text`: literal runs go to `literal`, placeholders to `placeholder`; the problem
/// when one is malformed.
template <typename Literal, typename Placeholder>
std::optional<std::string> walk(std::string_view text, Literal literal, Placeholder placeholder) {
  std::size_t i = 0;
  while (i < text.size()) {
    const std::size_t open = text.find("${", i);
    if (open == std::string_view::npos) {
      literal(text.substr(i));
      break;
    }
    if (open > 0 && text[open - 1] == '$') {  // `$${`: a literal `${`
      literal(text.substr(i, open - 1 - i));
      literal("${");
      i = open + 2;
      continue;
    }
    literal(text.substr(i, open - i));
    const std::size_t close = text.find('}', open + 2);
    if (close == std::string_view::npos)
      return fmt::format("the placeholder at offset {} has no closing '}}' (write $${{ for a literal ${{)", open);
    const std::string_view name = text.substr(open + 2, close - open - 2);
    bool valid = !name.empty() && name.size() <= 64;
    for (std::size_t k = 0; valid && k < name.size(); ++k) valid = is_name_char(name[k], k == 0);
    if (!valid)
      return fmt::format("\"${{{}}}\" is not a placeholder: a parameter name is [A-Za-z_][A-Za-z0-9_]{{0,63}}",
                         name.substr(0, 80));
    placeholder(name);
    i = close + 1;
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> placeholder_problem(std::string_view text,
                                               const std::function<void(std::string_view)>& each_name) {
  return walk(
      text, [](std::string_view) {},
      [&](std::string_view name) {
        if (each_name) each_name(name);
      });
}

std::string expand_placeholders(std::string_view text, const std::map<std::string, std::string>& values,
                                PlaceholderEscape escape) {
  std::string out;
  out.reserve(text.size());
  const auto problem = walk(
      text, [&](std::string_view literal) { out += literal; },
      [&](std::string_view name) {
        if (const auto it = values.find(std::string(name)); it != values.end()) append_escaped(out, it->second, escape);
      });
  // Validation refuses malformed placeholders; a config that bypassed it is sent as written.
  if (problem) return std::string(text);
  return out;
}

}  // namespace quartzflow::detail
