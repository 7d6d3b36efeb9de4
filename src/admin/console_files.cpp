// SPDX-License-Identifier: Apache-2.0
// The web console's files: lookup, headers and the directory override (console_dir).
#include "console_files.hpp"

#include "../common/text.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>

namespace quartzflow::detail {
namespace {

namespace fs = std::filesystem;

/// A whole console is a few MB; this bounds what a wrong console_dir can make us read.
constexpr std::uintmax_t k_max_console_dir_bytes = 64ull * 1024 * 1024;

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

ApiResponse file_response(std::string_view path, std::string_view body, std::string_view gzip, bool use_gzip,
                          std::string_view cache_control) {
  ApiResponse r;
  r.content_type = std::string(content_type_of(path));
  r.headers.emplace_back("Cache-Control", std::string(cache_control));
  r.headers.emplace_back("Content-Security-Policy", std::string(k_console_csp));
  r.headers.emplace_back("Referrer-Policy", "no-referrer");
  if (!gzip.empty()) r.headers.emplace_back("Vary", "Accept-Encoding");
  if (use_gzip && !gzip.empty()) {
    r.headers.emplace_back("Content-Encoding", "gzip");
    r.body = std::string(gzip);
  } else {
    r.body = std::string(body);
  }
  return r;
}

ApiResponse not_found() {
  ApiResponse r;
  r.status = 404;
  r.content_type = "text/plain; charset=utf-8";
  r.body = "not found\n";
  return r;
}

}  // namespace

std::string_view content_type_of(std::string_view path) {
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 17> k_types{{
      {".html", "text/html; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".mjs", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".json", "application/json"},
      {".map", "application/json"},
      {".webmanifest", "application/manifest+json"},
      {".svg", "image/svg+xml"},
      {".png", "image/png"},
      {".jpg", "image/jpeg"},
      {".gif", "image/gif"},
      {".webp", "image/webp"},
      {".ico", "image/x-icon"},
      {".woff", "font/woff"},
      {".woff2", "font/woff2"},
      {".ttf", "font/ttf"},
      {".txt", "text/plain; charset=utf-8"},
  }};
  const auto dot = path.rfind('.');
  if (dot == std::string_view::npos || path.find('/', dot) != std::string_view::npos) return "application/octet-stream";
  const auto extension = detail::lower_ascii(path.substr(dot));
  for (const auto& [suffix, type] : k_types)
    if (extension == suffix) return type;
  return "application/octet-stream";
}

bool accepts_gzip(std::string_view header) {
  bool star = false;
  bool gzip = false;
  bool gzip_refused = false;
  while (!header.empty()) {
    const auto comma = header.find(',');
    auto item = trim(header.substr(0, comma));
    header = comma == std::string_view::npos ? std::string_view{} : header.substr(comma + 1);
    const auto semicolon = item.find(';');
    const auto coding = detail::lower_ascii(trim(item.substr(0, semicolon)));
    bool refused = false;
    if (semicolon != std::string_view::npos) {
      // q=0, q=0.0, q=0.000: "not acceptable" (RFC 9110 12.4.2).
      auto params = detail::lower_ascii(item.substr(semicolon + 1));
      params.erase(std::remove(params.begin(), params.end(), ' '), params.end());
      if (const auto q = params.find("q="); q != std::string::npos)
        refused = std::strtod(params.c_str() + q + 2, nullptr) <= 0.0;
    }
    if (coding == "gzip" || coding == "x-gzip") (refused ? gzip_refused : gzip) = true;
    if (coding == "*" && !refused) star = true;
  }
  return gzip || (star && !gzip_refused);
}

ConsoleFiles::ConsoleFiles(std::span<const ConsoleFile> files) {
  for (const auto& f : files) files_[std::string(f.path)] = Entry{f.body, f.gzip};
}

ConsoleFiles ConsoleFiles::read_directory(const std::string& dir, std::string& problem) {
  ConsoleFiles out;
  std::error_code ec;
  const fs::path root(dir);
  if (!fs::is_directory(root, ec)) {
    problem = dir + ": not a directory";
    return {};
  }
  std::uintmax_t total = 0;
  std::map<std::string, std::pair<std::string, std::string>> read;  // path -> body, gzip
  for (auto it = fs::recursive_directory_iterator(root, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    const auto size = it->file_size(ec);
    if (ec) break;
    total += size;
    if (total > k_max_console_dir_bytes) {
      problem = dir + ": more than 64 MiB of files; is this a built console (dist/)?";
      return {};
    }
    std::ifstream in(it->path(), std::ios::binary);
    std::ostringstream bytes;
    bytes << in.rdbuf();
    if (!in) {
      problem = it->path().string() + ": cannot be read";
      return {};
    }
    auto relative = fs::relative(it->path(), root, ec).generic_string();
    if (ec) break;
    if (ends_with(relative, ".gz")) {
      relative.resize(relative.size() - 3);
      read[relative].second = std::move(bytes).str();
    } else {
      read[relative].first = std::move(bytes).str();
    }
  }
  if (ec) {
    problem = dir + ": " + ec.message();
    return {};
  }
  for (auto& [path, contents] : read) {
    // A lone name.gz is a file of its own (its original was not kept).
    if (!fs::exists(root / path)) {
      out.storage_.push_back(std::move(contents.second));
      out.files_[path + ".gz"] = Entry{out.storage_.back(), {}};
      continue;
    }
    out.storage_.push_back(std::move(contents.first));
    Entry entry{out.storage_.back(), {}};
    if (!contents.second.empty()) {
      out.storage_.push_back(std::move(contents.second));
      entry.gzip = out.storage_.back();
    }
    out.files_[path] = entry;
  }
  if (out.empty()) {
    problem = dir + ": no index.html (build the console: cd src/admin/console && npm ci && npm run build)";
    return {};
  }
  return out;
}

std::optional<ApiResponse> ConsoleFiles::serve(std::string_view path, std::string_view accept_encoding) const {
  if (path == "/api" || path.starts_with("/api/")) return std::nullopt;
  if (empty()) {
    ApiResponse r;
    r.status = 404;
    r.content_type = "text/plain; charset=utf-8";
    r.body =
        "The web console was not built into this qf-coordinator (Node.js was missing when it was built: run "
        "./tools/qf build, or set console_dir to a built console). The admin API is at /api/v1.\n";
    return r;
  }
  const auto decoded = percent_decode(path, false);
  if (!decoded) return not_found();
  std::string_view name = *decoded;
  while (name.starts_with('/')) name.remove_prefix(1);
  const bool gzip = accepts_gzip(accept_encoding);
  if (!name.empty() && name != "index.html") {
    if (auto it = files_.find(name); it != files_.end()) {
      // Vite names everything under assets/ by its content hash: it can be cached forever.
      const bool hashed = name.starts_with("assets/");
      return file_response(name, it->second.body, it->second.gzip, gzip,
                           hashed ? "public, max-age=31536000, immutable" : "no-cache");
    }
    // A missing script or style must not come back as HTML (nosniff would refuse it anyway).
    if (name.starts_with("assets/")) return not_found();
  }
  const auto& index = files_.find("index.html")->second;
  return file_response("index.html", index.body, index.gzip, gzip, "no-cache");
}

}  // namespace quartzflow::detail
