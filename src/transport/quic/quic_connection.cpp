// SPDX-License-Identifier: Apache-2.0
#include "quic_connection.hpp"

#include "datagram_check.hpp"

#include <algorithm>
#include <array>
#include <cstring>

#include <boost/asio/post.hpp>
#include <fmt/format.h>
#include <gnutls/crypto.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>

#include <quartzflow/log.hpp>

namespace quartzflow::quic {

namespace asio = boost::asio;

namespace {

constexpr std::size_t k_max_datagram = 1452;
constexpr std::size_t k_max_datagrams_per_write = 64;
// Application close codes on the wire (our own space; 0 = closed normally).
constexpr std::uint64_t k_app_closed = 0;
constexpr std::uint64_t k_app_protocol_error = 1;

std::uint64_t to_ns(std::chrono::milliseconds ms) { return static_cast<std::uint64_t>(ms.count()) * NGTCP2_MILLISECONDS; }

std::string cid_key(const std::uint8_t* data, std::size_t size) { return std::string(reinterpret_cast<const char*>(data), size); }

void random_bytes(std::uint8_t* data, std::size_t size) { gnutls_rnd(GNUTLS_RND_RANDOM, data, size); }

}  // namespace

std::string endpoint_text(const udp::endpoint& e) {
  return e.address().is_v6() ? fmt::format("[{}]:{}", e.address().to_string(), e.port())
                             : fmt::format("{}:{}", e.address().to_string(), e.port());
}

ngtcp2_tstamp now_ns() {
  return static_cast<ngtcp2_tstamp>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

QuicConnection::QuicConnection(asio::any_io_executor executor, const QuicOptions& options,
                               std::shared_ptr<TlsCredentials> credentials)
    : executor_(executor), options_(options), credentials_(std::move(credentials)), timer_(executor), reader_(options.max_message_bytes) {
  conn_ref_.get_conn = &QuicConnection::get_conn;
  conn_ref_.user_data = this;
}

QuicConnection::~QuicConnection() {
  if (conn_) ngtcp2_conn_del(conn_);
  if (tls_) gnutls_deinit(tls_);
}

ngtcp2_conn* QuicConnection::get_conn(ngtcp2_crypto_conn_ref* ref) {
  return static_cast<QuicConnection*>(ref->user_data)->conn_;
}

ngtcp2_callbacks QuicConnection::callbacks(bool server) {
  ngtcp2_callbacks cb{};
  if (server) {
    cb.recv_client_initial = ngtcp2_crypto_recv_client_initial_cb;
  } else {
    cb.client_initial = ngtcp2_crypto_client_initial_cb;
    cb.recv_retry = ngtcp2_crypto_recv_retry_cb;
  }
  cb.recv_crypto_data = ngtcp2_crypto_recv_crypto_data_cb;
  cb.encrypt = ngtcp2_crypto_encrypt_cb;
  cb.decrypt = ngtcp2_crypto_decrypt_cb;
  cb.hp_mask = ngtcp2_crypto_hp_mask_cb;
  cb.update_key = ngtcp2_crypto_update_key_cb;
  cb.delete_crypto_aead_ctx = ngtcp2_crypto_delete_crypto_aead_ctx_cb;
  cb.delete_crypto_cipher_ctx = ngtcp2_crypto_delete_crypto_cipher_ctx_cb;
  cb.get_path_challenge_data = ngtcp2_crypto_get_path_challenge_data_cb;
  cb.version_negotiation = ngtcp2_crypto_version_negotiation_cb;
  cb.rand = [](std::uint8_t* dest, std::size_t size, const ngtcp2_rand_ctx*) { random_bytes(dest, size); };
  cb.get_new_connection_id = &QuicConnection::on_new_connection_id;
  cb.remove_connection_id = &QuicConnection::on_remove_connection_id;
  cb.recv_stream_data = &QuicConnection::on_recv_stream_data;
  cb.acked_stream_data_offset = &QuicConnection::on_acked_stream_data;
  cb.stream_close = &QuicConnection::on_stream_close;
  cb.handshake_completed = &QuicConnection::on_handshake_completed;
  cb.handshake_confirmed = &QuicConnection::on_handshake_confirmed;
  return cb;
}

namespace {

ngtcp2_cid random_cid() {
  ngtcp2_cid cid{};
  cid.datalen = k_connection_id_length;
  random_bytes(cid.data, cid.datalen);
  return cid;
}

/// The path between two endpoints (ngtcp2 copies the addresses it keeps).
ngtcp2_path path_of(udp::endpoint& local, udp::endpoint& remote) {
  return {{local.data(), static_cast<ngtcp2_socklen>(local.size())},
          {remote.data(), static_cast<ngtcp2_socklen>(remote.size())},
          nullptr};
}

void fill_settings(ngtcp2_settings& settings, const QuicOptions& options) {
  ngtcp2_settings_default(&settings);
  settings.initial_ts = now_ns();
  settings.handshake_timeout = to_ns(options.handshake_timeout);
  settings.initial_rtt = 100 * NGTCP2_MILLISECONDS;
}

void fill_params(ngtcp2_transport_params& params, const QuicOptions& options, bool server) {
  ngtcp2_transport_params_default(&params);
  // The agent opens the control stream; the coordinator opens none.
  params.initial_max_streams_bidi = server ? 4 : 0;
  params.initial_max_streams_uni = 0;
  params.initial_max_stream_data_bidi_local = 256 * 1024;
  params.initial_max_stream_data_bidi_remote = 256 * 1024;
  params.initial_max_data = 1024 * 1024;
  params.max_idle_timeout = to_ns(options.idle_timeout);
  params.disable_active_migration = 1;
}

}  // namespace

bool QuicConnection::init_client(const udp::endpoint& local, const udp::endpoint& remote, const std::string& server_name,
                                 std::string& detail) {
  local_ = local;
  remote_ = remote;
  const ngtcp2_cid dcid = random_cid();
  const ngtcp2_cid scid = random_cid();
  const ngtcp2_path path = path_of(local_, remote_);
  ngtcp2_settings settings;
  fill_settings(settings, options_);
  ngtcp2_transport_params params;
  fill_params(params, options_, false);
  const ngtcp2_callbacks cb = callbacks(false);
  ngtcp2_conn* conn = nullptr;
  if (int rv = ngtcp2_conn_client_new(&conn, &dcid, &scid, &path, NGTCP2_PROTO_VER_V1, &cb, &settings, &params, nullptr,
                                      this);
      rv != 0) {
    detail = fmt::format("QUIC client: {}", ngtcp2_strerror(rv));
    return false;
  }
  if (!finish_init(conn, server_name, detail)) return false;
  // Heartbeats keep the session busy; PINGs cover a heartbeat period longer than the idle timeout.
  ngtcp2_conn_set_keep_alive_timeout(
      conn_, options_.keep_alive.count() > 0 ? to_ns(options_.keep_alive) : to_ns(options_.idle_timeout) / 3);
  write();  // a failure from here on reaches the handshake_done hook
  return true;
}

bool QuicConnection::init_server(const udp::endpoint& local, const udp::endpoint& remote, const ngtcp2_pkt_hd& hd,
                                 std::string& detail) {
  local_ = local;
  remote_ = remote;
  const ngtcp2_cid scid = random_cid();
  const ngtcp2_path path = path_of(local_, remote_);
  ngtcp2_settings settings;
  fill_settings(settings, options_);
  ngtcp2_transport_params params;
  fill_params(params, options_, true);
  params.original_dcid = hd.dcid;
  params.stateless_reset_token_present = 1;
  random_bytes(params.stateless_reset_token, sizeof params.stateless_reset_token);
  const ngtcp2_callbacks cb = callbacks(true);
  ngtcp2_conn* conn = nullptr;
  if (int rv = ngtcp2_conn_server_new(&conn, &hd.scid, &scid, &path, hd.version, &cb, &settings, &params, nullptr, this);
      rv != 0) {
    detail = fmt::format("QUIC server: {}", ngtcp2_strerror(rv));
    return false;
  }
  if (!finish_init(conn, {}, detail)) return false;
  for (const ngtcp2_cid* cid : {static_cast<const ngtcp2_cid*>(&scid), &hd.dcid}) {
    routed_cids_.push_back(cid_key(cid->data, cid->datalen));
    if (hooks_.route) hooks_.route(routed_cids_.back(), true);
  }
  return true;
}

bool QuicConnection::finish_init(ngtcp2_conn* conn, const std::string& server_name, std::string& detail) {
  conn_ = conn;
  server_name_ = server_name;  // "[::1]" names the address ::1
  if (server_name_.size() > 2 && server_name_.front() == '[' && server_name_.back() == ']')
    server_name_ = server_name_.substr(1, server_name_.size() - 2);
  tls_ = make_tls_session(ngtcp2_conn_is_server(conn) ? TlsRole::server : TlsRole::client, *credentials_, server_name_,
                          &conn_ref_, detail);
  if (!tls_) return false;
  ngtcp2_conn_set_tls_native_handle(conn_, tls_);
  return true;
}

std::string QuicConnection::remote_address() const { return endpoint_text(remote_); }

// ---- ngtcp2 callbacks: record what happened; act after read_pkt returns ----

int QuicConnection::on_handshake_completed(ngtcp2_conn* conn, void* user) {
  auto* self = static_cast<QuicConnection*>(user);
  self->identity_ = peer_common_name(self->tls_);
  self->certificate_sha256_ = quic::peer_certificate_sha256(self->tls_);
  // The client waits for confirmation: in TLS 1.3 its side completes before the server
  // has checked the client's certificate.
  if (ngtcp2_conn_is_server(conn)) self->state_ = State::established;
  return 0;
}

int QuicConnection::on_handshake_confirmed(ngtcp2_conn* conn, void* user) {
  auto* self = static_cast<QuicConnection*>(user);
  if (ngtcp2_conn_is_server(conn)) return 0;
  if (int rv = ngtcp2_conn_open_bidi_stream(conn, &self->stream_id_, nullptr); rv != 0) {
    self->fatal_ = fmt::format("cannot open the control stream: {}", ngtcp2_strerror(rv));
    return 0;
  }
  self->state_ = State::established;
  return 0;
}

int QuicConnection::on_recv_stream_data(ngtcp2_conn* conn, std::uint32_t, std::int64_t stream_id, std::uint64_t,
                                        const std::uint8_t* data, std::size_t size, void* user, void*) {
  auto* self = static_cast<QuicConnection*>(user);
  // The credit comes back at once: messages are handed to the user as soon as they are whole.
  ngtcp2_conn_extend_max_stream_offset(conn, stream_id, size);
  ngtcp2_conn_extend_max_offset(conn, size);
  if (self->stream_id_ < 0 && ngtcp2_is_bidi_stream(stream_id) && !ngtcp2_conn_is_local_stream(conn, stream_id))
    self->stream_id_ = stream_id;
  if (stream_id != self->stream_id_ || !self->fatal_.empty()) return 0;  // extra streams are not used yet
  if (!self->reader_.feed(data, size, self->inbox_)) self->fatal_ = self->reader_.error();
  return 0;
}

int QuicConnection::on_acked_stream_data(ngtcp2_conn*, std::int64_t stream_id, std::uint64_t, std::uint64_t size,
                                         void* user, void*) {
  auto* self = static_cast<QuicConnection*>(user);
  if (stream_id != self->stream_id_) return 0;
  // Acknowledgements come in stream order: whole messages at the front can go.
  self->queued_bytes_ -= std::min<std::size_t>(size, self->queued_bytes_);
  std::size_t remaining = size;
  while (remaining > 0 && !self->send_queue_.empty()) {
    const std::size_t left_in_front = self->send_queue_.front().size() - self->acked_in_front_;
    if (remaining < left_in_front) {
      self->acked_in_front_ += remaining;
      break;
    }
    remaining -= left_in_front;
    self->send_queue_.pop_front();
    self->acked_in_front_ = 0;
    if (self->unsent_chunk_ > 0) --self->unsent_chunk_;
  }
  return 0;
}

int QuicConnection::on_stream_close(ngtcp2_conn*, std::uint32_t, std::int64_t stream_id, std::uint64_t, void* user,
                                    void*) {
  auto* self = static_cast<QuicConnection*>(user);
  if (stream_id == self->stream_id_ && self->fatal_.empty()) self->fatal_ = "the peer closed the control stream";
  return 0;
}

int QuicConnection::on_new_connection_id(ngtcp2_conn*, ngtcp2_cid* cid, std::uint8_t* token, std::size_t cidlen,
                                         void* user) {
  auto* self = static_cast<QuicConnection*>(user);
  random_bytes(cid->data, cidlen);
  cid->datalen = cidlen;
  random_bytes(token, NGTCP2_STATELESS_RESET_TOKENLEN);
  if (self->hooks_.route) {
    self->routed_cids_.push_back(cid_key(cid->data, cid->datalen));
    self->hooks_.route(self->routed_cids_.back(), true);
  }
  return 0;
}

int QuicConnection::on_remove_connection_id(ngtcp2_conn*, const ngtcp2_cid* cid, void* user) {
  auto* self = static_cast<QuicConnection*>(user);
  if (!self->hooks_.route) return 0;
  const std::string key = cid_key(cid->data, cid->datalen);
  std::erase(self->routed_cids_, key);
  self->hooks_.route(key, false);
  return 0;
}

// ---- input ----

void QuicConnection::on_datagram(const udp::endpoint& local, const udp::endpoint& from, const std::uint8_t* data,
                                 std::size_t size) {
  if (state_ == State::gone) return;
  // Anybody can send a datagram to our address; one that is not shaped like a packet must
  // neither reach ngtcp2's asserts nor end the connection (read_pkt fails on an empty one).
  if (datagram_problem({data, size}) != nullptr) return;
  auto keep = shared_from_this();
  if (state_ == State::closing) {
    // RFC 9000 10.2.1: answer a peer that did not hear our close, a few times.
    if (!close_packet_.empty() && close_repeats_++ < 4 && hooks_.send)
      hooks_.send(remote_, {reinterpret_cast<const std::uint8_t*>(close_packet_.data()), close_packet_.size()});
    return;
  }
  udp::endpoint local_copy = local;
  udp::endpoint from_copy = from;
  const ngtcp2_path path = path_of(local_copy, from_copy);
  ngtcp2_pkt_info info{};
  const int rv = ngtcp2_conn_read_pkt(conn_, &path, &info, data, size, now_ns());
  if (rv != 0) {
    if (rv == NGTCP2_ERR_DRAINING) {
      ngtcp2_connection_close_error error{};
      ngtcp2_conn_get_connection_close_error(conn_, &error);
      std::string reason(reinterpret_cast<const char*>(error.reason), error.reasonlen);
      if (error.type == NGTCP2_CONNECTION_CLOSE_ERROR_CODE_TYPE_TRANSPORT && error.error_code >= NGTCP2_CRYPTO_ERROR) {
        // Any peer may send any code: GnuTLS has no name for most of them.
        const char* alert = error.error_code <= NGTCP2_CRYPTO_ERROR + 0xff
                                ? gnutls_alert_get_name(static_cast<gnutls_alert_description_t>(error.error_code & 0xff))
                                : nullptr;
        reason = alert ? fmt::format("the peer refused the TLS handshake ({})", alert)
                       : fmt::format("closed by the peer (transport error 0x{:x})", error.error_code);
      }
      return broken(reason.empty() ? "closed by the peer" : reason, false);
    }
    if (rv == NGTCP2_ERR_DROP_CONN || rv == NGTCP2_ERR_RETRY) return broken("connection dropped", false);
    if (rv == NGTCP2_ERR_CRYPTO || state_ == State::handshaking) return broken(handshake_failure(tls_, rv), true);
    return broken(fmt::format("QUIC error: {}", ngtcp2_strerror(rv)), true);
  }
  // The peer's address may change (NAT rebinding); ngtcp2 validates it, we follow.
  if (const ngtcp2_path* current = ngtcp2_conn_get_path(conn_); current->remote.addrlen <= sizeof(sockaddr_in6)) {
    std::memcpy(remote_.data(), current->remote.addr, current->remote.addrlen);
    remote_.resize(current->remote.addrlen);
  }
  after_read();
}

void QuicConnection::after_read() {
  if (!fatal_.empty()) return broken(fatal_, true, k_app_protocol_error);
  if (state_ == State::flushing && (queued_bytes_ == 0 || now_ns() >= flush_deadline_)) return send_close();
  if (state_ == State::established && !handshake_reported_) {
    handshake_reported_ = true;
    auto handshake_done = hooks_.handshake_done;  // the hook may release this connection
    if (handshake_done) handshake_done({});
    if (state_ != State::established) return;
  }
  if (!inbox_.empty() && started_ && !delivery_posted_) {
    delivery_posted_ = true;
    asio::post(executor_, [weak = weak_from_this()] {
      if (auto self = weak.lock()) self->deliver();
    });
  }
  write();
}

void QuicConnection::deliver() {
  delivery_posted_ = false;
  auto messages = std::move(inbox_);
  inbox_.clear();
  // Messages that arrived before the link broke are still delivered; none after our close.
  for (auto& message : messages) {
    if (user_closed_ || !handlers_.on_message) return;
    auto on_message = handlers_.on_message;  // the handler may replace or drop the handlers
    on_message(std::move(message));
  }
}

// ---- output ----

bool QuicConnection::send(std::string message) {
  if (state_ != State::established) return false;
  if (message.size() > options_.max_message_bytes) {
    logger()->error("QUIC {}: not sending a message of {} bytes (limit {})", remote_address(), message.size(),
                    options_.max_message_bytes);
    return false;
  }
  std::string framed = frame_message(message);
  if (queued_bytes_ + framed.size() > options_.max_send_buffer_bytes) {
    // Flow control holds our data: the peer does not read. Never buffer without bound.
    broken(fmt::format("peer not reading ({} bytes waiting)", queued_bytes_), true, k_app_protocol_error);
    return false;
  }
  queued_bytes_ += framed.size();
  send_queue_.push_back(std::move(framed));
  schedule_write();
  return true;
}

void QuicConnection::schedule_write() {
  if (write_scheduled_) return;
  write_scheduled_ = true;
  // Sends made in one handler turn leave in as few packets as possible.
  asio::post(executor_, [weak = weak_from_this()] {
    if (auto self = weak.lock()) {
      self->write_scheduled_ = false;
      self->write();
    }
  });
}

void QuicConnection::advance_unsent(std::size_t bytes) {
  while (bytes > 0 && unsent_chunk_ < send_queue_.size()) {
    const std::size_t left = send_queue_[unsent_chunk_].size() - unsent_offset_;
    if (bytes < left) {
      unsent_offset_ += bytes;
      return;
    }
    bytes -= left;
    ++unsent_chunk_;
    unsent_offset_ = 0;
  }
}

void QuicConnection::write() {
  if (state_ != State::handshaking && state_ != State::established && state_ != State::flushing) return;
  auto keep = shared_from_this();
  std::array<std::uint8_t, k_max_datagram> buffer;
  ngtcp2_path_storage storage;
  ngtcp2_path_storage_zero(&storage);
  ngtcp2_pkt_info info{};
  const ngtcp2_tstamp ts = now_ns();
  bool stream_blocked = false;
  for (std::size_t datagrams = 0; datagrams < k_max_datagrams_per_write;) {
    // One message piece per call (WRITE_MORE still packs several into a packet): ngtcp2
    // 0.12 leaks a stream frame with many pieces when a retransmission splits it below its
    // pool threshold (ngtcp2 issue 1244, fixed in 1.6).
    std::array<ngtcp2_vec, 1> vectors;
    std::size_t count = 0;
    std::int64_t stream = -1;
    if (stream_id_ >= 0 && !stream_blocked && (state_ == State::established || state_ == State::flushing)) {
      for (std::size_t i = unsent_chunk_; i < send_queue_.size() && count < vectors.size(); ++i) {
        const std::string& chunk = send_queue_[i];
        const std::size_t offset = i == unsent_chunk_ ? unsent_offset_ : 0;
        vectors[count++] = {reinterpret_cast<std::uint8_t*>(const_cast<char*>(chunk.data())) + offset,
                            chunk.size() - offset};
      }
      if (count > 0) stream = stream_id_;
    }
    ngtcp2_ssize accepted = -1;
    const ngtcp2_ssize n = ngtcp2_conn_writev_stream(conn_, &storage.path, &info, buffer.data(), buffer.size(),
                                                     &accepted, NGTCP2_WRITE_STREAM_FLAG_MORE, stream,
                                                     count > 0 ? vectors.data() : nullptr, count, ts);
    if (n < 0) {
      if (n == NGTCP2_ERR_STREAM_DATA_BLOCKED || n == NGTCP2_ERR_STREAM_SHUT_WR) {
        stream_blocked = true;
        continue;
      }
      if (n == NGTCP2_ERR_WRITE_MORE) {
        advance_unsent(static_cast<std::size_t>(accepted));
        continue;
      }
      return broken(fmt::format("QUIC write failed: {}", ngtcp2_strerror(static_cast<int>(n))), false);
    }
    if (accepted > 0) advance_unsent(static_cast<std::size_t>(accepted));
    if (n == 0) break;
    if (hooks_.send) hooks_.send(destination(storage.path), {buffer.data(), static_cast<std::size_t>(n)});
    ++datagrams;
  }
  ngtcp2_conn_update_pkt_tx_time(conn_, ts);
  arm_timer();
}

void QuicConnection::arm_timer() {
  ngtcp2_tstamp expiry = ngtcp2_conn_get_expiry(conn_);
  if (state_ == State::flushing) expiry = std::min(expiry, flush_deadline_);
  if (expiry == armed_expiry_) return;
  armed_expiry_ = expiry;
  if (expiry == UINT64_MAX) {
    timer_.cancel();
    return;
  }
  const ngtcp2_tstamp now = now_ns();
  const auto delay = std::chrono::nanoseconds(expiry > now ? expiry - now : 0);
  timer_.expires_after(delay);
  timer_.async_wait([weak = weak_from_this()](const error_code& ec) {
    if (ec) return;
    if (auto self = weak.lock()) self->on_timer();
  });
}

void QuicConnection::on_timer() {
  armed_expiry_ = 0;
  if (state_ != State::handshaking && state_ != State::established && state_ != State::flushing) return;
  auto keep = shared_from_this();
  if (state_ == State::flushing && now_ns() >= flush_deadline_) return send_close();
  const int rv = ngtcp2_conn_handle_expiry(conn_, now_ns());
  if (rv != 0) {
    if (rv == NGTCP2_ERR_IDLE_CLOSE) return broken("idle timeout: no packet from the peer", false);
    if (rv == NGTCP2_ERR_HANDSHAKE_TIMEOUT) return broken("handshake timeout", false);
    return broken(fmt::format("QUIC timer: {}", ngtcp2_strerror(rv)), true);
  }
  write();
}

// ---- ending ----

void QuicConnection::start(Handlers handlers) {
  handlers_ = std::move(handlers);
  started_ = true;
  if (!inbox_.empty() && !delivery_posted_) {
    delivery_posted_ = true;
    asio::post(executor_, [weak = weak_from_this()] {
      if (auto self = weak.lock()) self->deliver();
    });
  }
  if (!broken_reason_.empty() && handshake_reported_) notify_closed();  // it broke before start
}

void QuicConnection::close(std::string reason) {
  if (state_ != State::handshaking && state_ != State::established) return;
  auto keep = shared_from_this();
  user_closed_ = true;
  if (reason.size() > 200) reason.resize(200);
  close_reason_ = std::move(reason);
  write();
  if (state_ != State::established && state_ != State::handshaking) return;
  if (state_ == State::handshaking || queued_bytes_ == 0) return send_close();
  // What was sent before the close (a Goodbye, an error) arrives first: keep sending and
  // retransmitting until it is acknowledged, then close (at most 2 s).
  state_ = State::flushing;
  flush_deadline_ = now_ns() + 2 * NGTCP2_SECONDS;
  armed_expiry_ = 0;
  arm_timer();
}

void QuicConnection::close_now(std::string reason) {
  if (state_ == State::closing || state_ == State::gone) return;
  auto keep = shared_from_this();
  user_closed_ = true;
  if (reason.size() > 200) reason.resize(200);
  close_reason_ = std::move(reason);
  if (state_ != State::handshaking) write();  // what fits in this burst still goes out
  if (state_ != State::closing && state_ != State::gone) send_close();
}

void QuicConnection::send_close() {
  ngtcp2_connection_close_error error;
  ngtcp2_connection_close_error_default(&error);
  ngtcp2_connection_close_error_set_application_error(
      &error, k_app_closed, reinterpret_cast<const std::uint8_t*>(close_reason_.data()), close_reason_.size());
  write_close(error);
  enter_closing(std::chrono::milliseconds{1000});
}

void QuicConnection::write_close(const ngtcp2_connection_close_error& error) {
  if (!conn_ || ngtcp2_conn_is_in_closing_period(conn_) || ngtcp2_conn_is_in_draining_period(conn_)) return;
  std::array<std::uint8_t, k_max_datagram> buffer;
  ngtcp2_path_storage storage;
  ngtcp2_path_storage_zero(&storage);
  ngtcp2_pkt_info info{};
  const ngtcp2_ssize n =
      ngtcp2_conn_write_connection_close(conn_, &storage.path, &info, buffer.data(), buffer.size(), &error, now_ns());
  if (n <= 0) return;
  close_packet_.assign(reinterpret_cast<const char*>(buffer.data()), static_cast<std::size_t>(n));
  if (hooks_.send) hooks_.send(remote_, {buffer.data(), static_cast<std::size_t>(n)});
}

void QuicConnection::broken(std::string reason, bool send_close, std::uint64_t app_error) {
  if (state_ == State::closing || state_ == State::gone) return;
  if (send_close) {
    ngtcp2_connection_close_error error;
    ngtcp2_connection_close_error_default(&error);
    const auto* text = reinterpret_cast<const std::uint8_t*>(reason.data());
    const std::size_t length = std::min<std::size_t>(reason.size(), 200);
    if (state_ == State::handshaking && conn_ && ngtcp2_conn_get_tls_alert(conn_) != 0)
      ngtcp2_connection_close_error_set_transport_error_tls_alert(&error, ngtcp2_conn_get_tls_alert(conn_), text, length);
    else
      ngtcp2_connection_close_error_set_application_error(&error, app_error, text, length);
    write_close(error);
  }
  enter_closing(std::chrono::milliseconds{send_close ? 1000 : 0});
  broken_reason_ = reason.empty() ? "connection lost" : std::move(reason);
  if (!handshake_reported_) {
    handshake_reported_ = true;
    auto handshake_done = hooks_.handshake_done;  // the hook may release this connection
    if (handshake_done) handshake_done(broken_reason_);
    return;
  }
  if (started_) notify_closed();
}

void QuicConnection::notify_closed() {
  if (user_closed_ || closed_notified_) return;
  closed_notified_ = true;
  // Posted: never inline from send or close. Messages that came before go first.
  asio::post(executor_, [weak = weak_from_this()] {
    auto self = weak.lock();
    if (!self || self->user_closed_) return;
    self->deliver();
    if (self->user_closed_ || !self->handlers_.on_closed) return;
    auto on_closed = std::move(self->handlers_.on_closed);
    self->handlers_ = {};
    on_closed(self->broken_reason_);
  });
}

void QuicConnection::enter_closing(std::chrono::milliseconds linger) {
  state_ = State::closing;
  armed_expiry_ = 0;
  timer_.cancel();
  auto finish = [weak = weak_from_this()] {
    auto self = weak.lock();
    if (!self || self->state_ == State::gone) return;
    self->state_ = State::gone;
    if (self->hooks_.route)
      for (const auto& cid : self->routed_cids_) self->hooks_.route(cid, false);
    self->routed_cids_.clear();
    auto finished = self->hooks_.finished;
    if (finished) finished();
  };
  if (linger.count() == 0) return asio::post(executor_, finish);
  timer_.expires_after(linger);
  timer_.async_wait([finish](const error_code& ec) {
    if (!ec) finish();
  });
}

udp::endpoint QuicConnection::destination(const ngtcp2_path& path) const {
  if (path.remote.addrlen == 0 || path.remote.addrlen > sizeof(sockaddr_in6)) return remote_;
  udp::endpoint to;
  std::memcpy(to.data(), path.remote.addr, path.remote.addrlen);
  to.resize(path.remote.addrlen);
  return to;
}

void QuicConnection::abandon() {
  state_ = State::gone;
  timer_.cancel();
  handlers_ = {};
  hooks_ = {};
  routed_cids_.clear();
}

}  // namespace quartzflow::quic
