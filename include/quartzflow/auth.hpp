// SPDX-License-Identifier: Apache-2.0
// Authentication for the coordinator's admin API: password hashes (PBKDF2-HMAC-SHA256),
// API tokens and console sessions kept only as SHA-256 hashes, TOTP (RFC 6238), and the
// Authenticator that logs users in, checks credentials and manages users and tokens.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <boost/asio/any_io_executor.hpp>

#include <quartzflow/async.hpp>
#include <quartzflow/catalog.hpp>
#include <quartzflow/store.hpp>
#include <quartzflow/v1/admin.pb.h>

namespace quartzflow {

// ---- results ---------------------------------------------------------------------------

/// Why an admin API operation failed: what the HTTP layer sends as an `ApiError` (the code
/// decides the HTTP status, see http_status_of).
struct ApiFailure {
  v1::ApiErrorCode code = v1::API_ERROR_CODE_INTERNAL;
  std::string message;                           ///< for people, e.g. `invalid user: password: ...`
  std::vector<v1::FieldViolation> violations;    ///< the fields at fault (INVALID_ARGUMENT)

  /// Appends the violation of `field` (a body path such as `task_ids[2]`) for `reason`.
  void add_violation(std::string field, std::string reason);
  /// The `ApiError` body, `http_status` filled in.
  v1::ApiError to_api_error() const;
};

/// A FieldViolation of `field` for `reason`.
v1::FieldViolation field_violation(std::string field, std::string reason);

/**
 * The HTTP status of an error code: INVALID_ARGUMENT 400, UNAUTHENTICATED and TOTP_REQUIRED
 * 401, PERMISSION_DENIED 403, NOT_FOUND 404, ALREADY_EXISTS / CONFLICT / FAILED_PRECONDITION
 * 409, RESOURCE_EXHAUSTED 429, UNAVAILABLE 503, anything else 500.
 */
unsigned http_status_of(v1::ApiErrorCode code) noexcept;

/// A value or an ApiFailure.
template <typename T>
class ApiResult {
 public:
  ApiResult(T value) : state_(std::in_place_index<0>, std::move(value)) {}           // NOLINT: implicit by design
  ApiResult(ApiFailure failure) : state_(std::in_place_index<1>, std::move(failure)) {}  // NOLINT

  bool ok() const noexcept { return state_.index() == 0; }
  explicit operator bool() const noexcept { return ok(); }
  /// The value; only when ok().
  T& value() & { return std::get<0>(state_); }
  const T& value() const& { return std::get<0>(state_); }
  T&& value() && { return std::get<0>(std::move(state_)); }
  /// The failure; only when !ok().
  const ApiFailure& failure() const { return std::get<1>(state_); }
  /// API_ERROR_CODE_UNSPECIFIED when ok().
  v1::ApiErrorCode code() const noexcept { return ok() ? v1::API_ERROR_CODE_UNSPECIFIED : failure().code; }

