// SPDX-License-Identifier: Apache-2.0
// Scheduler: coordinator fires recorded PENDING before they are sent, routing, failover,
// shards, manual triggers and misfires after a restart. Agents and transport are fakes.
#include <set>

#include <catch2/catch.hpp>

#include <utility>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <quartzflow/execution_status.hpp>
#include <quartzflow/scheduler.hpp>

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;
using namespace std::chrono_literals;

namespace {

struct FakeAgents : qf::AgentDirectory {
  std::vector<qf::AgentLoad> online;
  std::vector<qf::AgentLoad> eligible_agents(const v1::Task&) override { return online; }
};

struct FakeSink : qf::RunSink {
  explicit FakeSink(boost::asio::io_context& io, qf::Store& s) : io_(io), store(s) {}
  std::set<std::string> refusing;
  std::vector<std::pair<std::string, v1::RunRequest>> sent;
  std::vector<v1::ExecutionStatus> status_when_sent;
  std::vector<std::int64_t> sent_unix_ms;
  void send_run(const std::string& agent, const v1::RunRequest& run, std::function<void(bool)> done) override {
    sent.emplace_back(agent, run);
    sent_unix_ms.push_back(std::chrono::duration_cast<std::chrono::milliseconds>(
                               std::chrono::system_clock::now().time_since_epoch()).count());
    // The record must already be durable when a run leaves: read it back right now.
    std::optional<v1::Execution> stored;
    bool read = false;
    store.read([&](qf::StoreTransaction& tx, qf::error_code&) { stored = tx.execution(run.execution_id()); },
               [&](qf::error_code) { read = true; });
    while (!read) io_.run_one_for(100ms);
    status_when_sent.push_back(stored ? stored->status() : v1::EXECUTION_STATUS_UNSPECIFIED);
    const bool accept = !refusing.count(agent);
    boost::asio::post(io_, [done, accept] { done(accept); });
  }
  boost::asio::io_context& io_;
  qf::Store& store;
};

struct Fixture {
  boost::asio::io_context io;
  std::unique_ptr<qf::Store> store;
  FakeAgents agents;
  std::unique_ptr<FakeSink> sink;
  std::unique_ptr<qf::Scheduler> scheduler;

  Fixture() {
    qf::error_code ec;
    store = qf::open_sqlite_store(io.get_executor(), {":memory:"}, ec);
    REQUIRE(store);
    sink = std::make_unique<FakeSink>(io, *store);
    agents.online = {{"agent-a", 0}, {"agent-b", 0}};
    scheduler = std::make_unique<qf::Scheduler>(io.get_executor(), *store, agents, *sink);
  }
  template <typename Pred>
  bool run_until(Pred done, std::chrono::milliseconds limit = 5s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      if (io.stopped()) io.restart();
      io.run_one_for(20ms);
    }
    return done();
  }
  void start() {
    bool ready = false;
    scheduler->start([&] { ready = true; });
    REQUIRE(run_until([&] { return ready; }));
  }
  std::optional<v1::Execution> record(const std::string& id) {
    std::optional<v1::Execution> out;
    bool done = false;
    store->read([&](qf::StoreTransaction& tx, qf::error_code&) { out = tx.execution(id); },
                [&](qf::error_code) { done = true; });
    run_until([&] { return done; });
    return out;
  }
  qf::Listing<v1::Execution> records(const std::string& task) {
    qf::Listing<v1::Execution> out;
    bool done = false;
    v1::ListExecutionsRequest request;
    request.set_task_id(task);
    request.set_page_size(500);
    store->read([&](qf::StoreTransaction& tx, qf::error_code&) { out = tx.list_executions(request); },
                [&](qf::error_code) { done = true; });
    run_until([&] { return done; });
    return out;
  }
};

