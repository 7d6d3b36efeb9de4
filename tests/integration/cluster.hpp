// SPDX-License-Identifier: Apache-2.0
// A coordinator and agents in one process over the in-process network, with short
// protocol timers so that failures show within a second or two.
#pragma once

#include <chrono>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>

#include <quartzflow/coordinator.hpp>
#include <quartzflow/agent_dispatcher.hpp>
#include <quartzflow/coordinator_dispatcher.hpp>
#include <quartzflow/execution_status.hpp>
#include <quartzflow/local_store.hpp>
#include <quartzflow/store.hpp>
#include <quartzflow/task_engine.hpp>
#include <quartzflow/transport.hpp>

#include "../unit/temp_dir.hpp"

namespace quartzflow::testing {

using namespace std::chrono_literals;

/// What a frozen agent (SIGSTOP) neither handles nor sends yet, in order.
struct AgentFreeze {
  bool frozen = false;
  std::deque<std::function<void()>> held;
};

/// An agent's end of its link that can be frozen like a stopped process: while frozen,
/// nothing it sends leaves and nothing sent to it is handled; afterwards both are replayed
/// in order.
class FreezableConnection final : public Connection {
 public:
  FreezableConnection(std::shared_ptr<Connection> inner, std::shared_ptr<AgentFreeze> freeze)
      : inner_(std::move(inner)), freeze_(std::move(freeze)) {}
  void start(Handlers handlers) override {
    inner_->start(Handlers{[f = freeze_, on = handlers.on_message](std::string m) {
                             if (f->frozen || !f->held.empty()) f->held.push_back([on, m] { on(m); });
                             else on(std::move(m));
                           },
                           [f = freeze_, on = handlers.on_closed](std::string r) {
                             if (f->frozen || !f->held.empty()) f->held.push_back([on, r] { on(r); });
                             else on(std::move(r));
                           }});
  }
  bool send(std::string message) override {
    if (!freeze_->frozen && freeze_->held.empty()) return inner_->send(std::move(message));
    freeze_->held.push_back([inner = inner_, m = std::move(message)] { inner->send(m); });
    return inner_->is_open();
  }
  void close(std::string reason) override { inner_->close(std::move(reason)); }
  bool is_open() const noexcept override { return inner_->is_open(); }
  std::string remote_address() const override { return inner_->remote_address(); }

 private:
  std::shared_ptr<Connection> inner_;
  std::shared_ptr<AgentFreeze> freeze_;
};

class FreezableConnector final : public Connector {
 public:
  FreezableConnector(std::unique_ptr<Connector> inner, std::shared_ptr<AgentFreeze> freeze)
      : inner_(std::move(inner)), freeze_(std::move(freeze)) {}
  void connect(ConnectHandler handler) override {
    inner_->connect([f = freeze_, handler = std::move(handler)](error_code ec, std::shared_ptr<Connection> c) {
      handler(ec, c ? std::make_shared<FreezableConnection>(std::move(c), f) : nullptr);
    });
  }

 private:
  std::unique_ptr<Connector> inner_;
  std::shared_ptr<AgentFreeze> freeze_;
};

/// A Store whose next read completes only when the test says so (its work runs at once):
/// a snapshot read before a change commits, delivered after it.
class HeldReadStore final : public Store {
 public:
  explicit HeldReadStore(std::unique_ptr<Store> inner) : inner_(std::move(inner)) {}
  void transact(Work work, Done done) override { inner_->transact(std::move(work), std::move(done)); }
  void transact_urgent(Work work, Done done) override { inner_->transact_urgent(std::move(work), std::move(done)); }
  void read(Work work, Done done) override {
    if (!hold_next_read) return inner_->read(std::move(work), std::move(done));
    hold_next_read = false;
    inner_->read(std::move(work), [this, done = std::move(done)](error_code ec) mutable {
      held = [done = std::move(done), ec] { done(ec); };
    });
  }
  void flush() override { inner_->flush(); }
  void watch_config_version(std::function<void()> changed) override {
    inner_->watch_config_version(std::move(changed));
  }
  StoreMetrics metrics() const noexcept override { return inner_->metrics(); }
  boost::asio::any_io_executor get_executor() const noexcept override { return inner_->get_executor(); }

  bool hold_next_read = false;
  std::function<void()> held;  ///< the held read's completion, once its work ran

 private:
  std::unique_ptr<Store> inner_;
};

struct AgentNode {
  std::string id;
  std::shared_ptr<AgentFreeze> freeze = std::make_shared<AgentFreeze>();
  std::unique_ptr<LocalStore> store;
  std::unique_ptr<TaskEngine> engine;
  std::unique_ptr<Connector> connector;
  std::unique_ptr<AgentDispatcher> dispatcher;
  std::vector<v1::Execution> finals;  ///< final records as the engine stored them
};

class Cluster {
 public:
  boost::asio::io_context io;
  TempDir dir{"qf-cluster"};
  InprocNetwork network{io.get_executor(), 7};
  std::unique_ptr<Store> store;
  std::unique_ptr<Coordinator> coordinator;
  std::map<std::string, std::unique_ptr<AgentNode>> agents;
  std::vector<v1::Execution> ingested;  ///< what the coordinator stored from agents (changes only)
  CoordinatorOptions options;
  /// Wraps the store `open_coordinator` opens (set it, then crash_coordinator + open_coordinator).
  std::function<std::unique_ptr<Store>(std::unique_ptr<Store>)> wrap_store;

