// SPDX-License-Identifier: Apache-2.0
// The library logger's rotating log file (include/quartzflow/log.hpp).
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include <sys/stat.h>
#include <unistd.h>

#include <quartzflow/log.hpp>

namespace fs = std::filesystem;
namespace qf = quartzflow;

namespace {
std::string read_all(const fs::path& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
}  // namespace

TEST_CASE("log_to_file rotates by size, keeps max_files old files and writes them 0640", "[log]") {
  const fs::path dir = fs::temp_directory_path() / ("qf-log-test-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const auto previous = qf::logger();
  const auto old_umask = ::umask(0);  // the mode must not depend on the umask
  qf::LogFileOptions options;
  options.path = (dir / "agent.log").string();
  options.max_size_bytes = 4096;
  options.max_files = 2;
  qf::error_code ec;
  std::string detail;
  qf::log_to_file(options, ec, &detail);
  ::umask(old_umask);
  REQUIRE_FALSE(ec);
  const auto level = qf::logger()->level();
  qf::set_log_level("info");
  for (int i = 0; i < 400; ++i) qf::logger()->info("line {} of the rotation test", i);
  qf::logger()->set_level(level);
  const std::string current = read_all(dir / "agent.log");
  CHECK(current.find("line 399 of the rotation test") != std::string::npos);
  CHECK(fs::file_size(dir / "agent.log") <= 4096);
  REQUIRE(fs::exists(dir / "agent.1.log"));
  REQUIRE(fs::exists(dir / "agent.2.log"));
  CHECK_FALSE(fs::exists(dir / "agent.3.log"));  // max_files: the oldest is removed
  CHECK(read_all(dir / "agent.2.log").find("line 0 of") == std::string::npos);
  for (const char* name : {"agent.log", "agent.1.log", "agent.2.log"}) {
    struct stat info {};
    REQUIRE(::stat((dir / name).c_str(), &info) == 0);
    INFO(name);
    CHECK((info.st_mode & 0777) == 0640);
  }
  qf::set_logger(previous);
  fs::remove_all(dir);
}

TEST_CASE("log_to_file refuses bad options and keeps the logger", "[log]") {
  const auto before = qf::logger();
  qf::LogFileOptions options;
  qf::error_code ec;
  std::string detail;
  qf::log_to_file(options, ec, &detail);
  CHECK(ec == qf::errc::invalid_argument);
  CHECK(detail == "log.file: is empty");
  options.path = "/dev/null/agent.log";  // under a file: no directory can be made there
  options.max_files = 0;
  qf::log_to_file(options, ec, &detail);
  CHECK(detail.find("log.max_files") != std::string::npos);
  options.max_files = 3;
  qf::log_to_file(options, ec, &detail);
  CHECK(ec);
  CHECK(detail.find("log.file") != std::string::npos);
  CHECK_THROWS_AS(qf::log_to_file(options), qf::error);
  CHECK(qf::logger() == before);
}