v1::Task one_task(const std::string& id, const std::string& cron, v1::PlacementMode mode = v1::PLACEMENT_MODE_ONE) {
  v1::Task t;
  t.set_id(id);
  t.set_name(id);
  t.set_enabled(true);
  t.set_revision(1);
  t.mutable_shell()->set_script("true");
  t.mutable_placement()->set_mode(mode);
  t.mutable_placement()->set_routing(v1::ROUTING_STRATEGY_ROUND_ROBIN);
  if (cron.empty()) {
    t.mutable_schedule()->mutable_manual();
  } else {
    t.mutable_schedule()->set_cron(cron);
  }
  return t;
}

}  // namespace

TEST_CASE("one-placement fires are recorded PENDING before they are sent, round-robin", "[scheduler]") {
  Fixture f;
  f.scheduler->upsert_task(one_task("tick", "* * * * * *"));
  f.start();
  REQUIRE(f.run_until([&] { return f.sink->sent.size() >= 3; }));
  for (auto status : f.sink->status_when_sent) CHECK(status == v1::EXECUTION_STATUS_PENDING);
  CHECK(f.sink->sent[0].first != f.sink->sent[1].first);  // alternates over the two agents
  const auto& run = f.sink->sent[0].second;
  CHECK(run.execution_id() == "tick:" + std::to_string(run.scheduled_unix_ms()));
  CHECK(run.scheduled_unix_ms() % 1000 == 0);
  CHECK(run.task_id() == "tick");
  CHECK(run.task_revision() == 1);
  CHECK_FALSE(run.has_task());  // the sink attaches the config only for agents without it
  // Recorded ahead, but never sent before the instant.
  for (std::size_t i = 0; i < f.sink->sent.size(); ++i)
    CHECK(f.sink->sent_unix_ms[i] >= f.sink->sent[i].second.scheduled_unix_ms());
  const auto stored = f.record(run.execution_id());
  REQUIRE(stored);
  CHECK(stored->agent_id() == f.sink->sent[0].first);
  CHECK(stored->trigger() == v1::TRIGGER_TYPE_SCHEDULED);
  CHECK(f.scheduler->stats().dispatched >= 3);
}

TEST_CASE("a refusing agent makes the run fail over, when all refuse it is a FAILURE", "[scheduler]") {
  Fixture f;
  f.sink->refusing = {"agent-a"};
  f.scheduler->upsert_task(one_task("job", ""));
  f.start();
  std::vector<std::string> ids;
  f.scheduler->trigger("job", {}, "alice", [&](qf::error_code, std::vector<std::string> out) { ids = out; });
  REQUIRE(f.run_until([&] { return f.scheduler->stats().dispatched == 1; }));
  REQUIRE(ids.size() == 1);
  CHECK(f.record(ids[0])->agent_id() == "agent-b");
  f.sink->refusing = {"agent-a", "agent-b"};
  f.scheduler->trigger("job", {}, "alice", [&](qf::error_code, std::vector<std::string> out) { ids = out; });
  REQUIRE(f.run_until([&] { return f.scheduler->stats().not_dispatched == 1; }));
  REQUIRE(f.run_until([&] { return f.record(ids[0])->status() == v1::EXECUTION_STATUS_FAILURE; }));
  CHECK(f.record(ids[0])->failure_reason() == "not dispatched");
}

TEST_CASE("with no online agent the fire is SKIPPED with its reason", "[scheduler]") {
  Fixture f;
  f.agents.online.clear();
  f.scheduler->upsert_task(one_task("lonely", "* * * * * *"));
  f.start();
  REQUIRE(f.run_until([&] { return f.scheduler->stats().not_dispatched >= 1; }));
  CHECK(f.sink->sent.empty());
  const auto records = f.records("lonely");
  REQUIRE(records.total >= 1);
  CHECK(records.items[0].status() == v1::EXECUTION_STATUS_SKIPPED);
  CHECK(records.items[0].skip_reason() == v1::SKIP_REASON_NO_AGENT);
}

