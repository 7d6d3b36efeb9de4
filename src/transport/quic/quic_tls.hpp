// SPDX-License-Identifier: Apache-2.0
// GnuTLS for QUIC: certificate credentials loaded once per endpoint, and one TLS 1.3
// session per connection, wired to ngtcp2 through ngtcp2_crypto_gnutls.
#pragma once

#include <memory>
#include <string>

#include <gnutls/gnutls.h>
#include <ngtcp2/ngtcp2_crypto.h>

#include <quartzflow/quic.hpp>

namespace quartzflow::quic {

inline constexpr std::string_view k_alpn = "quartzflow/1";

/// The CA, certificate and key of one endpoint.
class TlsCredentials {
 public:
  /// Loads the files; nullptr with `detail` naming the file and the reason.
  static std::shared_ptr<TlsCredentials> load(const TlsFiles& files, std::string& detail);
  ~TlsCredentials();
  gnutls_certificate_credentials_t get() const noexcept { return credentials_; }

 private:
  TlsCredentials() = default;
  gnutls_certificate_credentials_t credentials_ = nullptr;
};

enum class TlsRole { client, server };

/**
 * Creates a TLS session for one QUIC connection: TLS 1.3 only, ALPN quartzflow/1, the
 * peer's certificate required and verified against the CA (the client also checks that it
 * names `server_name`: a DNS name or an IP address without brackets). `conn_ref` and
 * `server_name` must outlive the session.
 */
gnutls_session_t make_tls_session(TlsRole role, const TlsCredentials& credentials, const std::string& server_name,
                                  ngtcp2_crypto_conn_ref* conn_ref, std::string& detail);

/// The common name of the peer's certificate (empty when there is none).
std::string peer_common_name(gnutls_session_t session);

/// SHA-256 (lower-case hex) of the peer's certificate (DER); empty when there is none.
std::string peer_certificate_sha256(gnutls_session_t session);

/// Why the handshake failed, for logs: the certificate verdict when there is one.
std::string handshake_failure(gnutls_session_t session, int ngtcp2_error);

}  // namespace quartzflow::quic
