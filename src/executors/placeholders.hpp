// SPDX-License-Identifier: Apache-2.0
// `${name}` placeholders in an HTTP task's URL, headers and body, replaced by the run's
// parameters with the escaping each place needs. `$${` stands for a literal `${`.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace quartzflow::detail {

/// How a value is written where its placeholder stood.
enum class PlaceholderEscape {
  url,   ///< percent-encoded as a URL component (RFC 3986: all but unreserved characters)
  json,  ///< the inside of a JSON string (quotes, backslashes, control characters escaped)
  none,  ///< as is (headers, plain-text bodies)
};

/// Why `text`'s placeholders are malformed (`${` without `}`, a bad name), or nullopt.
/// `each_name` is called with every well-formed placeholder's name.
std::optional<std::string> placeholder_problem(std::string_view text,
                                               const std::function<void(std::string_view)>& each_name = {});

/// `text` with each `${name}` replaced by `values[name]` (empty when absent), escaped.
std::string expand_placeholders(std::string_view text, const std::map<std::string, std::string>& values,
                                PlaceholderEscape escape);

}  // namespace quartzflow::detail
