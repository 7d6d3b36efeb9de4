// SPDX-License-Identifier: Apache-2.0
// Transport: how the dispatchers exchange encoded Envelopes. A Connection carries whole
// messages in order (a QUIC control stream, or the in-process link); the dispatchers never
// see sockets. The in-process network behaves like a network for tests: messages are
// encoded bytes, and links may delay them, drop them, or be cut.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <string_view>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/any_io_executor.hpp>

#include <quartzflow/error.hpp>
#include <quartzflow/v1/agent_protocol.pb.h>

namespace quartzflow {

/// Protocol version this library speaks (Envelope.protocol_version), on both sides.
inline constexpr std::uint32_t k_protocol_version = 1;

/**
 * One end of a message connection. Messages arrive whole and in the order they were sent;
 * each is one serialized `v1::Envelope`.
 * Thread safety: not thread-safe; handlers run on the connection's executor, never inline
 * from `send` or `close`.
 */
class Connection {
 public:
  struct Handlers {
    std::function<void(std::string message)> on_message;
    /// Once, when the peer closed or the link broke (not after our own `close`).
    std::function<void(std::string reason)> on_closed;
  };
  virtual ~Connection() = default;
  /// Starts delivering messages to `handlers`; messages that arrived before are kept.
  virtual void start(Handlers handlers) = 0;
  /// Queues a message; false (and the message is discarded) when the connection is closed.
  virtual bool send(std::string message) = 0;
  /// Closes both directions; the peer's `on_closed` gets `reason`.
  virtual void close(std::string reason) = 0;
  virtual bool is_open() const noexcept = 0;
  /// Who is at the other end (an address, or the in-process client name).
  virtual std::string remote_address() const = 0;
  /// Who the peer proved to be (its certificate's common name); empty when the transport
  /// does not authenticate peers (the in-process link).
  virtual std::string peer_identity() const { return {}; }
  /// SHA-256 (lower-case hex) of the peer's certificate (DER); empty without one.
  virtual std::string peer_certificate_sha256() const { return {}; }
};

using AcceptHandler = std::function<void(std::shared_ptr<Connection>)>;
using ConnectHandler = std::function<void(error_code, std::shared_ptr<Connection>)>;

/// How an agent reaches its coordinator; each `connect` makes a new connection.
class Connector {
 public:
  virtual ~Connector() = default;
  /// Completes (posted) with a connection, or with an error when nobody listens.
  virtual void connect(ConnectHandler handler) = 0;
  /**
   * The coordinator reached is a standby (several coordinators): the next `connect` should
   * try `address` (`host:port`, the leader's agent address) first, or, empty (no leader
   * known), the next coordinator. A connector with one destination ignores it.
   */
  virtual void redirect(std::string_view /*address*/) {}
};

/// Which way a message travels on an in-process link.
enum class LinkDirection { to_coordinator, to_agent };

/// Faults the in-process network injects into every link.
struct LinkFaults {
  std::chrono::milliseconds delay{0};  ///< added to each message (order is kept)
  double drop_probability = 0.0;       ///< each message is lost with this probability
  /// Drops the messages it returns true for (called with the decoded message).
  std::function<bool(const v1::Envelope&, LinkDirection)> drop_if;
};

/// Counters of the in-process network.
struct InprocNetworkStats {
  std::uint64_t messages_delivered = 0;
  std::uint64_t messages_dropped = 0;
  std::uint64_t connections = 0;
};

/**
 * An in-process network: a coordinator listens on an address, agents connect to it.
 * Thread safety: not thread-safe; use from its executor. Must outlive its connections'
 * use (connections hold a weak reference and behave as closed once it is gone).
 */
class InprocNetwork {
 public:
  explicit InprocNetwork(boost::asio::any_io_executor executor, std::uint64_t seed = 1);
  ~InprocNetwork();
  InprocNetwork(const InprocNetwork&) = delete;
  InprocNetwork& operator=(const InprocNetwork&) = delete;

  /// Accepts connections to `address` (replacing an earlier listener).
  void listen(const std::string& address, AcceptHandler accept);
  /// Stops accepting on `address` and breaks every connection made to it (a crash).
  void unlisten(const std::string& address);
  /// A connector that reaches `address` as `client_name`.
  std::unique_ptr<Connector> connector(std::string address, std::string client_name);
  /// Breaks every connection of `client_name` (both ends see on_closed).
  void cut(const std::string& client_name);
  /// While true, `client_name` cannot connect (and its links are cut).
  void isolate(const std::string& client_name, bool isolated);

  void set_faults(LinkFaults faults);
  InprocNetworkStats stats() const noexcept;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace quartzflow
