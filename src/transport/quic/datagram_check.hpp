// SPDX-License-Identifier: Apache-2.0
// The first look at a UDP datagram, before any ngtcp2 decoder sees it. ngtcp2 0.12 asserts
// on some inputs (an empty datagram aborts ngtcp2_pkt_decode_version_cid), and UDP lets
// anybody send anything to our port: only datagrams shaped like QUIC packets go further.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace quartzflow::quic {

/// Both ends choose connection ids of this length, so short headers carry one of it.
inline constexpr std::size_t k_connection_id_length = 18;

/// Longest connection id QUIC version 1 allows (RFC 9000 17.2).
inline constexpr std::size_t k_max_connection_id_length = 20;

/**
 * Why `datagram` cannot hold a QUIC packet addressed to us, or nullptr when it may.
 * Checks the shape only (RFC 9000 17.2, 17.3; RFC 9001 5.4.2): a packet is at least one
 * byte, a long header holds its version and both connection ids (each at most 20 bytes),
 * and a short header holds our connection id plus the 4 + 16 bytes that header protection
 * samples. Everything past that is ngtcp2's to judge.
 */
inline const char* datagram_problem(std::span<const std::uint8_t> datagram) {
  constexpr std::uint8_t k_long_header = 0x80;
  constexpr std::size_t k_header_protection_sample = 4 + 16;
  if (datagram.empty()) return "empty datagram";
  if ((datagram[0] & k_long_header) == 0)
    return datagram.size() < 1 + k_connection_id_length + k_header_protection_sample
               ? "short-header packet too short"
               : nullptr;
  // Long header: flags, version (4), DCID length, DCID, SCID length, SCID.
  constexpr std::size_t k_dcid_length_at = 5;
  if (datagram.size() < k_dcid_length_at + 2) return "long-header packet too short";
  const std::size_t dcid_length = datagram[k_dcid_length_at];
  if (dcid_length > k_max_connection_id_length) return "destination connection id longer than 20 bytes";
  const std::size_t scid_length_at = k_dcid_length_at + 1 + dcid_length;
  if (datagram.size() <= scid_length_at) return "long-header packet too short";
  const std::size_t scid_length = datagram[scid_length_at];
  if (scid_length > k_max_connection_id_length) return "source connection id longer than 20 bytes";
  if (datagram.size() < scid_length_at + 1 + scid_length) return "long-header packet too short";
  return nullptr;
}

}  // namespace quartzflow::quic
