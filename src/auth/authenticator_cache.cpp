// SPDX-License-Identifier: Apache-2.0
// The Authenticator's in-memory state: the credential cache, failed logins and locks by (account,
// source address), and the throttle of API tokens' last-use writes.
#include <algorithm>

#include "../common/clock.hpp"
#include "authenticator_impl.hpp"

namespace quartzflow {
namespace {

/// (account, source address) pairs whose failed logins are remembered: a bound on memory.
constexpr std::size_t k_max_tracked_login_failures = 10'000;
constexpr std::int64_t k_last_used_interval_ms = 60'000;

using namespace detail::account;  // failures, checks, audit helpers (account_rules.hpp)

}  // namespace

void Authenticator::Impl::apply(const TxContext& context) {
  std::lock_guard lock(mutex_);
  for (const auto& hash : context.evict_credentials) cache_.erase(hash);
  for (const auto& user_id : context.evict_users)
    std::erase_if(cache_, [&](const auto& entry) { return entry.second.principal.user.id() == user_id; });
  for (const auto& token_id : context.forget_tokens) last_used_written_.erase(token_id);
  for (const auto& user_id : context.unlock_users) unlock_locked(user_id);
  if (!context.evict_credentials.empty() || !context.evict_users.empty()) ++generation_;
}

void Authenticator::Impl::clear_cache() {
  std::lock_guard lock(mutex_);
  cache_.clear();
  ++generation_;
}

bool Authenticator::Impl::locked_out(const std::string& user_id, const std::string& address) {
  std::lock_guard lock(mutex_);
  const auto it = login_failures_.find(LoginKey{user_id, address});
  return it != login_failures_.end() && it->second.locked_until > SteadyClock::now();
}

bool Authenticator::Impl::count_login_failure(const std::string& user_id, const std::string& address) {
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

void Authenticator::Impl::forget_login_failures(const std::string& user_id, const std::string& address) {
  std::lock_guard lock(mutex_);
  login_failures_.erase(LoginKey{user_id, address});
}

std::size_t Authenticator::Impl::locked_addresses(const std::string& user_id) {
  std::lock_guard lock(mutex_);
  const auto now = SteadyClock::now();
  std::size_t count = 0;
  for (auto it = login_failures_.lower_bound(LoginKey{user_id, {}});
       it != login_failures_.end() && it->first.first == user_id; ++it)
    count += it->second.locked_until > now ? 1 : 0;
  return count;
}

void Authenticator::Impl::unlock_locked(const std::string& user_id) {
  auto it = login_failures_.lower_bound(LoginKey{user_id, {}});
  while (it != login_failures_.end() && it->first.first == user_id) it = login_failures_.erase(it);
}

void Authenticator::Impl::evict_login_failure_locked(SteadyClock::time_point now) {
  const auto rank = [now](const LoginFailures& f) {
    const bool locked = f.locked_until > now;
    return std::pair{locked, locked ? f.locked_until : f.last_failure};
  };
  const auto victim = std::min_element(login_failures_.begin(), login_failures_.end(),
                                       [&](const auto& a, const auto& b) { return rank(a.second) < rank(b.second); });
  if (victim != login_failures_.end()) login_failures_.erase(victim);
}

bool Authenticator::Impl::should_record_use_locked(const std::string& token_id, std::int64_t stored_last_used,
                                                   std::int64_t now) {
  auto& written = last_used_written_[token_id];
  written = std::max(written, stored_last_used);
  if (now - written < k_last_used_interval_ms) return false;
  written = now;
  return true;
}

void Authenticator::Impl::record_token_use(std::string token_id, std::string source_ip) {
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

}  // namespace quartzflow
