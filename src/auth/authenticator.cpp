// SPDX-License-Identifier: Apache-2.0
// The Authenticator: logins, sessions, API tokens, users and TOTP over the Store. Password
// hashing runs on one worker thread; each change and its audit entry share a transaction.
#include <quartzflow/auth.hpp>

#include <pthread.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/dispatch.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/post.hpp>
#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>

#include "../common/clock.hpp"
#include "../common/utf8.hpp"
#include "account_rules.hpp"
#include "auth_detail.hpp"

namespace quartzflow {
namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr auto k_cache_ttl = std::chrono::seconds(5);
constexpr std::size_t k_max_cached_credentials = 10000;
constexpr std::int64_t k_last_used_interval_ms = 60'000;
constexpr std::size_t k_max_token_name_characters = 64;
constexpr std::size_t k_max_credential_bytes = 512;
constexpr std::size_t k_one_time_password_bytes = 18;  // 24 base64url characters
constexpr const char* k_bad_login = "invalid username or password";
constexpr const char* k_bootstrap_username = "admin";
/// (account, source address) pairs whose failed logins are remembered: a bound on memory.
constexpr std::size_t k_max_tracked_login_failures = 10'000;

using namespace detail::account;  // failures, checks, audit helpers (account_rules.hpp)
using detail::utf8_characters;


/// Jobs for the password-hashing thread; what is still queued at stop() is cancelled.
class HashWorker {
 public:
  struct Job {
    std::function<void()> run;
    std::function<void()> cancel;
  };

  ~HashWorker() { stop(); }

  void start() {
    thread_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "qf-auth-hash");
      run();
    });
  }

  /// False once stopped: the caller cancels the job itself.
  bool submit(Job& job) {
    std::lock_guard lock(mutex_);
    if (stopping_) return false;
    queue_.push_back(std::move(job));
    wake_.notify_one();
    return true;
  }

  void stop() {
    std::deque<Job> cancelled;
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      cancelled.swap(queue_);
    }
    wake_.notify_all();
    if (thread_.joinable()) thread_.join();
    for (auto& job : cancelled)
      if (job.cancel) job.cancel();
  }

 private:
  void run() {
    std::unique_lock lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      auto job = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      job.run();
      job = {};  // what it captured goes here, not under the lock
      lock.lock();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> queue_;
  bool stopping_ = false;
  std::thread thread_;
};

/// What a transaction body asks for besides its result.
struct TxContext {
  bool commit_failure = false;  ///< commit even though the result is a failure (failed-login counts)
  std::vector<std::string> evict_credentials;  ///< SHA-256 of credentials to drop from the cache
  std::vector<std::string> evict_users;        ///< user ids whose cached credentials to drop
  std::vector<std::string> forget_tokens;      ///< token ids whose last-use throttle to drop
  std::vector<std::string> unlock_users;       ///< user ids whose login locks to lift
};

}  // namespace

class Authenticator::Impl : public std::enable_shared_from_this<Authenticator::Impl> {
 public:
  Impl(Store& store, boost::asio::any_io_executor executor, AuthOptions options)
      : store_(store), executor_(std::move(executor)), options_(options) {}

  void start() {
    worker_.start();
    // The hash an unknown username is checked against, ready before the first login.
    HashWorker::Job job{[this] { (void)dummy_hash(); }, {}};
    worker_.submit(job);
  }
  void stop() { worker_.stop(); }

  const AuthOptions& options() const noexcept { return options_; }
  const boost::asio::any_io_executor& executor() const noexcept { return executor_; }

  // ---- plumbing ----

  template <typename T>
  void post_result(Handler<T> done, ApiResult<T> result) {
    boost::asio::post(executor_, [done = std::move(done), result = std::move(result)]() mutable {
      done(std::move(result));
    });
  }