  Cluster() {
    options.dispatcher.heartbeat_interval = 200ms;
    options.dispatcher.ack_timeout = 300ms;
    options.agent_grace = 100ms;
    open_coordinator();
  }

  ~Cluster() {
    for (auto& [id, agent] : agents) agent->dispatcher->stop();
    for (auto& [id, agent] : agents) {
      bool stopped = false;
      agent->engine->stop(0s, [&] { stopped = true; });
      run_until([&] { return stopped; }, 5s);
    }
    if (coordinator) coordinator->stop();
    io.poll();
  }

  void open_coordinator() {
    error_code ec;
    std::string detail;
    store = open_sqlite_store(io.get_executor(), SqliteStoreOptions{dir.file("coordinator.db")}, ec, &detail);
    REQUIRE(store);
    if (wrap_store) store = wrap_store(std::move(store));
    coordinator = std::make_unique<Coordinator>(io.get_executor(), *store, options);
    coordinator->on_execution([this](const v1::Execution& r) { ingested.push_back(r); });
    bool started = false;
    coordinator->start([&](error_code start_ec) {
      REQUIRE_FALSE(start_ec);
      started = true;
    });
    REQUIRE(run_until([&] { return started; }));
    network.listen("coordinator", [this](std::shared_ptr<Connection> c) {
      if (coordinator) coordinator->accept(std::move(c));
    });
  }

  /// The coordinator process dies: connections break, nothing more is written.
  void crash_coordinator() {
    network.unlisten("coordinator");
    coordinator.reset();
    store.reset();
    io.poll();
  }

  AgentNode& add_agent(const std::string& id, const std::string& config_group = {}, std::vector<std::string> ips = {},
                       std::map<std::string, std::string> labels = {}) {
    auto node = std::make_unique<AgentNode>();
    node->id = id;
    error_code ec;
    std::string detail;
    LocalStoreOptions store_options;
    store_options.path = dir.file((id + ".db").c_str());
    node->store = LocalStore::open(io.get_executor(), store_options, ec, &detail);
    REQUIRE(node->store);
    TaskEngineOptions engine_options;
    engine_options.agent_id = id;
    engine_options.hostname = id + ".example";
    node->engine = std::make_unique<TaskEngine>(io.get_executor(), *node->store, engine_options);
    node->connector = std::make_unique<FreezableConnector>(network.connector("coordinator", id), node->freeze);
    AgentDispatcherOptions agent_options;
    agent_options.agent_id = id;
    agent_options.hostname = id + ".example";
    agent_options.ips = std::move(ips);
    agent_options.labels = std::move(labels);
    agent_options.config_group = config_group;
    agent_options.reconnect_min = 50ms;
    agent_options.reconnect_max = 400ms;
    agent_options.heartbeat_interval = 200ms;
    agent_options.ack_timeout = 300ms;
    agent_options.daily_stats_interval = 300ms;
    auto* raw = node.get();
    agent_options.on_execution = [raw](const v1::Execution& r) {
      if (is_final(r.status())) raw->finals.push_back(r);
    };
    node->dispatcher = std::make_unique<AgentDispatcher>(io.get_executor(), *node->engine, *node->store,
                                                         *node->connector, agent_options);
    node->dispatcher->start();
    node->engine->start();
    auto& ref = *node;
    agents[id] = std::move(node);
    return ref;
  }

  /// The agent stops handling and sending messages, as a SIGSTOPped process would (its
  /// runs already started go on).
  void freeze(const std::string& id) { agents.at(id)->freeze->frozen = true; }