 private:
  std::variant<T, ApiFailure> state_;
};

/// The result of an operation that returns nothing but success.
using ApiStatus = ApiResult<std::monostate>;

// ---- roles -----------------------------------------------------------------------------

/// Rank of a role: VIEWER 1 < OPERATOR 2 < ADMIN 3; 0 for UNSPECIFIED or an unknown value.
int role_rank(v1::Role role) noexcept;

/// True when `role` grants at least what `required` does (ADMIN > OPERATOR > VIEWER);
/// ROLE_UNSPECIFIED (or an unknown value) grants nothing.
bool role_at_least(v1::Role role, v1::Role required) noexcept;

// ---- primitives ------------------------------------------------------------------------

/// PBKDF2 iterations of new password hashes (OWASP's figure for PBKDF2-HMAC-SHA256).
inline constexpr std::uint32_t k_default_pbkdf2_iterations = 600000;
/// Prefix of API token secrets (`qf_` + 43 base64url characters).
inline constexpr std::string_view k_api_token_prefix = "qf_";
/// Prefix of console session tokens.
inline constexpr std::string_view k_session_token_prefix = "qfs_";

/**
 * `pbkdf2-sha256$<iterations>$<salt>$<hash>`: PBKDF2-HMAC-SHA256 over 16 random salt bytes,
 * 32-byte key, salt and key in standard base64 with padding. About 0.3 s at the default
 * iterations: never call it on an io_context thread.
 * @throws quartzflow::error when `iterations` is 0 or OpenSSL fails (no randomness).
 * Thread safety: safe to call concurrently.
 */
std::string hash_password(std::string_view password, std::uint32_t iterations = k_default_pbkdf2_iterations);

/// True when `encoded` (from hash_password) is the hash of `password`; false for any
/// malformed string. Constant-time comparison. Thread safety: safe to call concurrently.
bool verify_password(std::string_view password, std::string_view encoded) noexcept;

/// Fewest characters (Unicode code points) a new password may have.
inline constexpr std::size_t k_min_password_characters = 12;
/// Most bytes a password may have (a bound on hashing work, not a policy).
inline constexpr std::size_t k_max_password_bytes = 1024;

/**
 * Why `password` may not be chosen, as NIST SP 800-63B 5.1.1.2 asks a verifier to check,
 * or nullopt when it may be: shorter than k_min_password_characters or longer than
 * k_max_password_bytes; one character repeated, or fewer than 5 different ones; a short
 * pattern repeated (`abcabcabcabc`); a run of neighbouring keys or characters
 * (`123456789012`, `abcdefghijkl`, `qwertyuiop[]`, `1qaz2wsx3edc`); containing `username`
 * (from 3 characters; also the part of an e-mail username before `@`) or "quartzflow";
 * one of the few hundred most common passwords shipped with the library, also with
 * digits or symbols around it or common substitutions (`P@ssw0rd2024!`). Case-insensitive.
 * The reason never quotes the password: it is shown as a FieldViolation reason.
 * Thread safety: safe to call concurrently.
 */
std::optional<std::string> password_weakness(std::string_view password, std::string_view username = {});

/// `prefix` + 32 random bytes in base64url without padding (43 characters), e.g. an API
/// token (`qf_`) or a session token (`qfs_`). @throws quartzflow::error when OpenSSL fails.
std::string generate_secret(std::string_view prefix);

/// SHA-256 of `text`, 64 lower-case hex digits.
std::string sha256_hex(std::string_view text);

/// RFC 4648 base32 (alphabet A-Z2-7) without padding.
std::string base32_encode(std::string_view bytes);
/// Decodes base32: case-insensitive, `=` padding and spaces ignored; nullopt on any other
/// character or a length that no encoding produces.
std::optional<std::string> base32_decode(std::string_view text);

/**
 * The RFC 6238 TOTP code of `secret` (raw bytes) at `unix_seconds`: HMAC-SHA1, 30 s steps
 * from the Unix epoch, `digits` decimal digits (6-9) with leading zeros.
 */
std::string totp_code(std::string_view secret, std::int64_t unix_seconds, int digits = 6);

/**
 * The 30 s step (`unix_seconds / 30`) of the previous, current or next step whose 6-digit
 * code is `code` (tolerating one step of clock skew either way); nullopt when none is.
 * Callers refuse a step not above the last one they accepted, so a code works once.
 */
std::optional<std::int64_t> match_totp(std::string_view secret, std::string_view code, std::int64_t unix_seconds);

/// match_totp(...).has_value().
bool verify_totp(std::string_view secret, std::string_view code, std::int64_t unix_seconds);

/// `otpauth://totp/QuartzFlow:<username>?secret=<base32>&issuer=QuartzFlow` (the username
/// percent-encoded), for QR codes; SHA-1, 6 digits and 30 s are the defaults it implies.
std::string totp_uri(std::string_view username, std::string_view secret_base32);

// ---- the Authenticator -----------------------------------------------------------------

/// Who made a request, as `Authenticator::authenticate` found it.
struct Principal {
  v1::User user;   ///< the user, or the token's owner
  v1::Role role = v1::ROLE_UNSPECIFIED;  ///< what it may do: a token's role, never above its owner's
  v1::ActorKind kind = v1::ACTOR_KIND_UNSPECIFIED;  ///< ACTOR_KIND_USER (session) or ACTOR_KIND_API_TOKEN
  std::string token_name;     ///< the API token's name; empty for sessions
  std::string credential_id;  ///< the API token's id, or the session's SHA-256 (hex)
  std::string source_ip;      ///< where the credential was presented from (for the audit log)
  /// `require_totp_for_admins` and an ADMIN session without TOTP: `role` is capped at
  /// VIEWER until the user enrolls (totp_enroll and totp_confirm still work).
  bool totp_enrollment_required = false;
};

/// Policy of an Authenticator.
struct AuthOptions {
  std::chrono::seconds session_ttl{43200};               ///< a session's life from login (12 h)
  std::uint32_t pbkdf2_iterations = k_default_pbkdf2_iterations;  ///< of new password hashes
  bool require_totp_for_admins = false;                  ///< see Principal::totp_enrollment_required
  /// Consecutive failures of one account from one source address before that address is
  /// locked out of that account; 0 = never.
  std::uint32_t max_failed_logins = 5;
  std::chrono::seconds lockout{900};  ///< how long a lock lasts; also how long a failure is remembered
};

/**
 * Logs users in, checks session and API token credentials, and manages users, tokens and
 * TOTP over a Store. The HTTP layer checks roles for the user endpoints; the Authenticator
 * validates input, checks ownership of tokens and passwords, and audits every change (and
 * every login and failed login) in the same transaction as the change. Secrets (tokens,
 * session tokens, passwords, TOTP secrets) never appear in the audit log, in the records or
 * in messages; tokens and sessions are stored only as SHA-256 hashes.
 *
 * Password hashing (PBKDF2, ~0.3 s) runs on one worker thread the Authenticator owns, never
 * on the executor nor inside a store transaction; store work runs on the store's thread.
 * Completions are invoked through `executor`, never inline from the initiating call.
 *
 * `authenticate` keeps the credentials it validated for up to 5 s in memory, so a busy API
 * client does not cost a store read per request; logout, revocation, password changes,
 * user updates and deletions through this object evict them at once. (A change made by
 * another coordinator on a shared store takes up to 5 s to be seen here.) A token's
 * `last_used_*` is written at most once a minute.
 *
 * Thread safety: every member function may be called from any thread. The Store must
 * outlive the Authenticator and its pending operations.
 * Cancellation: none; operations are short. Destroying the Authenticator waits for the
 * password hash in progress; operations still pending then complete with UNAVAILABLE.
 */
class Authenticator {
 public:
  template <typename T>
  using Handler = std::function<void(ApiResult<T>)>;

