// SPDX-License-Identifier: Apache-2.0
#include "quic_tls.hpp"

#include <cstring>

#include <arpa/inet.h>
#include <fmt/format.h>
#include <gnutls/crypto.h>
#include <gnutls/x509.h>
#include <ngtcp2/ngtcp2_crypto_gnutls.h>

#include <quartzflow/certs.hpp>
#include <quartzflow/log.hpp>

namespace quartzflow::quic {

namespace {

// TLS 1.3 only; QUIC forbids the middlebox compatibility mode.
constexpr const char* k_priority =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305:"
    "-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1:%DISABLE_TLS13_COMPAT_MODE";

bool is_ip_literal(const std::string& host) {
  unsigned char buffer[sizeof(in6_addr)];
  return ::inet_pton(AF_INET, host.c_str(), buffer) == 1 || ::inet_pton(AF_INET6, host.c_str(), buffer) == 1;
}

/// Sends the alert GnuTLS chose, made precise for a refused peer certificate: GnuTLS says
/// bad_certificate for every verification failure, and the peer could then only log that.
/// With certificate_expired or unknown_ca an agent's log says what to fix. Replaces
/// ngtcp2's function of the same role (RFC 9001 4.8: the alert becomes the close code).
int send_precise_alert(gnutls_session_t session, gnutls_record_encryption_level_t, gnutls_alert_level_t,
                       gnutls_alert_description_t alert) {
  if (alert == GNUTLS_A_BAD_CERTIFICATE) {
    const unsigned status = gnutls_session_get_verify_cert_status(session);
    if ((status & GNUTLS_CERT_EXPIRED) != 0) alert = GNUTLS_A_CERTIFICATE_EXPIRED;
    else if ((status & GNUTLS_CERT_REVOKED) != 0) alert = GNUTLS_A_CERTIFICATE_REVOKED;
    else if ((status & (GNUTLS_CERT_SIGNER_NOT_FOUND | GNUTLS_CERT_SIGNER_NOT_CA)) != 0) alert = GNUTLS_A_UNKNOWN_CA;
  }
  auto* conn_ref = static_cast<ngtcp2_crypto_conn_ref*>(gnutls_session_get_ptr(session));
  ngtcp2_conn_set_tls_alert(conn_ref->get_conn(conn_ref), static_cast<std::uint8_t>(alert));
  return 0;
}

}  // namespace

std::shared_ptr<TlsCredentials> TlsCredentials::load(const TlsFiles& files, std::string& detail) {
  const std::pair<const char*, const std::string*> required[] = {
      {"ca_file", &files.ca_file}, {"cert_file", &files.cert_file}, {"key_file", &files.key_file}};
  for (const auto& [field, value] : required)
    if (value->empty()) {
      detail = fmt::format("tls.{}: is required (mutual TLS)", field);
      return nullptr;
    }
  std::string warning;
  if (auto problem = certificate_date_problem(files.cert_file, std::chrono::system_clock::now(), warning)) {
    detail = "tls.cert_file: " + *problem;
    return nullptr;
  }
  if (!warning.empty()) logger()->warn("tls.cert_file: {}", warning);
  if (auto problem = key_file_permission_problem(files.key_file, warning)) {
    detail = "tls.key_file: " + *problem;
    return nullptr;
  }
  if (!warning.empty()) logger()->warn("tls.key_file: {}", warning);
  std::shared_ptr<TlsCredentials> result(new TlsCredentials);
  if (int rv = gnutls_certificate_allocate_credentials(&result->credentials_); rv < 0) {
    detail = fmt::format("TLS credentials: {}", gnutls_strerror(rv));
    return nullptr;
  }
  const int cas = gnutls_certificate_set_x509_trust_file(result->credentials_, files.ca_file.c_str(), GNUTLS_X509_FMT_PEM);
  if (cas <= 0) {
    detail = fmt::format("tls.ca_file: {}: {}", files.ca_file,
                         cas == 0 ? "no certificate in the file" : gnutls_strerror(cas));
    return nullptr;
  }
  if (int rv = gnutls_certificate_set_x509_key_file(result->credentials_, files.cert_file.c_str(),
                                                    files.key_file.c_str(), GNUTLS_X509_FMT_PEM);
      rv < 0) {
    detail = fmt::format("tls.cert_file / tls.key_file: {} / {}: {}", files.cert_file, files.key_file, gnutls_strerror(rv));
    return nullptr;
  }
  return result;
}

TlsCredentials::~TlsCredentials() {
  if (credentials_) gnutls_certificate_free_credentials(credentials_);
}

gnutls_session_t make_tls_session(TlsRole role, const TlsCredentials& credentials, const std::string& server_name,
                                  ngtcp2_crypto_conn_ref* conn_ref, std::string& detail) {
  gnutls_session_t session = nullptr;
  const unsigned flags = (role == TlsRole::server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NO_END_OF_EARLY_DATA;
  int rv = gnutls_init(&session, flags);
  auto fail = [&](const char* what) {
    detail = fmt::format("{}: {}", what, gnutls_strerror(rv));
    if (session) gnutls_deinit(session);
    return nullptr;
  };
  if (rv < 0) return fail("gnutls_init");
  rv = role == TlsRole::server ? ngtcp2_crypto_gnutls_configure_server_session(session)
                               : ngtcp2_crypto_gnutls_configure_client_session(session);
  if (rv != 0) return fail("configuring the QUIC TLS session");
  gnutls_alert_set_read_function(session, send_precise_alert);
  if ((rv = gnutls_priority_set_direct(session, k_priority, nullptr)) < 0) return fail("TLS priority");
  if ((rv = gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, credentials.get())) < 0) return fail("TLS credentials");
  gnutls_datum_t alpn{reinterpret_cast<unsigned char*>(const_cast<char*>(k_alpn.data())),
                      static_cast<unsigned>(k_alpn.size())};
  if ((rv = gnutls_alpn_set_protocols(session, &alpn, 1, GNUTLS_ALPN_MANDATORY)) < 0) return fail("ALPN");
  if (role == TlsRole::server) {
    // Mutual TLS: no certificate, or one the CA did not sign, fails the handshake.
    gnutls_certificate_server_set_request(session, GNUTLS_CERT_REQUIRE);
    gnutls_session_set_verify_cert(session, nullptr, 0);
  } else {
    if (!server_name.empty() && !is_ip_literal(server_name))
      gnutls_server_name_set(session, GNUTLS_NAME_DNS, server_name.data(), server_name.size());
    // GnuTLS keeps the pointer: `server_name` must live as long as the session.
    gnutls_session_set_verify_cert(session, server_name.empty() ? nullptr : server_name.c_str(), 0);
  }
  gnutls_session_set_ptr(session, conn_ref);
  return session;
}

std::string peer_common_name(gnutls_session_t session) {
  unsigned count = 0;
  const gnutls_datum_t* chain = gnutls_certificate_get_peers(session, &count);
  if (chain == nullptr || count == 0) return {};
  gnutls_x509_crt_t certificate = nullptr;
  if (gnutls_x509_crt_init(&certificate) < 0) return {};
  std::string name;
  if (gnutls_x509_crt_import(certificate, &chain[0], GNUTLS_X509_FMT_DER) >= 0) {
    char buffer[256];
    std::size_t size = sizeof buffer;
    if (gnutls_x509_crt_get_dn_by_oid(certificate, GNUTLS_OID_X520_COMMON_NAME, 0, 0, buffer, &size) >= 0)
      name.assign(buffer, size);
  }
  gnutls_x509_crt_deinit(certificate);
  return name;
}

std::string peer_certificate_sha256(gnutls_session_t session) {
  unsigned count = 0;
  const gnutls_datum_t* chain = gnutls_certificate_get_peers(session, &count);
  if (chain == nullptr || count == 0) return {};
  unsigned char digest[32];
  if (gnutls_hash_fast(GNUTLS_DIG_SHA256, chain[0].data, chain[0].size, digest) < 0) return {};
  std::string out;
  for (const unsigned char byte : digest) out += fmt::format("{:02x}", byte);
  return out;
}

std::string handshake_failure(gnutls_session_t session, int ngtcp2_error) {
  if (session != nullptr) {
    if (unsigned status = gnutls_session_get_verify_cert_status(session); status != 0) {
      gnutls_datum_t text{};
      if (gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &text, 0) >= 0) {
        std::string result = fmt::format("certificate refused: {}", reinterpret_cast<const char*>(text.data));
        gnutls_free(text.data);
        return result;
      }
      return "certificate refused";
    }
  }
  return fmt::format("TLS handshake failed: {}", ngtcp2_strerror(ngtcp2_error));
}

}  // namespace quartzflow::quic