  /// The agent catches up: what it was sent and what it meant to send go through in order,
  /// one message every `gap` (a process working through its backlog).
  void thaw(const std::string& id, std::chrono::milliseconds gap = 20ms) {
    auto freeze = agents.at(id)->freeze;
    freeze->frozen = false;
    while (!freeze->held.empty()) {
      auto next = std::move(freeze->held.front());
      freeze->held.pop_front();
      next();
      run_for(gap);
    }
  }

  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      if (io.stopped()) io.restart();
      io.run_for(5ms);
    }
    return true;
  }

  void run_for(std::chrono::milliseconds span) {
    run_until([] { return false; }, span);
  }

  /// Group `group` with agents a1 and a2 in it, both connected: the set-up of the delivery tests.
  bool two_agents_in(const std::string& group) {
    create_group(group);
    add_agent("a1", group);
    add_agent("a2", group);
    return run_until([&] { return all_connected(); });
  }

  bool all_connected() {
    for (auto& [id, a] : agents)
      if (!a->dispatcher->connected()) return false;
    return coordinator && coordinator->dispatcher().online_agents().size() == agents.size();
  }

  // --- synchronous catalog calls ------------------------------------------------------

  v1::Task create_task(v1::Task task) {
    std::optional<CatalogResult<v1::Task>> result;
    coordinator->create_task(std::move(task), Actor{}, [&](CatalogResult<v1::Task> r) { result = std::move(r); });
    REQUIRE(run_until([&] { return result.has_value(); }));
    INFO(result->error.message());
    REQUIRE(*result);
    return result->value;
  }

  void create_group(const std::string& id, v1::GroupMembership membership = {}) {
    v1::Group group;
    group.set_id(id);
    group.set_name(id);
    *group.mutable_membership() = membership;
    std::optional<CatalogResult<v1::Group>> result;
    coordinator->create_group(group, Actor{}, [&](CatalogResult<v1::Group> r) { result = std::move(r); });
    REQUIRE(run_until([&] { return result.has_value(); }));
    INFO(result->error.message());
    REQUIRE(*result);
  }

  void set_enabled(const std::string& id, bool enabled) {
    std::optional<CatalogResult<v1::Task>> result;
    coordinator->set_task_enabled(id, enabled, Actor{}, [&](CatalogResult<v1::Task> r) { result = std::move(r); });
    REQUIRE(run_until([&] { return result.has_value(); }));
    REQUIRE(*result);
  }

  TriggerResult trigger(const std::string& task_id, std::map<std::string, std::string> params = {}) {
    std::optional<TriggerResult> result;
    coordinator->trigger(task_id, std::move(params), Actor{"tester", ""}, [&](TriggerResult r) { result = std::move(r); });
    REQUIRE(run_until([&] { return result.has_value(); }));
    return std::move(*result);
  }

  // --- reading the coordinator's store ---------------------------------------------------

  std::optional<v1::Execution> execution(const std::string& id) {
    std::optional<v1::Execution> out;
    bool done = false;
    store->read([&](StoreTransaction& tx, error_code&) { out = tx.execution(id); }, [&](error_code) { done = true; });
    REQUIRE(run_until([&] { return done; }));
    return out;
  }

  std::vector<v1::Execution> executions(const std::string& task_id) {
    std::vector<v1::Execution> out;
    bool done = false;
    store->read(
        [&](StoreTransaction& tx, error_code&) {
          v1::ListExecutionsRequest request;
          request.set_task_id(task_id);
          request.set_page_size(500);
          out = tx.list_executions(request).items;
        },
        [&](error_code) { done = true; });
    REQUIRE(run_until([&] { return done; }));
    return out;
  }

  std::optional<v1::Agent> agent_record(const std::string& id) {
    std::optional<v1::Agent> out;
    bool done = false;
    store->read([&](StoreTransaction& tx, error_code&) { out = tx.agent(id); }, [&](error_code) { done = true; });
    REQUIRE(run_until([&] { return done; }));
    return out;
  }

  /// Daily stats the agent reported for its local dates in [from, to].
  std::vector<v1::DailyStats> reported_stats(const std::string& agent_id, const std::string& from, const std::string& to) {
    std::vector<v1::DailyStats> out;
    bool done = false;
    store->read([&](StoreTransaction& tx, error_code&) { out = tx.agent_daily_stats(agent_id, from, to); },
                [&](error_code) { done = true; });
    REQUIRE(run_until([&] { return done; }));
    return out;
  }

  /// Waits until the coordinator's store holds execution `id` with `status`.
  bool reaches(const std::string& id, v1::ExecutionStatus status, std::chrono::milliseconds timeout = 10s) {
    return run_until([&] {
      auto e = execution(id);
      return e && e->status() == status;
    }, timeout);
  }

  /// Final records of a task in the coordinator's store with `status`.
  std::size_t count(const std::string& task_id, v1::ExecutionStatus status) {
    std::size_t n = 0;
    for (const auto& r : executions(task_id)) n += r.status() == status ? 1 : 0;
    return n;
  }
};

/// Execution ids a task's runs appended to `file`, with how often each ran.
inline std::map<std::string, int> executions_in(const std::filesystem::path& file) {
  std::map<std::string, int> out;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) ++out[line];
  return out;
}

/// A shell task bound to `groups`, with the given placement and an interval schedule
/// (0 = manual only).
inline v1::Task shell_task(const std::string& id, const std::string& script, std::vector<std::string> groups,
                           v1::PlacementMode mode, std::uint32_t every_seconds = 0) {
  v1::Task task;
  task.set_id(id);
  task.set_name(id);
  task.set_enabled(true);
  task.mutable_shell()->set_script(script);
  for (auto& g : groups) task.add_group_ids(g);
  task.mutable_placement()->set_mode(mode);
  if (every_seconds > 0) {
    task.mutable_schedule()->set_interval_seconds(every_seconds);
  } else {
    task.mutable_schedule()->mutable_manual();
  }
  return task;
}

}  // namespace quartzflow::testing
