// SPDX-License-Identifier: Apache-2.0
// The coordinator's alert secret key: the 32 bytes that seal the inline secrets of alert
// channels (signing keys, passwords, routing keys) in the store with AES-256-GCM.
#pragma once

#include <optional>
#include <string>

namespace quartzflow {

/// The key file a coordinator makes in its data directory when none is configured.
inline constexpr const char* k_alert_secret_key_file_name = "alert-secret.key";

/**
 * Reads the alert secret key from `path`: 32 raw bytes or 64 hex digits (`openssl rand -hex
 * 32`). With `create`, a missing file is made first: 32 random bytes as hex, mode 0600,
 * created exclusively (two processes starting at once read the same key). Every coordinator
 * of a PostgreSQL cluster must read the same key. nullopt with `error` (`<path>: <reason>`)
 * when there is no key to be had; the key itself is never in an error or a log.
 */
std::optional<std::string> load_alert_secret_key(const std::string& path, bool create, std::string& error);

}  // namespace quartzflow
