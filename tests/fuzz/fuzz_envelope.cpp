// SPDX-License-Identifier: Apache-2.0
// Fuzzes the agent protocol's receive path: stream bytes, delivered in pieces, go through the
// varint framing (quic::FrameReader) and each complete message is decoded as a v1::Envelope
// as decode_envelope does, then bounded with detail::oversized_repeated_field. A decoded
// envelope re-serialises to bytes that decode to the same envelope.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>

#include <quartzflow/v1/agent_protocol.pb.h>

#include "common/message_limits.hpp"
#include "transport/quic/framing.hpp"

namespace qf = quartzflow;

namespace {

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "invariant broken: %s\n", what);
  std::abort();
}

// Small enough that the fuzzer reaches the limit, large enough for real envelopes.
constexpr std::size_t k_max_message_bytes = 64 * 1024;
constexpr std::size_t k_max_list_elements = 1000;

// Map entries in a fixed order, so that two equal messages give equal bytes.
std::string serialise(const qf::v1::Envelope& envelope) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    envelope.SerializeWithCachedSizes(&coded);
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  // The first byte sets how the stream is cut into reads (1 to 256 bytes each).
  const std::size_t piece = static_cast<std::size_t>(data[0]) + 1;
  ++data;
  --size;

  qf::quic::FrameReader reader(k_max_message_bytes);
  std::vector<std::string> messages;
  bool framing_ok = true;
  for (std::size_t offset = 0; offset < size && framing_ok; offset += piece)
    framing_ok = reader.feed(data + offset, std::min(piece, size - offset), messages);
  if (!framing_ok && reader.error().empty()) fail("framing error without a reason");
  if (!framing_ok && reader.feed(data, 0, messages)) fail("reader accepted bytes after an error");
  std::size_t message_bytes = 0;
  for (const std::string& message : messages) {
    if (message.size() > k_max_message_bytes) fail("message over the limit");
    message_bytes += message.size();
  }
  // After an error the reader keeps its buffer as it was (it refuses everything anyway).
  if (framing_ok && message_bytes + reader.buffered() > size) fail("more bytes out than in");

  for (const std::string& message : messages) {
    qf::v1::Envelope envelope;
    if (!envelope.ParseFromString(message)) continue;
    (void)qf::detail::oversized_repeated_field(envelope, k_max_list_elements);
    (void)envelope.ByteSizeLong();  // fills the cached sizes serialise() uses
    const std::string reserialised = serialise(envelope);
    qf::v1::Envelope again;
    if (!again.ParseFromString(reserialised)) fail("a re-serialised envelope does not parse");
    (void)again.ByteSizeLong();
    if (serialise(again) != reserialised) fail("re-serialisation is not stable");
    if (again.body_case() != envelope.body_case()) fail("the body changed on a round trip");
  }
  return 0;
}
