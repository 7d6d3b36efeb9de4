// SPDX-License-Identifier: Apache-2.0
// The Authenticator's API tokens: create (the secret shown once), list and revoke.
#include "../common/clock.hpp"
#include "auth_detail.hpp"
#include "authenticator_impl.hpp"

namespace quartzflow {
namespace {

constexpr std::size_t k_max_token_name_characters = 64;

using namespace detail::account;  // failures, checks, audit helpers (account_rules.hpp)
using detail::utf8_characters;

}  // namespace

void Authenticator::Impl::create_token(const Principal& caller, v1::CreateApiTokenRequest request, Actor actor,
                                       Handler<v1::CreateApiTokenResponse> done) {
  std::vector<v1::FieldViolation> violations;
  const auto& name = request.name();
  if (name.empty()) violations.push_back(field_violation("name", "is empty"));
  else if (utf8_characters(name) > k_max_token_name_characters || has_control_character(name))
    violations.push_back(
        field_violation("name", fmt::format("must be 1-{} printable characters", k_max_token_name_characters)));
  if (request.role() != v1::ROLE_UNSPECIFIED && !v1::Role_IsValid(request.role()))
    violations.push_back(field_violation("role", fmt::format("{} is not a Role", static_cast<int>(request.role()))));
  const auto now = detail::now_unix_ms();
  if (request.expires_at_unix_ms() != 0 && request.expires_at_unix_ms() <= now)
    violations.push_back(field_violation("expires_at_unix_ms", "is not in the future"));
  if (!violations.empty())
    return post_result<v1::CreateApiTokenResponse>(
        std::move(done), invalid(fmt::format("API token \"{}\"", clip(name, 64)), std::move(violations)));
  const auto role = request.role() == v1::ROLE_UNSPECIFIED ? caller.role : request.role();
  if (!role_at_least(caller.role, role))
    return post_result<v1::CreateApiTokenResponse>(
        std::move(done),
        failure(
            v1::API_ERROR_CODE_PERMISSION_DENIED,
            fmt::format("a token's role cannot be above the caller's ({})", v1::Role_Name(caller.role)),
            {field_violation("role", fmt::format("{} is above {}", v1::Role_Name(role), v1::Role_Name(caller.role)))}));
  write<v1::CreateApiTokenResponse>(
      [caller, request = std::move(request), actor = std::move(actor), role](
          StoreTransaction& tx, TxContext&) -> ApiResult<v1::CreateApiTokenResponse> {
        const auto created_at = detail::now_unix_ms();
        auto owner = tx.user(caller.user.id());
        if (!owner || owner->user.disabled()) return unauthenticated("user is disabled or gone");
        if (!role_at_least(owner->user.role(), role))
          return failure(
              v1::API_ERROR_CODE_PERMISSION_DENIED,
              fmt::format("a token's role cannot be above its owner's ({})", v1::Role_Name(owner->user.role())),
              {field_violation("role",
                               fmt::format("{} is above {}", v1::Role_Name(role), v1::Role_Name(owner->user.role())))});
        for (const auto& existing : tx.api_tokens(owner->user.id())) {
          if (existing.name() != request.name()) continue;
          if (!existing.revoked())
            return failure(v1::API_ERROR_CODE_ALREADY_EXISTS,
                           fmt::format("an API token named \"{}\" already exists", request.name()),
                           {field_violation("name", fmt::format("\"{}\" is already used", request.name()))});
          // A revoked token gives its name up (it stays, renamed, for the audit trail).
          if (auto revoked = tx.api_token(existing.id())) {
            revoked->token.set_name(fmt::format("{} (revoked {})", existing.name(), existing.id()));
            tx.put_api_token(*revoked);
          }
        }
        const auto secret = generate_secret(k_api_token_prefix);
        StoredApiToken stored;
        auto& token = stored.token;
        token.set_id(random_id("tok_"));
        token.set_name(request.name());
        token.set_role(role);
        token.set_user_id(owner->user.id());
        token.set_token_prefix(secret.substr(0, 8));
        token.set_expires_at_unix_ms(request.expires_at_unix_ms());
        token.set_created_at_unix_ms(created_at);
        stored.secret_sha256 = sha256_hex(secret);
        tx.put_api_token(stored);
        audit(tx, audit_actor(caller, actor), "token.create", {"token", token.id(), token.name()}, true,
              fmt::format("for user {}", owner->user.username()), nullptr, &token);
        v1::CreateApiTokenResponse response;
        *response.mutable_token() = token;
        response.set_secret(secret);
        return response;
      },
      std::move(done));
}

void Authenticator::Impl::list_tokens(const Principal& caller, Handler<v1::ListApiTokensResponse> done) {
  const std::string user_id = caller.role == v1::ROLE_ADMIN ? std::string() : caller.user.id();
  if (user_id.empty() && caller.role != v1::ROLE_ADMIN)
    return post_result<v1::ListApiTokensResponse>(std::move(done), v1::ListApiTokensResponse{});
  read<v1::ListApiTokensResponse>(
      [user_id](StoreTransaction& tx) -> ApiResult<v1::ListApiTokensResponse> {
        v1::ListApiTokensResponse response;
        for (auto& token : tx.api_tokens(user_id)) *response.add_items() = std::move(token);
        return response;
      },
      std::move(done));
}

void Authenticator::Impl::revoke_token(const Principal& caller, std::string id, Actor actor,
                                       Handler<v1::ApiToken> done) {
  write<v1::ApiToken>(
      [caller, id = std::move(id), actor = std::move(actor)](StoreTransaction& tx,
                                                             TxContext& context) -> ApiResult<v1::ApiToken> {
        auto stored = tx.api_token(id);
        // Someone else's token is as good as missing to a non-admin.
        if (!stored || (caller.role != v1::ROLE_ADMIN && stored->token.user_id() != caller.user.id()))
          return failure(v1::API_ERROR_CODE_NOT_FOUND, fmt::format("no API token with id \"{}\"", clip(id, 128)));
        context.evict_credentials.push_back(stored->secret_sha256);
        context.forget_tokens.push_back(stored->token.id());
        if (stored->token.revoked()) return stored->token;
        const v1::ApiToken before = stored->token;
        stored->token.set_revoked(true);
        tx.put_api_token(*stored);
        audit(tx, audit_actor(caller, actor), "token.revoke", {"token", before.id(), before.name()}, true, {}, &before,
              &stored->token);
        return stored->token;
      },
      std::move(done));
}

}  // namespace quartzflow
