// SPDX-License-Identifier: Apache-2.0
// The benchmarks' PostgreSQL: which stores a run measures (QF_BENCH_STORE), and a database
// for each PostgreSQL case, on the server of QF_BENCH_PG_DSN or on a throwaway one started
// here with tests/pg/pg_server.sh (durable commits, like the SQLite store) and removed at exit.
#pragma once

#include <libpq-fe.h>
#include <stdlib.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <quartzflow/pg_store.hpp>

namespace quartzflow::bench {

/// The stores a run measures: QF_BENCH_STORE = sqlite, postgres or both; `fallback` when unset.
struct StoreChoice {
  bool sqlite = true;
  bool postgres = false;
};

inline StoreChoice parse_store_choice(std::string_view text) {
  if (text == "sqlite") return {true, false};
  if (text == "postgres") return {false, true};
  if (text == "both") return {true, true};
  throw std::invalid_argument("store: expected sqlite, postgres or both, got '" + std::string(text) + "'");
}

inline StoreChoice stores_wanted(std::string_view fallback) {
  const char* env = std::getenv("QF_BENCH_STORE");
  return parse_store_choice(env && *env ? std::string_view(env) : fallback);
}

/// Runs `sql` on `dsn`; throws std::runtime_error with the server's message.
inline void postgres_exec(const std::string& dsn, const std::string& sql) {
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn(PQconnectdb(dsn.c_str()), &PQfinish);
  if (PQstatus(conn.get()) != CONNECTION_OK)
    throw std::runtime_error("cannot connect to PostgreSQL: " + std::string(PQerrorMessage(conn.get())));
  PQsetNoticeProcessor(
      conn.get(), [](void*, const char*) {}, nullptr);
  std::unique_ptr<PGresult, decltype(&PQclear)> result(PQexec(conn.get(), sql.c_str()), &PQclear);
  const auto status = PQresultStatus(result.get());
  if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
    throw std::runtime_error(sql.substr(0, 120) + ": " + PQerrorMessage(conn.get()));
}

/**
 * The PostgreSQL server of this run, started on first use. With QF_BENCH_PG_DSN each case
 * gets a schema of its own there (`qf_bench_<pid>_<n>`, dropped at exit); without, a
 * throwaway server in /tmp/qf-pg-bench-XXXXXX (Unix socket only) with fsync and full-page writes
 * turned back on, so that a commit is as durable as the SQLite store's (synchronous=FULL);
 * stopped and removed at exit, or by a watchdog if the process is killed.
 */
class BenchPostgres {
 public:
  static BenchPostgres& instance() {
    static BenchPostgres server;
    return server;
  }

  /// Store options for a new, empty schema; throws std::runtime_error when no server.
  PostgresStoreOptions new_store_options() {
    if (dsn_.empty()) start();
    PostgresStoreOptions options;
    options.dsn = dsn_;
    options.schema = "qf_bench_" + std::to_string(::getpid()) + "_" + std::to_string(schemas_.size() + 1);
    schemas_.push_back(options.schema);
    return options;
  }

  /// A human description of the server (for the benchmarks' context lines).
  std::string describe() const {
    return own_dir_.empty() ? "QF_BENCH_PG_DSN" : "throwaway server in " + own_dir_ + " (fsync on)";
  }

  ~BenchPostgres() {
    if (!own_dir_.empty()) {
      shell("bash '" + std::string(QUARTZFLOW_PG_SERVER_SCRIPT) + "' stop '" + own_dir_ + "' >/dev/null 2>&1");
      return;
    }
    for (const auto& schema : schemas_) {
      try {
        postgres_exec(dsn_, "DROP SCHEMA IF EXISTS " + schema + " CASCADE");
      } catch (const std::exception&) {  // a benchmark's leftovers are not worth failing the run
      }
    }
  }

  BenchPostgres(const BenchPostgres&) = delete;
  BenchPostgres& operator=(const BenchPostgres&) = delete;

 private:
  BenchPostgres() = default;

  static std::string shell(const std::string& command, int* status = nullptr) {
    std::string out;
    FILE* pipe = ::popen(command.c_str(), "r");
    if (!pipe) throw std::runtime_error("cannot run: " + command);
    std::array<char, 512> buffer{};
    while (std::fgets(buffer.data(), static_cast<int>(buffer.size()), pipe)) out += buffer.data();
    const int code = ::pclose(pipe);
    if (status) *status = code;
    while (!out.empty() && out.back() == '\n') out.pop_back();
    return out;
  }

  void start() {
    if (const char* env = std::getenv("QF_BENCH_PG_DSN"); env && *env) {
      dsn_ = env;
      return;
    }
    std::string pattern = "/tmp/qf-pg-bench-XXXXXX";
    if (!::mkdtemp(pattern.data())) throw std::runtime_error("cannot create a directory for PostgreSQL");
    const std::string script = QUARTZFLOW_PG_SERVER_SCRIPT;
    const auto errors = pattern + ".err";
    int status = 0;
    auto dsn = shell("bash '" + script + "' start '" + pattern + "' 2>'" + errors + "'", &status);
    if (status != 0) {
      const auto why = shell("cat '" + errors + "'");
      shell("bash '" + script + "' stop '" + pattern + "' >/dev/null 2>&1; rm -f '" + errors + "'");
      throw std::runtime_error("the benchmark's PostgreSQL server did not start: " + why);
    }
    ::unlink(errors.c_str());
    own_dir_ = pattern;
    // A process killed by a signal runs no destructor: the watchdog stops the server then.
    shell("(while kill -0 " + std::to_string(::getpid()) + " 2>/dev/null; do sleep 1; done; bash '" + script +
          "' stop '" + own_dir_ + "') </dev/null >/dev/null 2>&1 &");
    // pg_server.sh runs without fsync (tests); both settings take effect at a reload.
    postgres_exec(dsn, "ALTER SYSTEM SET fsync = on");
    postgres_exec(dsn, "ALTER SYSTEM SET full_page_writes = on");
    postgres_exec(dsn, "SELECT pg_reload_conf()");
    dsn_ = std::move(dsn);
  }

  std::string dsn_;
  std::string own_dir_;  ///< the throwaway server's directory; empty with QF_BENCH_PG_DSN
  std::vector<std::string> schemas_;
};

/// Opens a PostgreSQL store on a new schema of the run's server; nullptr with `detail`.
inline std::unique_ptr<Store> open_bench_postgres_store(
    boost::asio::any_io_executor executor, std::string& detail,
    std::chrono::milliseconds max_batch_delay = std::chrono::milliseconds{1}) {
  try {
    auto options = BenchPostgres::instance().new_store_options();
    options.max_batch_delay = max_batch_delay;
    error_code ec;
    return open_postgres_store(std::move(executor), std::move(options), ec, &detail);
  } catch (const std::exception& e) {
    detail = e.what();
    return nullptr;
  }
}

}  // namespace quartzflow::bench
