// SPDX-License-Identifier: Apache-2.0
// Coordinator Store on SQLite and on PostgreSQL, the same cases against both (GENERATE over
// the backends): CRUD of every entity, unique names, list filters, sorts and paging, upsert
// rules, statistics against a brute-force computation, savepoint isolation, group commit,
// read-only reads, config versions across reopen, batches that fail as a whole, and (on
// PostgreSQL) a lost connection and a server that cannot be reached.
#include <algorithm>
#include <array>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <random>
#include <set>
#include <thread>
#include <type_traits>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/io_context.hpp>

#include <catch2/catch.hpp>

#include "pg_server.hpp"
#include "quiet_log.hpp"
#include "temp_dir.hpp"
#include <date/tz.h>
#include <fmt/format.h>
#include <google/protobuf/util/message_differencer.h>
#include <sqlite3.h>

#include <quartzflow/log.hpp>
#include <quartzflow/pg_store.hpp>
#include <quartzflow/store.hpp>

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;
using google::protobuf::util::MessageDifferencer;
using std::chrono::milliseconds;

namespace {

using quartzflow::testing::TempDir;

using quartzflow::testing::QuietLog;

enum class Backend { sqlite, postgres };

std::ostream& operator<<(std::ostream& out, Backend backend) {
  return out << (backend == Backend::sqlite ? "SQLite" : "PostgreSQL");
}

/// Where a store lives: a SQLite file (or ":memory:") or a PostgreSQL DSN.
struct Location {
  Backend backend;
  std::string where;
};

/// A new, empty place for a store: a file in `dir`, or a database of the test server.
Location fresh_location(Backend backend, const TempDir& dir) {
  if (backend == Backend::sqlite) return {backend, dir.file("coordinator.db")};
  return {backend, quartzflow::testing::postgres_test_database()};
}

std::unique_ptr<qf::Store> open_store(boost::asio::io_context& io, const Location& location,
                                      milliseconds max_batch_delay = milliseconds{0}) {
  qf::error_code ec;
  std::string detail;
  std::unique_ptr<qf::Store> store;
  if (location.backend == Backend::sqlite) {
    store = qf::open_sqlite_store(io.get_executor(), {location.where, max_batch_delay}, ec, &detail);
  } else {
    qf::PostgresStoreOptions options;
    options.dsn = location.where;
    options.max_batch_delay = max_batch_delay;
    store = qf::open_postgres_store(io.get_executor(), options, ec, &detail);
  }
  INFO(detail);
  REQUIRE_FALSE(ec);
  REQUIRE(store);
  return store;
}

/// A store of its own: SQLite in memory, or a new PostgreSQL database.
std::unique_ptr<qf::Store> open_store(boost::asio::io_context& io, Backend backend,
                                      milliseconds max_batch_delay = milliseconds{0}) {
  if (backend == Backend::sqlite) return open_store(io, Location{backend, ":memory:"}, max_batch_delay);
  return open_store(io, Location{backend, quartzflow::testing::postgres_test_database()}, max_batch_delay);
}

// The case runs once per backend (a Catch2 generator), the backend named in its messages.
#define FOR_EACH_BACKEND()                                              \
  const Backend backend = GENERATE(Backend::sqlite, Backend::postgres); \
  INFO("backend: " << backend)

/// Runs `work` as one transaction (or a read) and waits for its completion.
qf::error_code attempt(boost::asio::io_context& io, qf::Store& store, qf::Store::Work work, bool read = false) {
  std::optional<qf::error_code> result;
  auto done = [&](qf::error_code ec) { result = ec; };
  if (read)
    store.read(std::move(work), done);
  else
    store.transact(std::move(work), done);
  io.restart();
  io.run_for(std::chrono::seconds(10));
  REQUIRE(result);
  return *result;
}

/// Runs `body` (which must not use Catch2 macros: it runs on the store's thread) in a
/// transaction that must succeed, and returns what it returned.
template <typename Body>
auto in_tx(boost::asio::io_context& io, qf::Store& store, Body body, bool read = false) {
  using Result = std::invoke_result_t<Body&, qf::StoreTransaction&>;
  std::optional<Result> value;
  std::string thrown;
  const auto outcome = attempt(
      io, store,
      [&](qf::StoreTransaction& tx, qf::error_code& ec) {
        try {
          value.emplace(body(tx));
        } catch (const qf::error& e) {
          thrown = e.what();
          ec = e.code();
        }
      },
      read);
  INFO(thrown);
  REQUIRE_FALSE(outcome);
  REQUIRE(value);
  return std::move(*value);
}

template <typename Body>
auto in_read(boost::asio::io_context& io, qf::Store& store, Body body) {
  return in_tx(io, store, std::move(body), true);
}

/// The quartzflow::error a body throws (it must throw one).
template <typename Body>
qf::error thrown_by(boost::asio::io_context& io, qf::Store& store, Body body) {
  std::optional<qf::error> caught;
  attempt(io, store, [&](qf::StoreTransaction& tx, qf::error_code& ec) {
    try {
      body(tx);
    } catch (const qf::error& e) {
      caught.emplace(e);
      ec = e.code();
    }
  });
  REQUIRE(caught);
  return *caught;
}

v1::Task make_task(const std::string& id, const std::string& name, std::vector<std::string> groups = {}) {
  v1::Task t;
  t.set_id(id);
  t.set_name(name);
  t.set_enabled(true);
  t.mutable_shell()->add_argv("true");
  t.mutable_schedule()->set_cron("*/5 * * * *");
  for (auto& g : groups) t.add_group_ids(g);
  t.set_revision(1);
  return t;
}

v1::Group make_group(const std::string& id, const std::string& name, std::vector<std::string> tags = {}) {
  v1::Group g;
  g.set_id(id);
  g.set_name(name);
  for (auto& tag : tags) g.add_tags(tag);
  g.set_revision(1);
  return g;
}

v1::Agent make_agent(const std::string& id, const std::string& group, v1::AgentState state) {
  v1::Agent a;
  a.set_id(id);
  a.set_hostname(id + ".example.com");
  a.set_group_id(group);
  a.set_state(state);
  return a;
}

v1::Execution make_execution(const std::string& task, std::int64_t scheduled, const std::string& agent,
                             v1::ExecutionStatus status) {
  v1::Execution e;
  e.set_execution_id(fmt::format("{}:{}:{}", task, scheduled, agent));
  e.set_task_id(task);
  e.set_task_name(task + " name");
  e.set_agent_id(agent);
  e.set_status(status);
  e.set_trigger(v1::TRIGGER_TYPE_SCHEDULED);
  e.set_scheduled_unix_ms(scheduled);
  e.set_attempt(1);
  return e;
}

template <typename T>
std::vector<std::string> ids_of(const std::vector<T>& items) {
  std::vector<std::string> out;
  for (const auto& item : items) {
    if constexpr (std::is_same_v<T, v1::Execution>)
      out.push_back(item.execution_id());
    else if constexpr (std::is_same_v<T, v1::GroupSummary>)
      out.push_back(item.group().id());
    else if constexpr (std::is_same_v<T, v1::AuditEntry>)
      out.push_back(std::to_string(item.id()));
    else
      out.push_back(item.id());
  }
  return out;
}

std::int64_t unix_ms(const char* rfc3339) {
  const auto t = qf::parse_rfc3339(rfc3339);
  REQUIRE(t);
  return std::chrono::duration_cast<milliseconds>(t->time_since_epoch()).count();
}

}  // namespace

// ---- CRUD ----

TEST_CASE("tasks round-trip with their group bindings, labels and group names", "[store]") {
  FOR_EACH_BACKEND();
  boost::asio::io_context io;
  auto store = open_store(io, backend);
  auto backup = make_task("backup", "Nightly backup", {"db", "web"});
  (*backup.mutable_labels())["env"] = "prod";
  auto global = make_task("ping", "Ping everything");
  global.set_all_agents(true);
  in_tx(io, *store, [&](qf::StoreTransaction& tx) {
    tx.put_group(make_group("db", "Databases"));
    tx.put_group(make_group("web", "Web servers"));
    tx.put_task(backup);
    tx.put_task(global);
    tx.put_task(make_task("report", "Weekly report", {"web"}));
    return 0;
  });

  auto back = in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.task("backup"); });
  REQUIRE(back);
  CHECK(std::vector<std::string>(back->group_names().begin(), back->group_names().end()) ==
        std::vector<std::string>{"Databases", "Web servers"});
  back->clear_group_names();
  CHECK(MessageDifferencer::Equals(*back, backup));
  CHECK(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.task_by_name("Nightly backup"); })->id() ==
        "backup");
  CHECK_FALSE(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.task("nope"); }));
  CHECK_FALSE(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.task_by_name("nope"); }));

  CHECK(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.tasks_bound_to("web"); }) ==
        std::vector<std::string>{"backup", "report"});
  CHECK(ids_of(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.tasks_for_group("db"); })) ==
        std::vector<std::string>{"backup", "ping"});  // bound, or global; by name
  CHECK(ids_of(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.all_tasks(); })) ==
        std::vector<std::string>{"backup", "ping", "report"});

  // A rename of the group shows in the task; a new binding set replaces the old one.
  backup.clear_group_ids();
  backup.add_group_ids("db");
  in_tx(io, *store, [&](qf::StoreTransaction& tx) {
    tx.put_group(make_group("db", "Database hosts"));
    tx.put_task(backup);
    tx.put_fire_state("backup", {qf::Instant{std::chrono::seconds{100}}, qf::Instant{std::chrono::seconds{400}}});
    return 0;
  });
  back = in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.task("backup"); });
  CHECK(std::vector<std::string>(back->group_names().begin(), back->group_names().end()) ==
        std::vector<std::string>{"Database hosts"});
  CHECK(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.tasks_bound_to("web"); }) ==
        std::vector<std::string>{"report"});

  // Delete takes the bindings, labels and fire state along; the history stays.
  CHECK(in_tx(io, *store, [](qf::StoreTransaction& tx) { return tx.delete_task("backup"); }));
  CHECK_FALSE(in_tx(io, *store, [](qf::StoreTransaction& tx) { return tx.delete_task("backup"); }));
  CHECK_FALSE(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.task("backup"); }));
  CHECK(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.tasks_bound_to("db"); }).empty());
  CHECK_FALSE(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.fire_state("backup"); }).next_fire);
  v1::ListTasksRequest by_label;
  by_label.set_label_selector("env=prod");
  CHECK(in_read(io, *store, [&](qf::StoreTransaction& tx) { return tx.list_tasks(by_label); }).total == 0);
}

