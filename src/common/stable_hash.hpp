// SPDX-License-Identifier: Apache-2.0
// A hash that never changes between builds, machines or releases: the seed of cron's `H`,
// consistent-hash routing and retry jitter (std::hash may change with the standard library).
#pragma once

#include <cstdint>
#include <string_view>

namespace quartzflow::detail {

/// 64-bit FNV-1a of `data`.
constexpr std::uint64_t stable_hash(std::string_view data) noexcept {
  std::uint64_t hash = 0xcbf29ce484222325ull;
  for (const char c : data) {
    hash ^= static_cast<unsigned char>(c);
    hash *= 0x100000001b3ull;
  }
  return hash;
}

}  // namespace quartzflow::detail
