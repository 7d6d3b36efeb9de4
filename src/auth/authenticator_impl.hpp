// SPDX-License-Identifier: Apache-2.0
// The Authenticator's private half, shared by its sources: the hashing worker, the plumbing
// that runs work on that thread or in a store transaction and posts the result back, and
// Authenticator::Impl, whose members are defined by concern in authenticator_*.cpp.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <vector>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <fmt/format.h>

#include <quartzflow/auth.hpp>

#include "account_rules.hpp"

namespace quartzflow {
namespace detail {

/// Jobs for the password-hashing thread (`qf-auth-hash`); what is still queued at stop() is
/// cancelled. Thread safety: submit and stop from any thread.
class HashWorker {
 public:
  struct Job {
    std::function<void()> run;
    std::function<void()> cancel;
  };

  ~HashWorker() { stop(); }

  void start();
  /// False once stopped: the caller cancels the job itself.
  bool submit(Job& job);
  void stop();

 private:
  void run();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace detail

/// The Authenticator's state and operations (Authenticator documents the contract). Results
/// go back through `executor_`; `mutex_` guards the credential cache, the last-use throttle
/// and the login failures, which the io thread, the store's thread (transaction bodies) and
/// the hashing thread all reach.
class Authenticator::Impl : public std::enable_shared_from_this<Authenticator::Impl> {
 public:
  using SteadyClock = std::chrono::steady_clock;

  /// What a transaction body asks for besides its result.
  struct TxContext {
    bool commit_failure = false;                 ///< commit even though the result is a failure (failed-login counts)
    std::vector<std::string> evict_credentials;  ///< SHA-256 of credentials to drop from the cache
    std::vector<std::string> evict_users;        ///< user ids whose cached credentials to drop
    std::vector<std::string> forget_tokens;      ///< token ids whose last-use throttle to drop
    std::vector<std::string> unlock_users;       ///< user ids whose login locks to lift
  };

  Impl(Store& store, boost::asio::any_io_executor executor, AuthOptions options)
      : store_(store), executor_(std::move(executor)), options_(options) {}

  /// Starts the hashing thread (authenticator.cpp, with the Authenticator's own members).
  void start();
  void stop() { worker_.stop(); }

  const AuthOptions& options() const noexcept { return options_; }
  const boost::asio::any_io_executor& executor() const noexcept { return executor_; }

  // ---- plumbing ----

  template <typename T>
  void post_result(Handler<T> done, ApiResult<T> result) {
    boost::asio::post(executor_,
                      [done = std::move(done), result = std::move(result)]() mutable { done(std::move(result)); });
  }

  /// Runs `compute` on the hashing thread, then `then` on the executor.
  template <typename T>
  void offload(std::function<ApiResult<T>()> compute, std::function<void(ApiResult<T>)> then) {
    auto tracked = boost::asio::prefer(executor_, boost::asio::execution::outstanding_work.tracked);
    auto shared_then = std::make_shared<std::function<void(ApiResult<T>)>>(std::move(then));
    detail::HashWorker::Job job;
    job.run = [compute = std::move(compute), shared_then, tracked] {
      std::optional<ApiResult<T>> result;
      try {
        result.emplace(compute());
      } catch (const std::exception& e) {
        result.emplace(detail::account::failure(v1::API_ERROR_CODE_INTERNAL, e.what()));
      }
      boost::asio::post(tracked,
                        [shared_then, result = std::move(*result)]() mutable { (*shared_then)(std::move(result)); });
    };
    job.cancel = [shared_then, tracked] {
      boost::asio::post(tracked, [shared_then] {
        (*shared_then)(detail::account::failure(v1::API_ERROR_CODE_UNAVAILABLE, "the authenticator is shutting down"));
      });
    };
    auto cancel = job.cancel;
    if (!worker_.submit(job)) cancel();
  }

