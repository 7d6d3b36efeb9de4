// SPDX-License-Identifier: Apache-2.0
// RFC 3339 instants and Go-style durations.
#include <cctype>
#include <charconv>
#include <sstream>

#include <date/date.h>
#include <fmt/format.h>

#include <quartzflow/time.hpp>

namespace quartzflow {

std::string format_rfc3339(Instant t) { return date::format("%FT%TZ", t); }

std::optional<Instant> parse_rfc3339(std::string_view text) {
  if (text.size() != 20 && text.size() != 25) return std::nullopt;
  // The shape first: date::parse misreads some near misses (`00:00.00Z` reaches a NaN).
  constexpr std::string_view k_shape = "dddd-dd-ddTdd:dd:dd";
  for (std::size_t i = 0; i < k_shape.size(); ++i) {
    const char c = text[i];
    const bool ok = k_shape[i] == 'd' ? (c >= '0' && c <= '9')
                    : k_shape[i] == 'T' ? (c == 'T' || c == 't' || c == ' ')
                                        : c == k_shape[i];
    if (!ok) return std::nullopt;
  }
  const std::string_view zone = text.substr(k_shape.size());
  const bool utc = zone == "Z" || zone == "z";
  const bool offset = zone.size() == 6 && (zone[0] == '+' || zone[0] == '-') && zone[3] == ':' &&
                      std::isdigit(static_cast<unsigned char>(zone[1])) && std::isdigit(static_cast<unsigned char>(zone[2])) &&
                      std::isdigit(static_cast<unsigned char>(zone[4])) && std::isdigit(static_cast<unsigned char>(zone[5]));
  if (!utc && !offset) return std::nullopt;
  std::string normal(text);
  if (normal[10] == ' ' || normal[10] == 't') normal[10] = 'T';
  if (normal.back() == 'Z' || normal.back() == 'z') normal.replace(normal.size() - 1, 1, "+00:00");
  std::istringstream in(normal);
  Instant t;
  in >> date::parse("%FT%T%Ez", t);
  if (in.fail() || in.peek() != std::char_traits<char>::eof()) return std::nullopt;
  return t;
}

std::optional<std::chrono::seconds> parse_duration(std::string_view text) {
  constexpr std::int64_t k_max_seconds = 10LL * 366 * 86400;
  if (text.empty() || text.size() > 64) return std::nullopt;
  std::int64_t total = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::int64_t value = 0;
    const auto [end, ec] = std::from_chars(text.data() + pos, text.data() + text.size(), value);
    if (ec != std::errc{} || end == text.data() + text.size()) return std::nullopt;
    pos = static_cast<std::size_t>(end - text.data());
    std::int64_t unit = 0;
    switch (text[pos]) {
      case 'd': unit = 86400; break;
      case 'h': unit = 3600; break;
      case 'm': unit = 60; break;
      case 's': unit = 1; break;
      default: return std::nullopt;
    }
    ++pos;
    if (value < 0 || value > k_max_seconds) return std::nullopt;
    total += value * unit;
    if (total > k_max_seconds) return std::nullopt;
  }
  return std::chrono::seconds{total};
}

std::string format_duration(std::chrono::seconds d) {
  std::int64_t s = d.count();
  if (s == 0) return "0s";
  std::string out;
  if (s >= 86400 && s % 3600 == 0 && s % 86400 == 0) return fmt::format("{}d", s / 86400);
  if (s >= 3600) out += fmt::format("{}h", s / 3600), s %= 3600;
  if (s >= 60) out += fmt::format("{}m", s / 60), s %= 60;
  if (s > 0) out += fmt::format("{}s", s);
  return out;
}

}  // namespace quartzflow
