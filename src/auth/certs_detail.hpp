// SPDX-License-Identifier: Apache-2.0
// What certs.cpp shares with enrolment.cpp: the agent certificate profile, signed for a
// public key the caller has (a certificate request's).
#pragma once

#include <string>

#include <openssl/evp.h>
#include <openssl/x509.h>

namespace quartzflow::detail {

/// How long before its issue a certificate's notBefore is set (a peer's clock may run behind).
inline constexpr long k_certificate_backdate_seconds = 5 * 60;

/// The agent id rule of certificates: 1-64 printable ASCII characters without spaces or '/'.
bool valid_certificate_agent_id(const std::string& agent_id);

/**
 * An agent certificate for `subject_key` (CN = `agent_id`, CA:FALSE, digitalSignature, EKU
 * clientAuth+serverAuth, SAN DNS:id when the id is a DNS name, SKI/AKI, random serial),
 * valid `validity_seconds` from now, signed by the CA. The caller frees it; nullptr when
 * OpenSSL fails.
 */
X509* build_agent_certificate(EVP_PKEY* subject_key, X509* ca_cert, EVP_PKEY* ca_key, const std::string& agent_id,
                              long validity_seconds);

}  // namespace quartzflow::detail