TEST_CASE("groups and agents round-trip, an agent shows its group's current name", "[store]") {
  FOR_EACH_BACKEND();
  boost::asio::io_context io;
  auto store = open_store(io, backend);
  auto group = make_group("db", "Databases", {"prod", "sql"});
  group.mutable_membership()->add_cidrs("10.1.0.0/16");
  auto agent = make_agent("a1", "db", v1::AGENT_STATE_ONLINE);
  agent.add_ips("10.1.2.3");
  (*agent.mutable_labels())["rack"] = "r1";
  agent.mutable_push_status()->set_state(v1::CONFIG_PUSH_STATE_IN_SYNC);
  in_tx(io, *store, [&](qf::StoreTransaction& tx) {
    tx.put_group(group);
    tx.put_agent(agent);
    tx.put_agent(make_agent("a2", "", v1::AGENT_STATE_OFFLINE));
    return 0;
  });
  auto group_back = in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.group("db"); });
  REQUIRE(group_back);
  CHECK(MessageDifferencer::Equals(*group_back, group));
  CHECK(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.group_by_name("Databases"); }));
  CHECK_FALSE(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.group_by_name("databases"); }));

  auto agent_back = in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.agent("a1"); });
  REQUIRE(agent_back);
  CHECK(agent_back->group_name() == "Databases");
  agent_back->clear_group_name();
  CHECK(MessageDifferencer::Equals(*agent_back, agent));
  CHECK(ids_of(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.agents_in_group("db"); })) ==
        std::vector<std::string>{"a1"});
  CHECK_FALSE(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.agent("a3"); }));

  // An agent re-registering replaces its record.
  agent.set_state(v1::AGENT_STATE_SUSPECT);
  agent.set_group_id("");
  in_tx(io, *store, [&](qf::StoreTransaction& tx) {
    tx.put_agent(agent);
    return 0;
  });
  agent_back = in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.agent("a1"); });
  CHECK(agent_back->state() == v1::AGENT_STATE_SUSPECT);
  CHECK(agent_back->group_name().empty());
  CHECK(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.agents_in_group("db"); }).empty());

  CHECK(in_tx(io, *store, [](qf::StoreTransaction& tx) { return tx.delete_group("db"); }));
  CHECK_FALSE(in_tx(io, *store, [](qf::StoreTransaction& tx) { return tx.delete_group("db"); }));
  CHECK_FALSE(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.group("db"); }));
  v1::ListGroupsRequest by_tag;
  by_tag.set_tag("prod");
  CHECK(in_read(io, *store, [&](qf::StoreTransaction& tx) { return tx.list_groups(by_tag); }).total == 0);
}

TEST_CASE("logs, fire state and audit entries round-trip", "[store]") {
  FOR_EACH_BACKEND();
  boost::asio::io_context io;
  auto store = open_store(io, backend);
  const qf::FireState state{qf::Instant{std::chrono::seconds{1'700'000'000}}, std::nullopt};
  v1::AuditEntry entry;
  entry.set_actor("alice");
  entry.set_action("task.create");
  entry.set_target_type("task");
  entry.set_target_id("backup");
  entry.set_after_json("{}");
  in_tx(io, *store, [&](qf::StoreTransaction& tx) {
    tx.put_log("e1", std::string("line 1\n\0binary", 14));
    tx.put_fire_state("t1", state);
    tx.append_audit(entry);
    return 0;
  });
  CHECK(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.log("e1"); }) ==
        std::string("line 1\n\0binary", 14));
  CHECK_FALSE(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.log("e2"); }));
  const auto fire = in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.fire_state("t1"); });
  CHECK(fire.last_fire == state.last_fire);
  CHECK_FALSE(fire.next_fire);
  const auto none = in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.fire_state("t2"); });
  CHECK_FALSE(none.last_fire);
  CHECK_FALSE(none.next_fire);

  const auto audit = in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.list_audit({}); });
  REQUIRE(audit.items.size() == 1);
  CHECK(audit.items[0].id() == 1);
  CHECK(audit.items[0].at_unix_ms() > 0);  // filled in when left at 0
  CHECK(audit.items[0].after_json() == "{}");
}

TEST_CASE("agents' daily stats: each (agent, date, task) entry replaces the previous one", "[store]") {
  FOR_EACH_BACKEND();
  boost::asio::io_context io;
  auto store = open_store(io, backend);
  const auto entry = [](const char* agent, const char* date, const char* task, std::uint32_t total) {
    v1::DailyStats s;
    s.set_agent_id(agent);
    s.set_date(date);
    s.set_task_id(task);
    s.set_total(total);
    s.set_success(total - 1);
    return s;
  };
  in_tx(io, *store, [&](qf::StoreTransaction& tx) {
    tx.put_agent_daily_stats(entry("a1", "2026-11-24", "t1", 5));
    tx.put_agent_daily_stats(entry("a1", "2026-11-25", "t1", 3));
    tx.put_agent_daily_stats(entry("a2", "2026-11-25", "t1", 7));
    tx.put_agent_daily_stats(entry("a1", "2026-11-25", "t1", 4));  // a later report of the same day
    return 0;
  });
  const auto a1 = in_read(io, *store, [](qf::StoreTransaction& tx) {
    return tx.agent_daily_stats("a1", "2026-11-01", "2026-11-30");
  });
  REQUIRE(a1.size() == 2);
  CHECK(a1[0].date() == "2026-11-24");
  CHECK(a1[1].total() == 4);
  CHECK(a1[1].success() == 3);
  const auto day = in_read(io, *store, [](qf::StoreTransaction& tx) {
    return tx.agent_daily_stats("", "2026-11-25", "2026-11-25");
  });
  REQUIRE(day.size() == 2);
  CHECK(day[0].agent_id() == "a1");
  CHECK(day[1].agent_id() == "a2");

  const auto bad_date = thrown_by(io, *store, [&](qf::StoreTransaction& tx) {
    tx.put_agent_daily_stats(entry("a1", "25/11/2026", "t1", 1));
  });
  CHECK(std::string(bad_date.what()).find("date") != std::string::npos);
  const auto no_task = thrown_by(io, *store, [&](qf::StoreTransaction& tx) {
    tx.put_agent_daily_stats(entry("a1", "2026-11-25", "", 1));
  });
  CHECK(std::string(no_task.what()).find("task_id") != std::string::npos);
}

TEST_CASE("a name already used by another task or group is a conflict naming the field", "[store]") {
  FOR_EACH_BACKEND();
  boost::asio::io_context io;
  auto store = open_store(io, backend);
  in_tx(io, *store, [](qf::StoreTransaction& tx) {
    tx.put_group(make_group("g1", "Databases"));
    tx.put_task(make_task("t1", "backup"));
    return 0;
  });
  const auto task_conflict = thrown_by(io, *store, [](qf::StoreTransaction& tx) {
    tx.bump_config_version("task.create t2");
    tx.put_task(make_task("t2", "backup"));
  });
  CHECK(task_conflict.code() == qf::errc::conflict);
  CHECK(task_conflict.detail().field == "name");
  CHECK_THAT(task_conflict.what(), Catch::Contains("\"backup\" is already used by task t1"));
  const auto group_conflict =
      thrown_by(io, *store, [](qf::StoreTransaction& tx) { tx.put_group(make_group("g2", "Databases")); });
  CHECK(group_conflict.code() == qf::errc::conflict);
  CHECK(group_conflict.detail().field == "name");
  // Nothing of the failed transactions stayed; the same object may keep its own name.
  CHECK(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.config_version(); }) == 0);
  CHECK_FALSE(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.task("t2"); }));
  in_tx(io, *store, [](qf::StoreTransaction& tx) {
    auto t1 = make_task("t1", "backup");
    t1.set_description("renamed nothing");
    tx.put_task(t1);
    tx.put_task(make_task("t2", "Backup"));  // names are case-sensitive
    return 0;
  });
  const auto empty_id = thrown_by(io, *store, [](qf::StoreTransaction& tx) { tx.put_task(make_task("", "x")); });
  CHECK(empty_id.code() == qf::errc::invalid_argument);
  CHECK(empty_id.detail().field == "id");
}

TEST_CASE("config versions are monotonic and survive reopening the store", "[store]") {
  FOR_EACH_BACKEND();
  TempDir dir;
  const auto location = fresh_location(backend, dir);
  {
    boost::asio::io_context io;
    auto store = open_store(io, location);
    CHECK(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.config_version(); }) == 0);
    std::vector<std::uint64_t> versions;
    for (int i = 0; i < 3; ++i)
      versions.push_back(in_tx(io, *store, [i](qf::StoreTransaction& tx) {
        return tx.bump_config_version(fmt::format("change {}", i));
      }));
    CHECK(versions == std::vector<std::uint64_t>{1, 2, 3});
    // A transaction that fails takes its version back with it.
    CHECK(attempt(io, *store, [](qf::StoreTransaction& tx, qf::error_code& ec) {
            tx.bump_config_version("rolled back");
            ec = qf::errc::invalid_argument;
          }) == qf::errc::invalid_argument);
    CHECK(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.config_version(); }) == 3);
    in_tx(io, *store, [](qf::StoreTransaction& tx) {
      tx.put_task(make_task("t1", "kept"));
      return 0;
    });
  }
  if (backend == Backend::sqlite) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open_v2(location.where.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
    sqlite3_stmt* statement = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &statement, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(statement) == SQLITE_ROW);
    CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(statement, 0))) == "wal");
    sqlite3_finalize(statement);
    sqlite3_close(db);
  }
  boost::asio::io_context io;
  auto store = open_store(io, location);  // migrations find the schema current
  CHECK(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.config_version(); }) == 3);
  CHECK(in_tx(io, *store, [](qf::StoreTransaction& tx) { return tx.bump_config_version("after reopen"); }) == 4);
  CHECK(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.task("t1"); }));
}

// ---- lists ----