TEST_CASE("a sharded run is split into one run per shard", "[scheduler]") {
  Fixture f;
  auto task = one_task("split", "", v1::PLACEMENT_MODE_SHARDED);
  task.mutable_placement()->set_shard_count(3);
  f.scheduler->upsert_task(task);
  f.start();
  std::vector<std::string> ids;
  f.scheduler->trigger("split", {{"day", "2026-11-25"}}, "alice", [&](qf::error_code, std::vector<std::string> out) { ids = out; });
  REQUIRE(f.run_until([&] { return f.sink->sent.size() == 3; }));
  REQUIRE(ids.size() == 3);
  for (std::uint32_t i = 0; i < 3; ++i) {
    const auto& run = f.sink->sent[i].second;
    CHECK(run.shard_index() == i);
    CHECK(run.shard_total() == 3);
    CHECK(run.execution_id() == ids[i]);
    CHECK(run.execution_id().size() > 3);
    CHECK(run.execution_id().substr(run.execution_id().size() - 3) == ":s" + std::to_string(i));
    CHECK(run.params().at("day") == "2026-11-25");
    CHECK(run.trigger() == v1::TRIGGER_TYPE_MANUAL);
  }
  CHECK(f.sink->sent[0].first == "agent-a");
  CHECK(f.sink->sent[1].first == "agent-b");
  CHECK(f.sink->sent[2].first == "agent-a");
}

TEST_CASE("a manual trigger of an all-placement task reaches every agent", "[scheduler]") {
  Fixture f;
  f.scheduler->upsert_task(one_task("everywhere", "", v1::PLACEMENT_MODE_ALL));
  f.start();
  std::vector<std::string> ids;
  f.scheduler->trigger("everywhere", {}, "alice", [&](qf::error_code, std::vector<std::string> out) { ids = out; });
  REQUIRE(f.run_until([&] { return f.sink->sent.size() == 2; }));
  REQUIRE(ids.size() == 2);
  CHECK(ids[0].find(":agent-a") != std::string::npos);
  CHECK(ids[1].find(":agent-b") != std::string::npos);
  qf::error_code ec;
  f.scheduler->trigger("nope", {}, "alice", [&](qf::error_code e, std::vector<std::string>) { ec = e; });
  REQUIRE(f.run_until([&] { return bool(ec); }));
  CHECK(ec == qf::errc::not_found);
}

TEST_CASE("after a coordinator restart the misfire policy decides what is owed", "[scheduler]") {
  Fixture f;
  auto task = one_task("ten", "0 */10 * * * *");
  task.set_misfire_policy(v1::MISFIRE_POLICY_FIRE_ONCE);
  const auto hour_ago = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()) - 1h;
  bool written = false;
  f.store->transact([&](qf::StoreTransaction& tx, qf::error_code&) { tx.put_fire_state("ten", {hour_ago, std::nullopt}); },
                    [&](qf::error_code ec) { written = !ec; });
  REQUIRE(f.run_until([&] { return written; }));
  f.scheduler->upsert_task(task);
  f.start();
  REQUIRE(f.run_until([&] { return f.sink->sent.size() == 1; }));
  CHECK(f.sink->sent[0].second.trigger() == v1::TRIGGER_TYPE_MISFIRE_CATCHUP);
  const auto records = f.records("ten");
  std::size_t missed = 0;
  for (const auto& r : records.items) missed += r.status() == v1::EXECUTION_STATUS_MISSED;
  CHECK(missed + 1 >= 5);
  CHECK(missed + 1 <= 6);
  // The next fire is planned after now, and the fire state moved on.
  REQUIRE(f.scheduler->next_fire("ten"));
  CHECK(*f.scheduler->next_fire("ten") > hour_ago + 1h - 1s);
}

