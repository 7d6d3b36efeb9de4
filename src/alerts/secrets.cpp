// SPDX-License-Identifier: Apache-2.0
// Sealing, redacting and resolving secrets with OpenSSL's EVP AES-256-GCM; the key file.
#include "secrets.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

#include <fcntl.h>
#include <unistd.h>

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <quartzflow/alert_secrets.hpp>
#include <quartzflow/error.hpp>

namespace quartzflow::detail {
namespace {

constexpr std::string_view k_sealed_prefix = "v1:";
constexpr int k_nonce_bytes = 12;
constexpr int k_tag_bytes = 16;

using CipherContext = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

[[noreturn]] void throw_openssl(std::string_view what) {
  const auto code = ERR_get_error();
  char text[256] = {};
  if (code != 0) ERR_error_string_n(code, text, sizeof text);
  throw error(errc::invalid_argument, fmt::format("secrets: {} failed: {}", what, code != 0 ? text : "unknown error"));
}

const unsigned char* bytes_of(std::string_view text) { return reinterpret_cast<const unsigned char*>(text.data()); }

std::string base64(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n =
      EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), bytes_of(bytes), static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}

std::optional<std::string> unbase64(std::string_view text) {
  if (text.empty() || text.size() % 4 != 0) return std::nullopt;
  std::string out(text.size() / 4 * 3, '\0');
  const int n =
      EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()), bytes_of(text), static_cast<int>(text.size()));
  if (n < 0) return std::nullopt;
  std::size_t size = static_cast<std::size_t>(n);
  // EVP_DecodeBlock counts the padding as zero bytes.
  if (text.back() == '=') --size;
  if (text.size() >= 2 && text[text.size() - 2] == '=') --size;
  out.resize(size);
  return out;
}

std::optional<std::string> parse_hex_key(std::string_view text) {
  if (text.size() != 2 * k_secret_key_bytes) return std::nullopt;
  std::string out;
  for (std::size_t i = 0; i < text.size(); i += 2) {
    int value = 0;
    for (std::size_t j = i; j < i + 2; ++j) {
      const char c = text[j];
      const int digit = c >= '0' && c <= '9'   ? c - '0'
                        : c >= 'a' && c <= 'f' ? c - 'a' + 10
                        : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                               : -1;
      if (digit < 0) return std::nullopt;
      value = value * 16 + digit;
    }
    out += static_cast<char>(value);
  }
  return out;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && std::strchr(" \t\r\n", text.front())) text.remove_prefix(1);
  while (!text.empty() && std::strchr(" \t\r\n", text.back())) text.remove_suffix(1);
  return text;
}

void require_key(std::string_view key) {
  if (key.size() != k_secret_key_bytes)
    throw error(errc::invalid_argument,
                fmt::format("secrets: the key has {} bytes; AES-256 needs {}", key.size(), k_secret_key_bytes));
}

}  // namespace

std::optional<std::string> load_secret_key(const std::filesystem::path& path, std::string& error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    error = fmt::format("{}: cannot read: {}", path.string(), std::strerror(errno));
    return std::nullopt;
  }
  std::ostringstream content;
  content << in.rdbuf();
  const std::string text = content.str();
  if (text.size() == k_secret_key_bytes) return text;
  if (auto key = parse_hex_key(trim(text))) return key;
  error = fmt::format("{}: not a key: give {} raw bytes or {} hex digits (openssl rand -hex 32)", path.string(),
                      k_secret_key_bytes, 2 * k_secret_key_bytes);
  return std::nullopt;
}

std::optional<std::string> load_or_create_secret_key(const std::filesystem::path& path, std::string& error) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno != EEXIST) {
      error = fmt::format("{}: cannot create: {}", path.string(), std::strerror(errno));
      return std::nullopt;
    }
    return load_secret_key(path, error);
  }
  unsigned char key[k_secret_key_bytes];
  std::string hex;
  const bool random = RAND_bytes(key, sizeof key) == 1;
  for (auto byte : key) hex += fmt::format("{:02x}", byte);
  hex += '\n';
  const bool written =
      random && ::write(fd, hex.data(), hex.size()) == static_cast<ssize_t>(hex.size()) && ::fsync(fd) == 0;
  const int saved = errno;
  ::close(fd);
  if (!written) {
    ::unlink(path.c_str());
    error = fmt::format("{}: cannot write a new key: {}", path.string(),
                        random ? std::strerror(saved) : "OpenSSL RAND_bytes failed");
    return std::nullopt;
  }
  return std::string(reinterpret_cast<const char*>(key), sizeof key);
}

std::string seal_secret(std::string_view plain, std::string_view key) {
  require_key(key);
  unsigned char nonce[k_nonce_bytes];
  if (RAND_bytes(nonce, sizeof nonce) != 1) throw_openssl("RAND_bytes");
  CipherContext ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
  if (!ctx) throw_openssl("EVP_CIPHER_CTX_new");
  std::string out(reinterpret_cast<const char*>(nonce), sizeof nonce);
  out.resize(sizeof nonce + plain.size() + k_tag_bytes);
  auto* cipher = reinterpret_cast<unsigned char*>(out.data()) + sizeof nonce;
  int length = 0;
  int final_length = 0;
  if (EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, bytes_of(key), nonce) != 1 ||
      EVP_EncryptUpdate(ctx.get(), cipher, &length, bytes_of(plain), static_cast<int>(plain.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), cipher + length, &final_length) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, k_tag_bytes, cipher + length + final_length) != 1)
    throw_openssl("AES-256-GCM encryption");
  return std::string(k_sealed_prefix) + base64(out);
}

