// SPDX-License-Identifier: Apache-2.0
// `qfctl token create|ls|revoke --enrol` (join tokens for `qf-agent --join`) and
// `qfctl agent revoke ID`, through the admin API.
#pragma once

#include <string>

#include "api.hpp"

namespace qfctl {

/// The options `token create --enrol` takes besides `--expires`.
struct EnrolTokenArgs {
  bool enrol = false;
  std::string group;
  unsigned uses = 0;
  std::string description;
};

/// POST /enrolment-tokens; prints the join token once (stdout) and how to use it (stderr).
void run_enrol_token_create(const ApiFlags& flags, const EnrolTokenArgs& args, const std::string& expires);
/// GET /enrolment-tokens.
void run_enrol_token_ls(const ApiFlags& flags);
/// DELETE /enrolment-tokens/{id}.
void run_enrol_token_revoke(const ApiFlags& flags, const std::string& id);
/// POST /agents/{id}/revoke.
void run_agent_revoke(const ApiFlags& flags, const std::string& agent_id);

}  // namespace qfctl