  /// Runs `body` in a read-write transaction, then `then` on the executor. A failed result
  /// rolls the transaction back unless the body set `commit_failure`.
  template <typename T>
  void write(std::function<ApiResult<T>(StoreTransaction&, TxContext&)> body, Handler<T> then) {
    struct State {
      std::optional<ApiResult<T>> result;
      TxContext context;
    };
    auto state = std::make_shared<State>();
    store_.transact(
        [state, body = std::move(body)](StoreTransaction& tx, error_code& ec) {
          run_body(*state, ec, [&] { return body(tx, state->context); });
          if (!ec && !state->result->ok() && !state->context.commit_failure) ec = errc::invalid_argument;
        },
        [self = shared_from_this(), state, then = std::move(then)](error_code ec) mutable {
          self->apply(state->context);
          self->finish(std::move(then), settle(std::move(state->result), ec));
        });
  }

  /// Runs `body` in a read transaction, then `then` on the executor.
  template <typename T>
  void read(std::function<ApiResult<T>(StoreTransaction&)> body, Handler<T> then) {
    struct State {
      std::optional<ApiResult<T>> result;
    };
    auto state = std::make_shared<State>();
    store_.read([state, body = std::move(body)](StoreTransaction& tx,
                                                error_code& ec) { run_body(*state, ec, [&] { return body(tx); }); },
                [self = shared_from_this(), state, then = std::move(then)](error_code ec) mutable {
                  self->finish(std::move(then), settle(std::move(state->result), ec));
                });
  }

  template <typename State, typename Body>
  static void run_body(State& state, error_code& ec, Body body) {
    try {
      state.result.emplace(body());
    } catch (const error& e) {
      state.result.emplace(detail::account::failure_of(e.code(), e.what(), &e.detail()));
      ec = e.code() ? e.code() : error_code(errc::store_failed);
    } catch (const std::exception& e) {
      state.result.emplace(detail::account::failure(v1::API_ERROR_CODE_INTERNAL, e.what()));
      ec = errc::store_failed;
    }
  }

  /// The body's result, or the store's error when the body did not run or its commit failed.
  template <typename T>
  static ApiResult<T> settle(std::optional<ApiResult<T>> result, error_code ec) {
    if (!result) return detail::account::failure_of(ec, fmt::format("store: {}", ec.message()));
    if (ec && result->ok())
      return detail::account::failure_of(ec, fmt::format("store: the change was not saved: {}", ec.message()));
    return std::move(*result);
  }

  template <typename T>
  void finish(Handler<T> then, ApiResult<T> result) {
    boost::asio::dispatch(executor_,
                          [then = std::move(then), result = std::move(result)]() mutable { then(std::move(result)); });
  }

  // ---- the credential cache (authenticator_cache.cpp) ----

  struct CachedCredential {
    Principal principal;
    std::int64_t expires_at_unix_ms = 0;  // the credential's own expiry; 0 = none
    SteadyClock::time_point validated_at;
  };

  void apply(const TxContext& context);
  void clear_cache();

  // ---- failed logins, by (account, source address) (authenticator_cache.cpp) ----
  // In memory: a lock is never shared by the addresses that did not earn it, so nobody can
  // lock an account out for everyone else; a restart forgets the locks.

  struct LoginFailures {
    std::uint32_t count = 0;  // consecutive, since the last lock or the last quiet lockout period
    SteadyClock::time_point last_failure;
    SteadyClock::time_point locked_until;  // the epoch: not locked
  };
  using LoginKey = std::pair<std::string, std::string>;  // user id, source address

  bool locked_out(const std::string& user_id, const std::string& address);

  /// Counts a failed login of `user_id` from `address`; true when it locks the pair.
  bool count_login_failure(const std::string& user_id, const std::string& address);
  void forget_login_failures(const std::string& user_id, const std::string& address);

  /// Addresses `user_id` is locked out from now.
  std::size_t locked_addresses(const std::string& user_id);

