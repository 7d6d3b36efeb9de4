// SPDX-License-Identifier: Apache-2.0
// Password hashes (PBKDF2-HMAC-SHA256 with a random salt), the password policy (NIST SP
// 800-63B: length, common passwords, trivial patterns), random secrets, SHA-256, base64,
// roles and the API error mapping: the auth primitives that need no store.
#include <quartzflow/auth.hpp>

#include <algorithm>
#include <array>
#include <bitset>
#include <charconv>
#include <climits>
#include <iterator>
#include <unordered_set>

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "../common/text.hpp"
#include "auth_detail.hpp"

namespace quartzflow {
namespace detail {
namespace {

constexpr std::string_view k_base64_standard = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr std::string_view k_base64_url = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string openssl_error() {
  const auto code = ERR_get_error();
  if (code == 0) return "no detail";
  std::array<char, 256> text{};
  ERR_error_string_n(code, text.data(), text.size());
  return text.data();
}

}  // namespace

std::string random_bytes(std::size_t count) {
  std::string out(count, '\0');
  if (count > 0 &&
      RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(count)) != 1)
    throw error(boost::system::errc::make_error_code(boost::system::errc::resource_unavailable_try_again),
                fmt::format("OpenSSL RAND_bytes failed: {}", openssl_error()));
  return out;
}

std::string base64_encode(std::string_view bytes, bool url) {
  const auto alphabet = url ? k_base64_url : k_base64_standard;
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    const auto n = (static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16) |
                   (static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8) |
                   static_cast<unsigned char>(bytes[i + 2]);
    for (int shift = 18; shift >= 0; shift -= 6) out += alphabet[(n >> shift) & 63];
  }
  const auto rest = bytes.size() - i;
  if (rest > 0) {
    std::uint32_t n = static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i])) << 16;
    if (rest == 2) n |= static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[i + 1])) << 8;
    out += alphabet[(n >> 18) & 63];
    out += alphabet[(n >> 12) & 63];
    if (rest == 2) out += alphabet[(n >> 6) & 63];
    if (!url) out.append(rest == 1 ? "==" : "=");
  }
  return out;
}

std::optional<std::string> base64_decode(std::string_view text, bool url) {
  const auto alphabet = url ? k_base64_url : k_base64_standard;
  while (!text.empty() && text.back() == '=') text.remove_suffix(1);
  if (text.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(text.size() * 3 / 4);
  std::uint32_t buffer = 0;
  int bits = 0;
  for (const char c : text) {
    const auto value = alphabet.find(c);
    if (value == std::string_view::npos) return std::nullopt;
    buffer = (buffer << 6) | static_cast<std::uint32_t>(value);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((buffer >> bits) & 0xff);
    }
  }
  // Leftover bits must be zero, so that each byte string has one encoding.
  if ((buffer & ((1u << bits) - 1)) != 0) return std::nullopt;
  return out;
}

std::string hex_encode(std::string_view bytes) {
  constexpr std::string_view digits = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (const char c : bytes) {
    const auto b = static_cast<unsigned char>(c);
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

std::size_t utf8_characters(std::string_view text) noexcept {
  return static_cast<std::size_t>(
      std::count_if(text.begin(), text.end(), [](char c) { return (static_cast<unsigned char>(c) & 0xC0) != 0x80; }));
}

}  // namespace detail

namespace {

constexpr std::string_view k_scheme = "pbkdf2-sha256";
constexpr std::size_t k_salt_bytes = 16;
constexpr std::size_t k_key_bytes = 32;
// A stored hash asking for more is refused rather than computed (a corrupted or hostile
// record must not be able to stall the hashing thread for minutes).
constexpr std::uint32_t k_max_iterations = 10'000'000;

bool pbkdf2(std::string_view password, std::string_view salt, std::uint32_t iterations, std::string& key) {
  return PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()),
                           reinterpret_cast<const unsigned char*>(salt.data()), static_cast<int>(salt.size()),
                           static_cast<int>(iterations), EVP_sha256(), static_cast<int>(key.size()),
                           reinterpret_cast<unsigned char*>(key.data())) == 1;
}

// ---- the password policy ----

constexpr std::string_view k_common_passwords[] = {
#include "common_passwords.inc"
};

/// The service's own name: NIST's "context-specific words".
constexpr std::string_view k_service_name = "quartzflow";
/// Shorter usernames are found inside too many good passwords by chance.
constexpr std::size_t k_min_context_word = 3;
constexpr std::size_t k_min_distinct_characters = 5;

