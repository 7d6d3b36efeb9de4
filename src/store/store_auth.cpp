// SPDX-License-Identifier: Apache-2.0
// Users, API tokens and console sessions in the StoreTransaction: the Authenticator's
// tables. Secrets only ever arrive here as SHA-256 hashes.
#include <array>

#include <fmt/format.h>

#include "sql_transaction.hpp"

namespace quartzflow::detail {
namespace {

constexpr std::string_view k_user_columns =
    "record, password_hash, totp_secret, totp_pending_secret, totp_last_step, failed_logins, locked_until_unix_ms, "
    "password_change_required";

constexpr std::array<std::string_view, 3> k_user_keyword_columns{"u.username", "u.display_name", "u.email"};

std::optional<StoredUser> read_user(BorrowedStatement& rows) {
  if (!rows.next()) return std::nullopt;
  StoredUser out;
  parse_record(rows.blob(0), out.user);
  out.password_hash = rows.text(1);
  out.totp_secret = rows.text(2);
  out.totp_pending_secret = rows.text(3);
  out.totp_last_step = rows.int64(4);
  out.failed_logins = static_cast<std::uint32_t>(rows.int64(5));
  out.locked_until_unix_ms = rows.int64(6);
  // The column decides (an operator may clear it with SQL); the record's copy follows it.
  out.user.set_password_change_required(rows.int64(7) != 0);
  return out;
}

std::optional<StoredApiToken> read_token(BorrowedStatement& rows) {
  if (!rows.next()) return std::nullopt;
  StoredApiToken out;
  parse_record(rows.blob(0), out.token);
  out.secret_sha256 = rows.text(1);
  return out;
}

}  // namespace

// ---- users ----

std::optional<StoredUser> SqlStoreTransaction::user(std::string_view id) {
  static const std::string sql = fmt::format("SELECT {} FROM users WHERE id = ?1", k_user_columns);
  auto rows = statement(sql);
  rows.bind(1, id);
  return read_user(rows);
}

std::optional<StoredUser> SqlStoreTransaction::user_by_username(std::string_view username) {
  static const std::string sql = fmt::format("SELECT {} FROM users WHERE username = ?1", k_user_columns);
  auto rows = statement(sql);
  rows.bind(1, username);
  return read_user(rows);
}

void SqlStoreTransaction::put_user(const StoredUser& stored) {
  require_writable("put_user");
  const auto& user = stored.user;
  if (user.id().empty()) throw_invalid("user", "id", "is empty");
  if (user.username().empty()) throw_invalid("user", "username", "is empty");
  {
    auto other = statement("SELECT id FROM users WHERE username = ?1 AND id <> ?2");
    other.bind(1, user.username()).bind(2, user.id());
    if (other.next())
      throw error(errc::conflict,
                  ValidationError{"user", "username", fmt::format("\"{}\" is already taken", user.username())});
  }
  statement(
      "INSERT INTO users (id, username, display_name, email, role, record, password_hash, totp_secret, "
      "totp_pending_secret, totp_last_step, failed_logins, locked_until_unix_ms, password_change_required) VALUES (?1, "
      "?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) ON CONFLICT (id) DO UPDATE SET username = "
      "excluded.username, display_name = "
      "excluded.display_name, email = excluded.email, role = excluded.role, record = excluded.record, password_hash "
      "= excluded.password_hash, totp_secret = excluded.totp_secret, totp_pending_secret = "
      "excluded.totp_pending_secret, totp_last_step = excluded.totp_last_step, failed_logins = "
      "excluded.failed_logins, locked_until_unix_ms = excluded.locked_until_unix_ms, password_change_required = "
      "excluded.password_change_required")
      .bind(1, user.id())
      .bind(2, user.username())
      .bind(3, user.display_name())
      .bind(4, user.email())
      .bind(5, static_cast<std::int64_t>(user.role()))
      .bind_blob(6, serialize_deterministic(user))
      .bind(7, stored.password_hash)
      .bind(8, stored.totp_secret)
      .bind(9, stored.totp_pending_secret)
      .bind(10, stored.totp_last_step)
      .bind(11, static_cast<std::int64_t>(stored.failed_logins))
      .bind(12, stored.locked_until_unix_ms)
      .bind(13, static_cast<std::int64_t>(user.password_change_required() ? 1 : 0))
      .run();
}

bool SqlStoreTransaction::delete_user(std::string_view id) {
  require_writable("delete_user");
  const bool deleted = statement("DELETE FROM users WHERE id = ?1").bind(1, id).run() > 0;
  statement("DELETE FROM sessions WHERE user_id = ?1").bind(1, id).run();
  return deleted;
}

Listing<v1::User> SqlStoreTransaction::list_users(const v1::ListUsersRequest& request) {
  constexpr std::string_view input = "user list request";
  SqlConditions where;
  if (!request.keyword().empty()) add_keyword_condition(where, request.keyword(), k_user_keyword_columns);
  if (request.role() != v1::ROLE_UNSPECIFIED) {
    if (!v1::Role_IsValid(request.role()))
      throw_invalid(input, "role", fmt::format("{} is not a Role", static_cast<int>(request.role())));
    where.add("u.role = ?", {static_cast<std::int64_t>(request.role())});
  }
  const auto paging = paging_of(request.page(), request.page_size());

  Listing<v1::User> out;
  out.total = count("SELECT COUNT(*) FROM users u" + where.where(), where.values());
  auto rows = statement("SELECT u.record FROM users u" + where.where() + " ORDER BY u.username, u.id LIMIT ? OFFSET ?");
  const int next = rows.bind_all(where.values());
  rows.bind(next, paging.limit).bind(next + 1, paging.offset);
  while (rows.next()) parse_record(rows.blob(0), out.items.emplace_back());
  return out;
}

// ---- API tokens ----

std::optional<StoredApiToken> SqlStoreTransaction::api_token(std::string_view id) {
  auto rows = statement("SELECT record, secret_sha256 FROM api_tokens WHERE id = ?1");
  rows.bind(1, id);
  return read_token(rows);
}

std::optional<StoredApiToken> SqlStoreTransaction::api_token_by_hash(std::string_view secret_sha256) {
  auto rows = statement("SELECT record, secret_sha256 FROM api_tokens WHERE secret_sha256 = ?1");
  rows.bind(1, secret_sha256);
  return read_token(rows);
}

void SqlStoreTransaction::put_api_token(const StoredApiToken& stored) {
  require_writable("put_api_token");
  const auto& token = stored.token;
  if (token.id().empty()) throw_invalid("API token", "id", "is empty");
  if (token.user_id().empty()) throw_invalid("API token", "user_id", "is empty");
  if (token.name().empty()) throw_invalid("API token", "name", "is empty");
  if (stored.secret_sha256.empty()) throw_invalid("API token", "secret_sha256", "is empty");
  {
    auto other = statement("SELECT id FROM api_tokens WHERE user_id = ?1 AND name = ?2 AND id <> ?3");
    other.bind(1, token.user_id()).bind(2, token.name()).bind(3, token.id());
    if (other.next())
      throw error(errc::conflict,
                  ValidationError{"API token", "name",
                                  fmt::format("\"{}\" is already used by token {}", token.name(), other.text(0))});
  }
  {
    auto other = statement("SELECT id FROM api_tokens WHERE secret_sha256 = ?1 AND id <> ?2");
    other.bind(1, stored.secret_sha256).bind(2, token.id());
    if (other.next()) throw error(errc::conflict, "store: another API token has the same secret hash");
  }
  statement(
      "INSERT INTO api_tokens (id, user_id, name, secret_sha256, record) VALUES (?1, ?2, ?3, ?4, ?5) "
      "ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, name = excluded.name, secret_sha256 = "
      "excluded.secret_sha256, record = excluded.record")
      .bind(1, token.id())
      .bind(2, token.user_id())
      .bind(3, token.name())
      .bind(4, stored.secret_sha256)
      .bind_blob(5, serialize_deterministic(token))
      .run();
}

bool SqlStoreTransaction::delete_api_token(std::string_view id) {
  require_writable("delete_api_token");
  return statement("DELETE FROM api_tokens WHERE id = ?1").bind(1, id).run() > 0;
}

std::vector<v1::ApiToken> SqlStoreTransaction::api_tokens(std::string_view user_id) {
  auto rows = statement("SELECT record FROM api_tokens WHERE (?1 = '' OR user_id = ?1) ORDER BY user_id, name, id");
  rows.bind(1, user_id);
  std::vector<v1::ApiToken> out;
  while (rows.next()) parse_record(rows.blob(0), out.emplace_back());
  return out;
}

// ---- sessions ----

std::optional<StoredSession> SqlStoreTransaction::session(std::string_view token_sha256) {
  auto rows = statement(
      "SELECT token_sha256, user_id, created_unix_ms, expires_at_unix_ms, source_ip FROM sessions "
      "WHERE token_sha256 = ?1");
  rows.bind(1, token_sha256);
  if (!rows.next()) return std::nullopt;
  return StoredSession{rows.text(0), rows.text(1), rows.int64(2), rows.int64(3), rows.text(4)};
}

void SqlStoreTransaction::put_session(const StoredSession& session) {
  require_writable("put_session");
  if (session.token_sha256.empty()) throw_invalid("session", "token_sha256", "is empty");
  if (session.user_id.empty()) throw_invalid("session", "user_id", "is empty");
  statement(
      "INSERT INTO sessions (token_sha256, user_id, expires_at_unix_ms, created_unix_ms, source_ip) "
      "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (token_sha256) DO UPDATE SET user_id = excluded.user_id, "
      "expires_at_unix_ms = excluded.expires_at_unix_ms, created_unix_ms = excluded.created_unix_ms, "
      "source_ip = excluded.source_ip")
      .bind(1, session.token_sha256)
      .bind(2, session.user_id)
      .bind(3, session.expires_at_unix_ms)
      .bind(4, session.created_unix_ms)
      .bind(5, session.source_ip)
      .run();
}

bool SqlStoreTransaction::delete_session(std::string_view token_sha256) {
  require_writable("delete_session");
  return statement("DELETE FROM sessions WHERE token_sha256 = ?1").bind(1, token_sha256).run() > 0;
}

std::size_t SqlStoreTransaction::delete_sessions_of(std::string_view user_id, std::string_view except_sha256) {
  require_writable("delete_sessions_of");
  return static_cast<std::size_t>(statement("DELETE FROM sessions WHERE user_id = ?1 AND token_sha256 <> ?2")
                                      .bind(1, user_id)
                                      .bind(2, except_sha256)
                                      .run());
}

std::size_t SqlStoreTransaction::delete_expired_sessions(std::int64_t now_unix_ms) {
  require_writable("delete_expired_sessions");
  return static_cast<std::size_t>(
      statement("DELETE FROM sessions WHERE expires_at_unix_ms <= ?1").bind(1, now_unix_ms).run());
}

}  // namespace quartzflow::detail
