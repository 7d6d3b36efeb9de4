// SPDX-License-Identifier: Apache-2.0
// The agent version policy (src/dispatcher/version_policy.hpp) and the coordinator session's
// use of it at registration.
#include <catch2/catch.hpp>

#include <string>

#include "dispatcher/session_machine.hpp"
#include "dispatcher/version_policy.hpp"

namespace qf = quartzflow;
using qf::detail::agent_version_refusal;
using qf::detail::parse_software_version;

TEST_CASE("software versions parse as major.minor.patch with an optional suffix", "[version_policy]") {
  auto v = parse_software_version("1.12.3");
  REQUIRE(v);
  CHECK(v->major == 1);
  CHECK(v->minor == 12);
  CHECK(v->patch == 3);
  CHECK(parse_software_version("2.0.0-rc1"));
  CHECK(parse_software_version("2.0.0+build.7"));
  for (const char* bad : {"", "1", "1.2", "1.2.", "1..2", "a.b.c", "1.2.3x", " 1.2.3", "bench", "1.2.99999999999"})
    CHECK_FALSE(parse_software_version(bad));
}

TEST_CASE("a coordinator accepts agents one minor version older or newer and refuses the rest", "[version_policy]") {
  for (const char* accepted : {"1.5.0", "1.5.9", "1.4.0", "1.4.7", "1.6.0", "1.6.2-rc1", ""})
    CHECK(agent_version_refusal(accepted, "1.5.3").empty());
  for (const char* refused : {"1.3.9", "1.7.0", "0.5.3", "2.5.3", "1.10.0"}) {
    const auto why = agent_version_refusal(refused, "1.5.3");
    INFO(refused);
    CHECK(why.find(std::string("agent version ") + refused) != std::string::npos);
    CHECK(why.find("coordinator version 1.5.3") != std::string::npos);
    CHECK(why.find("accepts agents 1.4.x-1.6.x") != std::string::npos);
  }
  CHECK(agent_version_refusal("1.7.0", "1.5.3").find("upgrade the coordinator first") != std::string::npos);
  CHECK(agent_version_refusal("1.3.0", "1.5.3").find("upgrade this agent") != std::string::npos);
  CHECK(agent_version_refusal("0.1.0", "0.0.4").empty());
  CHECK(agent_version_refusal("0.2.0", "0.0.4").find("accepts agents 0.0.x-0.1.x") != std::string::npos);
  CHECK(agent_version_refusal("bench", "1.5.3").find("register.agent_version: \"bench\" is not a version") !=
        std::string::npos);
}

TEST_CASE("registration refuses an agent version two minors away with UNSUPPORTED_VERSION", "[version_policy]") {
  qf::detail::SessionOptions options;
  options.coordinator_version = "0.5.0";
  qf::detail::CoordinatorSession session{options, qf::detail::DeliveryNow{1'000, 1'800'000'000'000}};
  qf::v1::Register reg;
  reg.set_agent_id("agent-1");
  for (const char* accepted : {"0.4.1", "0.5.0", "0.6.0"}) {
    reg.set_agent_version(accepted);
    CHECK_FALSE(session.check_register(reg, "agent-1"));
  }
  for (const char* refused : {"0.3.0", "0.7.0"}) {
    reg.set_agent_version(refused);
    const auto close = session.check_register(reg, "agent-1");
    REQUIRE(close);
    CHECK(close->error == qf::v1::PROTOCOL_ERROR_CODE_UNSUPPORTED_VERSION);
    CHECK(close->goodbye == qf::v1::GOODBYE_REASON_UNSUPPORTED_VERSION);
    CHECK(close->why.find(std::string("agent version ") + refused) != std::string::npos);
  }
  reg.set_agent_version("latest");
  const auto malformed = session.check_register(reg, "agent-1");
  REQUIRE(malformed);
  CHECK(malformed->error == qf::v1::PROTOCOL_ERROR_CODE_INVALID_ARGUMENT);
  CHECK_FALSE(session.is_registered());
}
