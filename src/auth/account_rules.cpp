// SPDX-License-Identifier: Apache-2.0
// The Authenticator's account rules (account_rules.hpp).
#include "account_rules.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "../common/clock.hpp"
#include "../common/utf8.hpp"
#include "auth_detail.hpp"

namespace quartzflow::detail::account {

ApiFailure failure(v1::ApiErrorCode code, std::string message, std::vector<v1::FieldViolation> violations) {
  return ApiFailure{code, std::move(message), std::move(violations)};
}

ApiFailure unauthenticated(std::string message) { return failure(v1::API_ERROR_CODE_UNAUTHENTICATED, std::move(message)); }

/// `invalid <input>: <field>: <reason>; ...`, as the rest of the API words validation errors.
ApiFailure invalid(std::string_view input, std::vector<v1::FieldViolation> violations) {
  std::string message = fmt::format("invalid {}: ", input);
  for (std::size_t i = 0; i < violations.size(); ++i)
    message += fmt::format("{}{}: {}", i == 0 ? "" : "; ", violations[i].field(), violations[i].reason());
  return failure(v1::API_ERROR_CODE_INVALID_ARGUMENT, std::move(message), std::move(violations));
}

/// A store error as an API failure (a conflict from a unique column is a name taken).
ApiFailure failure_of(const error_code& ec, std::string message, const ValidationError* detail) {
  v1::ApiErrorCode code = v1::API_ERROR_CODE_INTERNAL;
  if (ec == errc::invalid_argument)
    code = v1::API_ERROR_CODE_INVALID_ARGUMENT;
  else if (ec == errc::conflict)
    code = v1::API_ERROR_CODE_ALREADY_EXISTS;
  else if (ec == errc::not_found)
    code = v1::API_ERROR_CODE_NOT_FOUND;
  else if (ec == errc::store_failed)
    code = v1::API_ERROR_CODE_UNAVAILABLE;
  std::vector<v1::FieldViolation> violations;
  if (detail && !detail->field.empty()) violations.push_back(field_violation(detail->field, detail->reason));
  return failure(code, std::move(message), std::move(violations));
}

/// Client-supplied text for a record: bounded, and valid UTF-8 (protobuf refuses to parse
/// a record holding anything else).
std::string clip(std::string_view text, std::size_t max_bytes) {
  return valid_utf8(text.substr(0, std::min(text.size(), max_bytes)));
}


bool has_control_character(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char c) {
    const auto b = static_cast<unsigned char>(c);
    return b < 0x20 || b == 0x7f;
  });
}

std::string random_id(std::string_view prefix) {
  return std::string(prefix) + hex_encode(random_bytes(8));
}

void check_username(const std::string& field, std::string_view username, std::vector<v1::FieldViolation>& out) {
  if (username.empty()) return out.push_back(field_violation(field, "is empty"));
  if (username.size() > k_max_username_characters)
    return out.push_back(
        field_violation(field, fmt::format("is longer than {} characters", k_max_username_characters)));
  const bool allowed = std::all_of(username.begin(), username.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '@' || c == '-';
  });
  if (!allowed)
    out.push_back(field_violation(field, fmt::format("\"{}\" may only hold letters, digits and . _ @ -",
                                                     clip(username, k_max_username_characters))));
}

/// A new password against the policy (password_weakness); `username` may be empty when
/// not known yet (checked again once it is).
void check_password(const std::string& field, std::string_view password, std::string_view username,
                    std::vector<v1::FieldViolation>& out) {
  if (auto weakness = password_weakness(password, username))
    out.push_back(field_violation(field, std::move(*weakness)));
}

