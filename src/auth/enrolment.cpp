// SPDX-License-Identifier: Apache-2.0
// Agent enrolment with OpenSSL 3.0 (EVP APIs only): join tokens, the agent's key and
// request, the CA's signature of a request after its checks, and renewal signatures.
#include <quartzflow/enrolment.hpp>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <ctime>
#include <memory>
#include <vector>

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "certs_detail.hpp"

namespace quartzflow {
namespace {

struct OpenSslFree {
  void operator()(BIO* p) const noexcept { BIO_free_all(p); }
  void operator()(X509* p) const noexcept { X509_free(p); }
  void operator()(X509_REQ* p) const noexcept { X509_REQ_free(p); }
  void operator()(EVP_PKEY* p) const noexcept { EVP_PKEY_free(p); }
  void operator()(EVP_MD_CTX* p) const noexcept { EVP_MD_CTX_free(p); }
  void operator()(X509_STORE* p) const noexcept { X509_STORE_free(p); }
  void operator()(X509_STORE_CTX* p) const noexcept { X509_STORE_CTX_free(p); }
  void operator()(STACK_OF(X509_EXTENSION) * p) const noexcept { sk_X509_EXTENSION_pop_free(p, X509_EXTENSION_free); }
  void operator()(BASIC_CONSTRAINTS* p) const noexcept { BASIC_CONSTRAINTS_free(p); }
  void operator()(BIGNUM* p) const noexcept { BN_free(p); }
};
template <typename T>
using Owned = std::unique_ptr<T, OpenSslFree>;

constexpr std::string_view k_token_version = "qfe1";
constexpr std::size_t k_secret_bytes = 24;
constexpr std::string_view k_renew_context = "quartzflow-renew";

std::string openssl_error_text() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

error_code invalid(std::string& detail, std::string text) {
  detail = std::move(text);
  ERR_clear_error();
  return errc::invalid_argument;
}

error_code crypto_failure(std::string& detail, const char* what) {
  detail = fmt::format("{}: {}", what, openssl_error_text());
  return boost::system::errc::make_error_code(boost::system::errc::io_error);
}

std::string base64(std::string_view bytes, bool url) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<std::size_t>(n));
  if (url) {
    while (!out.empty() && out.back() == '=') out.pop_back();
    std::replace(out.begin(), out.end(), '+', '-');
    std::replace(out.begin(), out.end(), '/', '_');
  }
  return out;
}

std::optional<std::string> unbase64(std::string_view text) {
  if (text.empty() || text.size() % 4 != 0 || text.size() > 4096) return std::nullopt;
  std::string out(text.size() / 4 * 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (n < 0) return std::nullopt;
  std::size_t size = static_cast<std::size_t>(n);
  for (auto it = text.rbegin(); it != text.rend() && *it == '='; ++it) --size;  // padding decodes as zeros
  out.resize(size);
  return out;
}

std::string hex(const unsigned char* bytes, std::size_t size) {
  std::string out;
  out.reserve(size * 2);
  for (std::size_t i = 0; i < size; ++i) out += fmt::format("{:02x}", bytes[i]);
  return out;
}

std::string sha256(std::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_Digest(bytes.data(), bytes.size(), digest, &size, EVP_sha256(), nullptr);
  return std::string(reinterpret_cast<const char*>(digest), size);
}

bool base64url_text(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](unsigned char c) { return std::isalnum(c) || c == '-' || c == '_'; });
}