TEST_CASE("the task list filters, sorts and pages with totals", "[store]") {
  FOR_EACH_BACKEND();
  boost::asio::io_context io;
  auto store = open_store(io, backend);
  const std::vector<std::string> names{"Backup DB",     "backup logs", "Cleanup tmp",  "Rotate certs",
                                       "Report weekly", "Sync mirror", "Vacuum db",    "Warm cache",
                                       "Index search",  "Purge queue", "Ping hosts",   "Health check"};
  const int n = static_cast<int>(names.size());
  auto id = [](int i) { return fmt::format("t{:02}", i); };
  in_tx(io, *store, [&](qf::StoreTransaction& tx) {
    tx.put_group(make_group("g-a", "A"));
    tx.put_group(make_group("g-b", "B"));
    for (int i = 0; i < n; ++i) {
      auto t = make_task(id(i), names[static_cast<std::size_t>(i)]);
      if (i == 4) t.set_description("uses BACKUP tapes");
      t.set_enabled(i % 3 != 0);
      if (i % 2 == 0) t.add_group_ids("g-a");
      if (i % 3 == 0) t.add_group_ids("g-b");
      (*t.mutable_labels())["env"] = i < 6 ? "prod" : "dev";
      if (i % 2 == 1) (*t.mutable_labels())["tier"] = "web";
      t.set_created_at_unix_ms(1000 + i * 10);
      t.set_updated_at_unix_ms(5000 - i * 10);
      tx.put_task(t);
    }
    for (int i : {1, 3, 7}) tx.put_fire_state(id(i), {std::nullopt, qf::Instant{std::chrono::seconds{900 - i}}});
    tx.upsert_execution(make_execution(id(0), 100, "a", v1::EXECUTION_STATUS_FAILURE));
    tx.upsert_execution(make_execution(id(0), 200, "a", v1::EXECUTION_STATUS_SUCCESS));
    tx.upsert_execution(make_execution(id(1), 100, "a", v1::EXECUTION_STATUS_SUCCESS));
    tx.upsert_execution(make_execution(id(1), 300, "a", v1::EXECUTION_STATUS_FAILURE));
    tx.upsert_execution(make_execution(id(5), 50, "a", v1::EXECUTION_STATUS_RUNNING));
    return 0;
  });
  auto list = [&](const v1::ListTasksRequest& request) {
    return in_read(io, *store, [request](qf::StoreTransaction& tx) { return tx.list_tasks(request); });
  };
  // Brute force: the tasks matching `keep`, by name (byte order, as SQLite compares).
  auto expect = [&](const std::function<bool(int)>& keep) {
    std::vector<int> picked;
    for (int i = 0; i < n; ++i)
      if (keep(i)) picked.push_back(i);
    std::sort(picked.begin(), picked.end(),
              [&](int a, int b) { return names[static_cast<std::size_t>(a)] < names[static_cast<std::size_t>(b)]; });
    std::vector<std::string> out;
    for (int i : picked) out.push_back(id(i));
    return out;
  };
  auto check = [&](const v1::ListTasksRequest& request, const std::vector<std::string>& expected) {
    INFO(request.ShortDebugString());
    const auto got = list(request);
    CHECK(ids_of(got.items) == expected);
    CHECK(got.total == expected.size());
  };

  check({}, expect([](int) { return true; }));
  v1::ListTasksRequest r;
  r.set_keyword("BACKUP");
  check(r, expect([](int i) { return i == 0 || i == 1 || i == 4; }));  // names and a description
  r.set_keyword("T1");
  check(r, expect([](int i) { return i >= 10; }));  // ids
  r = {};
  r.set_enabled(v1::ENABLED_FILTER_ENABLED);
  check(r, expect([](int i) { return i % 3 != 0; }));
  r.set_enabled(v1::ENABLED_FILTER_DISABLED);
  check(r, expect([](int i) { return i % 3 == 0; }));
  r = {};
  r.set_group_id("g-b");
  check(r, expect([](int i) { return i % 3 == 0; }));
  r = {};
  r.set_last_status(v1::EXECUTION_STATUS_FAILURE);
  check(r, {"t01"});
  r.set_last_status(v1::EXECUTION_STATUS_SUCCESS);
  check(r, {"t00"});
  r = {};
  r.set_label_selector("env=prod,tier=web");
  check(r, expect([](int i) { return i < 6 && i % 2 == 1; }));
  r.set_label_selector(" env = dev ");
  check(r, expect([](int i) { return i >= 6; }));
  r.set_label_selector("env=prod");
  r.set_group_id("g-a");
  r.set_enabled(v1::ENABLED_FILTER_ENABLED);
  r.set_keyword("e");
  check(r, expect([&](int i) {
          std::string name = names[static_cast<std::size_t>(i)];
          std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
          return i < 6 && i % 2 == 0 && i % 3 != 0 && (name.find('e') != std::string::npos || i == 4);
        }));

  // Sorts, with the id breaking ties in the same direction and missing values last.
  r = {};
  r.set_sort("-created_at_unix_ms");
  check(r, {"t11", "t10", "t09", "t08", "t07", "t06", "t05", "t04", "t03", "t02", "t01", "t00"});
  r.set_sort("updated");
  check(r, {"t11", "t10", "t09", "t08", "t07", "t06", "t05", "t04", "t03", "t02", "t01", "t00"});
  r.set_sort("next_fire_unix_ms");
  check(r, {"t07", "t03", "t01", "t00", "t02", "t04", "t05", "t06", "t08", "t09", "t10", "t11"});
  r.set_sort("-next_fire_unix_ms");
  check(r, {"t01", "t03", "t07", "t11", "t10", "t09", "t08", "t06", "t05", "t04", "t02", "t00"});
  r.set_sort("last_scheduled_unix_ms");
  check(r, {"t05", "t00", "t01", "t02", "t03", "t04", "t06", "t07", "t08", "t09", "t10", "t11"});
  r.set_sort("-name");
  auto by_name_descending = expect([](int) { return true; });
  std::reverse(by_name_descending.begin(), by_name_descending.end());
  check(r, by_name_descending);

  // Paging: 1-based, 0 = 1, totals over all pages.
  const auto all = expect([](int) { return true; });
  r = {};
  r.set_page_size(5);
  for (std::uint32_t page : {0U, 1U, 2U, 3U, 4U}) {
    r.set_page(page);
    const auto got = list(r);
    const std::size_t first = std::min<std::size_t>((std::max(page, 1U) - 1) * 5, all.size());
    const std::size_t last = std::min<std::size_t>(first + 5, all.size());
    CHECK(ids_of(got.items) == std::vector<std::string>(all.begin() + static_cast<std::ptrdiff_t>(first),
                                                        all.begin() + static_cast<std::ptrdiff_t>(last)));
    CHECK(got.total == all.size());
  }
  r.set_page(1);
  r.set_page_size(100'000);  // at most 500
  CHECK(list(r).items.size() == all.size());

  r = {};
  r.set_sort("name; DROP TABLE tasks");
  auto bad_sort = thrown_by(io, *store, [r](qf::StoreTransaction& tx) { tx.list_tasks(r); });
  CHECK(bad_sort.code() == qf::errc::invalid_argument);
  CHECK(bad_sort.detail().field == "sort");
  r = {};
  r.set_label_selector("env");
  auto bad_selector = thrown_by(io, *store, [r](qf::StoreTransaction& tx) { tx.list_tasks(r); });
  CHECK(bad_selector.code() == qf::errc::invalid_argument);
  CHECK(bad_selector.detail().field == "label_selector");
  CHECK(list({}).total == all.size());
}

TEST_CASE("the group list counts agents, online agents and tasks, filters, sorts and pages", "[store]") {
  FOR_EACH_BACKEND();
  boost::asio::io_context io;
  auto store = open_store(io, backend);
  in_tx(io, *store, [](qf::StoreTransaction& tx) {
    auto a = make_group("g-a", "Alpha", {"prod"});
    a.set_created_at_unix_ms(300);
    auto b = make_group("g-b", "beta", {"prod", "sql"});
    b.set_created_at_unix_ms(100);
    auto c = make_group("g-c", "Gamma");
    c.set_created_at_unix_ms(200);
    auto d = make_group("g-d", "delta");
    d.set_description("Alpha backups");
    d.set_created_at_unix_ms(400);
    for (const auto& g : {a, b, c, d}) tx.put_group(g);
    const std::array states{v1::AGENT_STATE_ONLINE, v1::AGENT_STATE_ONLINE, v1::AGENT_STATE_ONLINE,
                            v1::AGENT_STATE_OFFLINE, v1::AGENT_STATE_SUSPECT};
    for (std::size_t i = 0; i < states.size(); ++i)
      tx.put_agent(make_agent(fmt::format("a{}", i + 1), "g-a", states[i]));
    tx.put_agent(make_agent("a6", "g-b", v1::AGENT_STATE_OFFLINE));
    tx.put_agent(make_agent("a7", "g-b", v1::AGENT_STATE_OFFLINE));
    tx.put_agent(make_agent("a8", "g-c", v1::AGENT_STATE_ONLINE));
    tx.put_task(make_task("t1", "one", {"g-a"}));
    tx.put_task(make_task("t2", "two", {"g-a", "g-b"}));
    tx.put_task(make_task("t3", "three", {"g-b"}));
    tx.put_task(make_task("t4", "four", {"g-b"}));
    return 0;
  });
  auto list = [&](const v1::ListGroupsRequest& request) {
    return in_read(io, *store, [request](qf::StoreTransaction& tx) { return tx.list_groups(request); });
  };
  const auto all = list({});
  CHECK(ids_of(all.items) == std::vector<std::string>{"g-a", "g-c", "g-b", "g-d"});
  CHECK(all.total == 4);
  std::map<std::string, std::array<std::uint32_t, 3>> counts;
  for (const auto& s : all.items) counts[s.group().id()] = {s.agent_count(), s.online_agent_count(), s.task_count()};
  CHECK(counts["g-a"] == std::array<std::uint32_t, 3>{5, 3, 2});
  CHECK(counts["g-b"] == std::array<std::uint32_t, 3>{2, 0, 3});
  CHECK(counts["g-c"] == std::array<std::uint32_t, 3>{1, 1, 0});
  CHECK(counts["g-d"] == std::array<std::uint32_t, 3>{0, 0, 0});

  v1::ListGroupsRequest r;
  r.set_keyword("ALPHA");
  CHECK(ids_of(list(r).items) == std::vector<std::string>{"g-a", "g-d"});
  r = {};
  r.set_tag("prod");
  CHECK(ids_of(list(r).items) == std::vector<std::string>{"g-a", "g-b"});
  CHECK(list(r).total == 2);
  r = {};
  r.set_sort("-online_agent_count");
  CHECK(ids_of(list(r).items) == std::vector<std::string>{"g-a", "g-c", "g-d", "g-b"});
  r.set_sort("task_count");
  CHECK(ids_of(list(r).items) == std::vector<std::string>{"g-c", "g-d", "g-a", "g-b"});
  r.set_sort("created_at_unix_ms");
  CHECK(ids_of(list(r).items) == std::vector<std::string>{"g-b", "g-c", "g-a", "g-d"});
  r.set_sort("-name");
  CHECK(ids_of(list(r).items) == std::vector<std::string>{"g-d", "g-b", "g-c", "g-a"});
  r.set_sort("");
  r.set_page_size(3);
  r.set_page(2);
  const auto page2 = list(r);
  CHECK(ids_of(page2.items) == std::vector<std::string>{"g-d"});
  CHECK(page2.total == 4);
  r.set_sort("members");
  CHECK(thrown_by(io, *store, [r](qf::StoreTransaction& tx) { tx.list_groups(r); }).detail().field == "sort");
}

TEST_CASE("task counts match a brute-force count of the executions and agents inserted", "[store]") {
  FOR_EACH_BACKEND();
  boost::asio::io_context io;
  auto store = open_store(io, backend);
  std::mt19937 random(13);
  const std::array groups{std::string("g1"), std::string("g2"), std::string("g3")};
  const std::array agent_states{v1::AGENT_STATE_ONLINE, v1::AGENT_STATE_OFFLINE, v1::AGENT_STATE_SUSPECT,
                                v1::AGENT_STATE_DRAINING};
  std::vector<v1::Agent> agents;
  for (int i = 0; i < 40; ++i) {
    const auto group = random() % 4;  // 3: no group
    agents.push_back(make_agent(fmt::format("a{}", i), group == 3 ? "" : groups[group],
                                agent_states[random() % agent_states.size()]));
  }
  std::vector<v1::Task> tasks;
  for (int i = 0; i < 30; ++i) {
    std::vector<std::string> bound;
    for (const auto& g : groups)
      if (random() % 3 == 0) bound.push_back(g);
    auto task = make_task(fmt::format("t{:02}", i), fmt::format("task {}", i), bound);
    task.set_all_agents(i % 7 == 0);
    tasks.push_back(std::move(task));
  }
  std::vector<v1::Execution> executions;
  for (int i = 0; i < 2000; ++i) {
    const auto status = static_cast<v1::ExecutionStatus>(1 + random() % (v1::ExecutionStatus_ARRAYSIZE - 1));
    // t29 never ran; executions of a task not in the catalog (deleted) are kept apart.
    const auto task = random() % 10 == 0 ? std::string("gone") : tasks[random() % 29].id();
    executions.push_back(make_execution(task, 1'000'000 + i, agents[random() % agents.size()].id(), status));
  }
  in_tx(io, *store, [&](qf::StoreTransaction& tx) {
    for (const auto& g : groups) tx.put_group(make_group(g, g + " name"));
    for (const auto& a : agents) tx.put_agent(a);
    for (const auto& t : tasks) tx.put_task(t);
    for (const auto& e : executions) tx.upsert_execution(e);
    return 0;
  });

  const auto expected = [&](const std::string& task_id) {
    v1::TaskSummary s;
    for (const auto& e : executions) {
      if (e.task_id() != task_id) continue;
      const auto st = e.status();
      if (st == v1::EXECUTION_STATUS_SUCCESS) s.set_success_count(s.success_count() + 1);
      if (st == v1::EXECUTION_STATUS_FAILURE || st == v1::EXECUTION_STATUS_TIMEOUT)
        s.set_failure_count(s.failure_count() + 1);
      if (st == v1::EXECUTION_STATUS_SUCCESS || st == v1::EXECUTION_STATUS_FAILURE ||
          st == v1::EXECUTION_STATUS_TIMEOUT || st == v1::EXECUTION_STATUS_CANCELLED)
        s.set_run_count(s.run_count() + 1);
      if (st == v1::EXECUTION_STATUS_RUNNING) s.set_running_count(s.running_count() + 1);
    }
    const auto task = std::find_if(tasks.begin(), tasks.end(), [&](const v1::Task& t) { return t.id() == task_id; });
    if (task == tasks.end()) return s;  // not in the catalog: placed nowhere
    for (const auto& a : agents) {
      const bool bound = task->all_agents() || std::find(task->group_ids().begin(), task->group_ids().end(),
                                                         a.group_id()) != task->group_ids().end();
      if (!bound) continue;
      s.set_target_agent_count(s.target_agent_count() + 1);
      if (a.state() == v1::AGENT_STATE_ONLINE) s.set_online_agent_count(s.online_agent_count() + 1);
    }
    return s;
  };

  // A whole catalog at once, then a page with an id twice, an unknown one and a deleted task's.
  std::vector<std::string> all_ids;
  for (const auto& t : tasks) all_ids.push_back(t.id());
  const std::vector<std::string> page{"t03", "nope", "t07", "gone", "t03", "t29", "t00"};
  for (const auto& ids : {all_ids, page, std::vector<std::string>{}}) {
    const auto counts = in_read(io, *store, [ids](qf::StoreTransaction& tx) { return tx.task_counts(ids); });
    REQUIRE(counts.size() == ids.size());
    for (std::size_t i = 0; i < ids.size(); ++i) {
      INFO(ids[i] << ": " << counts[i].ShortDebugString() << " expected " << expected(ids[i]).ShortDebugString());
      CHECK(MessageDifferencer::Equals(counts[i], expected(ids[i])));
    }
  }
  // The figures are not all zero: the comparison above would not see a query that counts nothing.
  const auto t00 = expected("t00");
  CHECK(t00.run_count() > 0);
  CHECK(t00.running_count() > 0);
  CHECK(t00.online_agent_count() > 0);
  CHECK(t00.target_agent_count() == agents.size());  // all_agents
  CHECK(expected("t29").run_count() == 0);
}

TEST_CASE("the agent list filters by keyword, group, state, labels and push state, sorts and pages", "[store]") {
  FOR_EACH_BACKEND();
  boost::asio::io_context io;
  auto store = open_store(io, backend);
  struct Spec {
    const char* id;
    const char* host;
    std::vector<std::string> ips;
    const char* group;
    v1::AgentState state;
    std::map<std::string, std::string> labels;
    v1::ConfigPushState push;
    std::int64_t heartbeat;
    std::uint32_t running;
  };
  const std::vector<Spec> specs{
      {"a1", "web-1.prod", {"10.0.0.1"}, "g-web", v1::AGENT_STATE_ONLINE, {{"rack", "r1"}},
       v1::CONFIG_PUSH_STATE_IN_SYNC, 500, 2},
      {"a2", "web-2.prod", {"10.0.0.2", "fd00::2"}, "g-web", v1::AGENT_STATE_OFFLINE, {{"rack", "r2"}},
       v1::CONFIG_PUSH_STATE_OFFLINE, 300, 0},
      {"a3", "db-1.prod", {"10.0.1.1"}, "g-db", v1::AGENT_STATE_ONLINE, {{"rack", "r1"}, {"ssd", "yes"}},
       v1::CONFIG_PUSH_STATE_PENDING, 400, 5},
      {"a4", "DB-2.stage", {"192.168.1.4"}, "", v1::AGENT_STATE_SUSPECT, {}, v1::CONFIG_PUSH_STATE_FAILED, 100, 1},
  };
  in_tx(io, *store, [&](qf::StoreTransaction& tx) {
    tx.put_group(make_group("g-web", "Web"));
    tx.put_group(make_group("g-db", "DB"));
    for (const auto& s : specs) {
      auto a = make_agent(s.id, s.group, s.state);
      a.set_hostname(s.host);
      for (const auto& ip : s.ips) a.add_ips(ip);
      for (const auto& [k, v] : s.labels) (*a.mutable_labels())[k] = v;
      a.mutable_push_status()->set_state(s.push);
      a.set_last_heartbeat_unix_ms(s.heartbeat);
      a.set_running_executions(s.running);
      tx.put_agent(a);
    }
    return 0;
  });
  auto ids = [&](const v1::ListAgentsRequest& request) {
    return ids_of(in_read(io, *store, [request](qf::StoreTransaction& tx) { return tx.list_agents(request); }).items);
  };
  using Ids = std::vector<std::string>;
  CHECK(ids({}) == Ids{"a4", "a3", "a1", "a2"});  // by hostname, byte order
  v1::ListAgentsRequest r;
  r.set_keyword("DB");
  CHECK(ids(r) == Ids{"a4", "a3"});
  r.set_keyword("192.168");
  CHECK(ids(r) == Ids{"a4"});
  r.set_keyword("FD00");
  CHECK(ids(r) == Ids{"a2"});
  r.set_keyword("A1");
  CHECK(ids(r) == Ids{"a1"});
  r = {};
  r.set_group_id("g-web");
  const auto web = in_read(io, *store, [r](qf::StoreTransaction& tx) { return tx.list_agents(r); });
  CHECK(ids_of(web.items) == Ids{"a1", "a2"});
  CHECK(web.total == 2);
  CHECK(web.items.at(0).group_name() == "Web");
  r = {};
  r.set_state(v1::AGENT_STATE_ONLINE);
  CHECK(ids(r) == Ids{"a3", "a1"});
  r = {};
  r.set_label_selector("rack=r1");
  CHECK(ids(r) == Ids{"a3", "a1"});
  r.set_label_selector("rack=r1,ssd=yes");
  CHECK(ids(r) == Ids{"a3"});
  r = {};
  r.set_push_state(v1::CONFIG_PUSH_STATE_FAILED);
  CHECK(ids(r) == Ids{"a4"});
  r = {};
  r.set_sort("-last_heartbeat_unix_ms");
  CHECK(ids(r) == Ids{"a1", "a3", "a2", "a4"});
  r.set_sort("running_executions");
  CHECK(ids(r) == Ids{"a2", "a4", "a1", "a3"});
  r.set_sort("state");
  CHECK(ids(r) == Ids{"a1", "a3", "a4", "a2"});
  r.set_sort("");
  r.set_page(2);
  r.set_page_size(2);
  const auto page = in_read(io, *store, [r](qf::StoreTransaction& tx) { return tx.list_agents(r); });
  CHECK(ids_of(page.items) == Ids{"a1", "a2"});
  CHECK(page.total == 4);
}

TEST_CASE("the audit list filters by actor, action or action prefix, target, time and keyword", "[store]") {
  FOR_EACH_BACKEND();
  boost::asio::io_context io;
  auto store = open_store(io, backend);
  struct Spec {
    const char* actor;
    const char* action;
    const char* type;
    const char* target;
    std::int64_t at;
    const char* name;
    const char* detail;
  };
  const std::vector<Spec> specs{
      {"alice", "task.create", "task", "t1", 1000, "Backup", ""},
      {"alice", "task.update", "task", "t1", 2000, "Backup job", "changed schedule"},
      {"bob", "group.create", "group", "g1", 3000, "Databases", ""},
      {"system", "agent.move", "agent", "a1", 4000, "a1", ""},
      {"bob", "task.delete", "task", "t1", 5000, "Nightly", ""},
      {"alice", "auth.login", "user", "alice", 6000, "alice", ""},
      {"bob", "task.trigger", "task", "t2", 7000, "report", "manual BACKUP run"},
  };
  in_tx(io, *store, [&](qf::StoreTransaction& tx) {
    for (const auto& s : specs) {
      v1::AuditEntry e;
      e.set_actor(s.actor);
      e.set_action(s.action);
      e.set_target_type(s.type);
      e.set_target_id(s.target);
      e.set_at_unix_ms(s.at);
      e.set_target_name(s.name);
      e.set_detail(s.detail);
      tx.append_audit(e);
    }
    return 0;
  });
  auto ids = [&](const v1::ListAuditRequest& request) {
    return ids_of(in_read(io, *store, [request](qf::StoreTransaction& tx) { return tx.list_audit(request); }).items);
  };
  using Ids = std::vector<std::string>;
  CHECK(ids({}) == Ids{"7", "6", "5", "4", "3", "2", "1"});  // newest first
  v1::ListAuditRequest r;
  r.set_actor("bob");
  CHECK(ids(r) == Ids{"7", "5", "3"});
  r = {};
  r.set_action("task.");
  CHECK(ids(r) == Ids{"7", "5", "2", "1"});
  r.set_action("task.create");
  CHECK(ids(r) == Ids{"1"});
  r = {};
  r.set_target_type("task");
  r.set_target_id("t1");
  CHECK(ids(r) == Ids{"5", "2", "1"});
  r = {};
  r.set_from_unix_ms(2000);
  r.set_to_unix_ms(5000);
  CHECK(ids(r) == Ids{"4", "3", "2"});
  r = {};
  r.set_keyword("backup");
  CHECK(ids(r) == Ids{"7", "2", "1"});
  r = {};
  r.set_sort("at_unix_ms");
  CHECK(ids(r) == Ids{"1", "2", "3", "4", "5", "6", "7"});
  r.set_sort("");
  r.set_page(2);
  r.set_page_size(3);
  const auto page = in_read(io, *store, [r](qf::StoreTransaction& tx) { return tx.list_audit(r); });
  CHECK(ids_of(page.items) == Ids{"4", "3", "2"});
  CHECK(page.total == 7);
}

// ---- history ----

namespace {

constexpr std::array k_tasks{"backup", "report", "sync"};
constexpr std::array k_agents{"a1", "a2", "a3", "a4"};
constexpr std::array k_reasons{"exit 1", "exit 2", "http 503", "timeout", ""};

/// `n` executions with random tasks, agents, statuses, triggers, times and durations, in
/// random order (the order of insertion, so of rowids). Every tenth shares the instant of
/// the one before, to exercise tie-breaking.
std::vector<v1::Execution> random_history(std::uint32_t seed, std::size_t n, std::int64_t from, std::int64_t span) {
  std::mt19937 rng(seed);
  auto uniform = [&](std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  };
  std::vector<v1::Execution> out;
  std::set<std::string> ids;
  while (out.size() < n) {
    const bool shared = out.size() % 10 == 9;
    const auto scheduled = shared ? out.back().scheduled_unix_ms() : from + uniform(0, span - 1);
    const auto agent = static_cast<std::size_t>(uniform(0, 3));
    auto e = make_execution(k_tasks[static_cast<std::size_t>(uniform(0, 2))], scheduled, k_agents[agent],
                            static_cast<v1::ExecutionStatus>(uniform(1, 8)));
    if (!ids.insert(e.execution_id()).second) continue;
    e.set_group_id(agent == 3 ? "" : agent % 2 == 0 ? "g1" : "g2");
    e.set_trigger(static_cast<v1::TriggerType>(uniform(1, 5)));
    const auto status = e.status();
    const bool ran = status >= v1::EXECUTION_STATUS_SUCCESS && status <= v1::EXECUTION_STATUS_CANCELLED;
    const bool started = status == v1::EXECUTION_STATUS_RUNNING ||
                         (ran && !(status == v1::EXECUTION_STATUS_CANCELLED && uniform(0, 1) == 0));
    if (started) e.set_started_unix_ms(scheduled + uniform(0, 3000));
    if (ran && started) {
      e.set_duration_ms(uniform(0, 120'000));
      e.set_ended_unix_ms(e.started_unix_ms() + e.duration_ms());
    }
    if (status == v1::EXECUTION_STATUS_FAILURE || status == v1::EXECUTION_STATUS_TIMEOUT)
      e.set_failure_reason(k_reasons[static_cast<std::size_t>(uniform(0, 4))]);
    if (status == v1::EXECUTION_STATUS_FAILURE) e.set_error_message(fmt::format("Boom #{}", out.size()));
    e.set_output(fmt::format("output of {}", out.size()));
    out.push_back(std::move(e));
  }
  return out;
}

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return std::tolower(c); });
  return text;
}

/// list_executions by brute force: filter, sort (rowid = position + 1 breaks ties), page.
qf::Listing<std::string> expected_list(const std::vector<v1::Execution>& all, const v1::ListExecutionsRequest& r) {
  std::vector<std::size_t> picked;
  for (std::size_t i = 0; i < all.size(); ++i) {
    const auto& e = all[i];
    if (!r.task_id().empty() && e.task_id() != r.task_id()) continue;
    if (!r.agent_id().empty() && e.agent_id() != r.agent_id()) continue;
    if (!r.group_id().empty() && e.group_id() != r.group_id()) continue;
    if (r.status_size() > 0 && std::find(r.status().begin(), r.status().end(), e.status()) == r.status().end())
      continue;
    if (r.trigger() != v1::TRIGGER_TYPE_UNSPECIFIED && e.trigger() != r.trigger()) continue;
    if (r.from_unix_ms() != 0 && e.scheduled_unix_ms() < r.from_unix_ms()) continue;
    if (r.to_unix_ms() != 0 && e.scheduled_unix_ms() >= r.to_unix_ms()) continue;
    if (!r.keyword().empty()) {
      const auto k = lower(r.keyword());
      const bool hit = lower(e.task_name()).find(k) != std::string::npos ||
                       lower(e.execution_id()).find(k) != std::string::npos ||
                       lower(e.failure_reason()).find(k) != std::string::npos ||
                       lower(e.error_message()).find(k) != std::string::npos;
      if (!hit) continue;
    }
    picked.push_back(i);
  }
  std::string sort = r.sort().empty() ? "-scheduled_unix_ms" : r.sort();
  const bool descending = sort.front() == '-';
  if (descending) sort.erase(0, 1);
  auto key = [&](std::size_t i) -> std::int64_t {
    const auto& e = all[i];
    if (sort == "scheduled_unix_ms") return e.scheduled_unix_ms();
    if (sort == "started_unix_ms") return e.started_unix_ms();
    if (sort == "duration_ms") return e.duration_ms();
    return e.status();
  };
  std::sort(picked.begin(), picked.end(), [&](std::size_t a, std::size_t b) {
    const auto ka = std::make_pair(key(a), a), kb = std::make_pair(key(b), b);
    return descending ? kb < ka : ka < kb;
  });
  const auto size = r.page_size() == 0 ? 20U : std::min(r.page_size(), 500U);
  const auto first = std::min<std::size_t>(static_cast<std::size_t>(std::max(r.page(), 1U) - 1) * size, picked.size());
  const auto last = std::min<std::size_t>(first + size, picked.size());
  qf::Listing<std::string> out;
  out.total = picked.size();
  for (auto i = first; i < last; ++i) out.items.push_back(all[picked[i]].execution_id());
  return out;
}

std::uint64_t insert_all(boost::asio::io_context& io, qf::Store& store, const std::vector<v1::Execution>& all) {
  return in_tx(io, store, [&](qf::StoreTransaction& tx) {
    std::uint64_t inserted = 0;
    for (const auto& e : all) inserted += tx.upsert_execution(e) == qf::UpsertResult::inserted ? 1 : 0;
    return inserted;
  });
}

}  // namespace