/// The fields of a User a caller sets besides the username (role required).
void check_user_fields(const v1::User& user, std::vector<v1::FieldViolation>& out) {
  if (utf8_characters(user.display_name()) > k_max_display_name_characters)
    out.push_back(field_violation("user.display_name",
                                  fmt::format("is longer than {} characters", k_max_display_name_characters)));
  if (!user.email().empty()) {
    const auto& email = user.email();
    const auto at = email.find('@');
    if (email.size() > k_max_email_bytes)
      out.push_back(field_violation("user.email", fmt::format("is longer than {} characters", k_max_email_bytes)));
    else if (at == std::string::npos || at == 0 || at + 1 == email.size() || email.find('@', at + 1) != std::string::npos ||
             std::any_of(email.begin(), email.end(), [](char c) { return static_cast<unsigned char>(c) <= ' '; }))
      out.push_back(field_violation("user.email", fmt::format("\"{}\" is not an e-mail address", email)));
  }
  if (user.role() == v1::ROLE_UNSPECIFIED)
    out.push_back(field_violation("user.role", "is required: ROLE_ADMIN, ROLE_OPERATOR or ROLE_VIEWER"));
  else if (!v1::Role_IsValid(user.role()))
    out.push_back(field_violation("user.role", fmt::format("{} is not a Role", static_cast<int>(user.role()))));
  if (user.settings_size() > static_cast<int>(k_max_settings))
    out.push_back(field_violation("user.settings", fmt::format("has more than {} entries", k_max_settings)));
  for (const auto& [key, value] : user.settings()) {
    if (key.empty() || key.size() > k_max_setting_key_bytes)
      out.push_back(field_violation("user.settings",
                                    fmt::format("key \"{}\" must be 1-{} characters", key, k_max_setting_key_bytes)));
    else if (value.size() > k_max_setting_value_bytes)
      out.push_back(field_violation(fmt::format("user.settings[{}]", key),
                                    fmt::format("is longer than {} bytes", k_max_setting_value_bytes)));
  }
}

/// The less powerful of two roles.
v1::Role lesser_role(v1::Role a, v1::Role b) noexcept {
  if (role_rank(a) == 0 || role_rank(b) == 0) return v1::ROLE_UNSPECIFIED;
  return role_rank(a) <= role_rank(b) ? a : b;
}

AuditActor audit_actor(const Actor& actor) {
  return {actor.name, actor.kind, actor.token_name, actor.address, actor.user_agent};
}

AuditActor audit_actor(const Principal& caller) {
  return {caller.user.username(), caller.kind, caller.token_name, caller.source_ip, {}};
}

/// The caller's kind and token, with the name and address the HTTP layer gave.
AuditActor audit_actor(const Principal& caller, const Actor& actor) {
  return {actor.name, caller.kind, caller.token_name, actor.address.empty() ? caller.source_ip : actor.address,
          actor.user_agent};
}

void audit(StoreTransaction& tx, const AuditActor& actor, std::string action, const AuditTarget& target, bool success,
           std::string detail, const google::protobuf::Message* before,
           const google::protobuf::Message* after) {
  auto entry = make_audit_entry(Actor{actor.name, actor.address, actor.kind, actor.token_name, actor.user_agent},
                                std::move(action), target.type, target.id, target.name, success, std::move(detail),
                                before, after);
  tx.append_audit(entry);
}

AuditTarget user_target(const v1::User& user) { return {"user", user.id(), user.username()}; }

/// Enabled users with the ADMIN role (what the last-admin guard counts).
std::uint64_t enabled_admins(StoreTransaction& tx) {
  std::uint64_t count = 0;
  v1::ListUsersRequest request;
  request.set_role(v1::ROLE_ADMIN);
  request.set_page_size(500);
  for (std::uint32_t page = 1;; ++page) {
    request.set_page(page);
    const auto listing = tx.list_users(request);
    for (const auto& user : listing.items) count += user.disabled() ? 0 : 1;
    if (listing.items.size() < 500) break;
  }
  return count;
}

bool is_enabled_admin(const v1::User& user) { return user.role() == v1::ROLE_ADMIN && !user.disabled(); }

/// A new user record: id, timestamps, nothing output-only from the request.
StoredUser new_user(const v1::User& from, std::string password_hash) {
  StoredUser out;
  const auto now = now_unix_ms();
  auto& user = out.user;
  user.set_id(random_id("usr_"));
  user.set_username(from.username());
  user.set_display_name(from.display_name());
  user.set_email(from.email());
  user.set_role(from.role());
  user.set_disabled(from.disabled());
  *user.mutable_settings() = from.settings();
  user.set_created_at_unix_ms(now);
  user.set_updated_at_unix_ms(now);
  out.password_hash = std::move(password_hash);
  return out;
}

/// Refuses the change when it would leave no enabled admin.
std::optional<ApiFailure> keeps_an_admin(StoreTransaction& tx, const v1::User& before, bool still_enabled_admin) {
  if (!is_enabled_admin(before) || still_enabled_admin || enabled_admins(tx) > 1) return std::nullopt;
  return failure(v1::API_ERROR_CODE_FAILED_PRECONDITION,
                 fmt::format("\"{}\" is the last enabled admin; make another user an admin first", before.username()));
}

}  // namespace quartzflow::detail::account
