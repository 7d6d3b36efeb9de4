// SPDX-License-Identifier: Apache-2.0
// `qfctl certs init` and `qfctl certs issue`: the cluster CA and the agent and coordinator
// certificates of mutual TLS, as PEM files in one directory.
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <quartzflow/certs.hpp>

#include "commands.hpp"

namespace qfctl {
namespace {

namespace qf = quartzflow;

/// Failures that are not the user's input (I/O, a CA already there or missing).
constexpr int k_exit_failure = 1;

struct InitArgs {
  std::string dir;
  int days = qf::CaOptions{}.days;
  bool force = false;
};

struct IssueArgs {
  std::string dir;
  std::string agent;
  std::string coordinator;
  std::vector<std::string> sans;
  int days = qf::IssueOptions{}.days;
};

[[noreturn]] void fail(const qf::error_code& ec, const std::string& detail) {
  throw CommandFailure{ec == qf::errc::invalid_argument ? k_exit_invalid_input : k_exit_failure, detail};
}

void run_init(const InitArgs& args) {
  qf::CaOptions options;
  options.days = args.days;
  options.force = args.force;
  qf::IssuedFiles written;
  std::string detail;
  if (const auto ec = qf::create_ca(args.dir, options, written, detail)) fail(ec, detail);
  std::cout << written.cert_file << "\n" << written.key_file << "\n";
  std::cout << fmt::format("next: qfctl certs issue --dir {} --coordinator HOST, then --agent NAME for each agent; "
                           "keep ca.key offline, copy only ca.pem\n",
                           args.dir);
}

void run_issue(const IssueArgs& args, bool agent_given, bool coordinator_given) {
  if (agent_given == coordinator_given)
    throw CommandFailure{k_exit_invalid_input,
                         "issue: give exactly one of --agent NAME or --coordinator HOST"};
  qf::IssueOptions options;
  options.kind = agent_given ? qf::CertificateKind::agent : qf::CertificateKind::coordinator;
  options.name = agent_given ? args.agent : args.coordinator;
  options.extra_sans = args.sans;
  options.days = args.days;
  qf::IssuedFiles written;
  std::string detail;
  if (const auto ec = qf::issue_certificate(args.dir, options, written, detail)) fail(ec, detail);
  std::cout << written.cert_file << "\n" << written.key_file << "\n";
  if (agent_given)
    std::cout << fmt::format("agent config: tls: {{cert_file: {}, key_file: {}, ca_file: {}/ca.pem}}; "
                             "the agent must register as \"{}\"\n",
                             written.cert_file, written.key_file, args.dir, options.name);
  else
    std::cout << fmt::format("coordinator config: agent_tls: {{cert_file: {}, key_file: {}, ca_file: {}/ca.pem}}\n",
                             written.cert_file, written.key_file, args.dir);
}

}  // namespace

void add_certs_commands(CLI::App& app) {
  auto* certs = app.add_subcommand("certs", "cluster CA and certificates for mutual TLS (PEM files)");
  certs->require_subcommand(1);

  auto init_args = std::make_shared<InitArgs>();
  auto* init = certs->add_subcommand("init", "create the cluster CA: DIR/ca.pem and DIR/ca.key (mode 0600)");
  init->add_option("--dir", init_args->dir, "directory of the CA and certificates (created if missing)")->required();
  init->add_option("--days", init_args->days, "validity of the CA certificate, 1-36500")->capture_default_str();
  init->add_flag("--force", init_args->force,
                 "replace an existing CA (every certificate it signed stops verifying)");
  init->callback([init_args] { run_init(*init_args); });

  auto issue_args = std::make_shared<IssueArgs>();
  auto* issue = certs->add_subcommand(
      "issue", "issue a certificate signed by DIR's CA: DIR/agent-NAME.pem|.key or DIR/coordinator-HOST.pem|.key");
  issue->add_option("--dir", issue_args->dir, "directory holding ca.pem and ca.key (see `certs init`)")->required();
  auto* agent = issue->add_option("--agent", issue_args->agent,
                                  "agent certificate: NAME is the agent id (the certificate's CN)");
  auto* coordinator = issue->add_option("--coordinator", issue_args->coordinator,
                                        "coordinator certificate: HOST (IP address or DNS name) agents dial");
  issue->add_option("--san", issue_args->sans, "another IP address or DNS name the certificate is valid for")
      ->delimiter(',');
  issue->add_option("--days", issue_args->days, "validity, 1-36500")->capture_default_str();
  issue->callback([issue_args, agent, coordinator] {
    run_issue(*issue_args, agent->count() > 0, coordinator->count() > 0);
  });
}

}  // namespace qfctl
