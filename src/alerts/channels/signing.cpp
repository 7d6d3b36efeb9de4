// SPDX-License-Identifier: Apache-2.0
// HMAC and base64 through OpenSSL's EVP interfaces; hex and percent-encoding by hand.
#include "signing.hpp"

#include <array>
#include <stdexcept>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <fmt/format.h>

namespace quartzflow::alerts {

std::string hmac_sha256(std::string_view key, std::string_view message) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  // An empty key is a valid HMAC key; OpenSSL wants a non-null pointer for it.
  static const unsigned char k_empty = 0;
  const auto* key_bytes = key.empty() ? &k_empty : reinterpret_cast<const unsigned char*>(key.data());
  const auto* message_bytes = message.empty() ? &k_empty : reinterpret_cast<const unsigned char*>(message.data());
  if (HMAC(EVP_sha256(), key_bytes, static_cast<int>(key.size()), message_bytes, message.size(), digest.data(),
           &length) == nullptr)
    throw std::runtime_error("HMAC-SHA256 failed");
  return {reinterpret_cast<const char*>(digest.data()), length};
}

std::string base64_encode(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int written =
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                      reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(written));
  return out;
}

std::string hex_encode(std::string_view bytes) {
  static constexpr char k_digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char c : bytes) {
    const auto u = static_cast<unsigned char>(c);
    out += k_digits[u >> 4];
    out += k_digits[u & 0xF];
  }
  return out;
}

std::string url_encode(std::string_view text) {
  std::string out;
  out.reserve(text.size() * 3);
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    const bool unreserved = (u >= 'A' && u <= 'Z') || (u >= 'a' && u <= 'z') || (u >= '0' && u <= '9') || c == '-' ||
                            c == '.' || c == '_' || c == '~';
    if (unreserved) out += c;
    else out += fmt::format("%{:02X}", u);
  }
  return out;
}

std::string quartzflow_signature(std::string_view secret, std::int64_t timestamp_unix_seconds, std::string_view body) {
  std::string signed_text = std::to_string(timestamp_unix_seconds);
  signed_text += '.';
  signed_text += body;
  return "sha256=" + hex_encode(hmac_sha256(secret, signed_text));
}

}  // namespace quartzflow::alerts
