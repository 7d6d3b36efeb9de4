// SPDX-License-Identifier: Apache-2.0
// Small text helpers shared by the parsers (YAML, schedules, URLs, the CLI) and the stores.
#pragma once

#include <string>
#include <string_view>

namespace quartzflow::detail {

/// `text` with A-Z folded to a-z and every other byte kept: locale-independent, as SQLite's
/// lower() folds, and safe on UTF-8 (no byte of a multi-byte sequence is touched).
inline std::string lower_ascii(std::string_view text) {
  std::string out(text);
  for (auto& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

}  // namespace quartzflow::detail
