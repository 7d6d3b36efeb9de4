// SPDX-License-Identifier: Apache-2.0
// Checks that a file named in a config can be read, so both binaries refuse a bad path at
// start with the same words.
#pragma once

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>

namespace quartzflow::examples {

/// Empty when `path` can be opened for reading, else why not (`No such file or directory`).
inline std::string unreadable_reason(const std::filesystem::path& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) return "is a directory";
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) return std::strerror(errno);
  std::fclose(file);
  return {};
}

}  // namespace quartzflow::examples
