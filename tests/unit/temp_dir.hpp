// SPDX-License-Identifier: Apache-2.0
// A fresh directory for a test's files, removed when the test ends.
#pragma once

#include <filesystem>
#include <string>
#include <system_error>

#include <stdlib.h>

#include <catch2/catch.hpp>

namespace quartzflow::testing {

class TempDir {
 public:
  explicit TempDir(const char* prefix = "qf-test") {
    std::string pattern = (std::filesystem::temp_directory_path() / (std::string(prefix) + "-XXXXXX")).string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const char* name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace quartzflow::testing