  /// Lifts every lock of `user_id` and forgets its failures. mutex_ held.
  void unlock_locked(const std::string& user_id);

  /// Bounded memory: drops the stalest unlocked entry, else the lock that ends first. mutex_ held.
  void evict_login_failure_locked(SteadyClock::time_point now);

  /// Whether to write a token's last use now (at most once a minute per token).
  bool should_record_use_locked(const std::string& token_id, std::int64_t stored_last_used, std::int64_t now);
  void record_token_use(std::string token_id, std::string source_ip);

  // ---- credentials, logins and sessions (authenticator_sessions.cpp) ----

  void authenticate(std::string credential, std::string source_ip, Handler<Principal> done);
  void login(v1::LoginRequest request, std::string source_ip, std::string user_agent, Handler<v1::LoginResponse> done);

  /// A failed password or TOTP code: counted for (account, address), which is locked after
  /// too many. The answer does not tell: a locked account answers as an unknown one.
  ApiFailure count_failure(StoreTransaction& tx, const StoredUser& stored, const detail::account::AuditActor& who,
                           std::string detail, std::string message);
  void finish_login(std::shared_ptr<const v1::LoginRequest> request, std::string source_ip, std::string user_agent,
                    bool password_ok, std::string checked_hash, Handler<v1::LoginResponse> done);
  void logout(std::string session_token, Handler<std::monostate> done);

  // ---- users (authenticator_users.cpp) ----

  void create_user(v1::CreateUserRequest request, Actor actor, Handler<v1::User> done);
  static ApiFailure already_taken(const v1::User& user);
  static ApiFailure no_user(std::string_view id);
  void get_user(std::string id, Handler<v1::User> done);
  void list_users(v1::ListUsersRequest request, Handler<v1::ListUsersResponse> done);
  void update_user(v1::User user, Actor actor, Handler<v1::User> done);
  void delete_user(std::string id, Actor actor, Handler<std::monostate> done);
  void change_password(const Principal& caller, std::string user_id, v1::ChangePasswordRequest request,
                       Handler<std::monostate> done);
  void unlock_user(std::string id, Actor actor, Handler<v1::User> done);

  // ---- API tokens (authenticator_tokens.cpp) ----

  void create_token(const Principal& caller, v1::CreateApiTokenRequest request, Actor actor,
                    Handler<v1::CreateApiTokenResponse> done);
  void list_tokens(const Principal& caller, Handler<v1::ListApiTokensResponse> done);
  void revoke_token(const Principal& caller, std::string id, Actor actor, Handler<v1::ApiToken> done);

  // ---- TOTP (authenticator_totp.cpp) ----

  static std::optional<ApiFailure> needs_session(const Principal& caller);
  void totp_enroll(const Principal& caller, Handler<v1::TotpEnrollResponse> done);
  void totp_confirm(const Principal& caller, std::string code, Handler<v1::User> done);

  // ---- first start and recovery (authenticator_bootstrap.cpp) ----

  void ensure_admin(std::string username, std::string password, Handler<v1::User> done);
  void bootstrap(Handler<std::optional<std::string>> done);
  static bool any_user(StoreTransaction& tx);

 private:
  /// Only ever used on the hashing thread.
  const std::string& dummy_hash();

  Store& store_;
  boost::asio::any_io_executor executor_;
  const AuthOptions options_;
  detail::HashWorker worker_;
  std::string dummy_hash_;  // the hashing thread's

  std::mutex mutex_;                                                 // guards what follows
  std::unordered_map<std::string, CachedCredential> cache_;          // by the credential's SHA-256
  std::uint64_t generation_ = 0;                                     // bumped by every eviction
  std::unordered_map<std::string, std::int64_t> last_used_written_;  // token id -> last write, unix ms
  std::map<LoginKey, LoginFailures> login_failures_;                 // by (user id, source address)
};

}  // namespace quartzflow
