// SPDX-License-Identifier: Apache-2.0
// The dispatcher's catalog mirror against a reload whose snapshot was read before a task
// change committed and is installed after it (the catalog follower's reload racing the
// creates of a manifest): the change must survive, in the mirror and at the agents.
#include <memory>
#include <optional>

#include "cluster.hpp"

namespace qf = quartzflow;
using namespace std::chrono_literals;
using qf::testing::Cluster;
using qf::testing::HeldReadStore;
using qf::testing::shell_task;

namespace {

/// A cluster whose store holds the next read's completion on demand, with agent a1 in `web`.
struct ReloadCluster {
  Cluster c;
  HeldReadStore* store = nullptr;
  qf::testing::AgentNode* agent = nullptr;

  ReloadCluster() {
    c.wrap_store = [this](std::unique_ptr<qf::Store> inner) {
      auto held = std::make_unique<HeldReadStore>(std::move(inner));
      store = held.get();
      return held;
    };
    c.crash_coordinator();
    c.open_coordinator();
    c.create_group("web");
    agent = &c.add_agent("a1", "web");
    REQUIRE(c.run_until([&] { return c.all_connected(); }));
  }

  /// Starts a reload and waits until its snapshot has been read (and held).
  void read_stale_snapshot() {
    store->hold_next_read = true;  // the next read is the reload's: nothing runs in between
    c.coordinator->dispatcher().catalog_changed();
    REQUIRE(c.run_until([&] { return bool(store->held); }));
  }

  void install_stale_snapshot() {
    auto release = std::move(store->held);
    store->held = nullptr;
    release();
  }
};

}  // namespace

TEST_CASE("a task created while the dispatcher re-reads the catalog stays in its mirror and reaches the agents",
          "[cluster][catalog_reload]") {
  ReloadCluster r;
  auto& c = r.c;
  c.create_task(shell_task("before", "true", {"web"}, qf::v1::PLACEMENT_MODE_ALL));
  r.read_stale_snapshot();
  const auto during = c.create_task(shell_task("during", "true", {"web"}, qf::v1::PLACEMENT_MODE_ALL));
  REQUIRE(c.coordinator->dispatcher().task("during"));
  r.install_stale_snapshot();

  CHECK(c.coordinator->dispatcher().task("during"));  // the older snapshot did not drop it
  CHECK(c.coordinator->dispatcher().task("before"));
  REQUIRE(c.run_until([&] { return r.agent->engine->config_version() >= std::uint64_t(during.config_version()); }));
  c.run_for(600ms);  // any push the reload caused has been applied
  CHECK(r.agent->engine->task_count() == 2);
}

TEST_CASE("a task deleted while the dispatcher re-reads the catalog does not come back", "[cluster][catalog_reload]") {
  ReloadCluster r;
  auto& c = r.c;
  c.create_task(shell_task("kept", "true", {"web"}, qf::v1::PLACEMENT_MODE_ALL));
  c.create_task(shell_task("doomed", "true", {"web"}, qf::v1::PLACEMENT_MODE_ALL));
  REQUIRE(c.run_until([&] { return r.agent->engine->task_count() == 2; }));
  r.read_stale_snapshot();
  std::optional<qf::Result<std::uint64_t>> deleted;
  c.coordinator->delete_task("doomed", qf::Actor{}, [&](qf::Result<std::uint64_t> d) { deleted = std::move(d); });
  REQUIRE(c.run_until([&] { return deleted.has_value(); }));
  REQUIRE(*deleted);
  r.install_stale_snapshot();

  CHECK_FALSE(c.coordinator->dispatcher().task("doomed"));  // the older snapshot did not restore it
  c.run_for(600ms);
  CHECK(r.agent->engine->task_count() == 1);
}