TEST_CASE("removing or disabling a task stops its fires", "[scheduler]") {
  Fixture f;
  f.scheduler->upsert_task(one_task("gone", "* * * * * *"));
  auto off = one_task("off", "* * * * * *");
  off.set_enabled(false);
  f.scheduler->upsert_task(off);
  f.start();
  CHECK(f.scheduler->next_fire("gone"));
  CHECK_FALSE(f.scheduler->next_fire("off"));
  f.scheduler->remove_task("gone");
  CHECK_FALSE(f.scheduler->next_fire("gone"));
  f.run_until([] { return false; }, 1500ms);
  CHECK(f.sink->sent.empty());
}

TEST_CASE("a fire recorded ahead of a stop is owed: the next start fires it, same id", "[scheduler]") {
  Fixture f;
  auto task = one_task("ahead", "* * * * * *");
  task.set_misfire_policy(v1::MISFIRE_POLICY_FIRE_ALL);
  f.scheduler->upsert_task(task);
  f.start();
  REQUIRE(f.run_until([&] { return !f.sink->sent.empty(); }));
  const auto first = f.sink->sent[0].second.scheduled_unix_ms();
  const std::string next_id = "ahead:" + std::to_string(first + 1000);
  // The next fire is already durable before its instant.
  REQUIRE(f.run_until([&] {
    auto next = f.record(next_id);
    return next && next->status() == v1::EXECUTION_STATUS_PENDING;
  }));
  CHECK(f.sink->sent.size() == 1);
  f.scheduler->stop();
  f.store->flush();
  CHECK(f.record(next_id)->status() == v1::EXECUTION_STATUS_PENDING);  // owed, not SKIPPED
  f.run_until([] { return false; }, 1200ms);
  CHECK(f.sink->sent.size() == 1);  // nothing is sent after the stop
  // A new scheduler on the same store (a restart after the instant) is given the PENDING
  // runs nobody claimed, as the Coordinator does after its grace: it fires the owed one.
  f.scheduler = std::make_unique<qf::Scheduler>(f.io.get_executor(), *f.store, f.agents, *f.sink);
  f.scheduler->upsert_task(task);
  bool ready = false;
  f.scheduler->start({*f.record(next_id)}, [&] { ready = true; });
  REQUIRE(f.run_until([&] { return ready; }));
  REQUIRE(f.run_until([&] {
    for (const auto& [agent, run] : f.sink->sent)
      if (run.execution_id() == next_id) return true;
    return false;
  }));
  std::size_t sent_twice = 0;
  std::set<std::string> ids;
  for (const auto& [agent, run] : f.sink->sent) sent_twice += !ids.insert(run.execution_id()).second;
  CHECK(sent_twice == 0);
  CHECK(f.record(next_id)->status() == v1::EXECUTION_STATUS_PENDING);  // sent, waiting for its agent
}

namespace {

std::int64_t qf_now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// A run a crashed coordinator recorded PENDING (fire state at its instant) and no agent claimed.
v1::Execution unclaimed_fire(Fixture& f, const std::string& task, std::chrono::system_clock::time_point at,
                             const std::string& agent) {
  const auto instant = std::chrono::floor<std::chrono::seconds>(at);
  v1::Execution r;
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(instant.time_since_epoch()).count();
  r.set_execution_id(task + ":" + std::to_string(ms));
  r.set_task_id(task);
  r.set_status(v1::EXECUTION_STATUS_PENDING);
  r.set_trigger(v1::TRIGGER_TYPE_SCHEDULED);
  r.set_scheduled_unix_ms(ms);
  r.set_attempt(1);
  r.set_agent_id(agent);
  bool written = false;
  f.store->transact(
      [&](qf::StoreTransaction& tx, qf::error_code&) {
        tx.upsert_execution(r);
        tx.put_fire_state(task, {instant, std::nullopt});
      },
      [&](qf::error_code ec) { written = !ec; });
  REQUIRE(f.run_until([&] { return written; }));
  return r;
}

}  // namespace