TEST_CASE("the execution list honours every filter, sort and page, with totals", "[store]") {
  FOR_EACH_BACKEND();
  boost::asio::io_context io;
  auto store = open_store(io, backend);
  const auto base = unix_ms("2026-03-03T00:00:00Z");
  const auto all = random_history(7, 300, base, 10LL * 86'400'000);
  REQUIRE(insert_all(io, *store, all) == all.size());

  std::vector<v1::ListExecutionsRequest> requests(1);  // no filter
  auto add = [&](auto&& set) {
    v1::ListExecutionsRequest r;
    set(r);
    requests.push_back(r);
  };
  add([](auto& r) { r.set_task_id("backup"); });
  add([](auto& r) {
    r.set_task_id("report");
    r.add_status(v1::EXECUTION_STATUS_SUCCESS);
    r.set_page_size(50);
  });
  add([](auto& r) {
    r.set_agent_id("a2");
    r.add_status(v1::EXECUTION_STATUS_SUCCESS);
  });
  add([](auto& r) {
    r.set_group_id("g1");
    r.add_status(v1::EXECUTION_STATUS_FAILURE);
    r.add_status(v1::EXECUTION_STATUS_TIMEOUT);
  });
  add([](auto& r) {
    r.add_status(v1::EXECUTION_STATUS_FAILURE);
    r.add_status(v1::EXECUTION_STATUS_TIMEOUT);
    r.add_status(v1::EXECUTION_STATUS_SKIPPED);
    r.set_page(2);
    r.set_page_size(7);
  });
  add([](auto& r) {
    r.add_status(v1::EXECUTION_STATUS_SUCCESS);
    r.add_status(v1::EXECUTION_STATUS_SUCCESS);
    r.add_status(v1::EXECUTION_STATUS_CANCELLED);
    r.set_sort("scheduled_unix_ms");
  });
  add([](auto& r) {
    r.set_task_id("sync");
    r.add_status(v1::EXECUTION_STATUS_PENDING);
    r.add_status(v1::EXECUTION_STATUS_RUNNING);
    r.set_sort("-duration_ms");
  });
  add([](auto& r) {
    r.set_task_id("backup");
    r.add_status(v1::EXECUTION_STATUS_MISSED);
    r.add_status(v1::EXECUTION_STATUS_PENDING);
    r.set_page_size(3);
  });
  add([](auto& r) {
    r.set_agent_id("a1");
    r.add_status(v1::EXECUTION_STATUS_SUCCESS);
    r.set_page_size(5);
  });
  add([](auto& r) { r.set_trigger(v1::TRIGGER_TYPE_MANUAL); });
  add([&](auto& r) {
    r.set_from_unix_ms(base + 2 * 86'400'000);
    r.set_to_unix_ms(base + 5 * 86'400'000);
  });
  add([](auto& r) { r.set_keyword("BOOM #1"); });
  add([](auto& r) { r.set_keyword("exit"); });
  add([](auto& r) { r.set_keyword("a3"); });
  add([](auto& r) { r.set_sort("scheduled_unix_ms"); });
  add([](auto& r) { r.set_sort("started_unix_ms"); });
  add([](auto& r) { r.set_sort("-duration_ms"); });
  add([](auto& r) { r.set_sort("status"); });
  add([](auto& r) {
    r.set_sort("-status");
    r.set_page_size(500);
  });
  add([](auto& r) {
    r.set_task_id("sync");
    r.set_page(3);
    r.set_page_size(17);
  });
  add([](auto& r) {
    r.set_page(99);
    r.set_page_size(10);
  });
  add([&](auto& r) {
    r.set_task_id("backup");
    r.set_agent_id("a1");
    r.set_trigger(v1::TRIGGER_TYPE_SCHEDULED);
    r.set_from_unix_ms(base + 86'400'000);
  });
  for (const auto& request : requests) {
    INFO(request.ShortDebugString());
    const auto got = in_read(io, *store, [request](qf::StoreTransaction& tx) { return tx.list_executions(request); });
    const auto expected = expected_list(all, request);
    CHECK(ids_of(got.items) == expected.items);
    CHECK(got.total == expected.total);
    for (const auto& e : got.items) CHECK(e.output().empty());  // lists leave the output out
  }
  const auto one = in_read(io, *store, [&](qf::StoreTransaction& tx) { return tx.execution(all[5].execution_id()); });
  REQUIRE(one);
  CHECK(MessageDifferencer::Equals(*one, all[5]));
  CHECK_FALSE(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.execution("nope"); }));
}

