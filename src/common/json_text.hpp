// SPDX-License-Identifier: Apache-2.0
// The inside of a JSON string (RFC 8259 7), for the few places that write JSON text by hand
// (error replies, HTTP task bodies) instead of through protobuf's JSON mapping.
#pragma once

#include <string>
#include <string_view>

#include <fmt/format.h>

namespace quartzflow::detail {

/// Appends `text` escaped for the inside of a JSON string: quotes, backslashes and control
/// characters; other bytes as they are (the caller keeps the text UTF-8).
inline void append_json_escaped(std::string& out, std::string_view text) {
  for (const char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) out += fmt::format("\\u{:04x}", static_cast<unsigned>(c));
        else out += c;
    }
  }
}

}  // namespace quartzflow::detail