Owned<BIO> memory(std::string_view text) {
  return Owned<BIO>(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
}

Owned<X509> read_certificate(std::string_view pem) {
  auto bio = memory(pem);
  return Owned<X509>(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
}

Owned<EVP_PKEY> read_key(std::string_view pem) {
  auto bio = memory(pem);
  return Owned<EVP_PKEY>(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
}

std::optional<std::string> pem_of(int (*write)(BIO*, void*), void* object) {
  Owned<BIO> bio(BIO_new(BIO_s_mem()));
  if (!bio || write(bio.get(), object) != 1) return std::nullopt;
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  if (size <= 0) return std::nullopt;
  return std::string(data, static_cast<std::size_t>(size));
}

std::optional<std::int64_t> unix_ms(const ASN1_TIME* t) {
  std::tm tm{};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) return std::nullopt;
  return static_cast<std::int64_t>(timegm(&tm)) * 1000;
}

/// The CN of a subject name; empty when there is none.
std::string common_name(const X509_NAME* name) {
  const int index = name == nullptr ? -1 : X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (index < 0) return {};
  const ASN1_STRING* value = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
  unsigned char* utf8 = nullptr;
  const int length = ASN1_STRING_to_UTF8(&utf8, value);
  std::string out =
      length > 0 ? std::string(reinterpret_cast<const char*>(utf8), static_cast<std::size_t>(length)) : "";
  OPENSSL_free(utf8);
  return out;
}

/// Why the key cannot be an agent's: only EC P-256 and Ed25519 are taken.
std::optional<std::string> key_type_problem(EVP_PKEY* key) {
  if (EVP_PKEY_is_a(key, "ED25519")) return std::nullopt;
  if (EVP_PKEY_is_a(key, "EC")) {
    char group[64] = {};
    std::size_t length = 0;
    if (EVP_PKEY_get_utf8_string_param(key, "group", group, sizeof group, &length) == 1 &&
        std::string_view(group) == "prime256v1")
      return std::nullopt;
    ERR_clear_error();
    return fmt::format("the key is EC {} (EC P-256 or Ed25519 are accepted)", group[0] ? group : "of an unknown curve");
  }
  const char* type = EVP_PKEY_get0_type_name(key);
  return fmt::format("the key is {} (EC P-256 or Ed25519 are accepted)", type ? type : "of an unknown type");
}

Owned<X509_REQ> read_request(std::string_view csr_pem, std::string& detail) {
  auto bio = memory(csr_pem);
  Owned<X509_REQ> request(bio ? PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!request) {
    detail = "csr: not a PEM certificate request (BEGIN CERTIFICATE REQUEST)";
    ERR_clear_error();
    return nullptr;
  }
  EVP_PKEY* key = X509_REQ_get0_pubkey(request.get());
  if (key == nullptr || X509_REQ_verify(request.get(), key) != 1) {
    detail = "csr: its signature does not verify with its own key";
    ERR_clear_error();
    return nullptr;
  }
  return request;
}

}  // namespace

JoinToken make_join_token(std::string_view ca_sha256) {
  unsigned char id[8];
  unsigned char secret[k_secret_bytes];
  if (RAND_bytes(id, sizeof id) != 1 || RAND_bytes(secret, sizeof secret) != 1)
    throw error(make_error_code(boost::system::errc::io_error), "no random bytes: " + openssl_error_text());
  return JoinToken{"et_" + hex(id, sizeof id),
                   base64(std::string_view(reinterpret_cast<const char*>(secret), sizeof secret), true),
                   std::string(ca_sha256)};
}

std::string format_join_token(const JoinToken& token) {
  return fmt::format("{}.{}.{}.{}", k_token_version, token.id, token.secret, token.ca_sha256);
}

std::optional<JoinToken> parse_join_token(std::string_view text, std::string& reason) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  std::vector<std::string_view> parts;
  for (std::size_t start = 0;;) {
    const auto dot = text.find('.', start);
    parts.push_back(text.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start));
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  if (parts.size() != 4 || parts[0] != k_token_version) {
    reason = "is not a join token (qfe1.<id>.<secret>.<CA hash>, from `qfctl token create --enrol`)";
    return std::nullopt;
  }
  const auto id = parts[1];
  if (id.size() != 19 || id.substr(0, 3) != "et_" ||
      !std::all_of(id.begin() + 3, id.end(), [](unsigned char c) { return std::isxdigit(c) && !std::isupper(c); })) {
    reason = "its id part is not et_ and 16 hex digits";
    return std::nullopt;
  }
  if (parts[2].size() != 32 || !base64url_text(parts[2])) {
    reason = "its secret part is not 32 base64url characters (copied in full?)";
    return std::nullopt;
  }
  if (parts[3].size() != 43 || !base64url_text(parts[3])) {
    reason = "its CA hash part is not 43 base64url characters (copied in full?)";
    return std::nullopt;
  }
  return JoinToken{std::string(id), std::string(parts[2]), std::string(parts[3])};
}

