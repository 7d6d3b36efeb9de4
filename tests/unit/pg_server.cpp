// SPDX-License-Identifier: Apache-2.0
// The tests' PostgreSQL server: one per binary run, driven through tests/pg/pg_server.sh.
#include "pg_server.hpp"

#include <libpq-fe.h>
#include <stdlib.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace quartzflow::testing {
namespace {

/// Runs `command` through the shell; its stdout, and its exit status in `status`.
std::string run(const std::string& command, int& status) {
  std::string out;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) {
    status = -1;
    return out;
  }
  std::array<char, 512> buffer{};
  while (std::fgets(buffer.data(), static_cast<int>(buffer.size()), pipe)) out += buffer.data();
  status = ::pclose(pipe);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

class TestServer {
 public:
  TestServer() {
    std::string pattern = "/tmp/qf-pg-XXXXXX";
    if (!::mkdtemp(pattern.data())) {
      failure_ = "cannot create a directory for the test PostgreSQL server";
      return;
    }
    dir_ = pattern;
    int status = 0;
    // The script's errors go to a file: popen reads only its stdout (the DSN).
    const auto errors = dir_ + ".err";
    dsn_ = run(fmt::format("bash '{}' start '{}' 2>'{}'", QUARTZFLOW_PG_SERVER_SCRIPT, dir_, errors), status);
    if (status != 0) {
      int ignored = 0;
      failure_ = fmt::format("the test PostgreSQL server did not start: {}", run("cat '" + errors + "'", ignored));
      run(fmt::format("bash '{}' stop '{}' >/dev/null 2>&1; rm -f '{}'", QUARTZFLOW_PG_SERVER_SCRIPT, dir_, errors),
          ignored);
      dir_.clear();
      return;
    }
    ::unlink(errors.c_str());
    // A binary killed by a signal runs no destructor: this watchdog stops the server once
    // the binary is gone.
    run(fmt::format("(while kill -0 {} 2>/dev/null; do sleep 1; done; bash '{}' stop '{}') </dev/null >/dev/null "
                    "2>&1 &",
                    ::getpid(), QUARTZFLOW_PG_SERVER_SCRIPT, dir_),
        status);
  }

  ~TestServer() {
    if (dir_.empty()) return;
    int ignored = 0;
    run(fmt::format("bash '{}' stop '{}' >/dev/null 2>&1", QUARTZFLOW_PG_SERVER_SCRIPT, dir_), ignored);
  }

  TestServer(const TestServer&) = delete;
  TestServer& operator=(const TestServer&) = delete;

  std::string new_database() {
    if (!failure_.empty()) throw std::runtime_error(failure_);
    const auto name = fmt::format("t_{}", ++databases_);
    postgres_exec(dsn_, "CREATE DATABASE " + name);
    return fmt::format("host={} port=5432 user=postgres dbname={}", dir_, name);
  }

 private:
  std::string dir_;
  std::string dsn_;
  std::string failure_;
  std::atomic<int> databases_{0};
};

TestServer& server() {
  // A function-local static: started on first use, stopped by its destructor at exit.
  static TestServer instance;
  return instance;
}

}  // namespace

std::string postgres_test_database() { return server().new_database(); }

void postgres_exec(const std::string& dsn, const std::string& sql) {
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn(PQconnectdb(dsn.c_str()), &PQfinish);
  if (PQstatus(conn.get()) != CONNECTION_OK)
    throw std::runtime_error(
        fmt::format("cannot connect to the test PostgreSQL server ({}): {}", dsn, PQerrorMessage(conn.get())));
  PQsetNoticeProcessor(
      conn.get(), [](void*, const char*) {}, nullptr);  // NOTICEs of IF NOT EXISTS and the like
  std::unique_ptr<PGresult, decltype(&PQclear)> result(PQexec(conn.get(), sql.c_str()), &PQclear);
  const auto status = PQresultStatus(result.get());
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
    throw std::runtime_error(fmt::format("{}: {}", sql.substr(0, 200), PQerrorMessage(conn.get())));
}

}  // namespace quartzflow::testing
