// SPDX-License-Identifier: Apache-2.0
// Agent enrolment: join tokens (text, hash, expiry, uses), the CA's signature of agents'
// requests and what it refuses, and the proof of possession of a renewal.
#include <quartzflow/enrolment.hpp>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <quartzflow/certs.hpp>

#include "temp_dir.hpp"

namespace qf = quartzflow;
using quartzflow::testing::TempDir;

namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

struct Ca {
  TempDir dir{"qf-enrol"};
  std::string cert_pem;
  std::string key_pem;
  Ca() {
    const auto files = qf::create_ca(dir.path().string());
    cert_pem = read_text(files.cert_file);
    key_pem = read_text(files.key_file);
  }
};

/// A request signed with a key of `algorithm`/`curve`, CN `name`, optionally asking for CA:TRUE.
std::string request_with(const char* algorithm, const char* parameter, const std::string& name, bool ask_for_ca) {
  EVP_PKEY* key = parameter ? EVP_PKEY_Q_keygen(nullptr, nullptr, algorithm, parameter)
                            : EVP_PKEY_Q_keygen(nullptr, nullptr, algorithm, static_cast<size_t>(2048));
  REQUIRE(key != nullptr);
  X509_REQ* request = X509_REQ_new();
  X509_NAME_add_entry_by_NID(X509_REQ_get_subject_name(request), NID_commonName, MBSTRING_UTF8,
                             reinterpret_cast<const unsigned char*>(name.data()), static_cast<int>(name.size()), -1, 0);
  X509_REQ_set_pubkey(request, key);
  if (ask_for_ca) {
    STACK_OF(X509_EXTENSION)* extensions = sk_X509_EXTENSION_new_null();
    sk_X509_EXTENSION_push(extensions,
                           X509V3_EXT_conf_nid(nullptr, nullptr, NID_basic_constraints, "critical,CA:TRUE"));
    X509_REQ_add_extensions(request, extensions);
    sk_X509_EXTENSION_pop_free(extensions, X509_EXTENSION_free);
  }
  REQUIRE(X509_REQ_sign(request, key, EVP_PKEY_is_a(key, "ED25519") ? nullptr : EVP_sha256()) > 0);
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509_REQ(bio, request);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<std::size_t>(size));
  BIO_free(bio);
  X509_REQ_free(request);
  EVP_PKEY_free(key);
  return pem;
}

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

TEST_CASE("a join token's text parses back and only a hash of its secret is kept", "[enrolment]") {
  const auto token = qf::make_join_token(std::string(43, 'A'));
  const std::string text = qf::format_join_token(token);
  std::string reason;
  const auto parsed = qf::parse_join_token("  " + text + "\n", reason);
  REQUIRE(parsed);
  CHECK(parsed->id == token.id);
  CHECK(parsed->secret == token.secret);
  CHECK(parsed->ca_sha256 == token.ca_sha256);
  const std::string hash = qf::join_token_secret_hash(token.secret);
  CHECK(hash.size() == 64);
  CHECK(hash.find(token.secret) == std::string::npos);
  CHECK(qf::join_token_secret_matches(token.secret, hash));
  CHECK_FALSE(qf::join_token_secret_matches(qf::make_join_token(token.ca_sha256).secret, hash));
  CHECK(qf::make_join_token(token.ca_sha256).id != token.id);

  CHECK_FALSE(qf::parse_join_token(text.substr(0, text.size() - 1), reason));
  CHECK(reason.find("CA hash") != std::string::npos);
  CHECK_FALSE(qf::parse_join_token("qf_" + token.secret, reason));
  CHECK(reason.find("not a join token") != std::string::npos);
  std::string other_version = text;
  other_version[3] = '2';
  CHECK_FALSE(qf::parse_join_token(other_version, reason));
  CHECK(reason.find(token.secret) == std::string::npos);
}

