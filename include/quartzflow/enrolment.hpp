// SPDX-License-Identifier: Apache-2.0
// Agent enrolment without copying certificates: join tokens (format, hash, the rules of
// their use), the agent's key and certificate request, the coordinator's signing of it
// with the cluster CA, and the proof of possession a renewal carries. PEM strings in and out.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <quartzflow/error.hpp>
#include <quartzflow/v1/enrolment.pb.h>

namespace quartzflow {

/// The parts of a join token's text `qfe1.<id>.<secret>.<ca hash>`.
struct JoinToken {
  std::string id;         ///< `et_` + 16 hex digits: the stored token's id
  std::string secret;     ///< 32 base64url characters (24 random bytes); stored only hashed
  std::string ca_sha256;  ///< SHA-256 of the cluster CA certificate (DER), 43 base64url characters
};

/// A new token for the CA whose certificate (PEM) hashes to `ca_sha256` (from `certificate_sha256`).
JoinToken make_join_token(std::string_view ca_sha256);
/// `qfe1.<id>.<secret>.<ca hash>`.
std::string format_join_token(const JoinToken& token);
/// The parts of a token's text, or nullopt with `reason` (which never quotes the secret).
std::optional<JoinToken> parse_join_token(std::string_view text, std::string& reason);
/// SHA-256 (lower-case hex) of a token's secret: what the store keeps.
std::string join_token_secret_hash(std::string_view secret);
/// True when `secret` hashes to `stored_sha256` (compared in constant time).
bool join_token_secret_matches(std::string_view secret, std::string_view stored_sha256);
/**
 * Why `token` cannot enrol another agent at `now_unix_ms` ("revoked", "expired at ...",
 * "used up (1 of 1 uses)"), or nullopt when it can.
 */
std::optional<std::string> enrolment_token_problem(const v1::EnrolmentToken& token, std::int64_t now_unix_ms);

/// SHA-256 of the first certificate of a PEM text, over its DER: lower-case hex, or base64url
/// without padding (`url`). Empty with `detail` when the text holds no certificate.
std::string certificate_sha256(std::string_view pem, bool url, std::string& detail);

/// An agent's new key and its certificate request (both PEM).
struct KeyAndRequest {
  std::string key_pem;  ///< PKCS#8, unencrypted
  std::string csr_pem;
};

/**
 * Generates an EC P-256 key and a PKCS#10 request signed with it, subject CN = `agent_id`
 * (empty: no subject, the coordinator picks the id).
 * @return errc::invalid_argument for a bad id (detail names `agent_id`); io_error when
 *         OpenSSL fails.
 */
error_code make_key_and_request(const std::string& agent_id, KeyAndRequest& out, std::string& detail);

/// The subject CN a request asks for (empty when none), or nullopt with `detail` when the
/// text is not a PEM certificate request whose signature verifies.
std::optional<std::string> request_common_name(std::string_view csr_pem, std::string& detail);

/// A certificate the coordinator signed.
struct SignedAgentCertificate {
  std::string certificate_pem;
  v1::AgentCertificate record;  ///< sha256, agent_id, serial, not_after (issued_at and token_id left to the caller)
};

/**
 * Signs an agent's request with the cluster CA: CN = `agent_id`, CA:FALSE, EKU
 * clientAuth+serverAuth, valid `validity` (backdated 5 minutes like `issue_certificate`).
 * Refused (errc::invalid_argument, the detail starting with the field `csr` or `agent_id`):
 * a request that does not parse or whose signature does not verify, a key other than
 * EC P-256 or Ed25519, a request for a CA (basicConstraints CA:TRUE) or with a CN other
 * than `agent_id`, an id outside the agent id rules (1-64 printable ASCII characters
 * without spaces or '/').
 */
error_code sign_agent_request(std::string_view ca_cert_pem, std::string_view ca_key_pem, std::string_view csr_pem,
                              const std::string& agent_id, std::chrono::seconds validity, SignedAgentCertificate& out,
                              std::string& detail);

/// What a renewal's signature covers: `quartzflow-renew\n<signed_at_unix_ms>\n<csr_pem>`.
std::string renewal_message(std::string_view csr_pem, std::int64_t signed_at_unix_ms);
/// base64 of `key_pem`'s signature (SHA-256; Ed25519 signs the message itself) over `message`.
error_code sign_with_key(std::string_view key_pem, std::string_view message, std::string& signature_base64,
                         std::string& detail);
/**
 * Checks a renewal's authentication: `certificate_pem` is signed by the CA, valid at `now`,
 * and its public key made `signature_base64` over `message`. Returns the certificate's CN,
 * or nullopt with `detail` (the field and the reason).
 */
std::optional<std::string> verify_renewal(std::string_view ca_cert_pem, std::string_view certificate_pem,
                                          std::string_view message, std::string_view signature_base64,
                                          std::chrono::system_clock::time_point now, std::string& detail);

/**
 * When an agent renews the certificate in `cert_pem`: after two thirds of its validity as
 * issued (not counting the 5 minutes it is backdated). nullopt when it does not parse.
 */
std::optional<std::chrono::system_clock::time_point> certificate_renewal_time(std::string_view cert_pem);

}  // namespace quartzflow
