// SPDX-License-Identifier: Apache-2.0
// Catalog operations over a SQLite store, and group membership rules.
#include <catch2/catch.hpp>

#include <utility>
#include <boost/asio/io_context.hpp>

#include <quartzflow/catalog.hpp>

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;

namespace {

struct Fixture {
  boost::asio::io_context io;
  std::unique_ptr<qf::Store> store;
  std::unique_ptr<qf::Catalog> catalog;
  qf::Actor alice{"alice", "10.0.0.9"};

  Fixture() {
    qf::error_code ec;
    std::string detail;
    store = qf::open_sqlite_store(io.get_executor(), {":memory:"}, ec, &detail);
    INFO(detail);
    REQUIRE(store);
    catalog = std::make_unique<qf::Catalog>(*store);
  }

  /// Runs an async catalog call to completion.
  template <typename T, typename Call>
  qf::CatalogResult<T> wait(Call call) {
    std::optional<qf::CatalogResult<T>> out;
    call([&](qf::CatalogResult<T> r) { out = std::move(r); });
    io.restart();
    while (!out && io.run_one_for(std::chrono::seconds(5))) {
    }
    REQUIRE(out);
    return std::move(*out);
  }
  qf::CatalogResult<v1::Task> create(v1::Task task) {
    return wait<v1::Task>([&](auto done) { catalog->create_task(task, alice, done); });
  }
  qf::CatalogResult<v1::Group> create(v1::Group group) {
    return wait<v1::Group>([&](auto done) { catalog->create_group(group, alice, done); });
  }
  /// Reads inside a read transaction.
  template <typename F>
  void read(F f) {
    bool done = false;
    store->read([&](qf::StoreTransaction& tx, qf::error_code&) { f(tx); }, [&](qf::error_code) { done = true; });
    io.restart();
    while (!done && io.run_one_for(std::chrono::seconds(5))) {
    }
    REQUIRE(done);
  }
  std::uint64_t version() {
    std::uint64_t v = 0;
    read([&](qf::StoreTransaction& tx) { v = tx.config_version(); });
    return v;
  }
};

v1::Task shell(const std::string& name) {
  v1::Task t;
  t.set_name(name);
  t.set_enabled(true);
  t.mutable_shell()->set_script("true");
  t.mutable_schedule()->set_cron("0 2 * * *");
  return t;
}

v1::Group group(const std::string& name) {
  v1::Group g;
  g.set_name(name);
  return g;
}

v1::Agent agent(const std::string& host, std::vector<std::string> ips = {}) {
  v1::Agent a;
  a.set_id(host);
  a.set_hostname(host);
  for (auto& ip : ips) a.add_ips(ip);
  return a;
}

}  // namespace

TEST_CASE("creating a task validates it, names it and records a version and an audit entry", "[catalog]") {
  Fixture f;
  const auto v0 = f.version();
  auto created = f.create(shell("backup"));
  REQUIRE(created);
  CHECK(created.value.id() == "backup");
  CHECK(created.value.revision() == 1);
  CHECK(created.value.created_by() == "alice");
  CHECK(f.version() == v0 + 1);
  CHECK(created.value.config_version() == static_cast<std::int64_t>(v0 + 1));
  f.read([&](qf::StoreTransaction& tx) {
    const auto audit = tx.list_audit({});
    REQUIRE(audit.total == 1);
    CHECK(audit.items[0].action() == "task.create");
    CHECK(audit.items[0].actor() == "alice");
    CHECK(audit.items[0].source_ip() == "10.0.0.9");
    CHECK(audit.items[0].after_json().find("\"backup\"") != std::string::npos);
  });
}

TEST_CASE("an invalid or conflicting task changes nothing", "[catalog]") {
  Fixture f;
  REQUIRE(f.create(shell("backup")));
  const auto v1_ = f.version();
  auto bad = shell("broken");
  bad.mutable_schedule()->set_cron("61 * * * *");
  auto refused = f.create(bad);
  CHECK(refused.ec == qf::errc::invalid_argument);
  CHECK(refused.error.message() == R"(invalid task "broken": schedule.cron.minute: 61 is out of range 0-59)");
  auto twin = shell("backup");
  twin.set_id("backup-2");
  refused = f.create(twin);
  CHECK(refused.ec == qf::errc::conflict);
  CHECK(refused.error.field == "name");
  CHECK(refused.error.reason == R"("backup" is already used by task "backup")");
  auto orphan = shell("orphan");
  orphan.add_group_ids("nowhere");
  refused = f.create(orphan);
  CHECK(refused.error.field == "group_ids[0]");
  CHECK(f.version() == v1_);
  f.read([&](qf::StoreTransaction& tx) {
    CHECK(tx.all_tasks().size() == 1);
    CHECK(tx.list_audit({}).total == 1);
  });
}

