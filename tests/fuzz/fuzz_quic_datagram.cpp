// SPDX-License-Identifier: Apache-2.0
// Fuzzes the first look at a UDP datagram, as the QUIC server and client take it: whatever
// quic::datagram_problem lets through goes to ngtcp2's version/CID decoder and to
// ngtcp2_accept, which must not abort (ngtcp2 0.12 asserts on some inputs, e.g. an empty
// datagram). A datagram it passes has the shape it promises.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include <ngtcp2/ngtcp2.h>

#include "transport/quic/datagram_check.hpp"

namespace quic = quartzflow::quic;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (quic::datagram_problem(std::span<const std::uint8_t>(data, size)) != nullptr) return 0;
  if (size == 0) std::abort();  // the check must refuse an empty datagram

  // The server's path (quic_server.cpp): the CIDs pick a connection, else ngtcp2_accept
  // decides whether it is a client Initial.
  ngtcp2_version_cid version_cid{};
  if (ngtcp2_pkt_decode_version_cid(&version_cid, data, size, quic::k_connection_id_length) == 0) {
    if (version_cid.dcidlen > quic::k_max_connection_id_length ||
        version_cid.scidlen > quic::k_max_connection_id_length)
      std::abort();  // the check bounds both lengths
    if ((data[0] & 0x80) == 0 && version_cid.dcidlen != quic::k_connection_id_length) std::abort();
    ngtcp2_pkt_hd header{};
    (void)ngtcp2_accept(&header, data, size);
  }
  // Both ends' connections (quic_connection.cpp) hand the same datagram to
  // ngtcp2_conn_read_pkt, which starts with these header decoders.
  ngtcp2_pkt_hd header{};
  if (data[0] & 0x80)
    (void)ngtcp2_pkt_decode_hd_long(&header, data, size);
  else
    (void)ngtcp2_pkt_decode_hd_short(&header, data, size, quic::k_connection_id_length);
  return 0;
}
