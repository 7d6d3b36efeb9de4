// SPDX-License-Identifier: Apache-2.0
// The `async_` functions: the same operations through Asio completion tokens, with
// `co_await` (use_awaitable) and with a plain callback.
#include <catch2/catch.hpp>

#include <optional>
#include <string>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <quartzflow/coordinator.hpp>
#include <quartzflow/task_builder.hpp>

#include "run_until.hpp"

namespace asio = boost::asio;
namespace qf = quartzflow;
namespace v1 = quartzflow::v1;
using namespace std::chrono_literals;

namespace {

struct Fixture {
  asio::io_context io;
  std::unique_ptr<qf::Store> store;
  std::unique_ptr<qf::Coordinator> coordinator;
  qf::Actor alice{"alice", "127.0.0.1"};

  Fixture() {
    qf::error_code ec;
    store = qf::open_sqlite_store(io.get_executor(), {":memory:"}, ec);
    REQUIRE(store);
    coordinator = std::make_unique<qf::Coordinator>(io.get_executor(), *store);
  }
  ~Fixture() { coordinator->stop(); }

  /// Runs a coroutine to its end (or fails after 10 s), rethrowing what it threw.
  template <typename F>
  void run(F body) {
    bool finished = false;
    std::exception_ptr failure;
    asio::co_spawn(io, body(), [&](std::exception_ptr e) {
      failure = e;
      finished = true;
    });
    REQUIRE(qf::testing::run_until(io, [&] { return finished; }));
    if (failure) std::rethrow_exception(failure);
  }
};

}  // namespace

TEST_CASE("Catalog changes and triggers can be awaited, and give the field of a failure", "[coordinator]") {
  Fixture f;
  f.run([&]() -> asio::awaitable<void> {
    auto& c = *f.coordinator;
    // void(error_code) operations throw boost::system::system_error when awaited and failed.
    co_await c.async_start(asio::use_awaitable);

    v1::Group web;
    web.set_name("web");
    auto group = co_await c.async_create_group(web, f.alice, asio::use_awaitable);
    REQUIRE(group);

    auto task = qf::TaskBuilder("report").cron("0 * * * *").plugin("report").group("web").build();
    auto created = co_await c.async_create_task(task, f.alice, asio::use_awaitable);
    REQUIRE(created);
    CHECK(created.value.revision() == 1);
    CHECK(created.value.created_by() == "alice");

    // The same name again: refused, nothing changes, and the failure names the field.
    auto again = co_await c.async_create_task(task, f.alice, asio::use_awaitable);
    CHECK_FALSE(again);
    CHECK(again.ec == qf::errc::conflict);
    CHECK_THROWS_AS(again.value_or_throw(), qf::error);

    auto disabled = co_await c.async_set_task_enabled("report", false, f.alice, asio::use_awaitable);
    REQUIRE(disabled);
    CHECK_FALSE(disabled.value.enabled());

    // A trigger of an unknown task: the ids are empty and the error says why.
    auto unknown = co_await c.async_trigger("nope", {}, f.alice, asio::use_awaitable);
    CHECK(unknown.ec == qf::errc::not_found);
    CHECK(unknown.value.empty());

    // A store query awaited: the task as stored.
    std::optional<v1::Task> stored;
    co_await f.store->async_read([&](qf::StoreTransaction& tx, qf::error_code&) { stored = tx.task("report"); },
                                 asio::use_awaitable);
    REQUIRE(stored);
    CHECK_FALSE(stored->enabled());

    auto deleted = co_await c.async_delete_task("report", f.alice, asio::use_awaitable);
    REQUIRE(deleted);
    CHECK(deleted.value > static_cast<std::uint64_t>(created.value.config_version()));
  });
}

TEST_CASE("An awaited operation that fails with an error_code throws it", "[coordinator]") {
  Fixture f;
  CHECK_THROWS_AS(f.run([&]() -> asio::awaitable<void> {
    co_await f.store->async_transact(
        [](qf::StoreTransaction&, qf::error_code& ec) { ec = qf::errc::conflict; }, asio::use_awaitable);
  }),
                  boost::system::system_error);
}

TEST_CASE("An async_ function also takes a plain callback", "[coordinator]") {
  Fixture f;
  std::optional<qf::Result<v1::Task>> result;
  f.coordinator->async_create_task(qf::TaskBuilder("cb").every(60s).plugin("p").build(), f.alice,
                                   [&](qf::Result<v1::Task> r) { result = std::move(r); });
  REQUIRE(qf::testing::run_until(f.io, [&] { return result.has_value(); }));
  CHECK(*result);
  CHECK(result->value.name() == "cb");
}