TEST_CASE("a join token is refused once expired, used up or revoked", "[enrolment]") {
  const auto now = now_ms();
  qf::v1::EnrolmentToken token;
  token.set_max_uses(2);
  token.set_uses(1);
  token.set_expires_at_unix_ms(now + 60'000);
  CHECK_FALSE(qf::enrolment_token_problem(token, now));
  CHECK(qf::enrolment_token_problem(token, now + 60'000).value_or("").find("expired at") != std::string::npos);
  token.set_uses(2);
  CHECK(qf::enrolment_token_problem(token, now).value_or("") == "it is used up (2 of 2 use(s))");
  token.set_max_uses(0);  // stored before a default was applied: single-use
  token.set_uses(1);
  CHECK(qf::enrolment_token_problem(token, now).value_or("") == "it is used up (1 of 1 use(s))");
  token.set_uses(0);
  CHECK_FALSE(qf::enrolment_token_problem(token, now));
  token.set_revoked(true);
  CHECK(qf::enrolment_token_problem(token, now).value_or("") == "it was revoked");
}

TEST_CASE("the cluster CA signs an agent's request as an end-entity certificate of its id", "[enrolment]") {
  Ca ca;
  qf::KeyAndRequest pair;
  std::string detail;
  REQUIRE_FALSE(qf::make_key_and_request("web-1", pair, detail));
  CHECK(qf::request_common_name(pair.csr_pem, detail).value_or("?") == "web-1");
  qf::SignedAgentCertificate signed_certificate;
  REQUIRE_FALSE(qf::sign_agent_request(ca.cert_pem, ca.key_pem, pair.csr_pem, "web-1", std::chrono::hours{24},
                                       signed_certificate, detail));
  CHECK(signed_certificate.record.agent_id() == "web-1");
  CHECK(signed_certificate.record.sha256() ==
        qf::certificate_sha256(signed_certificate.certificate_pem, false, detail));
  CHECK_FALSE(signed_certificate.record.serial().empty());
  CHECK(signed_certificate.record.not_after_unix_ms() > now_ms() + 23 * 3600 * 1000);

  // Verified by OpenSSL against the CA, for the agent's own key, and not a CA itself.
  std::string signature;
  REQUIRE_FALSE(qf::sign_with_key(pair.key_pem, "hello", signature, detail));
  CHECK(qf::verify_renewal(ca.cert_pem, signed_certificate.certificate_pem, "hello", signature,
                           std::chrono::system_clock::now(), detail)
            .value_or("?") == "web-1");
  BIO* bio = BIO_new_mem_buf(signed_certificate.certificate_pem.data(), -1);
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  REQUIRE(cert != nullptr);
  CHECK(X509_check_ca(cert) == 0);
  CHECK((X509_get_extended_key_usage(cert) & XKU_SSL_CLIENT) != 0);
  X509_free(cert);

  // A request without a CN takes the id the coordinator picked.
  REQUIRE_FALSE(qf::make_key_and_request("", pair, detail));
  CHECK(qf::request_common_name(pair.csr_pem, detail).value_or("?").empty());
  CHECK_FALSE(qf::sign_agent_request(ca.cert_pem, ca.key_pem, pair.csr_pem, "host-9f00aa", std::chrono::seconds{60},
                                     signed_certificate, detail));
  CHECK(signed_certificate.record.agent_id() == "host-9f00aa");
  // Ed25519 keys are taken too.
  CHECK_FALSE(qf::sign_agent_request(ca.cert_pem, ca.key_pem, request_with("ED25519", "", "ed-1", false), "ed-1",
                                     std::chrono::seconds{60}, signed_certificate, detail));
}

TEST_CASE("the CA refuses a request with the wrong key type, for a CA, or for an id not allowed", "[enrolment]") {
  Ca ca;
  qf::SignedAgentCertificate out;
  std::string detail;
  const auto refused = [&](const std::string& csr, const std::string& id) {
    detail.clear();
    out = {};
    const auto ec = qf::sign_agent_request(ca.cert_pem, ca.key_pem, csr, id, std::chrono::hours{1}, out, detail);
    CHECK(out.certificate_pem.empty());
    return ec == qf::errc::invalid_argument;
  };
  CHECK(refused(request_with("RSA", nullptr, "web-1", false), "web-1"));
  CHECK(detail == "csr: the key is RSA (EC P-256 or Ed25519 are accepted)");
  CHECK(refused(request_with("EC", "P-384", "web-1", false), "web-1"));
  CHECK(detail == "csr: the key is EC secp384r1 (EC P-256 or Ed25519 are accepted)");
  CHECK(refused(request_with("EC", "P-256", "web-1", true), "web-1"));
  CHECK(detail.find("csr: asks for a CA certificate") == 0);
  CHECK(refused(request_with("EC", "P-256", "other", false), "web-1"));
  CHECK(detail == "csr: its common name \"other\" is not the agent id \"web-1\"");
  for (const std::string& id : std::vector<std::string>{"a b", "x/y", std::string(65, 'a'), std::string()}) {
    CHECK(refused(request_with("EC", "P-256", id, false), id));
    CHECK(detail.find("agent_id: ") == 0);
  }
  CHECK(refused("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "web-1"));
  CHECK(detail.find("csr: not a PEM certificate request") == 0);
  qf::KeyAndRequest pair;
  CHECK(qf::make_key_and_request("a b", pair, detail) == qf::errc::invalid_argument);
  CHECK(pair.key_pem.empty());
}

TEST_CASE("a renewal is authenticated by the current certificate's key, within its validity", "[enrolment]") {
  Ca ca;
  Ca other_ca;
  qf::KeyAndRequest pair;
  qf::KeyAndRequest intruder;
  qf::SignedAgentCertificate current;
  std::string detail;
  REQUIRE_FALSE(qf::make_key_and_request("web-1", pair, detail));
  REQUIRE_FALSE(qf::make_key_and_request("web-1", intruder, detail));
  REQUIRE_FALSE(qf::sign_agent_request(ca.cert_pem, ca.key_pem, pair.csr_pem, "web-1", std::chrono::seconds{90},
                                       current, detail));
  const auto message = qf::renewal_message(intruder.csr_pem, 1234);
  CHECK(message.rfind("quartzflow-renew\n1234\n-----BEGIN CERTIFICATE REQUEST-----", 0) == 0);
  std::string good;
  std::string forged;
  REQUIRE_FALSE(qf::sign_with_key(pair.key_pem, message, good, detail));
  REQUIRE_FALSE(qf::sign_with_key(intruder.key_pem, message, forged, detail));
  const auto now = std::chrono::system_clock::now();
  CHECK(qf::verify_renewal(ca.cert_pem, current.certificate_pem, message, good, now, detail).value_or("?") == "web-1");
  CHECK_FALSE(qf::verify_renewal(ca.cert_pem, current.certificate_pem, message, forged, now, detail));
  CHECK(detail == "signature: not made by the key of certificate_pem");
  CHECK_FALSE(qf::verify_renewal(ca.cert_pem, current.certificate_pem, message + "x", good, now, detail));
  CHECK_FALSE(qf::verify_renewal(other_ca.cert_pem, current.certificate_pem, message, good, now, detail));
  CHECK(detail.find("certificate_pem: ") == 0);
  CHECK_FALSE(
      qf::verify_renewal(ca.cert_pem, current.certificate_pem, message, good, now + std::chrono::minutes{2}, detail));
  CHECK(detail == "certificate_pem: certificate has expired");

  // Renewed after two thirds of the validity it was issued with (the backdating aside).
  const auto renew_at = qf::certificate_renewal_time(current.certificate_pem);
  REQUIRE(renew_at);
  const auto after = std::chrono::duration_cast<std::chrono::seconds>(*renew_at - now).count();
  CHECK(after >= 58);
  CHECK(after <= 61);
}
