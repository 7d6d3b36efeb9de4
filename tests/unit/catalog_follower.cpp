// SPDX-License-Identifier: Apache-2.0
// What a coordinator applies when the shared Store's catalog moved (src/catalog/catalog_follower.hpp):
// each change once, whether the local commit or the follower's read sees it first, never an
// older state over a newer one; and what a read of the Store finds.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <fmt/format.h>

#include <quartzflow/catalog.hpp>
#include <quartzflow/pg_store.hpp>
#include <quartzflow/store.hpp>

#include "catalog/catalog_follower.hpp"
#include "pg_server.hpp"
#include "temp_dir.hpp"

namespace qf = quartzflow;
using qf::detail::CatalogChangesRead;
using qf::detail::CatalogFollowState;
using qf::detail::LocalRemoval;

namespace {

qf::v1::Task task_at(const std::string& id, std::int64_t version, bool enabled = true) {
  qf::v1::Task task;
  task.set_id(id);
  task.set_name(id);
  task.set_enabled(enabled);
  task.set_config_version(version);
  return task;
}

CatalogChangesRead changed(std::uint64_t version, std::vector<std::string> ids, std::vector<qf::v1::Task> tasks) {
  CatalogChangesRead read;
  read.version = version;
  read.task_ids = std::move(ids);
  read.tasks = std::move(tasks);
  return read;
}

/// A Store that forwards to another and keeps the listener of `watch_config_version`, to
/// call it as a store with notifications (PostgreSQL's LISTEN) would.
class WatchedStore final : public qf::Store {
 public:
  explicit WatchedStore(qf::Store& inner) : inner_(inner) {}
  void transact(Work work, Done done) override { inner_.transact(std::move(work), std::move(done)); }
  void read(Work work, Done done) override {
    ++reads;
    inner_.read(std::move(work), std::move(done));
  }
  void flush() override { inner_.flush(); }
  boost::asio::any_io_executor get_executor() const noexcept override { return inner_.get_executor(); }
  void watch_config_version(std::function<void()> changed) override { changed_ = std::move(changed); }
  void notify() {
    if (changed_) changed_();
  }
  int reads = 0;

 private:
  qf::Store& inner_;
  std::function<void()> changed_;
};

qf::v1::Task manual_task(const std::string& id) {
  qf::v1::Task task;
  task.set_id(id);
  task.set_name(id);
  task.mutable_shell()->set_script("true");
  task.set_all_agents(true);
  task.mutable_schedule()->mutable_manual();
  return task;
}

}  // namespace

TEST_CASE("a change another coordinator committed is applied once, with the action it was", "[catalog_follow]") {
  CatalogFollowState state;
  state.loaded(3, {task_at("a", 2), task_at("b", 3)});
  REQUIRE(state.applied_version() == 3);
  REQUIRE(state.task_count() == 2);

  auto actions = state.changes_read(changed(5, {"a", "c"}, {task_at("a", 4, false), task_at("c", 5)}));
  REQUIRE(actions.upserts.size() == 2);
  CHECK(actions.upserts[0].task.id() == "a");
  CHECK(actions.upserts[0].action == qf::v1::TASK_CHANGE_ACTION_DISABLED);
  CHECK(actions.upserts[1].task.id() == "c");
  CHECK(actions.upserts[1].action == qf::v1::TASK_CHANGE_ACTION_CREATED);
  CHECK(actions.removals.empty());
  CHECK_FALSE(actions.reload_dispatcher);
  CHECK(state.applied_version() == 5);

  // The same read again (an overlapping poll) or an older one changes nothing.
  CHECK(state.changes_read(changed(5, {"a", "c"}, {task_at("a", 4, false), task_at("c", 5)})).empty());
  CHECK(state.changes_read(changed(4, {"a"}, {task_at("a", 4, false)})).empty());

  // Deleted: gone from the read; observers hear of it since this process held it.
  actions = state.changes_read(changed(6, {"b"}, {}));
  REQUIRE(actions.removals.size() == 1);
  CHECK(actions.removals[0].task_id == "b");
  CHECK(actions.removals[0].known);
  CHECK(state.task_count() == 2);
}

