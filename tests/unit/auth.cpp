// SPDX-License-Identifier: Apache-2.0
// Authentication: password hashes, secrets, base32 and TOTP against the RFC vectors, and the
// Authenticator over a SQLite store (logins, lockout, sessions, API tokens, users, TOTP), and
// the password policy; its `async_` forms awaited.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <catch2/catch.hpp>

#include <sqlite3.h>

#include <quartzflow/auth.hpp>

#include "run_until.hpp"
#include "temp_dir.hpp"

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;
using quartzflow::testing::run_until;
using quartzflow::testing::TempDir;
using std::chrono::milliseconds;

namespace {

constexpr const char* k_password = "correct horse battery";
constexpr const char* k_other_password = "staple paper clip 42";

std::int64_t now_ms() {
  return std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::int64_t now_seconds() { return now_ms() / 1000; }

/// Options that keep tests fast: 1,000 PBKDF2 iterations instead of 600,000.
qf::AuthOptions fast_options() {
  qf::AuthOptions options;
  options.pbkdf2_iterations = 1000;
  return options;
}

struct Fixture {
  boost::asio::io_context io;
  std::unique_ptr<qf::Store> store;
  std::unique_ptr<qf::Authenticator> auth;
  qf::Actor root{"root", "10.0.0.1"};

  explicit Fixture(qf::AuthOptions options = fast_options(), const std::string& path = ":memory:") {
    qf::error_code ec;
    std::string detail;
    store = qf::open_sqlite_store(io.get_executor(), {path}, ec, &detail);
    INFO(detail);
    REQUIRE(store);
    auth = std::make_unique<qf::Authenticator>(*store, io.get_executor(), options);
  }

  /// Runs an async call to completion (bounded).
  template <typename T, typename Call>
  qf::ApiResult<T> wait(Call call) {
    std::optional<qf::ApiResult<T>> out;
    call([&](qf::ApiResult<T> r) { out.emplace(std::move(r)); });
    REQUIRE(run_until(io, [&] { return out.has_value(); }));
    return std::move(*out);
  }

  /// Lets `duration` pass on the io_context (a timer, not a sleep).
  void pause(milliseconds duration) {
    boost::asio::steady_timer timer(io, duration);
    bool fired = false;
    timer.async_wait([&](boost::system::error_code) { fired = true; });
    REQUIRE(run_until(io, [&] { return fired; }, duration + std::chrono::seconds(5)));
  }

  template <typename F>
  void read(F f) {
    bool done = false;
    store->read([&](qf::StoreTransaction& tx, qf::error_code&) { f(tx); }, [&](qf::error_code) { done = true; });
    REQUIRE(run_until(io, [&] { return done; }));
  }

  v1::User create_user(const std::string& username, v1::Role role, const std::string& password = k_password) {
    v1::CreateUserRequest request;
    request.mutable_user()->set_username(username);
    request.mutable_user()->set_display_name(username + " example");
    request.mutable_user()->set_role(role);
    request.set_password(password);
    auto created = wait<v1::User>([&](auto done) { auth->create_user(request, root, done); });
    INFO(created.code());
    REQUIRE(created);
    return created.value();
  }

  qf::ApiResult<v1::LoginResponse> login(const std::string& username, const std::string& password,
                                         const std::string& totp_code = {}, const std::string& ip = "10.0.0.7") {
    v1::LoginRequest request;
    request.set_username(username);
    request.set_password(password);
    request.set_totp_code(totp_code);
    return wait<v1::LoginResponse>([&](auto done) { auth->login(request, ip, "test-agent/1.0", done); });
  }

  qf::ApiResult<std::monostate> change_password(const qf::Principal& caller, const std::string& user_id,
                                                const std::string& current, const std::string& next) {
    v1::ChangePasswordRequest request;
    request.set_current_password(current);
    request.set_new_password(next);
    return wait<std::monostate>([&](auto done) { auth->change_password(caller, user_id, request, done); });
  }

  qf::ApiResult<qf::Principal> authenticate(const std::string& credential, const std::string& ip = "10.0.0.7") {
    return wait<qf::Principal>([&](auto done) { auth->authenticate(credential, ip, done); });
  }

  /// Logs in and authenticates the session: the Principal the HTTP layer would hold.
  std::pair<qf::Principal, std::string> sign_in(const std::string& username, const std::string& password = k_password) {
    auto session = login(username, password);
    REQUIRE(session);
    auto principal = authenticate(session.value().session_token());
    REQUIRE(principal);
    return {principal.value(), session.value().session_token()};
  }

  qf::ApiResult<v1::CreateApiTokenResponse> create_token(const qf::Principal& caller, const std::string& name,
                                                         v1::Role role = v1::ROLE_UNSPECIFIED,
                                                         std::int64_t expires_at = 0) {
    v1::CreateApiTokenRequest request;
    request.set_name(name);
    request.set_role(role);
    request.set_expires_at_unix_ms(expires_at);
    return wait<v1::CreateApiTokenResponse>([&](auto done) { auth->create_token(caller, request, root, done); });
  }

  std::vector<v1::AuditEntry> audit(const std::string& action = {}) {
    std::vector<v1::AuditEntry> out;
    read([&](qf::StoreTransaction& tx) {
      v1::ListAuditRequest request;
      request.set_action(action);
      request.set_sort("at_unix_ms");
      request.set_page_size(500);
      out = tx.list_audit(request).items;
    });
    return out;
  }

  std::uint64_t user_count() {
    std::uint64_t total = 0;
    read([&](qf::StoreTransaction& tx) { total = tx.list_users({}).total; });
    return total;
  }
};

std::string fmt_row(const std::string& name, int value) { return name + "=" + std::to_string(value); }

std::string field_of(const qf::ApiFailure& failure) {
  return failure.violations.empty() ? std::string() : failure.violations.front().field();
}

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

}  // namespace

// ---- primitives ----

TEST_CASE("a password hash verifies its password only and names its scheme and iterations", "[auth]") {
  const auto hash = qf::hash_password(k_password, 1000);
  CHECK(hash.rfind("pbkdf2-sha256$1000$", 0) == 0);
  CHECK(std::count(hash.begin(), hash.end(), '$') == 3);
  CHECK(hash.find(k_password) == std::string::npos);
  CHECK(qf::verify_password(k_password, hash));
  CHECK_FALSE(qf::verify_password("correct horse battery ", hash));
  CHECK_FALSE(qf::verify_password("", hash));
  // A fresh salt each time: the same password never hashes the same.
  const auto again = qf::hash_password(k_password, 1000);
  CHECK(again != hash);
  CHECK(qf::verify_password(k_password, again));
  // Malformed or tampered strings verify nothing.
  for (const std::string& bad : {std::string(), std::string("pbkdf2-sha256$1000$"), std::string("bcrypt$1000$a$b"),
                                std::string("pbkdf2-sha256$0") + hash.substr(hash.find('$', 14)),
                                std::string("pbkdf2-sha256$x") + hash.substr(hash.find('$', 14)), hash + "$extra",
                                hash.substr(0, hash.size() - 2) + (hash[hash.size() - 2] == 'A' ? "B=" : "A=")})
    CHECK_FALSE(qf::verify_password(k_password, bad));
  CHECK_THROWS_AS(qf::hash_password(k_password, 0), qf::error);
}

TEST_CASE("new password hashes use at least 600,000 PBKDF2 iterations by default", "[auth]") {
  CHECK(qf::k_default_pbkdf2_iterations >= 600000);
  CHECK(qf::AuthOptions{}.pbkdf2_iterations >= 600000);
  const auto hash = qf::hash_password(k_password);
  CHECK(hash.rfind("pbkdf2-sha256$600000$", 0) == 0);
  CHECK(qf::verify_password(k_password, hash));

  // The Authenticator with its default options stores such a hash.
  Fixture f(qf::AuthOptions{});
  const auto user = f.create_user("alice", v1::ROLE_VIEWER);
  f.read([&](qf::StoreTransaction& tx) {
    const auto stored = tx.user(user.id());
    REQUIRE(stored);
    const auto& stored_hash = stored->password_hash;
    REQUIRE(stored_hash.rfind("pbkdf2-sha256$", 0) == 0);
    const auto iterations = std::stoul(stored_hash.substr(14, stored_hash.find('$', 14) - 14));
    CHECK(iterations >= 600000);
  });
}

TEST_CASE("secrets are prefixed random base64url and hashed with SHA-256", "[auth]") {
  const auto token = qf::generate_secret("qf_");
  CHECK(token.rfind("qf_", 0) == 0);
  CHECK(token.size() == 3 + 43);
  CHECK(std::all_of(token.begin() + 3, token.end(),
                    [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_'; }));
  CHECK(qf::generate_secret("qf_") != token);
  CHECK(qf::generate_secret("qfs_").rfind("qfs_", 0) == 0);
  CHECK(qf::sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(qf::sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST_CASE("base32 matches the RFC 4648 vectors and refuses what no encoder makes", "[auth]") {
  const std::vector<std::pair<std::string, std::string>> vectors{
      {"", ""},          {"f", "MY"},          {"fo", "MZXQ"},          {"foo", "MZXW6"},
      {"foob", "MZXW6YQ"}, {"fooba", "MZXW6YTB"}, {"foobar", "MZXW6YTBOI"}};
  for (const auto& [plain, encoded] : vectors) {
    CHECK(qf::base32_encode(plain) == encoded);
    CHECK(qf::base32_decode(encoded) == plain);
  }
  CHECK(qf::base32_decode("MZXW6YQ=") == std::string("foob"));     // padding allowed
  CHECK(qf::base32_decode("mzxw 6ytb") == std::string("fooba"));   // lower case and spaces
  CHECK_FALSE(qf::base32_decode("MZ1W6"));                           // '1' is not in the alphabet
  CHECK_FALSE(qf::base32_decode("M"));                               // no encoding is 1 symbol long
  CHECK_FALSE(qf::base32_decode("MY=A"));                            // data after padding
}

TEST_CASE("TOTP codes match the RFC 6238 SHA-1 test vectors", "[auth]") {
  const std::string secret = "12345678901234567890";
  const std::vector<std::pair<std::int64_t, std::string>> vectors{
      {59, "94287082"},         {1111111109, "07081804"}, {1111111111, "14050471"},
      {1234567890, "89005924"}, {2000000000, "69279037"}, {20000000000, "65353130"}};
  for (const auto& [time, code] : vectors) {
    CHECK(qf::totp_code(secret, time, 8) == code);
    CHECK(qf::totp_code(secret, time) == code.substr(2));  // 6 digits: the last six
  }
}

TEST_CASE("TOTP verification tolerates one step of clock skew and no more", "[auth]") {
  const std::string secret = "12345678901234567890";
  const std::int64_t t = 1111111111;  // step 37037037
  const auto code = qf::totp_code(secret, t);
  CHECK(qf::match_totp(secret, code, t) == std::optional<std::int64_t>(t / 30));
  CHECK(qf::verify_totp(secret, code, t + 30));
  CHECK(qf::verify_totp(secret, code, t - 30));
  CHECK_FALSE(qf::verify_totp(secret, code, t + 60));
  CHECK_FALSE(qf::verify_totp(secret, code, t - 60));
  CHECK_FALSE(qf::verify_totp("another secret......", code, t));
  CHECK_FALSE(qf::verify_totp(secret, code.substr(1), t));
  CHECK_FALSE(qf::verify_totp(secret, "12345a", t));
}

TEST_CASE("the otpauth URI names the issuer, the user and the secret", "[auth]") {
  CHECK(qf::totp_uri("alice@example.com", "JBSWY3DPEHPK3PXP") ==
        "otpauth://totp/QuartzFlow:alice@example.com?secret=JBSWY3DPEHPK3PXP&issuer=QuartzFlow");
  CHECK(qf::totp_uri("a b", "JBSW") == "otpauth://totp/QuartzFlow:a%20b?secret=JBSW&issuer=QuartzFlow");
}

TEST_CASE("roles order ADMIN over OPERATOR over VIEWER and errors map to HTTP statuses", "[auth]") {
  CHECK(qf::role_at_least(v1::ROLE_ADMIN, v1::ROLE_OPERATOR));
  CHECK(qf::role_at_least(v1::ROLE_OPERATOR, v1::ROLE_OPERATOR));
  CHECK_FALSE(qf::role_at_least(v1::ROLE_VIEWER, v1::ROLE_OPERATOR));
  CHECK_FALSE(qf::role_at_least(v1::ROLE_UNSPECIFIED, v1::ROLE_VIEWER));
  CHECK(qf::http_status_of(v1::API_ERROR_CODE_INVALID_ARGUMENT) == 400);
  CHECK(qf::http_status_of(v1::API_ERROR_CODE_TOTP_REQUIRED) == 401);
  CHECK(qf::http_status_of(v1::API_ERROR_CODE_PERMISSION_DENIED) == 403);
  CHECK(qf::http_status_of(v1::API_ERROR_CODE_ALREADY_EXISTS) == 409);
  CHECK(qf::http_status_of(v1::API_ERROR_CODE_RESOURCE_EXHAUSTED) == 429);
  CHECK(qf::http_status_of(v1::API_ERROR_CODE_UNAVAILABLE) == 503);
  const qf::ApiFailure failure{v1::API_ERROR_CODE_NOT_FOUND, "no user", {}};
  CHECK(failure.to_api_error().http_status() == 404);
}

// ---- store ----

TEST_CASE("the store keeps users, tokens and sessions with unique names and hashes", "[auth][store]") {
  Fixture f;
  bool done = false;
  f.store->transact(
      [](qf::StoreTransaction& tx, qf::error_code&) {
        for (const char* name : {"carol", "alice", "bob"}) {
          qf::StoredUser user;
          user.user.set_id(std::string("id-") + name);
          user.user.set_username(name);
          user.user.set_email(std::string(name) + "@example.com");
          user.user.set_role(name[0] == 'a' ? v1::ROLE_ADMIN : v1::ROLE_VIEWER);
          user.password_hash = "h";
          tx.put_user(user);
        }
        qf::StoredUser twin;
        twin.user.set_id("id-twin");
        twin.user.set_username("alice");
        CHECK_THROWS_AS(tx.put_user(twin), qf::error);

        qf::StoredApiToken token;
        token.token.set_id("t1");
        token.token.set_user_id("id-alice");
        token.token.set_name("ci");
        token.secret_sha256 = "hash-1";
        tx.put_api_token(token);
        token.token.set_id("t2");
        token.secret_sha256 = "hash-2";
        CHECK_THROWS_AS(tx.put_api_token(token), qf::error);  // "ci" again for alice
        token.token.set_user_id("id-bob");
        tx.put_api_token(token);                               // "ci" for bob is fine
        token.token.set_id("t3");
        token.token.set_name("other");
        CHECK_THROWS_AS(tx.put_api_token(token), qf::error);  // hash-2 again

        const auto now = now_ms();
        tx.put_session({"s1", "id-alice", now, now + 60000, "10.0.0.1"});
        tx.put_session({"s2", "id-alice", now, now + 60000, "10.0.0.2"});
        tx.put_session({"s3", "id-alice", now - 2000, now - 1000, "10.0.0.3"});
        tx.put_session({"s4", "id-bob", now, now + 60000, "10.0.0.4"});
      },
      [&](qf::error_code ec) {
        CHECK_FALSE(ec);
        done = true;
      });
  REQUIRE(run_until(f.io, [&] { return done; }));

  f.read([](qf::StoreTransaction& tx) {
    v1::ListUsersRequest request;
    request.set_page_size(2);
    auto page = tx.list_users(request);
    CHECK(page.total == 3);
    REQUIRE(page.items.size() == 2);
    CHECK(page.items[0].username() == "alice");
    CHECK(page.items[1].username() == "bob");
    request.set_page(2);
    page = tx.list_users(request);
    REQUIRE(page.items.size() == 1);
    CHECK(page.items[0].username() == "carol");
    v1::ListUsersRequest filtered;
    filtered.set_keyword("BOB@EXAMPLE");
    CHECK(tx.list_users(filtered).total == 1);
    filtered.Clear();
    filtered.set_role(v1::ROLE_VIEWER);
    CHECK(tx.list_users(filtered).total == 2);

    CHECK(tx.api_tokens("id-alice").size() == 1);
    CHECK(tx.api_tokens("").size() == 2);
    const auto by_hash = tx.api_token_by_hash("hash-2");
    REQUIRE(by_hash);
    CHECK(by_hash->token.user_id() == "id-bob");
    CHECK(tx.session("s1")->source_ip == "10.0.0.1");
  });

  done = false;
  f.store->transact(
      [](qf::StoreTransaction& tx, qf::error_code&) {
        CHECK(tx.delete_expired_sessions(now_ms()) == 1);            // s3
        CHECK(tx.delete_sessions_of("id-alice", "s1") == 1);         // s2; s1 kept
        CHECK(tx.session("s1"));
        CHECK(tx.delete_sessions_of("id-alice", {}) == 1);           // an empty exception: all of them
        CHECK_FALSE(tx.session("s1"));
        CHECK(tx.delete_user("id-bob"));                             // and its session s4
        CHECK_FALSE(tx.session("s4"));
        CHECK_FALSE(tx.user("id-bob"));
      },
      [&](qf::error_code ec) {
        CHECK_FALSE(ec);
        done = true;
      });
  REQUIRE(run_until(f.io, [&] { return done; }));
}

// ---- logins and sessions ----

TEST_CASE("a wrong password or unknown user is refused with one message, the right one opens a session",
          "[auth]") {
  Fixture f;
  const auto alice = f.create_user("alice", v1::ROLE_OPERATOR);

  auto refused = f.login("alice", "not the password!");
  REQUIRE_FALSE(refused);
  CHECK(refused.code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  CHECK(refused.failure().message == "invalid username or password");
  auto unknown = f.login("mallory", k_password);
  REQUIRE_FALSE(unknown);
  CHECK(unknown.code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  CHECK(unknown.failure().message == refused.failure().message);

  const auto before = now_ms();
  auto session = f.login("alice", k_password);
  REQUIRE(session);
  CHECK(session.value().session_token().rfind("qfs_", 0) == 0);
  CHECK(session.value().user().id() == alice.id());
  CHECK(session.value().user().last_login_unix_ms() >= before);
  CHECK(session.value().expires_at_unix_ms() >= before + 43200 * 1000);
  CHECK(session.value().expires_at_unix_ms() <= now_ms() + 43200 * 1000);

  auto principal = f.authenticate(session.value().session_token(), "10.0.0.8");
  REQUIRE(principal);
  CHECK(principal.value().user.username() == "alice");
  CHECK(principal.value().role == v1::ROLE_OPERATOR);
  CHECK(principal.value().kind == v1::ACTOR_KIND_USER);
  CHECK(principal.value().source_ip == "10.0.0.8");
  CHECK(principal.value().credential_id == qf::sha256_hex(session.value().session_token()));

  for (const char* bad : {"qfs_nonsense", "qf_nonsense", "Bearer x", ""}) {
    auto r = f.authenticate(bad);
    CHECK(r.code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  }

  const auto failed = f.audit("auth.login_failed");
  REQUIRE(failed.size() == 2);
  CHECK(failed[0].target_id() == alice.id());
  CHECK(failed[0].detail() == "wrong password");
  CHECK(failed[1].target_id().empty());
  CHECK(failed[1].target_name() == "mallory");
  CHECK_FALSE(failed[1].success());
  const auto logins = f.audit("auth.login");
  REQUIRE(logins.size() == 1);
  CHECK(logins[0].success());
  CHECK(logins[0].actor() == "alice");
  CHECK(logins[0].target_type() == "user");
  CHECK(logins[0].source_ip() == "10.0.0.7");
  CHECK(logins[0].user_agent() == "test-agent/1.0");
}

TEST_CASE("an unknown username costs the same hashing time as a wrong password", "[auth]") {
  auto options = fast_options();
  options.pbkdf2_iterations = 100000;  // ~50 ms: measurable, still quick
  options.max_failed_logins = 0;
  Fixture f(options);
  f.create_user("alice", v1::ROLE_VIEWER);
  auto fastest = [&](const char* username) {
    auto best = std::chrono::steady_clock::duration::max();
    for (int i = 0; i < 3; ++i) {
      const auto start = std::chrono::steady_clock::now();
      REQUIRE_FALSE(f.login(username, "not the password!"));
      best = std::min(best, std::chrono::steady_clock::now() - start);
    }
    return best;
  };
  const auto known = fastest("alice");
  const auto unknown = fastest("nobody-here");
  INFO("wrong password " << std::chrono::duration_cast<milliseconds>(known).count() << " ms, unknown user "
                         << std::chrono::duration_cast<milliseconds>(unknown).count() << " ms");
  CHECK(unknown * 2 >= known);
  CHECK(unknown <= known * 2);
}

TEST_CASE("failed logins lock one address out of one account, and a locked account answers as an unknown one",
          "[auth]") {
  auto options = fast_options();
  options.max_failed_logins = 3;
  options.lockout = std::chrono::seconds(900);
  Fixture f(options);
  const auto alice = f.create_user("alice", v1::ROLE_VIEWER);
  f.create_user("bob", v1::ROLE_VIEWER);
  const std::string attacker = "192.0.2.66";

  for (const char* wrong : {"wrong password 1", "wrong password 2", "wrong password 3"}) {
    auto refused = f.login("alice", wrong, {}, attacker);
    REQUIRE(refused.code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
    CHECK(refused.failure().message == "invalid username or password");
  }
  // Locked now, from that address: even the right password gets the unknown user's answer.
  const auto locked = f.login("alice", k_password, {}, attacker);
  const auto unknown = f.login("nobody-here", k_password, {}, attacker);
  REQUIRE_FALSE(locked);
  REQUIRE_FALSE(unknown);
  CHECK(locked.code() == unknown.code());
  CHECK(locked.failure().message == unknown.failure().message);
  CHECK(locked.failure().violations.size() == unknown.failure().violations.size());
  CHECK(locked.failure().to_api_error().SerializeAsString() == unknown.failure().to_api_error().SerializeAsString());

  // Nobody else is locked out: alice from another address, bob from the attacker's.
  CHECK(f.login("alice", k_password));
  CHECK(f.login("bob", k_password, {}, attacker));

  const auto failed = f.audit("auth.login_failed");
  REQUIRE(failed.size() == 5);
  CHECK(failed[0].target_id() == alice.id());
  CHECK(failed[2].detail() == "wrong password; locked for 900 s for this address after 3 failed logins");
  CHECK(failed[2].source_ip() == attacker);
  CHECK(failed[3].detail() == "locked for this address after too many failed logins");
  CHECK(failed[4].detail() == "unknown user");

  // A success in between starts the count again.
  CHECK(f.login("bob", "wrong password 1").code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  CHECK(f.login("bob", "wrong password 2").code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  REQUIRE(f.login("bob", k_password));
  CHECK(f.login("bob", "wrong password 3").code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  CHECK(f.login("bob", "wrong password 4").code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  CHECK(f.login("bob", k_password));
}

TEST_CASE("a locked account costs the same hashing time as an unknown username", "[auth]") {
  auto options = fast_options();
  options.pbkdf2_iterations = 100000;  // ~50 ms: measurable, still quick
  options.max_failed_logins = 1;
  Fixture f(options);
  f.create_user("alice", v1::ROLE_VIEWER);
  REQUIRE_FALSE(f.login("alice", "not the password!"));  // locks 10.0.0.7 out of alice
  auto fastest = [&](const char* username) {
    auto best = std::chrono::steady_clock::duration::max();
    for (int i = 0; i < 3; ++i) {
      const auto start = std::chrono::steady_clock::now();
      REQUIRE_FALSE(f.login(username, k_password));
      best = std::min(best, std::chrono::steady_clock::now() - start);
    }
    return best;
  };
  const auto locked = fastest("alice");
  const auto unknown = fastest("nobody-here");
  INFO("locked account " << std::chrono::duration_cast<milliseconds>(locked).count() << " ms, unknown user "
                         << std::chrono::duration_cast<milliseconds>(unknown).count() << " ms");
  CHECK(unknown * 2 >= locked);
  CHECK(unknown <= locked * 2);
  CHECK(locked >= milliseconds(10));  // the hash was spent, not skipped
}

TEST_CASE("a lock ends after the lockout and the password works again", "[auth]") {
  auto options = fast_options();
  options.max_failed_logins = 2;
  options.lockout = std::chrono::seconds(1);
  Fixture f(options);
  f.create_user("alice", v1::ROLE_VIEWER);
  CHECK(f.login("alice", "wrong password 1").code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  CHECK(f.login("alice", "wrong password 2").code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  CHECK(f.login("alice", k_password).code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  f.pause(milliseconds(1100));
  CHECK(f.login("alice", k_password));
}

TEST_CASE("an admin lifts a user's login locks from every address, audited", "[auth]") {
  auto options = fast_options();
  options.max_failed_logins = 2;
  Fixture f(options);
  const auto alice = f.create_user("alice", v1::ROLE_VIEWER);
  for (const char* ip : {"192.0.2.1", "192.0.2.2"})
    for (int i = 0; i < 2; ++i) REQUIRE_FALSE(f.login("alice", "wrong password", {}, ip));
  CHECK_FALSE(f.login("alice", k_password, {}, "192.0.2.1"));
  CHECK_FALSE(f.login("alice", k_password, {}, "192.0.2.2"));

  auto missing = f.wait<v1::User>([&](auto done) { f.auth->unlock_user("usr_missing", f.root, done); });
  CHECK(missing.code() == v1::API_ERROR_CODE_NOT_FOUND);
  auto unlocked = f.wait<v1::User>([&](auto done) { f.auth->unlock_user(alice.id(), f.root, done); });
  REQUIRE(unlocked);
  CHECK(unlocked.value().id() == alice.id());
  CHECK(f.login("alice", k_password, {}, "192.0.2.1"));
  CHECK(f.login("alice", k_password, {}, "192.0.2.2"));
  const auto audited = f.audit("user.unlock");
  REQUIRE(audited.size() == 1);
  CHECK(audited[0].actor() == "root");
  CHECK(audited[0].target_id() == alice.id());
  CHECK(audited[0].detail() == "login locks lifted for 2 source addresses");
  // The failures before the unlock are forgotten too: one more does not lock again.
  REQUIRE_FALSE(f.login("alice", "wrong password", {}, "192.0.2.1"));
  CHECK(f.login("alice", k_password, {}, "192.0.2.1"));
}

TEST_CASE("an expired session is refused even right after it was validated", "[auth]") {
  auto options = fast_options();
  options.session_ttl = std::chrono::seconds(1);
  Fixture f(options);
  const auto alice = f.create_user("alice", v1::ROLE_VIEWER);
  auto session = f.login("alice", k_password);
  REQUIRE(session);
  REQUIRE(f.authenticate(session.value().session_token()));  // now cached
  f.pause(milliseconds(1100));
  auto expired = f.authenticate(session.value().session_token());
  REQUIRE(expired.code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  CHECK(expired.failure().message == "session expired; log in again");

  // A session stored as already expired is refused too.
  const auto token = qf::generate_secret(qf::k_session_token_prefix);
  bool done = false;
  f.store->transact(
      [&](qf::StoreTransaction& tx, qf::error_code&) {
        tx.put_session({qf::sha256_hex(token), alice.id(), now_ms() - 5000, now_ms() - 1, "10.0.0.1"});
      },
      [&](qf::error_code) { done = true; });
  REQUIRE(run_until(f.io, [&] { return done; }));
  CHECK(f.authenticate(token).code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
}

TEST_CASE("logout ends a session at once although it was just validated", "[auth]") {
  Fixture f;
  f.create_user("alice", v1::ROLE_VIEWER);
  auto [principal, token] = f.sign_in("alice");
  REQUIRE(f.authenticate(token));
  REQUIRE(f.wait<std::monostate>([&](auto done) { f.auth->logout(token, done); }));
  CHECK(f.authenticate(token).code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  CHECK(f.audit("auth.logout").size() == 1);
  // Logging out twice, or an unknown session, is not an error.
  CHECK(f.wait<std::monostate>([&](auto done) { f.auth->logout(token, done); }));
  CHECK(f.wait<std::monostate>([&](auto done) { f.auth->logout("garbage", done); }));
}

TEST_CASE("completions never run inside the initiating call", "[auth]") {
  Fixture f;
  bool called = false;
  f.auth->authenticate("garbage", "10.0.0.1", [&](qf::ApiResult<qf::Principal>) { called = true; });
  CHECK_FALSE(called);
  v1::LoginRequest empty;
  bool login_called = false;
  f.auth->login(empty, "", "", [&](qf::ApiResult<v1::LoginResponse> r) {
    login_called = true;
    CHECK(r.code() == v1::API_ERROR_CODE_INVALID_ARGUMENT);
  });
  CHECK_FALSE(login_called);
  REQUIRE(run_until(f.io, [&] { return called && login_called; }));
}

// ---- API tokens ----

TEST_CASE("an API token's role defaults to its creator's and never exceeds its owner's", "[auth]") {
  Fixture f;
  f.create_user("root", v1::ROLE_ADMIN);
  const auto olive = f.create_user("olive", v1::ROLE_OPERATOR);
  const auto operator_ = f.sign_in("olive").first;

  auto defaulted = f.create_token(operator_, "ci");
  REQUIRE(defaulted);
  CHECK(defaulted.value().token().role() == v1::ROLE_OPERATOR);
  CHECK(defaulted.value().token().user_id() == olive.id());
  CHECK(defaulted.value().secret().rfind("qf_", 0) == 0);
  CHECK(defaulted.value().token().token_prefix() == defaulted.value().secret().substr(0, 8));

  auto above = f.create_token(operator_, "too-strong", v1::ROLE_ADMIN);
  REQUIRE(above.code() == v1::API_ERROR_CODE_PERMISSION_DENIED);
  CHECK(field_of(above.failure()) == "role");

  auto viewer = f.create_token(operator_, "read-only", v1::ROLE_VIEWER);
  REQUIRE(viewer);
  auto principal = f.authenticate(viewer.value().secret());
  REQUIRE(principal);
  CHECK(principal.value().kind == v1::ACTOR_KIND_API_TOKEN);
  CHECK(principal.value().token_name == "read-only");
  CHECK(principal.value().role == v1::ROLE_VIEWER);
  CHECK(principal.value().user.id() == olive.id());
  CHECK(principal.value().credential_id == viewer.value().token().id());

  // Demoting the owner caps its tokens at once (the cache is evicted).
  REQUIRE(f.authenticate(defaulted.value().secret()).value().role == v1::ROLE_OPERATOR);
  auto demoted = olive;
  demoted.set_role(v1::ROLE_VIEWER);
  REQUIRE(f.wait<v1::User>([&](auto done) { f.auth->update_user(demoted, f.root, done); }));
  CHECK(f.authenticate(defaulted.value().secret()).value().role == v1::ROLE_VIEWER);
  // ...and creating one above the owner's current role is refused even for a stale caller.
  CHECK(f.create_token(operator_, "stale", v1::ROLE_OPERATOR).code() == v1::API_ERROR_CODE_PERMISSION_DENIED);

  const auto created = f.audit("token.create");
  REQUIRE(created.size() == 2);
  CHECK(created[0].target_type() == "token");
  CHECK(created[0].target_name() == "ci");
  CHECK(created[0].after_json().find(defaulted.value().secret()) == std::string::npos);
}

TEST_CASE("a revoked token is refused immediately although it was just validated", "[auth]") {
  Fixture f;
  f.create_user("olive", v1::ROLE_OPERATOR);
  f.create_user("vera", v1::ROLE_VIEWER);
  const auto [olive, olive_session] = f.sign_in("olive");
  const auto [vera, vera_session] = f.sign_in("vera");
  auto token = f.create_token(olive, "deploy");
  REQUIRE(token);
  REQUIRE(f.authenticate(token.value().secret()));
  REQUIRE(f.authenticate(token.value().secret()));  // served from the cache

  // Someone else's token is not found for a non-admin.
  auto foreign = f.wait<v1::ApiToken>([&](auto done) { f.auth->revoke_token(vera, token.value().token().id(), f.root, done); });
  CHECK(foreign.code() == v1::API_ERROR_CODE_NOT_FOUND);
  REQUIRE(f.authenticate(token.value().secret()));

  auto revoked = f.wait<v1::ApiToken>([&](auto done) { f.auth->revoke_token(olive, token.value().token().id(), f.root, done); });
  REQUIRE(revoked);
  CHECK(revoked.value().revoked());
  auto refused = f.authenticate(token.value().secret());
  REQUIRE(refused.code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  CHECK(refused.failure().message == "API token has been revoked");

  auto listed = f.wait<v1::ListApiTokensResponse>([&](auto done) { f.auth->list_tokens(olive, done); });
  REQUIRE(listed);
  REQUIRE(listed.value().items_size() == 1);
  CHECK(listed.value().items(0).revoked());
  CHECK(f.audit("token.revoke").size() == 1);
  // The name is free again; the revoked token stays, renamed.
  auto again = f.create_token(olive, "deploy");
  REQUIRE(again);
  listed = f.wait<v1::ListApiTokensResponse>([&](auto done) { f.auth->list_tokens(olive, done); });
  CHECK(listed.value().items_size() == 2);
}

TEST_CASE("token names are unique per user, expiries must be ahead and expired tokens are refused", "[auth]") {
  Fixture f;
  f.create_user("olive", v1::ROLE_OPERATOR);
  f.create_user("otto", v1::ROLE_OPERATOR);
  const auto [olive, s1] = f.sign_in("olive");
  const auto [otto, s2] = f.sign_in("otto");
  auto first = f.create_token(olive, "ci");
  REQUIRE(first);
  auto duplicate = f.create_token(olive, "ci");
  REQUIRE(duplicate.code() == v1::API_ERROR_CODE_ALREADY_EXISTS);
  CHECK(field_of(duplicate.failure()) == "name");
  CHECK(f.create_token(otto, "ci"));  // another user's namespace

  auto past = f.create_token(olive, "old", v1::ROLE_UNSPECIFIED, now_ms() - 1000);
  REQUIRE(past.code() == v1::API_ERROR_CODE_INVALID_ARGUMENT);
  CHECK(field_of(past.failure()) == "expires_at_unix_ms");
  auto unnamed = f.create_token(olive, "");
  REQUIRE(unnamed.code() == v1::API_ERROR_CODE_INVALID_ARGUMENT);
  CHECK(field_of(unnamed.failure()) == "name");

  auto expiring = f.create_token(olive, "short", v1::ROLE_UNSPECIFIED, now_ms() + 3600 * 1000);
  REQUIRE(expiring);
  REQUIRE(f.authenticate(expiring.value().secret()));
  // Its expiry moved into the past behind the Authenticator's back.
  bool done = false;
  f.store->transact(
      [&](qf::StoreTransaction& tx, qf::error_code&) {
        auto stored = tx.api_token(expiring.value().token().id());
        CHECK(stored);
        if (!stored) return;
        stored->token.set_expires_at_unix_ms(now_ms() - 1);
        tx.put_api_token(*stored);
      },
      [&](qf::error_code) { done = true; });
  REQUIRE(run_until(f.io, [&] { return done; }));
  f.auth->clear_cache();
  auto expired = f.authenticate(expiring.value().secret());
  REQUIRE(expired.code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  CHECK(expired.failure().message == "API token has expired");
}

TEST_CASE("a token records its last use at most once a minute", "[auth]") {
  Fixture f;
  f.create_user("olive", v1::ROLE_OPERATOR);
  const auto [olive, session] = f.sign_in("olive");
  auto token = f.create_token(olive, "ci");
  REQUIRE(token);
  const auto before = now_ms();
  REQUIRE(f.authenticate(token.value().secret(), "192.0.2.1"));
  f.store->flush();
  auto stored_token = [&] {
    v1::ApiToken out;
    f.read([&](qf::StoreTransaction& tx) { out = tx.api_token(token.value().token().id())->token; });
    return out;
  };
  auto used = stored_token();
  CHECK(used.last_used_ip() == "192.0.2.1");
  CHECK(used.last_used_unix_ms() >= before);
  f.auth->clear_cache();  // a store read this time, still no second write
  REQUIRE(f.authenticate(token.value().secret(), "192.0.2.2"));
  f.store->flush();
  CHECK(stored_token().last_used_ip() == "192.0.2.1");
}

TEST_CASE("a disabled user's sessions and tokens stop working", "[auth]") {
  Fixture f;
  f.create_user("root", v1::ROLE_ADMIN);
  const auto olive = f.create_user("olive", v1::ROLE_OPERATOR);
  const auto [principal, session] = f.sign_in("olive");
  auto token = f.create_token(principal, "ci");
  REQUIRE(token);
  REQUIRE(f.authenticate(token.value().secret()));

  auto disabled = olive;
  disabled.set_disabled(true);
  REQUIRE(f.wait<v1::User>([&](auto done) { f.auth->update_user(disabled, f.root, done); }));
  auto refused = f.authenticate(token.value().secret());
  REQUIRE(refused.code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  CHECK(refused.failure().message == "user is disabled");
  CHECK(f.authenticate(session).code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  auto login = f.login("olive", k_password);
  REQUIRE(login.code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  CHECK(login.failure().message == "user is disabled");

  // Enabled again: tokens work again, the ended session does not come back.
  REQUIRE(f.wait<v1::User>([&](auto done) { f.auth->update_user(olive, f.root, done); }));
  CHECK(f.authenticate(token.value().secret()));
  CHECK(f.authenticate(session).code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
}

TEST_CASE("secrets and passwords are stored only as hashes", "[auth]") {
  TempDir dir;
  const auto path = dir.file("coordinator.db");
  std::string password = "a unique password 0xC0FFEE";
  std::string session_token;
  std::string token_secret;
  std::string token_id;
  {
    Fixture f(fast_options(), path);
    f.create_user("alice", v1::ROLE_ADMIN, password);
    auto [principal, session] = f.sign_in("alice", password);
    session_token = session;
    auto token = f.create_token(principal, "ci");
    REQUIRE(token);
    token_secret = token.value().secret();
    token_id = token.value().token().id();
    REQUIRE(f.authenticate(token_secret));
    f.store->flush();
    // Every byte on disk: the database and its write-ahead log.
    const auto bytes = file_bytes(path) + file_bytes(path + "-wal");
    REQUIRE(bytes.size() > 4096);
    CHECK(bytes.find(password) == std::string::npos);
    CHECK(bytes.find(session_token) == std::string::npos);
    CHECK(bytes.find(session_token.substr(4)) == std::string::npos);
    CHECK(bytes.find(token_secret) == std::string::npos);
    CHECK(bytes.find(token_secret.substr(3)) == std::string::npos);
  }
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  auto single_text = [&](const std::string& sql) {
    sqlite3_stmt* statement = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &statement, nullptr) == SQLITE_OK);
    std::string out;
    if (sqlite3_step(statement) == SQLITE_ROW) out = reinterpret_cast<const char*>(sqlite3_column_text(statement, 0));
    sqlite3_finalize(statement);
    return out;
  };
  CHECK(single_text("SELECT secret_sha256 FROM api_tokens WHERE id = '" + token_id + "'") ==
        qf::sha256_hex(token_secret));
  CHECK(single_text("SELECT token_sha256 FROM sessions") == qf::sha256_hex(session_token));
  CHECK(single_text("SELECT password_hash FROM users").rfind("pbkdf2-sha256$1000$", 0) == 0);
  sqlite3_close(db);
}

// ---- TOTP ----

TEST_CASE("TOTP: enrolment is confirmed with a code, then login needs a fresh code each time", "[auth]") {
  Fixture f;
  f.create_user("alice", v1::ROLE_OPERATOR);
  const auto [alice, session] = f.sign_in("alice");

  auto enrolled = f.wait<v1::TotpEnrollResponse>([&](auto done) { f.auth->totp_enroll(alice, done); });
  REQUIRE(enrolled);
  const auto secret_base32 = enrolled.value().secret_base32();
  CHECK(enrolled.value().otpauth_uri() ==
        "otpauth://totp/QuartzFlow:alice?secret=" + secret_base32 + "&issuer=QuartzFlow");
  const auto secret = qf::base32_decode(secret_base32);
  REQUIRE(secret);
  CHECK(secret->size() == 20);
  // Not active until confirmed.
  CHECK(f.login("alice", k_password));

  const auto t = now_seconds();
  std::string wrong = "000000";
  while (qf::verify_totp(*secret, wrong, t)) wrong[0] = static_cast<char>(wrong[0] + 1);
  auto refused = f.wait<v1::User>([&](auto done) { f.auth->totp_confirm(alice, wrong, done); });
  REQUIRE(refused.code() == v1::API_ERROR_CODE_INVALID_ARGUMENT);
  CHECK(field_of(refused.failure()) == "code");
  const auto code = qf::totp_code(*secret, t);
  auto confirmed = f.wait<v1::User>([&](auto done) { f.auth->totp_confirm(alice, code, done); });
  REQUIRE(confirmed);
  CHECK(confirmed.value().totp_enabled());
  CHECK(f.audit("auth.totp_enable").size() == 1);

  auto no_code = f.login("alice", k_password);
  REQUIRE(no_code.code() == v1::API_ERROR_CODE_TOTP_REQUIRED);
  auto bad_code = f.login("alice", k_password, wrong);
  REQUIRE(bad_code.code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  CHECK(bad_code.failure().message == "invalid TOTP code");
  // The code that confirmed the enrolment was used: not accepted again.
  CHECK(f.login("alice", k_password, code).code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  // The next step's code is (one step of skew), once.
  const auto next = qf::totp_code(*secret, t + 30);
  auto in = f.login("alice", k_password, next);
  REQUIRE(in);
  CHECK(in.value().user().totp_enabled());
  CHECK(f.login("alice", k_password, next).code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  // A wrong password with a right code is still a wrong password.
  CHECK(f.login("alice", "not the password!", qf::totp_code(*secret, t + 30)).failure().message ==
        "invalid username or password");

  auto twice = f.wait<v1::TotpEnrollResponse>([&](auto done) { f.auth->totp_enroll(alice, done); });
  CHECK(twice.code() == v1::API_ERROR_CODE_FAILED_PRECONDITION);
  const auto secrets_json = f.audit("auth.");
  for (const auto& entry : secrets_json) {
    CHECK(entry.before_json().find(secret_base32) == std::string::npos);
    CHECK(entry.after_json().find(secret_base32) == std::string::npos);
  }
}

TEST_CASE("TOTP enrolment needs a session, not an API token", "[auth]") {
  Fixture f;
  f.create_user("alice", v1::ROLE_OPERATOR);
  const auto [alice, session] = f.sign_in("alice");
  auto token = f.create_token(alice, "ci");
  REQUIRE(token);
  auto by_token = f.authenticate(token.value().secret());
  REQUIRE(by_token);
  auto refused = f.wait<v1::TotpEnrollResponse>([&](auto done) { f.auth->totp_enroll(by_token.value(), done); });
  CHECK(refused.code() == v1::API_ERROR_CODE_PERMISSION_DENIED);
}

TEST_CASE("require_totp_for_admins holds an admin without TOTP at VIEWER until enrolled", "[auth]") {
  auto options = fast_options();
  options.require_totp_for_admins = true;
  Fixture f(options);
  f.create_user("root", v1::ROLE_ADMIN);
  f.create_user("olive", v1::ROLE_OPERATOR);
  auto [root, session] = f.sign_in("root");
  CHECK(root.role == v1::ROLE_VIEWER);
  CHECK(root.totp_enrollment_required);
  CHECK(f.sign_in("olive").first.role == v1::ROLE_OPERATOR);

  auto enrolled = f.wait<v1::TotpEnrollResponse>([&](auto done) { f.auth->totp_enroll(root, done); });
  REQUIRE(enrolled);
  const auto secret = qf::base32_decode(enrolled.value().secret_base32());
  REQUIRE(f.wait<v1::User>([&](auto done) { f.auth->totp_confirm(root, qf::totp_code(*secret, now_seconds()), done); }));
  auto after = f.authenticate(session);
  REQUIRE(after);
  CHECK(after.value().role == v1::ROLE_ADMIN);
  CHECK_FALSE(after.value().totp_enrollment_required);
}

// ---- users ----

TEST_CASE("bad user input names the field and changes nothing", "[auth]") {
  Fixture f;
  f.create_user("alice", v1::ROLE_VIEWER);
  const auto users = f.user_count();
  const auto audits = f.audit().size();

  auto attempt = [&](const std::string& username, const std::string& password, v1::Role role,
                     const std::string& email = {}) {
    v1::CreateUserRequest request;
    request.mutable_user()->set_username(username);
    request.mutable_user()->set_role(role);
    request.mutable_user()->set_email(email);
    request.set_password(password);
    return f.wait<v1::User>([&](auto done) { f.auth->create_user(request, f.root, done); });
  };
  auto bad_name = attempt("bad name!", k_password, v1::ROLE_VIEWER);
  REQUIRE(bad_name.code() == v1::API_ERROR_CODE_INVALID_ARGUMENT);
  CHECK(field_of(bad_name.failure()) == "user.username");
  CHECK(bad_name.failure().message.rfind("invalid user \"bad name!\": user.username: ", 0) == 0);
  CHECK(field_of(attempt("", k_password, v1::ROLE_VIEWER).failure()) == "user.username");
  CHECK(field_of(attempt(std::string(65, 'a'), k_password, v1::ROLE_VIEWER).failure()) == "user.username");
  auto short_password = attempt("bob", "short", v1::ROLE_VIEWER);
  REQUIRE(short_password.code() == v1::API_ERROR_CODE_INVALID_ARGUMENT);
  CHECK(field_of(short_password.failure()) == "password");
  CHECK(short_password.failure().violations[0].reason() == "must be at least 12 characters");
  CHECK(field_of(attempt("bob", k_password, v1::ROLE_UNSPECIFIED).failure()) == "user.role");
  CHECK(field_of(attempt("bob", k_password, v1::ROLE_VIEWER, "not-an-address").failure()) == "user.email");
  auto everything = attempt("bad name!", "short", v1::ROLE_UNSPECIFIED);
  CHECK(everything.failure().violations.size() == 3);
  auto duplicate = attempt("alice", k_password, v1::ROLE_ADMIN);
  REQUIRE(duplicate.code() == v1::API_ERROR_CODE_ALREADY_EXISTS);
  CHECK(field_of(duplicate.failure()) == "user.username");

  CHECK(f.user_count() == users);
  CHECK(f.audit().size() == audits);
  // A valid name with every allowed character is taken.
  CHECK(attempt("bob.o-k_2@x", k_password, v1::ROLE_VIEWER));
}

TEST_CASE("users are listed by keyword, role and page, updated and deleted with an audit trail", "[auth]") {
  Fixture f;
  const auto root = f.create_user("root", v1::ROLE_ADMIN);
  for (const char* name : {"ann", "ben", "cat", "dan"}) f.create_user(name, v1::ROLE_VIEWER);
  const auto olive = f.create_user("olive", v1::ROLE_OPERATOR);

  v1::ListUsersRequest request;
  request.set_page_size(2);
  request.set_page(2);
  auto page = f.wait<v1::ListUsersResponse>([&](auto done) { f.auth->list_users(request, done); });
  REQUIRE(page);
  CHECK(page.value().total() == 6);
  CHECK(page.value().page() == 2);
  CHECK(page.value().page_size() == 2);
  REQUIRE(page.value().items_size() == 2);
  CHECK(page.value().items(0).username() == "cat");
  request.Clear();
  request.set_role(v1::ROLE_VIEWER);
  request.set_keyword("AN");
  page = f.wait<v1::ListUsersResponse>([&](auto done) { f.auth->list_users(request, done); });
  REQUIRE(page.value().items_size() == 2);  // case-insensitive: ann and dan
  CHECK(page.value().items(0).username() == "ann");
  CHECK(page.value().items(1).username() == "dan");

  auto fetched = f.wait<v1::User>([&](auto done) { f.auth->get_user(olive.id(), done); });
  REQUIRE(fetched);
  CHECK(fetched.value().username() == "olive");
  CHECK(f.wait<v1::User>([&](auto done) { f.auth->get_user("nobody", done); }).code() ==
        v1::API_ERROR_CODE_NOT_FOUND);

  auto changed = olive;
  changed.set_display_name("Olive Oyl");
  changed.set_email("olive@example.com");
  (*changed.mutable_settings())["theme"] = "dark";
  auto updated = f.wait<v1::User>([&](auto done) { f.auth->update_user(changed, f.root, done); });
  REQUIRE(updated);
  CHECK(updated.value().display_name() == "Olive Oyl");
  CHECK(updated.value().settings().at("theme") == "dark");
  CHECK(updated.value().created_at_unix_ms() == olive.created_at_unix_ms());
  auto renamed = changed;
  renamed.set_username("popeye");
  auto refused = f.wait<v1::User>([&](auto done) { f.auth->update_user(renamed, f.root, done); });
  REQUIRE(refused.code() == v1::API_ERROR_CODE_INVALID_ARGUMENT);
  CHECK(field_of(refused.failure()) == "user.username");
  const auto updates = f.audit("user.update");
  REQUIRE(updates.size() == 1);
  CHECK(updates[0].before_json().find("\"olive example\"") != std::string::npos);
  CHECK(updates[0].after_json().find("\"Olive Oyl\"") != std::string::npos);
  CHECK(updates[0].after_json().find("pbkdf2") == std::string::npos);

  // Deleting revokes the user's tokens and ends its sessions.
  const auto [principal, session] = f.sign_in("olive");
  auto token = f.create_token(principal, "ci");
  REQUIRE(token);
  REQUIRE(f.authenticate(token.value().secret()));
  REQUIRE(f.wait<std::monostate>([&](auto done) { f.auth->delete_user(olive.id(), f.root, done); }));
  CHECK(f.authenticate(token.value().secret()).code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  CHECK(f.authenticate(session).code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  f.read([&](qf::StoreTransaction& tx) { CHECK(tx.api_token(token.value().token().id())->token.revoked()); });
  const auto deletions = f.audit("user.delete");
  REQUIRE(deletions.size() == 1);
  CHECK(deletions[0].target_name() == "olive");
  CHECK(deletions[0].detail() == "sessions ended, 1 API tokens revoked");
  CHECK(f.wait<std::monostate>([&](auto done) { f.auth->delete_user(olive.id(), f.root, done); }).code() ==
        v1::API_ERROR_CODE_NOT_FOUND);
  (void)root;
}

TEST_CASE("the last enabled admin cannot be demoted, disabled or deleted", "[auth]") {
  Fixture f;
  const auto root = f.create_user("root", v1::ROLE_ADMIN);
  auto demoted = root;
  demoted.set_role(v1::ROLE_VIEWER);
  CHECK(f.wait<v1::User>([&](auto done) { f.auth->update_user(demoted, f.root, done); }).code() ==
        v1::API_ERROR_CODE_FAILED_PRECONDITION);
  auto disabled = root;
  disabled.set_disabled(true);
  CHECK(f.wait<v1::User>([&](auto done) { f.auth->update_user(disabled, f.root, done); }).code() ==
        v1::API_ERROR_CODE_FAILED_PRECONDITION);
  CHECK(f.wait<std::monostate>([&](auto done) { f.auth->delete_user(root.id(), f.root, done); }).code() ==
        v1::API_ERROR_CODE_FAILED_PRECONDITION);
  // With a second admin it can.
  f.create_user("backup", v1::ROLE_ADMIN);
  CHECK(f.wait<v1::User>([&](auto done) { f.auth->update_user(demoted, f.root, done); }));
}

TEST_CASE("changing a password needs the current one for oneself and ends the other sessions", "[auth]") {
  Fixture f;
  f.create_user("root", v1::ROLE_ADMIN);
  const auto alice = f.create_user("alice", v1::ROLE_OPERATOR);
  f.create_user("vera", v1::ROLE_VIEWER);
  const auto [first, first_session] = f.sign_in("alice");
  const auto [second, second_session] = f.sign_in("alice");
  const auto [vera, vera_session] = f.sign_in("vera");
  auto change = [&](const qf::Principal& caller, const std::string& current, const std::string& next) {
    v1::ChangePasswordRequest request;
    request.set_current_password(current);
    request.set_new_password(next);
    return f.wait<std::monostate>([&](auto done) { f.auth->change_password(caller, alice.id(), request, done); });
  };

  auto wrong = change(first, "not the password!", k_other_password);
  REQUIRE(wrong.code() == v1::API_ERROR_CODE_INVALID_ARGUMENT);
  CHECK(field_of(wrong.failure()) == "current_password");
  CHECK(field_of(change(first, "", k_other_password).failure()) == "current_password");
  CHECK(field_of(change(first, k_password, "short").failure()) == "new_password");
  CHECK(change(vera, "", k_other_password).code() == v1::API_ERROR_CODE_PERMISSION_DENIED);
  CHECK(f.login("alice", k_password));  // nothing changed so far

  REQUIRE(change(first, k_password, k_other_password));
  CHECK(f.authenticate(first_session));
  CHECK(f.authenticate(second_session).code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  CHECK(f.login("alice", k_password).code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  CHECK(f.login("alice", k_other_password));
  const auto audited = f.audit("user.password");
  REQUIRE(audited.size() == 1);
  CHECK(audited[0].actor() == "alice");
  CHECK(audited[0].detail().find("other sessions ended") != std::string::npos);

  // An admin sets it without the current one.
  const auto [root, root_session] = f.sign_in("root");
  REQUIRE(change(root, "", "an admin-chosen password"));
  CHECK(f.authenticate(first_session).code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  CHECK(f.login("alice", "an admin-chosen password"));
}

TEST_CASE("bootstrap creates admin with a one-time password only when there are no users", "[auth]") {
  Fixture f;
  auto first = f.wait<std::optional<std::string>>([&](auto done) { f.auth->bootstrap(done); });
  REQUIRE(first);
  REQUIRE(first.value());
  const auto password = *first.value();
  CHECK(password.size() == 24);
  auto [admin, session] = f.sign_in("admin", password);
  CHECK(admin.role == v1::ROLE_ADMIN);
  auto second = f.wait<std::optional<std::string>>([&](auto done) { f.auth->bootstrap(done); });
  REQUIRE(second);
  CHECK_FALSE(second.value());
  CHECK(f.user_count() == 1);
  const auto created = f.audit("user.create");
  REQUIRE(created.size() == 1);
  CHECK(created[0].actor() == "system");
  CHECK(created[0].after_json().find(password) == std::string::npos);
  CHECK(created[0].detail().find(password) == std::string::npos);
}

TEST_CASE("ensure_admin creates the admin or resets it to an enabled, unlocked admin", "[auth]") {
  auto options = fast_options();
  options.max_failed_logins = 2;
  Fixture f(options);
  auto bad = f.wait<v1::User>([&](auto done) { f.auth->ensure_admin("root", "short", done); });
  REQUIRE(bad.code() == v1::API_ERROR_CODE_INVALID_ARGUMENT);
  CHECK(field_of(bad.failure()) == "password");
  CHECK(f.user_count() == 0);

  auto created = f.wait<v1::User>([&](auto done) { f.auth->ensure_admin("root", k_password, done); });
  REQUIRE(created);
  CHECK(created.value().role() == v1::ROLE_ADMIN);
  f.create_user("backup", v1::ROLE_ADMIN);
  auto demoted = created.value();
  demoted.set_role(v1::ROLE_VIEWER);
  demoted.set_disabled(true);
  REQUIRE(f.wait<v1::User>([&](auto done) { f.auth->update_user(demoted, f.root, done); }));
  CHECK(f.login("root", "wrong password 1").code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  CHECK(f.login("root", "wrong password 2").code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  CHECK_FALSE(f.login("root", k_password));  // locked out from this address

  auto reset = f.wait<v1::User>([&](auto done) { f.auth->ensure_admin("root", k_other_password, done); });
  REQUIRE(reset);
  CHECK(reset.value().id() == created.value().id());
  CHECK(reset.value().role() == v1::ROLE_ADMIN);
  CHECK_FALSE(reset.value().disabled());
  auto in = f.login("root", k_other_password);
  REQUIRE(in);
  CHECK(in.value().user().role() == v1::ROLE_ADMIN);
  CHECK(f.audit("user.password").size() == 1);
}

// ---- the password policy (NIST SP 800-63B 5.1.1.2) ----

TEST_CASE("the password policy refuses short, common, patterned and contextual passwords", "[auth]") {
  struct Case {
    const char* password;
    const char* username;
    const char* reason;
  };
  const Case refused[] = {
      {"short", "", "must be at least 12 characters"},
      {"aaaaaaaaaaaa", "", "is one character repeated"},
      {"abcabcabcabc", "", "is a short pattern repeated; choose something less predictable"},
      {"passwordpassword", "", "is a short pattern repeated; choose something less predictable"},
      {"aabbaabbabab", "", "uses fewer than 5 different characters"},
      {"234567890123", "", "is a sequence of neighbouring keys or characters (like 123456789012 or qwertyuiop)"},
      {"abcdefghijkl", "", "is a sequence of neighbouring keys or characters (like 123456789012 or qwertyuiop)"},
      {"ZYXWVUTSRQPO", "", "is a sequence of neighbouring keys or characters (like 123456789012 or qwertyuiop)"},
      {"qwertyuiop[]", "", "is a sequence of neighbouring keys or characters (like 123456789012 or qwertyuiop)"},
      {"1qaz2wsx3edc", "", "is a sequence of neighbouring keys or characters (like 123456789012 or qwertyuiop)"},
      {"my QuartzFlow pass", "", "must not contain the name of the service (quartzflow)"},
      {"Qu4rtzFl0w rocks!", "", "must not contain the name of the service (quartzflow)"},
      {"xx-Alice-1987-xx", "alice", "must not contain the username"},
      {"dear jo.smith of mine", "jo.smith@example.com", "must not contain the username"},
      {"password1234", "", "is one of the most commonly used passwords"},
      {"IloveYou1234", "", "is one of the most commonly used passwords"},
      {"p@ssw0rd1234", "", "is one of the most commonly used passwords"},
      {"Sunshine2024!!", "", "is a commonly used password with digits or symbols around it"},
      {"2024 Football 2024", "", "is a commonly used password with digits or symbols around it"},
      {"$$P@ssw0rd$$99", "", "is a commonly used password with digits or symbols around it"},
  };
  for (const auto& c : refused) {
    INFO(c.password);
    const auto weakness = qf::password_weakness(c.password, c.username);
    REQUIRE(weakness);
    CHECK(*weakness == c.reason);
    CHECK(weakness->find(c.password) == std::string::npos);  // never quoted
  }
  CHECK(qf::password_weakness(std::string(1025, 'x') + "yz123") == "is longer than 1024 bytes");
  // Twelve characters, not bytes: four 3-byte characters are too short.
  CHECK(qf::password_weakness("\u5bc6\u7801\u5bc6\u7801") == "must be at least 12 characters");

  for (const char* good : {"correct horse battery staple", "staple paper clip 42", "viewer password 1",
                           "operator password", "a unique password 0xC0FFEE", "T7#kq!2vLp9@zR"}) {
    INFO(good);
    CHECK_FALSE(qf::password_weakness(good, "admin"));
  }
  // A short username is not looked for: it is inside too many passwords by chance.
  CHECK_FALSE(qf::password_weakness("jotted down somewhere", "jo"));
}

TEST_CASE("creating a user, changing a password and ensure_admin refuse weak passwords naming the field",
          "[auth]") {
  Fixture f;
  const auto alice = f.create_user("alice", v1::ROLE_ADMIN);
  const auto audits = f.audit().size();
  v1::CreateUserRequest request;
  request.mutable_user()->set_username("bob");
  request.mutable_user()->set_role(v1::ROLE_VIEWER);
  request.set_password("password1234");
  auto common = f.wait<v1::User>([&](auto done) { f.auth->create_user(request, f.root, done); });
  REQUIRE(common.code() == v1::API_ERROR_CODE_INVALID_ARGUMENT);
  CHECK(field_of(common.failure()) == "password");
  CHECK(common.failure().message == "invalid user \"bob\": password: is one of the most commonly used passwords");
  request.set_password("i am bob the builder");
  auto with_name = f.wait<v1::User>([&](auto done) { f.auth->create_user(request, f.root, done); });
  REQUIRE(with_name.code() == v1::API_ERROR_CODE_INVALID_ARGUMENT);
  CHECK(with_name.failure().violations[0].reason() == "must not contain the username");

  const auto [me, session] = f.sign_in("alice");
  auto sequence = f.change_password(me, alice.id(), k_password, "abcdefghijklmnop");
  REQUIRE(sequence.code() == v1::API_ERROR_CODE_INVALID_ARGUMENT);
  CHECK(field_of(sequence.failure()) == "new_password");
  // The username is checked once the user is read.
  auto named = f.change_password(me, alice.id(), k_password, "alice in wonderland");
  REQUIRE(named.code() == v1::API_ERROR_CODE_INVALID_ARGUMENT);
  CHECK(field_of(named.failure()) == "new_password");
  CHECK(named.failure().violations[0].reason() == "must not contain the username");
  auto same = f.change_password(me, alice.id(), k_password, k_password);
  REQUIRE(same.code() == v1::API_ERROR_CODE_INVALID_ARGUMENT);
  CHECK(same.failure().violations[0].reason() == "must differ from the current password");

  auto admin = f.wait<v1::User>([&](auto done) { f.auth->ensure_admin("root", "quartzflow admin pass", done); });
  REQUIRE(admin.code() == v1::API_ERROR_CODE_INVALID_ARGUMENT);
  CHECK(field_of(admin.failure()) == "password");
  CHECK(f.user_count() == 1);
  CHECK(f.audit().size() == audits + 1);  // only alice's login
  CHECK(f.login("alice", k_password));
}

TEST_CASE("the one-time password of the first start must be changed, and only the user's own change clears that",
          "[auth]") {
  TempDir dir;
  const auto path = dir.file("coordinator.db");
  Fixture f(fast_options(), path);
  auto first = f.wait<std::optional<std::string>>([&](auto done) { f.auth->bootstrap(done); });
  REQUIRE(first);
  REQUIRE(first.value());
  const auto one_time = *first.value();
  auto login = f.login("admin", one_time);
  REQUIRE(login);
  CHECK(login.value().user().password_change_required());
  auto admin = f.authenticate(login.value().session_token());
  REQUIRE(admin);
  CHECK(admin.value().user.password_change_required());

  // An admin-created user may be made to change its password too; an admin's reset keeps that.
  v1::CreateUserRequest request;
  request.mutable_user()->set_username("vera");
  request.mutable_user()->set_role(v1::ROLE_VIEWER);
  request.set_password(k_password);
  request.set_require_password_change(true);
  auto vera = f.wait<v1::User>([&](auto done) { f.auth->create_user(request, f.root, done); });
  REQUIRE(vera);
  CHECK(vera.value().password_change_required());
  REQUIRE(f.change_password(admin.value(), vera.value().id(), "", k_other_password));
  auto vera_login = f.login("vera", k_other_password);
  REQUIRE(vera_login);
  CHECK(vera_login.value().user().password_change_required());

  REQUIRE(f.change_password(admin.value(), admin.value().user.id(), one_time, k_other_password));
  auto after = f.authenticate(login.value().session_token());  // the session survives, the flag is gone
  REQUIRE(after);
  CHECK_FALSE(after.value().user.password_change_required());
  CHECK(f.login("admin", one_time).code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
  auto again = f.login("admin", k_other_password);
  REQUIRE(again);
  CHECK_FALSE(again.value().user().password_change_required());

  // ensure_admin chooses the password itself: no change is asked for.
  REQUIRE(f.wait<v1::User>([&](auto done) { f.auth->ensure_admin("vera", k_password, done); }));
  auto reset = f.login("vera", k_password);
  REQUIRE(reset);
  CHECK_FALSE(reset.value().user().password_change_required());

  // Kept in its own column of the users table (schema version 4).
  f.store->flush();
  sqlite3* db = nullptr;
  REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
  sqlite3_stmt* statement = nullptr;
  REQUIRE(sqlite3_prepare_v2(db, "SELECT username, password_change_required FROM users ORDER BY username", -1,
                             &statement, nullptr) == SQLITE_OK);
  std::vector<std::string> rows;
  while (sqlite3_step(statement) == SQLITE_ROW)
    rows.push_back(fmt_row(reinterpret_cast<const char*>(sqlite3_column_text(statement, 0)),
                           sqlite3_column_int(statement, 1)));
  sqlite3_finalize(statement);
  sqlite3_close(db);
  CHECK(rows == std::vector<std::string>{"admin=0", "vera=0"});
}

TEST_CASE("the Authenticator's operations can be awaited, failures included, or given a callback", "[auth]") {
  Fixture f;
  bool finished = false;
  std::exception_ptr thrown;
  boost::asio::co_spawn(
      f.io,
      [&]() -> boost::asio::awaitable<void> {
        auto& auth = *f.auth;
        v1::CreateUserRequest create;
        create.mutable_user()->set_username("ada");
        create.mutable_user()->set_role(v1::ROLE_OPERATOR);
        create.set_password(k_password);
        auto created = co_await auth.async_create_user(create, f.root, boost::asio::use_awaitable);
        REQUIRE(created);
        CHECK(created.value().username() == "ada");

        // A failure is a value, not an exception: the code and the field it names.
        create.set_password("short");
        auto weak = co_await auth.async_create_user(create, f.root, boost::asio::use_awaitable);
        CHECK(weak.code() == v1::API_ERROR_CODE_INVALID_ARGUMENT);
        CHECK(field_of(weak.failure()) == "password");

        v1::LoginRequest login;
        login.set_username("ada");
        login.set_password(k_password);
        auto session = co_await auth.async_login(login, "10.0.0.7", "test-agent/1.0", boost::asio::use_awaitable);
        REQUIRE(session);
        auto who =
            co_await auth.async_authenticate(session.value().session_token(), "10.0.0.7", boost::asio::use_awaitable);
        REQUIRE(who);
        CHECK(who.value().role == v1::ROLE_OPERATOR);

        v1::CreateApiTokenRequest token_request;
        token_request.set_name("ci");
        auto token = co_await auth.async_create_token(who.value(), token_request, f.root, boost::asio::use_awaitable);
        REQUIRE(token);
        CHECK(token.value().token().role() == v1::ROLE_OPERATOR);

        REQUIRE(co_await auth.async_logout(session.value().session_token(), boost::asio::use_awaitable));
        auto ended =
            co_await auth.async_authenticate(session.value().session_token(), "10.0.0.7", boost::asio::use_awaitable);
        CHECK(ended.code() == v1::API_ERROR_CODE_UNAUTHENTICATED);
        finished = true;
      },
      [&](std::exception_ptr e) { thrown = e; });
  REQUIRE(run_until(f.io, [&] { return finished || thrown; }));
  if (thrown) std::rethrow_exception(thrown);

  // The same operation with a plain callback as the token.
  std::optional<qf::ApiResult<v1::ListUsersResponse>> listed;
  f.auth->async_list_users({}, [&](qf::ApiResult<v1::ListUsersResponse> r) { listed.emplace(std::move(r)); });
  CHECK_FALSE(listed);  // never inline
  REQUIRE(run_until(f.io, [&] { return listed.has_value(); }));
  REQUIRE(*listed);
  CHECK(listed->value().total() == 1);
}
