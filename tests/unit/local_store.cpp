// SPDX-License-Identifier: Apache-2.0
// LocalStore: round trips, upserts, daily stats, truncation, logs, sync queue, config, purge,
// read-only access, group commit, failed batches, and durability across kill -9.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <filesystem>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <catch2/catch.hpp>

#include "full_disk_vfs.hpp"
#include "quiet_log.hpp"
#include "temp_dir.hpp"
#include <date/tz.h>
#include <fmt/format.h>
#include <google/protobuf/util/message_differencer.h>
#include <sqlite3.h>

#include <quartzflow/local_store.hpp>
#include <quartzflow/log.hpp>
#include <quartzflow/v1/config.pb.h>

extern char** environ;

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;
using std::chrono::milliseconds;

namespace {

using quartzflow::testing::TempDir;

std::int64_t unix_ms(const char* rfc3339) {
  const auto t = qf::parse_rfc3339(rfc3339);
  REQUIRE(t);
  return std::chrono::duration_cast<milliseconds>(t->time_since_epoch()).count();
}

qf::Instant instant_of(std::int64_t ms) {
  return std::chrono::floor<std::chrono::seconds>(std::chrono::sys_time<milliseconds>{milliseconds{ms}});
}

/// A record of `task` fired at `scheduled`; started/duration 0 = never started.
v1::Execution make_record(const std::string& task, std::int64_t scheduled, v1::ExecutionStatus status,
                          std::int64_t started = 0, std::int64_t duration = 0) {
  v1::Execution r;
  r.set_execution_id(fmt::format("{}:{}:agent-1", task, scheduled));
  r.set_task_id(task);
  r.set_task_name(task + " name");
  r.set_agent_id("agent-1");
  r.set_status(status);
  r.set_trigger(v1::TRIGGER_TYPE_SCHEDULED);
  r.set_scheduled_unix_ms(scheduled);
  r.set_attempt(1);
  if (started != 0) {
    r.set_started_unix_ms(started);
    if (duration != 0) {
      r.set_duration_ms(duration);
      r.set_ended_unix_ms(started + duration);
    }
  }
  return r;
}

qf::LocalStoreOptions memory_options() {
  qf::LocalStoreOptions options;
  options.path = ":memory:";
  options.max_batch_delay = milliseconds{0};
  return options;
}

std::unique_ptr<qf::LocalStore> open_store(boost::asio::io_context& io, qf::LocalStoreOptions options) {
  qf::error_code ec;
  std::string detail;
  auto store = qf::LocalStore::open(io.get_executor(), std::move(options), ec, &detail);
  INFO(detail);
  REQUIRE_FALSE(ec);
  REQUIRE(store);
  return store;
}

/// Records and waits for the completion; returns its error code.
qf::error_code record(boost::asio::io_context& io, qf::LocalStore& store, v1::Execution r,
                      std::string log = {}) {
  std::optional<qf::error_code> result;
  store.async_record(std::move(r), std::move(log), [&](qf::error_code ec) { result = ec; });
  io.restart();
  io.run_for(std::chrono::seconds(10));
  REQUIRE(result);
  return *result;
}

qf::error_code mark_synced(boost::asio::io_context& io, qf::LocalStore& store, std::vector<std::string> ids) {
  std::optional<qf::error_code> result;
  store.async_mark_synced(std::move(ids), [&](qf::error_code ec) { result = ec; });
  io.restart();
  io.run_for(std::chrono::seconds(10));
  REQUIRE(result);
  return *result;
}

std::optional<v1::Execution> get(const qf::LocalStore& store, const std::string& id) {
  qf::error_code ec;
  auto r = store.execution(id, ec);
  REQUIRE_FALSE(ec);
  return r;
}

std::vector<v1::DailyStats> stats(const qf::LocalStore& store, std::optional<std::string> task = std::nullopt,
                                  const char* from = "1970-01-01", const char* to = "9999-12-31") {
  qf::error_code ec;
  auto s = store.daily_stats(from, to, std::move(task), ec);
  REQUIRE_FALSE(ec);
  return s;
}

std::vector<std::string> ids_of(const std::vector<v1::Execution>& records) {
  std::vector<std::string> out;
  for (const auto& r : records) out.push_back(r.execution_id());
  return out;
}

struct LocalDay {
  std::string date;
  int hour;
};

LocalDay local_day(const char* zone, std::int64_t ms) {
  const auto local = date::locate_zone(zone)->to_local(date::sys_time<milliseconds>{milliseconds{ms}});
  const auto day = date::floor<date::days>(local);
  return {date::format("%F", day), static_cast<int>(date::floor<std::chrono::hours>(local - day).count())};
}

}  // namespace

TEST_CASE("an execution round-trips through the store with its log", "[local_store]") {
  boost::asio::io_context io;
  auto store = open_store(io, memory_options());
  auto r = make_record("backup", unix_ms("2026-03-01T02:00:00Z"), v1::EXECUTION_STATUS_FAILURE,
                       unix_ms("2026-03-01T02:00:01Z"), 1500);
  r.set_exit_code(2);
  r.set_output("disk full\n");
  r.set_error_message("exit 2");
  r.set_failure_reason("exit 2");
  (*r.mutable_params())["target"] = "/srv";
  (*r.mutable_params())["mode"] = "full";
  r.set_updated_unix_ms(unix_ms("2026-03-01T02:00:03Z"));
  REQUIRE_FALSE(record(io, *store, r, "line 1\ndisk full\n"));

  auto back = get(*store, r.execution_id());
  REQUIRE(back);
  CHECK_FALSE(back->synced());
  auto expected = r;
  expected.set_output_bytes(r.output().size());  // filled in from the output when it was 0
  CHECK(google::protobuf::util::MessageDifferencer::Equals(*back, expected));
  CHECK(back->has_exit_code());

  qf::error_code ec;
  CHECK(store->full_log(r.execution_id(), ec) == std::optional<std::string>("line 1\ndisk full\n"));
  CHECK_FALSE(store->full_log("nope", ec));
  CHECK_FALSE(get(*store, "nope"));
  CHECK(store->count_executions({}, ec) == 1);
}