TEST_CASE("a local change is applied once whether its commit or the follower's read comes first", "[catalog_follow]") {
  CatalogFollowState state;
  state.loaded(1, {task_at("a", 1)});

  SECTION("the commit first: the read finds it applied") {
    REQUIRE(state.local_task(task_at("a", 2)));
    CHECK(state.changes_read(changed(2, {"a"}, {task_at("a", 2)})).upserts.empty());
  }
  SECTION("the read first: the commit finds it applied") {
    REQUIRE(state.changes_read(changed(2, {"a"}, {task_at("a", 2)})).upserts.size() == 1);
    CHECK_FALSE(state.local_task(task_at("a", 2)));
  }
  SECTION("a late commit never replaces the newer state another coordinator committed") {
    REQUIRE(state.changes_read(changed(3, {"a"}, {task_at("a", 3)})).upserts.size() == 1);
    CHECK_FALSE(state.local_task(task_at("a", 2)));
    CHECK(state.local_removal("a", 2) == LocalRemoval::outdated);
  }
  SECTION("a local deletion: once, and quietly when the read removed it first") {
    CHECK(state.local_removal("a", 2) == LocalRemoval::remove);
    CHECK(state.changes_read(changed(2, {"a"}, {})).removals.size() == 1);  // quiet: not known any more
    CHECK_FALSE(state.changes_read(changed(3, {"a"}, {})).removals.at(0).known);
    CHECK(state.task_count() == 0);
  }
  SECTION("a commit older than a deletion the read saw does not bring the task back") {
    auto actions = state.changes_read(changed(3, {"a"}, {}));
    REQUIRE(actions.removals.size() == 1);
    CHECK(actions.removals[0].known);
    CHECK_FALSE(state.local_task(task_at("a", 2)));
    CHECK(state.local_removal("a", 2) == LocalRemoval::outdated);
    // Created again later: a creation.
    auto again = state.changes_read(changed(4, {"a"}, {task_at("a", 4)}));
    REQUIRE(again.upserts.size() == 1);
    CHECK(again.upserts[0].action == qf::v1::TASK_CHANGE_ACTION_CREATED);
  }
}

TEST_CASE("a full reload removes what the store no longer has, but not a newer local creation", "[catalog_follow]") {
  CatalogFollowState state;
  state.loaded(5, {task_at("a", 1), task_at("b", 2), task_at("c", 5)});
  REQUIRE(state.local_task(task_at("d", 7)));  // committed here after the read's snapshot

  CatalogChangesRead read;
  read.version = 6;
  read.full = true;
  read.groups_or_agents = true;
  read.tasks = {task_at("a", 1), task_at("c", 6)};
  auto actions = state.changes_read(read);
  REQUIRE(actions.upserts.size() == 1);
  CHECK(actions.upserts[0].task.id() == "c");
  CHECK(actions.upserts[0].action == qf::v1::TASK_CHANGE_ACTION_UPDATED);
  REQUIRE(actions.removals.size() == 1);
  CHECK(actions.removals[0].task_id == "b");
  CHECK(actions.reload_dispatcher);
  CHECK(state.task_count() == 3);  // a, c, d
}

TEST_CASE("a read of the store finds what the versions since changed, or everything when history cannot tell",
          "[catalog_follow]") {
  const bool postgres = GENERATE(false, true);
  INFO("backend: " << (postgres ? "PostgreSQL" : "SQLite"));
  boost::asio::io_context io;
  std::unique_ptr<qf::Store> store;
  if (postgres) {
    qf::PostgresStoreOptions options;
    options.dsn = qf::testing::postgres_test_database();
    store = qf::open_postgres_store(io.get_executor(), options);
  } else {
    store = qf::open_sqlite_store(io.get_executor(), qf::SqliteStoreOptions{":memory:"});
  }
  qf::Catalog catalog(*store);
  int done = 0;
  for (const char* id : {"a", "b", "c"}) {
    auto task = task_at(id, 0);
    task.clear_config_version();
    task.mutable_shell()->set_script("true");
    task.set_all_agents(true);
    task.mutable_schedule()->mutable_manual();
    catalog.create_task(task, qf::Actor{}, [&](qf::CatalogResult<qf::v1::Task> r) {
      REQUIRE(r);
      ++done;
    });
  }
  catalog.delete_task("b", qf::Actor{}, [&](qf::CatalogResult<std::uint64_t> r) {
    REQUIRE(r);
    ++done;
  });
  qf::v1::Group group;
  group.set_id("web");
  group.set_name("web");
  catalog.create_group(group, qf::Actor{}, [&](qf::CatalogResult<qf::v1::Group> r) {
    REQUIRE(r);
    ++done;
  });
  io.run();
  REQUIRE(done == 5);

  const auto read_after = [&](std::uint64_t after) {
    CatalogChangesRead read;
    bool read_done = false;
    store->read([&](qf::StoreTransaction& tx, qf::error_code&) { read = qf::detail::read_catalog_changes(tx, after); },
                [&](qf::error_code ec) {
                  REQUIRE_FALSE(ec);
                  read_done = true;
                });
    io.restart();
    io.run();
    REQUIRE(read_done);
    return read;
  };
  const auto ids_of = [](const std::vector<qf::v1::Task>& tasks) {
    std::vector<std::string> ids;
    for (const auto& t : tasks) ids.push_back(t.id());
    std::sort(ids.begin(), ids.end());
    return ids;
  };

  // Versions 2-4: b created, c created, b deleted. Only those tasks are read.
  auto read = read_after(1);
  CHECK(read.version == 5);
  REQUIRE_FALSE(read.full);
  CHECK(read.groups_or_agents);  // version 5 created a group
  auto changed_ids = read.task_ids;
  std::sort(changed_ids.begin(), changed_ids.end());
  CHECK(changed_ids == std::vector<std::string>{"b", "c"});
  CHECK(ids_of(read.tasks) == std::vector<std::string>{"c"});

  read = read_after(4);
  CHECK_FALSE(read.full);
  CHECK(read.task_ids.empty());
  CHECK(read.groups_or_agents);

  // Nothing past the current version: only the version is read.
  read = read_after(5);
  CHECK(read.version == 5);
  CHECK(read.tasks.empty());
  CHECK_FALSE(read.full);
  CHECK_FALSE(read.groups_or_agents);

  // A version whose changes were not recorded (older code, another writer): everything.
  bool bumped = false;
  store->transact([](qf::StoreTransaction& tx, qf::error_code&) { tx.bump_config_version("unrecorded"); },
                  [&](qf::error_code ec) {
                    REQUIRE_FALSE(ec);
                    bumped = true;
                  });
  io.restart();
  io.run();
  REQUIRE(bumped);
  read = read_after(4);
  CHECK(read.version == 6);
  CHECK(read.full);
  CHECK(read.groups_or_agents);
  CHECK(ids_of(read.tasks) == std::vector<std::string>{"a", "c"});
}

