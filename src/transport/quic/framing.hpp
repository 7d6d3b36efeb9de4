// SPDX-License-Identifier: Apache-2.0
// Message framing on the control stream: each message is preceded by its length as a
// base-128 varint (protobuf's encoding), so a reader knows where one Envelope ends.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace quartzflow::quic {

/// The varint length prefix followed by the message.
inline std::string frame_message(std::string_view message) {
  std::string framed;
  framed.reserve(message.size() + 5);
  std::uint64_t length = message.size();
  do {
    auto byte = static_cast<unsigned char>(length & 0x7f);
    length >>= 7;
    if (length != 0) byte |= 0x80;
    framed.push_back(static_cast<char>(byte));
  } while (length != 0);
  framed.append(message);
  return framed;
}

/**
 * Reassembles messages from stream bytes that arrive in arbitrary pieces. A length above
 * `max_message_bytes` (or a prefix longer than a 64-bit varint) is an error: the stream
 * cannot be trusted after it.
 */
class FrameReader {
 public:
  explicit FrameReader(std::size_t max_message_bytes) : max_(max_message_bytes) {}

  /// Appends bytes and moves every complete message to `out`; false on a framing error
  /// (`error()` says why), after which the reader refuses everything.
  bool feed(const std::uint8_t* data, std::size_t size, std::vector<std::string>& out) {
    if (!error_.empty()) return false;
    buffer_.append(reinterpret_cast<const char*>(data), size);
    std::size_t pos = 0;
    for (;;) {
      std::uint64_t length = 0;
      std::size_t cursor = pos;
      int shift = 0;
      bool complete = false;
      while (cursor < buffer_.size()) {
        const auto byte = static_cast<unsigned char>(buffer_[cursor++]);
        length |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
        if ((byte & 0x80) == 0) {
          complete = true;
          break;
        }
        shift += 7;
        if (shift > 63) {
          error_ = "malformed length prefix";
          return false;
        }
      }
      if (!complete) break;
      if (length > max_) {
        error_ = "message of " + std::to_string(length) + " bytes exceeds the limit of " + std::to_string(max_);
        return false;
      }
      if (buffer_.size() - cursor < length) break;
      out.emplace_back(buffer_, cursor, static_cast<std::size_t>(length));
      pos = cursor + static_cast<std::size_t>(length);
    }
    buffer_.erase(0, pos);
    return true;
  }

  const std::string& error() const noexcept { return error_; }
  /// Bytes of an incomplete message held.
  std::size_t buffered() const noexcept { return buffer_.size(); }

 private:
  std::size_t max_;
  std::string buffer_;
  std::string error_;
};

}  // namespace quartzflow::quic
