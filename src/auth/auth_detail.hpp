// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the auth sources: random bytes, base64 (standard and URL alphabets),
// hex and UTF-8 lengths.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace quartzflow::detail {

/// `count` bytes from OpenSSL's CSPRNG; throws quartzflow::error when it fails.
std::string random_bytes(std::size_t count);

/// Base64 (RFC 4648): standard alphabet with `=` padding, or base64url without padding.
std::string base64_encode(std::string_view bytes, bool url);
/// Decodes what base64_encode produced (padding optional); nullopt on anything else.
std::optional<std::string> base64_decode(std::string_view text, bool url);

/// Lower-case hex of `bytes`.
std::string hex_encode(std::string_view bytes);

/// Characters (code points) of UTF-8 `text`: the bytes that do not continue a sequence.
std::size_t utf8_characters(std::string_view text) noexcept;

}  // namespace quartzflow::detail