TEST_CASE("an execution upsert inserts, merges, and lets the first final state win", "[store]") {
  FOR_EACH_BACKEND();
  boost::asio::io_context io;
  auto store = open_store(io, backend);
  auto upsert = [&](const v1::Execution& e) {
    return in_tx(io, *store, [e](qf::StoreTransaction& tx) { return tx.upsert_execution(e); });
  };
  auto stored = [&](const std::string& id) {
    auto e = in_read(io, *store, [id](qf::StoreTransaction& tx) { return tx.execution(id); });
    REQUIRE(e);
    return *e;
  };
  const auto t0 = unix_ms("2026-03-01T02:00:00Z");
  auto running = make_execution("backup", t0, "a1", v1::EXECUTION_STATUS_RUNNING);
  running.set_started_unix_ms(t0 + 10);
  const auto id = running.execution_id();
  CHECK(upsert(running) == qf::UpsertResult::inserted);
  CHECK(upsert(running) == qf::UpsertResult::merged);  // the same report again

  auto success = running;
  success.set_status(v1::EXECUTION_STATUS_SUCCESS);
  success.set_ended_unix_ms(t0 + 1510);
  success.set_duration_ms(1500);
  success.set_exit_code(0);
  CHECK(upsert(success) == qf::UpsertResult::merged);
  CHECK(stored(id).status() == v1::EXECUTION_STATUS_SUCCESS);

  // A re-sent result may complete the record; one without output keeps it.
  auto with_output = success;
  with_output.set_output("done\n");
  CHECK(upsert(with_output) == qf::UpsertResult::repeated);
  CHECK(upsert(success) == qf::UpsertResult::repeated);
  CHECK(stored(id).output() == "done\n");
  CHECK(stored(id).duration_ms() == 1500);

  // Another final state, or a step back, is ignored.
  auto failure = success;
  failure.set_status(v1::EXECUTION_STATUS_FAILURE);
  failure.set_failure_reason("exit 1");
  CHECK(upsert(failure) == qf::UpsertResult::ignored);
  CHECK(upsert(running) == qf::UpsertResult::ignored);
  CHECK(stored(id).status() == v1::EXECUTION_STATUS_SUCCESS);
  CHECK(stored(id).failure_reason().empty());

  auto pending = make_execution("backup", t0 + 60'000, "a1", v1::EXECUTION_STATUS_PENDING);
  CHECK(upsert(pending) == qf::UpsertResult::inserted);
  auto skipped = pending;
  skipped.set_status(v1::EXECUTION_STATUS_SKIPPED);
  skipped.set_skip_reason(v1::SKIP_REASON_OVERLAP);
  CHECK(upsert(skipped) == qf::UpsertResult::merged);
  auto missed = pending;
  missed.set_status(v1::EXECUTION_STATUS_MISSED);
  CHECK(upsert(missed) == qf::UpsertResult::ignored);

  // The duplicate final report is counted once.
  v1::StatsQuery query;
  query.set_from_unix_ms(t0 - 1);
  query.set_to_unix_ms(t0 + 3'600'000);
  const auto stats = in_read(io, *store, [query](qf::StoreTransaction& tx) { return tx.stats(query); });
  CHECK(stats.summary().total() == 1);
  CHECK(stats.summary().success() == 1);
  CHECK(stats.summary().failure() == 0);
  CHECK(stats.summary().skipped() == 1);
  CHECK(stats.summary().missed() == 0);
  CHECK(stats.summary().avg_duration_ms() == 1500);

  auto bad = running;
  bad.set_execution_id("");
  auto error = thrown_by(io, *store, [bad](qf::StoreTransaction& tx) { tx.upsert_execution(bad); });
  CHECK(error.code() == qf::errc::invalid_argument);
  CHECK(error.detail().field == "execution_id");
  bad = running;
  bad.set_status(v1::EXECUTION_STATUS_UNSPECIFIED);
  CHECK(thrown_by(io, *store, [bad](qf::StoreTransaction& tx) { tx.upsert_execution(bad); }).detail().field ==
        "status");
}

// ---- statistics ----

namespace {

using Keep = std::function<bool(const v1::Execution&)>;

/// Checks `got` against the records `keep` selects in [got.from, got.to).
void check_stats(const v1::Stats& got, const std::vector<v1::Execution>& all, const Keep& keep) {
  std::array<std::uint64_t, 9> by_status{};
  std::vector<std::int64_t> durations;
  for (const auto& e : all) {
    if (!keep(e) || e.scheduled_unix_ms() < got.from_unix_ms() || e.scheduled_unix_ms() >= got.to_unix_ms()) continue;
    ++by_status[static_cast<std::size_t>(e.status())];
    if (e.status() >= v1::EXECUTION_STATUS_SUCCESS && e.status() <= v1::EXECUTION_STATUS_CANCELLED &&
        e.started_unix_ms() != 0)
      durations.push_back(e.duration_ms());
  }
  INFO(got.ShortDebugString());
  CHECK(got.pending() == by_status[1]);
  CHECK(got.running() == by_status[2]);
  CHECK(got.success() == by_status[3]);
  CHECK(got.failure() == by_status[4]);
  CHECK(got.timeout() == by_status[5]);
  CHECK(got.cancelled() == by_status[6]);
  CHECK(got.skipped() == by_status[7]);
  CHECK(got.missed() == by_status[8]);
  const auto total = by_status[3] + by_status[4] + by_status[5] + by_status[6];
  CHECK(got.total() == total);
  CHECK(got.success_rate_percent() ==
        Approx(total == 0 ? 0.0 : 100.0 * static_cast<double>(by_status[3]) / static_cast<double>(total)));
  std::sort(durations.begin(), durations.end());
  const auto n = static_cast<std::int64_t>(durations.size());
  auto nearest_rank = [&](std::int64_t p) { return durations[static_cast<std::size_t>((p * n + 99) / 100 - 1)]; };
  std::int64_t sum = 0;
  for (const auto d : durations) sum += d;
  CHECK(got.avg_duration_ms() == (n == 0 ? 0 : sum / n));
  CHECK(got.p50_duration_ms() == (n == 0 ? 0 : nearest_rank(50)));
  CHECK(got.p95_duration_ms() == (n == 0 ? 0 : nearest_rank(95)));
  CHECK(got.max_duration_ms() == (n == 0 ? 0 : durations.back()));
}

void check_failure_reasons(const v1::Stats& got, const std::vector<v1::Execution>& all, const Keep& keep,
                           std::size_t top_n) {
  struct Reason {
    std::uint64_t count = 0;
    std::int64_t last = 0;
    std::set<std::string> last_ids;
  };
  std::map<std::string, Reason> reasons;
  for (const auto& e : all) {
    if (!keep(e) || e.scheduled_unix_ms() < got.from_unix_ms() || e.scheduled_unix_ms() >= got.to_unix_ms()) continue;
    if (e.status() != v1::EXECUTION_STATUS_FAILURE && e.status() != v1::EXECUTION_STATUS_TIMEOUT) continue;
    if (e.failure_reason().empty()) continue;
    auto& r = reasons[e.failure_reason()];
    ++r.count;
    if (e.scheduled_unix_ms() > r.last) r.last_ids.clear();
    if (e.scheduled_unix_ms() >= r.last) {
      r.last = e.scheduled_unix_ms();
      r.last_ids.insert(e.execution_id());
    }
  }
  std::vector<std::pair<std::string, Reason>> ranked(reasons.begin(), reasons.end());
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const auto& a, const auto& b) { return a.second.count > b.second.count; });
  if (ranked.size() > top_n) ranked.resize(top_n);
  REQUIRE(static_cast<std::size_t>(got.top_failure_reasons_size()) == ranked.size());
  for (std::size_t i = 0; i < ranked.size(); ++i) {
    const auto& r = got.top_failure_reasons(static_cast<int>(i));
    CHECK(r.reason() == ranked[i].first);
    CHECK(r.count() == ranked[i].second.count);
    CHECK(r.last_scheduled_unix_ms() == ranked[i].second.last);
    CHECK(ranked[i].second.last_ids.count(r.last_execution_id()) == 1);
    const auto& example = *std::find_if(all.begin(), all.end(), [&](const v1::Execution& e) {
      return e.execution_id() == r.last_execution_id();
    });
    CHECK(r.example_error_message() == example.error_message());
  }
}