  Authenticator(Store& store, boost::asio::any_io_executor executor, AuthOptions options = {});
  ~Authenticator();
  Authenticator(const Authenticator&) = delete;
  Authenticator& operator=(const Authenticator&) = delete;

  const AuthOptions& options() const noexcept;

  /**
   * Checks a credential: a session token (`qfs_...`) or an API token (`qf_...`), as sent in
   * `Authorization: Bearer` or the session cookie. Refused (UNAUTHENTICATED) when unknown,
   * expired, revoked, or when its user is disabled or gone. Records the token's last use
   * (time and `source_ip`), at most once a minute.
   * Completion: `void(ApiResult<Principal>)`.
   */
  void authenticate(std::string credential, std::string source_ip, Handler<Principal> done);

  /**
   * Password login, creating a session of `session_ttl`. A wrong username or password is
   * UNAUTHENTICATED "invalid username or password" either way, after the same hashing time.
   * `max_failed_logins` consecutive failures of an account from one `source_ip` lock that
   * address (only) out of that account for `lockout`; a locked account answers exactly as
   * an unknown one (same code, message and hashing time), even to the right password. Other
   * addresses are not affected: nobody can lock an account out for everyone. The locks are
   * kept in memory (a restart lifts them); unlock_user, a password change and ensure_admin
   * lift them. With TOTP enabled: no code is TOTP_REQUIRED, a wrong or reused one is
   * UNAUTHENTICATED "invalid TOTP code" and counts as a failure. The response's user has
   * `password_change_required` when it must change its password before anything else.
   * Audited as `auth.login` / `auth.login_failed` (the detail says when a lock began).
   * Completion: `void(ApiResult<v1::LoginResponse>)`.
   */
  void login(v1::LoginRequest request, std::string source_ip, std::string user_agent,
             Handler<v1::LoginResponse> done);

