// SPDX-License-Identifier: Apache-2.0
// The Authenticator at first start (an admin with a one-time password) and for recovery
// (`qf-coordinator --init-admin`).
#include "../common/clock.hpp"
#include "auth_detail.hpp"
#include "authenticator_impl.hpp"

namespace quartzflow {
namespace {

constexpr std::size_t k_one_time_password_bytes = 18;  // 24 base64url characters
constexpr const char* k_bootstrap_username = "admin";

using namespace detail::account;  // failures, checks, audit helpers (account_rules.hpp)

}  // namespace

void Authenticator::Impl::ensure_admin(std::string username, std::string password, Handler<v1::User> done) {
  std::vector<v1::FieldViolation> violations;
  check_username("username", username, violations);
  check_password("password", password, username, violations);
  if (!violations.empty())
    return post_result<v1::User>(
        std::move(done),
        invalid(fmt::format("admin \"{}\"", clip(username, k_max_username_characters)), std::move(violations)));
  offload<std::string>(
      [self = shared_from_this(), password = std::move(password)]() -> ApiResult<std::string> {
        return hash_password(password, self->options_.pbkdf2_iterations);
      },
      [self = shared_from_this(), username = std::move(username),
       done = std::move(done)](ApiResult<std::string> hash) mutable {
        if (!hash) return done(hash.failure());
        self->write<v1::User>(
            [username, hash = std::move(hash).value()](StoreTransaction& tx,
                                                       TxContext& context) -> ApiResult<v1::User> {
              const AuditActor system{"system", v1::ACTOR_KIND_SYSTEM, {}, {}, {}};
              auto stored = tx.user_by_username(username);
              if (!stored) {
                v1::User user;
                user.set_username(username);
                user.set_display_name("Administrator");
                user.set_role(v1::ROLE_ADMIN);
                auto created = new_user(user, hash);
                tx.put_user(created);
                audit(tx, system, "user.create", user_target(created.user), true, "--init-admin", nullptr,
                      &created.user);
                return created.user;
              }
              const v1::User before = stored->user;
              stored->user.set_role(v1::ROLE_ADMIN);
              stored->user.set_disabled(false);
              stored->user.set_totp_enabled(false);
              stored->user.set_password_change_required(false);  // the operator chose this password
              stored->user.set_updated_at_unix_ms(detail::now_unix_ms());
              stored->password_hash = hash;
              stored->totp_secret.clear();
              stored->totp_pending_secret.clear();
              stored->totp_last_step = 0;
              stored->failed_logins = 0;
              stored->locked_until_unix_ms = 0;
              tx.put_user(*stored);
              const auto ended = tx.delete_sessions_of(stored->user.id(), {});
              context.evict_users.push_back(stored->user.id());
              context.unlock_users.push_back(stored->user.id());
              audit(tx, system, "user.password", user_target(stored->user), true,
                    fmt::format("--init-admin: reset to an enabled ADMIN, new password, TOTP off, {} sessions ended",
                                ended),
                    &before, &stored->user);
              return stored->user;
            },
            std::move(done));
      });
}

void Authenticator::Impl::bootstrap(Handler<std::optional<std::string>> done) {
  read<bool>([](StoreTransaction& tx) -> ApiResult<bool> { return any_user(tx); },
             [self = shared_from_this(), done = std::move(done)](ApiResult<bool> any) mutable {
               if (!any) return done(any.failure());
               if (any.value()) return done(std::optional<std::string>{});
               self->offload<std::pair<std::string, std::string>>(
                   [self]() -> ApiResult<std::pair<std::string, std::string>> {
                     auto password = detail::base64_encode(detail::random_bytes(k_one_time_password_bytes), true);
                     auto hash = hash_password(password, self->options_.pbkdf2_iterations);
                     return std::pair{std::move(password), std::move(hash)};
                   },
                   [self, done = std::move(done)](ApiResult<std::pair<std::string, std::string>> made) mutable {
                     if (!made) return done(made.failure());
                     self->write<std::optional<std::string>>(
                         [made = std::move(made).value()](StoreTransaction& tx,
                                                          TxContext&) -> ApiResult<std::optional<std::string>> {
                           if (any_user(tx)) return std::optional<std::string>{};  // created meanwhile
                           v1::User user;
                           user.set_username(k_bootstrap_username);
                           user.set_display_name("Administrator");
                           user.set_role(v1::ROLE_ADMIN);
                           auto created = new_user(user, made.second);
                           created.user.set_password_change_required(true);
                           tx.put_user(created);
                           audit(tx, {"system", v1::ACTOR_KIND_SYSTEM, {}, {}, {}}, "user.create",
                                 user_target(created.user), true,
                                 "first start: a one-time password was given out; it must be changed at first login",
                                 nullptr, &created.user);
                           return std::optional<std::string>{made.first};
                         },
                         std::move(done));
                   });
             });
}

bool Authenticator::Impl::any_user(StoreTransaction& tx) {
  v1::ListUsersRequest request;
  request.set_page_size(1);
  return tx.list_users(request).total > 0;
}

}  // namespace quartzflow