void check_failing_tasks(const v1::StatsResponse& got, const std::vector<v1::Execution>& all, const Keep& keep) {
  std::map<std::string, std::array<std::uint64_t, 3>> tasks;  // failures, finished, successes
  for (const auto& e : all) {
    const auto& range = got.summary();
    if (!keep(e) || e.scheduled_unix_ms() < range.from_unix_ms() || e.scheduled_unix_ms() >= range.to_unix_ms())
      continue;
    auto& t = tasks[e.task_id()];
    t[0] += e.status() == v1::EXECUTION_STATUS_FAILURE || e.status() == v1::EXECUTION_STATUS_TIMEOUT ? 1 : 0;
    t[1] += e.status() >= v1::EXECUTION_STATUS_SUCCESS && e.status() <= v1::EXECUTION_STATUS_CANCELLED ? 1 : 0;
    t[2] += e.status() == v1::EXECUTION_STATUS_SUCCESS ? 1 : 0;
  }
  std::vector<std::pair<std::string, std::array<std::uint64_t, 3>>> ranked;
  for (const auto& t : tasks)
    if (t.second[0] > 0) ranked.push_back(t);
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const auto& a, const auto& b) { return a.second[0] > b.second[0]; });
  REQUIRE(static_cast<std::size_t>(got.top_failing_tasks_size()) == ranked.size());
  for (std::size_t i = 0; i < ranked.size(); ++i) {
    const auto& t = got.top_failing_tasks(static_cast<int>(i));
    CHECK(t.task_id() == ranked[i].first);
    CHECK(t.task_name() == ranked[i].first + " name");
    CHECK(t.failure_count() == ranked[i].second[0]);
    CHECK(t.total() == ranked[i].second[1]);
    CHECK(t.success_rate_percent() == Approx(100.0 * static_cast<double>(ranked[i].second[2]) /
                                             static_cast<double>(ranked[i].second[1])));
  }
}

/// The series cover [from, to) without gaps, each bucket starting at a local boundary.
void check_series(const v1::StatsResponse& got, const std::vector<v1::Execution>& all, const Keep& keep,
                  const v1::StatsQuery& query, const std::function<bool(date::local_time<milliseconds>)>& at_boundary) {
  REQUIRE(got.series_size() > 0);
  CHECK(got.series(0).from_unix_ms() == query.from_unix_ms());
  CHECK(got.series(got.series_size() - 1).to_unix_ms() == query.to_unix_ms());
  const auto* zone = date::locate_zone(query.time_zone().empty() ? "UTC" : query.time_zone());
  for (int i = 0; i < got.series_size(); ++i) {
    const auto& bucket = got.series(i);
    CHECK(bucket.from_unix_ms() < bucket.to_unix_ms());
    if (i > 0) {
      CHECK(bucket.from_unix_ms() == got.series(i - 1).to_unix_ms());
      CHECK(at_boundary(zone->to_local(date::sys_time<milliseconds>{milliseconds{bucket.from_unix_ms()}})));
    }
    check_stats(bucket, all, keep);
  }
}