  /// Ends a session (unknown or expired ones too: success). Audited as `auth.logout` when
  /// the session existed.
  void logout(std::string session_token, Handler<std::monostate> done);

  /**
   * Creates a user: username 1-64 characters of `[A-Za-z0-9._@-]`, unique (else
   * ALREADY_EXISTS); a password password_weakness accepts; role set; e-mail with an `@`.
   * Violations name the field (`user.username`, `password`, `user.role`...) and change
   * nothing. Output-only fields are ignored; `require_password_change` sets the user's
   * `password_change_required`. Audited as `user.create`.
   */
  void create_user(v1::CreateUserRequest request, Actor actor, Handler<v1::User> done);
  /// NOT_FOUND when there is no such user.
  void get_user(std::string id, Handler<v1::User> done);
  /// Filters: keyword (username, display name, e-mail), role; paged (page 1-based, page_size
  /// 0 = 20, at most 500); sorted by username.
  void list_users(v1::ListUsersRequest request, Handler<v1::ListUsersResponse> done);
  /**
   * Changes display name, e-mail, role, disabled and settings of the user `user.id`; the
   * username cannot change (INVALID_ARGUMENT when it differs). Disabling ends the user's
   * sessions; role and disabled take effect on the next request. The last enabled admin
   * cannot be demoted or disabled (FAILED_PRECONDITION). Audited as `user.update`.
   */
  void update_user(v1::User user, Actor actor, Handler<v1::User> done);
  /// Deletes a user, its sessions, and revokes its tokens. Not the last enabled admin
  /// (FAILED_PRECONDITION). Audited as `user.delete`.
  void delete_user(std::string id, Actor actor, Handler<std::monostate> done);
  /// Lifts every login lock of the user (from every source address) and forgets its failed
  /// logins; NOT_FOUND when there is no such user. The HTTP layer lets only admins call it.
  /// Audited as `user.unlock` (how many addresses were locked). Completion: the user.
  void unlock_user(std::string id, Actor actor, Handler<v1::User> done);
  /**
   * Sets a password. One's own needs `current_password` (INVALID_ARGUMENT naming it when
   * wrong) and a different new one, and clears `password_change_required`; an ADMIN caller
   * may set anyone's without it; others get PERMISSION_DENIED. `new_password` must pass
   * password_weakness (with the user's name). Ends the user's other sessions (the caller's
   * own session stays) and lifts the user's login locks. Audited as `user.password`.
   */
  void change_password(const Principal& caller, std::string user_id, v1::ChangePasswordRequest request,
                       Handler<std::monostate> done);