std::string join_token_secret_hash(std::string_view secret) {
  const auto digest = sha256(secret);
  return hex(reinterpret_cast<const unsigned char*>(digest.data()), digest.size());
}

bool join_token_secret_matches(std::string_view secret, std::string_view stored_sha256) {
  const std::string hash = join_token_secret_hash(secret);
  return hash.size() == stored_sha256.size() && CRYPTO_memcmp(hash.data(), stored_sha256.data(), hash.size()) == 0;
}

std::optional<std::string> enrolment_token_problem(const v1::EnrolmentToken& token, std::int64_t now_unix_ms) {
  if (token.revoked()) return std::string("it was revoked");
  if (now_unix_ms >= token.expires_at_unix_ms()) {
    const auto at = std::chrono::system_clock::time_point(std::chrono::milliseconds(token.expires_at_unix_ms()));
    return fmt::format("it expired at {:%Y-%m-%d %H:%M:%S} UTC", fmt::gmtime(std::chrono::system_clock::to_time_t(at)));
  }
  const auto allowed = std::max<std::uint32_t>(token.max_uses(), 1);
  if (token.uses() >= allowed) return fmt::format("it is used up ({} of {} use(s))", token.uses(), allowed);
  return std::nullopt;
}

std::string certificate_sha256(std::string_view pem, bool url, std::string& detail) {
  auto cert = read_certificate(pem);
  unsigned char* der = nullptr;
  const int length = cert ? i2d_X509(cert.get(), &der) : -1;
  if (length <= 0) {
    ERR_clear_error();
    detail = "not a PEM certificate";
    return {};
  }
  const auto digest = sha256(std::string_view(reinterpret_cast<const char*>(der), static_cast<std::size_t>(length)));
  OPENSSL_free(der);
  return url ? base64(digest, true) : hex(reinterpret_cast<const unsigned char*>(digest.data()), digest.size());
}

error_code make_key_and_request(const std::string& agent_id, KeyAndRequest& out, std::string& detail) {
  if (!agent_id.empty() && !detail::valid_certificate_agent_id(agent_id))
    return invalid(detail, fmt::format("agent_id: \"{}\" must be 1-64 printable ASCII characters without spaces or '/'",
                                       agent_id));
  Owned<EVP_PKEY> key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  Owned<X509_REQ> request(X509_REQ_new());
  if (!key || !request) return crypto_failure(detail, "cannot generate a key");
  X509_NAME* subject = X509_REQ_get_subject_name(request.get());
  if (!agent_id.empty() && X509_NAME_add_entry_by_NID(subject, NID_commonName, MBSTRING_UTF8,
                                                      reinterpret_cast<const unsigned char*>(agent_id.data()),
                                                      static_cast<int>(agent_id.size()), -1, 0) != 1)
    return crypto_failure(detail, "cannot build the request");
  if (X509_REQ_set_version(request.get(), 0) != 1 || X509_REQ_set_pubkey(request.get(), key.get()) != 1 ||
      X509_REQ_sign(request.get(), key.get(), EVP_sha256()) <= 0)
    return crypto_failure(detail, "cannot sign the request");
  auto csr =
      pem_of([](BIO* b, void* r) { return PEM_write_bio_X509_REQ(b, static_cast<X509_REQ*>(r)); }, request.get());
  auto key_text = pem_of(
      [](BIO* b, void* k) {
        return PEM_write_bio_PrivateKey(b, static_cast<EVP_PKEY*>(k), nullptr, nullptr, 0, nullptr, nullptr);
      },
      key.get());
  if (!csr || !key_text) return crypto_failure(detail, "cannot encode PEM");
  out = KeyAndRequest{std::move(*key_text), std::move(*csr)};
  return {};
}