bool local_midnight(date::local_time<milliseconds> t) { return t == date::floor<date::days>(t); }

}  // namespace

TEST_CASE("statistics match a brute-force computation over random executions", "[store]") {
  FOR_EACH_BACKEND();
  boost::asio::io_context io;
  auto store = open_store(io, backend);
  const auto base = unix_ms("2026-03-03T00:00:00Z");  // 10 days across the US DST change of 2026-03-08
  const auto span = 10LL * 86'400'000;
  const auto all = random_history(11, 400, base, span);
  REQUIRE(insert_all(io, *store, all) == all.size());
  auto stats = [&](const v1::StatsQuery& query) {
    return in_read(io, *store, [query](qf::StoreTransaction& tx) { return tx.stats(query); });
  };
  auto everything = [](const v1::Execution&) { return true; };

  SECTION("over everything, with failing tasks and failure reasons") {
    v1::StatsQuery query;
    query.set_from_unix_ms(base);
    query.set_to_unix_ms(base + span);
    const auto got = stats(query);
    CHECK(got.summary().from_unix_ms() == base);
    CHECK(got.summary().to_unix_ms() == base + span);
    CHECK(got.summary().total() > 100);
    check_stats(got.summary(), all, everything);
    check_failure_reasons(got.summary(), all, everything, 10);
    check_failing_tasks(got, all, everything);
    CHECK(got.series_size() == 0);
    query.set_top_n(2);
    check_failure_reasons(stats(query).summary(), all, everything, 2);
  }
  SECTION("for a task, an agent and a group, in sub-ranges") {
    v1::StatsQuery query;
    query.set_task_id("backup");
    query.set_from_unix_ms(base);
    query.set_to_unix_ms(base + span);
    const Keep backup = [](const v1::Execution& e) { return e.task_id() == "backup"; };
    auto got = stats(query);
    check_stats(got.summary(), all, backup);
    check_failure_reasons(got.summary(), all, backup, 10);
    CHECK(got.top_failing_tasks_size() == 0);  // a single task has no ranking

    query = {};
    query.set_agent_id("a3");
    query.set_to_unix_ms(base + span);
    query.set_range("3d");
    got = stats(query);
    CHECK(got.summary().from_unix_ms() == base + span - 3 * 86'400'000LL);
    const Keep a3 = [](const v1::Execution& e) { return e.agent_id() == "a3"; };
    check_stats(got.summary(), all, a3);
    check_failing_tasks(got, all, a3);

    query = {};
    query.set_group_id("g1");
    query.set_from_unix_ms(base + 2 * 86'400'000LL + 12345);
    query.set_to_unix_ms(base + 6 * 86'400'000LL);
    const Keep g1 = [](const v1::Execution& e) { return e.group_id() == "g1"; };
    got = stats(query);
    check_stats(got.summary(), all, g1);
    check_failure_reasons(got.summary(), all, g1, 10);
  }
  SECTION("grouped by agent and by task") {
    v1::StatsQuery query;
    query.set_from_unix_ms(base + 86'400'000LL);
    query.set_to_unix_ms(base + span - 86'400'000LL);
    for (const auto group_by : {v1::STATS_GROUP_BY_AGENT, v1::STATS_GROUP_BY_TASK}) {
      query.set_group_by(group_by);
      const auto key_of = [group_by](const v1::Execution& e) {
        return group_by == v1::STATS_GROUP_BY_AGENT ? e.agent_id() : e.task_id();
      };
      std::map<std::string, std::size_t> records;  // per key, any status, in the range
      for (const auto& e : all)
        if (e.scheduled_unix_ms() >= query.from_unix_ms() && e.scheduled_unix_ms() < query.to_unix_ms())
          ++records[key_of(e)];
      const auto got = stats(query);
      INFO(v1::StatsGroupBy_Name(group_by));
      check_stats(got.summary(), all, everything);
      REQUIRE(got.groups_size() == static_cast<int>(records.size()));
      CHECK(got.group_count() == records.size());
      std::uint64_t total = 0;
      for (int i = 0; i < got.groups_size(); ++i) {
        const auto& group = got.groups(i);
        REQUIRE(records.count(group.key()) == 1);
        CHECK(group.name() == (group_by == v1::STATS_GROUP_BY_TASK ? group.key() + " name" : ""));
        CHECK(group.stats().from_unix_ms() == query.from_unix_ms());
        CHECK(group.stats().to_unix_ms() == query.to_unix_ms());
        CHECK(group.stats().top_failure_reasons_size() == 0);
        check_stats(group.stats(), all, [&](const v1::Execution& e) { return key_of(e) == group.key(); });
        total += group.stats().total();
        if (i > 0) {  // most executions first, then by key
          const auto& before = got.groups(i - 1);
          CHECK(std::make_pair(records[before.key()], group.key()) >
                std::make_pair(records[group.key()], before.key()));
        }
      }
      CHECK(total == got.summary().total());
    }
    query.set_group_by(v1::STATS_GROUP_BY_UNSPECIFIED);
    CHECK(stats(query).groups_size() == 0);
  }
  SECTION("per local day, hour, week and month") {
    v1::StatsQuery query;
    query.set_from_unix_ms(base + 5 * 3'600'000);
    query.set_to_unix_ms(base + span - 3 * 3'600'000);
    query.set_time_zone("America/New_York");
    query.set_granularity(v1::STATS_GRANULARITY_DAY);
    auto got = stats(query);
    check_stats(got.summary(), all, everything);
    check_series(got, all, everything, query, local_midnight);
    CHECK(got.series_size() == 10);
    bool short_day = false;  // 2026-03-08 has 23 hours in New York
    for (const auto& bucket : got.series())
      short_day = short_day || (bucket.from_unix_ms() == unix_ms("2026-03-08T05:00:00Z") &&
                                bucket.to_unix_ms() == unix_ms("2026-03-09T04:00:00Z"));
    CHECK(short_day);

    query.set_granularity(v1::STATS_GRANULARITY_WEEK);
    got = stats(query);
    check_series(got, all, everything, query, [](date::local_time<milliseconds> t) {
      return local_midnight(t) && date::weekday{date::floor<date::days>(t)} == date::Monday;
    });
    CHECK(got.series_size() == 2);

    query.set_granularity(v1::STATS_GRANULARITY_MONTH);
    query.set_from_unix_ms(unix_ms("2026-02-20T00:00:00Z"));
    got = stats(query);
    check_series(got, all, everything, query, [](date::local_time<milliseconds> t) {
      return local_midnight(t) && date::year_month_day{date::floor<date::days>(t)}.day() == date::day{1};
    });
    CHECK(got.series_size() == 2);

    query.set_granularity(v1::STATS_GRANULARITY_HOUR);
    query.set_time_zone("Asia/Kolkata");  // +05:30: local hours start at :30 UTC
    query.set_from_unix_ms(base + 86'400'000);
    query.set_to_unix_ms(base + 2 * 86'400'000);
    got = stats(query);
    check_series(got, all, everything, query, [](date::local_time<milliseconds> t) {
      return t == date::floor<std::chrono::hours>(t);
    });
    CHECK(got.series_size() == 25);
  }
}

TEST_CASE("statistics refuse a bad range, time zone, granularity or group_by, naming the field", "[store]") {
  FOR_EACH_BACKEND();
  boost::asio::io_context io;
  auto store = open_store(io, backend);
  auto refused = [&](v1::StatsQuery query) {
    return thrown_by(io, *store, [query](qf::StoreTransaction& tx) { tx.stats(query); });
  };
  v1::StatsQuery query;
  query.set_range("a while");
  auto e = refused(query);
  CHECK(e.code() == qf::errc::invalid_argument);
  CHECK(e.detail().field == "range");
  query = {};
  query.set_time_zone("Mars/Olympus_Mons");
  e = refused(query);
  CHECK(e.code() == qf::errc::unknown_time_zone);
  CHECK(e.detail().field == "time_zone");
  query = {};
  query.set_from_unix_ms(2000);
  query.set_to_unix_ms(1000);
  CHECK(refused(query).detail().field == "from_unix_ms");
  query = {};
  query.set_range("3650d");
  query.set_granularity(v1::STATS_GRANULARITY_HOUR);
  CHECK(refused(query).detail().field == "granularity");
  query = {};
  query.set_group_by(static_cast<v1::StatsGroupBy>(7));
  CHECK(refused(query).detail().field == "group_by");
  // The default range is the last 7 days up to now.
  const auto got = in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.stats({}); });
  CHECK(got.summary().to_unix_ms() - got.summary().from_unix_ms() == 7 * 86'400'000LL);
  CHECK(got.summary().total() == 0);
}

// ---- transactions ----

TEST_CASE("a failing work item rolls back only itself, its batch companions commit", "[store]") {
  FOR_EACH_BACKEND();
  boost::asio::io_context io;
  auto store = open_store(io, backend, milliseconds{200});  // the five calls share one batch
  const QuietLog quiet;
  std::map<std::string, qf::error_code> results;
  auto put = [&](const std::string& id, std::function<void(qf::error_code&)> then) {
    store->transact(
        [id, then](qf::StoreTransaction& tx, qf::error_code& ec) {
          tx.put_task(make_task(id, id + " name"));
          tx.bump_config_version(id);
          then(ec);
        },
        [&results, id](qf::error_code ec) { results[id] = ec; });
  };
  const auto commits_before = store->metrics().commits;
  put("a", [](qf::error_code&) {});
  put("b", [](qf::error_code& ec) { ec = qf::errc::invalid_argument; });
  put("c", [](qf::error_code&) { throw std::runtime_error("unexpected"); });
  put("d", [](qf::error_code&) { throw qf::error(qf::errc::conflict, "taken"); });
  put("e", [](qf::error_code&) {});
  io.run_for(std::chrono::seconds(10));
  REQUIRE(results.size() == 5);
  CHECK_FALSE(results["a"]);
  CHECK(results["b"] == qf::errc::invalid_argument);
  CHECK(results["c"] == qf::errc::store_failed);
  CHECK(results["d"] == qf::errc::conflict);
  CHECK_FALSE(results["e"]);
  CHECK(store->metrics().commits - commits_before == 1);
  CHECK(store->metrics().transactions_failed == 3);

  const auto ids = ids_of(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.all_tasks(); }));
  CHECK(ids == std::vector<std::string>{"a", "e"});
  // Each failed item's own version bump went with it: a and e got 1 and 2.
  CHECK(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.config_version(); }) == 2);
}

