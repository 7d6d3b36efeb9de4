// SPDX-License-Identifier: Apache-2.0
// Fencing between coordinators: a paused leader (its fake clock past the local lease
// deadline) sends nothing; a fire transaction under an old epoch is refused and records
// nothing; an agent refuses run requests of a lower leader epoch than one it saw, also
// after a restart.
#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <catch2/catch.hpp>

#include "coordinator/leadership.hpp"
#include "dispatcher/protocol.hpp"
#include "quiet_log.hpp"
#include "temp_dir.hpp"

#include <quartzflow/agent_dispatcher.hpp>
#include <quartzflow/local_store.hpp>
#include <quartzflow/scheduler.hpp>
#include <quartzflow/store.hpp>
#include <quartzflow/task_engine.hpp>
#include <quartzflow/transport.hpp>

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;
using namespace std::chrono_literals;

namespace {

struct OneAgent : qf::AgentDirectory {
  std::vector<qf::AgentLoad> eligible_agents(const v1::Task&) override { return {{"agent-a", 0}}; }
};

struct RecordingSink : qf::RunSink {
  explicit RecordingSink(boost::asio::io_context& io) : io_(io) {}
  std::vector<v1::RunRequest> sent;
  void send_run(const std::string&, const v1::RunRequest& run, std::function<void(bool)> done) override {
    sent.push_back(run);
    boost::asio::post(io_, [done] { done(true); });
  }
  boost::asio::io_context& io_;
};

template <typename Pred>
bool run_until(boost::asio::io_context& io, Pred done, std::chrono::milliseconds limit = 5s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    if (io.stopped()) io.restart();
    io.run_one_for(20ms);
  }
  return done();
}

v1::Task manual_task(const std::string& id) {
  v1::Task t;
  t.set_id(id);
  t.set_name(id);
  t.set_enabled(true);
  t.set_revision(1);
  t.mutable_shell()->set_script("true");
  t.mutable_placement()->set_mode(v1::PLACEMENT_MODE_ONE);
  t.mutable_schedule()->mutable_manual();
  return t;
}

/// A coordinator store whose lease `holder` took (ttl 60 s), a scheduler over it with
/// `fence`, one agent that accepts everything.
struct FencedScheduler {
  boost::asio::io_context io;
  std::unique_ptr<qf::Store> store;
  OneAgent agents;
  RecordingSink sink{io};
  std::unique_ptr<qf::Scheduler> scheduler;

  FencedScheduler() {
    qf::error_code ec;
    store = qf::open_sqlite_store(io.get_executor(), {":memory:"}, ec);
    REQUIRE(store);
    scheduler = std::make_unique<qf::Scheduler>(io.get_executor(), *store, agents, sink);
    scheduler->upsert_task(manual_task("job"));
  }
  void take_lease(const std::string& holder) {
    bool done = false;
    store->transact(
        [holder](qf::StoreTransaction& tx, qf::error_code&) {
          tx.acquire_or_renew_leader(holder, {holder + ":7443", ""}, 60s);
        },
        [&](qf::error_code ec) {
          REQUIRE_FALSE(ec);
          done = true;
        });
    REQUIRE(run_until(io, [&] { return done; }));
  }
  void start(qf::SchedulerFence fence) {
    scheduler->set_fence(std::move(fence));
    bool ready = false;
    scheduler->start([&] { ready = true; });
    REQUIRE(run_until(io, [&] { return ready; }));
  }
  /// Triggers the task; the error and the ids.
  std::pair<qf::error_code, std::vector<std::string>> trigger() {
    std::optional<std::pair<qf::error_code, std::vector<std::string>>> result;
    scheduler->trigger("job", {}, "test",
                       [&](qf::error_code ec, std::vector<std::string> ids) { result.emplace(ec, std::move(ids)); });
    REQUIRE(run_until(io, [&] { return result.has_value(); }));
    return *result;
  }
  std::size_t executions() {
    std::size_t n = 0;
    bool done = false;
    store->read([&](qf::StoreTransaction& tx, qf::error_code&) { n = tx.list_executions({}).total; },
                [&](qf::error_code) { done = true; });
    REQUIRE(run_until(io, [&] { return done; }));
    return n;
  }
  std::optional<v1::Execution> execution(const std::string& id) {
    std::optional<v1::Execution> out;
    bool done = false;
    store->read([&](qf::StoreTransaction& tx, qf::error_code&) { out = tx.execution(id); },
                [&](qf::error_code) { done = true; });
    REQUIRE(run_until(io, [&] { return done; }));
    return out;
  }
};

