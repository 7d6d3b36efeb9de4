// SPDX-License-Identifier: Apache-2.0
// The QUIC transport on loopback: mutual TLS, whole messages in order both ways, closing
// with a reason, refusals (wrong CA, wrong name, nobody listening, oversized messages, a
// peer that stops reading) and loss, duplication and reordering through a relay.
#include <optional>
#include <random>

#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>

#include <quartzflow/certs.hpp>
#include <quartzflow/quic.hpp>

#include "run_until.hpp"
#include "../integration/udp_relay.hpp"
#include "temp_dir.hpp"
#include "transport/quic/datagram_check.hpp"  // internal: the first look at a datagram
#include "transport/quic/framing.hpp"  // internal: the stream framing

namespace qf = quartzflow;
namespace asio = boost::asio;
using namespace std::chrono_literals;

using quartzflow::testing::run_until;

namespace {

/// A CA with a coordinator certificate for 127.0.0.1 and one agent certificate.
struct Pki {
  qf::testing::TempDir dir{"qf-quic"};
  qf::TlsFiles coordinator;
  qf::TlsFiles agent;

  Pki() {
    const std::string d = dir.path().string();
    qf::create_ca(d);
    auto server = qf::issue_certificate(d, {qf::CertificateKind::coordinator, "127.0.0.1", {}, 30});
    auto client = qf::issue_certificate(d, {qf::CertificateKind::agent, "agent-1", {}, 30});
    coordinator = {d + "/ca.pem", server.cert_file, server.key_file};
    agent = {d + "/ca.pem", client.cert_file, client.key_file};
  }
};

/// What one end saw.
struct End {
  std::shared_ptr<qf::Connection> connection;
  std::vector<std::string> messages;
  std::optional<std::string> closed;
};

void attach(const std::shared_ptr<End>& end, std::shared_ptr<qf::Connection> connection) {
  end->connection = std::move(connection);
  std::weak_ptr<End> weak = end;  // the connection's handlers must not own what holds it
  end->connection->start({[weak](std::string m) {
                            if (auto e = weak.lock()) e->messages.push_back(std::move(m));
                          },
                          [weak](std::string why) {
                            if (auto e = weak.lock()) e->closed = std::move(why);
                          }});
}

struct Pair {
  asio::io_context io;
  Pki pki;
  std::unique_ptr<qf::QuicServer> server;
  std::shared_ptr<End> coordinator = std::make_shared<End>();
  std::shared_ptr<End> agent = std::make_shared<End>();
  std::unique_ptr<qf::QuicConnector> connector;
  qf::error_code connect_error;
  bool connect_done = false;

  explicit Pair(qf::QuicOptions server_options = {}) {
    server_options.tls = pki.coordinator;
    server = std::make_unique<qf::QuicServer>(io.get_executor(), server_options);
    std::string detail;
    REQUIRE_FALSE(server->listen("127.0.0.1", 0,
                                 [weak = std::weak_ptr<End>(coordinator)](std::shared_ptr<qf::Connection> c) {
                                   if (auto e = weak.lock()) attach(e, std::move(c));
                                 },
                                 detail));
    REQUIRE(server->port() != 0);
  }

  bool connect(qf::TlsFiles tls, std::uint16_t port = 0, std::string server_name = "127.0.0.1",
               qf::QuicOptions options = {}) {
    options.tls = std::move(tls);
    connector = std::make_unique<qf::QuicConnector>(io.get_executor(), "127.0.0.1", port ? port : server->port(),
                                                    server_name, options);
    connect_done = false;
    connector->connect([this](qf::error_code ec, std::shared_ptr<qf::Connection> c) {
      connect_done = true;
      connect_error = ec;
      if (!ec) attach(agent, std::move(c));
    });
    REQUIRE(run_until(io, [&] { return connect_done; }));
    if (connect_error) return false;
    REQUIRE(run_until(io, [&] { return coordinator->connection != nullptr; }));
    return true;
  }
};

std::string pattern(std::size_t size, char seed) {
  std::string s(size, '\0');
  for (std::size_t i = 0; i < size; ++i) s[i] = static_cast<char>(seed + i * 31);
  return s;
}

}  // namespace

