// SPDX-License-Identifier: Apache-2.0
// Admin API: login and logout (session cookie), TOTP enrolment, users and API tokens, all
// through the Authenticator (which validates, checks ownership and audits).
#include <algorithm>

#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include "../common/clock.hpp"
#include "admin_api.hpp"

namespace quartzflow::detail {
namespace {

using CallPtr = std::shared_ptr<ApiCall>;

constexpr int k_public = 0;
constexpr int k_viewer = 1;
constexpr int k_admin = 3;

template <typename Message>
bool body_into(ApiCall& call, Message& message) {
  if (auto failure = parse_body(call.request.body, message)) {
    call.fail(*failure);
    return false;
  }
  return true;
}

/// Replies with the value, or the Authenticator's failure.
template <typename T>
auto answer(CallPtr call) {
  return [call](ApiResult<T> result) {
    if (!result) return call->fail(result.failure());
    if constexpr (std::is_same_v<T, std::monostate>) call->ok(v1::ApiError{});
    else call->ok(result.value());
  };
}

std::string session_cookie(const std::string& token, std::chrono::seconds max_age, bool secure) {
  return fmt::format("qf_session={}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{}", token, max_age.count(),
                     secure ? "; Secure" : "");
}

constexpr std::chrono::milliseconds k_first_login_delay{250};
constexpr std::chrono::milliseconds k_max_login_delay{8'000};
constexpr std::size_t k_tracked_addresses = 10'000;

}  // namespace

std::chrono::milliseconds AdminApi::login_delay(const std::string& address) {
  auto it = login_failures_.find(address);
  if (it == login_failures_.end() || it->second.count == 0) return std::chrono::milliseconds{0};
  // Forgotten after a quiet quarter of an hour.
  if (std::chrono::steady_clock::now() - it->second.last > std::chrono::minutes{15}) {
    login_failures_.erase(it);
    return std::chrono::milliseconds{0};
  }
  const auto shift = std::min<std::uint32_t>(it->second.count - 1, 10);
  return std::min(k_max_login_delay, k_first_login_delay * (1u << shift));
}

void AdminApi::login_failed(const std::string& address) {
  if (login_failures_.size() >= k_tracked_addresses && !login_failures_.count(address)) {
    // Bounded memory: drop the stalest address.
    auto oldest = std::min_element(login_failures_.begin(), login_failures_.end(),
                                   [](const auto& a, const auto& b) { return a.second.last < b.second.last; });
    login_failures_.erase(oldest);
  }
  auto& entry = login_failures_[address];
  ++entry.count;
  entry.last = std::chrono::steady_clock::now();
}

void AdminApi::add_auth_routes() {
  add("POST", "/api/v1/auth/login", k_public, v1::LoginRequest::descriptor(), v1::LoginResponse::descriptor(),
      "Log in with a password (and TOTP code); sets the HttpOnly session cookie", [this](CallPtr call) {
        v1::LoginRequest request;
        if (!body_into(*call, request)) return;
        auto timer = std::make_shared<boost::asio::steady_timer>(executor_, login_delay(call->request.peer_ip));
        timer->async_wait([this, weak = weak_from_this(), timer, call, request = std::move(request)](const error_code&) mutable {
          if (!weak.lock()) return;
          auth_.login(std::move(request), call->request.peer_ip, call->request.user_agent,
                    [weak, call, ttl = options_.session_ttl](ApiResult<v1::LoginResponse> result) {
                      auto self = weak.lock();
                      if (!result) {
                        if (self && result.failure().code != v1::API_ERROR_CODE_TOTP_REQUIRED)
                          self->login_failed(call->request.peer_ip);
                        return call->fail(result.failure());
                      }
                      if (self) self->login_failures_.erase(call->request.peer_ip);
                      auto response = data_response(result.value(), 200);
                      const auto remaining = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::milliseconds{result.value().expires_at_unix_ms() - now_unix_ms()});
                      response.headers.emplace_back(
                          "Set-Cookie", session_cookie(result.value().session_token(),
                                                       std::max(std::chrono::seconds{1}, std::min(remaining, ttl)),
                                                       call->request.secure));
                      std::exchange(call->reply, {})(std::move(response));
                    });
        });
      });
  add("POST", "/api/v1/auth/logout", k_viewer, nullptr, nullptr, "End the caller's session (clears the cookie)",
      [this](CallPtr call) {
        const auto& p = *call->principal;
        auto finish = [call] {
          auto response = raw_data_response("{}");
          response.headers.emplace_back("Set-Cookie", session_cookie("", std::chrono::seconds{0}, call->request.secure));
          std::exchange(call->reply, {})(std::move(response));
        };
        if (p.kind != v1::ACTOR_KIND_USER) return finish();  // an API token has no session
        constexpr std::string_view bearer = "Bearer ";
        std::string token = call->request.authorization.rfind(bearer, 0) == 0
                                ? call->request.authorization.substr(bearer.size())
                                : std::string{};
        if (token.empty()) {
          const auto at = call->request.cookie.find("qf_session=");
          if (at != std::string::npos) token = call->request.cookie.substr(at + 11, call->request.cookie.find(';', at) - at - 11);
        }
        auth_.logout(token, [call, finish](ApiResult<std::monostate> r) {
          if (!r) return call->fail(r.failure());
          finish();
        });
      });
  add("GET", "/api/v1/auth/me", k_viewer, nullptr, v1::User::descriptor(), "The caller's user",
      [](CallPtr call) { call->ok(call->principal->user); });
  add("POST", "/api/v1/auth/totp/enroll", k_viewer, nullptr, v1::TotpEnrollResponse::descriptor(),
      "Start TOTP enrolment: a new secret and its otpauth:// URI", [this](CallPtr call) {
        auth_.totp_enroll(*call->principal, answer<v1::TotpEnrollResponse>(call));
      });
  add("POST", "/api/v1/auth/totp/confirm", k_viewer, v1::TotpConfirmRequest::descriptor(), v1::User::descriptor(),
      "Activate TOTP with a current code", [this](CallPtr call) {
        v1::TotpConfirmRequest request;
        if (!body_into(*call, request)) return;
        auth_.totp_confirm(*call->principal, request.code(), answer<v1::User>(call));
      });