TEST_CASE("updating a task is refused while it runs unless forced, naming the runs", "[catalog]") {
  Fixture f;
  auto created = f.create(shell("report"));
  REQUIRE(created);
  bool written = false;
  f.store->transact(
      [](qf::StoreTransaction& tx, qf::error_code&) {
        v1::Execution e;
        e.set_execution_id("report:1000:agent-1");
        e.set_task_id("report");
        e.set_agent_id("agent-1");
        e.set_status(v1::EXECUTION_STATUS_RUNNING);
        e.set_scheduled_unix_ms(1000);
        tx.upsert_execution(e);
      },
      [&](qf::error_code ec) { written = !ec; });
  f.io.restart();
  while (!written && f.io.run_one_for(std::chrono::seconds(5))) {
  }
  REQUIRE(written);
  auto changed = created.value;
  changed.set_timeout_seconds(60);
  auto refused = f.wait<v1::Task>([&](auto done) { f.catalog->update_task(changed, false, f.alice, done); });
  CHECK(refused.ec == qf::errc::conflict);
  CHECK(refused.error.reason.find("report:1000:agent-1") != std::string::npos);
  auto forced = f.wait<v1::Task>([&](auto done) { f.catalog->update_task(changed, true, f.alice, done); });
  REQUIRE(forced);
  CHECK(forced.value.revision() == 2);
  CHECK(forced.value.timeout_seconds() == 60);
  CHECK(forced.value.created_by() == "alice");
}

TEST_CASE("enable and disable bump the version only when something changes", "[catalog]") {
  Fixture f;
  REQUIRE(f.create(shell("t")));
  const auto v = f.version();
  auto off = f.wait<v1::Task>([&](auto done) { f.catalog->set_task_enabled("t", false, f.alice, done); });
  REQUIRE(off);
  CHECK_FALSE(off.value.enabled());
  CHECK(f.version() == v + 1);
  auto again = f.wait<v1::Task>([&](auto done) { f.catalog->set_task_enabled("t", false, f.alice, done); });
  REQUIRE(again);
  CHECK(f.version() == v + 1);
  auto missing = f.wait<v1::Task>([&](auto done) { f.catalog->set_task_enabled("nope", true, f.alice, done); });
  CHECK(missing.ec == qf::errc::not_found);
}

TEST_CASE("groups: unique names, bound tasks block deletion, renames keep bindings", "[catalog]") {
  Fixture f;
  REQUIRE(f.create(group("web")));
  auto task = shell("deploy");
  task.add_group_ids("web");
  REQUIRE(f.create(task));
  CHECK(f.create(group("web")).ec == qf::errc::conflict);
  auto blocked = f.wait<std::uint64_t>([&](auto done) { f.catalog->delete_group("web", f.alice, done); });
  CHECK(blocked.ec == qf::errc::conflict);
  CHECK(blocked.error.reason == "tasks are bound to it: deploy");
  auto renamed = group("frontend");
  renamed.set_id("web");
  auto updated = f.wait<v1::Group>([&](auto done) { f.catalog->update_group(renamed, f.alice, done); });
  REQUIRE(updated);
  f.read([&](qf::StoreTransaction& tx) {
    CHECK(tx.group("web")->name() == "frontend");
    CHECK(tx.tasks_bound_to("web") == std::vector<std::string>{"deploy"});
  });
  auto bad = group("x");
  bad.mutable_membership()->add_cidrs("10.0.0.0/33");
  auto refused = f.create(bad);
  CHECK(refused.error.field == "membership.cidrs[0]");
}

