// SPDX-License-Identifier: Apache-2.0
// The coordinator's retention: slices of old executions rolled up then deleted (never a
// PENDING or RUNNING one), logs and audit entries by age, on SQLite and PostgreSQL; the
// RetentionService's passes and its gzip JSON-lines archive.
#include <filesystem>
#include <fstream>
#include <set>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/io_context.hpp>

#include <catch2/catch.hpp>

#include <date/date.h>
#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>
#include <zlib.h>

#include <quartzflow/pg_store.hpp>
#include <quartzflow/store.hpp>

#include "common/clock.hpp"
#include "common/daily_stats_merge.hpp"
#include "coordinator/retention_service.hpp"
#include "pg_server.hpp"
#include "quiet_log.hpp"
#include "temp_dir.hpp"

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;

namespace {

enum class Backend { sqlite, postgres };

std::unique_ptr<qf::Store> open_store(boost::asio::io_context& io, Backend backend) {
  qf::error_code ec;
  std::string detail;
  std::unique_ptr<qf::Store> store;
  if (backend == Backend::sqlite) {
    store = qf::open_sqlite_store(io.get_executor(), {":memory:", std::chrono::milliseconds{0}}, ec, &detail);
  } else {
    qf::PostgresStoreOptions options;
    options.dsn = qf::testing::postgres_test_database();
    store = qf::open_postgres_store(io.get_executor(), options, ec, &detail);
  }
  INFO(detail);
  REQUIRE(store);
  return store;
}

/// Runs `body` in a transaction that must succeed.
template <typename Body>
void in_tx(boost::asio::io_context& io, qf::Store& store, Body body) {
  std::optional<qf::error_code> result;
  std::string thrown;
  store.transact(
      [&](qf::StoreTransaction& tx, qf::error_code& ec) {
        try {
          body(tx);
        } catch (const qf::error& e) {
          thrown = e.what();
          ec = e.code();
        }
      },
      [&](qf::error_code ec) { result = ec; });
  io.restart();
  io.run_for(std::chrono::seconds(20));
  INFO(thrown);
  REQUIRE(result);
  REQUIRE_FALSE(*result);
}

constexpr std::int64_t k_day_ms = 86'400'000;

/// Runs handlers until `done()` or 20 s; an io_context out of work stops and is restarted.
template <typename Pred>
void run_until(boost::asio::io_context& io, Pred done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    if (io.stopped()) io.restart();
    io.run_one_for(std::chrono::milliseconds{100});
  }
}

v1::Execution execution(const std::string& id, const std::string& task, const std::string& agent,
                        std::int64_t scheduled, v1::ExecutionStatus status, std::int64_t duration_ms) {
  v1::Execution e;
  e.set_execution_id(id);
  e.set_task_id(task);
  e.set_task_name(task + " name");
  e.set_agent_id(agent);
  e.set_status(status);
  e.set_trigger(v1::TRIGGER_TYPE_SCHEDULED);
  e.set_scheduled_unix_ms(scheduled);
  if (status != v1::EXECUTION_STATUS_PENDING && status != v1::EXECUTION_STATUS_SKIPPED) {
    e.set_started_unix_ms(scheduled);
    e.set_ended_unix_ms(scheduled + duration_ms);
    e.set_duration_ms(duration_ms);
  }
  e.set_attempt(1);
  e.set_output("out of " + id);
  return e;
}

std::string gunzip(const std::filesystem::path& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  REQUIRE(file);
  std::string out;
  char buffer[4096];
  int n = 0;
  while ((n = gzread(file, buffer, sizeof buffer)) > 0) out.append(buffer, static_cast<std::size_t>(n));
  gzclose(file);
  return out;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::size_t at = 0;
  while (at < text.size()) {
    const auto end = text.find('\n', at);
    out.push_back(text.substr(at, end - at));
    at = end == std::string::npos ? text.size() : end + 1;
  }
  return out;
}

}  // namespace

