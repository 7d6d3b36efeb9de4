// SPDX-License-Identifier: Apache-2.0
// Two coordinators on one store file, in one process over the in-process transport: the
// standby redirects agents and refuses what needs the scheduler; when the leader crashes the
// standby takes the lease (epoch + 1) within a lease TTL and fires, each run once.
#include <filesystem>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "cluster.hpp"
#include "two_coordinators.hpp"
#include "../../src/dispatcher/protocol.hpp"

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;
using namespace std::chrono_literals;
using qf::testing::Cluster;
using qf::testing::shell_task;

namespace {

constexpr auto k_ttl = 600ms;

/// Coordinator A (Cluster's; agents reach it at "coordinator") leads; B, on the same
/// SQLite file (or PostgreSQL database) with its own connection, listens at
/// "coordinator-b" and stands by.
struct LeaderAndStandby {
  Cluster c;
  std::unique_ptr<qf::Store> store_b;
  std::unique_ptr<qf::Coordinator> b;
  std::string dsn;  ///< the PostgreSQL database, when on PostgreSQL

  /// `command_wait`: how long B waits for a leader to take the commands it queues.
  explicit LeaderAndStandby(bool postgres = false, std::chrono::milliseconds command_wait = 10s) {
    c.crash_coordinator();
    // Each follows the catalog the other commits (as several coordinators are configured).
    c.options.catalog_poll_interval = 100ms;
    c.options.cluster.lease_ttl = k_ttl;
    c.options.cluster.advertise_agent_address = "coordinator";
    c.options.cluster.advertise_admin_address = "https://a.example:8443";
    dsn = qf::testing::open_coordinator_a(c, postgres);
    REQUIRE(c.coordinator->leading());
    store_b = qf::testing::open_second_store(c, dsn);
    auto options = c.options;
    options.cluster.coordinator_id = "coordinator-b";
    options.cluster.advertise_agent_address = "coordinator-b";
    options.cluster.advertise_admin_address = "https://b.example:8443";
    options.cluster.command_wait = command_wait;
    b = qf::testing::start_second_coordinator(c, *store_b, options);
    c.network.listen("coordinator-b", [this](std::shared_ptr<qf::Connection> connection) {
      if (b) b->accept(std::move(connection));
    });
  }

  ~LeaderAndStandby() {
    if (b) b->stop();
    c.io.poll();
  }

  std::vector<v1::Execution> executions_b(const std::string& task_id) {
    std::vector<v1::Execution> out;
    bool done = false;
    store_b->read(
        [&](qf::StoreTransaction& tx, qf::error_code&) {
          v1::ListExecutionsRequest request;
          request.set_task_id(task_id);
          request.set_page_size(500);
          out = tx.list_executions(request).items;
        },
        [&](qf::error_code) { done = true; });
    REQUIRE(c.run_until([&] { return done; }));
    return out;
  }
};

}  // namespace

TEST_CASE("a standby redirects agents to the leader and hands triggers to it through the store",
          "[cluster][failover]") {
  QUARTZFLOW_FOR_EACH_STORE();
  LeaderAndStandby t{postgres};
  auto& c = t.c;
  REQUIRE(c.run_until([&] { return t.b->leader_lease().holder_id == "coordinator"; }));
  CHECK_FALSE(t.b->leading());
  CHECK(t.b->leader_lease().epoch == c.coordinator->leader_lease().epoch);

  // An agent that reaches the standby is told where the leader is.
  auto connector = c.network.connector("coordinator-b", "probe");
  std::shared_ptr<qf::Connection> connection;
  connector->connect([&](qf::error_code ec, std::shared_ptr<qf::Connection> made) {
    REQUIRE_FALSE(ec);
    connection = std::move(made);
  });
  REQUIRE(c.run_until([&] { return connection != nullptr; }));
  std::optional<v1::ProtocolError> refusal;
  connection->start({[&](std::string message) {
                       v1::Envelope e;
                       REQUIRE(e.ParseFromString(message));
                       if (e.has_error()) refusal = e.error();
                     },
                     [](std::string) {}});
  qf::detail::EnvelopeWriter writer(connection);
  v1::Envelope reg;
  reg.mutable_register_request()->set_agent_id("probe");
  reg.mutable_register_request()->set_hostname("probe.example");
  writer.send(reg);
  REQUIRE(c.run_until([&] { return refusal.has_value(); }));
  CHECK(refusal->code() == v1::PROTOCOL_ERROR_CODE_UNAVAILABLE);
  CHECK(refusal->fatal());
  CHECK(refusal->redirect_address() == "coordinator");

  // What needs the scheduler is the leader's: the standby queues it in the store and answers
  // with the leader's answer (the same as the leader's own for the same request).
  c.create_group("web");
  c.create_task(shell_task("manual", "true", {"web"}, v1::PLACEMENT_MODE_ONE));
  std::optional<qf::TriggerResult> relayed, direct;
  t.b->trigger("manual", {}, {"no-such-agent"}, qf::Actor{"tester", ""},
               [&](qf::TriggerResult r) { relayed = std::move(r); });
  c.coordinator->trigger("manual", {}, {"no-such-agent"}, qf::Actor{"tester", ""},
                         [&](qf::TriggerResult r) { direct = std::move(r); });
  REQUIRE(c.run_until([&] { return relayed.has_value() && direct.has_value(); }));
  CHECK(relayed->ec == qf::errc::invalid_argument);
  CHECK(relayed->ec == direct->ec);
  CHECK(relayed->message() == direct->message());
  CHECK(relayed->error.field == "agent_ids[0]");

  std::optional<v1::ClusterStatus> status;
  t.b->cluster_status([&](qf::error_code ec, v1::ClusterStatus s) {
    REQUIRE_FALSE(ec);
    status = std::move(s);
  });
  REQUIRE(c.run_until([&] { return status.has_value(); }));
  CHECK(status->state() == v1::COORDINATOR_STATE_STANDBY);
  CHECK(status->leader_id() == "coordinator");
  CHECK(status->leader_agent_address() == "coordinator");
  REQUIRE(status->coordinators_size() == 2);
  for (const auto& coordinator : status->coordinators()) CHECK(coordinator.alive());
}