TEST_CASE("QUIC: mutual TLS, the agent's name, messages both ways in order", "[quic]") {
  Pair p;
  REQUIRE(p.connect(p.pki.agent));
  CHECK(p.coordinator->connection->peer_identity() == "agent-1");
  CHECK(p.agent->connection->peer_identity() == "127.0.0.1");
  CHECK(p.coordinator->connection->remote_address().rfind("127.0.0.1:", 0) == 0);

  // 300 messages of varied sizes, one of 1 MB (many packets, flow-control windows).
  std::vector<std::string> sent;
  for (int i = 0; i < 300; ++i) sent.push_back(pattern(i == 150 ? (1 << 20) : static_cast<std::size_t>(i * 7), 'a' + i % 20));
  for (const auto& m : sent) REQUIRE(p.agent->connection->send(m));
  REQUIRE(run_until(p.io, [&] { return p.coordinator->messages.size() == sent.size(); }));
  CHECK(p.coordinator->messages == sent);

  for (int i = 0; i < 50; ++i) REQUIRE(p.coordinator->connection->send("reply " + std::to_string(i)));
  REQUIRE(run_until(p.io, [&] { return p.agent->messages.size() == 50; }));
  CHECK(p.agent->messages.front() == "reply 0");
  CHECK(p.agent->messages.back() == "reply 49");
  CHECK(p.server->stats().connections_accepted == 1);

  SECTION("close reaches the peer with its reason; the closing end hears nothing") {
    p.coordinator->connection->close("coordinator going away");
    REQUIRE(run_until(p.io, [&] { return p.agent->closed.has_value(); }));
    CHECK(*p.agent->closed == "coordinator going away");
    CHECK_FALSE(p.agent->connection->is_open());
    CHECK_FALSE(p.coordinator->closed.has_value());
    CHECK_FALSE(p.coordinator->connection->send("late"));
  }
  SECTION("what was sent before a close arrives before the close (a Goodbye is never lost)") {
    for (int i = 0; i < 100; ++i) REQUIRE(p.agent->connection->send(pattern(8'000, 'g')));
    REQUIRE(p.agent->connection->send("goodbye"));
    p.agent->connection->close("agent stopping");
    CHECK_FALSE(p.agent->connection->is_open());
    CHECK_FALSE(p.agent->connection->send("after close"));
    REQUIRE(run_until(p.io, [&] { return p.coordinator->closed.has_value(); }));
    CHECK(p.coordinator->messages.size() == sent.size() + 101);
    CHECK(p.coordinator->messages.back() == "goodbye");
    CHECK(*p.coordinator->closed == "agent stopping");
    CHECK_FALSE(p.agent->closed.has_value());  // the closing end hears nothing
  }
  SECTION("stopping the server closes its connections") {
    p.server->close();
    REQUIRE(run_until(p.io, [&] { return p.agent->closed.has_value(); }));
    CHECK(*p.agent->closed == "the coordinator is shutting down");
  }
}

TEST_CASE("QUIC: peers without a certificate of the cluster CA are refused", "[quic]") {
  Pair p;
  qf::testing::TempDir other{"qf-quic-other"};
  const std::string d = other.path().string();
  qf::create_ca(d);
  auto foreign = qf::issue_certificate(d, {qf::CertificateKind::agent, "agent-1", {}, 30});

  SECTION("an agent certificate from another CA") {
    CHECK_FALSE(p.connect({p.pki.agent.ca_file, foreign.cert_file, foreign.key_file}));
    REQUIRE(run_until(p.io, [&] { return p.server->stats().handshakes_failed == 1; }));
    CHECK(p.server->stats().connections_accepted == 0);
    CHECK_FALSE(p.coordinator->connection);
    CHECK_FALSE(p.connector->last_error().empty());
  }
  SECTION("a coordinator the agent's CA did not sign") {
    CHECK_FALSE(p.connect({d + "/ca.pem", foreign.cert_file, foreign.key_file}));
    CHECK(p.connector->last_error().find("certificate") != std::string::npos);
    CHECK_FALSE(p.coordinator->connection);
  }
  SECTION("a coordinator certificate for another name") {
    CHECK_FALSE(p.connect(p.pki.agent, 0, "coordinator.example"));
    CHECK(p.connector->last_error().find("certificate") != std::string::npos);
  }
  // Nothing broke: a good agent still gets in.
  p.connect_done = false;
  REQUIRE(p.connect(p.pki.agent));
  CHECK(p.coordinator->connection->peer_identity() == "agent-1");
}

TEST_CASE("QUIC: nobody listening fails fast, bad TLS files name the field", "[quic]") {
  asio::io_context io;
  Pki pki;
  asio::ip::udp::socket probe(io, asio::ip::udp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const std::uint16_t closed_port = probe.local_endpoint().port();
  probe.close();
  qf::QuicOptions options;
  options.tls = pki.agent;
  qf::QuicConnector connector(io.get_executor(), "127.0.0.1", closed_port, "127.0.0.1", options);
  std::optional<qf::error_code> result;
  const auto started = std::chrono::steady_clock::now();
  connector.connect([&](qf::error_code ec, std::shared_ptr<qf::Connection>) { result = ec; });
  REQUIRE(run_until(io, [&] { return result.has_value(); }));
  CHECK(*result);
  CHECK(std::chrono::steady_clock::now() - started < 3s);  // ICMP, not the handshake timeout
  CHECK(connector.last_error().find("connection refused") != std::string::npos);

  qf::QuicOptions bad;
  bad.tls = pki.coordinator;
  bad.tls.key_file = pki.dir.file("missing.key");
  qf::QuicServer server(io.get_executor(), bad);
  std::string detail;
  CHECK(server.listen("127.0.0.1", 0, [](auto) {}, detail));
  CHECK(detail.find("tls.cert_file / tls.key_file") != std::string::npos);
  bad.tls.ca_file.clear();
  qf::QuicServer server2(io.get_executor(), bad);
  CHECK(server2.listen("127.0.0.1", 0, [](auto) {}, detail));
  CHECK(detail == "tls.ca_file: is required (mutual TLS)");
  bad.tls = pki.coordinator;
  qf::QuicServer server3(io.get_executor(), bad);
  CHECK(server3.listen("not-an-ip", 0, [](auto) {}, detail));
  CHECK(detail.find("not-an-ip") != std::string::npos);
}

TEST_CASE("QUIC: an oversized message closes the connection with the reason", "[quic]") {
  qf::QuicOptions server_options;
  server_options.max_message_bytes = 64 * 1024;
  Pair p(server_options);
  qf::QuicOptions client_options;
  client_options.max_message_bytes = 1 << 20;
  REQUIRE(p.connect(p.pki.agent, 0, "127.0.0.1", client_options));
  REQUIRE(p.agent->connection->send("fine"));
  REQUIRE(p.agent->connection->send(std::string(100 * 1024, 'x')));
  REQUIRE(run_until(p.io, [&] { return p.agent->closed.has_value() && p.coordinator->closed.has_value(); }));
  CHECK(p.coordinator->messages == std::vector<std::string>{"fine"});
  CHECK(p.coordinator->closed->find("exceeds the limit") != std::string::npos);
  CHECK(p.agent->closed->find("exceeds the limit") != std::string::npos);
}

TEST_CASE("QUIC: a peer that stops reading is dropped instead of buffered without bound", "[quic]") {
  qf::QuicOptions server_options;
  server_options.max_send_buffer_bytes = 512 * 1024;
  Pair p(server_options);
  qf::testing::UdpRelay relay(p.io, {asio::ip::make_address("127.0.0.1"), p.server->port()});
  REQUIRE(p.connect(p.pki.agent, relay.port()));
  relay.set_faults({0, 0, 0, false, true});  // the agent hears nothing more: nothing is acknowledged
  bool refused = false;
  for (int i = 0; i < 200 && !refused; ++i) refused = !p.coordinator->connection->send(std::string(16 * 1024, 'y'));
  CHECK(refused);
  REQUIRE(run_until(p.io, [&] { return p.coordinator->closed.has_value(); }));
  CHECK(p.coordinator->closed->find("peer not reading") != std::string::npos);
}

TEST_CASE("QUIC: 5 % loss, duplication and reordering and a cut link lose nothing", "[quic]") {
  Pair p;
  qf::testing::UdpRelay relay(p.io, {asio::ip::make_address("127.0.0.1"), p.server->port()}, 11);
  relay.set_faults({0.05, 0.05, 0.05, false, false});
  REQUIRE(p.connect(p.pki.agent, relay.port()));
  std::vector<std::string> up, down;
  for (int i = 0; i < 400; ++i) {
    up.push_back("up " + std::to_string(i) + std::string(static_cast<std::size_t>(i % 50) * 40, 'u'));
    down.push_back("down " + std::to_string(i));
  }
  for (int i = 0; i < 200; ++i) {
    REQUIRE(p.agent->connection->send(up[i]));
    REQUIRE(p.coordinator->connection->send(down[i]));
  }
  REQUIRE(run_until(p.io, [&] { return p.coordinator->messages.size() == 200 && p.agent->messages.size() == 200; }));
  // Cut for a second: what is sent meanwhile arrives after the link heals.
  relay.set_faults({0.05, 0.05, 0.05, true, false});
  for (int i = 200; i < 400; ++i) {
    REQUIRE(p.agent->connection->send(up[i]));
    REQUIRE(p.coordinator->connection->send(down[i]));
  }
  run_until(p.io, [] { return false; }, 1s);
  relay.set_faults({0.05, 0.05, 0.05, false, false});
  REQUIRE(run_until(p.io, [&] { return p.coordinator->messages.size() == 400 && p.agent->messages.size() == 400; }, 20s));
  CHECK(p.coordinator->messages == up);
  CHECK(p.agent->messages == down);
  CHECK(relay.stats().dropped > 0);
  CHECK(relay.stats().duplicated > 0);
  CHECK(relay.stats().reordered > 0);
  CHECK_FALSE(p.agent->closed.has_value());
}

TEST_CASE("QUIC framing: varint length prefixes split anywhere, limits enforced", "[quic]") {
  using qf::quic::FrameReader;
  std::string stream;
  const std::vector<std::string> messages{"", "a", std::string(127, 'b'), std::string(128, 'c'), std::string(70'000, 'd')};
  for (const auto& m : messages) stream += qf::quic::frame_message(m);
  SECTION("byte by byte") {
    FrameReader reader(1 << 20);
    std::vector<std::string> out;
    for (char c : stream) REQUIRE(reader.feed(reinterpret_cast<const std::uint8_t*>(&c), 1, out));
    CHECK(out == messages);
    CHECK(reader.buffered() == 0);
  }
  SECTION("all at once") {
    FrameReader reader(1 << 20);
    std::vector<std::string> out;
    REQUIRE(reader.feed(reinterpret_cast<const std::uint8_t*>(stream.data()), stream.size(), out));
    CHECK(out == messages);
  }
  SECTION("a length over the limit is refused before the body arrives") {
    FrameReader reader(1000);
    std::vector<std::string> out;
    const std::string framed = qf::quic::frame_message(std::string(1001, 'x')).substr(0, 3);
    CHECK_FALSE(reader.feed(reinterpret_cast<const std::uint8_t*>(framed.data()), framed.size(), out));
    CHECK(reader.error() == "message of 1001 bytes exceeds the limit of 1000");
    CHECK_FALSE(reader.feed(reinterpret_cast<const std::uint8_t*>("\x01x"), 2, out));  // stays refused
  }
  SECTION("a prefix longer than a 64-bit varint is malformed") {
    FrameReader reader(1000);
    std::vector<std::string> out;
    const std::string endless(12, '\x80');
    CHECK_FALSE(reader.feed(reinterpret_cast<const std::uint8_t*>(endless.data()), endless.size(), out));
    CHECK(reader.error() == "malformed length prefix");
  }
}

TEST_CASE("QUIC: a flood of garbage and half-open handshakes leaves the server serving", "[quic]") {
  qf::QuicOptions server_options;
  server_options.max_connections = 20;
  server_options.max_handshakes = 10;
  server_options.handshake_timeout = 1s;
  Pair p(server_options);
  asio::ip::udp::socket flooder(p.io, asio::ip::udp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const asio::ip::udp::endpoint target(asio::ip::make_address("127.0.0.1"), p.server->port());
  std::mt19937_64 random(5);
  const auto bytes = [&](std::size_t n) {
    std::string s(n, '\0');
    for (auto& c : s) c = static_cast<char>(random());
    return s;
  };
  // Garbage of every size, then Initial packets (long header, version 1, 1200 bytes) whose
  // contents cannot be decrypted: each may start a connection that never completes.
  for (int i = 0; i < 2000; ++i) flooder.send_to(asio::buffer(bytes(1 + random() % 1400)), target);
  for (int i = 0; i < 200; ++i) {
    std::string initial = "\xc3\x00\x00\x00\x01";
    initial += '\x12' + bytes(18) + '\x08' + bytes(8) + '\x00';  // DCID, SCID, no token
    const std::size_t length = 1200 - initial.size() - 2;
    initial += static_cast<char>(0x40 | (length >> 8));
    initial += static_cast<char>(length & 0xff);
    initial += bytes(length);
    flooder.send_to(asio::buffer(initial), target);
    if (i % 20 == 0) p.io.poll();
  }
  run_until(p.io, [] { return false; }, 200ms);
  CHECK(p.server->stats().connections_open <= server_options.max_handshakes);
  // Half-open connections end with the handshake timeout; a real agent then gets in.
  REQUIRE(run_until(p.io, [&] { return p.server->stats().connections_open == 0; }, 5s));
  REQUIRE(p.connect(p.pki.agent));
  CHECK(p.coordinator->connection->peer_identity() == "agent-1");
  REQUIRE(p.agent->connection->send("still here"));
  REQUIRE(run_until(p.io, [&] { return p.coordinator->messages.size() == 1; }));
  CHECK(p.server->stats().connections_accepted == 1);
}

TEST_CASE("QUIC: empty and truncated datagrams neither crash the server nor end live connections", "[quic]") {
  Pair p;
  qf::testing::UdpRelay relay(p.io, {asio::ip::make_address("127.0.0.1"), p.server->port()}, 3);
  asio::ip::udp::socket stranger(p.io, asio::ip::udp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const asio::ip::udp::endpoint target(asio::ip::make_address("127.0.0.1"), p.server->port());
  // The report: two empty datagrams a second apart aborted qf-coordinator in
  // ngtcp2_pkt_decode_version_cid. Then every prefix of a long header, and headers whose
  // connection id lengths point past the end.
  stranger.send_to(asio::buffer(std::string()), target);
  run_until(p.io, [] { return false; }, 1s);
  stranger.send_to(asio::buffer(std::string()), target);
  const std::string long_header = std::string("\xc3\x00\x00\x00\x01\x12", 6) + std::string(18, 'd') + "\x08" + std::string(8, 's');
  for (std::size_t n = 1; n < long_header.size(); ++n) stranger.send_to(asio::buffer(long_header.substr(0, n)), target);
  stranger.send_to(asio::buffer(std::string("\xc3\x00\x00\x00\x01\xff", 6)), target);
  stranger.send_to(asio::buffer(std::string("\xc3\x00\x00\x00\x01\x00\xff", 7)), target);
  run_until(p.io, [] { return false; }, 200ms);
  CHECK(p.server->stats().datagrams_malformed >= long_header.size() + 3);

  // A live connection through the relay: empty and short datagrams injected both ways,
  // as a spoofing stranger could, end nothing.
  REQUIRE(p.connect(p.pki.agent, relay.port()));
  for (std::size_t n = 0; n < 40; ++n) {
    relay.inject_to_clients(std::string(n, '\x40'));
    relay.inject_to_server(std::string(n, '\x40'));
  }
  REQUIRE(p.agent->connection->send("after the noise"));
  REQUIRE(p.coordinator->connection->send("heard"));
  REQUIRE(run_until(p.io, [&] { return p.coordinator->messages.size() == 1 && p.agent->messages.size() == 1; }));
  CHECK_FALSE(p.agent->closed.has_value());
  CHECK_FALSE(p.coordinator->closed.has_value());
}

TEST_CASE("QUIC datagram check: only what a QUIC header can hold goes to ngtcp2", "[quic]") {
  using qf::quic::datagram_problem;
  const auto check = [](const std::string& bytes) {
    return datagram_problem({reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size()});
  };
  CHECK(check("") != nullptr);
  // Short header: flags, our 18-byte connection id, then at least 20 bytes to sample.
  CHECK(check(std::string(1 + 18 + 19, '\x40')) != nullptr);
  CHECK(check(std::string(1 + 18 + 20, '\x40')) == nullptr);
  // Long header: a DCID length of 21 is refused, 20 accepted when the bytes are there.
  const std::string version("\xc3\x00\x00\x00\x01", 5);
  CHECK(check(version + '\x15' + std::string(21, 'd') + '\x00') != nullptr);
  CHECK(check(version + '\x14' + std::string(20, 'd') + '\x00') == nullptr);
  CHECK(check(version + '\x14' + std::string(20, 'd')) != nullptr);
  CHECK(check(version + '\x00' + '\x15' + std::string(21, 's')) != nullptr);
  CHECK(check(version + '\x00' + '\x08' + std::string(7, 's')) != nullptr);
  CHECK(check(version + '\x00' + '\x08' + std::string(8, 's')) == nullptr);
}