  /**
   * Creates an API token for the caller's user: name 1-64 printable characters, unique per
   * user (ALREADY_EXISTS); role UNSPECIFIED = the caller's role, above it PERMISSION_DENIED;
   * an expiry not in the future is INVALID_ARGUMENT. The response holds the secret, the
   * only time it is shown. Audited as `token.create` (`actor` gives the name and address).
   */
  void create_token(const Principal& caller, v1::CreateApiTokenRequest request, Actor actor,
                    Handler<v1::CreateApiTokenResponse> done);
  /// The caller's tokens; every user's for an ADMIN caller. Revoked tokens included.
  void list_tokens(const Principal& caller, Handler<v1::ListApiTokensResponse> done);
  /// Revokes a token of the caller's (any for ADMIN; NOT_FOUND otherwise); it is refused at
  /// once. Revoking a revoked token succeeds. Audited as `token.revoke`.
  void revoke_token(const Principal& caller, std::string id, Actor actor, Handler<v1::ApiToken> done);

  /**
   * Starts TOTP enrollment of the caller (a session, not an API token: PERMISSION_DENIED):
   * a new pending secret, replacing any earlier pending one. FAILED_PRECONDITION when TOTP
   * is already enabled. Audited as `auth.totp_enroll`.
   */
  void totp_enroll(const Principal& caller, Handler<v1::TotpEnrollResponse> done);
  /// Activates the pending secret with a current code (INVALID_ARGUMENT naming `code` when
  /// wrong; FAILED_PRECONDITION without enrollment). Audited as `auth.totp_enable`.
  void totp_confirm(const Principal& caller, std::string code, Handler<v1::User> done);

  /**
   * `qf-coordinator --init-admin`: creates `username` as an ADMIN with `password`, or resets
   * that user: ADMIN, enabled, the new password, TOTP off, unlocked, sessions ended. The
   * password must pass password_weakness (INVALID_ARGUMENT naming `password`); the operator
   * chose it, so `password_change_required` is not set (it is cleared on a reset).
   * Audited as `user.create` or `user.password` by `system`.
   */
  void ensure_admin(std::string username, std::string password, Handler<v1::User> done);

  /**
   * First start: when there are no users at all, creates `admin` (ADMIN) with a random
   * one-time password of 24 characters and returns it, to be shown once (never logged);
   * otherwise nullopt. The password works for login, but the user has
   * `password_change_required` until it changes it (the admin API refuses everything else).
   */
  void bootstrap(Handler<std::optional<std::string>> done);

  /// Forgets every cached credential (after changes made to the store behind its back).
  void clear_cache();