TEST_CASE("when the leader crashes the standby takes over within a lease TTL and fires each run once",
          "[cluster][failover]") {
  QUARTZFLOW_FOR_EACH_STORE();
  LeaderAndStandby t{postgres};
  auto& c = t.c;
  c.create_group("web");
  c.add_agent("a1", "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  const auto ran_file = c.dir.file("ran.txt");
  c.create_task(
      shell_task("tick", fmt::format("echo $QF_EXECUTION_ID >> {}", ran_file), {"web"}, v1::PLACEMENT_MODE_ONE, 1));
  REQUIRE(c.run_until([&] { return c.count("tick", v1::EXECUTION_STATUS_SUCCESS) >= 2; }));
  const auto successes_before = c.count("tick", v1::EXECUTION_STATUS_SUCCESS);
  const auto epoch_before = c.coordinator->leader_lease().epoch;

  // kill -9 of the leader: no release, its lease runs out. The agent's next coordinator is B.
  c.crash_coordinator();
  const auto crashed = std::chrono::steady_clock::now();
  c.network.listen("coordinator", [&t](std::shared_ptr<qf::Connection> connection) {
    if (t.b) t.b->accept(std::move(connection));
  });
  REQUIRE(c.run_until([&] { return t.b->leading(); }, 5s));
  const auto takeover =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - crashed);
  INFO("takeover after " << takeover.count() << " ms");
  CHECK(takeover <= k_ttl + k_ttl / 3 + 300ms);  // expiry, the standby's poll, a loaded machine
  CHECK(t.b->leader_lease().epoch == epoch_before + 1);

  REQUIRE(c.run_until(
      [&] {
        std::size_t successes = 0;
        for (const auto& r : t.executions_b("tick"))
          if (r.status() == v1::EXECUTION_STATUS_SUCCESS) ++successes;
        return successes >= successes_before + 2;
      },
      10s));
  const auto first_fire =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - crashed);
  INFO("runs completed again " << first_fire.count() << " ms after the crash");
  for (const auto& [id, times] : qf::testing::executions_in(ran_file)) {
    INFO(id);
    CHECK(times == 1);
  }
}

TEST_CASE("a trigger no leader takes within the standby's wait is withdrawn, refused naming the leader, never run",
          "[cluster][failover][commands]") {
  QUARTZFLOW_FOR_EACH_STORE();
  LeaderAndStandby t{postgres, 300ms};
  auto& c = t.c;
  c.create_group("web");
  c.add_agent("a1", "web");
  REQUIRE(c.run_until([&] { return c.all_connected(); }));
  const auto ran_file = c.dir.file("ran.txt");
  c.create_task(
      shell_task("manual", fmt::format("echo $QF_EXECUTION_ID >> {}", ran_file), {"web"}, v1::PLACEMENT_MODE_ONE));

  // The leader is gone; B takes its lease only after it expires (600 ms), past B's wait.
  c.crash_coordinator();
  c.network.listen("coordinator", [&t](std::shared_ptr<qf::Connection> connection) {
    if (t.b) t.b->accept(std::move(connection));
  });
  std::optional<qf::TriggerResult> answer;
  t.b->trigger("manual", {}, qf::Actor{"tester", ""}, [&](qf::TriggerResult r) { answer = std::move(r); });
  REQUIRE(c.run_until([&] { return answer.has_value(); }, 5s));
  CHECK(answer->ec == qf::errc::fenced);
  CHECK_THAT(answer->message(), Catch::Contains("no leader took this trigger within 300 ms: it was not run") &&
                                    Catch::Contains("the leader is"));

  // B leads, its agent is back: the withdrawn trigger is never run.
  REQUIRE(c.run_until([&] { return t.b->leading(); }, 5s));
  c.io.run_for(2s);
  CHECK(t.executions_b("manual").empty());
  CHECK(qf::testing::executions_in(ran_file).empty());
}
