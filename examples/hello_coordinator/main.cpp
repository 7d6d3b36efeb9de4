// SPDX-License-Identifier: Apache-2.0
// hello_coordinator: a coordinator and one agent in one process, driven by a coroutine. The
// coordinator sends each fire of a `one` task to the agent; we co_await the catalog change
// and a manual trigger. Stops after N runs (argument, default 3). Nothing is written to disk.
#include <cstdlib>
#include <iostream>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <quartzflow/quartzflow.hpp>

namespace asio = boost::asio;
namespace qf = quartzflow;

int main(int argc, char** argv) {
  const int wanted = argc > 1 ? std::atoi(argv[1]) : 3;
  asio::io_context io;
  qf::InprocNetwork network(io.get_executor());
  qf::error_code ec;

  // The coordinator: catalog, scheduler and dispatcher over a Store.
  auto store = qf::open_sqlite_store(io.get_executor(), {":memory:"}, ec);
  if (!store) return std::cerr << "store: " << ec.message() << '\n', 1;
  qf::Coordinator coordinator(io.get_executor(), *store, {.agent_grace = std::chrono::milliseconds{0}});
  network.listen("coordinator", [&](auto connection) { coordinator.accept(std::move(connection)); });

  // One agent: its engine runs the C++ body; its dispatcher talks to the coordinator.
  auto local = qf::LocalStore::open(io.get_executor(), {.path = ":memory:"}, ec);
  if (!local) return std::cerr << "local store: " << ec.message() << '\n', 1;
  qf::TaskEngine engine(io.get_executor(), *local, {.agent_id = "agent-1"});
  auto connector = network.connector("coordinator", "agent-1");
  qf::AgentDispatcher agent(io.get_executor(), engine, *local, *connector, {.agent_id = "agent-1"});

  int runs = 0;
  engine.plugins().add("hello", [&](const qf::PluginCall& call) {
    std::cout << "hello from " << call.request->execution_id << std::endl;
    return qf::PluginResult{};
  });
  const qf::Actor me{"hello_coordinator"};
  coordinator.on_execution([&](const qf::v1::Execution& run) {
    if (!qf::is_final(run.status())) return;
    std::cout << run.execution_id() << " " << qf::v1::ExecutionStatus_Name(run.status()) << std::endl;
    if (run.status() != qf::v1::EXECUTION_STATUS_SUCCESS) return;
    if (++runs == 1) {  // after the first run, one more right now: a manual trigger, awaited
      asio::co_spawn(io, [&]() -> asio::awaitable<void> {
        auto now = co_await coordinator.async_trigger("hello", {}, me, asio::use_awaitable);
        std::cout << "triggered " << now.value_or_throw().front() << std::endl;
      }, asio::detached);
    }
    if (runs != wanted) return;
    agent.stop();
    engine.stop(std::chrono::seconds{1}, [&] {
      coordinator.stop();
      io.stop();
    });
  });

  asio::co_spawn(io, [&]() -> asio::awaitable<void> {
    co_await coordinator.async_start(asio::use_awaitable);
    auto task = qf::TaskBuilder("hello").every(std::chrono::seconds{2}).plugin("hello").on_one_agent().all_agents().build();
    auto created = co_await coordinator.async_create_task(task, me, asio::use_awaitable);
    std::cout << "created task " << created.value_or_throw().name() << std::endl;
    agent.start();
    engine.start();
  }, [](std::exception_ptr failure) {
    if (failure) std::rethrow_exception(failure);
  });
  io.run();
  return runs >= wanted ? 0 : 1;
}
