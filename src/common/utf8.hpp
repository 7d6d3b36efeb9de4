// SPDX-License-Identifier: Apache-2.0
// Text that goes into protobuf `string` fields must be valid UTF-8: a peer refuses to parse
// a message that is not, so one binary byte in a run's output would block its sync forever.
#pragma once

#include <string>
#include <string_view>

namespace quartzflow::detail {

/// `text` with every invalid UTF-8 sequence replaced by U+FFFD (valid text is unchanged).
std::string valid_utf8(std::string_view text);

/// Offset of the first byte that does not start a valid UTF-8 sequence, or npos.
std::size_t first_invalid_utf8(std::string_view text);

}  // namespace quartzflow::detail
