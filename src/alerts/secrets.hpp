// SPDX-License-Identifier: Apache-2.0
// Secrets of alert channels and result callbacks (signing keys, passwords, routing keys):
// inline values sealed with AES-256-GCM under the coordinator's key before they are stored,
// redacted in every API answer, and resolved (unsealed, read from a file or the environment)
// only when a message is sent. Nothing here logs a secret.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include <quartzflow/v1/alerts.pb.h>

namespace quartzflow::detail {

/// The key's size: AES-256.
inline constexpr std::size_t k_secret_key_bytes = 32;
/**
 * Reads a key file: 32 raw bytes, or 64 hex digits (`openssl rand -hex 32`), surrounding
 * white space ignored. nullopt with `error` (`<path>: <reason>`) when it is missing or not
 * a key.
 */
std::optional<std::string> load_secret_key(const std::filesystem::path& path, std::string& error);

/**
 * Reads `path`, or creates it first when it does not exist: 32 random bytes as 64 hex digits
 * and a newline, mode 0600 (created exclusively: two processes starting at once read the
 * same key). nullopt with `error` when it can be neither read nor made.
 */
std::optional<std::string> load_or_create_secret_key(const std::filesystem::path& path, std::string& error);

/// `"v1:" + base64(nonce | ciphertext | tag)` of `plain`: AES-256-GCM with a random 12-byte
/// nonce per call. Throws quartzflow::error when OpenSSL fails or the key is not 32 bytes.
std::string seal_secret(std::string_view plain, std::string_view key);
/// The plain text of `sealed`, or nullopt when it is malformed, sealed under another key or
/// tampered with.
std::optional<std::string> unseal_secret(std::string_view sealed, std::string_view key);

/**
 * A secret as an API client gave it, made ready to store: an inline `value` is sealed into
 * `sealed` and cleared; `set` and `hint` are filled (`inline …xy` with the value's last two
 * characters, `file /path`, `env NAME`). A secret with nothing given is left empty.
 */
void seal_for_store(v1::Secret& secret, std::string_view key);

/// A stored (or given) secret as an answer shows it: value and sealed form cleared, `set`
/// and `hint` kept (filled from `file` / `env` when missing).
void redact_secret(v1::Secret& secret);

/// Every secret of a channel redacted (its `secret` and `email.password`).
void redact_channel(v1::Channel& channel);
/// Every secret of a channel sealed for the store (see seal_for_store).
void seal_channel(v1::Channel& channel, std::string_view key);

/**
 * The value to send with: an inline one unsealed, a file's content (one trailing newline
 * stripped), or an environment variable's. nullopt with `error` saying why (never the
 * value) when it cannot be had. An empty secret gives an empty string.
 */
std::optional<std::string> resolve_secret(const v1::Secret& secret, std::string_view key, std::string& error);

}  // namespace quartzflow::detail
