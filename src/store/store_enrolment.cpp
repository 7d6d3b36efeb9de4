// SPDX-License-Identifier: Apache-2.0
// Agent enrolment in the StoreTransaction: join tokens (secrets only as SHA-256 hashes) and
// the certificates the coordinator issued, with their revocation.
#include <algorithm>

#include "sql_transaction.hpp"
#include "store_rules.hpp"

namespace quartzflow::detail {

std::optional<StoredEnrolmentToken> SqlStoreTransaction::enrolment_token(std::string_view id) {
  auto rows = statement("SELECT record, secret_sha256 FROM enrolment_tokens WHERE id = ?1");
  rows.bind(1, id);
  if (!rows.next()) return std::nullopt;
  StoredEnrolmentToken out;
  parse_record(rows.blob(0), out.token);
  out.secret_sha256 = rows.text(1);
  return out;
}

void SqlStoreTransaction::put_enrolment_token(const StoredEnrolmentToken& stored) {
  require_writable("put_enrolment_token");
  if (stored.token.id().empty()) throw_invalid("enrolment token", "id", "is empty");
  if (stored.secret_sha256.empty()) throw_invalid("enrolment token", "secret_sha256", "is empty");
  statement(
      "INSERT INTO enrolment_tokens (id, secret_sha256, created_unix_ms, record) VALUES (?1, ?2, ?3, ?4) "
      "ON CONFLICT (id) DO UPDATE SET secret_sha256 = excluded.secret_sha256, record = excluded.record")
      .bind(1, stored.token.id())
      .bind(2, stored.secret_sha256)
      .bind(3, stored.token.created_at_unix_ms())
      .bind_blob(4, serialize_deterministic(stored.token))
      .run();
}

std::vector<v1::EnrolmentToken> SqlStoreTransaction::enrolment_tokens() {
  auto rows = statement("SELECT record FROM enrolment_tokens ORDER BY created_unix_ms DESC, id");
  std::vector<v1::EnrolmentToken> out;
  while (rows.next()) parse_record(rows.blob(0), out.emplace_back());
  return out;
}

void SqlStoreTransaction::put_agent_certificate(const v1::AgentCertificate& certificate) {
  require_writable("put_agent_certificate");
  if (certificate.sha256().empty()) throw_invalid("agent certificate", "sha256", "is empty");
  if (certificate.agent_id().empty()) throw_invalid("agent certificate", "agent_id", "is empty");
  statement(
      "INSERT INTO agent_certificates (sha256, agent_id, revoked_unix_ms, record) VALUES (?1, ?2, ?3, ?4) "
      "ON CONFLICT (sha256) DO UPDATE SET agent_id = excluded.agent_id, revoked_unix_ms = excluded.revoked_unix_ms, "
      "record = excluded.record")
      .bind(1, certificate.sha256())
      .bind(2, certificate.agent_id())
      .bind(3, certificate.revoked_at_unix_ms())
      .bind_blob(4, serialize_deterministic(certificate))
      .run();
}

std::optional<v1::AgentCertificate> SqlStoreTransaction::agent_certificate(std::string_view sha256) {
  auto rows = statement("SELECT record FROM agent_certificates WHERE sha256 = ?1");
  rows.bind(1, sha256);
  if (!rows.next()) return std::nullopt;
  v1::AgentCertificate out;
  parse_record(rows.blob(0), out);
  return out;
}

std::vector<v1::AgentCertificate> SqlStoreTransaction::agent_certificates(std::string_view agent_id) {
  auto rows = statement("SELECT record FROM agent_certificates WHERE agent_id = ?1");
  rows.bind(1, agent_id);
  std::vector<v1::AgentCertificate> out;
  while (rows.next()) parse_record(rows.blob(0), out.emplace_back());
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.issued_at_unix_ms() < b.issued_at_unix_ms(); });
  return out;
}

std::vector<std::string> SqlStoreTransaction::revoked_certificate_hashes() {
  auto rows = statement("SELECT sha256 FROM agent_certificates WHERE revoked_unix_ms > 0 ORDER BY sha256");
  std::vector<std::string> out;
  while (rows.next()) out.push_back(rows.text(0));
  return out;
}

}  // namespace quartzflow::detail