TEST_CASE("a fire left PENDING by a crashed coordinator runs again per the misfire policy", "[scheduler]") {
  Fixture f;
  auto task = one_task("yearly", "0 0 0 1 1 *");  // nothing else is owed since
  const auto owed = unclaimed_fire(f, "yearly", std::chrono::system_clock::now() - 30s, "agent-a");
  f.scheduler->upsert_task(task);
  bool ready = false;
  f.scheduler->start({owed}, [&] { ready = true; });
  REQUIRE(f.run_until([&] { return ready && f.sink->sent.size() == 1; }));
  CHECK(f.sink->sent[0].second.execution_id() == owed.execution_id());
  CHECK(f.sink->sent[0].second.trigger() == v1::TRIGGER_TYPE_MISFIRE_CATCHUP);
  REQUIRE(f.run_until([&] { return f.scheduler->stats().dispatched == 1; }));
  const auto record = f.record(owed.execution_id());
  CHECK(record->status() == v1::EXECUTION_STATUS_PENDING);
  CHECK(record->failure_reason().empty());
}

TEST_CASE("an unclaimed fire older than the newest owed one is MISSED under fire_once, not a failure", "[scheduler]") {
  Fixture f;
  auto task = one_task("tens", "*/10 * * * * *");
  const auto owed = unclaimed_fire(f, "tens", std::chrono::system_clock::now() - 35s, "agent-a");
  f.scheduler->upsert_task(task);
  bool ready = false;
  f.scheduler->start({owed}, [&] { ready = true; });
  REQUIRE(f.run_until([&] { return ready && f.sink->sent.size() == 1; }));
  CHECK(f.sink->sent[0].second.execution_id() != owed.execution_id());  // the newest owed fire runs
  REQUIRE(f.run_until([&] { return qf::is_final(f.record(owed.execution_id())->status()); }));
  const auto record = f.record(owed.execution_id());
  CHECK(record->status() == v1::EXECUTION_STATUS_MISSED);
  CHECK(record->skip_reason() == v1::SKIP_REASON_MISFIRE);
}

TEST_CASE("an at_most_once fire that may have reached an agent now gone is agent lost, never re-sent", "[scheduler]") {
  Fixture f;
  auto task = one_task("once", "0 0 0 1 1 *");
  task.set_delivery_guarantee(v1::DELIVERY_GUARANTEE_AT_MOST_ONCE);
  const auto gone = unclaimed_fire(f, "once", std::chrono::system_clock::now() - 30s, "agent-gone");
  f.scheduler->upsert_task(task);
  bool ready = false;
  f.scheduler->start({gone}, [&] { ready = true; });
  REQUIRE(f.run_until([&] { return ready && qf::is_final(f.record(gone.execution_id())->status()); }));
  CHECK(f.record(gone.execution_id())->status() == v1::EXECUTION_STATUS_FAILURE);
  CHECK(f.record(gone.execution_id())->failure_reason() == "agent lost");
  f.run_until([] { return false; }, 300ms);
  CHECK(f.sink->sent.empty());
}

TEST_CASE("an at_most_once fire whose agent is back and does not hold it never started: it runs", "[scheduler]") {
  Fixture f;
  auto task = one_task("once", "0 0 0 1 1 *");
  task.set_delivery_guarantee(v1::DELIVERY_GUARANTEE_AT_MOST_ONCE);
  const auto owed = unclaimed_fire(f, "once", std::chrono::system_clock::now() - 30s, "agent-b");
  f.scheduler->upsert_task(task);
  bool ready = false;
  f.scheduler->start({owed}, [&] { ready = true; });
  REQUIRE(f.run_until([&] { return ready && f.sink->sent.size() == 1; }));
  CHECK(f.sink->sent[0].second.execution_id() == owed.execution_id());
}

