// SPDX-License-Identifier: Apache-2.0
// A UDP relay between QUIC peers for tests: every client address gets its own upstream
// socket (the server sees distinct peers), and datagrams may be dropped, duplicated,
// reordered (held back a few milliseconds) or, while the link is cut, all lost.
#pragma once

#include <array>
#include <chrono>
#include <map>
#include <memory>
#include <random>
#include <string>

#include <utility>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/steady_timer.hpp>

namespace quartzflow::testing {

struct RelayFaults {
  double drop = 0;       ///< probability a datagram is lost
  double duplicate = 0;  ///< probability it is sent twice
  double reorder = 0;    ///< probability it is held back 1-20 ms (later ones overtake it)
  bool cut = false;      ///< every datagram is lost (both ways)
  bool mute_to_client = false;  ///< the client hears nothing (a peer that stopped reading)
};

struct RelayStats {
  std::uint64_t forwarded = 0, dropped = 0, duplicated = 0, reordered = 0;
};

class UdpRelay {
  using udp = boost::asio::ip::udp;

 public:
  UdpRelay(boost::asio::io_context& io, udp::endpoint upstream, std::uint64_t seed = 7)
      : io_(io), upstream_(upstream), front_(io, udp::endpoint(upstream.address(), 0)), random_(seed) {
    receive_front();
  }
  ~UdpRelay() { stop(); }

  std::uint16_t port() const { return front_.local_endpoint().port(); }
  void set_faults(RelayFaults faults) { faults_ = faults; }
  const RelayStats& stats() const { return stats_; }
  /// Sends `bytes` to every client as if the server had (a spoofed or corrupted datagram).
  void inject_to_clients(const std::string& bytes) {
    boost::system::error_code ignored;
    for (auto& [_, peer] : peers_) front_.send_to(boost::asio::buffer(bytes), peer->client, 0, ignored);
  }
  /// The same towards the server, from each client's upstream socket.
  void inject_to_server(const std::string& bytes) {
    boost::system::error_code ignored;
    for (auto& [_, peer] : peers_) peer->socket.send_to(boost::asio::buffer(bytes), upstream_, 0, ignored);
  }
  void stop() {
    boost::system::error_code ec;
    front_.close(ec);
    for (auto& [_, peer] : peers_) peer->socket.close(ec);
    peers_.clear();
  }

 private:
  struct Peer {
    Peer(boost::asio::io_context& io, const udp::endpoint& local) : socket(io, local) {}
    udp::socket socket;
    udp::endpoint client;
    udp::endpoint from;
    std::array<char, 65536> buffer{};
  };

  bool chance(double p) { return p > 0 && std::uniform_real_distribution<double>(0, 1)(random_) < p; }

  void forward(udp::socket& socket, const udp::endpoint& to, const char* data, std::size_t size, bool to_client) {
    if (faults_.cut || (to_client && faults_.mute_to_client) || chance(faults_.drop)) {
      ++stats_.dropped;
      return;
    }
    auto bytes = std::make_shared<std::string>(data, size);
    const int copies = chance(faults_.duplicate) ? 2 : 1;
    if (copies == 2) ++stats_.duplicated;
    for (int i = 0; i < copies; ++i) {
      if (chance(faults_.reorder)) {
        ++stats_.reordered;
        auto timer = std::make_shared<boost::asio::steady_timer>(io_);
        timer->expires_after(std::chrono::milliseconds(1 + random_() % 20));
        timer->async_wait([timer, bytes, to, &socket](const boost::system::error_code& ec) {
          boost::system::error_code ignored;
          if (!ec && socket.is_open()) socket.send_to(boost::asio::buffer(*bytes), to, 0, ignored);
        });
        continue;
      }
      boost::system::error_code ignored;
      socket.send_to(boost::asio::buffer(*bytes), to, 0, ignored);
      ++stats_.forwarded;
    }
  }

  void receive_front() {
    front_.async_receive_from(boost::asio::buffer(buffer_), from_, [this](const boost::system::error_code& ec, std::size_t n) {
      if (ec) return;
      auto& peer = peers_[from_];
      if (!peer) {
        peer = std::make_shared<Peer>(io_, udp::endpoint(upstream_.address(), 0));
        peer->client = from_;
        receive_back(peer);
      }
      forward(peer->socket, upstream_, buffer_.data(), n, false);
      receive_front();
    });
  }

  void receive_back(const std::shared_ptr<Peer>& peer) {
    peer->socket.async_receive_from(boost::asio::buffer(peer->buffer), peer->from,
                                    [this, peer](const boost::system::error_code& ec, std::size_t n) {
                                      if (ec) return;
                                      forward(front_, peer->client, peer->buffer.data(), n, true);
                                      receive_back(peer);
                                    });
  }

  boost::asio::io_context& io_;
  udp::endpoint upstream_;
  udp::socket front_;
  std::array<char, 65536> buffer_{};
  udp::endpoint from_;
  std::map<udp::endpoint, std::shared_ptr<Peer>> peers_;
  RelayFaults faults_;
  RelayStats stats_;
  std::mt19937_64 random_;
};

}  // namespace quartzflow::testing