TEST_CASE("moving agents pins their group over rules", "[catalog]") {
  Fixture f;
  REQUIRE(f.create(group("db")));
  bool written = false;
  f.store->transact([](qf::StoreTransaction& tx, qf::error_code&) { tx.put_agent(agent("host-1")); },
                    [&](qf::error_code ec) { written = !ec; });
  f.io.restart();
  while (!written && f.io.run_one_for(std::chrono::seconds(5))) {
  }
  auto moved = f.wait<std::uint64_t>([&](auto done) { f.catalog->move_agents({"host-1"}, "db", f.alice, done); });
  REQUIRE(moved);
  f.read([&](qf::StoreTransaction& tx) {
    const auto a = tx.agent("host-1");
    CHECK(a->group_id() == "db");
    CHECK(a->group_assignment() == v1::GROUP_ASSIGNMENT_MANUAL);
  });
  auto unknown = f.wait<std::uint64_t>([&](auto done) { f.catalog->move_agents({"host-9"}, "db", f.alice, done); });
  CHECK(unknown.ec == qf::errc::not_found);
  CHECK(unknown.error.field == "agent_ids[0]");
}

TEST_CASE("group resolution: manual, configured, then rules by priority", "[catalog]") {
  std::vector<v1::Group> groups(4);
  groups[0].set_id("net");
  groups[0].set_name("net");
  groups[0].mutable_membership()->add_cidrs("10.1.0.0/16");
  groups[0].mutable_membership()->add_cidrs("fd00::/8");
  groups[1].set_id("web");
  groups[1].set_name("web");
  groups[1].mutable_membership()->add_hostname_globs("web-*");
  groups[1].mutable_membership()->set_priority(10);
  groups[2].set_id("gpu");
  groups[2].set_name("gpu");
  (*groups[2].mutable_membership()->add_label_selectors()->mutable_match_labels())["accel"] = "gpu";
  groups[3].set_id("ops");
  groups[3].set_name("operations");

  CHECK(qf::resolve_group(agent("db-1", {"10.1.2.3"}), "", groups) == "net");
  CHECK(qf::resolve_group(agent("db-1", {"10.2.2.3"}), "", groups).empty());
  CHECK(qf::resolve_group(agent("db-1", {"fd12::1"}), "", groups) == "net");
  // Both rules match: the higher priority wins.
  CHECK(qf::resolve_group(agent("WEB-7", {"10.1.2.3"}), "", groups) == "web");
  auto labelled = agent("x");
  (*labelled.mutable_labels())["accel"] = "gpu";
  CHECK(qf::resolve_group(labelled, "", groups) == "gpu");
  // The agent's own configuration (by name or id) beats rules; a manual move beats both.
  CHECK(qf::resolve_group(agent("web-1"), "operations", groups) == "ops");
  auto pinned = agent("web-1");
  pinned.set_group_id("gpu");
  pinned.set_group_assignment(v1::GROUP_ASSIGNMENT_MANUAL);
  CHECK(qf::resolve_group(pinned, "operations", groups) == "gpu");
}

TEST_CASE("an agent holds its group's tasks and the global ones, changes are per agent", "[catalog]") {
  std::vector<v1::Task> tasks(3);
  tasks[0].set_id("a");
  tasks[0].add_group_ids("web");
  tasks[0].set_revision(1);
  tasks[1].set_id("b");
  tasks[1].set_all_agents(true);
  tasks[1].set_revision(4);
  tasks[2].set_id("c");
  tasks[2].add_group_ids("db");
  tasks[2].set_revision(1);
  auto web = agent("w");
  web.set_group_id("web");
  const auto held = qf::tasks_for_agent(web, tasks);
  REQUIRE(held.size() == 2);
  CHECK(held[0].id() == "a");
  CHECK(held[1].id() == "b");
  CHECK(qf::tasks_for_agent(agent("lonely"), tasks).size() == 1);

  const auto change = qf::config_change({{"a", 1}, {"b", 3}, {"z", 1}}, held);
  REQUIRE(change.upserts.size() == 1);
  CHECK(change.upserts[0].id() == "b");
  CHECK(change.removals == std::vector<std::string>{"z"});
  CHECK(qf::config_change({{"a", 1}, {"b", 4}}, held).empty());
}

