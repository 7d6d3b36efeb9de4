// SPDX-License-Identifier: Apache-2.0
// Admin API: agent enrolment. Join tokens (create, list, revoke; admins), POST /enrol (the
// token is the only credential) and /enrol/renew (the current certificate's key signs the
// new request), and the revocation of an agent's certificates, enforced at the agent endpoint.
#include <algorithm>
#include <cctype>
#include <cstdlib>

#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include <quartzflow/enrolment.hpp>
#include <quartzflow/log.hpp>

#include "../auth/auth_detail.hpp"
#include "../common/clock.hpp"
#include "admin_api.hpp"

namespace quartzflow::detail {
namespace {

using CallPtr = std::shared_ptr<ApiCall>;

constexpr int k_public = 0;
constexpr int k_admin = 3;
constexpr std::uint32_t k_default_token_seconds = 3600;
constexpr std::uint32_t k_min_token_seconds = 60;
constexpr std::uint32_t k_max_token_seconds = 30 * 24 * 3600;
constexpr std::uint32_t k_max_token_uses = 10000;
constexpr std::size_t k_max_description = 200;
/// A renewal signed further from the coordinator's clock than this is refused (replay bound).
constexpr std::int64_t k_renewal_clock_window_ms = 5 * 60 * 1000;
/// How often the revoked certificates are read again (revocations through another coordinator).
constexpr std::chrono::seconds k_revocation_refresh{5};

[[noreturn]] void refuse(v1::ApiErrorCode code, std::string message, std::string field = {}, std::string reason = {}) {
  ApiFailure failure{code, std::move(message), {}};
  if (!field.empty()) failure.add_violation(std::move(field), std::move(reason));
  throw ApiException{std::move(failure)};
}

[[noreturn]] void refuse_field(std::string_view what, std::string field, std::string reason) {
  refuse(v1::API_ERROR_CODE_INVALID_ARGUMENT, fmt::format("invalid {}: {}: {}", what, field, reason), field, reason);
}

template <typename Message>
bool body_into(ApiCall& call, Message& message) {
  if (auto failure = parse_body(call.request.body, message)) {
    call.fail(*failure);
    return false;
  }
  return true;
}

/// An agent id made from a host name: its letters, digits, '-' and '.', at most 40, and a
/// random suffix so that two hosts of one name do not collide.
std::string agent_id_from_host(const std::string& hostname) {
  std::string base;
  for (const char c : hostname.substr(0, 40))
    base += std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' ? c : '-';
  if (base.empty()) base = "agent";
  const std::string suffix = hex_encode(random_bytes(3));
  return base + "-" + suffix;
}

/// Why `id` cannot be given to a new agent: an agent of that id exists, or a certificate
/// issued to it is not revoked. nullopt when free.
std::optional<std::string> agent_id_taken(StoreTransaction& tx, const std::string& id) {
  if (tx.agent(id))
    return fmt::format("\"{}\" is an existing agent (delete it first to enrol a new host under it)", id);
  for (const auto& certificate : tx.agent_certificates(id))
    if (certificate.revoked_at_unix_ms() == 0)
      return fmt::format("\"{}\" already holds a certificate (revoke it first: qfctl agent revoke {})", id, id);
  return std::nullopt;
}

}  // namespace

void AdminApi::write_enrolment(CallPtr call, std::string action, std::string target_id, WriteWork work,
                               std::function<void(const std::vector<std::string>&)> after) {
  auto failure = std::make_shared<std::optional<ApiFailure>>();
  auto json = std::make_shared<std::string>();
  auto revoked = std::make_shared<std::vector<std::string>>();
  coordinator_.store().transact(
      [call, work = std::move(work), failure, json, revoked](StoreTransaction& tx, error_code& ec) {
        try {
          if (auto result = work(tx, *call)) *json = to_json(*result);
          *revoked = tx.revoked_certificate_hashes();
          return;
        } catch (const ApiException& e) {
          *failure = e.failure;
        } catch (const error& e) {
          *failure = failure_of(e.code(), e.detail(), e.what());
        }
        ec = errc::invalid_argument;  // rolls the transaction back: a refused request changes nothing
      },
      [weak = weak_from_this(), call, failure, json, revoked, action = std::move(action),
       target_id = std::move(target_id), after = std::move(after)](error_code ec) {
        auto self = weak.lock();
        if (*failure) {
          // Every refused enrolment is audited (a token guessed, used up, expired), the
          // reason with it; the token's secret never is.
          if (self) self->audit(*call, action, "agent", target_id, target_id, false, (*failure)->message);
          return call->fail(**failure);
        }
        if (ec) return call->fail(v1::API_ERROR_CODE_UNAVAILABLE, fmt::format("store unavailable: {}", ec.message()));
        if (json->empty()) return call->fail(v1::API_ERROR_CODE_INTERNAL, "the request produced no answer");
        if (self && after) after(*revoked);
        call->ok_json(*json);
      });
}

void AdminApi::start_enrolment() {
  auto timer = std::make_shared<boost::asio::steady_timer>(executor_);
  auto refresh = std::make_shared<std::function<void()>>();
  *refresh = [weak = weak_from_this(), timer, weak_refresh = std::weak_ptr(refresh)] {
    auto self = weak.lock();
    if (!self) return;
    auto hashes = std::make_shared<std::vector<std::string>>();
    self->coordinator_.store().read(
        [hashes](StoreTransaction& tx, error_code&) { *hashes = tx.revoked_certificate_hashes(); },
        [weak, hashes, timer, weak_refresh](error_code ec) {
          auto api = weak.lock();
          auto again = weak_refresh.lock();
          if (!api || !again) return;
          if (!ec) api->coordinator_.set_revoked_certificates({hashes->begin(), hashes->end()});
          timer->expires_after(k_revocation_refresh);
          timer->async_wait([again](const error_code& e) {
            if (!e) (*again)();
          });
        });
  };
  revocation_refresh_ = refresh;
  (*refresh)();
}

void AdminApi::add_enrolment_routes() {
  const auto& enrolment = options_.enrolment;
  std::string ca_hash_detail;
  const std::string ca_sha256 =
      enrolment.ca_cert_pem.empty() ? std::string() : certificate_sha256(enrolment.ca_cert_pem, true, ca_hash_detail);
  const bool enabled = !enrolment.ca_key_pem.empty() && !ca_sha256.empty();
  auto require_enabled = [enabled](ApiCall& call) {
    if (enabled) return true;
    call.fail(v1::API_ERROR_CODE_UNAVAILABLE,
              "agent enrolment is off on this coordinator: set enrolment.ca_key_file in its configuration");
    return false;
  };

  add(
      "POST", "/api/v1/enrolment-tokens", k_admin, v1::CreateEnrolmentTokenRequest::descriptor(),
      v1::CreateEnrolmentTokenResponse::descriptor(),
      "Create a join token for `qf-agent --join` (single-use unless max_uses; expires; shown once)",
      [this, require_enabled, ca_sha256](CallPtr call) {
        v1::CreateEnrolmentTokenRequest request;
        if (!body_into(*call, request) || !require_enabled(*call)) return;
        const auto seconds = request.expires_in_seconds() == 0 ? k_default_token_seconds : request.expires_in_seconds();
        const auto what = std::string_view("enrolment token");
        try {
          if (seconds < k_min_token_seconds || seconds > k_max_token_seconds)
            refuse_field(what, "expires_in_seconds",
                         fmt::format("{} is out of range {}-{}", seconds, k_min_token_seconds, k_max_token_seconds));
          if (request.max_uses() > k_max_token_uses)
            refuse_field(what, "max_uses",
                         fmt::format("{} is out of range 1-{}", request.max_uses(), k_max_token_uses));
          if (request.description().size() > k_max_description)
            refuse_field(what, "description", fmt::format("is longer than {} bytes", k_max_description));
        } catch (const ApiException& e) {
          return call->fail(e.failure);
        }
        const JoinToken join = make_join_token(ca_sha256);
        auto text = std::make_shared<std::string>(format_join_token(join));
        write_enrolment(call, "enrolment_token.create", join.id,
                        [request, join, seconds, text](StoreTransaction& tx,
                                                       const ApiCall& c) -> std::unique_ptr<google::protobuf::Message> {
                          StoredEnrolmentToken stored;
                          auto& token = stored.token;
                          token.set_id(join.id);
                          if (!request.group_id().empty()) {
                            auto group = tx.group(request.group_id());
                            if (!group) group = tx.group_by_name(request.group_id());
                            if (!group)
                              refuse(v1::API_ERROR_CODE_NOT_FOUND,
                                     fmt::format("no group with id or name \"{}\"", request.group_id()), "group_id",
                                     "no such group");
                            token.set_group_id(group->id());
                          }
                          const auto now = now_unix_ms();
                          token.set_max_uses(std::max<std::uint32_t>(request.max_uses(), 1));
                          token.set_expires_at_unix_ms(now + std::int64_t{seconds} * 1000);
                          token.set_created_at_unix_ms(now);
                          token.set_created_by(c.actor.token_name.empty() ? c.actor.name : c.actor.token_name);
                          token.set_description(request.description());
                          stored.secret_sha256 = join_token_secret_hash(join.secret);
                          tx.put_enrolment_token(stored);
                          tx.append_audit(make_audit_entry(c.actor, "enrolment_token.create", "enrolment_token",
                                                           token.id(), token.id(), true, {}, nullptr, &token));
                          auto response = std::make_unique<v1::CreateEnrolmentTokenResponse>();
                          *response->mutable_token() = token;
                          response->set_join_token(*text);
                          return response;
                        });
      },
      201);
  add("GET", "/api/v1/enrolment-tokens", k_admin, nullptr, v1::ListEnrolmentTokensResponse::descriptor(),
      "Join tokens, newest first (their secrets are never shown again)", [this](CallPtr call) {
        read(call, [](StoreTransaction& tx, const ApiCall&) -> std::unique_ptr<google::protobuf::Message> {
          auto response = std::make_unique<v1::ListEnrolmentTokensResponse>();
          for (auto& token : tx.enrolment_tokens()) *response->add_items() = std::move(token);
          return response;
        });
      });
  add("DELETE", "/api/v1/enrolment-tokens/{id}", k_admin, nullptr, v1::EnrolmentToken::descriptor(),
      "Revoke a join token: no agent joins with it from now on", [this](CallPtr call) {
        const std::string id = call->params.at("id");
        write_enrolment(call, "enrolment_token.revoke", id,
                        [id](StoreTransaction& tx, const ApiCall& c) -> std::unique_ptr<google::protobuf::Message> {
                          auto stored = tx.enrolment_token(id);
                          if (!stored)
                            refuse(v1::API_ERROR_CODE_NOT_FOUND,
                                   fmt::format("no enrolment token with id \"{}\"", id.substr(0, 64)));
                          if (!stored->token.revoked()) {
                            const auto before = stored->token;
                            stored->token.set_revoked(true);
                            tx.put_enrolment_token(*stored);
                            tx.append_audit(make_audit_entry(c.actor, "enrolment_token.revoke", "enrolment_token", id,
                                                             id, true, {}, &before, &stored->token));
                          }
                          return std::make_unique<v1::EnrolmentToken>(stored->token);
                        });
      });

  add("GET", "/api/v1/enrol/ca", k_public, nullptr, v1::EnrolmentCaResponse::descriptor(),
      "The cluster CA certificate (public): a joining agent checks it against the hash in its token",
      [this, require_enabled](CallPtr call) {
        if (!require_enabled(*call)) return;
        v1::EnrolmentCaResponse response;
        response.set_ca_pem(options_.enrolment.ca_cert_pem);
        call->ok(response);
      });
  add("POST", "/api/v1/enrol", k_public, v1::EnrolRequest::descriptor(), v1::EnrolResponse::descriptor(),
      "Enrol an agent: a join token and a certificate request in, a certificate signed by the cluster CA out",
      [this, require_enabled, ca_sha256](CallPtr call) {
        v1::EnrolRequest request;
        if (!body_into(*call, request) || !require_enabled(*call)) return;
        std::string reason;
        const auto join = parse_join_token(request.join_token(), reason);
        std::string detail;
        const auto asked_id = request_common_name(request.csr_pem(), detail);
        call->actor.name = join ? "join token " + join->id : "join token";
        call->actor.kind = v1::ACTOR_KIND_SYSTEM;
        const std::string audit_target =
            asked_id && !asked_id->empty() ? asked_id->substr(0, 64) : request.hostname().substr(0, 64);
        if (!join) {
          audit(*call, "agent.enrol", "agent", audit_target, audit_target, false, "join_token: " + reason);
          return call->fail(v1::API_ERROR_CODE_INVALID_ARGUMENT, "invalid enrolment: join_token: " + reason,
                            "join_token", reason);
        }
        if (join->ca_sha256 != ca_sha256) {
          const std::string why = "was made for another cluster CA (its CA hash is not this coordinator's)";
          audit(*call, "agent.enrol", "agent", audit_target, audit_target, false, "join_token: " + why);
          return call->fail(v1::API_ERROR_CODE_UNAUTHENTICATED, "join_token: " + why, "join_token", why);
        }
        if (!asked_id) {
          audit(*call, "agent.enrol", "agent", audit_target, audit_target, false, detail);
          return call->fail(v1::API_ERROR_CODE_INVALID_ARGUMENT, "invalid enrolment: " + detail, "csr_pem", detail);
        }
        auto coordinators = std::make_shared<std::vector<std::string>>(options_.enrolment.agent_addresses);
        if (coordinators->empty()) {
          std::string host = call->request.host;
          if (!host.empty() && host.front() == '[') host = host.substr(0, host.find(']') + 1);
          else host = host.substr(0, host.find(':'));
          if (host.empty()) host = "127.0.0.1";
          coordinators->push_back(fmt::format("{}:{}", host, options_.enrolment.agent_port));
        }
        const auto options = options_.enrolment;
        write_enrolment(call, "agent.enrol", audit_target,
                        [request, join = *join, asked_id = *asked_id, options, coordinators](
                            StoreTransaction& tx, const ApiCall& c) -> std::unique_ptr<google::protobuf::Message> {
                          auto stored = tx.enrolment_token(join.id);
                          // One answer for an unknown id and a wrong secret: a caller learns nothing.
                          if (!stored || !join_token_secret_matches(join.secret, stored->secret_sha256))
                            refuse(v1::API_ERROR_CODE_UNAUTHENTICATED, "join_token: unknown token (or a wrong secret)",
                                   "join_token", "unknown token");
                          const auto now = now_unix_ms();
                          if (auto problem = enrolment_token_problem(stored->token, now))
                            refuse(v1::API_ERROR_CODE_UNAUTHENTICATED, fmt::format("join_token: {}", *problem),
                                   "join_token", *problem);
                          std::string agent_id = asked_id;
                          if (agent_id.empty()) {
                            do agent_id = agent_id_from_host(request.hostname());
                            while (agent_id_taken(tx, agent_id));
                          } else if (auto taken = agent_id_taken(tx, agent_id)) {
                            refuse(v1::API_ERROR_CODE_ALREADY_EXISTS, "agent_id: " + *taken, "csr_pem", *taken);
                          }
                          SignedAgentCertificate signed_certificate;
                          std::string sign_detail;
                          if (sign_agent_request(options.ca_cert_pem, options.ca_key_pem, request.csr_pem(), agent_id,
                                                 options.certificate_validity, signed_certificate, sign_detail))
                            refuse(v1::API_ERROR_CODE_INVALID_ARGUMENT, "invalid enrolment: " + sign_detail, "csr_pem",
                                   sign_detail);
                          auto& record = signed_certificate.record;
                          record.set_issued_at_unix_ms(now);
                          record.set_token_id(join.id);
                          tx.put_agent_certificate(record);
                          const auto before = stored->token;
                          stored->token.set_uses(stored->token.uses() + 1);
                          stored->token.add_agent_ids(agent_id);
                          tx.put_enrolment_token(*stored);
                          tx.append_audit(make_audit_entry(
                              c.actor, "agent.enrol", "agent", agent_id, agent_id, true,
                              fmt::format("with join token {} (use {} of {}), group \"{}\", certificate sha256 {}",
                                          join.id, stored->token.uses(), stored->token.max_uses(),
                                          stored->token.group_id(), record.sha256()),
                              nullptr, &record));
                          auto response = std::make_unique<v1::EnrolResponse>();
                          response->set_agent_id(agent_id);
                          response->set_group_id(stored->token.group_id());
                          response->set_certificate_pem(signed_certificate.certificate_pem);
                          response->set_ca_pem(options.ca_cert_pem);
                          for (const auto& address : *coordinators) response->add_coordinators(address);
                          response->set_not_after_unix_ms(record.not_after_unix_ms());
                          return response;
                        });
      });
  add("POST", "/api/v1/enrol/renew", k_public, v1::RenewCertificateRequest::descriptor(),
      v1::EnrolResponse::descriptor(),
      "Renew an agent's certificate: authenticated by the current one (its key signs the new request)",
      [this, require_enabled](CallPtr call) {
        v1::RenewCertificateRequest request;
        if (!body_into(*call, request) || !require_enabled(*call)) return;
        const auto options = options_.enrolment;
        const auto now = now_unix_ms();
        std::string detail;
        std::optional<std::string> agent_id;
        if (std::abs(request.signed_at_unix_ms() - now) > k_renewal_clock_window_ms)
          detail = fmt::format("signed_at_unix_ms: {} is more than 5 minutes from this coordinator's clock ({})",
                               request.signed_at_unix_ms(), now);
        else
          agent_id = verify_renewal(options.ca_cert_pem, request.certificate_pem(),
                                    renewal_message(request.csr_pem(), request.signed_at_unix_ms()),
                                    request.signature(), std::chrono::system_clock::now(), detail);
        call->actor.name = agent_id ? "agent " + *agent_id : "agent";
        if (!agent_id) {
          audit(*call, "agent.renew", "agent", "", "", false, detail);
          return call->fail(v1::API_ERROR_CODE_UNAUTHENTICATED, "renewal refused: " + detail);
        }
        std::string ignored;
        const std::string current_sha256 = certificate_sha256(request.certificate_pem(), false, ignored);
        write_enrolment(
            call, "agent.renew", *agent_id,
            [request, options, id = *agent_id, current_sha256](
                StoreTransaction& tx, const ApiCall& c) -> std::unique_ptr<google::protobuf::Message> {
              if (auto current = tx.agent_certificate(current_sha256); current && current->revoked_at_unix_ms() != 0)
                refuse(v1::API_ERROR_CODE_PERMISSION_DENIED,
                       fmt::format("agent {}: its certificate was revoked; enrol it again with a new join token", id));
              SignedAgentCertificate signed_certificate;
              std::string sign_detail;
              if (sign_agent_request(options.ca_cert_pem, options.ca_key_pem, request.csr_pem(), id,
                                     options.certificate_validity, signed_certificate, sign_detail))
                refuse(v1::API_ERROR_CODE_INVALID_ARGUMENT, "invalid renewal: " + sign_detail, "csr_pem", sign_detail);
              auto& record = signed_certificate.record;
              record.set_issued_at_unix_ms(now_unix_ms());
              tx.put_agent_certificate(record);
              tx.append_audit(make_audit_entry(
                  c.actor, "agent.renew", "agent", id, id, true,
                  fmt::format("certificate sha256 {} replaces {}", record.sha256(), current_sha256), nullptr, &record));
              auto response = std::make_unique<v1::EnrolResponse>();
              response->set_agent_id(id);
              response->set_certificate_pem(signed_certificate.certificate_pem);
              response->set_ca_pem(options.ca_cert_pem);
              response->set_not_after_unix_ms(record.not_after_unix_ms());
              return response;
            });
      });

  add("POST", "/api/v1/agents/{id}/revoke", k_admin, nullptr, v1::RevokeAgentResponse::descriptor(),
      "Revoke an agent: its certificates (issued by enrolment, and the one of its open session) are refused from "
      "now on and its session is closed",
      [this](CallPtr call) {
        const std::string id = call->params.at("id");
        const std::string session_sha256 = coordinator_.session_certificate_sha256(id);
        write_enrolment(
            call, "agent.revoke", id,
            [id, session_sha256](StoreTransaction& tx, const ApiCall& c) -> std::unique_ptr<google::protobuf::Message> {
              const auto now = now_unix_ms();
              auto certificates = tx.agent_certificates(id);
              if (!session_sha256.empty() &&
                  std::none_of(certificates.begin(), certificates.end(),
                               [&](const auto& known) { return known.sha256() == session_sha256; })) {
                if (auto other = tx.agent_certificate(session_sha256)) certificates.push_back(*other);
                else {
                  v1::AgentCertificate seen;  // issued by hand (qfctl certs issue): known by its session
                  seen.set_sha256(session_sha256);
                  seen.set_agent_id(id);
                  certificates.push_back(seen);
                }
              }
              if (certificates.empty())
                refuse(v1::API_ERROR_CODE_NOT_FOUND,
                       fmt::format("agent \"{}\" has no certificate this coordinator knows (none issued by enrolment, "
                                   "no open session here)",
                                   id.substr(0, 64)));
              auto response = std::make_unique<v1::RevokeAgentResponse>();
              response->set_agent_id(id);
              std::string hashes;
              for (auto& certificate : certificates) {
                if (certificate.revoked_at_unix_ms() == 0) {
                  certificate.set_revoked_at_unix_ms(now);
                  tx.put_agent_certificate(certificate);
                  hashes += (hashes.empty() ? "" : ", ") + certificate.sha256();
                }
                *response->add_certificates() = certificate;
              }
              tx.append_audit(
                  make_audit_entry(c.actor, "agent.revoke", "agent", id, id, true,
                                   hashes.empty() ? std::string("already revoked") : "certificates sha256 " + hashes));
              return response;
            },
            [this](const std::vector<std::string>& revoked) {
              coordinator_.set_revoked_certificates({revoked.begin(), revoked.end()});
            });
      });
}

}  // namespace quartzflow::detail
