// SPDX-License-Identifier: Apache-2.0
// qf-agent --join: enrolment with a join token (own key, certificate request over the
// coordinator's HTTPS admin endpoint, configuration written), and the renewal of the
// certificate it got, over the same endpoint, authenticated by the current certificate.
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <quartzflow/v1/config.pb.h>

namespace quartzflow::examples {

struct JoinOptions {
  std::string url;       ///< the coordinator's admin endpoint, https://host:port
  std::string token;     ///< `qfe1.<id>.<secret>.<CA hash>`
  std::string ca_file;   ///< verifies the admin endpoint; empty = the cluster CA checked against the token
  std::string agent_id;  ///< asked for; empty = the configuration's, else the coordinator picks
  std::filesystem::path config_file;
};

/**
 * Enrols this host: checks the coordinator's CA against the token's hash, sends a request
 * for a new EC P-256 key, stores key, certificate and CA under `<data_dir>/tls` (0600) and
 * writes the configuration to use them (created when missing). Nothing is written when the
 * coordinator refuses. An agent already enrolled (its configuration names an enrolment URL
 * and its certificate exists) is left as it is. Returns 0, 2 for bad input (the reason on
 * stderr) or 1 when the coordinator cannot be reached or refuses.
 */
int join_cluster(const JoinOptions& options);

/**
 * Renews the certificate of an enrolled agent (blocking, up to 30 s): a new key and request,
 * signed with the current key, sent to `config.enrolment().url`; the new pair replaces the
 * files in place (key first, then the certificate), so the next connection uses it.
 * Returns the reason of a failure, or nullopt.
 */
std::optional<std::string> renew_certificate(const v1::AgentConfig& config, const std::filesystem::path& config_file);

/// When the certificate of an enrolled agent is renewed (two thirds of its validity);
/// nullopt when the agent is not enrolled (no enrolment URL) or the file does not parse.
std::optional<std::chrono::system_clock::time_point> renewal_time(const v1::AgentConfig& config,
                                                                  const std::filesystem::path& config_file);

/**
 * Renews an enrolled agent's certificate at `renewal_time` (the HTTPS call on a worker
 * thread, its completion posted back); after a failure, again every 60 s. Does nothing for
 * an agent not enrolled.
 * Thread safety: use from the io_context's thread; `stop` (or destruction) joins the worker.
 */
class CertificateRenewal {
 public:
  CertificateRenewal(boost::asio::io_context& io, v1::AgentConfig config, std::filesystem::path config_file);
  ~CertificateRenewal();
  CertificateRenewal(const CertificateRenewal&) = delete;
  CertificateRenewal& operator=(const CertificateRenewal&) = delete;
  void start();
  void stop();

 private:
  void arm(std::chrono::system_clock::time_point at);
  void renew();

  boost::asio::io_context& io_;
  v1::AgentConfig config_;
  std::filesystem::path config_file_;
  boost::asio::steady_timer timer_;
  std::thread worker_;
  bool stopped_ = false;
};

}  // namespace quartzflow::examples
