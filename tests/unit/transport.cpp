// SPDX-License-Identifier: Apache-2.0
#include <optional>

#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>

#include "run_until.hpp"

#include <quartzflow/transport.hpp>

namespace qf = quartzflow;
using namespace std::chrono_literals;

using quartzflow::testing::run_until;

namespace {

struct Ends {
  std::shared_ptr<qf::Connection> agent;
  std::shared_ptr<qf::Connection> coordinator;
  std::vector<std::string> at_agent;
  std::vector<std::string> at_coordinator;
  std::string agent_closed;
  std::string coordinator_closed;
};

std::string envelope(std::uint64_t id) {
  qf::v1::Envelope e;
  e.set_protocol_version(1);
  e.set_message_id(id);
  e.mutable_heartbeat();
  return e.SerializeAsString();
}

std::shared_ptr<Ends> connect(boost::asio::io_context& io, qf::InprocNetwork& net, const std::string& client) {
  auto ends = std::make_shared<Ends>();
  std::weak_ptr<Ends> weak = ends;  // handlers must not own the connections' holder (a cycle)
  net.listen("c", [weak](std::shared_ptr<qf::Connection> conn) {
    weak.lock()->coordinator = conn;
    conn->start({[weak](std::string m) { weak.lock()->at_coordinator.push_back(m); },
                 [weak](std::string why) {
                   if (auto e = weak.lock()) e->coordinator_closed = why;
                 }});
  });
  auto connector = net.connector("c", client);
  connector->connect([weak](qf::error_code ec, std::shared_ptr<qf::Connection> conn) {
    REQUIRE_FALSE(ec);
    weak.lock()->agent = conn;
    conn->start({[weak](std::string m) { weak.lock()->at_agent.push_back(m); },
                 [weak](std::string why) {
                   if (auto e = weak.lock()) e->agent_closed = why;
                 }});
  });
  REQUIRE(run_until(io, [&] { return ends->agent && ends->coordinator; }));
  return ends;
}

}  // namespace

TEST_CASE("in-process links deliver whole messages in order, after the delay, then the close", "[transport]") {
  boost::asio::io_context io;
  qf::InprocNetwork net(io.get_executor());
  qf::LinkFaults faults;
  faults.delay = 50ms;
  net.set_faults(faults);
  auto ends = connect(io, net, "a1");
  const auto sent_at = std::chrono::steady_clock::now();
  for (std::uint64_t i = 1; i <= 100; ++i) REQUIRE(ends->agent->send(envelope(i)));
  ends->agent->close("bye");
  CHECK_FALSE(ends->agent->send(envelope(101)));
  REQUIRE(run_until(io, [&] { return !ends->coordinator_closed.empty(); }));
  CHECK(std::chrono::steady_clock::now() - sent_at >= 50ms);
  REQUIRE(ends->at_coordinator.size() == 100);
  for (std::uint64_t i = 1; i <= 100; ++i) CHECK(ends->at_coordinator[i - 1] == envelope(i));
  CHECK(ends->coordinator_closed == "bye");
  CHECK(ends->agent_closed.empty());  // no notification of one's own close
  CHECK(net.stats().messages_delivered == 100);
}

TEST_CASE("in-process faults drop chosen messages, a cut link loses what is in flight", "[transport]") {
  boost::asio::io_context io;
  qf::InprocNetwork net(io.get_executor());
  qf::LinkFaults faults;
  faults.delay = 20ms;
  faults.drop_if = [](const qf::v1::Envelope& e, qf::LinkDirection d) {
    return d == qf::LinkDirection::to_coordinator && e.message_id() % 2 == 0;
  };
  net.set_faults(faults);
  auto ends = connect(io, net, "a1");
  for (std::uint64_t i = 1; i <= 10; ++i) ends->agent->send(envelope(i));
  REQUIRE(run_until(io, [&] { return ends->at_coordinator.size() == 5; }));
  CHECK(net.stats().messages_dropped == 5);

  ends->coordinator->send(envelope(1));
  net.cut("a1");
  REQUIRE(run_until(io, [&] { return !ends->agent_closed.empty() && !ends->coordinator_closed.empty(); }));
  CHECK(ends->at_agent.empty());
  CHECK_FALSE(ends->agent->is_open());

  net.isolate("a1", true);
  std::optional<qf::error_code> refused;
  auto connector = net.connector("c", "a1");
  connector->connect([&](qf::error_code ec, std::shared_ptr<qf::Connection>) { refused = ec; });
  REQUIRE(run_until(io, [&] { return refused.has_value(); }));
  CHECK(*refused);
  net.isolate("a1", false);
  net.unlisten("c");
  refused.reset();
  connector->connect([&](qf::error_code ec, std::shared_ptr<qf::Connection>) { refused = ec; });
  REQUIRE(run_until(io, [&] { return refused.has_value(); }));
  CHECK(*refused);
}

TEST_CASE("random loss drops about the configured share of messages", "[transport]") {
  boost::asio::io_context io;
  qf::InprocNetwork net(io.get_executor(), 1234);
  qf::LinkFaults faults;
  faults.drop_probability = 0.2;
  net.set_faults(faults);
  auto ends = connect(io, net, "a1");
  for (std::uint64_t i = 1; i <= 1000; ++i) ends->agent->send(envelope(i));
  run_until(io, [] { return false; }, 100ms);
  CHECK(ends->at_coordinator.size() + net.stats().messages_dropped == 1000);
  CHECK(net.stats().messages_dropped > 120);
  CHECK(net.stats().messages_dropped < 280);
}