TEST_CASE("a batch names every unknown task and changes nothing, else changes all in one version", "[catalog]") {
  Fixture f;
  for (const char* name : {"a", "b", "c"}) REQUIRE(f.create(shell(name)));
  const auto v = f.version();
  const auto batch = [&](std::vector<std::string> ids, v1::BatchTaskAction action) {
    return f.wait<qf::BatchTaskOutcome>([&](auto done) { f.catalog->batch_tasks(ids, action, f.alice, done); });
  };
  auto refused = batch({"a", "ghost", "b", "ghost-2"}, v1::BATCH_TASK_ACTION_DISABLE);
  CHECK(refused.ec == qf::errc::not_found);
  CHECK(refused.error.field == "task_ids");
  CHECK(refused.error.reason == "task_ids[1]: no task with id \"ghost\"; task_ids[3]: no task with id \"ghost-2\"");
  CHECK(f.version() == v);
  f.read([](qf::StoreTransaction& tx) {
    CHECK(tx.task("a")->enabled());
    CHECK(tx.task("b")->enabled());
  });
  CHECK(batch({"a"}, v1::BATCH_TASK_ACTION_TRIGGER).ec == qf::errc::invalid_argument);

  auto off = batch({"a", "b"}, v1::BATCH_TASK_ACTION_DISABLE);
  REQUIRE(off);
  REQUIRE(off.value.tasks.size() == 2);
  CHECK_FALSE(off.value.tasks[0].enabled());
  CHECK(off.value.tasks[1].revision() == 2);
  CHECK(f.version() == v + 1);  // one version for the whole batch
  CHECK(off.value.config_version == v + 1);
  auto again = batch({"a", "b"}, v1::BATCH_TASK_ACTION_DISABLE);  // nothing to change
  REQUIRE(again);
  CHECK(f.version() == v + 1);

  auto gone = batch({"b", "c"}, v1::BATCH_TASK_ACTION_DELETE);
  REQUIRE(gone);
  CHECK(gone.value.deleted == std::vector<std::string>{"b", "c"});
  f.read([](qf::StoreTransaction& tx) {
    CHECK(tx.task("a"));
    CHECK_FALSE(tx.task("b"));
    CHECK_FALSE(tx.task("c"));
    v1::ListAuditRequest request;
    request.set_action("task.batch");
    request.set_page_size(10);
    const auto audit = tx.list_audit(request);
    REQUIRE(audit.items.size() == 3);  // the refused one is the API's to record
    CHECK(audit.items[0].detail() == "delete 2 task(s); changed: b,c");
  });
}

TEST_CASE("an agent that is gone can be deleted, an online one cannot", "[catalog]") {
  Fixture f;
  auto online = agent("web-1", {"10.0.0.1"});
  online.set_state(v1::AGENT_STATE_ONLINE);
  auto gone = agent("web-2", {"10.0.0.2"});
  gone.set_state(v1::AGENT_STATE_OFFLINE);
  (*gone.mutable_labels())["zone"] = "a";
  bool stored = false;
  f.store->transact(
      [&](qf::StoreTransaction& tx, qf::error_code&) {
        tx.put_agent(online);
        tx.put_agent(gone);
      },
      [&](qf::error_code ec) { stored = !ec; });
  f.io.restart();
  while (!stored && f.io.run_one_for(std::chrono::seconds(5))) {
  }
  REQUIRE(stored);
  const auto remove = [&](const std::string& id) {
    return f.wait<std::uint64_t>([&](auto done) { f.catalog->delete_agent(id, f.alice, done); });
  };
  auto refused = remove("web-1");
  CHECK(refused.ec == qf::errc::conflict);
  CHECK(refused.error.reason.find("ONLINE") != std::string::npos);
  CHECK(remove("nobody").ec == qf::errc::not_found);
  REQUIRE(remove("web-2"));
  f.read([](qf::StoreTransaction& tx) {
    CHECK(tx.agent("web-1"));
    CHECK_FALSE(tx.agent("web-2"));
    v1::ListAgentsRequest request;
    request.set_keyword("10.0.0.2");  // its IPs went with it
    CHECK(tx.list_agents(request).total == 0);
    v1::ListAuditRequest audit;
    audit.set_action("agent.delete");
    CHECK(tx.list_audit(audit).items.size() == 1);
  });
}