TEST_CASE("a shard refused by its agent fails over to another agent unless no_failover", "[scheduler]") {
  Fixture f;
  f.sink->refusing = {"agent-a"};  // e.g. killed: its session is gone, the send fails
  auto task = one_task("split", "", v1::PLACEMENT_MODE_SHARDED);
  task.mutable_placement()->set_shard_count(2);
  f.scheduler->upsert_task(task);
  auto pinned = task;
  pinned.set_id("pinned");
  pinned.mutable_placement()->set_no_failover(true);
  f.scheduler->upsert_task(pinned);
  f.start();
  std::vector<std::string> ids;
  f.scheduler->trigger("split", {}, "alice", [&](qf::error_code, std::vector<std::string> out) { ids = out; });
  REQUIRE(f.run_until([&] { return f.scheduler->stats().dispatched == 2; }));
  REQUIRE(ids.size() == 2);
  for (const auto& id : ids) CHECK(f.record(id)->agent_id() == "agent-b");
  std::vector<std::string> pinned_ids;
  f.scheduler->trigger("pinned", {}, "alice", [&](qf::error_code, std::vector<std::string> out) { pinned_ids = out; });
  REQUIRE(f.run_until([&] { return pinned_ids.size() == 2 && f.scheduler->stats().not_dispatched == 1; }));
  REQUIRE(f.run_until([&] { return f.record(pinned_ids[0])->status() == v1::EXECUTION_STATUS_FAILURE; }));
  CHECK(f.record(pinned_ids[0])->error_message() == "no agent accepted the run (tried: agent-a)");
  CHECK(f.scheduler->stats().dispatched == 3);  // shard 1 of the pinned task, on agent-b
}

TEST_CASE("the store is handed at most max_unrecorded_runs runs at once, and no fire is skipped", "[scheduler]") {
  Fixture f;
  qf::SchedulerOptions options;
  options.max_unrecorded_runs = 8;
  f.scheduler = std::make_unique<qf::Scheduler>(f.io.get_executor(), *f.store, f.agents, *f.sink, options);
  for (int i = 0; i < 100; ++i) f.scheduler->upsert_task(one_task("t" + std::to_string(i), "* * * * * *"));
  f.start();
  f.run_until([] { return false; }, 2500ms);
  f.scheduler->stop();
  f.store->flush();
  const auto& stats = f.scheduler->stats();
  CHECK(stats.unrecorded_peak <= 8);
  CHECK(stats.store_waits > 0);
  CHECK(f.scheduler->stats().not_dispatched == 0);  // none SKIPPED or MISSED either
  // Every task's fires are consecutive seconds: none skipped, none twice.
  for (int i = 0; i < 100; ++i) {
    const auto records = f.records("t" + std::to_string(i));
    std::vector<std::int64_t> instants;
    for (const auto& r : records.items) instants.push_back(r.scheduled_unix_ms());
    std::sort(instants.begin(), instants.end());
    REQUIRE(instants.size() >= 2);
    for (std::size_t k = 1; k < instants.size(); ++k) CHECK(instants[k] - instants[k - 1] == 1000);
    for (const auto& r : records.items)
      CHECK((r.status() == v1::EXECUTION_STATUS_PENDING && r.trigger() == v1::TRIGGER_TYPE_SCHEDULED));
  }
  std::set<std::string> sent;
  for (const auto& [agent, run] : f.sink->sent) CHECK(sent.insert(run.execution_id()).second);
}

TEST_CASE("a turn's fires are recorded in store transactions of at most max_records_per_transaction records",
          "[scheduler]") {
  Fixture f;
  qf::SchedulerOptions options;
  options.max_records_per_transaction = 10;  // a fire records a run and its fire state: 5 fires each
  f.scheduler = std::make_unique<qf::Scheduler>(f.io.get_executor(), *f.store, f.agents, *f.sink, options);
  for (int i = 0; i < 100; ++i) f.scheduler->upsert_task(one_task("t" + std::to_string(i), "* * * * * *"));
  f.start();
  f.run_until([] { return false; }, 1500ms);
  f.scheduler->stop();
  f.store->flush();
  std::size_t recorded = 0;
  for (int i = 0; i < 100; ++i) {
    const auto records = f.records("t" + std::to_string(i));
    REQUIRE_FALSE(records.items.empty());
    recorded += records.items.size();
  }
  // One transaction per turn would be a handful; at most 5 runs each, at least recorded / 5.
  CHECK(f.store->metrics().transactions_committed >= recorded / 5);
  CHECK(f.sink->sent.size() >= 100);  // the first second's fires went out
}

