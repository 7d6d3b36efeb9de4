// SPDX-License-Identifier: Apache-2.0
// `qfctl login|logout`, `qfctl token ...` and `qfctl user ...` through the admin API. A login
// keeps the server and the session token in the config file (mode 0600).
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <memory>

#include <fmt/format.h>

#include <quartzflow/time.hpp>
#include <quartzflow/v1/admin.pb.h>

#include "api.hpp"
#include "commands.hpp"
#include "enrolment_commands.hpp"
#include "table.hpp"

namespace qfctl {
namespace {

namespace fs = std::filesystem;
namespace qf = quartzflow;
namespace v1 = quartzflow::v1;

struct AuthArgs {
  std::string name;
  bool password_stdin = false;
  std::string totp;
  std::string role;
  std::string expires;
  std::string display_name;
  std::string email;
  bool require_password_change = false;
};

std::string role_text(v1::Role role) { return short_enum_name(v1::Role_descriptor(), role); }

v1::Role parse_role(const std::string& text) {
  const auto role = parse_enum_name(v1::Role_descriptor(), text);
  if (!role || *role == v1::ROLE_UNSPECIFIED)
    throw CommandFailure{k_exit_invalid_input, fmt::format("--role \"{}\": expected admin, operator or viewer", text)};
  return static_cast<v1::Role>(*role);
}

std::shared_ptr<ApiFlags> api_command(CLI::App& command) {
  auto flags = std::make_shared<ApiFlags>();
  add_api_flags(command, *flags);
  command.fallthrough();
  return flags;
}

/// A new password: asked twice on a terminal, else one line of stdin.
std::string new_password(std::string_view whose, bool from_stdin) {
  auto password = read_secret(fmt::format("New password for {}: ", whose), from_stdin);
  if (!from_stdin && ::isatty(STDIN_FILENO) && read_secret("Repeat it: ", false) != password)
    throw CommandFailure{k_exit_invalid_input, "the two passwords differ; nothing was changed"};
  return password;
}

// --- login, logout ------------------------------------------------------------------------

void run_login(const ApiFlags& flags, const AuthArgs& args) {
  const auto config_path = config_file_path();
  auto config = read_cli_config(config_path);
  auto connection = resolve_connection(flags, CliEnvironment::from_process(), config, config_path.string());
  connection.token.clear();  // a login carries the password, not an old token
  if (connection.tls.insecure && connection.server.https)
    std::cerr << "qfctl: warning: --insecure: the server's certificate is not verified; anyone on the path can read "
                 "the password\n";
  ApiClient api(connection);

  v1::LoginRequest request;
  request.set_username(args.name);
  request.set_password(read_secret(fmt::format("Password for {} at {}: ", args.name, connection.server.text),
                                   args.password_stdin));
  request.set_totp_code(args.totp);
  v1::LoginResponse response;
  try {
    response = api.post<v1::LoginResponse>("/auth/login", &request);
  } catch (const ApiCallFailure& failure) {
    // Asked for a code on a terminal rather than failing: the password is known good.
    if (failure.error != "TOTP_REQUIRED" || !args.totp.empty() || args.password_stdin || !::isatty(STDIN_FILENO)) throw;
    request.set_totp_code(read_secret("TOTP code: ", false));
    response = api.post<v1::LoginResponse>("/auth/login", &request);
  }

  config.server = connection.server.text;
  config.token = response.session_token();
  config.ca_file = connection.tls.ca_file.empty() ? std::string() : fs::absolute(connection.tls.ca_file).string();
  write_cli_config(config_path, config);
  if (flags.format() != OutputFormat::table) {
    response.clear_session_token();  // it is in the file; not on a terminal
    return print_message(response, flags.format());
  }
  std::cout << fmt::format("logged in to {} as {} ({}); the session ends at {}; saved in {}\n", connection.server.text,
                           response.user().username(), role_text(response.user().role()),
                           time_text(response.expires_at_unix_ms()), config_path.string());
  if (response.user().password_change_required())
    std::cerr << fmt::format("qfctl: this password must be changed before anything else: qfctl user passwd {}\n",
                             response.user().username());
}

void run_logout(const ApiFlags& flags) {
  const auto config_path = config_file_path();
  auto config = read_cli_config(config_path);
  const auto connection = resolve_connection(flags, CliEnvironment::from_process(), config, config_path.string());
  if (connection.token.empty()) {
    std::cout << fmt::format("not logged in to {}\n", connection.server.text);
    return;
  }
  ApiClient api(connection);
  try {
    api.call("POST", "/auth/logout", {}, nullptr, nullptr);
  } catch (const ApiCallFailure& failure) {
    // An expired session is as logged out as it gets; forget it all the same.
    if (failure.http_status != 401) throw;
  }
  if (connection.token_source == config_path.string()) {
    config.token.clear();
    write_cli_config(config_path, config);
    std::cout << fmt::format("logged out of {}\n", connection.server.text);
    return;
  }
  // qfctl keeps no copy of a token it was given: a session token ends, an API token stays.
  std::cout << fmt::format("logged out of {} (the token from {} is not stored by qfctl; revoke an API token with "
                           "qfctl token revoke ID)\n",
                           connection.server.text, connection.token_source);
}

// --- tokens ------------------------------------------------------------------------------

void run_token_create(const ApiFlags& flags, const AuthArgs& args) {
  v1::CreateApiTokenRequest request;
  request.set_name(args.name);
  if (!args.role.empty()) request.set_role(parse_role(args.role));
  if (!args.expires.empty()) {
    const auto lifetime = qf::parse_duration(args.expires);
    if (!lifetime)
      throw CommandFailure{k_exit_invalid_input,
                           fmt::format("--expires \"{}\": expected a duration such as 30d, 12h or 90m", args.expires)};
    const auto now = std::chrono::system_clock::now().time_since_epoch();
    request.set_expires_at_unix_ms(std::chrono::duration_cast<std::chrono::milliseconds>(now + *lifetime).count());
  }
  auto api = ApiClient::from_flags(flags);
  const auto response = api.post<v1::CreateApiTokenResponse>("/tokens", &request);
  if (flags.format() != OutputFormat::table) return print_message(response, flags.format());
  std::cout << response.secret() << "\n" << std::flush;
  const auto& t = response.token();
  std::cerr << fmt::format("qfctl: token \"{}\" (id {}, role {}, expires {}): the secret above is shown only once; "
                           "use it as QF_TOKEN or --token\n",
                           t.name(), t.id(), role_text(t.role()),
                           t.expires_at_unix_ms() == 0 ? "never" : time_text(t.expires_at_unix_ms()));
}

void run_token_ls(const ApiFlags& flags) {
  auto api = ApiClient::from_flags(flags);
  const auto listing = api.get<v1::ListApiTokensResponse>("/tokens");
  if (flags.format() != OutputFormat::table) return print_message(listing, flags.format());
  if (listing.items().empty()) {
    std::cout << "no tokens\n";
    return;
  }
  Table table({"ID", "NAME", "ROLE", "OWNER", "PREFIX", "EXPIRES", "LAST USED", "REVOKED"});
  for (const auto& t : listing.items())
    table.add({t.id(), t.name(), role_text(t.role()), t.user_id(), t.token_prefix(),
               t.expires_at_unix_ms() == 0 ? "never" : time_text(t.expires_at_unix_ms()),
               t.last_used_unix_ms() == 0 ? "never" : fmt::format("{} from {}", time_text(t.last_used_unix_ms()), t.last_used_ip()),
               yes_no(t.revoked())});
  table.print(std::cout);
}

void run_token_revoke(const ApiFlags& flags, const AuthArgs& args) {
  auto api = ApiClient::from_flags(flags);
  v1::ApiToken token;
  api.call("DELETE", "/tokens/" + url_encode(args.name), {}, nullptr, &token);
  if (flags.format() != OutputFormat::table) return print_message(token, flags.format());
  std::cout << fmt::format("revoked token {} ({})\n", token.id().empty() ? args.name : token.id(), token.name());
}

// --- users -------------------------------------------------------------------------------

/// The user called `name` (or with that id); admins only, as listing users is.
v1::User find_user(ApiClient& api, const std::string& name) {
  const auto listing = api.get<v1::ListUsersResponse>("/users", {{"keyword", name}, {"page_size", "500"}});
  for (const auto& u : listing.items())
    if (u.username() == name) return u;
  for (const auto& u : listing.items())
    if (u.id() == name) return u;
  throw CommandFailure{k_exit_invalid_input, fmt::format("no user named \"{}\"", name)};
}

void print_user(const ApiFlags& flags, const v1::User& u) {
  if (flags.format() != OutputFormat::table) return print_message(u, flags.format());
  print_fields({
      {"id", u.id()},
      {"username", u.username()},
      {"display name", u.display_name().empty() ? "-" : u.display_name()},
      {"email", u.email().empty() ? "-" : u.email()},
      {"role", role_text(u.role())},
      {"disabled", yes_no(u.disabled())},
      {"totp", yes_no(u.totp_enabled())},
      {"must change password", yes_no(u.password_change_required())},
      {"created", time_text(u.created_at_unix_ms())},
      {"last login", u.last_login_unix_ms() == 0 ? "never" : time_text(u.last_login_unix_ms())},
  });
}

void run_user_ls(const ApiFlags& flags) {
  auto api = ApiClient::from_flags(flags);
  const auto listing = api.get<v1::ListUsersResponse>("/users", {{"page_size", "500"}});
  if (flags.format() != OutputFormat::table) return print_message(listing, flags.format());
  Table table({"ID", "USERNAME", "ROLE", "DISABLED", "TOTP", "LAST LOGIN"});
  for (const auto& u : listing.items())
    table.add({u.id(), u.username(), role_text(u.role()), yes_no(u.disabled()), yes_no(u.totp_enabled()),
               u.last_login_unix_ms() == 0 ? "never" : time_text(u.last_login_unix_ms())});
  table.print(std::cout);
}

void run_user_create(const ApiFlags& flags, const AuthArgs& args) {
  v1::CreateUserRequest request;
  request.mutable_user()->set_username(args.name);
  request.mutable_user()->set_role(parse_role(args.role));
  request.mutable_user()->set_display_name(args.display_name);
  request.mutable_user()->set_email(args.email);
  request.set_require_password_change(args.require_password_change);
  auto api = ApiClient::from_flags(flags);
  request.set_password(new_password(args.name, args.password_stdin));
  const auto user = api.post<v1::User>("/users", &request);
  if (flags.format() != OutputFormat::table) return print_message(user, flags.format());
  std::cout << fmt::format("created user {} ({}, id {})\n", user.username(), role_text(user.role()), user.id());
}

void run_user_get(const ApiFlags& flags, const AuthArgs& args) {
  auto api = ApiClient::from_flags(flags);
  print_user(flags, api.get<v1::User>("/users/" + url_encode(find_user(api, args.name).id())));
}

void run_user_set_disabled(const ApiFlags& flags, const AuthArgs& args, bool disabled) {
  auto api = ApiClient::from_flags(flags);
  auto user = find_user(api, args.name);
  user.set_disabled(disabled);
  const auto updated = api.put<v1::User>("/users/" + url_encode(user.id()), user);
  if (flags.format() != OutputFormat::table) return print_message(updated, flags.format());
  std::cout << fmt::format("{} user {}{}\n", disabled ? "disabled" : "enabled", updated.username(),
                           disabled ? " (its sessions ended; its tokens stop working)" : "");
}

void run_user_rm(const ApiFlags& flags, const AuthArgs& args) {
  auto api = ApiClient::from_flags(flags);
  const auto user = find_user(api, args.name);
  api.remove("/users/" + url_encode(user.id()));
  if (flags.format() == OutputFormat::table)
    std::cout << fmt::format("deleted user {} (its tokens are revoked)\n", user.username());
}

void run_user_unlock(const ApiFlags& flags, const AuthArgs& args) {
  auto api = ApiClient::from_flags(flags);
  const auto user = find_user(api, args.name);
  v1::User unlocked;
  api.call("POST", "/users/" + url_encode(user.id()) + "/unlock", {}, nullptr, &unlocked);
  if (flags.format() != OutputFormat::table) return print_message(unlocked, flags.format());
  std::cout << fmt::format("unlocked user {}: failed logins forgotten from every address\n", user.username());
}

void run_user_passwd(const ApiFlags& flags, const AuthArgs& args) {
  auto api = ApiClient::from_flags(flags);
  const auto me = api.get<v1::User>("/auth/me");
  v1::ChangePasswordRequest request;
  std::string id;
  if (me.username() == args.name) {
    id = me.id();
    request.set_current_password(read_secret(fmt::format("Current password for {}: ", args.name), args.password_stdin));
  } else {
    id = find_user(api, args.name).id();
  }
  request.set_new_password(new_password(args.name, args.password_stdin));
  api.call("PUT", "/users/" + url_encode(id) + "/password", {}, &request, nullptr);
  if (flags.format() == OutputFormat::table) std::cout << fmt::format("password of {} changed\n", args.name);
}

}  // namespace

void add_auth_commands(CLI::App& app) {
  auto args = std::make_shared<AuthArgs>();

  auto* login = app.add_subcommand("login", "log in to the admin API; keeps the server and the session in the config "
                                            "file ($XDG_CONFIG_HOME/quartzflow/qfctl.yaml)");
  auto login_flags = api_command(*login);
  login->add_option("--user", args->name, "user name")->required();
  login->add_flag("--password-stdin", args->password_stdin, "read the password as one line of stdin");
  login->add_option("--totp", args->totp, "the current TOTP code, for users with TOTP");
  login->callback([login_flags, args] { run_login(*login_flags, *args); });

  auto* logout = app.add_subcommand("logout", "end the session and forget its token");
  auto logout_flags = api_command(*logout);
  logout->callback([logout_flags] { run_logout(*logout_flags); });

  auto* token = app.add_subcommand("token", "API tokens for scripts and CI (admin API)");
  token->require_subcommand(1);
  auto token_flags = api_command(*token);
  auto enrol = std::make_shared<EnrolTokenArgs>();
  auto* create = token->add_subcommand("create", "create an API token (or with --enrol a join token); prints it once");
  create->add_option("name", args->name, "token name, unique among yours (not with --enrol)");
  create->add_option("--role", args->role, "viewer, operator or admin (default: your role; at most your role)");
  create->add_option("--expires", args->expires,
                     "lifetime such as 30d or 12h (default: never; with --enrol 1h, at most 30d)");
  create->add_flag("--enrol", enrol->enrol, "a join token for qf-agent --join (admins)");
  create->add_option("--group", enrol->group, "with --enrol: the group joining agents are placed in (id or name)");
  create->add_option("--uses", enrol->uses, "with --enrol: agents that may join with it (default 1)")
      ->check(CLI::Range(1u, 10000u));
  create->add_option("--description", enrol->description, "with --enrol: free text shown by token ls --enrol");
  create->callback([token_flags, args, enrol] {
    if (enrol->enrol) return run_enrol_token_create(*token_flags, *enrol, args->expires);
    if (args->name.empty()) throw CommandFailure{k_exit_invalid_input, "token create: name is required (or --enrol)"};
    run_token_create(*token_flags, *args);
  });
  auto* ls = token->add_subcommand("ls", "your tokens (everyone's for admins); --enrol: the join tokens");
  ls->add_flag("--enrol", enrol->enrol, "list join tokens");
  ls->callback([token_flags, enrol] { enrol->enrol ? run_enrol_token_ls(*token_flags) : run_token_ls(*token_flags); });
  auto* revoke = token->add_subcommand("revoke", "revoke a token (--enrol: a join token)");
  revoke->add_option("id", args->name, "token id")->required();
  revoke->add_flag("--enrol", enrol->enrol, "the id is a join token's (et_...)");
  revoke->callback([token_flags, args, enrol] {
    enrol->enrol ? run_enrol_token_revoke(*token_flags, args->name) : run_token_revoke(*token_flags, *args);
  });

  auto* user = app.add_subcommand("user", "console and API users (admin API; admins only, except passwd of oneself)");
  user->require_subcommand(1);
  auto user_flags = api_command(*user);
  auto* user_ls = user->add_subcommand("ls", "list users");
  user_ls->callback([user_flags] { run_user_ls(*user_flags); });
  auto* user_create = user->add_subcommand("create", "create a user; asks for the password");
  user_create->add_option("name", args->name, "user name")->required();
  user_create->add_option("--role", args->role, "admin, operator or viewer")->required();
  user_create->add_option("--display-name", args->display_name, "name shown in the console");
  user_create->add_option("--email", args->email, "e-mail address");
  user_create->add_flag("--password-stdin", args->password_stdin, "read the password as one line of stdin");
  user_create->add_flag("--require-password-change", args->require_password_change,
                        "the user must change this password at first login");
  user_create->callback([user_flags, args] { run_user_create(*user_flags, *args); });
  auto* get = user->add_subcommand("get", "a user");
  get->add_option("name", args->name, "user name")->required();
  get->callback([user_flags, args] { run_user_get(*user_flags, *args); });
  auto* disable = user->add_subcommand("disable", "stop a user from logging in (ends its sessions)");
  disable->add_option("name", args->name, "user name")->required();
  disable->callback([user_flags, args] { run_user_set_disabled(*user_flags, *args, true); });
  auto* enable = user->add_subcommand("enable", "let a disabled user log in again");
  enable->add_option("name", args->name, "user name")->required();
  enable->callback([user_flags, args] { run_user_set_disabled(*user_flags, *args, false); });
  auto* rm = user->add_subcommand("rm", "delete a user (its tokens are revoked)");
  rm->add_option("name", args->name, "user name")->required();
  rm->callback([user_flags, args] { run_user_rm(*user_flags, *args); });
  auto* unlock = user->add_subcommand("unlock", "lift a user's login locks (after too many failed logins)");
  unlock->add_option("name", args->name, "user name")->required();
  unlock->callback([user_flags, args] { run_user_unlock(*user_flags, *args); });
  auto* passwd = user->add_subcommand("passwd", "set a password: one's own (asks the current one) or, as admin, anyone's");
  passwd->add_option("name", args->name, "user name")->required();
  passwd->add_flag("--password-stdin", args->password_stdin,
                   "read from stdin: the current password (own account), then the new one, one line each");
  passwd->callback([user_flags, args] { run_user_passwd(*user_flags, *args); });
  mention_api_flags(*token);
  mention_api_flags(*user);
}

}  // namespace qfctl
