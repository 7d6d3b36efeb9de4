// SPDX-License-Identifier: Apache-2.0
// The Authenticator's users: create, read, list, update, delete, unlock and password changes.
#include <algorithm>

#include "../common/clock.hpp"
#include "authenticator_impl.hpp"

namespace quartzflow {
namespace {

using namespace detail::account;  // failures, checks, audit helpers (account_rules.hpp)

}  // namespace

void Authenticator::Impl::create_user(v1::CreateUserRequest request, Actor actor, Handler<v1::User> done) {
  std::vector<v1::FieldViolation> violations;
  check_username("user.username", request.user().username(), violations);
  check_password("password", request.password(), request.user().username(), violations);
  check_user_fields(request.user(), violations);
  const auto input = fmt::format("user \"{}\"", clip(request.user().username(), k_max_username_characters));
  if (!violations.empty()) return post_result<v1::User>(std::move(done), invalid(input, std::move(violations)));
  auto shared_request = std::make_shared<const v1::CreateUserRequest>(std::move(request));
  // A taken name is refused before spending the hash on it.
  read<std::monostate>(
      [shared_request](StoreTransaction& tx) -> ApiResult<std::monostate> {
        if (tx.user_by_username(shared_request->user().username())) return already_taken(shared_request->user());
        return std::monostate{};
      },
      [self = shared_from_this(), shared_request, actor = std::move(actor),
       done = std::move(done)](ApiResult<std::monostate> free) mutable {
        if (!free) return done(free.failure());
        self->offload<std::string>(
            [self, shared_request]() -> ApiResult<std::string> {
              return hash_password(shared_request->password(), self->options_.pbkdf2_iterations);
            },
            [self, shared_request, actor, done = std::move(done)](ApiResult<std::string> hash) mutable {
              if (!hash) return done(hash.failure());
              self->write<v1::User>(
                  [shared_request, actor, hash = std::move(hash).value()](StoreTransaction& tx,
                                                                          TxContext&) -> ApiResult<v1::User> {
                    if (tx.user_by_username(shared_request->user().username()))
                      return already_taken(shared_request->user());
                    auto stored = new_user(shared_request->user(), hash);
                    stored.user.set_password_change_required(shared_request->require_password_change());
                    tx.put_user(stored);
                    audit(tx, audit_actor(actor), "user.create", user_target(stored.user), true, {}, nullptr,
                          &stored.user);
                    return stored.user;
                  },
                  std::move(done));
            });
      });
}

ApiFailure Authenticator::Impl::already_taken(const v1::User& user) {
  return failure(v1::API_ERROR_CODE_ALREADY_EXISTS, fmt::format("user \"{}\" already exists", user.username()),
                 {field_violation("user.username", fmt::format("\"{}\" is already taken", user.username()))});
}

ApiFailure Authenticator::Impl::no_user(std::string_view id) {
  return failure(v1::API_ERROR_CODE_NOT_FOUND, fmt::format("no user with id \"{}\"", clip(id, 128)));
}

void Authenticator::Impl::get_user(std::string id, Handler<v1::User> done) {
  read<v1::User>(
      [id = std::move(id)](StoreTransaction& tx) -> ApiResult<v1::User> {
        auto stored = tx.user(id);
        if (!stored) return no_user(id);
        return stored->user;
      },
      std::move(done));
}

void Authenticator::Impl::list_users(v1::ListUsersRequest request, Handler<v1::ListUsersResponse> done) {
  read<v1::ListUsersResponse>(
      [request = std::move(request)](StoreTransaction& tx) -> ApiResult<v1::ListUsersResponse> {
        auto listing = tx.list_users(request);
        v1::ListUsersResponse response;
        for (auto& user : listing.items) *response.add_items() = std::move(user);
        response.set_total(listing.total);
        response.set_page(std::max<std::uint32_t>(request.page(), 1));
        response.set_page_size(request.page_size() == 0 ? 20 : std::min<std::uint32_t>(request.page_size(), 500));
        return response;
      },
      std::move(done));
}

void Authenticator::Impl::update_user(v1::User user, Actor actor, Handler<v1::User> done) {
  std::vector<v1::FieldViolation> violations;
  if (user.id().empty()) violations.push_back(field_violation("user.id", "is empty"));
  check_user_fields(user, violations);
  if (!violations.empty())
    return post_result<v1::User>(
        std::move(done),
        invalid(fmt::format("user \"{}\"", clip(user.username(), k_max_username_characters)), std::move(violations)));
  write<v1::User>(
      [user = std::move(user), actor = std::move(actor)](StoreTransaction& tx,
                                                         TxContext& context) -> ApiResult<v1::User> {
        auto stored = tx.user(user.id());
        if (!stored) return no_user(user.id());
        if (!user.username().empty() && user.username() != stored->user.username())
          return invalid(fmt::format("user \"{}\"", stored->user.username()),
                         {field_violation("user.username", "cannot be changed")});
        const v1::User before = stored->user;
        if (auto refused = keeps_an_admin(tx, before, user.role() == v1::ROLE_ADMIN && !user.disabled()))
          return *refused;
        auto& after = stored->user;
        after.set_display_name(user.display_name());
        after.set_email(user.email());
        after.set_role(user.role());
        after.set_disabled(user.disabled());
        *after.mutable_settings() = user.settings();
        after.set_updated_at_unix_ms(detail::now_unix_ms());
        tx.put_user(*stored);
        std::string detail;
        if (after.disabled() && !before.disabled())
          detail = fmt::format("disabled; {} sessions ended", tx.delete_sessions_of(after.id(), {}));
        context.evict_users.push_back(after.id());
        audit(tx, audit_actor(actor), "user.update", user_target(after), true, std::move(detail), &before, &after);
        return after;
      },
      std::move(done));
}

void Authenticator::Impl::delete_user(std::string id, Actor actor, Handler<std::monostate> done) {
  write<std::monostate>(
      [id = std::move(id), actor = std::move(actor)](StoreTransaction& tx,
                                                     TxContext& context) -> ApiResult<std::monostate> {
        auto stored = tx.user(id);
        if (!stored) return no_user(id);
        if (auto refused = keeps_an_admin(tx, stored->user, false)) return *refused;
        std::size_t revoked = 0;
        for (const auto& listed : tx.api_tokens(id)) {
          if (listed.revoked()) continue;
          auto token = tx.api_token(listed.id());
          if (!token) continue;
          token->token.set_revoked(true);
          tx.put_api_token(*token);
          context.forget_tokens.push_back(listed.id());
          ++revoked;
        }
        tx.delete_user(id);
        context.evict_users.push_back(id);
        audit(tx, audit_actor(actor), "user.delete", user_target(stored->user), true,
              fmt::format("sessions ended, {} API tokens revoked", revoked), &stored->user, nullptr);
        return std::monostate{};
      },
      std::move(done));
}

void Authenticator::Impl::change_password(const Principal& caller, std::string user_id,
                                          v1::ChangePasswordRequest request, Handler<std::monostate> done) {
  const bool own = caller.user.id() == user_id;
  if (!own && caller.role != v1::ROLE_ADMIN)
    return post_result<std::monostate>(std::move(done), failure(v1::API_ERROR_CODE_PERMISSION_DENIED,
                                                                "only an admin may set another user's password"));
  std::vector<v1::FieldViolation> violations;
  if (own && request.current_password().empty())
    violations.push_back(field_violation("current_password", "is required to change one's own password"));
  check_password("new_password", request.new_password(), {}, violations);
  if (own && !request.current_password().empty() && request.new_password() == request.current_password())
    violations.push_back(field_violation("new_password", "must differ from the current password"));
  if (!violations.empty())
    return post_result<std::monostate>(std::move(done), invalid("password change", std::move(violations)));
  auto shared_request = std::make_shared<const v1::ChangePasswordRequest>(std::move(request));
  read<std::string>(
      [user_id, shared_request](StoreTransaction& tx) -> ApiResult<std::string> {
        auto stored = tx.user(user_id);
        if (!stored) return no_user(user_id);
        // The username is known only now.
        std::vector<v1::FieldViolation> weak;
        check_password("new_password", shared_request->new_password(), stored->user.username(), weak);
        if (!weak.empty()) return invalid("password change", std::move(weak));
        return stored->password_hash;
      },
      [self = shared_from_this(), caller, user_id, own, shared_request,
       done = std::move(done)](ApiResult<std::string> current_hash) mutable {
        if (!current_hash) return done(current_hash.failure());
        self->offload<std::string>(
            [self, own, shared_request, checked = current_hash.value()]() -> ApiResult<std::string> {
              if (own && !verify_password(shared_request->current_password(), checked))
                return invalid("password change", {field_violation("current_password", "is wrong")});
              return hash_password(shared_request->new_password(), self->options_.pbkdf2_iterations);
            },
            [self, caller, user_id, own, checked = current_hash.value(),
             done = std::move(done)](ApiResult<std::string> new_hash) mutable {
              if (!new_hash) return done(new_hash.failure());
              self->write<std::monostate>(
                  [caller, user_id, own, checked, new_hash = std::move(new_hash).value()](
                      StoreTransaction& tx, TxContext& context) -> ApiResult<std::monostate> {
                    auto stored = tx.user(user_id);
                    if (!stored) return no_user(user_id);
                    if (own && stored->password_hash != checked)
                      return failure(v1::API_ERROR_CODE_CONFLICT, "the password changed meanwhile; try again");
                    stored->password_hash = new_hash;
                    stored->failed_logins = 0;
                    stored->locked_until_unix_ms = 0;
                    // Only the user's own choice ends the must-change state, not an admin's.
                    if (own) stored->user.set_password_change_required(false);
                    stored->user.set_updated_at_unix_ms(detail::now_unix_ms());
                    tx.put_user(*stored);
                    context.unlock_users.push_back(user_id);
                    // The caller's own session survives its own password change.
                    const std::string keep = own && caller.kind == v1::ACTOR_KIND_USER ? caller.credential_id : "";
                    const auto ended = tx.delete_sessions_of(user_id, keep);
                    context.evict_users.push_back(user_id);
                    audit(tx, audit_actor(caller), "user.password", user_target(stored->user), true,
                          fmt::format("{} {}sessions ended", ended, keep.empty() ? "" : "other "));
                    return std::monostate{};
                  },
                  std::move(done));
            });
      });
}

void Authenticator::Impl::unlock_user(std::string id, Actor actor, Handler<v1::User> done) {
  write<v1::User>(
      [self = shared_from_this(), id = std::move(id), actor = std::move(actor)](
          StoreTransaction& tx, TxContext& context) -> ApiResult<v1::User> {
        auto stored = tx.user(id);
        if (!stored) return no_user(id);
        if (stored->failed_logins != 0 || stored->locked_until_unix_ms != 0) {
          stored->failed_logins = 0;
          stored->locked_until_unix_ms = 0;
          tx.put_user(*stored);
        }
        const auto locked = self->locked_addresses(id);
        context.unlock_users.push_back(id);
        audit(tx, audit_actor(actor), "user.unlock", user_target(stored->user), true,
              fmt::format("login locks lifted for {} source address{}", locked, locked == 1 ? "" : "es"));
        return stored->user;
      },
      std::move(done));
}

}  // namespace quartzflow