TEST_CASE("a trigger on chosen agents runs once on each of them, whatever the placement", "[scheduler]") {
  Fixture f;
  f.agents.online = {{"agent-a", 0}, {"agent-b", 0}, {"agent-c", 0}};
  f.scheduler->upsert_task(one_task("job", ""));
  auto split = one_task("split", "", v1::PLACEMENT_MODE_SHARDED);
  split.mutable_placement()->set_shard_count(3);
  f.scheduler->upsert_task(split);
  f.start();
  std::vector<std::string> ids;
  f.scheduler->trigger("job", {}, {"agent-c", "agent-a"}, "alice",
                       [&](qf::error_code, std::vector<std::string> out) { ids = out; });
  REQUIRE(f.run_until([&] { return f.sink->sent.size() == 2; }));
  REQUIRE(ids.size() == 2);
  CHECK(ids[0].ends_with(":agent-c"));
  CHECK(ids[1].ends_with(":agent-a"));
  CHECK(f.record(ids[0])->agent_id() == "agent-c");
  CHECK(f.record(ids[1])->trigger() == v1::TRIGGER_TYPE_MANUAL);
  std::vector<std::string> shards;
  f.scheduler->trigger("split", {}, {"agent-b"}, "alice",
                       [&](qf::error_code, std::vector<std::string> out) { shards = out; });
  REQUIRE(f.run_until([&] { return f.sink->sent.size() == 5; }));
  REQUIRE(shards.size() == 3);
  for (const auto& id : shards) CHECK(f.record(id)->agent_id() == "agent-b");
}

TEST_CASE("a retry by an operator runs on the given agent as a RETRY linked to the run it retries", "[scheduler]") {
  Fixture f;
  f.scheduler->upsert_task(one_task("job", ""));
  f.start();
  v1::Execution failed;
  failed.set_execution_id("job:1000");
  failed.set_task_id("job");
  failed.set_agent_id("agent-b");
  failed.set_status(v1::EXECUTION_STATUS_FAILURE);
  failed.set_attempt(1);
  failed.set_shard_index(1);
  failed.set_shard_total(2);
  (*failed.mutable_params())["day"] = "mon";
  std::string id;
  f.scheduler->retry_on(failed, "agent-b", "alice", [&](qf::error_code ec, std::string out) {
    REQUIRE_FALSE(ec);
    id = out;
  });
  REQUIRE(f.run_until([&] { return f.sink->sent.size() == 1; }));
  CHECK(f.sink->sent[0].first == "agent-b");
  const auto& request = f.sink->sent[0].second;
  CHECK(request.trigger() == v1::TRIGGER_TYPE_RETRY);
  CHECK(request.attempt() == 2);
  CHECK(request.root_execution_id() == "job:1000");
  CHECK(request.params().at("day") == "mon");
  CHECK(request.shard_index() == 1);
  const auto stored = f.record(id);
  REQUIRE(stored);
  CHECK(stored->retry_of_execution_id() == "job:1000");
  CHECK(stored->triggered_by() == "alice");
  CHECK(id.starts_with("job:"));
  CHECK(id.ends_with(":r2"));
  // A second retry of the same run is another run.
  std::string second;
  f.scheduler->retry_on(failed, "agent-b", "alice", [&](qf::error_code, std::string out) { second = out; });
  REQUIRE(f.run_until([&] { return !second.empty(); }));
  CHECK(second != id);
  qf::error_code gone_ec;
  bool answered = false;
  failed.set_task_id("deleted");
  f.scheduler->retry_on(failed, "agent-b", "alice", [&](qf::error_code ec, std::string) {
    gone_ec = ec;
    answered = true;
  });
  REQUIRE(f.run_until([&] { return answered; }));
  CHECK(gone_ec == qf::errc::not_found);
}