/// Rows along which a finger or the alphabet walks; each character and its neighbours.
constexpr std::string_view k_sequences[] = {
    "01234567890",  "abcdefghijklmnopqrstuvwxyz", "qwertyuiop[]\\", "asdfghjkl;'", "zxcvbnm,./",
    "`1234567890-=", "~!@#$%^&*()_+", "qwertyuiopasdfghjklzxcvbnm", "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik,9ol.0p;/-['=]",
    "qwertzuiop",   "azertyuiop",
};

/// What people write instead of letters to get past composition rules: `p@ssw0rd`.
std::string unleet(std::string_view text) {
  std::string out(text);
  for (auto& c : out) {
    switch (c) {
      case '@': case '4': c = 'a'; break;
      case '3': c = 'e'; break;
      case '1': case '!': c = 'i'; break;
      case '0': c = 'o'; break;
      case '$': case '5': c = 's'; break;
      case '7': c = 't'; break;
      default: break;
    }
  }
  return out;
}

/// Without the digits, symbols and spaces around it: `2024 summer!!` -> `summer`.
std::string_view core_of(std::string_view text) {
  const auto decoration = [](char c) {
    const auto b = static_cast<unsigned char>(c);
    return b < 0x80 && !(b >= 'a' && b <= 'z') && !(b >= 'A' && b <= 'Z');
  };
  while (!text.empty() && decoration(text.front())) text.remove_prefix(1);
  while (!text.empty() && decoration(text.back())) text.remove_suffix(1);
  return text;
}

bool is_common(std::string_view lowered) {
  static const std::unordered_set<std::string_view> common(std::begin(k_common_passwords),
                                                           std::end(k_common_passwords));
  return common.count(lowered) > 0;
}

/// Every character next to the one before it (either way) along one of k_sequences.
bool is_walk(std::string_view lowered) {
  if (lowered.size() < 2) return false;
  const auto neighbours = [](char a, char b) {
    for (const auto row : k_sequences)
      for (std::size_t i = 0; i + 1 < row.size(); ++i)
        if ((row[i] == a && row[i + 1] == b) || (row[i] == b && row[i + 1] == a)) return true;
    return false;
  };
  for (std::size_t i = 1; i < lowered.size(); ++i)
    if (!neighbours(lowered[i - 1], lowered[i])) return false;
  return true;
}

/// The shortest p <= size/2 such that the text repeats itself every p bytes; 0 when none.
std::size_t repetition_period(std::string_view text) {
  for (std::size_t period = 1; period * 2 <= text.size(); ++period) {
    bool repeats = true;
    for (std::size_t i = period; i < text.size() && repeats; ++i) repeats = text[i] == text[i - period];
    if (repeats) return period;
  }
  return 0;
}

/// The words of `username` a password must not contain: itself, and an e-mail's local part.
std::vector<std::string> context_words(std::string_view username) {
  std::vector<std::string> out{std::string(k_service_name)};
  const auto name = detail::lower_ascii(username);
  if (name.size() >= k_min_context_word) out.push_back(name);
  const auto at = name.find('@');
  if (at != std::string::npos && at >= k_min_context_word) out.push_back(name.substr(0, at));
  return out;
}

/// The next `$`-separated part of `rest`.
std::string_view next_part(std::string_view& rest) {
  const auto dollar = rest.find('$');
  const auto part = rest.substr(0, dollar);
  rest = dollar == std::string_view::npos ? std::string_view() : rest.substr(dollar + 1);
  return part;
}


}  // namespace

std::string hash_password(std::string_view password, std::uint32_t iterations) {
  if (iterations == 0 || iterations > k_max_iterations)
    throw error(errc::invalid_argument,
                ValidationError{"password hash", "iterations", fmt::format("must be 1-{}", k_max_iterations)});
  const auto salt = detail::random_bytes(k_salt_bytes);
  std::string key(k_key_bytes, '\0');
  if (!pbkdf2(password, salt, iterations, key))
    throw error(boost::system::errc::make_error_code(boost::system::errc::not_enough_memory),
                "OpenSSL PKCS5_PBKDF2_HMAC failed");
  return fmt::format("{}${}${}${}", k_scheme, iterations, detail::base64_encode(salt, false),
                     detail::base64_encode(key, false));
}

bool verify_password(std::string_view password, std::string_view encoded) noexcept {
  try {
    auto rest = encoded;
    if (next_part(rest) != k_scheme) return false;
    const auto iterations_text = next_part(rest);
    std::uint32_t iterations = 0;
    const auto [end, ec] =
        std::from_chars(iterations_text.data(), iterations_text.data() + iterations_text.size(), iterations);
    if (ec != std::errc() || end != iterations_text.data() + iterations_text.size() || iterations == 0 ||
        iterations > k_max_iterations)
      return false;
    const auto salt = detail::base64_decode(next_part(rest), false);
    const auto expected = detail::base64_decode(next_part(rest), false);
    if (!rest.empty() || !salt || !expected || salt->empty() || expected->size() < 16 || expected->size() > 64)
      return false;
    std::string key(expected->size(), '\0');
    if (!pbkdf2(password, *salt, iterations, key)) return false;
    return CRYPTO_memcmp(key.data(), expected->data(), key.size()) == 0;
  } catch (...) {  // allocation failure: not a match
    return false;
  }
}