namespace {

/// Three tasks queued into one batch (the store waits 300 ms for companions), the middle one
/// `poison`, which the test's injected fault turns into a failure of the whole batch: every
/// item fails store_failed, nothing stays, and the store keeps working.
void check_poisoned_batch_fails_whole(boost::asio::io_context& io, qf::Store& store) {
  const QuietLog quiet;
  std::vector<qf::error_code> results;
  for (const char* id : {"good1", "poison", "good2"})
    store.transact([id](qf::StoreTransaction& tx, qf::error_code&) { tx.put_task(make_task(id, id)); },
                   [&](qf::error_code ec) { results.push_back(ec); });
  io.restart();
  io.run_for(std::chrono::seconds(10));
  REQUIRE(results.size() == 3);
  for (const auto& ec : results) CHECK(ec == qf::errc::store_failed);
  CHECK(store.metrics().transactions_failed == 3);
  CHECK(in_read(io, store, [](qf::StoreTransaction& tx) { return tx.all_tasks(); }).empty());
  in_tx(io, store, [](qf::StoreTransaction& tx) {
    tx.put_task(make_task("good1", "good1"));
    return 0;
  });
  CHECK(in_read(io, store, [](qf::StoreTransaction& tx) { return tx.all_tasks(); }).size() == 1);
}

}  // namespace

TEST_CASE("a batch that SQLite rolls back as a whole fails every item in it", "[store]") {
  TempDir dir;
  const auto path = dir.file("coordinator.db");
  boost::asio::io_context io;
  open_store(io, Location{Backend::sqlite, path}).reset();  // creates the schema
  {
    // Fault injection: a trigger that rolls back the whole transaction on one task.
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    const int rc = sqlite3_exec(db,
                                "CREATE TRIGGER poison BEFORE INSERT ON tasks WHEN NEW.id = 'poison' "
                                "BEGIN SELECT RAISE(ROLLBACK, 'injected failure'); END",
                                nullptr, nullptr, nullptr);
    sqlite3_close(db);
    REQUIRE(rc == SQLITE_OK);
  }
  auto store = open_store(io, Location{Backend::sqlite, path}, milliseconds{300});
  check_poisoned_batch_fails_whole(io, *store);
}

TEST_CASE("a batch that PostgreSQL fails at COMMIT fails every item in it", "[store]") {
  TempDir dir;
  boost::asio::io_context io;
  const auto location = fresh_location(Backend::postgres, dir);
  auto store = open_store(io, location, milliseconds{300});
  // Fault injection: a deferred constraint trigger that fails the COMMIT of a transaction
  // that inserted one task.
  quartzflow::testing::postgres_exec(
      location.where,
      "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'injected failure'; "
      "END $$; CREATE CONSTRAINT TRIGGER poison AFTER INSERT ON tasks DEFERRABLE INITIALLY DEFERRED FOR EACH ROW "
      "WHEN (NEW.id = 'poison') EXECUTE FUNCTION poison()");
  check_poisoned_batch_fails_whole(io, *store);
}

TEST_CASE("a lost PostgreSQL connection fails its batch as store_unavailable and the next batch reconnects",
          "[store]") {
  TempDir dir;
  boost::asio::io_context io;
  const auto location = fresh_location(Backend::postgres, dir);
  auto store = open_store(io, location);
  in_tx(io, *store, [](qf::StoreTransaction& tx) {
    tx.put_task(make_task("t1", "one"));
    return 0;
  });
  const QuietLog quiet;
  // The store's connections are ended from outside while a transaction is inside its work.
  std::promise<void> entered;
  std::promise<void> resume;
  auto resumed = resume.get_future().share();
  std::optional<qf::error_code> result;
  store->transact(
      [&entered, resumed](qf::StoreTransaction& tx, qf::error_code&) {
        entered.set_value();
        resumed.wait();
        tx.put_task(make_task("t2", "two"));
      },
      [&](qf::error_code ec) { result = ec; });
  REQUIRE(entered.get_future().wait_for(std::chrono::seconds(10)) == std::future_status::ready);
  quartzflow::testing::postgres_exec(location.where,
                                     "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = "
                                     "current_database() AND pid <> pg_backend_pid()");
  resume.set_value();
  io.restart();
  io.run_for(std::chrono::seconds(10));
  REQUIRE(result);
  CHECK(*result == qf::errc::store_unavailable);
  CHECK(store->metrics().transactions_failed == 1);

  // Writes and reads connect again (both connections were ended).
  in_tx(io, *store, [](qf::StoreTransaction& tx) {
    tx.put_task(make_task("t3", "three"));
    return 0;
  });
  CHECK(ids_of(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.all_tasks(); })) ==
        std::vector<std::string>{"t1", "t3"});
}

TEST_CASE("a PostgreSQL server that cannot be reached fails the open, the password never shown", "[store]") {
  TempDir dir;
  boost::asio::io_context io;
  const QuietLog quiet;
  for (const std::string dsn : {"host=/nonexistent-qf-dir port=5432 dbname=qf user=qf password=hunter2",
                                "postgresql://qf:hunter2@/qf?host=/nonexistent-qf-dir&connect_timeout=2"}) {
    INFO(dsn);
    qf::PostgresStoreOptions options;
    options.dsn = dsn;
    qf::error_code ec;
    std::string detail;
    CHECK_FALSE(qf::open_postgres_store(io.get_executor(), options, ec, &detail));
    CHECK(ec == qf::errc::store_unavailable);
    CHECK_THAT(detail, Catch::Contains("nonexistent-qf-dir"));
    CHECK_THAT(detail, !Catch::Contains("hunter2"));
    CHECK_THAT(detail, Catch::Contains("***"));
  }
  qf::PostgresStoreOptions options;
  options.dsn = fresh_location(Backend::postgres, dir).where;
  options.password_file = dir.file("no-such-password");
  qf::error_code ec;
  std::string detail;
  CHECK_FALSE(qf::open_postgres_store(io.get_executor(), options, ec, &detail));
  CHECK(ec == qf::errc::invalid_argument);
  CHECK_THAT(detail, Catch::Contains("password_file"));
  CHECK_THROWS_AS(qf::open_postgres_store(io.get_executor(), options), qf::error);
}

TEST_CASE("a PostgreSQL store keeps its tables in the schema it is given", "[store]") {
  TempDir dir;
  boost::asio::io_context io;
  const auto location = fresh_location(Backend::postgres, dir);
  qf::PostgresStoreOptions options;
  options.dsn = location.where;
  options.schema = "qf_coordinator";
  auto store = qf::open_postgres_store(io.get_executor(), options);
  in_tx(io, *store, [](qf::StoreTransaction& tx) {
    tx.put_task(make_task("t1", "one"));
    return tx.bump_config_version("t1");
  });
  quartzflow::testing::postgres_exec(location.where, "SELECT 1 FROM qf_coordinator.tasks WHERE id = 't1'");
  CHECK_THROWS(quartzflow::testing::postgres_exec(location.where, "SELECT 1 FROM public.tasks"));
  store.reset();
  store = qf::open_postgres_store(io.get_executor(), options);  // migrated already: opens as it is
  CHECK(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.config_version(); }) == 1);
}

TEST_CASE("read transactions see committed writes and refuse to write", "[store]") {
  FOR_EACH_BACKEND();
  TempDir dir;
  std::vector<Location> locations{fresh_location(backend, dir)};
  if (backend == Backend::sqlite) locations.push_back({backend, ":memory:"});  // one shared connection
  for (const auto& location : locations) {
    INFO(location.where);
    boost::asio::io_context io;
    auto store = open_store(io, location);
    in_tx(io, *store, [](qf::StoreTransaction& tx) {
      tx.put_task(make_task("t1", "one"));
      return 0;
    });
    CHECK(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.task("t1"); }));
    const std::vector<std::function<void(qf::StoreTransaction&)>> writes{
        [](qf::StoreTransaction& tx) { tx.put_task(make_task("t2", "two")); },
        [](qf::StoreTransaction& tx) { tx.delete_task("t1"); },
        [](qf::StoreTransaction& tx) { tx.bump_config_version("x"); },
        [](qf::StoreTransaction& tx) { tx.put_group(make_group("g", "g")); },
        [](qf::StoreTransaction& tx) { tx.put_agent(make_agent("a", "", v1::AGENT_STATE_ONLINE)); },
        [](qf::StoreTransaction& tx) {
          tx.upsert_execution(make_execution("t1", 1, "a", v1::EXECUTION_STATUS_PENDING));
        },
        [](qf::StoreTransaction& tx) { tx.put_log("e", "x"); },
        [](qf::StoreTransaction& tx) { tx.put_fire_state("t1", {}); },
        [](qf::StoreTransaction& tx) { tx.append_audit({}); },
    };
    for (const auto& write : writes)
      CHECK(attempt(io, *store, [write](qf::StoreTransaction& tx, qf::error_code&) { write(tx); }, true) ==
            qf::errc::store_read_only);
    CHECK(ids_of(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.all_tasks(); })) ==
          std::vector<std::string>{"t1"});
    CHECK(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.config_version(); }) == 0);
    CHECK(store->metrics().reads >= writes.size());
  }
}

TEST_CASE("a thousand concurrent transactions complete with far fewer commits", "[store]") {
  FOR_EACH_BACKEND();
  TempDir dir;
  boost::asio::io_context io;
  auto store = open_store(io, fresh_location(backend, dir), milliseconds{1});
  constexpr int k_threads = 4;
  constexpr int k_per_thread = 250;
  std::atomic<int> ok{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < k_threads; ++t)
    callers.emplace_back([&, t] {
      for (int i = 0; i < k_per_thread; ++i) {
        auto e = make_execution(fmt::format("task{}", t), i, "a1", v1::EXECUTION_STATUS_SUCCESS);
        store->transact([e](qf::StoreTransaction& tx, qf::error_code&) { tx.upsert_execution(e); },
                        [&](qf::error_code ec) { (ec ? failed : ok).fetch_add(1); });
      }
    });
  for (auto& caller : callers) caller.join();
  io.run_for(std::chrono::seconds(20));
  CHECK(ok == k_threads * k_per_thread);
  CHECK(failed == 0);
  const auto metrics = store->metrics();
  INFO("commits: " << metrics.commits);
  CHECK(metrics.transactions_committed == k_threads * k_per_thread);
  CHECK(metrics.commits <= 100);
  CHECK(in_read(io, *store, [](qf::StoreTransaction& tx) { return tx.list_executions({}); }).total ==
        k_threads * k_per_thread);
}

TEST_CASE("io_context::run() waits for the store's completions, destruction completes queued work", "[store]") {
  FOR_EACH_BACKEND();
  boost::asio::io_context io;
  auto store = open_store(io, backend, milliseconds{50});
  bool done = false;
  store->transact([](qf::StoreTransaction& tx, qf::error_code&) { tx.bump_config_version("x"); },
                  [&](qf::error_code ec) { done = !ec; });
  io.run();  // no run_for: returns only once nothing is owed
  CHECK(done);

  std::vector<qf::error_code> results;
  for (int i = 0; i < 3; ++i)
    store->transact([](qf::StoreTransaction& tx, qf::error_code&) { tx.bump_config_version("y"); },
                    [&](qf::error_code ec) { results.push_back(ec); });
  store->flush();
  store.reset();
  io.restart();
  io.run();
  REQUIRE(results.size() == 3);
  for (const auto& ec : results) CHECK_FALSE(ec);
}
