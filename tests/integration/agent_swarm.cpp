// SPDX-License-Identifier: Apache-2.0
// quartzflow_agent_swarm: many complete agents (LocalStore, TaskEngine, AgentDispatcher over
// QUIC, each with its own certificate) in one process, so integration tests can run
// hundreds of agents against a real qf-coordinator on a 2-core machine.
//   quartzflow_agent_swarm --coordinator 127.0.0.1:PORT --certs DIR --data-dir DIR
//                          --prefix swarm- --first 0 --count 50
// Agent i is "<prefix><i>" with DIR/agent-<prefix><i>.pem/.key; SIGTERM stops them all.
#include <algorithm>
#include <csignal>
#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <utility>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <CLI/CLI.hpp>

#include <quartzflow/agent_dispatcher.hpp>
#include <quartzflow/local_store.hpp>
#include <quartzflow/log.hpp>
#include <quartzflow/quic.hpp>
#include <quartzflow/task_engine.hpp>

namespace qf = quartzflow;
namespace asio = boost::asio;

namespace {

struct SwarmAgent {
  std::unique_ptr<qf::LocalStore> store;
  std::unique_ptr<qf::TaskEngine> engine;
  std::unique_ptr<qf::QuicConnector> connector;
  std::unique_ptr<qf::AgentDispatcher> dispatcher;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"many QuartzFlow agents in one process (tests)"};
  std::string coordinator, certs, data_dir, prefix = "swarm-", log_level = "warn";
  int first = 0, count = 10;
  app.add_option("--coordinator", coordinator, "host:port")->required();
  app.add_option("--certs", certs, "directory with ca.pem and agent-NAME.pem/.key")->required();
  app.add_option("--data-dir", data_dir, "one store per agent in this directory")->required();
  app.add_option("--prefix", prefix);
  app.add_option("--first", first);
  app.add_option("--count", count)->check(CLI::Range(1, 2000));
  app.add_option("--log-level", log_level);
  CLI11_PARSE(app, argc, argv);
  qf::set_log_level(log_level);
  const auto colon = coordinator.rfind(':');
  if (colon == std::string::npos) {
    std::cerr << "--coordinator: expected host:port\n";
    return 2;
  }
  const std::string host = coordinator.substr(0, colon);
  const auto port = static_cast<std::uint16_t>(std::stoi(coordinator.substr(colon + 1)));

  asio::io_context io;
  std::vector<std::unique_ptr<SwarmAgent>> agents;
  for (int i = first; i < first + count; ++i) {
    const std::string id = prefix + std::to_string(i);
    auto agent = std::make_unique<SwarmAgent>();
    qf::LocalStoreOptions store_options;
    store_options.path = data_dir + "/" + id + ".db";
    qf::error_code ec;
    std::string detail;
    agent->store = qf::LocalStore::open(io.get_executor(), store_options, ec, &detail);
    if (!agent->store) {
      std::cerr << id << ": " << detail << "\n";
      return 1;
    }
    qf::TaskEngineOptions engine_options;
    engine_options.agent_id = id;
    engine_options.hostname = id + ".swarm";
    agent->engine = std::make_unique<qf::TaskEngine>(io.get_executor(), *agent->store, engine_options);
    qf::QuicOptions quic;
    quic.tls = {certs + "/ca.pem", certs + "/agent-" + id + ".pem", certs + "/agent-" + id + ".key"};
    agent->connector = std::make_unique<qf::QuicConnector>(io.get_executor(), host, port, host, quic);
    qf::AgentDispatcherOptions options;
    options.agent_id = id;
    options.hostname = id + ".swarm";
    options.reconnect_min = std::chrono::milliseconds{200};
    options.reconnect_max = std::chrono::milliseconds{2'000};
    agent->dispatcher =
        std::make_unique<qf::AgentDispatcher>(io.get_executor(), *agent->engine, *agent->store, *agent->connector, options);
    agents.push_back(std::move(agent));
  }
  for (auto& agent : agents) {
    agent->dispatcher->start();
    agent->engine->start();
  }
  asio::signal_set signals(io, SIGTERM, SIGINT);
  signals.async_wait([&](const qf::error_code&, int) {
    auto remaining = std::make_shared<std::size_t>(agents.size());
    for (auto& agent : agents) {
      agent->dispatcher->stop();
      agent->engine->stop(std::chrono::seconds{2}, [&, remaining] {
        if (--*remaining != 0) return;
        // Drains end when the coordinator acknowledged the last results: wait for them
        // (at most 5 s), then close what is left, and give the closes time to leave.
        auto waited = std::make_shared<int>(0);
        auto timer = std::make_shared<asio::steady_timer>(io);
        auto check = std::make_shared<std::function<void()>>();
        *check = [&, waited, timer, check] {
          const bool draining = std::any_of(agents.begin(), agents.end(), [](auto& a) { return a->dispatcher->connected(); });
          if (draining && ++*waited < 25) {
            timer->expires_after(std::chrono::milliseconds{200});
            timer->async_wait([check](const qf::error_code&) { (*check)(); });
            return;
          }
          for (auto& a : agents) a->dispatcher->close_now();
          timer->expires_after(std::chrono::milliseconds{200});
          timer->async_wait([&, check](const qf::error_code&) {
            *check = nullptr;
            for (auto& a : agents) a->store->flush();
            io.stop();
          });
        };
        (*check)();
      });
    }
  });
  io.run();
  return 0;
}