TEST_CASE("the shards of an unclaimed fire share one decision: all run", "[scheduler]") {
  Fixture f;
  auto task = one_task("split", "0 0 0 1 1 *", v1::PLACEMENT_MODE_SHARDED);
  task.mutable_placement()->set_shard_count(3);
  std::vector<v1::Execution> owed;
  for (std::uint32_t k = 0; k < 3; ++k) {
    auto r = unclaimed_fire(f, "split", std::chrono::system_clock::now() - 30s, "agent-a");
    r.set_execution_id(r.execution_id() + ":s" + std::to_string(k));
    r.set_shard_index(k);
    r.set_shard_total(3);
    owed.push_back(r);
  }
  f.scheduler->upsert_task(task);
  bool ready = false;
  f.scheduler->start(owed, [&] { ready = true; });
  REQUIRE(f.run_until([&] { return ready && f.sink->sent.size() == 3; }));
  std::set<std::uint32_t> shards;
  for (const auto& [agent, run] : f.sink->sent) shards.insert(run.shard_index());
  CHECK(shards == std::set<std::uint32_t>{0, 1, 2});
}

TEST_CASE("a run pinned to its agent by an operator runs there after a restart, or not at all", "[scheduler]") {
  Fixture f;
  f.scheduler->upsert_task(one_task("job", ""));
  auto on_b = unclaimed_fire(f, "job", std::chrono::system_clock::now() - 2s, "agent-b");
  on_b.set_trigger(v1::TRIGGER_TYPE_MANUAL);
  on_b.set_execution_id("job:1:agent-b");
  auto on_gone = on_b;
  on_gone.set_agent_id("agent-gone");
  on_gone.set_execution_id("job:1:agent-gone");
  bool ready = false;
  f.scheduler->start({on_b, on_gone}, [&] { ready = true; });
  REQUIRE(f.run_until([&] { return ready && f.sink->sent.size() == 1; }));
  CHECK(f.sink->sent[0].first == "agent-b");
  CHECK(f.sink->sent[0].second.execution_id() == "job:1:agent-b");
  REQUIRE(f.run_until([&] { auto r = f.record("job:1:agent-gone"); return r && qf::is_final(r->status()); }));
  CHECK(f.record("job:1:agent-gone")->status() == v1::EXECUTION_STATUS_SKIPPED);
  CHECK(f.record("job:1:agent-gone")->skip_reason() == v1::SKIP_REASON_NO_AGENT);
  f.run_until([] { return false; }, 300ms);
  CHECK(f.sink->sent.size() == 1);
}

TEST_CASE("a stop closes the fires recorded ahead for a task removed since, keeps the others owed", "[scheduler]") {
  Fixture f;
  f.scheduler->upsert_task(one_task("kept", "* * * * * *"));
  f.scheduler->upsert_task(one_task("gone", "* * * * * *"));
  f.start();
  std::string kept_id, gone_id;
  REQUIRE(f.run_until([&] {
    for (const auto& r : f.records("kept").items)
      if (r.status() == v1::EXECUTION_STATUS_PENDING && r.scheduled_unix_ms() > qf_now_ms()) kept_id = r.execution_id();
    for (const auto& r : f.records("gone").items)
      if (r.status() == v1::EXECUTION_STATUS_PENDING && r.scheduled_unix_ms() > qf_now_ms()) gone_id = r.execution_id();
    return !kept_id.empty() && !gone_id.empty();
  }));
  f.scheduler->remove_task("gone");
  f.scheduler->stop();
  f.store->flush();
  CHECK(f.record(kept_id)->status() == v1::EXECUTION_STATUS_PENDING);
  CHECK(f.record(gone_id)->status() == v1::EXECUTION_STATUS_SKIPPED);
  CHECK(f.record(gone_id)->skip_reason() == v1::SKIP_REASON_TASK_DISABLED);
}
