// SPDX-License-Identifier: Apache-2.0
// Alert secrets (src/alerts/secrets.hpp): AES-256-GCM sealing, redaction, resolution, and
// the coordinator's key file.
#include <cstdlib>
#include <fstream>
#include <string>

#include <sys/stat.h>

#include <catch2/catch.hpp>

#include <quartzflow/error.hpp>

#include "alerts/secrets.hpp"
#include "temp_dir.hpp"

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;
using namespace quartzflow::detail;

namespace {
const std::string k_key(32, 'k');
const std::string k_other_key(32, 'o');
}  // namespace

TEST_CASE("a sealed secret opens with its key only, and each seal uses a fresh nonce", "[alerts][secrets]") {
  const auto sealed = seal_secret("hunter2-signing-key", k_key);
  CHECK(sealed.rfind("v1:", 0) == 0);
  CHECK(sealed.find("hunter2") == std::string::npos);
  CHECK(seal_secret("hunter2-signing-key", k_key) != sealed);
  CHECK(unseal_secret(sealed, k_key) == std::optional<std::string>("hunter2-signing-key"));
  CHECK_FALSE(unseal_secret(sealed, k_other_key));
  auto tampered = sealed;
  tampered[tampered.size() - 3] = tampered[tampered.size() - 3] == 'A' ? 'B' : 'A';
  CHECK_FALSE(unseal_secret(tampered, k_key));
  CHECK_FALSE(unseal_secret("v1:not base64!", k_key));
  CHECK_FALSE(unseal_secret("plain", k_key));
  CHECK(unseal_secret(seal_secret("", k_key), k_key) == std::optional<std::string>(""));
  CHECK_THROWS_AS(seal_secret("x", "short key"), qf::error);
}

TEST_CASE("secrets are sealed for the store and redacted with a hint in answers", "[alerts][secrets]") {
  v1::Secret inline_secret;
  inline_secret.set_value("s3cr3t-value-xy");
  inline_secret.set_hint("forged");
  seal_for_store(inline_secret, k_key);
  CHECK(inline_secret.value().empty());
  CHECK(inline_secret.set());
  CHECK(inline_secret.hint() == "inline …xy");
  std::string error;
  CHECK(resolve_secret(inline_secret, k_key, error) == std::optional<std::string>("s3cr3t-value-xy"));
  CHECK_FALSE(resolve_secret(inline_secret, k_other_key, error));
  CHECK_THAT(error, Catch::Contains("cannot be decrypted"));
  CHECK(error.find("s3cr3t") == std::string::npos);

  auto shown = inline_secret;
  redact_secret(shown);
  CHECK(shown.sealed().empty());
  CHECK(shown.value().empty());
  CHECK(shown.set());
  CHECK(shown.hint() == "inline …xy");

  v1::Secret short_secret;
  short_secret.set_value("abc");
  seal_for_store(short_secret, k_key);
  CHECK(short_secret.hint() == "inline");

  v1::Secret from_env;
  from_env.set_env("QF_TEST_ALERT_SECRET");
  from_env.set_sealed("v1:forged");  // a client cannot smuggle a sealed value in
  seal_for_store(from_env, k_key);
  CHECK(from_env.sealed().empty());
  CHECK(from_env.hint() == "env QF_TEST_ALERT_SECRET");
  ::setenv("QF_TEST_ALERT_SECRET", "from-the-environment", 1);
  CHECK(resolve_secret(from_env, k_key, error) == std::optional<std::string>("from-the-environment"));
  ::unsetenv("QF_TEST_ALERT_SECRET");
  CHECK_FALSE(resolve_secret(from_env, k_key, error));
  CHECK_THAT(error, Catch::Contains("QF_TEST_ALERT_SECRET is not set"));

  qf::testing::TempDir dir;
  const auto path = dir.file("routing-key");
  std::ofstream(path) << "from-a-file\n";
  v1::Secret from_file;
  from_file.set_file(path);
  seal_for_store(from_file, k_key);
  CHECK(from_file.hint() == "file " + path);
  CHECK(resolve_secret(from_file, k_key, error) == std::optional<std::string>("from-a-file"));

  v1::Secret none;
  seal_for_store(none, k_key);
  CHECK_FALSE(none.set());
  CHECK(none.hint().empty());

  v1::Channel channel;
  channel.mutable_secret()->set_value("signing-key-12");
  channel.mutable_email()->mutable_password()->set_value("smtp-password");
  seal_channel(channel, k_key);
  CHECK_FALSE(channel.secret().sealed().empty());
  CHECK_FALSE(channel.email().password().sealed().empty());
  redact_channel(channel);
  CHECK(channel.secret().sealed().empty());
  CHECK(channel.email().password().sealed().empty());
  CHECK(channel.email().password().hint() == "inline …rd");
}

TEST_CASE("the secret key file is created once with mode 0600 and read back, and a bad one is refused",
          "[alerts][secrets]") {
  qf::testing::TempDir dir;
  const auto path = dir.file("alert-secret.key");
  std::string error;
  const auto created = load_or_create_secret_key(path, error);
  INFO(error);
  REQUIRE(created);
  CHECK(created->size() == 32);
  struct stat info {};
  REQUIRE(::stat(path.c_str(), &info) == 0);
  CHECK((info.st_mode & 0777) == 0600);
  CHECK(load_or_create_secret_key(path, error) == created);
  CHECK(load_secret_key(path, error) == created);

  const auto raw = dir.file("raw.key");
  std::ofstream(raw, std::ios::binary) << std::string(32, '\x01');
  CHECK(load_secret_key(raw, error) == std::optional<std::string>(std::string(32, '\x01')));

  const auto bad = dir.file("bad.key");
  std::ofstream(bad) << "too short\n";
  CHECK_FALSE(load_secret_key(bad, error));
  CHECK_THAT(error, Catch::Contains("not a key"));
  CHECK_FALSE(load_secret_key(dir.file("missing.key"), error));
  CHECK_THAT(error, Catch::Contains("cannot read"));
}
