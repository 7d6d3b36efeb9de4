// SPDX-License-Identifier: Apache-2.0
// The web console's files as the admin server serves them: lookup by path, Content-Type,
// cache lifetime, gzip, the Content-Security-Policy, index.html for the console's routes.
// No Beast here: the HTTP server turns the ApiResponse into bytes.
#pragma once

#include <deque>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <quartzflow/admin.hpp>

#include "api.hpp"

namespace quartzflow::detail {

/// The policy sent with every console file: scripts, styles and connections from this
/// origin only, no framing, no plugins.
inline constexpr std::string_view k_console_csp =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// Content-Type of a file name by its extension (`application/octet-stream` when unknown).
std::string_view content_type_of(std::string_view path);

/**
 * The console's files, embedded or read from a directory. Thread safety: const member
 * functions may be called concurrently; the object does not change after construction.
 */
class ConsoleFiles {
 public:
  ConsoleFiles() = default;
  /// Files with static storage (built into the binary).
  explicit ConsoleFiles(std::span<const ConsoleFile> files);
  /// Reads every file under `dir` (a `name.gz` beside `name` is its gzip copy). On failure
  /// (no directory, no index.html, unreadable) returns an empty set and says why in `problem`.
  static ConsoleFiles read_directory(const std::string& dir, std::string& problem);

  /// True when there is no console (index.html missing).
  bool empty() const noexcept { return files_.find("index.html") == files_.end(); }
  std::size_t size() const noexcept { return files_.size(); }

  /**
   * The answer to `GET path` (path as sent, no query), or nullopt when the path is not the
   * console's (`/api/...`). Hashed assets (`/assets/...`) are `immutable` for a year; a
   * path without a file outside `/assets/` answers index.html (a route of the console's
   * router) with `no-cache`; `accept_encoding` chooses the gzip copy. Without a console,
   * 404 with a sentence saying it was not built.
   */
  std::optional<ApiResponse> serve(std::string_view path, std::string_view accept_encoding) const;

 private:
  struct Entry {
    std::string_view body;
    std::string_view gzip;
  };
  std::map<std::string, Entry, std::less<>> files_;
  std::deque<std::string> storage_;  ///< the bytes read from a directory (a deque: views stay valid)
};

/// True when an Accept-Encoding header value accepts gzip (a `gzip` or `*` token without q=0).
bool accepts_gzip(std::string_view accept_encoding);

}  // namespace quartzflow::detail