std::optional<std::string> unseal_secret(std::string_view sealed, std::string_view key) {
  if (key.size() != k_secret_key_bytes || sealed.substr(0, k_sealed_prefix.size()) != k_sealed_prefix)
    return std::nullopt;
  auto raw = unbase64(sealed.substr(k_sealed_prefix.size()));
  if (!raw || raw->size() < static_cast<std::size_t>(k_nonce_bytes) + static_cast<std::size_t>(k_tag_bytes))
    return std::nullopt;
  const std::string_view all(*raw);
  const auto nonce = all.substr(0, k_nonce_bytes);
  const auto cipher = all.substr(k_nonce_bytes, all.size() - k_nonce_bytes - k_tag_bytes);
  std::string tag(all.substr(all.size() - k_tag_bytes));
  CipherContext ctx(EVP_CIPHER_CTX_new(), EVP_CIPHER_CTX_free);
  if (!ctx) return std::nullopt;
  std::string plain(cipher.size(), '\0');
  int length = 0;
  int final_length = 0;
  if (EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, bytes_of(key), bytes_of(nonce)) != 1 ||
      EVP_DecryptUpdate(ctx.get(), reinterpret_cast<unsigned char*>(plain.data()), &length, bytes_of(cipher),
                        static_cast<int>(cipher.size())) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, k_tag_bytes, tag.data()) != 1 ||
      EVP_DecryptFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(plain.data()) + length, &final_length) != 1) {
    ERR_clear_error();
    return std::nullopt;
  }
  plain.resize(static_cast<std::size_t>(length) + static_cast<std::size_t>(final_length));
  return plain;
}

void seal_for_store(v1::Secret& secret, std::string_view key) {
  // What a client sends in the output-only fields means nothing: they are made here.
  secret.clear_set();
  secret.clear_hint();
  secret.clear_sealed();
  if (!secret.value().empty()) {
    const auto& value = secret.value();
    // Two characters of a short value would give away too much of it.
    const bool show_tail = value.size() >= 8 && static_cast<unsigned char>(value[value.size() - 1]) < 0x80 &&
                           static_cast<unsigned char>(value[value.size() - 2]) < 0x80;
    secret.set_hint(show_tail ? fmt::format("inline …{}", value.substr(value.size() - 2)) : "inline");
    secret.set_sealed(seal_secret(value, key));
    secret.clear_value();
  } else if (!secret.file().empty()) {
    secret.set_hint("file " + secret.file());
  } else if (!secret.env().empty()) {
    secret.set_hint("env " + secret.env());
  }
  secret.set_set(!secret.hint().empty());
}

void redact_secret(v1::Secret& secret) {
  const bool inline_value = !secret.value().empty() || !secret.sealed().empty();
  secret.clear_value();
  secret.clear_sealed();
  if (inline_value) {
    if (secret.hint().rfind("inline", 0) != 0) secret.set_hint("inline");
  } else if (!secret.file().empty()) {
    secret.set_hint("file " + secret.file());
  } else if (!secret.env().empty()) {
    secret.set_hint("env " + secret.env());
  } else {
    secret.clear_hint();
  }
  secret.set_set(!secret.hint().empty());
}

void redact_channel(v1::Channel& channel) {
  if (channel.has_secret()) redact_secret(*channel.mutable_secret());
  if (channel.has_email() && channel.email().has_password())
    redact_secret(*channel.mutable_email()->mutable_password());
}

void seal_channel(v1::Channel& channel, std::string_view key) {
  if (channel.has_secret()) seal_for_store(*channel.mutable_secret(), key);
  if (channel.has_email() && channel.email().has_password())
    seal_for_store(*channel.mutable_email()->mutable_password(), key);
}

std::optional<std::string> resolve_secret(const v1::Secret& secret, std::string_view key, std::string& error) {
  if (!secret.sealed().empty()) {
    auto plain = unseal_secret(secret.sealed(), key);
    if (!plain) error = "the inline secret cannot be decrypted with this coordinator's key (alerts.secret_key_file)";
    return plain;
  }
  if (!secret.value().empty()) return secret.value();
  if (!secret.file().empty()) {
    std::ifstream in(secret.file(), std::ios::binary);
    if (!in) {
      error = fmt::format("secret file {}: cannot read: {}", secret.file(), std::strerror(errno));
      return std::nullopt;
    }
    std::ostringstream content;
    content << in.rdbuf();
    std::string text = content.str();
    if (!text.empty() && text.back() == '\n') text.pop_back();
    if (!text.empty() && text.back() == '\r') text.pop_back();
    return text;
  }
  if (!secret.env().empty()) {
    const char* value = std::getenv(secret.env().c_str());
    if (!value) {
      error = fmt::format("secret environment variable {} is not set", secret.env());
      return std::nullopt;
    }
    return std::string(value);
  }
  return std::string();
}

}  // namespace quartzflow::detail

namespace quartzflow {

std::optional<std::string> load_alert_secret_key(const std::string& path, bool create, std::string& error) {
  return create ? detail::load_or_create_secret_key(path, error) : detail::load_secret_key(path, error);
}

}  // namespace quartzflow
