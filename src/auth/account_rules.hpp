// SPDX-License-Identifier: Apache-2.0
// The Authenticator's rules for accounts, apart from its plumbing: API failures as the rest of
// the API words them, checks of usernames, passwords and user fields, the last-admin guard,
// new user records and audit entries.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <google/protobuf/message.h>

#include <quartzflow/auth.hpp>
#include <quartzflow/store.hpp>

namespace quartzflow::detail::account {

constexpr std::size_t k_max_username_characters = 64;
constexpr std::size_t k_max_display_name_characters = 128;
constexpr std::size_t k_max_email_bytes = 254;
constexpr std::size_t k_max_settings = 64;
constexpr std::size_t k_max_setting_key_bytes = 64;
constexpr std::size_t k_max_setting_value_bytes = 1024;

/// Who an audit entry names.
struct AuditActor {
  std::string name;
  v1::ActorKind kind = v1::ACTOR_KIND_UNSPECIFIED;
  std::string token_name;
  std::string address;
  std::string user_agent;
};

struct AuditTarget {
  std::string type;
  std::string id;
  std::string name;
};

ApiFailure failure(v1::ApiErrorCode code, std::string message, std::vector<v1::FieldViolation> violations = {});
ApiFailure unauthenticated(std::string message);
/// `invalid <input>: <field>: <reason>; ...`, as the rest of the API words validation errors.
ApiFailure invalid(std::string_view input, std::vector<v1::FieldViolation> violations);
/// A store error as an API failure (a conflict from a unique column is a name taken).
ApiFailure failure_of(const error_code& ec, std::string message, const ValidationError* detail = nullptr);
/// Client-supplied text for a record: bounded, and valid UTF-8 (protobuf refuses to parse
/// a record holding anything else).
std::string clip(std::string_view text, std::size_t max_bytes);
bool has_control_character(std::string_view text);
std::string random_id(std::string_view prefix);
void check_username(const std::string& field, std::string_view username, std::vector<v1::FieldViolation>& out);
/// A new password against the policy (password_weakness); `username` may be empty when
/// not known yet (checked again once it is).
void check_password(const std::string& field, std::string_view password, std::string_view username,
                    std::vector<v1::FieldViolation>& out);
/// The fields of a User a caller sets besides the username (role required).
void check_user_fields(const v1::User& user, std::vector<v1::FieldViolation>& out);
/// The less powerful of two roles.
v1::Role lesser_role(v1::Role a, v1::Role b) noexcept;
AuditActor audit_actor(const Actor& actor);
AuditActor audit_actor(const Principal& caller);
/// The caller's kind and token, with the name and address the HTTP layer gave.
AuditActor audit_actor(const Principal& caller, const Actor& actor);
void audit(StoreTransaction& tx, const AuditActor& actor, std::string action, const AuditTarget& target, bool success,
           std::string detail, const google::protobuf::Message* before = nullptr,
           const google::protobuf::Message* after = nullptr);
AuditTarget user_target(const v1::User& user);
/// Enabled users with the ADMIN role (what the last-admin guard counts).
std::uint64_t enabled_admins(StoreTransaction& tx);
bool is_enabled_admin(const v1::User& user);
/// A new user record: id, timestamps, nothing output-only from the request.
StoredUser new_user(const v1::User& from, std::string password_hash);
/// Refuses the change when it would leave no enabled admin.
std::optional<ApiFailure> keeps_an_admin(StoreTransaction& tx, const v1::User& before, bool still_enabled_admin);

}  // namespace quartzflow::detail::account