qf::LeaderLease lease_of(std::string holder, std::uint64_t epoch) {
  qf::LeaderLease l;
  l.holder_id = std::move(holder);
  l.epoch = epoch;
  l.now_unix_ms = 1'000;
  l.expires_at_unix_ms = 2'500;
  return l;
}

}  // namespace

TEST_CASE("a paused leader (its clock past the local lease deadline) sends nothing", "[fencing][scheduler]") {
  qf::testing::QuietLog quiet;
  FencedScheduler f;
  f.take_lease("a");
  qf::detail::LeadershipMachine leadership({"a", 1'500ms, {}, {}});
  std::int64_t fake_now = 0;
  REQUIRE(leadership.attempt_started(fake_now));
  REQUIRE(leadership.on_lease(lease_of("a", 1), 5).lead);
  f.start({1, [&] { return leadership.may_send(fake_now); }});

  fake_now = 1'000;  // within the lease: sent, carrying the epoch
  auto [ec, ids] = f.trigger();
  REQUIRE_FALSE(ec);
  REQUIRE(run_until(f.io, [&] { return f.sink.sent.size() == 1; }));
  CHECK(f.sink.sent[0].leader_epoch() == 1);

  fake_now = 11'000;  // SIGSTOP for 10 s, then SIGCONT: the lease may be another's now
  auto [late_ec, late_ids] = f.trigger();
  REQUIRE_FALSE(late_ec);  // the database still says epoch 1 (nobody took over): recorded
  REQUIRE(late_ids.size() == 1);
  f.io.restart();
  f.io.run_for(300ms);
  CHECK(f.sink.sent.size() == 1);  // but nothing left
  const auto stored = f.execution(late_ids[0]);
  REQUIRE(stored);
  CHECK(stored->status() == v1::EXECUTION_STATUS_PENDING);  // owed to the next leader
}

TEST_CASE("a fire transaction under an old epoch is refused and records nothing", "[fencing][scheduler]") {
  qf::testing::QuietLog quiet;
  FencedScheduler f;
  f.take_lease("a");
  f.start({1, [] { return true; }});
  // b took over (a's lease expired while a was paused).
  bool moved = false;
  f.store->transact(
      [](qf::StoreTransaction& tx, qf::error_code&) {
        tx.acquire_or_renew_leader("a", {}, 0ms);  // a's lease is over
        tx.acquire_or_renew_leader("b", {"b:7443", ""}, 60s);
      },
      [&](qf::error_code) { moved = true; });
  REQUIRE(run_until(f.io, [&] { return moved; }));

  auto [ec, ids] = f.trigger();
  CHECK(ec == qf::errc::fenced);
  CHECK(ids.empty());
  f.io.restart();
  f.io.run_for(200ms);
  CHECK(f.sink.sent.empty());
  CHECK(f.executions() == 0);
}

namespace {

/// Plays a coordinator over the in-process network: registers the agent, sends run
/// requests, keeps what the agent answers.
struct FakeLeader {
  explicit FakeLeader(qf::InprocNetwork& network) {
    network.listen("coordinator", [this](std::shared_ptr<qf::Connection> c) {
      writer = std::make_unique<qf::detail::EnvelopeWriter>(c);
      c->start({[this](std::string message) { on_message(message); }, [](std::string) {}});
    });
  }
  void on_message(const std::string& message) {
    v1::Envelope e;
    REQUIRE(e.ParseFromString(message));
    if (e.has_register_request()) {
      v1::Envelope reply;
      reply.mutable_register_result()->set_agent_id(e.register_request().agent_id());
      reply.mutable_register_result()->set_heartbeat_interval_seconds(15);
      writer->send(reply, e.message_id());
      registered = true;
    }
    if (e.has_error()) errors[e.in_reply_to()] = e.error().message();
    if (e.has_execution_update()) accepted[e.in_reply_to()] = e.execution_update().execution().execution_id();
  }
  std::uint64_t run(std::string id, std::uint64_t epoch) {
    v1::Envelope e;
    auto* run = e.mutable_run_request();
    run->set_execution_id(std::move(id));
    run->set_task_id("job");
    run->set_task_revision(1);
    run->set_trigger(v1::TRIGGER_TYPE_MANUAL);
    run->set_scheduled_unix_ms(1'000);
    run->set_attempt(1);
    run->set_delivery_attempt(1);
    run->set_leader_epoch(epoch);
    *run->mutable_task() = manual_task("job");
    return writer->send(e);
  }
  std::unique_ptr<qf::detail::EnvelopeWriter> writer;
  bool registered = false;
  std::map<std::uint64_t, std::string> errors;
  std::map<std::uint64_t, std::string> accepted;
};

struct Agent {
  Agent(boost::asio::io_context& io, qf::InprocNetwork& network, const std::string& path) : io_(io) {
    qf::LocalStoreOptions store_options;
    store_options.path = path;
    store = qf::LocalStore::open(io.get_executor(), store_options);
    qf::TaskEngineOptions engine_options;
    engine_options.agent_id = "agent-a";
    engine = std::make_unique<qf::TaskEngine>(io.get_executor(), *store, engine_options);
    connector = network.connector("coordinator", "agent-a");
    qf::AgentDispatcherOptions options;
    options.agent_id = "agent-a";
    options.reconnect_min = 20ms;
    dispatcher = std::make_unique<qf::AgentDispatcher>(io.get_executor(), *engine, *store, *connector, options);
    dispatcher->start();
    engine->start();
  }
  ~Agent() {
    dispatcher->close_now();
    bool stopped = false;
    engine->stop(0s, [&] { stopped = true; });
    run_until(io_, [&] { return stopped; });
    store->flush();
  }
  boost::asio::io_context& io_;
  std::unique_ptr<qf::LocalStore> store;
  std::unique_ptr<qf::TaskEngine> engine;
  std::unique_ptr<qf::Connector> connector;
  std::unique_ptr<qf::AgentDispatcher> dispatcher;
};

}  // namespace

TEST_CASE("an agent refuses run requests of a stale leader epoch, also after a restart", "[fencing][agent]") {
  qf::testing::QuietLog quiet;
  qf::testing::TempDir dir;
  boost::asio::io_context io;
  qf::InprocNetwork network(io.get_executor());
  const std::string path = dir.file("agent.db");
  {
    FakeLeader leader(network);
    Agent agent(io, network, path);
    REQUIRE(run_until(io, [&] { return leader.registered; }));
    const auto current = leader.run("job:1:agent-a", 5);
    REQUIRE(run_until(io, [&] { return leader.accepted.count(current) > 0; }));
    const auto stale = leader.run("job:2:agent-a", 3);  // from a deposed leader
    REQUIRE(run_until(io, [&] { return leader.errors.count(stale) > 0; }));
    CHECK(leader.errors[stale].find("stale leader epoch 3") != std::string::npos);
    CHECK(leader.errors[stale].find("seen epoch 5") != std::string::npos);
    CHECK_FALSE(leader.accepted.count(stale));
    const auto unfenced = leader.run("job:3:agent-a", 0);  // a sender without leadership
    REQUIRE(run_until(io, [&] { return leader.accepted.count(unfenced) > 0; }));
    io.restart();
    io.run_for(200ms);  // the run ends
  }
  network.unlisten("coordinator");
  {
    FakeLeader leader(network);
    Agent agent(io, network, path);  // restarted: the epoch came from its LocalStore
    REQUIRE(run_until(io, [&] { return leader.registered; }));
    const auto stale = leader.run("job:4:agent-a", 4);
    REQUIRE(run_until(io, [&] { return leader.errors.count(stale) > 0; }));
    CHECK(leader.errors[stale].find("stale leader epoch 4") != std::string::npos);
    const auto newer = leader.run("job:5:agent-a", 6);
    REQUIRE(run_until(io, [&] { return leader.accepted.count(newer) > 0; }));
    io.restart();
    io.run_for(200ms);
  }
}
