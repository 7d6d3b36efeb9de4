// SPDX-License-Identifier: Apache-2.0
// The Authenticator: logins, sessions, API tokens, users and TOTP over the Store (the parts in
// authenticator_*.cpp). Here: the password-hashing thread, the Impl's start, and the public
// functions, which forward to the Impl.
#include <quartzflow/auth.hpp>

#include <pthread.h>

#include "auth_detail.hpp"
#include "authenticator_impl.hpp"

namespace quartzflow {
namespace detail {

void HashWorker::start() {
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "qf-auth-hash");
    run();
  });
}

bool HashWorker::submit(Job& job) {
  std::lock_guard lock(mutex_);
  if (stopping_) return false;
  queue_.push_back(std::move(job));
  wake_.notify_one();
  return true;
}

void HashWorker::stop() {
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

void HashWorker::run() {
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

}  // namespace detail

void Authenticator::Impl::start() {
  worker_.start();
  // The hash an unknown username is checked against, ready before the first login.
  detail::HashWorker::Job job{[this] { (void)dummy_hash(); }, {}};
  worker_.submit(job);
}

const std::string& Authenticator::Impl::dummy_hash() {
  if (dummy_hash_.empty()) dummy_hash_ = hash_password(detail::random_bytes(16), options_.pbkdf2_iterations);
  return dummy_hash_;
}

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

void Authenticator::get_user(std::string id, Handler<v1::User> done) {
  impl_->get_user(std::move(id), std::move(done));
}

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
