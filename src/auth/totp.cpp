// SPDX-License-Identifier: Apache-2.0
// TOTP (RFC 6238 over RFC 4226 HOTP, HMAC-SHA1, 30 s steps), base32 (RFC 4648) and the
// otpauth:// URI authenticator apps read from a QR code.
#include <quartzflow/auth.hpp>

#include <array>

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

namespace quartzflow {
namespace {

constexpr std::string_view k_base32_alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
constexpr std::int64_t k_step_seconds = 30;
constexpr int k_code_digits = 6;

/// Floor division, so that instants before the epoch fall in the right step.
std::int64_t step_of(std::int64_t unix_seconds) noexcept {
  return unix_seconds >= 0 ? unix_seconds / k_step_seconds : -((-unix_seconds + k_step_seconds - 1) / k_step_seconds);
}

/// RFC 4226 HOTP of `counter`, `digits` digits.
std::string hotp(std::string_view secret, std::uint64_t counter, int digits) {
  std::array<unsigned char, 8> message{};
  for (int i = 7; i >= 0; --i) {
    message[static_cast<std::size_t>(i)] = static_cast<unsigned char>(counter & 0xff);
    counter >>= 8;
  }
  std::array<unsigned char, EVP_MAX_MD_SIZE> mac{};
  unsigned int mac_size = 0;
  if (HMAC(EVP_sha1(), secret.data(), static_cast<int>(secret.size()), message.data(), message.size(), mac.data(),
           &mac_size) == nullptr ||
      mac_size != 20)
    throw error(boost::system::errc::make_error_code(boost::system::errc::not_enough_memory),
                "OpenSSL HMAC-SHA1 failed");
  const auto offset = static_cast<std::size_t>(mac[19] & 0x0f);
  const std::uint32_t binary = (static_cast<std::uint32_t>(mac[offset] & 0x7f) << 24) |
                               (static_cast<std::uint32_t>(mac[offset + 1]) << 16) |
                               (static_cast<std::uint32_t>(mac[offset + 2]) << 8) | mac[offset + 3];
  std::uint32_t modulus = 1;
  for (int i = 0; i < digits; ++i) modulus *= 10;
  return fmt::format("{:0{}}", binary % modulus, digits);
}

}  // namespace

std::string base32_encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() * 8 + 4) / 5);
  std::uint32_t buffer = 0;
  int bits = 0;
  for (const char c : bytes) {
    buffer = (buffer << 8) | static_cast<unsigned char>(c);
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += k_base32_alphabet[(buffer >> bits) & 31];
    }
  }
  if (bits > 0) out += k_base32_alphabet[(buffer << (5 - bits)) & 31];
  return out;
}

std::optional<std::string> base32_decode(std::string_view text) {
  std::string out;
  std::uint32_t buffer = 0;
  int bits = 0;
  std::size_t symbols = 0;
  bool padding = false;
  for (char c : text) {
    if (c == ' ') continue;
    if (c == '=') {
      padding = true;
      continue;
    }
    if (padding) return std::nullopt;  // data after padding
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    const auto value = k_base32_alphabet.find(c);
    if (value == std::string_view::npos) return std::nullopt;
    buffer = (buffer << 5) | static_cast<std::uint32_t>(value);
    bits += 5;
    ++symbols;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((buffer >> bits) & 0xff);
    }
  }
  // 1, 3 and 6 symbols past a full 8-symbol group encode no whole byte: no encoder makes them.
  const auto tail = symbols % 8;
  if (tail == 1 || tail == 3 || tail == 6) return std::nullopt;
  return out;
}

std::string totp_code(std::string_view secret, std::int64_t unix_seconds, int digits) {
  if (digits < 6 || digits > 9)
    throw error(errc::invalid_argument, ValidationError{"TOTP", "digits", "must be 6-9"});
  return hotp(secret, static_cast<std::uint64_t>(step_of(unix_seconds)), digits);
}

std::optional<std::int64_t> match_totp(std::string_view secret, std::string_view code, std::int64_t unix_seconds) {
  if (secret.empty() || code.size() != static_cast<std::size_t>(k_code_digits)) return std::nullopt;
  for (const char c : code)
    if (c < '0' || c > '9') return std::nullopt;
  const auto current = step_of(unix_seconds);
  std::optional<std::int64_t> matched;
  // Every candidate is computed and compared in constant time, whichever matches.
  for (std::int64_t step = current - 1; step <= current + 1; ++step) {
    const auto expected = hotp(secret, static_cast<std::uint64_t>(step), k_code_digits);
    if (CRYPTO_memcmp(expected.data(), code.data(), code.size()) == 0 && !matched) matched = step;
  }
  return matched;
}

bool verify_totp(std::string_view secret, std::string_view code, std::int64_t unix_seconds) {
  return match_totp(secret, code, unix_seconds).has_value();
}

std::string totp_uri(std::string_view username, std::string_view secret_base32) {
  std::string label;
  for (const char c : username) {
    const auto b = static_cast<unsigned char>(c);
    if ((b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z') || (b >= '0' && b <= '9') || c == '-' || c == '.' ||
        c == '_' || c == '~' || c == '@')
      label += c;
    else
      label += fmt::format("%{:02X}", b);
  }
  return fmt::format("otpauth://totp/QuartzFlow:{}?secret={}&issuer=QuartzFlow", label, secret_base32);
}

}  // namespace quartzflow