TEST_CASE("the follower polls the shared store file and a store's notification wakes it at once", "[catalog_follow]") {
  using namespace std::chrono_literals;
  qf::testing::TempDir dir{"qf-follower"};
  boost::asio::io_context io;
  auto ours = qf::open_sqlite_store(io.get_executor(), qf::SqliteStoreOptions{dir.file("coordinator.db")});
  auto theirs = qf::open_sqlite_store(io.get_executor(), qf::SqliteStoreOptions{dir.file("coordinator.db")});
  WatchedStore watched(*ours);
  qf::Catalog their_catalog(*theirs);
  std::vector<qf::detail::CatalogFollowActions> applied;
  const auto run_until = [&](const std::function<bool()>& done, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      io.restart();
      io.run_for(5ms);
    }
    return done();
  };
  const auto create = [&](const std::string& id) {
    bool created = false;
    their_catalog.create_task(manual_task(id), qf::Actor{}, [&](qf::CatalogResult<qf::v1::Task> r) {
      REQUIRE(r);
      created = true;
    });
    REQUIRE(run_until([&] { return created; }, 5s));
  };

  SECTION("polled every interval: each change handed over once") {
    qf::detail::CatalogFollower follower(io.get_executor(), watched, 20ms,
                                         [&](auto actions) { applied.push_back(std::move(actions)); });
    follower.start();
    create("a");
    REQUIRE(run_until([&] { return !applied.empty(); }, 2s));
    REQUIRE(applied.size() == 1);
    REQUIRE(applied[0].upserts.size() == 1);
    CHECK(applied[0].upserts[0].task.id() == "a");
    CHECK(applied[0].upserts[0].action == qf::v1::TASK_CHANGE_ACTION_CREATED);
    io.restart();
    io.run_for(200ms);  // about ten more polls: nothing new
    CHECK(applied.size() == 1);
    CHECK(follower.state().applied_version() == 1);
    CHECK(watched.reads >= 5);
    follower.stop();
    const auto reads = watched.reads;
    io.restart();
    io.run_for(100ms);
    CHECK(watched.reads == reads);  // stopped: no more polls
  }
  SECTION("interval 0: no poll, only the store's notification") {
    qf::detail::CatalogFollower follower(io.get_executor(), watched, 0ms,
                                         [&](auto actions) { applied.push_back(std::move(actions)); });
    follower.start();
    create("b");
    io.restart();
    io.run_for(200ms);
    CHECK(applied.empty());
    CHECK(watched.reads == 0);
    watched.notify();
    REQUIRE(run_until([&] { return !applied.empty(); }, 2s));
    CHECK(applied[0].upserts.at(0).task.id() == "b");
    CHECK(watched.reads == 1);
  }
}

TEST_CASE(
    "catalog changes committed at once through two stores on one PostgreSQL database all commit, in version order",
    "[catalog_follow]") {
  boost::asio::io_context io;
  qf::PostgresStoreOptions options;
  options.dsn = qf::testing::postgres_test_database();
  auto first = qf::open_postgres_store(io.get_executor(), options);
  auto second = qf::open_postgres_store(io.get_executor(), options);
  qf::Catalog first_catalog(*first);
  qf::Catalog second_catalog(*second);
  std::vector<std::int64_t> versions;
  std::vector<std::string> failures;
  for (int i = 0; i < 100; ++i) {
    for (auto* catalog : {&first_catalog, &second_catalog}) {
      catalog->create_task(manual_task(fmt::format("t{}-{}", i, catalog == &first_catalog ? 1 : 2)), qf::Actor{},
                           [&](qf::CatalogResult<qf::v1::Task> r) {
                             if (r) versions.push_back(r.value.config_version());
                             else failures.push_back(r.error.message());
                           });
    }
  }
  io.run();
  INFO((failures.empty() ? std::string() : failures.front()));
  CHECK(failures.empty());
  REQUIRE(versions.size() == 200);
  std::sort(versions.begin(), versions.end());
  for (std::size_t i = 0; i < versions.size(); ++i) CHECK(versions[i] == static_cast<std::int64_t>(i + 1));
}