std::optional<std::string> password_weakness(std::string_view password, std::string_view username) {
  if (password.size() > k_max_password_bytes) return fmt::format("is longer than {} bytes", k_max_password_bytes);
  if (detail::utf8_characters(password) < k_min_password_characters)
    return fmt::format("must be at least {} characters", k_min_password_characters);
  const auto lowered = detail::lower_ascii(password);
  const auto period = repetition_period(lowered);
  if (period == 1) return std::string("is one character repeated");
  if (period > 0) return std::string("is a short pattern repeated; choose something less predictable");
  std::bitset<256> seen;
  for (const char c : lowered) seen.set(static_cast<unsigned char>(c));
  if (seen.count() < k_min_distinct_characters)
    return fmt::format("uses fewer than {} different characters", k_min_distinct_characters);
  if (is_walk(lowered))
    return std::string("is a sequence of neighbouring keys or characters (like 123456789012 or qwertyuiop)");
  const auto unleeted = unleet(lowered);
  for (const auto& word : context_words(username)) {
    if (lowered.find(word) == std::string::npos && unleeted.find(word) == std::string::npos) continue;
    if (word == k_service_name) return fmt::format("must not contain the name of the service ({})", k_service_name);
    return std::string("must not contain the username");
  }
  if (is_common(lowered) || is_common(unleeted)) return std::string("is one of the most commonly used passwords");
  for (const auto core : {core_of(lowered), core_of(unleeted)}) {
    if (!core.empty() && (is_common(core) || is_common(unleet(core))))
      return std::string("is a commonly used password with digits or symbols around it");
  }
  return std::nullopt;
}

std::string generate_secret(std::string_view prefix) {
  return std::string(prefix) + detail::base64_encode(detail::random_bytes(32), true);
}

std::string sha256_hex(std::string_view text) {
  std::array<unsigned char, 32> digest{};
  unsigned int size = 0;
  if (EVP_Digest(text.data(), text.size(), digest.data(), &size, EVP_sha256(), nullptr) != 1 || size != 32)
    throw error(boost::system::errc::make_error_code(boost::system::errc::not_enough_memory),
                "OpenSSL EVP_Digest(SHA-256) failed");
  return detail::hex_encode(std::string_view(reinterpret_cast<const char*>(digest.data()), digest.size()));
}

int role_rank(v1::Role role) noexcept {
  switch (role) {
    case v1::ROLE_ADMIN: return 3;
    case v1::ROLE_OPERATOR: return 2;
    case v1::ROLE_VIEWER: return 1;
    default: return 0;
  }
}

bool role_at_least(v1::Role role, v1::Role required) noexcept {
  const int have = role_rank(role);
  return have > 0 && have >= role_rank(required);
}

unsigned http_status_of(v1::ApiErrorCode code) noexcept {
  switch (code) {
    case v1::API_ERROR_CODE_INVALID_ARGUMENT: return 400;
    case v1::API_ERROR_CODE_UNAUTHENTICATED:
    case v1::API_ERROR_CODE_TOTP_REQUIRED: return 401;
    case v1::API_ERROR_CODE_PERMISSION_DENIED: return 403;
    case v1::API_ERROR_CODE_NOT_FOUND: return 404;
    case v1::API_ERROR_CODE_ALREADY_EXISTS:
    case v1::API_ERROR_CODE_CONFLICT:
    case v1::API_ERROR_CODE_FAILED_PRECONDITION: return 409;
    case v1::API_ERROR_CODE_RESOURCE_EXHAUSTED: return 429;
    case v1::API_ERROR_CODE_UNAVAILABLE:
    case v1::API_ERROR_CODE_NOT_LEADER: return 503;
    default: return 500;
  }
}

v1::FieldViolation field_violation(std::string field, std::string reason) {
  v1::FieldViolation out;
  out.set_field(std::move(field));
  out.set_reason(std::move(reason));
  return out;
}

void ApiFailure::add_violation(std::string field, std::string reason) {
  violations.push_back(field_violation(std::move(field), std::move(reason)));
}

v1::ApiError ApiFailure::to_api_error() const {
  v1::ApiError out;
  out.set_code(code);
  out.set_message(message);
  for (const auto& violation : violations) *out.add_field_violations() = violation;
  out.set_http_status(http_status_of(code));
  return out;
}

}  // namespace quartzflow