  // The same operations as `async_` initiating functions: the token may be a callback,
  // `boost::asio::use_awaitable` (`co_await` gives the ApiResult) or any Asio completion
  // token. Completions run on the token's associated executor (else the Authenticator's).
  // Completion signature: `void(ApiResult<T>)`, T as in the callback form.
  template <typename Token>
  auto async_authenticate(std::string credential, std::string source_ip, Token&& token) {
    return detail::async_invoke<void(ApiResult<Principal>)>(get_executor(), std::forward<Token>(token),
                                                            &Authenticator::authenticate, this, std::move(credential),
                                                            std::move(source_ip));
  }
  template <typename Token>
  auto async_login(v1::LoginRequest request, std::string source_ip, std::string user_agent, Token&& token) {
    return detail::async_invoke<void(ApiResult<v1::LoginResponse>)>(get_executor(), std::forward<Token>(token),
                                                                    &Authenticator::login, this, std::move(request),
                                                                    std::move(source_ip), std::move(user_agent));
  }
  template <typename Token>
  auto async_logout(std::string session_token, Token&& token) {
    return detail::async_invoke<void(ApiStatus)>(get_executor(), std::forward<Token>(token), &Authenticator::logout,
                                                 this, std::move(session_token));
  }
  template <typename Token>
  auto async_create_user(v1::CreateUserRequest request, Actor actor, Token&& token) {
    return detail::async_invoke<void(ApiResult<v1::User>)>(get_executor(), std::forward<Token>(token),
                                                           &Authenticator::create_user, this, std::move(request),
                                                           std::move(actor));
  }
  template <typename Token>
  auto async_get_user(std::string id, Token&& token) {
    return detail::async_invoke<void(ApiResult<v1::User>)>(get_executor(), std::forward<Token>(token),
                                                           &Authenticator::get_user, this, std::move(id));
  }
  template <typename Token>
  auto async_list_users(v1::ListUsersRequest request, Token&& token) {
    return detail::async_invoke<void(ApiResult<v1::ListUsersResponse>)>(
        get_executor(), std::forward<Token>(token), &Authenticator::list_users, this, std::move(request));
  }
  template <typename Token>
  auto async_update_user(v1::User user, Actor actor, Token&& token) {
    return detail::async_invoke<void(ApiResult<v1::User>)>(get_executor(), std::forward<Token>(token),
                                                           &Authenticator::update_user, this, std::move(user),
                                                           std::move(actor));
  }
  template <typename Token>
  auto async_delete_user(std::string id, Actor actor, Token&& token) {
    return detail::async_invoke<void(ApiStatus)>(get_executor(), std::forward<Token>(token),
                                                 &Authenticator::delete_user, this, std::move(id), std::move(actor));
  }
  template <typename Token>
  auto async_unlock_user(std::string id, Actor actor, Token&& token) {
    return detail::async_invoke<void(ApiResult<v1::User>)>(
        get_executor(), std::forward<Token>(token), &Authenticator::unlock_user, this, std::move(id), std::move(actor));
  }
  template <typename Token>
  auto async_change_password(Principal caller, std::string user_id, v1::ChangePasswordRequest request, Token&& token) {
    return detail::async_invoke<void(ApiStatus)>(get_executor(), std::forward<Token>(token),
                                                 &Authenticator::change_password, this, std::move(caller),
                                                 std::move(user_id), std::move(request));
  }
  template <typename Token>
  auto async_create_token(Principal caller, v1::CreateApiTokenRequest request, Actor actor, Token&& token) {
    return detail::async_invoke<void(ApiResult<v1::CreateApiTokenResponse>)>(
        get_executor(), std::forward<Token>(token), &Authenticator::create_token, this, std::move(caller),
        std::move(request), std::move(actor));
  }
  template <typename Token>
  auto async_list_tokens(Principal caller, Token&& token) {
    return detail::async_invoke<void(ApiResult<v1::ListApiTokensResponse>)>(
        get_executor(), std::forward<Token>(token), &Authenticator::list_tokens, this, std::move(caller));
  }
  template <typename Token>
  auto async_revoke_token(Principal caller, std::string id, Actor actor, Token&& token) {
    return detail::async_invoke<void(ApiResult<v1::ApiToken>)>(get_executor(), std::forward<Token>(token),
                                                               &Authenticator::revoke_token, this, std::move(caller),
                                                               std::move(id), std::move(actor));
  }
  template <typename Token>
  auto async_totp_enroll(Principal caller, Token&& token) {
    return detail::async_invoke<void(ApiResult<v1::TotpEnrollResponse>)>(
        get_executor(), std::forward<Token>(token), &Authenticator::totp_enroll, this, std::move(caller));
  }
  template <typename Token>
  auto async_totp_confirm(Principal caller, std::string code, Token&& token) {
    return detail::async_invoke<void(ApiResult<v1::User>)>(get_executor(), std::forward<Token>(token),
                                                           &Authenticator::totp_confirm, this, std::move(caller),
                                                           std::move(code));
  }
  template <typename Token>
  auto async_ensure_admin(std::string username, std::string password, Token&& token) {
    return detail::async_invoke<void(ApiResult<v1::User>)>(get_executor(), std::forward<Token>(token),
                                                           &Authenticator::ensure_admin, this, std::move(username),
                                                           std::move(password));
  }
  template <typename Token>
  auto async_bootstrap(Token&& token) {
    return detail::async_invoke<void(ApiResult<std::optional<std::string>>)>(get_executor(), std::forward<Token>(token),
                                                                             &Authenticator::bootstrap, this);
  }

  /// The executor the Authenticator's completions run on.
  boost::asio::any_io_executor get_executor() const noexcept;

 private:
  class Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace quartzflow
