// SPDX-License-Identifier: Apache-2.0
// Join tokens and agent revocation through the admin API (see enrolment_commands.hpp).
#include "enrolment_commands.hpp"

#include <chrono>
#include <iostream>

#include <fmt/format.h>

#include <quartzflow/time.hpp>
#include <quartzflow/v1/enrolment.pb.h>

#include "table.hpp"

namespace qfctl {

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;

void run_enrol_token_create(const ApiFlags& flags, const EnrolTokenArgs& args, const std::string& expires) {
  v1::CreateEnrolmentTokenRequest request;
  request.set_group_id(args.group);
  request.set_max_uses(args.uses);
  request.set_description(args.description);
  if (!expires.empty()) {
    const auto lifetime = qf::parse_duration(expires);
    if (!lifetime)
      throw CommandFailure{k_exit_invalid_input,
                           fmt::format("--expires \"{}\": expected a duration such as 1h, 30m or 7d", expires)};
    request.set_expires_in_seconds(
        static_cast<std::uint32_t>(std::chrono::duration_cast<std::chrono::seconds>(*lifetime).count()));
  }
  auto api = ApiClient::from_flags(flags);
  const auto response = api.post<v1::CreateEnrolmentTokenResponse>("/enrolment-tokens", &request);
  if (flags.format() != OutputFormat::table) return print_message(response, flags.format());
  std::cout << response.join_token() << "\n" << std::flush;
  const auto& t = response.token();
  std::cerr << fmt::format(
      "qfctl: join token {} ({} use(s), group \"{}\", expires {}): shown only once. On the new host:\n"
      "  qf-agent --config /etc/quartzflow/agent.yaml --join https://COORDINATOR:PORT --token TOKEN\n",
      t.id(), t.max_uses(), t.group_id(), time_text(t.expires_at_unix_ms()));
}

void run_enrol_token_ls(const ApiFlags& flags) {
  auto api = ApiClient::from_flags(flags);
  const auto listing = api.get<v1::ListEnrolmentTokensResponse>("/enrolment-tokens");
  if (flags.format() != OutputFormat::table) return print_message(listing, flags.format());
  if (listing.items().empty()) {
    std::cout << "no join tokens\n";
    return;
  }
  Table table({"ID", "GROUP", "USES", "EXPIRES", "REVOKED", "CREATED BY", "AGENTS"});
  for (const auto& t : listing.items()) {
    std::string agents;
    for (const auto& id : t.agent_ids()) agents += (agents.empty() ? "" : ",") + id;
    table.add({t.id(), t.group_id().empty() ? "-" : t.group_id(), fmt::format("{}/{}", t.uses(), t.max_uses()),
               time_text(t.expires_at_unix_ms()), yes_no(t.revoked()), t.created_by(), agents.empty() ? "-" : agents});
  }
  table.print(std::cout);
}

void run_enrol_token_revoke(const ApiFlags& flags, const std::string& id) {
  auto api = ApiClient::from_flags(flags);
  v1::EnrolmentToken token;
  api.call("DELETE", "/enrolment-tokens/" + url_encode(id), {}, nullptr, &token);
  if (flags.format() != OutputFormat::table) return print_message(token, flags.format());
  std::cout << fmt::format("revoked join token {} (used {} of {} time(s))\n", token.id(), token.uses(),
                           token.max_uses());
}

void run_agent_revoke(const ApiFlags& flags, const std::string& agent_id) {
  auto api = ApiClient::from_flags(flags);
  const auto response = api.post<v1::RevokeAgentResponse>("/agents/" + url_encode(agent_id) + "/revoke");
  if (flags.format() != OutputFormat::table) return print_message(response, flags.format());
  std::cout << fmt::format("revoked agent {}: {} certificate(s) refused from now on; its session is closed\n",
                           response.agent_id(), response.certificates_size());
}

}  // namespace qfctl