TEST_CASE("retention rolls old final executions up, then deletes them with their logs, never an unfinished one",
          "[store][retention]") {
  const Backend backend = GENERATE(Backend::sqlite, Backend::postgres);
  INFO("backend: " << (backend == Backend::sqlite ? "SQLite" : "PostgreSQL"));
  qf::testing::QuietLog quiet;
  boost::asio::io_context io;
  auto store = open_store(io, backend);
  const std::int64_t day1 = 1'767'225'600'000;  // 2026-01-01T00:00:00Z
  const std::int64_t day2 = day1 + k_day_ms;
  const std::int64_t recent = day1 + 40 * k_day_ms;
  in_tx(io, *store, [&](qf::StoreTransaction& tx) {
    tx.upsert_execution(execution("a1", "t1", "h1", day1 + 3'600'000, v1::EXECUTION_STATUS_SUCCESS, 100));
    tx.upsert_execution(execution("a2", "t1", "h1", day1 + 7'200'000, v1::EXECUTION_STATUS_FAILURE, 300));
    tx.upsert_execution(execution("a3", "t1", "h2", day1 + 7'300'000, v1::EXECUTION_STATUS_SKIPPED, 0));
    tx.upsert_execution(execution("b1", "t2", "h1", day2 + 60'000, v1::EXECUTION_STATUS_TIMEOUT, 1000));
    tx.upsert_execution(execution("stuck", "t2", "h1", day1, v1::EXECUTION_STATUS_RUNNING, 0));
    tx.upsert_execution(execution("waiting", "t2", "h1", day1 + 1, v1::EXECUTION_STATUS_PENDING, 0));
    tx.upsert_execution(execution("new", "t1", "h1", recent, v1::EXECUTION_STATUS_SUCCESS, 5));
    tx.put_log("a1", "log of a1");
    tx.put_log("stuck", "log of stuck");
    tx.put_log("new", "log of new");
  });
  // Slices of 2 rows: the oldest final ones first.
  std::vector<v1::Execution> archived;
  std::vector<qf::ArchivedLog> logs;
  std::size_t first = 0;
  in_tx(io, *store, [&](qf::StoreTransaction& tx) { first = tx.purge_executions(recent, 2, &archived, &logs); });
  CHECK(first == 2);
  REQUIRE(archived.size() == 2);
  CHECK(archived[0].execution_id() == "a1");
  CHECK(archived[0].output() == "out of a1");
  CHECK(archived[1].execution_id() == "a2");
  REQUIRE(logs.size() == 1);
  CHECK(logs[0].execution_id == "a1");
  CHECK(logs[0].text == "log of a1");
  std::size_t rest = 0;
  in_tx(io, *store, [&](qf::StoreTransaction& tx) { rest = tx.purge_executions(recent, 100, nullptr, nullptr); });
  CHECK(rest == 2);  // a3 and b1; the RUNNING and PENDING ones stay
  std::size_t none = 0;
  in_tx(io, *store, [&](qf::StoreTransaction& tx) { none = tx.purge_executions(recent, 100, nullptr, nullptr); });
  CHECK(none == 0);

  std::vector<v1::DailyStats> rollups;
  std::set<std::string> left;
  std::optional<std::string> stuck_log, a1_log;
  in_tx(io, *store, [&](qf::StoreTransaction& tx) {
    rollups = tx.execution_rollups("2026-01-01", "2026-01-31");
    for (const char* id : {"a1", "a2", "a3", "b1", "stuck", "waiting", "new"})
      if (tx.execution(id)) left.insert(id);
    stuck_log = tx.log("stuck");
    a1_log = tx.log("a1");
  });
  CHECK(left == std::set<std::string>{"stuck", "waiting", "new"});
  CHECK(stuck_log == std::optional<std::string>("log of stuck"));
  CHECK_FALSE(a1_log);
  // Per UTC day, task and agent: the counts the deleted rows made, nothing more.
  REQUIRE(rollups.size() == 3);
  CHECK(rollups[0].date() == "2026-01-01");
  CHECK(rollups[0].task_id() == "t1");
  CHECK(rollups[0].agent_id() == "h1");
  CHECK(rollups[0].task_name() == "t1 name");
  CHECK(rollups[0].total() == 2);
  CHECK(rollups[0].success() == 1);
  CHECK(rollups[0].failure() == 1);
  CHECK(rollups[0].total_duration_ms() == 400);
  CHECK(rollups[0].min_duration_ms() == 100);
  CHECK(rollups[0].max_duration_ms() == 300);
  CHECK(rollups[0].avg_duration_ms() == 200);
  REQUIRE(rollups[0].runs_per_hour_size() == 24);
  CHECK(rollups[0].runs_per_hour(1) == 1);
  CHECK(rollups[0].runs_per_hour(2) == 1);
  CHECK(rollups[1].agent_id() == "h2");
  CHECK(rollups[1].skipped() == 1);
  CHECK(rollups[1].total() == 0);
  CHECK(rollups[2].date() == "2026-01-02");
  CHECK(rollups[2].timeout() == 1);

  // A later purge adds to the same day's roll-up instead of replacing it.
  in_tx(io, *store, [&](qf::StoreTransaction& tx) {
    tx.upsert_execution(execution("a4", "t1", "h1", day1 + 3'700'000, v1::EXECUTION_STATUS_SUCCESS, 600));
    tx.purge_executions(recent, 100, nullptr, nullptr);
    rollups = tx.execution_rollups("2026-01-01", "2026-01-01");
  });
  REQUIRE(rollups.size() == 2);
  CHECK(rollups[0].total() == 3);
  CHECK(rollups[0].success() == 2);
  CHECK(rollups[0].max_duration_ms() == 600);
  CHECK(rollups[0].runs_per_hour(1) == 2);

  // Roll-ups go by date.
  std::size_t purged_rollups = 0;
  in_tx(io, *store, [&](qf::StoreTransaction& tx) {
    purged_rollups = tx.purge_execution_rollups("2026-01-02");
    rollups = tx.execution_rollups("2026-01-01", "2026-01-31");
  });
  CHECK(purged_rollups == 2);
  REQUIRE(rollups.size() == 1);
  CHECK(rollups[0].date() == "2026-01-02");
}

TEST_CASE("daily stats outlive purged runs: the roll-ups fill the keys no agent reported", "[store][retention]") {
  qf::testing::QuietLog quiet;
  boost::asio::io_context io;
  auto store = open_store(io, Backend::sqlite);
  const std::int64_t day1 = 1'767'225'600'000;  // 2026-01-01T00:00:00Z
  in_tx(io, *store, [&](qf::StoreTransaction& tx) {
    tx.upsert_execution(execution("a1", "t1", "h1", day1 + 3'600'000, v1::EXECUTION_STATUS_SUCCESS, 100));
    tx.upsert_execution(execution("a2", "t1", "h2", day1 + 7'200'000, v1::EXECUTION_STATUS_FAILURE, 300));
    tx.upsert_execution(execution("b1", "t2", "h1", day1 + 60'000, v1::EXECUTION_STATUS_SUCCESS, 10));
  });
  in_tx(io, *store,
        [&](qf::StoreTransaction& tx) { tx.purge_executions(day1 + 40 * k_day_ms, 100, nullptr, nullptr); });
  // h1 reported its day for t1 (its count is the whole truth: 5 runs, more than were stored).
  v1::DailyStats reported;
  reported.set_date("2026-01-01");
  reported.set_task_id("t1");
  reported.set_agent_id("h1");
  reported.set_total(5);
  reported.set_success(5);
  std::vector<v1::DailyStats> merged, only_t1, only_h2;
  in_tx(io, *store, [&](qf::StoreTransaction& tx) {
    tx.put_agent_daily_stats(reported);
    const auto read = [&] { return tx.agent_daily_stats("", "2026-01-01", "2026-01-02"); };
    const auto rollups = [&] { return tx.execution_rollups("2026-01-01", "2026-01-02"); };
    merged = qf::detail::merge_daily_stats(read(), rollups(), "", "");
    only_t1 = qf::detail::merge_daily_stats(read(), rollups(), "", "t1");
    only_h2 = qf::detail::merge_daily_stats(read(), rollups(), "h2", "");
  });
  std::vector<std::string> rows;
  for (const auto& s : merged)
    rows.push_back(fmt::format("{} {} {} {}/{}", s.date(), s.agent_id(), s.task_id(), s.success(), s.total()));
  // The agent's report wins over the roll-up of (h1, t1); the others come from the roll-ups.
  CHECK(rows == std::vector<std::string>{"2026-01-01 h1 t1 5/5", "2026-01-01 h1 t2 1/1", "2026-01-01 h2 t1 0/1"});
  REQUIRE(only_t1.size() == 2);
  CHECK(only_t1[0].agent_id() == "h1");
  CHECK(only_t1[1].agent_id() == "h2");
  REQUIRE(only_h2.size() == 1);
  CHECK(only_h2[0].failure() == 1);
}

TEST_CASE("retention deletes audit entries and logs by age, oldest first, in slices", "[store][retention]") {
  const Backend backend = GENERATE(Backend::sqlite, Backend::postgres);
  INFO("backend: " << (backend == Backend::sqlite ? "SQLite" : "PostgreSQL"));
  qf::testing::QuietLog quiet;
  boost::asio::io_context io;
  auto store = open_store(io, backend);
  const std::int64_t now = 1'767'225'600'000;
  in_tx(io, *store, [&](qf::StoreTransaction& tx) {
    for (int i = 0; i < 5; ++i) {
      v1::AuditEntry entry;
      entry.set_at_unix_ms(now - (10 - i) * k_day_ms);
      entry.set_actor("admin");
      entry.set_action("task.update");
      entry.set_target_type("task");
      entry.set_target_id(fmt::format("t{}", i));
      tx.append_audit(entry);
    }
    v1::AuditEntry fresh;
    fresh.set_at_unix_ms(now);
    fresh.set_actor("admin");
    fresh.set_action("task.create");
    tx.append_audit(fresh);
    tx.upsert_execution(execution("done", "t", "h", now, v1::EXECUTION_STATUS_SUCCESS, 1));
    tx.upsert_execution(execution("going", "t", "h", now, v1::EXECUTION_STATUS_RUNNING, 0));
    tx.put_log("done", "finished log");
    tx.put_log("going", "running log");
  });
  std::vector<v1::AuditEntry> archived;
  std::size_t first = 0, second = 0;
  in_tx(io, *store, [&](qf::StoreTransaction& tx) { first = tx.purge_audit(now - k_day_ms, 3, &archived); });
  in_tx(io, *store, [&](qf::StoreTransaction& tx) { second = tx.purge_audit(now - k_day_ms, 3, &archived); });
  CHECK(first == 3);
  CHECK(second == 2);
  REQUIRE(archived.size() == 5);
  for (int i = 0; i < 5; ++i) CHECK(archived[static_cast<std::size_t>(i)].target_id() == fmt::format("t{}", i));
  qf::Listing<v1::AuditEntry> audit;
  in_tx(io, *store, [&](qf::StoreTransaction& tx) { audit = tx.list_audit({}); });
  REQUIRE(audit.total == 1);
  CHECK(audit.items[0].action() == "task.create");

  // Logs written before the cut go, except the log of a run still going.
  std::vector<qf::ArchivedLog> logs;
  std::size_t purged_logs = 0;
  std::optional<std::string> done_log, going_log;
  in_tx(io, *store, [&](qf::StoreTransaction& tx) {
    purged_logs = tx.purge_logs(qf::detail::now_unix_ms() + 1000, 100, &logs);
    done_log = tx.log("done");
    going_log = tx.log("going");
  });
  CHECK(purged_logs == 1);
  REQUIRE(logs.size() == 1);
  CHECK(logs[0].text == "finished log");
  CHECK_FALSE(done_log);
  CHECK(going_log == std::optional<std::string>("running log"));
}

TEST_CASE("the retention service purges in slices and archives what it deletes as gzip JSON lines per day",
          "[retention]") {
  qf::testing::QuietLog quiet;
  qf::testing::TempDir dir;
  boost::asio::io_context io;
  auto store = open_store(io, Backend::sqlite);
  const std::int64_t now = qf::detail::now_unix_ms();
  const std::int64_t old_day = (now - 40 * k_day_ms) / k_day_ms * k_day_ms;  // midnight UTC, 40 days ago
  in_tx(io, *store, [&](qf::StoreTransaction& tx) {
    for (int i = 0; i < 25; ++i)
      tx.upsert_execution(
          execution(fmt::format("old{:02}", i), "t", "h", old_day + i * 60'000, v1::EXECUTION_STATUS_SUCCESS, 10));
    tx.upsert_execution(execution("old-running", "t", "h", old_day, v1::EXECUTION_STATUS_RUNNING, 0));
    tx.upsert_execution(execution("recent", "t", "h", now - k_day_ms, v1::EXECUTION_STATUS_SUCCESS, 10));
    tx.put_log("old00", "line one\n\"quoted\"\n");
    v1::AuditEntry entry;
    entry.set_at_unix_ms(old_day);
    entry.set_actor("admin");
    entry.set_action("user.create");
    tx.append_audit(entry);
  });
  qf::detail::RetentionOptions options;
  options.executions = options.logs = options.audit = std::chrono::hours{24 * 30};
  options.batch_rows = 10;
  options.pause = std::chrono::milliseconds{1};
  options.archive_dir = dir.file("archive");
  bool leading = true;
  qf::detail::RetentionService service(io.get_executor(), *store, options, [&] { return leading; });

  // A standby purges nothing.
  leading = false;
  std::optional<qf::detail::RetentionCounts> counts;
  service.run_pass([&](qf::error_code ec, qf::detail::RetentionCounts c) {
    CHECK_FALSE(ec);
    counts = c;
  });
  run_until(io, [&] { return counts.has_value(); });
  REQUIRE(counts);
  CHECK(counts->executions == 0);

  leading = true;
  counts.reset();
  service.run_pass([&](qf::error_code ec, qf::detail::RetentionCounts c) {
    CHECK_FALSE(ec);
    counts = c;
  });
  run_until(io, [&] { return counts.has_value(); });
  REQUIRE(counts);
  CHECK(counts->executions == 25);  // three slices of at most 10
  CHECK(counts->audit == 1);
  std::optional<v1::Execution> kept_running, kept_recent, gone;
  in_tx(io, *store, [&](qf::StoreTransaction& tx) {
    kept_running = tx.execution("old-running");
    kept_recent = tx.execution("recent");
    gone = tx.execution("old00");
  });
  CHECK(kept_running);
  CHECK(kept_recent);
  CHECK_FALSE(gone);

  const std::string day = date::format("%F", date::sys_days{date::days{old_day / k_day_ms}});
  const auto executions =
      lines_of(gunzip(std::filesystem::path(options.archive_dir) / ("executions-" + day + ".jsonl.gz")));
  REQUIRE(executions.size() == 25);  // three gzip members, read as one stream
  std::set<std::string> ids;
  for (const auto& line : executions) {
    v1::Execution e;
    REQUIRE(google::protobuf::util::JsonStringToMessage(line, &e).ok());
    ids.insert(e.execution_id());
    CHECK(e.output() == "out of " + e.execution_id());
  }
  CHECK(ids.size() == 25);
  CHECK(ids.count("old00") == 1);
  const auto logs = gunzip(std::filesystem::path(options.archive_dir) / ("logs-" + day + ".jsonl.gz"));
  CHECK(logs == "{\"execution_id\":\"old00\",\"log\":\"line one\\n\\\"quoted\\\"\\n\"}\n");
  const auto audit = lines_of(gunzip(std::filesystem::path(options.archive_dir) / ("audit-" + day + ".jsonl.gz")));
  REQUIRE(audit.size() == 1);
  CHECK(audit[0].find("\"action\":\"user.create\"") != std::string::npos);
  CHECK(service.totals().executions == 25);
}

TEST_CASE("the retention service deletes nothing when the archive cannot be written", "[retention]") {
  qf::testing::QuietLog quiet;
  qf::testing::TempDir dir;
  boost::asio::io_context io;
  auto store = open_store(io, Backend::sqlite);
  const std::int64_t old = qf::detail::now_unix_ms() - 40 * k_day_ms;
  in_tx(io, *store, [&](qf::StoreTransaction& tx) {
    tx.upsert_execution(execution("old", "t", "h", old, v1::EXECUTION_STATUS_SUCCESS, 10));
  });
  // A file where the archive directory should be: every write fails.
  std::ofstream(dir.file("not-a-dir")) << "x";
  qf::detail::RetentionOptions options;
  options.archive_dir = dir.file("not-a-dir");
  qf::detail::RetentionService service(io.get_executor(), *store, options);
  std::optional<qf::error_code> result;
  service.run_pass([&](qf::error_code ec, qf::detail::RetentionCounts) { result = ec; });
  run_until(io, [&] { return result.has_value(); });
  REQUIRE(result);
  CHECK(*result);
  std::optional<v1::Execution> kept;
  in_tx(io, *store, [&](qf::StoreTransaction& tx) { kept = tx.execution("old"); });
  CHECK(kept);
}
