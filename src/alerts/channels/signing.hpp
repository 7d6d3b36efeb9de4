// SPDX-License-Identifier: Apache-2.0
// The primitives the channels sign and encode with (OpenSSL underneath): HMAC-SHA256, base64,
// hex and URL encoding, and the signature QuartzFlow puts on its own webhooks and callbacks.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace quartzflow::alerts {

/// The raw 32-byte HMAC-SHA256 of `message` under `key`.
std::string hmac_sha256(std::string_view key, std::string_view message);

/// Standard base64 (RFC 4648 section 4) with padding, on one line.
std::string base64_encode(std::string_view bytes);

/// Lower-case hex of `bytes`.
std::string hex_encode(std::string_view bytes);

/// Percent-encoding of everything but RFC 3986's unreserved characters (A-Z a-z 0-9 - . _ ~),
/// upper-case hex: safe as a query parameter value (`+`, `/` and `=` of base64 are encoded).
std::string url_encode(std::string_view text);

/**
 * The `X-QuartzFlow-Signature` value of a webhook or callback request:
 * `sha256=` + lower-case hex of HMAC-SHA256(secret, `<timestamp>` + "." + `<body>`), where
 * `<timestamp>` is the `X-QuartzFlow-Timestamp` header (unix seconds, decimal) and `<body>`
 * the exact request body bytes. Signing the timestamp with the body lets a receiver refuse
 * replays: it recomputes the value, compares in constant time, and rejects a timestamp more
 * than a few minutes from its clock.
 */
std::string quartzflow_signature(std::string_view secret, std::int64_t timestamp_unix_seconds, std::string_view body);

}  // namespace quartzflow::alerts
