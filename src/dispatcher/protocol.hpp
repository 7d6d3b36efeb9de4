// SPDX-License-Identifier: Apache-2.0
// What both dispatcher sides share: envelope framing on a Connection, clocks.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <quartzflow/transport.hpp>
#include <quartzflow/v1/agent_protocol.pb.h>

#include "../common/clock.hpp"

namespace quartzflow::detail {

/// Numbers and sends the envelopes of one connection.
class EnvelopeWriter {
 public:
  explicit EnvelopeWriter(std::shared_ptr<Connection> connection) : connection_(std::move(connection)) {}

  /// Sends `envelope` (header filled in); returns its message id, 0 when the connection is closed.
  std::uint64_t send(v1::Envelope& envelope, std::uint64_t in_reply_to = 0) {
    if (!connection_ || !connection_->is_open()) return 0;
    const std::uint64_t id = next_id_++;
    envelope.set_protocol_version(k_protocol_version);
    envelope.set_message_id(id);
    envelope.set_in_reply_to(in_reply_to);
    envelope.set_sent_unix_ms(now_unix_ms());
    return connection_->send(envelope.SerializeAsString()) ? id : 0;
  }

  void error(v1::ProtocolErrorCode code, std::string message, bool fatal, std::uint64_t in_reply_to = 0) {
    v1::Envelope e;
    auto* err = e.mutable_error();
    err->set_code(code);
    err->set_message(std::move(message));
    err->set_fatal(fatal);
    send(e, in_reply_to);
  }

  void goodbye(v1::GoodbyeReason reason, std::string message) {
    v1::Envelope e;
    e.mutable_goodbye()->set_reason(reason);
    e.mutable_goodbye()->set_message(std::move(message));
    send(e);
  }

  Connection& connection() { return *connection_; }
  const std::shared_ptr<Connection>& connection_ptr() const { return connection_; }

 private:
  std::shared_ptr<Connection> connection_;
  std::uint64_t next_id_ = 1;
};

/// Decodes a received message; nullopt with `why` when it is not a valid Envelope of our version.
inline std::optional<v1::Envelope> decode_envelope(const std::string& message, std::size_t max_bytes,
                                                   v1::ProtocolErrorCode& code, std::string& why) {
  if (message.size() > max_bytes) {
    code = v1::PROTOCOL_ERROR_CODE_RESOURCE_EXHAUSTED;
    why = "message of " + std::to_string(message.size()) + " bytes exceeds the limit of " + std::to_string(max_bytes);
    return std::nullopt;
  }
  v1::Envelope envelope;
  if (!envelope.ParseFromString(message)) {
    code = v1::PROTOCOL_ERROR_CODE_MALFORMED;
    why = "the message is not a valid Envelope";
    return std::nullopt;
  }
  if (envelope.protocol_version() != k_protocol_version) {
    code = v1::PROTOCOL_ERROR_CODE_UNSUPPORTED_VERSION;
    why = "protocol_version " + std::to_string(envelope.protocol_version()) + " is not supported (this side speaks " +
          std::to_string(k_protocol_version) + ")";
    return std::nullopt;
  }
  if (envelope.body_case() == v1::Envelope::BODY_NOT_SET) {
    code = v1::PROTOCOL_ERROR_CODE_MALFORMED;
    why = "the Envelope carries no message";
    return std::nullopt;
  }
  return envelope;
}

}  // namespace quartzflow::detail
