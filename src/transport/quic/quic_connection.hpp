// SPDX-License-Identifier: Apache-2.0
// One QUIC connection (either end): ngtcp2 state, its TLS session, the control stream's
// send queue (kept until acknowledged: ngtcp2 does not copy stream data) and message
// reassembly, and the timer that drives retransmission and idle timeout.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <utility>
#include <boost/asio/ip/udp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include <quartzflow/quic.hpp>

#include "framing.hpp"
#include "quic_tls.hpp"

namespace quartzflow::quic {

using udp = boost::asio::ip::udp;

/// What the owner (server or connector) does for a connection.
struct ConnectionHooks {
  /// Sends one datagram to `to`.
  std::function<void(const udp::endpoint& to, std::span<const std::uint8_t>)> send;
  /// Server: a connection id now routes to this connection (`add`) or no longer does.
  std::function<void(const std::string& cid, bool add)> route;
  /// The handshake ended: authenticated (`detail` empty) or failed (`detail` says why).
  std::function<void(const std::string& detail)> handshake_done;
  /// The connection is finished with (closed and its closing period over): release it.
  std::function<void()> finished;
};

class QuicConnection final : public Connection, public std::enable_shared_from_this<QuicConnection> {
 public:
  QuicConnection(boost::asio::any_io_executor executor, const QuicOptions& options,
                 std::shared_ptr<TlsCredentials> credentials);
  ~QuicConnection() override;
  /// Set before init: the hooks usually need a weak reference to the connection itself.
  void set_hooks(ConnectionHooks hooks) { hooks_ = std::move(hooks); }

  /// Client: starts the handshake to `remote` from `local`. False with `detail` on failure.
  bool init_client(const udp::endpoint& local, const udp::endpoint& remote, const std::string& server_name,
                   std::string& detail);
  /// Server: takes the client's first Initial packet (decoded in `hd`).
  bool init_server(const udp::endpoint& local, const udp::endpoint& remote, const ngtcp2_pkt_hd& hd,
                   std::string& detail);
  /// A datagram for this connection.
  void on_datagram(const udp::endpoint& local, const udp::endpoint& from, const std::uint8_t* data, std::size_t size);
  /// Ends the connection without telling anyone (the owner is going away).
  void abandon();
  /// Closes at once, without waiting for queued data to be acknowledged (shutdown).
  void close_now(std::string reason);
  bool handshaking() const noexcept { return state_ == State::handshaking; }
  /// The path failed (e.g. ICMP unreachable): ends the connection as broken.
  void fail(std::string reason) { broken(std::move(reason), false); }
  bool handshake_completed() const noexcept { return state_ == State::established; }

  // Connection
  void start(Handlers handlers) override;
  bool send(std::string message) override;
  void close(std::string reason) override;
  bool is_open() const noexcept override { return state_ == State::established; }
  std::string remote_address() const override;
  std::string peer_identity() const override { return identity_; }
  std::string peer_certificate_sha256() const override { return certificate_sha256_; }

 private:
  /// flushing: closed by us, still sending what was queued before the close.
  enum class State { handshaking, established, flushing, closing, gone };

  static ngtcp2_conn* get_conn(ngtcp2_crypto_conn_ref* ref);
  static int on_recv_stream_data(ngtcp2_conn*, std::uint32_t flags, std::int64_t stream_id, std::uint64_t offset,
                                 const std::uint8_t* data, std::size_t size, void* user, void* stream_user);
  static int on_acked_stream_data(ngtcp2_conn*, std::int64_t stream_id, std::uint64_t offset, std::uint64_t size,
                                  void* user, void* stream_user);
  static int on_stream_close(ngtcp2_conn*, std::uint32_t flags, std::int64_t stream_id, std::uint64_t app_error,
                             void* user, void* stream_user);
  static int on_handshake_completed(ngtcp2_conn*, void* user);
  static int on_handshake_confirmed(ngtcp2_conn*, void* user);
  static int on_new_connection_id(ngtcp2_conn*, ngtcp2_cid* cid, std::uint8_t* token, std::size_t cidlen, void* user);
  static int on_remove_connection_id(ngtcp2_conn*, const ngtcp2_cid* cid, void* user);
  static ngtcp2_callbacks callbacks(bool server);

  bool finish_init(ngtcp2_conn* conn, const std::string& server_name, std::string& detail);
  void write();
  void schedule_write();
  void arm_timer();
  void on_timer();
  void after_read();
  /// The connection broke (peer closed, timeout, error): tell the user once, release.
  void broken(std::string reason, bool send_close, std::uint64_t app_error = 0);
  void notify_closed();
  void send_close();
  void write_close(const ngtcp2_connection_close_error& error);
  /// Where a datagram ngtcp2 wrote goes: the path it chose, else the peer's address.
  udp::endpoint destination(const ngtcp2_path& path) const;
  void enter_closing(std::chrono::milliseconds linger);
  void deliver();
  void advance_unsent(std::size_t bytes);

  boost::asio::any_io_executor executor_;
  QuicOptions options_;
  std::shared_ptr<TlsCredentials> credentials_;
  ConnectionHooks hooks_;
  State state_ = State::handshaking;
  ngtcp2_crypto_conn_ref conn_ref_{};
  ngtcp2_conn* conn_ = nullptr;
  gnutls_session_t tls_ = nullptr;
  udp::endpoint local_;
  udp::endpoint remote_;
  std::string identity_;
  std::string certificate_sha256_;
  std::string server_name_;  // the session keeps a pointer to it
  std::vector<std::string> routed_cids_;

  boost::asio::steady_timer timer_;
  ngtcp2_tstamp armed_expiry_ = 0;
  bool write_scheduled_ = false;

  std::int64_t stream_id_ = -1;
  std::deque<std::string> send_queue_;  // framed messages, kept until acknowledged
  std::size_t acked_in_front_ = 0;      // bytes of send_queue_.front() acknowledged
  std::size_t unsent_chunk_ = 0;        // index in send_queue_ of the next byte to send
  std::size_t unsent_offset_ = 0;
  std::size_t queued_bytes_ = 0;        // unacknowledged bytes
  FrameReader reader_;
  std::vector<std::string> inbox_;
  Handlers handlers_;
  bool started_ = false;
  bool delivery_posted_ = false;
  bool handshake_reported_ = false;
  std::string fatal_;                   // set inside callbacks, acted on after read_pkt
  std::string close_packet_;            // our CONNECTION_CLOSE, repeated while closing
  int close_repeats_ = 0;
  bool user_closed_ = false;            // close() was called: no handler runs any more
  bool closed_notified_ = false;
  std::string broken_reason_;           // why the link broke (for a start() that comes late)
  std::string close_reason_;
  ngtcp2_tstamp flush_deadline_ = 0;
};

/// Nanoseconds on the steady clock, ngtcp2's time base.
ngtcp2_tstamp now_ns();

/// "ip:port", IPv6 in brackets.
std::string endpoint_text(const udp::endpoint& endpoint);

}  // namespace quartzflow::quic
