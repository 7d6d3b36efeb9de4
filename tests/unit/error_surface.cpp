// SPDX-License-Identifier: Apache-2.0
// The throwing overloads: the same failure as the error_code form, as a quartzflow::error
// whose text says what and why.
#include <catch2/catch.hpp>

#include <string>

#include <utility>
#include <boost/asio/io_context.hpp>

#include <quartzflow/local_store.hpp>
#include <quartzflow/store.hpp>
#include <quartzflow/task_builder.hpp>
#include <quartzflow/task_engine.hpp>

namespace qf = quartzflow;
using namespace std::chrono_literals;

namespace {

/// The text of the quartzflow::error `f` throws (fails when it throws nothing or another type).
template <typename F>
std::string thrown(F f) {
  try {
    f();
  } catch (const qf::error& e) {
    return e.what();
  }
  FAIL("no quartzflow::error thrown");
  return {};
}

}  // namespace

TEST_CASE("Opening a store where none can be made throws the path and the reason", "[error]") {
  boost::asio::io_context io;
  const std::string nowhere = "/nonexistent-qf-dir/sub/x.db";

  qf::error_code ec;
  std::string detail;
  CHECK_FALSE(qf::LocalStore::open(io.get_executor(), {.path = nowhere}, ec, &detail));
  CHECK(ec);
  const auto local = thrown([&] { (void)qf::LocalStore::open(io.get_executor(), {.path = nowhere}); });
  CHECK(local == detail);
  CHECK(local.find("nonexistent-qf-dir") != std::string::npos);

  const auto coordinator = thrown([&] { (void)qf::open_sqlite_store(io.get_executor(), {nowhere}); });
  CHECK(coordinator.find("nonexistent-qf-dir") != std::string::npos);
  CHECK(qf::open_sqlite_store(io.get_executor(), {":memory:"}) != nullptr);
}

TEST_CASE("A refused trigger throws why, an accepted one gives the execution id", "[error]") {
  boost::asio::io_context io;
  auto store = qf::LocalStore::open(io.get_executor(), {.path = ":memory:"});
  qf::TaskEngine engine(io.get_executor(), *store);
  engine.plugins().add("noop", [](const qf::PluginCall&) { return qf::PluginResult{}; });
  REQUIRE(engine.apply({qf::TaskBuilder("manual").schedule("@manual").plugin("noop").build()}, 1));
  engine.start();

  const auto why = thrown([&] { (void)engine.trigger("absent"); });
  CHECK(why.find("absent") != std::string::npos);
  CHECK(engine.trigger("manual").rfind("manual:", 0) == 0);

  bool stopped = false;
  engine.stop(1s, [&] { stopped = true; });
  while (!stopped && io.run_one_for(1s)) {
  }
  CHECK(stopped);
}