std::optional<std::string> request_common_name(std::string_view csr_pem, std::string& detail) {
  auto request = read_request(csr_pem, detail);
  if (!request) return std::nullopt;
  return common_name(X509_REQ_get_subject_name(request.get()));
}

error_code sign_agent_request(std::string_view ca_cert_pem, std::string_view ca_key_pem, std::string_view csr_pem,
                              const std::string& agent_id, std::chrono::seconds validity, SignedAgentCertificate& out,
                              std::string& detail) {
  if (!detail::valid_certificate_agent_id(agent_id))
    return invalid(detail, fmt::format("agent_id: \"{}\" must be 1-64 printable ASCII characters without spaces or '/'",
                                       agent_id.substr(0, 80)));
  if (validity.count() < 1) return invalid(detail, "validity: must be at least 1 second");
  auto request = read_request(csr_pem, detail);
  if (!request) return errc::invalid_argument;
  EVP_PKEY* key = X509_REQ_get0_pubkey(request.get());
  if (auto problem = key_type_problem(key)) return invalid(detail, "csr: " + *problem);
  const std::string asked = common_name(X509_REQ_get_subject_name(request.get()));
  if (!asked.empty() && asked != agent_id)
    return invalid(
        detail, fmt::format("csr: its common name \"{}\" is not the agent id \"{}\"", asked.substr(0, 80), agent_id));
  // The certificate is built from our own profile, never from the request's extensions; a
  // request that asks for a CA is refused rather than quietly downgraded.
  if (Owned<STACK_OF(X509_EXTENSION)> extensions{X509_REQ_get_extensions(request.get())}) {
    for (int i = 0; i < sk_X509_EXTENSION_num(extensions.get()); ++i) {
      X509_EXTENSION* extension = sk_X509_EXTENSION_value(extensions.get(), i);
      if (OBJ_obj2nid(X509_EXTENSION_get_object(extension)) != NID_basic_constraints) continue;
      Owned<BASIC_CONSTRAINTS> constraints{static_cast<BASIC_CONSTRAINTS*>(X509V3_EXT_d2i(extension))};
      if (!constraints || constraints->ca)
        return invalid(detail, "csr: asks for a CA certificate (basicConstraints CA:TRUE); agents get end-entity ones");
    }
  }
  ERR_clear_error();
  auto ca_cert = read_certificate(ca_cert_pem);
  auto ca_key = read_key(ca_key_pem);
  if (!ca_cert || !ca_key) return invalid(detail, "the cluster CA certificate or key does not parse");
  if (X509_check_private_key(ca_cert.get(), ca_key.get()) != 1)
    return invalid(detail, "the cluster CA key is not the key of the CA certificate");
  Owned<X509> cert(
      detail::build_agent_certificate(key, ca_cert.get(), ca_key.get(), agent_id, static_cast<long>(validity.count())));
  if (!cert) return crypto_failure(detail, "cannot build the certificate");
  auto pem = pem_of([](BIO* b, void* c) { return PEM_write_bio_X509(b, static_cast<X509*>(c)); }, cert.get());
  if (!pem) return crypto_failure(detail, "cannot encode PEM");
  out.certificate_pem = std::move(*pem);
  out.record.Clear();
  out.record.set_sha256(certificate_sha256(out.certificate_pem, false, detail));
  out.record.set_agent_id(agent_id);
  if (Owned<BIGNUM> serial{ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert.get()), nullptr)}) {
    char* text = BN_bn2hex(serial.get());
    if (text != nullptr) out.record.set_serial(text);
    OPENSSL_free(text);
  }
  out.record.set_not_after_unix_ms(unix_ms(X509_get0_notAfter(cert.get())).value_or(0));
  return {};
}

std::string renewal_message(std::string_view csr_pem, std::int64_t signed_at_unix_ms) {
  return fmt::format("{}\n{}\n{}", k_renew_context, signed_at_unix_ms, csr_pem);
}

