// SPDX-License-Identifier: Apache-2.0
// The Authenticator's credentials: session and API token checks (through the cache), password
// logins with TOTP and lockout, and logout.
#include "../common/clock.hpp"
#include "authenticator_impl.hpp"

namespace quartzflow {
namespace {

constexpr auto k_cache_ttl = std::chrono::seconds(5);
constexpr std::size_t k_max_cached_credentials = 10000;
constexpr std::size_t k_max_credential_bytes = 512;
constexpr const char* k_bad_login = "invalid username or password";

using namespace detail::account;  // failures, checks, audit helpers (account_rules.hpp)

}  // namespace

void Authenticator::Impl::authenticate(std::string credential, std::string source_ip, Handler<Principal> done) {
  const bool is_session = credential.starts_with(k_session_token_prefix);
  const bool is_token = !is_session && credential.starts_with(k_api_token_prefix);
  if ((!is_session && !is_token) || credential.size() > k_max_credential_bytes)
    return post_result<Principal>(std::move(done), unauthenticated("invalid credentials"));
  source_ip = clip(source_ip, 64);
  auto hash = sha256_hex(credential);
  const auto now = detail::now_unix_ms();
  std::uint64_t generation = 0;
  {
    std::unique_lock lock(mutex_);
    if (auto hit = cache_.find(hash); hit != cache_.end()) {
      const auto& entry = hit->second;
      if (SteadyClock::now() - entry.validated_at < k_cache_ttl &&
          (entry.expires_at_unix_ms == 0 || now < entry.expires_at_unix_ms)) {
        auto principal = entry.principal;
        principal.source_ip = source_ip;
        const bool record_use = is_token && should_record_use_locked(principal.credential_id, 0, now);
        lock.unlock();
        if (record_use) record_token_use(principal.credential_id, source_ip);
        return post_result<Principal>(std::move(done), std::move(principal));
      }
      cache_.erase(hit);
    }
    generation = generation_;
  }

  struct Found {
    CachedCredential credential;
    std::int64_t last_used_unix_ms = 0;
  };
  const bool require_totp = options_.require_totp_for_admins;
  read<Found>(
      [hash, is_session, require_totp, now](StoreTransaction& tx) -> ApiResult<Found> {
        Found found;
        auto& principal = found.credential.principal;
        std::string user_id;
        if (is_session) {
          auto session = tx.session(hash);
          if (!session) return unauthenticated("invalid credentials");
          if (session->expires_at_unix_ms <= now) return unauthenticated("session expired; log in again");
          user_id = session->user_id;
          found.credential.expires_at_unix_ms = session->expires_at_unix_ms;
          principal.kind = v1::ACTOR_KIND_USER;
          principal.credential_id = hash;
        } else {
          auto token = tx.api_token_by_hash(hash);
          if (!token) return unauthenticated("invalid credentials");
          if (token->token.revoked()) return unauthenticated("API token has been revoked");
          if (token->token.expires_at_unix_ms() != 0 && token->token.expires_at_unix_ms() <= now)
            return unauthenticated("API token has expired");
          user_id = token->token.user_id();
          found.credential.expires_at_unix_ms = token->token.expires_at_unix_ms();
          found.last_used_unix_ms = token->token.last_used_unix_ms();
          principal.kind = v1::ACTOR_KIND_API_TOKEN;
          principal.token_name = token->token.name();
          principal.credential_id = token->token.id();
          principal.role = token->token.role();
        }
        auto user = tx.user(user_id);
        if (!user) return unauthenticated("invalid credentials");
        if (user->user.disabled()) return unauthenticated("user is disabled");
        principal.user = user->user;
        if (is_session) {
          principal.role = user->user.role();
          if (require_totp && principal.role == v1::ROLE_ADMIN && user->totp_secret.empty()) {
            principal.role = v1::ROLE_VIEWER;
            principal.totp_enrollment_required = true;
          }
        } else {
          principal.role = lesser_role(principal.role, user->user.role());
        }
        return found;
      },
      [self = shared_from_this(), hash, generation, source_ip, is_token,
       done = std::move(done)](ApiResult<Found> found) mutable {
        if (!found) return done(found.failure());
        auto& validated = found.value().credential;
        validated.principal.source_ip = source_ip;
        bool record_use = false;
        {
          std::lock_guard lock(self->mutex_);
          // An eviction since the read began may be about this credential: not cached then.
          if (generation == self->generation_) {
            if (self->cache_.size() >= k_max_cached_credentials) self->cache_.clear();
            validated.validated_at = SteadyClock::now();
            self->cache_[hash] = validated;
          }
          if (is_token)
            record_use = self->should_record_use_locked(validated.principal.credential_id,
                                                        found.value().last_used_unix_ms, detail::now_unix_ms());
        }
        if (record_use) self->record_token_use(validated.principal.credential_id, source_ip);
        done(std::move(validated.principal));
      });
}

void Authenticator::Impl::login(v1::LoginRequest request, std::string source_ip, std::string user_agent,
                                Handler<v1::LoginResponse> done) {
  std::vector<v1::FieldViolation> violations;
  if (request.username().empty()) violations.push_back(field_violation("username", "is empty"));
  if (request.password().empty()) violations.push_back(field_violation("password", "is empty"));
  else if (request.password().size() > k_max_password_bytes)
    violations.push_back(field_violation("password", fmt::format("is longer than {} bytes", k_max_password_bytes)));
  if (!violations.empty())
    return post_result<v1::LoginResponse>(std::move(done), invalid("login request", std::move(violations)));
  auto shared_request = std::make_shared<const v1::LoginRequest>(std::move(request));
  source_ip = clip(source_ip, 64);
  user_agent = clip(user_agent, 256);
  read<std::optional<StoredUser>>(
      [shared_request](StoreTransaction& tx) -> ApiResult<std::optional<StoredUser>> {
        return tx.user_by_username(shared_request->username());
      },
      [self = shared_from_this(), shared_request, source_ip, user_agent,
       done = std::move(done)](ApiResult<std::optional<StoredUser>> found) mutable {
        if (!found) return done(found.failure());
        const auto& user = found.value();
        // The hash is spent for a locked account too: it answers as an unknown one does,
        // in the same time.
        std::string checked_hash = user ? user->password_hash : std::string();
        self->offload<bool>(
            [self, shared_request, checked_hash]() -> ApiResult<bool> {
              // An unknown user costs the same hashing time as a known one.
              if (checked_hash.empty()) {
                (void)verify_password(shared_request->password(), self->dummy_hash());
                return false;
              }
              return verify_password(shared_request->password(), checked_hash);
            },
            [self, shared_request, source_ip, user_agent, checked_hash,
             done = std::move(done)](ApiResult<bool> verified) mutable {
              if (!verified) return done(verified.failure());
              self->finish_login(shared_request, source_ip, user_agent, verified.value(), checked_hash,
                                 std::move(done));
            });
      });
}

ApiFailure Authenticator::Impl::count_failure(StoreTransaction& tx, const StoredUser& stored, const AuditActor& who,
                                              std::string detail, std::string message) {
  if (count_login_failure(stored.user.id(), who.address))
    detail += fmt::format("; locked for {} s for this address after {} failed logins", options_.lockout.count(),
                          options_.max_failed_logins);
  audit(tx, who, "auth.login_failed", user_target(stored.user), false, std::move(detail));
  return unauthenticated(std::move(message));
}

void Authenticator::Impl::finish_login(std::shared_ptr<const v1::LoginRequest> request, std::string source_ip,
                                       std::string user_agent, bool password_ok, std::string checked_hash,
                                       Handler<v1::LoginResponse> done) {
  write<v1::LoginResponse>(
      [self = shared_from_this(), request, source_ip, user_agent, password_ok, checked_hash](
          StoreTransaction& tx, TxContext& context) -> ApiResult<v1::LoginResponse> {
        context.commit_failure = true;  // failure counts, locks and their audit entries stay
        const auto now = detail::now_unix_ms();
        const auto username = clip(request->username(), k_max_username_characters);
        const AuditActor who{username, v1::ACTOR_KIND_USER, {}, source_ip, user_agent};
        auto stored = tx.user_by_username(request->username());
        if (!stored) {
          audit(tx, who, "auth.login_failed", {"user", "", username}, false, "unknown user");
          return unauthenticated(k_bad_login);
        }
        if (self->locked_out(stored->user.id(), source_ip)) {
          audit(tx, who, "auth.login_failed", user_target(stored->user), false,
                "locked for this address after too many failed logins");
          return unauthenticated(k_bad_login);
        }
        // A password changed since it was checked counts as wrong: the check was against the old one.
        if (!password_ok || stored->password_hash != checked_hash)
          return self->count_failure(tx, *stored, who, "wrong password", k_bad_login);
        if (stored->user.disabled()) {
          audit(tx, who, "auth.login_failed", user_target(stored->user), false, "user is disabled");
          return unauthenticated("user is disabled");
        }
        if (!stored->totp_secret.empty()) {
          if (request->totp_code().empty()) return failure(v1::API_ERROR_CODE_TOTP_REQUIRED, "a TOTP code is required");
          const auto secret = base32_decode(stored->totp_secret);
          const auto step = secret ? match_totp(*secret, request->totp_code(), now / 1000) : std::nullopt;
          if (!step || *step <= stored->totp_last_step)
            return self->count_failure(tx, *stored, who, step ? "reused TOTP code" : "wrong TOTP code",
                                       "invalid TOTP code");
          stored->totp_last_step = *step;
        }
        stored->failed_logins = 0;
        stored->locked_until_unix_ms = 0;
        stored->user.set_last_login_unix_ms(now);
        tx.put_user(*stored);
        self->forget_login_failures(stored->user.id(), source_ip);
        tx.delete_expired_sessions(now);
        const auto token = generate_secret(k_session_token_prefix);
        const auto ttl_ms = std::chrono::duration_cast<std::chrono::milliseconds>(self->options_.session_ttl).count();
        tx.put_session({sha256_hex(token), stored->user.id(), now, now + ttl_ms, source_ip});
        audit(tx, who, "auth.login", user_target(stored->user), true, {});
        v1::LoginResponse response;
        response.set_session_token(token);
        response.set_expires_at_unix_ms(now + ttl_ms);
        *response.mutable_user() = stored->user;
        return response;
      },
      std::move(done));
}

void Authenticator::Impl::logout(std::string session_token, Handler<std::monostate> done) {
  if (!session_token.starts_with(k_session_token_prefix) || session_token.size() > k_max_credential_bytes)
    return post_result<std::monostate>(std::move(done), std::monostate{});
  write<std::monostate>(
      [hash = sha256_hex(session_token)](StoreTransaction& tx, TxContext& context) -> ApiResult<std::monostate> {
        context.evict_credentials.push_back(hash);
        auto session = tx.session(hash);
        if (!session) return std::monostate{};
        tx.delete_session(hash);
        if (auto user = tx.user(session->user_id))
          audit(tx, {user->user.username(), v1::ACTOR_KIND_USER, {}, {}, {}}, "auth.logout", user_target(user->user),
                true, {});
        return std::monostate{};
      },
      std::move(done));
}

}  // namespace quartzflow
