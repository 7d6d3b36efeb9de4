// SPDX-License-Identifier: Apache-2.0
// hello_engine: the smallest embedding. A C++ callable runs every 2 s on the host's
// io_context; each run is recorded in a LocalStore. Stops after N runs (argument, default 3).
#include <cstdlib>
#include <iostream>

#include <utility>
#include <boost/asio/io_context.hpp>

#include <quartzflow/local_store.hpp>
#include <quartzflow/task_builder.hpp>
#include <quartzflow/task_engine.hpp>

namespace qf = quartzflow;

int main(int argc, char** argv) {
  const int wanted = argc > 1 ? std::atoi(argv[1]) : 3;
  boost::asio::io_context io;
  qf::error_code ec;
  auto store = qf::LocalStore::open(io.get_executor(), {.path = "hello.db"}, ec);
  if (!store) return std::cerr << "hello.db: " << ec.message() << '\n', 1;
  qf::TaskEngine engine(io.get_executor(), *store);

  int runs = 0;
  engine.plugins().add("hello", [&](const qf::PluginCall& call) {
    std::cout << "hello from " << call.request->execution_id << std::endl;
    if (++runs == wanted) engine.stop(std::chrono::seconds{1}, [&] { io.stop(); });
    return qf::PluginResult{};
  });

  const auto task = qf::TaskBuilder("hello").every(std::chrono::seconds{2}).plugin("hello").build();
  qf::ValidationError problem;
  if (!engine.apply({task}, 1, &problem)) return std::cerr << problem.message() << '\n', 1;
  engine.start();
  io.run();
}