  add("GET", "/api/v1/users", k_admin, v1::ListUsersRequest::descriptor(), v1::ListUsersResponse::descriptor(),
      "List users", [this](CallPtr call) {
        v1::ListUsersRequest request;
        if (auto failure = parse_query(call->request.query, request)) return call->fail(*failure);
        auth_.list_users(std::move(request), answer<v1::ListUsersResponse>(call));
      });
  add("POST", "/api/v1/users", k_admin, v1::CreateUserRequest::descriptor(), v1::User::descriptor(),
      "Create a user (role admin, operator or viewer)", [this](CallPtr call) {
        v1::CreateUserRequest request;
        if (!body_into(*call, request)) return;
        auth_.create_user(std::move(request), call->actor, answer<v1::User>(call));
      }, 201);
  add("GET", "/api/v1/users/{id}", k_admin, nullptr, v1::User::descriptor(), "A user",
      [this](CallPtr call) { auth_.get_user(call->params.at("id"), answer<v1::User>(call)); });
  add("PUT", "/api/v1/users/{id}", k_admin, v1::User::descriptor(), v1::User::descriptor(),
      "Change a user's display name, e-mail, role, disabled flag and settings", [this](CallPtr call) {
        v1::User user;
        if (!body_into(*call, user)) return;
        if (!user.id().empty() && user.id() != call->params.at("id"))
          return call->fail(v1::API_ERROR_CODE_INVALID_ARGUMENT, "invalid user: id: differs from the id in the path", "id",
                            "differs from the id in the path");
        user.set_id(call->params.at("id"));
        auth_.update_user(std::move(user), call->actor, answer<v1::User>(call));
      });
  add("DELETE", "/api/v1/users/{id}", k_admin, nullptr, nullptr, "Delete a user (its tokens are revoked)",
      [this](CallPtr call) { auth_.delete_user(call->params.at("id"), call->actor, answer<std::monostate>(call)); });
  add("POST", "/api/v1/users/{id}/unlock", k_admin, nullptr, v1::User::descriptor(),
      "Lift the user's login locks (failed logins lock one source address out of one account)",
      [this](CallPtr call) { auth_.unlock_user(call->params.at("id"), call->actor, answer<v1::User>(call)); });
  add("PUT", "/api/v1/users/{id}/password", k_viewer, v1::ChangePasswordRequest::descriptor(), nullptr,
      "Set a password (one's own with the current one; any user's as admin)", [this](CallPtr call) {
        v1::ChangePasswordRequest request;
        if (!body_into(*call, request)) return;
        auth_.change_password(*call->principal, call->params.at("id"), std::move(request), answer<std::monostate>(call));
      });

  add("GET", "/api/v1/tokens", k_viewer, nullptr, v1::ListApiTokensResponse::descriptor(),
      "The caller's API tokens (everyone's for admins)",
      [this](CallPtr call) { auth_.list_tokens(*call->principal, answer<v1::ListApiTokensResponse>(call)); });
  add("POST", "/api/v1/tokens", k_viewer, v1::CreateApiTokenRequest::descriptor(),
      v1::CreateApiTokenResponse::descriptor(), "Create an API token (the secret is shown once)", [this](CallPtr call) {
        v1::CreateApiTokenRequest request;
        if (!body_into(*call, request)) return;
        auth_.create_token(*call->principal, std::move(request), call->actor, answer<v1::CreateApiTokenResponse>(call));
      }, 201);
  add("DELETE", "/api/v1/tokens/{id}", k_viewer, nullptr, v1::ApiToken::descriptor(), "Revoke an API token",
      [this](CallPtr call) { auth_.revoke_token(*call->principal, call->params.at("id"), call->actor, answer<v1::ApiToken>(call)); });
}

}  // namespace quartzflow::detail