error_code sign_with_key(std::string_view key_pem, std::string_view message, std::string& signature_base64,
                         std::string& detail) {
  auto key = read_key(key_pem);
  if (!key) return invalid(detail, "key: not an unencrypted PEM private key");
  Owned<EVP_MD_CTX> context(EVP_MD_CTX_new());
  const EVP_MD* digest = EVP_PKEY_is_a(key.get(), "ED25519") ? nullptr : EVP_sha256();
  std::size_t size = 0;
  if (!context || EVP_DigestSignInit(context.get(), nullptr, digest, nullptr, key.get()) != 1 ||
      EVP_DigestSign(context.get(), nullptr, &size, reinterpret_cast<const unsigned char*>(message.data()),
                     message.size()) != 1)
    return crypto_failure(detail, "cannot sign");
  std::string signature(size, '\0');
  if (EVP_DigestSign(context.get(), reinterpret_cast<unsigned char*>(signature.data()), &size,
                     reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1)
    return crypto_failure(detail, "cannot sign");
  signature.resize(size);
  signature_base64 = base64(signature, false);
  return {};
}

std::optional<std::string> verify_renewal(std::string_view ca_cert_pem, std::string_view certificate_pem,
                                          std::string_view message, std::string_view signature_base64,
                                          std::chrono::system_clock::time_point now, std::string& detail) {
  auto fail = [&](std::string text) -> std::optional<std::string> {
    ERR_clear_error();
    detail = std::move(text);
    return std::nullopt;
  };
  auto ca = read_certificate(ca_cert_pem);
  auto cert = read_certificate(certificate_pem);
  if (!ca) return fail("the cluster CA certificate does not parse");
  if (!cert) return fail("certificate_pem: not a PEM certificate");
  Owned<X509_STORE> store(X509_STORE_new());
  Owned<X509_STORE_CTX> context(X509_STORE_CTX_new());
  if (!store || !context || X509_STORE_add_cert(store.get(), ca.get()) != 1 ||
      X509_STORE_CTX_init(context.get(), store.get(), cert.get(), nullptr) != 1)
    return fail("cannot check the certificate: " + openssl_error_text());
  X509_STORE_CTX_set_time(context.get(), 0, std::chrono::system_clock::to_time_t(now));
  if (X509_verify_cert(context.get()) != 1)
    return fail(
        fmt::format("certificate_pem: {}", X509_verify_cert_error_string(X509_STORE_CTX_get_error(context.get()))));
  if (X509_check_ca(cert.get()) != 0) return fail("certificate_pem: is a CA certificate, not an agent's");
  const auto signature = unbase64(signature_base64);
  if (!signature) return fail("signature: not base64");
  EVP_PKEY* key = X509_get0_pubkey(cert.get());
  Owned<EVP_MD_CTX> verify(EVP_MD_CTX_new());
  const EVP_MD* digest = EVP_PKEY_is_a(key, "ED25519") ? nullptr : EVP_sha256();
  if (!verify || EVP_DigestVerifyInit(verify.get(), nullptr, digest, nullptr, key) != 1 ||
      EVP_DigestVerify(verify.get(), reinterpret_cast<const unsigned char*>(signature->data()), signature->size(),
                       reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1)
    return fail("signature: not made by the key of certificate_pem");
  return common_name(X509_get_subject_name(cert.get()));
}

std::optional<std::chrono::system_clock::time_point> certificate_renewal_time(std::string_view cert_pem) {
  auto cert = read_certificate(cert_pem);
  if (!cert) {
    ERR_clear_error();
    return std::nullopt;
  }
  const auto not_before = unix_ms(X509_get0_notBefore(cert.get()));
  const auto not_after = unix_ms(X509_get0_notAfter(cert.get()));
  if (!not_before || !not_after) return std::nullopt;
  std::int64_t issued = *not_before + detail::k_certificate_backdate_seconds * 1000;
  if (issued >= *not_after) issued = *not_before;
  const std::int64_t renew_at = issued + (*not_after - issued) * 2 / 3;
  return std::chrono::system_clock::time_point(std::chrono::milliseconds(renew_at));
}

}  // namespace quartzflow
