// SPDX-License-Identifier: Apache-2.0
// The Authenticator's TOTP enrolment (RFC 6238): a pending secret, confirmed with a current code.
#include <algorithm>

#include "../common/clock.hpp"
#include "auth_detail.hpp"
#include "authenticator_impl.hpp"

namespace quartzflow {
namespace {

using namespace detail::account;  // failures, checks, audit helpers (account_rules.hpp)

}  // namespace

std::optional<ApiFailure> Authenticator::Impl::needs_session(const Principal& caller) {
  if (caller.kind == v1::ACTOR_KIND_USER) return std::nullopt;
  return failure(v1::API_ERROR_CODE_PERMISSION_DENIED, "TOTP enrollment needs a console session, not an API token");
}

void Authenticator::Impl::totp_enroll(const Principal& caller, Handler<v1::TotpEnrollResponse> done) {
  if (auto refused = needs_session(caller))
    return post_result<v1::TotpEnrollResponse>(std::move(done), std::move(*refused));
  write<v1::TotpEnrollResponse>(
      [caller](StoreTransaction& tx, TxContext&) -> ApiResult<v1::TotpEnrollResponse> {
        auto stored = tx.user(caller.user.id());
        if (!stored) return no_user(caller.user.id());
        if (!stored->totp_secret.empty())
          return failure(v1::API_ERROR_CODE_FAILED_PRECONDITION, "TOTP is already enabled");
        const auto secret = base32_encode(detail::random_bytes(20));  // 160 bits, as RFC 4226 advises
        stored->totp_pending_secret = secret;
        tx.put_user(*stored);
        audit(tx, audit_actor(caller), "auth.totp_enroll", user_target(stored->user), true, {});
        v1::TotpEnrollResponse response;
        response.set_secret_base32(secret);
        response.set_otpauth_uri(totp_uri(stored->user.username(), secret));
        return response;
      },
      std::move(done));
}

void Authenticator::Impl::totp_confirm(const Principal& caller, std::string code, Handler<v1::User> done) {
  if (auto refused = needs_session(caller)) return post_result<v1::User>(std::move(done), std::move(*refused));
  if (code.size() != 6 || !std::all_of(code.begin(), code.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return post_result<v1::User>(std::move(done),
                                 invalid("TOTP confirmation", {field_violation("code", "must be 6 digits")}));
  write<v1::User>(
      [caller, code = std::move(code)](StoreTransaction& tx, TxContext& context) -> ApiResult<v1::User> {
        auto stored = tx.user(caller.user.id());
        if (!stored) return no_user(caller.user.id());
        if (stored->totp_pending_secret.empty())
          return failure(v1::API_ERROR_CODE_FAILED_PRECONDITION, "no TOTP enrollment to confirm; enroll first");
        const auto secret = base32_decode(stored->totp_pending_secret);
        const auto step = secret ? match_totp(*secret, code, detail::now_unix_ms() / 1000) : std::nullopt;
        if (!step)
          return invalid(
              "TOTP confirmation",
              {field_violation("code", "does not match the enrolled secret (is the device's clock right?)")});
        const v1::User before = stored->user;
        stored->totp_secret = std::move(stored->totp_pending_secret);
        stored->totp_pending_secret.clear();
        stored->totp_last_step = *step;
        stored->user.set_totp_enabled(true);
        stored->user.set_updated_at_unix_ms(detail::now_unix_ms());
        tx.put_user(*stored);
        context.evict_users.push_back(stored->user.id());
        audit(tx, audit_actor(caller), "auth.totp_enable", user_target(stored->user), true, {}, &before, &stored->user);
        return stored->user;
      },
      std::move(done));
}

}  // namespace quartzflow