TEST_CASE("execution queries filter, order and page", "[local_store]") {
  boost::asio::io_context io;
  auto store = open_store(io, memory_options());
  const auto t0 = unix_ms("2026-03-01T00:00:00Z");
  for (int i = 0; i < 6; ++i) {
    const auto status = i % 2 == 0 ? v1::EXECUTION_STATUS_SUCCESS : v1::EXECUTION_STATUS_FAILURE;
    REQUIRE_FALSE(record(io, *store, make_record(i < 4 ? "a" : "b", t0 + i * 60'000, status, t0 + i * 60'000, 10)));
  }
  qf::error_code ec;
  qf::ExecutionQuery query;
  query.task_id = "a";
  CHECK(ids_of(store->executions(query, ec)) ==
        std::vector<std::string>{fmt::format("a:{}:agent-1", t0 + 180'000), fmt::format("a:{}:agent-1", t0 + 120'000),
                                 fmt::format("a:{}:agent-1", t0 + 60'000), fmt::format("a:{}:agent-1", t0)});
  query.newest_first = false;
  query.limit = 2;
  query.offset = 1;
  CHECK(ids_of(store->executions(query, ec)) ==
        std::vector<std::string>{fmt::format("a:{}:agent-1", t0 + 60'000), fmt::format("a:{}:agent-1", t0 + 120'000)});
  CHECK(store->count_executions(query, ec) == 4);  // limit and offset do not count

  qf::ExecutionQuery failures;
  failures.status = v1::EXECUTION_STATUS_FAILURE;
  failures.scheduled_from = instant_of(t0 + 60'000);
  failures.scheduled_to = instant_of(t0 + 300'000);  // exclusive: b's failure at +300 s is out
  CHECK(ids_of(store->executions(failures, ec)) ==
        std::vector<std::string>{fmt::format("a:{}:agent-1", t0 + 180'000), fmt::format("a:{}:agent-1", t0 + 60'000)});
  failures.scheduled_to = instant_of(t0 + 301'000);
  CHECK(store->count_executions(failures, ec) == 3);
  CHECK_FALSE(ec);
}

TEST_CASE("recording an execution again is an upsert that is counted once", "[local_store]") {
  boost::asio::io_context io;
  auto store = open_store(io, memory_options());
  const auto scheduled = unix_ms("2026-03-01T10:00:00Z");
  const auto started = scheduled + 500;
  const auto id = make_record("t", scheduled, v1::EXECUTION_STATUS_PENDING).execution_id();

  REQUIRE_FALSE(record(io, *store, make_record("t", scheduled, v1::EXECUTION_STATUS_PENDING)));
  REQUIRE_FALSE(record(io, *store, make_record("t", scheduled, v1::EXECUTION_STATUS_RUNNING, started)));
  CHECK(stats(*store).empty());  // not final yet: nothing counted

  auto done = make_record("t", scheduled, v1::EXECUTION_STATUS_SUCCESS, started, 2000);
  REQUIRE_FALSE(record(io, *store, done, "first log"));
  REQUIRE_FALSE(record(io, *store, done, "first log"));  // the same report again
  done.set_output("late output");                         // a merged repeat with more detail
  REQUIRE_FALSE(record(io, *store, done));
  // A stale RUNNING report after the final state is ignored.
  REQUIRE_FALSE(record(io, *store, make_record("t", scheduled, v1::EXECUTION_STATUS_RUNNING, started)));

  qf::error_code ec;
  CHECK(store->count_executions({}, ec) == 1);
  const auto back = get(*store, id);
  REQUIRE(back);
  CHECK(back->status() == v1::EXECUTION_STATUS_SUCCESS);
  CHECK(back->output() == "late output");
  CHECK(store->full_log(id, ec) == std::optional<std::string>("first log"));  // a repeat without a log keeps it
  const auto s = stats(*store);
  REQUIRE(s.size() == 1);
  CHECK(s[0].total() == 1);
  CHECK(s[0].success() == 1);
  CHECK(s[0].total_duration_ms() == 2000);
  CHECK(store->unfinished(ec).empty());
}

TEST_CASE("daily stats count by local day and start hour of the stats time zone", "[local_store]") {
  boost::asio::io_context io;
  auto options = memory_options();
  options.stats_time_zone = "America/New_York";  // EST -5 until 2026-03-08 02:00, then EDT -4
  auto store = open_store(io, options);
  auto ran = [&](const char* start, std::int64_t duration, v1::ExecutionStatus status) {
    const auto s = unix_ms(start);
    REQUIRE_FALSE(record(io, *store, make_record("job", s - 1000, status, s, duration)));
  };
  ran("2026-03-08T04:30:00Z", 100, v1::EXECUTION_STATUS_SUCCESS);  // 03-07 23:30 EST
  ran("2026-03-08T05:10:00Z", 300, v1::EXECUTION_STATUS_SUCCESS);  // 03-08 00:10 EST
  ran("2026-03-08T07:30:00Z", 500, v1::EXECUTION_STATUS_FAILURE);  // 03-08 03:30 EDT
  ran("2026-03-08T07:45:00Z", 200, v1::EXECUTION_STATUS_TIMEOUT);  // 03-08 03:45 EDT
  // Never started: dated by the scheduled time; cancelled counts in total, skipped does not.
  auto never_ran = [&](const char* scheduled, v1::ExecutionStatus status) {
    REQUIRE_FALSE(record(io, *store, make_record("job", unix_ms(scheduled), status)));
  };
  never_ran("2026-03-08T16:00:00Z", v1::EXECUTION_STATUS_CANCELLED);
  never_ran("2026-03-08T17:00:00Z", v1::EXECUTION_STATUS_SKIPPED);
  never_ran("2026-03-09T03:59:00Z", v1::EXECUTION_STATUS_MISSED);
  REQUIRE_FALSE(record(io, *store, make_record("other", unix_ms("2026-03-08T12:00:00Z"), v1::EXECUTION_STATUS_SUCCESS,
                                               unix_ms("2026-03-08T12:00:00Z"), 7)));

  const auto all = stats(*store, "job");
  REQUIRE(all.size() == 2);
  const auto& sat = all[0];
  CHECK(sat.date() == "2026-03-07");
  CHECK(sat.time_zone() == "America/New_York");
  CHECK(sat.task_name() == "job name");
  CHECK(sat.agent_id() == "agent-1");
  CHECK(sat.total() == 1);
  CHECK(sat.runs_per_hour_size() == 24);
  CHECK(sat.runs_per_hour(23) == 1);

  const auto& sun = all[1];
  CHECK(sun.date() == "2026-03-08");
  CHECK(sun.total() == 4);  // success, failure, timeout, cancelled
  CHECK(sun.success() == 1);
  CHECK(sun.failure() == 1);
  CHECK(sun.timeout() == 1);
  CHECK(sun.cancelled() == 1);
  CHECK(sun.skipped() == 1);
  CHECK(sun.missed() == 1);  // 2026-03-09T03:59Z is 23:59 EDT on the 8th
  CHECK(sun.total_duration_ms() == 1000);
  CHECK(sun.avg_duration_ms() == 333);  // over the 3 runs that started
  CHECK(sun.min_duration_ms() == 200);
  CHECK(sun.max_duration_ms() == 500);
  std::vector<std::uint32_t> hours(sun.runs_per_hour().begin(), sun.runs_per_hour().end());
  std::vector<std::uint32_t> expected(24, 0);
  expected[0] = 1;   // 00:10 EST
  expected[3] = 2;   // 03:30 and 03:45 EDT (02:00-02:59 does not exist that day)
  expected[12] = 1;  // the cancelled fire, 12:00 EDT
  CHECK(hours == expected);

  CHECK(stats(*store, std::nullopt, "2026-03-08", "2026-03-08").size() == 2);  // job and other
  CHECK(stats(*store, "other").size() == 1);
  qf::error_code ec;
  CHECK(store->daily_stats("2026-3-8", "2026-03-09", std::nullopt, ec).empty());
  CHECK(ec == qf::errc::invalid_argument);
}

TEST_CASE("output beyond output_head_bytes is cut at a UTF-8 boundary and flagged", "[local_store]") {
  boost::asio::io_context io;
  auto options = memory_options();
  options.output_head_bytes = 10;
  auto store = open_store(io, options);
  const auto t0 = unix_ms("2026-03-01T00:00:00Z");

  auto longer = make_record("t", t0, v1::EXECUTION_STATUS_SUCCESS, t0, 1);
  longer.set_output("abcdefghi\xE2\x82\xAC" "xyz");  // the euro sign spans bytes 9-11
  REQUIRE_FALSE(record(io, *store, longer));
  auto back = get(*store, longer.execution_id());
  REQUIRE(back);
  CHECK(back->output() == "abcdefghi");
  CHECK(back->output_truncated());
  CHECK(back->output_bytes() == 15);

  auto shorter = make_record("t", t0 + 1000, v1::EXECUTION_STATUS_SUCCESS, t0 + 1000, 1);
  shorter.set_output("0123456789");
  REQUIRE_FALSE(record(io, *store, shorter));
  back = get(*store, shorter.execution_id());
  REQUIRE(back);
  CHECK(back->output() == "0123456789");
  CHECK_FALSE(back->output_truncated());
  CHECK(back->output_bytes() == 10);

  auto counted = make_record("t", t0 + 2000, v1::EXECUTION_STATUS_SUCCESS, t0 + 2000, 1);
  counted.set_output(std::string(50, 'x'));
  counted.set_output_bytes(1'000'000);  // the executor saw more than it passed on: kept
  REQUIRE_FALSE(record(io, *store, counted));
  back = get(*store, counted.execution_id());
  REQUIRE(back);
  CHECK(back->output() == std::string(10, 'x'));
  CHECK(back->output_bytes() == 1'000'000);
}

TEST_CASE("full logs are kept for the last N runs of each task only", "[local_store]") {
  boost::asio::io_context io;
  auto options = memory_options();
  options.full_logs_per_task = 3;
  auto store = open_store(io, options);
  const auto t0 = unix_ms("2026-03-01T00:00:00Z");
  std::vector<std::string> a_ids;
  for (int i = 0; i < 5; ++i) {
    auto r = make_record("a", t0 + i * 60'000, v1::EXECUTION_STATUS_SUCCESS, t0 + i * 60'000, 5);
    a_ids.push_back(r.execution_id());
    REQUIRE_FALSE(record(io, *store, r, fmt::format("log a{}", i)));
  }
  std::vector<std::string> b_ids;
  for (int i = 0; i < 2; ++i) {
    auto r = make_record("b", t0 + i * 60'000, v1::EXECUTION_STATUS_SUCCESS, t0 + i * 60'000, 5);
    b_ids.push_back(r.execution_id());
    REQUIRE_FALSE(record(io, *store, r, fmt::format("log b{}", i)));
  }
  // A log given with a record that is not final is not kept.
  auto running = make_record("b", t0 + 600'000, v1::EXECUTION_STATUS_RUNNING, t0 + 600'000);
  REQUIRE_FALSE(record(io, *store, running, "partial"));

  qf::error_code ec;
  CHECK_FALSE(store->full_log(a_ids[0], ec));
  CHECK_FALSE(store->full_log(a_ids[1], ec));
  for (int i = 2; i < 5; ++i)
    CHECK(store->full_log(a_ids[static_cast<std::size_t>(i)], ec) ==
          std::optional<std::string>(fmt::format("log a{}", i)));
  CHECK(store->full_log(b_ids[0], ec) == std::optional<std::string>("log b0"));
  CHECK(store->full_log(b_ids[1], ec) == std::optional<std::string>("log b1"));
  CHECK_FALSE(store->full_log(running.execution_id(), ec));
  CHECK(store->count_executions({}, ec) == 8);  // the records themselves all stay
}

TEST_CASE("the sync queue holds new and changed records until they are acknowledged", "[local_store]") {
  boost::asio::io_context io;
  auto store = open_store(io, memory_options());
  const auto t0 = unix_ms("2026-03-01T00:00:00Z");
  std::vector<v1::Execution> records;
  for (int i = 0; i < 3; ++i) {
    records.push_back(make_record("t", t0 + (2 - i) * 60'000, v1::EXECUTION_STATUS_SUCCESS, t0, 1));
    REQUIRE_FALSE(record(io, *store, records.back()));
  }
  qf::error_code ec;
  auto queue = store->unsynced(10, ec);
  CHECK(ids_of(queue) == std::vector<std::string>{records[2].execution_id(), records[1].execution_id(),
                                                  records[0].execution_id()});  // oldest first
  CHECK(store->unsynced(2, ec).size() == 2);

  REQUIRE_FALSE(mark_synced(io, *store, {records[2].execution_id(), records[1].execution_id(), "unknown"}));
  CHECK(ids_of(store->unsynced(10, ec)) == std::vector<std::string>{records[0].execution_id()});
  CHECK(get(*store, records[2].execution_id())->synced());

  // The same record again changes nothing: it stays acknowledged.
  REQUIRE_FALSE(record(io, *store, records[2]));
  CHECK(get(*store, records[2].execution_id())->synced());
  // A changed record must be reported again.
  records[1].set_error_message("amended");
  REQUIRE_FALSE(record(io, *store, records[1]));
  CHECK(ids_of(store->unsynced(10, ec)) ==
        std::vector<std::string>{records[1].execution_id(), records[0].execution_id()});
  CHECK_FALSE(ec);
}

TEST_CASE("unfinished records and the last scheduled fire are what a restart needs", "[local_store]") {
  boost::asio::io_context io;
  auto store = open_store(io, memory_options());
  const auto t0 = unix_ms("2026-03-01T00:00:00Z");
  REQUIRE_FALSE(record(io, *store, make_record("t", t0, v1::EXECUTION_STATUS_SUCCESS, t0, 1)));
  REQUIRE_FALSE(record(io, *store, make_record("t", t0 + 60'000, v1::EXECUTION_STATUS_RUNNING, t0 + 60'000)));
  REQUIRE_FALSE(record(io, *store, make_record("t", t0 + 120'000, v1::EXECUTION_STATUS_PENDING)));
  auto manual = make_record("t", t0 + 600'000, v1::EXECUTION_STATUS_SUCCESS, t0 + 600'000, 1);
  manual.set_trigger(v1::TRIGGER_TYPE_MANUAL);
  REQUIRE_FALSE(record(io, *store, manual));

  qf::error_code ec;
  const auto open = store->unfinished(ec);
  REQUIRE(open.size() == 2);
  CHECK(open[0].status() == v1::EXECUTION_STATUS_RUNNING);
  CHECK(open[1].status() == v1::EXECUTION_STATUS_PENDING);
  CHECK(store->last_scheduled("t", ec) == instant_of(t0 + 120'000));  // the manual run does not count
  CHECK_FALSE(store->last_scheduled("other", ec));
  CHECK_FALSE(ec);

  // A misfire catch-up run is a fire of the schedule: the next restart resumes after it,
  // so it is never counted as missed again.
  auto catch_up = make_record("t", t0 + 180'000, v1::EXECUTION_STATUS_SUCCESS, t0 + 180'500, 1);
  catch_up.set_trigger(v1::TRIGGER_TYPE_MISFIRE_CATCHUP);
  REQUIRE_FALSE(record(io, *store, catch_up));
  CHECK(store->last_scheduled("t", ec) == instant_of(t0 + 180'000));
}

TEST_CASE("the first final state wins over a later, different one", "[local_store]") {
  boost::asio::io_context io;
  auto store = open_store(io, memory_options());
  const auto t0 = unix_ms("2026-03-01T00:00:00Z");
  const auto done = make_record("t", t0, v1::EXECUTION_STATUS_SUCCESS, t0, 5);
  REQUIRE_FALSE(record(io, *store, done));
  auto missed = make_record("t", t0, v1::EXECUTION_STATUS_MISSED);
  REQUIRE_FALSE(record(io, *store, missed));
  CHECK(get(*store, done.execution_id())->status() == v1::EXECUTION_STATUS_SUCCESS);
  qf::error_code ec;
  const auto stats = store->daily_stats("2026-03-01", "2026-03-01", std::nullopt, ec);
  REQUIRE(stats.size() == 1);
  CHECK(stats[0].total() == 1);
  CHECK(stats[0].success() == 1);
  CHECK(stats[0].missed() == 0);
}

TEST_CASE("invalid records are refused without failing their companions", "[local_store]") {
  boost::asio::io_context io;
  auto options = memory_options();
  options.max_batch_delay = milliseconds{50};
  auto store = open_store(io, options);
  bool returned = false;
  std::vector<qf::error_code> results(3);
  auto no_id = make_record("t", 1000, v1::EXECUTION_STATUS_SUCCESS);
  no_id.clear_execution_id();
  auto no_status = make_record("t", 2000, v1::EXECUTION_STATUS_UNSPECIFIED);
  store->async_record(no_id, "", [&](qf::error_code ec) {
    CHECK(returned);  // never invoked inside the initiating call
    results[0] = ec;
  });
  store->async_record(make_record("t", 3000, v1::EXECUTION_STATUS_SUCCESS), "",
                      [&](qf::error_code ec) { results[1] = ec; });
  store->async_record(no_status, "", [&](qf::error_code ec) { results[2] = ec; });
  returned = true;
  io.run_for(std::chrono::seconds(10));  // returns once every completion ran: they are work
  CHECK(results[0] == qf::errc::invalid_argument);
  CHECK_FALSE(results[1]);
  CHECK(results[2] == qf::errc::invalid_argument);
  qf::error_code ec;
  CHECK(store->count_executions({}, ec) == 1);
}

TEST_CASE("the cached configuration is replaced as a whole and survives a reopen", "[local_store]") {
  TempDir dir;
  boost::asio::io_context io;
  qf::LocalStoreOptions options;
  options.path = dir.file("agent.db");
  auto save = [&](qf::LocalStore& store, qf::CachedConfig config) {
    std::optional<qf::error_code> result;
    store.async_save_config(std::move(config), [&](qf::error_code ec) { result = ec; });
    io.restart();
    io.run_for(std::chrono::seconds(10));
    REQUIRE(result);
    REQUIRE_FALSE(*result);
  };
  {
    auto store = open_store(io, options);
    qf::error_code ec;
    const auto empty = store->cached_config(ec);
    CHECK_FALSE(ec);
    CHECK(empty.version == 0);
    CHECK(empty.tasks.empty());
    qf::CachedConfig config;
    config.version = 3;
    config.tasks.resize(2);
    config.tasks[0].set_id("t1");
    config.tasks[0].set_name("backup");
    config.tasks[1].set_id("t2");
    config.tasks[1].set_name("cleanup");
    save(*store, config);
    CHECK(store->cached_config(ec).tasks.size() == 2);
    config.version = 4;
    config.tasks.pop_back();
    save(*store, config);
  }
  options.read_only = true;
  auto reopened = open_store(io, options);
  qf::error_code ec;
  const auto config = reopened->cached_config(ec);
  CHECK_FALSE(ec);
  CHECK(config.version == 4);
  REQUIRE(config.tasks.size() == 1);
  CHECK(config.tasks[0].id() == "t1");
  CHECK(config.tasks[0].name() == "backup");
}

namespace {

v1::Task config_task(const std::string& id, std::int64_t revision = 1) {
  v1::Task task;
  task.set_id(id);
  task.set_name(id);
  task.set_enabled(true);
  task.set_revision(revision);
  task.mutable_shell()->set_script("true");
  return task;
}

void wait_saved(boost::asio::io_context& io, const std::optional<qf::error_code>& result) {
  io.restart();
  io.run_for(std::chrono::seconds(10));
  REQUIRE(result);
  REQUIRE_FALSE(*result);
}

}  // namespace

TEST_CASE("a config delta writes only the rows of the tasks it changes and survives a reopen", "[local_store]") {
  TempDir dir;
  boost::asio::io_context io;
  qf::LocalStoreOptions options;
  options.path = dir.file("agent.db");
  {
    auto store = open_store(io, options);
    qf::CachedConfig full;
    full.version = 1;
    for (int i = 0; i < 1000; ++i) full.tasks.push_back(config_task(fmt::format("t{:04}", i)));
    std::optional<qf::error_code> result;
    store->async_save_config(std::move(full), [&](qf::error_code ec) { result = ec; });
    wait_saved(io, result);
    CHECK(store->metrics().config_rows_written == 1000);
    // 100 deltas of one task each (registration one task at a time): 100 rows, not 100 x 1,000.
    for (int i = 0; i < 100; ++i) {
      result.reset();
      store->async_save_config_delta(
          qf::CachedConfigDelta{{config_task(fmt::format("n{:04}", i))}, {}, static_cast<std::uint64_t>(2 + i)},
          [&](qf::error_code ec) { result = ec; });
      wait_saved(io, result);
    }
    CHECK(store->metrics().config_rows_written == 1100);
    result.reset();
    store->async_save_config_delta(qf::CachedConfigDelta{{config_task("t0001", 7)}, {"t0000", "n0000"}, 200},
                                   [&](qf::error_code ec) { result = ec; });
    wait_saved(io, result);
    CHECK(store->metrics().config_rows_written == 1103);
  }
  options.read_only = true;
  auto reopened = open_store(io, options);
  qf::error_code ec;
  const auto config = reopened->cached_config(ec);
  REQUIRE_FALSE(ec);
  CHECK(config.version == 200);
  REQUIRE(config.tasks.size() == 1098);
  std::map<std::string, std::int64_t> revisions;
  for (const auto& t : config.tasks) revisions[t.id()] = t.revision();
  CHECK(revisions.count("t0000") == 0);
  CHECK(revisions.count("n0000") == 0);
  CHECK(revisions["t0001"] == 7);
  CHECK(revisions.count("n0099") == 1);
  CHECK(config.tasks.front().enabled());
}

TEST_CASE("a configuration cached by schema 1 as one blob is read, and a delta turns it into rows", "[local_store]") {
  TempDir dir;
  const std::string path = dir.file("agent.db");
  {
    // A store as schema 1 left it: the whole configuration in the `config` row's blob (a
    // new store taken back to schema 1: its changes since are the config_tasks and meta tables).
    boost::asio::io_context make_io;
    qf::LocalStoreOptions make_options;
    make_options.path = path;
    open_store(make_io, make_options).reset();
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    v1::TaskManifest manifest;
    *manifest.add_tasks() = config_task("a");
    *manifest.add_tasks() = config_task("b");
    const std::string blob = manifest.SerializeAsString();
    REQUIRE(sqlite3_exec(db, "DROP TABLE config_tasks; DROP TABLE meta; PRAGMA user_version = 1;", nullptr, nullptr,
                         nullptr) == SQLITE_OK);
    sqlite3_stmt* insert = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, "INSERT INTO config (id, version, tasks) VALUES (1, 5, ?1)", -1, &insert,
                               nullptr) == SQLITE_OK);
    sqlite3_bind_blob(insert, 1, blob.data(), static_cast<int>(blob.size()), SQLITE_TRANSIENT);
    CHECK(sqlite3_step(insert) == SQLITE_DONE);
    sqlite3_finalize(insert);
    sqlite3_close(db);
  }
  boost::asio::io_context io;
  qf::LocalStoreOptions options;
  options.path = path;
  auto store = open_store(io, options);  // migrates to the current schema
  qf::error_code ec;
  auto config = store->cached_config(ec);
  REQUIRE_FALSE(ec);
  CHECK(config.version == 5);
  CHECK(config.tasks.size() == 2);
  std::optional<qf::error_code> result;
  store->async_save_config_delta(qf::CachedConfigDelta{{config_task("c")}, {"a"}, 6},
                                 [&](qf::error_code e) { result = e; });
  wait_saved(io, result);
  config = store->cached_config(ec);
  REQUIRE_FALSE(ec);
  CHECK(config.version == 6);
  REQUIRE(config.tasks.size() == 2);
  CHECK(config.tasks[0].id() == "b");
  CHECK(config.tasks[1].id() == "c");
}

TEST_CASE("purge removes records, logs and stats older than the retention", "[local_store]") {
  boost::asio::io_context io;
  auto options = memory_options();
  options.retention = std::chrono::hours{48};
  options.purge_unsynced = true;  // a standalone agent
  auto store = open_store(io, options);
  const auto now = unix_ms("2026-03-10T12:00:00Z");
  const auto old_ms = unix_ms("2026-03-05T12:00:00Z");
  const auto recent_ms = unix_ms("2026-03-09T12:00:00Z");
  const auto old = make_record("t", old_ms, v1::EXECUTION_STATUS_SUCCESS, old_ms, 1);
  const auto stale_running = make_record("t", old_ms + 1000, v1::EXECUTION_STATUS_RUNNING, old_ms + 1000);
  const auto recent = make_record("t", recent_ms, v1::EXECUTION_STATUS_SUCCESS, recent_ms, 1);
  REQUIRE_FALSE(record(io, *store, old, "old log"));
  REQUIRE_FALSE(record(io, *store, stale_running));
  REQUIRE_FALSE(record(io, *store, recent, "recent log"));
  REQUIRE(stats(*store).size() == 2);

  std::optional<qf::error_code> result;
  std::uint64_t purged = 0;
  store->async_purge(instant_of(now), [&](qf::error_code ec, std::uint64_t n) {
    result = ec;
    purged = n;
  });
  io.restart();
  io.run_for(std::chrono::seconds(10));
  REQUIRE(result);
  REQUIRE_FALSE(*result);
  CHECK(purged == 1);
  qf::error_code ec;
  CHECK_FALSE(get(*store, old.execution_id()));
  CHECK_FALSE(store->full_log(old.execution_id(), ec));
  CHECK(get(*store, stale_running.execution_id()));  // still owed a final state
  CHECK(get(*store, recent.execution_id()));
  CHECK(store->full_log(recent.execution_id(), ec) == std::optional<std::string>("recent log"));
  const auto left = stats(*store);
  REQUIRE(left.size() == 1);
  CHECK(left[0].date() == "2026-03-09");
}

TEST_CASE("purge keeps records the coordinator has not acknowledged yet", "[local_store]") {
  boost::asio::io_context io;
  auto options = memory_options();
  options.retention = std::chrono::hours{48};
  auto store = open_store(io, options);
  const auto now = unix_ms("2026-03-10T12:00:00Z");
  const auto old_ms = unix_ms("2026-03-05T12:00:00Z");
  const auto acked = make_record("t", old_ms, v1::EXECUTION_STATUS_SUCCESS, old_ms, 1);
  const auto unacked = make_record("t", old_ms + 1000, v1::EXECUTION_STATUS_FAILURE, old_ms + 1000, 1);
  REQUIRE_FALSE(record(io, *store, acked));
  REQUIRE_FALSE(record(io, *store, unacked));
  std::optional<qf::error_code> marked;
  store->async_mark_synced({acked.execution_id()}, [&](qf::error_code ec) { marked = ec; });
  io.restart();
  io.run_for(std::chrono::seconds(10));
  REQUIRE(marked);
  std::uint64_t purged = 0;
  store->async_purge(instant_of(now), [&](qf::error_code, std::uint64_t n) { purged = n; });
  io.restart();
  io.run_for(std::chrono::seconds(10));
  CHECK(purged == 1);
  CHECK_FALSE(get(*store, acked.execution_id()));
  CHECK(get(*store, unacked.execution_id()));  // still owed to the coordinator
}

TEST_CASE("purge keeps an old record that never reached the coordinator with its log until it is acknowledged",
          "[local_store]") {
  boost::asio::io_context io;
  auto options = memory_options();
  options.retention = std::chrono::hours{48};
  auto store = open_store(io, options);
  const auto old_ms = unix_ms("2026-03-01T12:00:00Z");
  const auto unsynced = make_record("t", old_ms, v1::EXECUTION_STATUS_SUCCESS, old_ms, 1);
  REQUIRE_FALSE(record(io, *store, unsynced, "log the coordinator has not read"));
  const auto purge = [&](const char* at) {
    std::optional<qf::error_code> done;
    std::uint64_t purged = 0;
    store->async_purge(instant_of(unix_ms(at)), [&](qf::error_code ec, std::uint64_t n) {
      done = ec;
      purged = n;
    });
    io.restart();
    io.run_for(std::chrono::seconds(10));
    REQUIRE(done);
    REQUIRE_FALSE(*done);
    return purged;
  };
  // Weeks past the retention (an agent cut off from its coordinator): nothing goes.
  CHECK(purge("2026-03-10T12:00:00Z") == 0);
  CHECK(purge("2026-04-30T12:00:00Z") == 0);
  qf::error_code ec;
  CHECK(get(*store, unsynced.execution_id()));
  CHECK(store->full_log(unsynced.execution_id(), ec) == std::optional<std::string>("log the coordinator has not read"));
  const auto queue = store->unsynced(10, ec);
  REQUIRE_FALSE(ec);
  REQUIRE(queue.size() == 1);
  CHECK(queue[0].execution_id() == unsynced.execution_id());
  // Once the coordinator acknowledges it, the next purge removes the record and its log.
  std::optional<qf::error_code> marked;
  store->async_mark_synced({unsynced.execution_id()}, [&](qf::error_code e) { marked = e; });
  io.restart();
  io.run_for(std::chrono::seconds(10));
  REQUIRE(marked);
  CHECK(purge("2026-04-30T12:00:00Z") == 1);
  CHECK_FALSE(get(*store, unsynced.execution_id()));
  CHECK_FALSE(store->full_log(unsynced.execution_id(), ec));
}

TEST_CASE("a read-only store reads while a writer has the file open", "[local_store]") {
  TempDir dir;
  boost::asio::io_context io;
  qf::LocalStoreOptions options;
  options.path = dir.file("agent.db");
  auto writer = open_store(io, options);
  const auto t0 = unix_ms("2026-03-01T00:00:00Z");
  REQUIRE_FALSE(record(io, *writer, make_record("t", t0, v1::EXECUTION_STATUS_SUCCESS, t0, 1)));

  auto ro_options = options;
  ro_options.read_only = true;
  auto reader = open_store(io, ro_options);
  qf::error_code ec;
  CHECK(reader->count_executions({}, ec) == 1);
  REQUIRE_FALSE(record(io, *writer, make_record("t", t0 + 1000, v1::EXECUTION_STATUS_SUCCESS, t0 + 1000, 1)));
  CHECK(reader->count_executions({}, ec) == 2);  // sees each commit of the writer
  CHECK(stats(*reader).at(0).total() == 2);
  CHECK_FALSE(ec);

  CHECK(record(io, *reader, make_record("t", t0 + 2000, v1::EXECUTION_STATUS_SUCCESS)) == qf::errc::store_read_only);
  CHECK(writer->count_executions({}, ec) == 2);
}

TEST_CASE("opening a missing store read-only fails with a clear error", "[local_store]") {
  TempDir dir;
  boost::asio::io_context io;
  qf::LocalStoreOptions options;
  options.path = dir.file("absent.db");
  options.read_only = true;
  qf::error_code ec;
  std::string detail;
  CHECK_FALSE(qf::LocalStore::open(io.get_executor(), options, ec, &detail));
  CHECK(ec == qf::errc::store_not_found);
  CHECK(detail == "no agent store at " + options.path);
  CHECK_FALSE(std::filesystem::exists(options.path));  // and nothing was created

  options.read_only = false;
  options.stats_time_zone = "Mars/Olympus_Mons";
  CHECK_FALSE(qf::LocalStore::open(io.get_executor(), options, ec, &detail));
  CHECK(ec == qf::errc::unknown_time_zone);
  CHECK(detail == "stats_time_zone: unknown time zone \"Mars/Olympus_Mons\"");
}

TEST_CASE("many writes in flight are group-committed and complete after their commit", "[local_store]") {
  TempDir dir;
  boost::asio::io_context io;
  qf::LocalStoreOptions options;
  options.path = dir.file("agent.db");
  options.max_batch_delay = milliseconds{5};
  auto store = open_store(io, options);
  constexpr int k_writes = 2000;
  const auto t0 = unix_ms("2026-03-01T00:00:00Z");
  int completed = 0;
  int visible_at_completion = 0;
  for (int i = 0; i < k_writes; ++i) {
    auto r = make_record("t", t0 + i * 1000, v1::EXECUTION_STATUS_SUCCESS, t0 + i * 1000, 1);
    store->async_record(r, "", [&, id = r.execution_id()](qf::error_code ec) {
      CHECK_FALSE(ec);
      ++completed;
      // The read connection is another connection: it sees the record only once committed.
      if (get(*store, id)) ++visible_at_completion;
    });
  }
  io.run_for(std::chrono::seconds(10));
  CHECK(completed == k_writes);
  CHECK(visible_at_completion == k_writes);
  const auto metrics = store->metrics();
  CHECK(metrics.writes_committed == k_writes);
  CHECK(metrics.writes_failed == 0);
  CHECK(metrics.batches_committed < k_writes / 10);
  qf::error_code ec;
  CHECK(stats(*store).at(0).total() == k_writes);
}

TEST_CASE("destroying the store commits the writes still queued", "[local_store]") {
  TempDir dir;
  boost::asio::io_context io;
  qf::LocalStoreOptions options;
  options.path = dir.file("agent.db");
  options.max_batch_delay = milliseconds{100};
  int succeeded = 0;
  {
    auto store = open_store(io, options);
    for (int i = 0; i < 100; ++i)
      store->async_record(make_record("t", 1000 * (i + 1), v1::EXECUTION_STATUS_SKIPPED), "",
                          [&](qf::error_code ec) { succeeded += ec ? 0 : 1; });
  }
  io.run_for(std::chrono::seconds(10));  // the completions were posted before the store went
  CHECK(succeeded == 100);
  auto reopened = open_store(io, options);
  qf::error_code ec;
  CHECK(reopened->count_executions({}, ec) == 100);
}

TEST_CASE("a failing batch fails every write in it and writes none of them", "[local_store]") {
  TempDir dir;
  boost::asio::io_context io;
  qf::LocalStoreOptions options;
  options.path = dir.file("agent.db");
  options.max_batch_delay = milliseconds{300};  // long enough for the three writes to share a batch
  open_store(io, options).reset();              // creates the schema
  {
    // Fault injection: a trigger that aborts the insert of one particular record.
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(options.path.c_str(), &db) == SQLITE_OK);
    const char* sql =
        "CREATE TRIGGER poison BEFORE INSERT ON executions WHEN NEW.execution_id = 'poison' "
        "BEGIN SELECT RAISE(ABORT, 'injected failure'); END";
    const int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
    sqlite3_close(db);
    REQUIRE(rc == SQLITE_OK);
  }
  auto store = open_store(io, options);
  // The failure is expected: keep its error lines out of the test output.
  const quartzflow::testing::QuietLog quiet;
  const auto good1 = make_record("t", 1000, v1::EXECUTION_STATUS_SUCCESS, 1000, 5);
  const auto good2 = make_record("t", 2000, v1::EXECUTION_STATUS_SUCCESS, 2000, 5);
  auto poison = make_record("t", 3000, v1::EXECUTION_STATUS_SUCCESS, 3000, 5);
  poison.set_execution_id("poison");
  std::vector<qf::error_code> results;
  for (const v1::Execution* r : std::array<const v1::Execution*, 3>{&good1, &poison, &good2})
    store->async_record(*r, "log", [&](qf::error_code ec) { results.push_back(ec); });
  io.run_for(std::chrono::seconds(10));
  REQUIRE(results.size() == 3);
  for (const auto& ec : results) CHECK(ec == qf::errc::store_failed);
  CHECK_FALSE(get(*store, good1.execution_id()));
  CHECK_FALSE(get(*store, good2.execution_id()));
  qf::error_code ec;
  CHECK_FALSE(store->full_log(good1.execution_id(), ec));
  CHECK(stats(*store).empty());
  CHECK(store->metrics().writes_failed == 3);

  // The store keeps working: the same record alone commits.
  REQUIRE_FALSE(record(io, *store, good1));
  CHECK(get(*store, good1.execution_id()));
  CHECK(stats(*store).at(0).total() == 1);
}

TEST_CASE("a full disk fails writes as disk full, keeps what was committed, and a probe commits once space returns",
          "[local_store]") {
  quartzflow::testing::FullDiskVfs disk;  // before the store: its connections go through it
  TempDir dir;
  boost::asio::io_context io;
  qf::LocalStoreOptions options;
  options.path = dir.file("agent.db");
  auto store = open_store(io, options);
  const quartzflow::testing::QuietLog quiet;
  const auto before = make_record("t", 1000, v1::EXECUTION_STATUS_SUCCESS, 1000, 5);
  const auto during = make_record("t", 2000, v1::EXECUTION_STATUS_SUCCESS, 2000, 5);
  REQUIRE_FALSE(record(io, *store, before, "log before"));
  CHECK_FALSE(store->last_write_error());

  disk.set_full(true);
  CHECK(record(io, *store, during, "log during") == qf::errc::store_failed);
  CHECK(disk.refused_writes() > 0);
  const auto error = store->last_write_error();
  REQUIRE(error);
  CHECK(error->disk_full);
  CHECK(error->message.find("full") != std::string::npos);
  CHECK(error->unix_ms > 0);
  CHECK(store->metrics().writes_failed_disk_full == 1);
  std::optional<qf::error_code> probed;
  store->async_probe([&](qf::error_code ec) { probed = ec; });
  io.restart();
  io.run_for(std::chrono::seconds(10));
  REQUIRE(probed);
  CHECK(*probed == qf::errc::store_failed);
  CHECK(store->metrics().writes_failed_disk_full == 2);
  // What was committed stays readable; what failed is not there, not even in part.
  CHECK(get(*store, before.execution_id()));
  CHECK_FALSE(get(*store, during.execution_id()));
  qf::error_code ec;
  CHECK(store->full_log(before.execution_id(), ec) == std::optional<std::string>("log before"));
  CHECK(stats(*store).at(0).total() == 1);

  disk.set_full(false);
  probed.reset();
  store->async_probe([&](qf::error_code e) { probed = e; });
  io.restart();
  io.run_for(std::chrono::seconds(10));
  REQUIRE(probed);
  CHECK_FALSE(*probed);
  CHECK_FALSE(store->last_write_error());
  CHECK(store->count_executions({}, ec) == 1);  // the probe leaves nothing behind
  CHECK_FALSE(store->full_log("", ec));
  REQUIRE_FALSE(record(io, *store, during, "log during"));
  CHECK(get(*store, during.execution_id()));
  CHECK(stats(*store).at(0).total() == 2);
  store.reset();  // closes its connections before the VFS goes
}

// ---- crash test ----

namespace {

constexpr const char* k_crash_zone = "America/New_York";

/// Runs the crash writer on `path` for `run_time`, then kills it with SIGKILL. Appends the
/// ids it printed; `before_kill` runs while the writer is still alive.
void run_writer_then_kill(const std::string& path, milliseconds run_time, std::vector<std::string>& printed,
                          const std::function<void(const std::vector<std::string>&)>& before_kill,
                          std::string second_arg = k_crash_zone) {
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  std::string program = QUARTZFLOW_STORE_CRASH_WRITER;
  std::string path_arg = path;
  std::string zone_arg = std::move(second_arg);
  char* argv[] = {program.data(), path_arg.data(), zone_arg.data(), nullptr};
  pid_t pid = 0;
  const int spawned = ::posix_spawn(&pid, program.c_str(), &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(fds[1]);
  REQUIRE(spawned == 0);

  std::string pending;
  auto take_lines = [&] {
    std::size_t newline;
    while ((newline = pending.find('\n')) != std::string::npos) {
      printed.push_back(pending.substr(0, newline));
      pending.erase(0, newline + 1);
    }
  };
  auto read_some = [&](int timeout_ms) {
    pollfd p{fds[0], POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return true;
    char buffer[65536];
    const auto n = ::read(fds[0], buffer, sizeof buffer);
    if (n <= 0) return false;  // EOF: the writer is gone
    pending.append(buffer, static_cast<std::size_t>(n));
    take_lines();
    return true;
  };
  const auto deadline = std::chrono::steady_clock::now() + run_time;
  bool open = true;
  while (open && std::chrono::steady_clock::now() < deadline) {
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
    open = read_some(static_cast<int>(std::max<std::int64_t>(left.count(), 1)));
  }
  before_kill(printed);
  ::kill(pid, SIGKILL);
  while (open) open = read_some(-1);  // whatever it printed before it died
  ::close(fds[0]);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  INFO("the writer must still be running when it is killed (see its stderr)");
  REQUIRE(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGKILL);
  CHECK(pending.empty());  // a line is written whole or not at all
}

}  // namespace

TEST_CASE("every acknowledged write survives kill -9 and stats match the records", "[local_store][integration]") {
  TempDir dir;
  const std::string path = dir.file("agent.db");
  std::random_device seed_source;
  const auto seed = seed_source();
  INFO("seed " << seed);
  std::mt19937 random(seed);
  std::uniform_int_distribution<int> run_ms(50, 400);
  boost::asio::io_context io;
  qf::LocalStoreOptions reader_options;
  reader_options.path = path;
  reader_options.read_only = true;
  reader_options.stats_time_zone = k_crash_zone;

  std::vector<std::string> printed;
  int concurrent_reads = 0;
  for (int round = 0; round < 10; ++round) {
    run_writer_then_kill(path, milliseconds{run_ms(random)}, printed, [&](const std::vector<std::string>& so_far) {
      if (so_far.empty()) return;
      // Another process reading while the writer commits: every acknowledged id is there.
      qf::error_code ec;
      std::string detail;
      auto reader = qf::LocalStore::open(io.get_executor(), reader_options, ec, &detail);
      INFO(detail);
      REQUIRE(reader);
      for (std::size_t i = so_far.size() - std::min<std::size_t>(so_far.size(), 20); i < so_far.size(); ++i)
        CHECK(reader->execution(so_far[i], ec));
      ++concurrent_reads;
    });
  }
  CHECK(concurrent_reads >= 5);
  REQUIRE(printed.size() > 100);

  auto store = open_store(io, reader_options);
  qf::error_code ec;
  const std::set<std::string> unique(printed.begin(), printed.end());
  CHECK(unique.size() == printed.size());  // no id acknowledged twice: the writer resumed after them
  int missing = 0;
  int not_final = 0;
  for (const auto& id : printed) {
    const auto r = store->execution(id, ec);
    if (!r) {
      ++missing;
      continue;
    }
    if (r->status() < v1::EXECUTION_STATUS_SUCCESS) ++not_final;
  }
  CHECK(missing == 0);
  CHECK(not_final == 0);

  // Stats recomputed from the records must equal the stored stats, day by day.
  qf::ExecutionQuery everything;
  everything.limit = 10'000'000;
  const auto records = store->executions(everything, ec);
  REQUIRE_FALSE(ec);
  CHECK(records.size() >= printed.size());
  struct Expected {
    std::uint32_t final_records = 0, total = 0, success = 0, failure = 0, cancelled = 0, skipped = 0, missed = 0;
    std::int64_t duration = 0;
    std::vector<std::uint32_t> hours = std::vector<std::uint32_t>(24, 0);
  };
  std::map<std::string, Expected> expected;
  for (const auto& r : records) {
    if (r.status() < v1::EXECUTION_STATUS_SUCCESS) continue;
    const bool started = r.started_unix_ms() != 0;
    const auto day = local_day(k_crash_zone, started ? r.started_unix_ms() : r.scheduled_unix_ms());
    auto& e = expected[day.date];
    ++e.final_records;
    switch (r.status()) {
      case v1::EXECUTION_STATUS_SUCCESS: ++e.success; break;
      case v1::EXECUTION_STATUS_FAILURE: ++e.failure; break;
      case v1::EXECUTION_STATUS_CANCELLED: ++e.cancelled; break;
      case v1::EXECUTION_STATUS_SKIPPED: ++e.skipped; break;
      case v1::EXECUTION_STATUS_MISSED: ++e.missed; break;
      default: FAIL("unexpected status " << r.status());
    }
    if (r.status() != v1::EXECUTION_STATUS_SKIPPED && r.status() != v1::EXECUTION_STATUS_MISSED) {
      ++e.total;
      ++e.hours[static_cast<std::size_t>(day.hour)];
      e.duration += r.duration_ms();
    }
  }
  const auto stored = stats(*store, "crash");
  REQUIRE(stored.size() == expected.size());
  for (const auto& s : stored) {
    INFO("date " << s.date());
    REQUIRE(expected.count(s.date()) == 1);
    const auto& e = expected[s.date()];
    CHECK(s.total() + s.skipped() + s.missed() == e.final_records);
    CHECK(s.total() == e.total);
    CHECK(s.success() == e.success);
    CHECK(s.failure() == e.failure);
    CHECK(s.cancelled() == e.cancelled);
    CHECK(s.skipped() == e.skipped);
    CHECK(s.missed() == e.missed);
    CHECK(s.total_duration_ms() == e.duration);
    CHECK(std::vector<std::uint32_t>(s.runs_per_hour().begin(), s.runs_per_hour().end()) == e.hours);
  }
}

TEST_CASE("the write queue is bounded: a record beyond max_queued_bytes is refused at once and not stored",
          "[local_store]") {
  TempDir dir;
  boost::asio::io_context io;
  qf::LocalStoreOptions options;
  options.path = dir.file("agent.db");
  options.max_queued_bytes = 32 * 1024;
  options.max_batch_delay = milliseconds{500};  // the writer waits: the queue fills
  auto store = open_store(io, options);
  const std::string log(1024, 'x');
  int committed = 0, refused = 0, other = 0;
  std::size_t most_queued = 0;
  std::vector<std::string> refused_ids;
  for (int i = 0; i < 200; ++i) {
    auto r = make_record("t", 1000 * (i + 1), v1::EXECUTION_STATUS_SUCCESS);
    store->async_record(r, log, [&, id = r.execution_id()](qf::error_code ec) {
      if (!ec) {
        ++committed;
      } else if (ec == boost::system::errc::resource_unavailable_try_again) {
        ++refused;
        refused_ids.push_back(id);
      } else {
        ++other;
      }
    });
    most_queued = std::max<std::size_t>(most_queued, store->queued_bytes());
  }
  CHECK(most_queued <= options.max_queued_bytes);
  CHECK(store->metrics().queued_writes < 200);
  io.run_for(std::chrono::seconds(3));
  CHECK(other == 0);
  CHECK(committed + refused == 200);
  CHECK(committed >= 10);
  CHECK(refused >= 100);
  const auto metrics = store->metrics();
  CHECK(metrics.writes_refused_queue_full == static_cast<std::uint64_t>(refused));
  CHECK(metrics.writes_failed == 0);
  CHECK(metrics.queued_bytes == 0);
  CHECK(metrics.queued_writes == 0);
  qf::error_code ec;
  CHECK(store->count_executions({}, ec) == static_cast<std::uint64_t>(committed));
  for (const auto& id : refused_ids) CHECK_FALSE(get(*store, id));
  // Once the queue has drained, records are taken again.
  bool taken = false;
  store->async_record(make_record("t", 999'000, v1::EXECUTION_STATUS_SUCCESS), log,
                      [&](qf::error_code e) { taken = !e; });
  io.restart();
  io.run_for(std::chrono::seconds(2));
  CHECK(taken);
}

TEST_CASE("kill -9 while configuration deltas are saved leaves one whole version, never a mix",
          "[local_store][integration]") {
  TempDir dir;
  const std::string path = dir.file("agent.db");
  std::random_device seed_source;
  const auto seed = seed_source();
  INFO("seed " << seed);
  std::mt19937 random(seed);
  std::uniform_int_distribution<int> run_ms(150, 400);
  boost::asio::io_context io;
  qf::LocalStoreOptions reader_options;
  reader_options.path = path;
  reader_options.read_only = true;
  std::vector<std::string> printed;
  for (int round = 0; round < 8; ++round) {
    const auto printed_before = printed.size();
    run_writer_then_kill(path, milliseconds{run_ms(random)}, printed, [](const std::vector<std::string>&) {},
                         "config");
    REQUIRE(printed.size() > printed_before);  // it saved versions in this round
    auto store = open_store(io, reader_options);
    qf::error_code ec;
    const auto config = store->cached_config(ec);
    REQUIRE_FALSE(ec);
    // Every acknowledged version is kept; the one being saved at the kill may be, whole.
    const auto acknowledged = std::stoull(printed.back());
    CHECK(config.version >= acknowledged);
    CHECK(config.version <= acknowledged + 1);
    const bool odd = config.version % 2 == 1;
    CHECK(config.tasks.size() == 300u + (odd ? 1u : 0u));
    std::size_t mixed = 0;
    bool has_odd = false;
    for (const auto& t : config.tasks) {
      if (static_cast<std::uint64_t>(t.revision()) != config.version) ++mixed;
      if (t.id() == "odd") has_odd = true;
    }
    CHECK(mixed == 0);
    CHECK(has_odd == odd);
  }
  REQUIRE(printed.size() > 20);
}