  /// Runs `compute` on the hashing thread, then `then` on the executor.
  template <typename T>
  void offload(std::function<ApiResult<T>()> compute, std::function<void(ApiResult<T>)> then) {
    auto tracked = boost::asio::prefer(executor_, boost::asio::execution::outstanding_work.tracked);
    auto shared_then = std::make_shared<std::function<void(ApiResult<T>)>>(std::move(then));
    HashWorker::Job job;
    job.run = [compute = std::move(compute), shared_then, tracked] {
      std::optional<ApiResult<T>> result;
      try {
        result.emplace(compute());
      } catch (const std::exception& e) {
        result.emplace(failure(v1::API_ERROR_CODE_INTERNAL, e.what()));
      }
      boost::asio::post(tracked, [shared_then, result = std::move(*result)]() mutable {
        (*shared_then)(std::move(result));
      });
    };
    job.cancel = [shared_then, tracked] {
      boost::asio::post(tracked, [shared_then] {
        (*shared_then)(failure(v1::API_ERROR_CODE_UNAVAILABLE, "the authenticator is shutting down"));
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
      state.result.emplace(failure_of(e.code(), e.what(), &e.detail()));
      ec = e.code() ? e.code() : error_code(errc::store_failed);
    } catch (const std::exception& e) {
      state.result.emplace(failure(v1::API_ERROR_CODE_INTERNAL, e.what()));
      ec = errc::store_failed;
    }
  }

  /// The body's result, or the store's error when the body did not run or its commit failed.
  template <typename T>
  static ApiResult<T> settle(std::optional<ApiResult<T>> result, error_code ec) {
    if (!result) return failure_of(ec, fmt::format("store: {}", ec.message()));
    if (ec && result->ok()) return failure_of(ec, fmt::format("store: the change was not saved: {}", ec.message()));
    return std::move(*result);
  }

  template <typename T>
  void finish(Handler<T> then, ApiResult<T> result) {
    boost::asio::dispatch(executor_, [then = std::move(then), result = std::move(result)]() mutable {
      then(std::move(result));
    });
  }

  // ---- the credential cache ----

  struct CachedCredential {
    Principal principal;
    std::int64_t expires_at_unix_ms = 0;  // the credential's own expiry; 0 = none
    SteadyClock::time_point validated_at;
  };

  void apply(const TxContext& context) {
    std::lock_guard lock(mutex_);
    for (const auto& hash : context.evict_credentials) cache_.erase(hash);
    for (const auto& user_id : context.evict_users)
      std::erase_if(cache_, [&](const auto& entry) { return entry.second.principal.user.id() == user_id; });
    for (const auto& token_id : context.forget_tokens) last_used_written_.erase(token_id);
    for (const auto& user_id : context.unlock_users) unlock_locked(user_id);
    if (!context.evict_credentials.empty() || !context.evict_users.empty()) ++generation_;
  }

  void clear_cache() {
    std::lock_guard lock(mutex_);
    cache_.clear();
    ++generation_;
  }

  // ---- failed logins, by (account, source address) ----
  // In memory: a lock is never shared by the addresses that did not earn it, so nobody can
  // lock an account out for everyone else; a restart forgets the locks.

  struct LoginFailures {
    std::uint32_t count = 0;  // consecutive, since the last lock or the last quiet lockout period
    SteadyClock::time_point last_failure;
    SteadyClock::time_point locked_until;  // the epoch: not locked
  };
  using LoginKey = std::pair<std::string, std::string>;  // user id, source address

  bool locked_out(const std::string& user_id, const std::string& address) {
    std::lock_guard lock(mutex_);
    const auto it = login_failures_.find(LoginKey{user_id, address});
    return it != login_failures_.end() && it->second.locked_until > SteadyClock::now();
  }

  /// Counts a failed login of `user_id` from `address`; true when it locks the pair.
  bool count_login_failure(const std::string& user_id, const std::string& address) {
    if (options_.max_failed_logins == 0) return false;
    std::lock_guard lock(mutex_);
    const auto now = SteadyClock::now();
    auto it = login_failures_.find(LoginKey{user_id, address});
    if (it == login_failures_.end()) {
      if (login_failures_.size() >= k_max_tracked_login_failures) evict_login_failure_locked(now);
      it = login_failures_.emplace(LoginKey{user_id, address}, LoginFailures{}).first;
    }
    auto& entry = it->second;
    if (now - entry.last_failure > options_.lockout) entry.count = 0;  // a quiet period forgives
    entry.last_failure = now;
    if (++entry.count < options_.max_failed_logins) return false;
    entry.count = 0;
    entry.locked_until = now + options_.lockout;
    return true;
  }

  void forget_login_failures(const std::string& user_id, const std::string& address) {
    std::lock_guard lock(mutex_);
    login_failures_.erase(LoginKey{user_id, address});
  }

  /// Addresses `user_id` is locked out from now.
  std::size_t locked_addresses(const std::string& user_id) {
    std::lock_guard lock(mutex_);
    const auto now = SteadyClock::now();
    std::size_t count = 0;
    for (auto it = login_failures_.lower_bound(LoginKey{user_id, {}});
         it != login_failures_.end() && it->first.first == user_id; ++it)
      count += it->second.locked_until > now ? 1 : 0;
    return count;
  }

  /// Lifts every lock of `user_id` and forgets its failures. mutex_ held.
  void unlock_locked(const std::string& user_id) {
    auto it = login_failures_.lower_bound(LoginKey{user_id, {}});
    while (it != login_failures_.end() && it->first.first == user_id) it = login_failures_.erase(it);
  }

  /// Bounded memory: drops the stalest unlocked entry, else the lock that ends first. mutex_ held.
  void evict_login_failure_locked(SteadyClock::time_point now) {
    const auto rank = [now](const LoginFailures& f) {
      const bool locked = f.locked_until > now;
      return std::pair{locked, locked ? f.locked_until : f.last_failure};
    };
    const auto victim = std::min_element(login_failures_.begin(), login_failures_.end(),
                                         [&](const auto& a, const auto& b) { return rank(a.second) < rank(b.second); });
    if (victim != login_failures_.end()) login_failures_.erase(victim);
  }

  /// Whether to write a token's last use now (at most once a minute per token).
  bool should_record_use_locked(const std::string& token_id, std::int64_t stored_last_used, std::int64_t now) {
    auto& written = last_used_written_[token_id];
    written = std::max(written, stored_last_used);
    if (now - written < k_last_used_interval_ms) return false;
    written = now;
    return true;
  }

  void record_token_use(std::string token_id, std::string source_ip) {
    const auto now = detail::now_unix_ms();
    store_.transact(
        [token_id = std::move(token_id), source_ip = std::move(source_ip), now](StoreTransaction& tx, error_code&) {
          auto stored = tx.api_token(token_id);
          if (!stored || stored->token.revoked()) return;
          stored->token.set_last_used_unix_ms(now);
          stored->token.set_last_used_ip(source_ip);
          tx.put_api_token(*stored);
        },
        [](error_code) {});
  }

  // ---- operations ----

  void authenticate(std::string credential, std::string source_ip, Handler<Principal> done) {
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

  void login(v1::LoginRequest request, std::string source_ip, std::string user_agent, Handler<v1::LoginResponse> done) {
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

  /// A failed password or TOTP code: counted for (account, address), which is locked after
  /// too many. The answer does not tell: a locked account answers as an unknown one.
  ApiFailure count_failure(StoreTransaction& tx, const StoredUser& stored, const AuditActor& who, std::string detail,
                           std::string message) {
    if (count_login_failure(stored.user.id(), who.address))
      detail += fmt::format("; locked for {} s for this address after {} failed logins", options_.lockout.count(),
                            options_.max_failed_logins);
    audit(tx, who, "auth.login_failed", user_target(stored.user), false, std::move(detail));
    return unauthenticated(std::move(message));
  }

  void finish_login(std::shared_ptr<const v1::LoginRequest> request, std::string source_ip, std::string user_agent,
                    bool password_ok, std::string checked_hash, Handler<v1::LoginResponse> done) {
    write<v1::LoginResponse>(
        [self = shared_from_this(), request, source_ip, user_agent, password_ok,
         checked_hash](StoreTransaction& tx, TxContext& context) -> ApiResult<v1::LoginResponse> {
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
            if (request->totp_code().empty())
              return failure(v1::API_ERROR_CODE_TOTP_REQUIRED, "a TOTP code is required");
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

  void logout(std::string session_token, Handler<std::monostate> done) {
    if (!session_token.starts_with(k_session_token_prefix) || session_token.size() > k_max_credential_bytes)
      return post_result<std::monostate>(std::move(done), std::monostate{});
    write<std::monostate>(
        [hash = sha256_hex(session_token)](StoreTransaction& tx, TxContext& context) -> ApiResult<std::monostate> {
          context.evict_credentials.push_back(hash);
          auto session = tx.session(hash);
          if (!session) return std::monostate{};
          tx.delete_session(hash);
          if (auto user = tx.user(session->user_id))
            audit(tx, {user->user.username(), v1::ACTOR_KIND_USER, {}, {}, {}}, "auth.logout",
                  user_target(user->user), true, {});
          return std::monostate{};
        },
        std::move(done));
  }

  // ---- users ----

  void create_user(v1::CreateUserRequest request, Actor actor, Handler<v1::User> done) {
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

  static ApiFailure already_taken(const v1::User& user) {
    return failure(v1::API_ERROR_CODE_ALREADY_EXISTS, fmt::format("user \"{}\" already exists", user.username()),
                   {field_violation("user.username", fmt::format("\"{}\" is already taken", user.username()))});
  }

  static ApiFailure no_user(std::string_view id) {
    return failure(v1::API_ERROR_CODE_NOT_FOUND, fmt::format("no user with id \"{}\"", clip(id, 128)));
  }

  void get_user(std::string id, Handler<v1::User> done) {
    read<v1::User>(
        [id = std::move(id)](StoreTransaction& tx) -> ApiResult<v1::User> {
          auto stored = tx.user(id);
          if (!stored) return no_user(id);
          return stored->user;
        },
        std::move(done));
  }

  void list_users(v1::ListUsersRequest request, Handler<v1::ListUsersResponse> done) {
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

  void update_user(v1::User user, Actor actor, Handler<v1::User> done) {
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

  void delete_user(std::string id, Actor actor, Handler<std::monostate> done) {
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

  void change_password(const Principal& caller, std::string user_id, v1::ChangePasswordRequest request,
                       Handler<std::monostate> done) {
    const bool own = caller.user.id() == user_id;
    if (!own && caller.role != v1::ROLE_ADMIN)
      return post_result<std::monostate>(
          std::move(done),
          failure(v1::API_ERROR_CODE_PERMISSION_DENIED, "only an admin may set another user's password"));
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

  void unlock_user(std::string id, Actor actor, Handler<v1::User> done) {
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

  // ---- API tokens ----

  void create_token(const Principal& caller, v1::CreateApiTokenRequest request, Actor actor,
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
          failure(v1::API_ERROR_CODE_PERMISSION_DENIED,
                  fmt::format("a token's role cannot be above the caller's ({})", v1::Role_Name(caller.role)),
                  {field_violation("role",
                                   fmt::format("{} is above {}", v1::Role_Name(role), v1::Role_Name(caller.role)))}));
    write<v1::CreateApiTokenResponse>(
        [caller, request = std::move(request), actor = std::move(actor),
         role](StoreTransaction& tx, TxContext&) -> ApiResult<v1::CreateApiTokenResponse> {
          const auto created_at = detail::now_unix_ms();
          auto owner = tx.user(caller.user.id());
          if (!owner || owner->user.disabled()) return unauthenticated("user is disabled or gone");
          if (!role_at_least(owner->user.role(), role))
            return failure(
                v1::API_ERROR_CODE_PERMISSION_DENIED,
                fmt::format("a token's role cannot be above its owner's ({})", v1::Role_Name(owner->user.role())),
                {field_violation(
                    "role", fmt::format("{} is above {}", v1::Role_Name(role), v1::Role_Name(owner->user.role())))});
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

  void list_tokens(const Principal& caller, Handler<v1::ListApiTokensResponse> done) {
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

  void revoke_token(const Principal& caller, std::string id, Actor actor, Handler<v1::ApiToken> done) {
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
          audit(tx, audit_actor(caller, actor), "token.revoke", {"token", before.id(), before.name()}, true, {},
                &before, &stored->token);
          return stored->token;
        },
        std::move(done));
  }

  // ---- TOTP ----

  static std::optional<ApiFailure> needs_session(const Principal& caller) {
    if (caller.kind == v1::ACTOR_KIND_USER) return std::nullopt;
    return failure(v1::API_ERROR_CODE_PERMISSION_DENIED, "TOTP enrollment needs a console session, not an API token");
  }

  void totp_enroll(const Principal& caller, Handler<v1::TotpEnrollResponse> done) {
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

  void totp_confirm(const Principal& caller, std::string code, Handler<v1::User> done) {
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
          audit(tx, audit_actor(caller), "auth.totp_enable", user_target(stored->user), true, {}, &before,
                &stored->user);
          return stored->user;
        },
        std::move(done));
  }

  // ---- first start and recovery ----

  void ensure_admin(std::string username, std::string password, Handler<v1::User> done) {
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

  void bootstrap(Handler<std::optional<std::string>> done) {
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
                           [made = std::move(made).value()](
                               StoreTransaction& tx, TxContext&) -> ApiResult<std::optional<std::string>> {
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

  static bool any_user(StoreTransaction& tx) {
    v1::ListUsersRequest request;
    request.set_page_size(1);
    return tx.list_users(request).total > 0;
  }

 private:
  /// Only ever used on the hashing thread.
  const std::string& dummy_hash() {
    if (dummy_hash_.empty()) dummy_hash_ = hash_password(detail::random_bytes(16), options_.pbkdf2_iterations);
    return dummy_hash_;
  }

  Store& store_;
  boost::asio::any_io_executor executor_;
  const AuthOptions options_;
  HashWorker worker_;
  std::string dummy_hash_;  // the hashing thread's

  std::mutex mutex_;  // guards what follows
  std::unordered_map<std::string, CachedCredential> cache_;     // by the credential's SHA-256
  std::uint64_t generation_ = 0;                                // bumped by every eviction
  std::unordered_map<std::string, std::int64_t> last_used_written_;  // token id -> last write, unix ms
  std::map<LoginKey, LoginFailures> login_failures_;  // by (user id, source address)
};

// ---- Authenticator ----

Authenticator::Authenticator(Store& store, boost::asio::any_io_executor executor, AuthOptions options)
    : impl_(std::make_shared<Impl>(store, std::move(executor), options)) {
  impl_->start();
}

Authenticator::~Authenticator() { impl_->stop(); }

const AuthOptions& Authenticator::options() const noexcept { return impl_->options(); }

boost::asio::any_io_executor Authenticator::get_executor() const noexcept { return impl_->executor(); }

void Authenticator::authenticate(std::string credential, std::string source_ip, Handler<Principal> done) {
  impl_->authenticate(std::move(credential), std::move(source_ip), std::move(done));
}

void Authenticator::login(v1::LoginRequest request, std::string source_ip, std::string user_agent,
                          Handler<v1::LoginResponse> done) {
  impl_->login(std::move(request), std::move(source_ip), std::move(user_agent), std::move(done));
}

void Authenticator::logout(std::string session_token, Handler<std::monostate> done) {
  impl_->logout(std::move(session_token), std::move(done));
}

void Authenticator::create_user(v1::CreateUserRequest request, Actor actor, Handler<v1::User> done) {
  impl_->create_user(std::move(request), std::move(actor), std::move(done));
}

void Authenticator::get_user(std::string id, Handler<v1::User> done) { impl_->get_user(std::move(id), std::move(done)); }

void Authenticator::list_users(v1::ListUsersRequest request, Handler<v1::ListUsersResponse> done) {
  impl_->list_users(std::move(request), std::move(done));
}

void Authenticator::update_user(v1::User user, Actor actor, Handler<v1::User> done) {
  impl_->update_user(std::move(user), std::move(actor), std::move(done));
}

void Authenticator::delete_user(std::string id, Actor actor, Handler<std::monostate> done) {
  impl_->delete_user(std::move(id), std::move(actor), std::move(done));
}

void Authenticator::change_password(const Principal& caller, std::string user_id, v1::ChangePasswordRequest request,
                                    Handler<std::monostate> done) {
  impl_->change_password(caller, std::move(user_id), std::move(request), std::move(done));
}

void Authenticator::unlock_user(std::string id, Actor actor, Handler<v1::User> done) {
  impl_->unlock_user(std::move(id), std::move(actor), std::move(done));
}

void Authenticator::create_token(const Principal& caller, v1::CreateApiTokenRequest request, Actor actor,
                                 Handler<v1::CreateApiTokenResponse> done) {
  impl_->create_token(caller, std::move(request), std::move(actor), std::move(done));
}

void Authenticator::list_tokens(const Principal& caller, Handler<v1::ListApiTokensResponse> done) {
  impl_->list_tokens(caller, std::move(done));
}

void Authenticator::revoke_token(const Principal& caller, std::string id, Actor actor, Handler<v1::ApiToken> done) {
  impl_->revoke_token(caller, std::move(id), std::move(actor), std::move(done));
}

void Authenticator::totp_enroll(const Principal& caller, Handler<v1::TotpEnrollResponse> done) {
  impl_->totp_enroll(caller, std::move(done));
}

void Authenticator::totp_confirm(const Principal& caller, std::string code, Handler<v1::User> done) {
  impl_->totp_confirm(caller, std::move(code), std::move(done));
}

void Authenticator::ensure_admin(std::string username, std::string password, Handler<v1::User> done) {
  impl_->ensure_admin(std::move(username), std::move(password), std::move(done));
}

void Authenticator::bootstrap(Handler<std::optional<std::string>> done) { impl_->bootstrap(std::move(done)); }

void Authenticator::clear_cache() { impl_->clear_cache(); }

}  // namespace quartzflow
