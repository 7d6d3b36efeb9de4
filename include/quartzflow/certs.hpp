// SPDX-License-Identifier: Apache-2.0
// Certificates for the cluster's mutual TLS: a private cluster CA, agent and coordinator
// certificates it signs (EC P-256, SHA-256, PEM files), and the common name of a certificate.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <quartzflow/error.hpp>

namespace quartzflow {

/// Options of the cluster CA (`qfctl certs init`).
struct CaOptions {
  /// Subject common name of the CA certificate; 1-64 characters.
  std::string common_name = "QuartzFlow cluster CA";
  /// Validity in days, 1-36500.
  int days = 3650;
  /// Replace an existing CA. Every certificate the old CA signed stops verifying.
  bool force = false;
};

/// Who a certificate is for.
enum class CertificateKind {
  agent,        ///< client certificate of qf-agent; CN = the agent id it registers as
  coordinator,  ///< server certificate of the coordinator's agent endpoint; CN = its host
};

/// What `issue_certificate` signs.
struct IssueOptions {
  CertificateKind kind = CertificateKind::agent;
  /// Agent: the agent id (printable ASCII without spaces or '/'; at most 64 characters, the
  /// most a certificate's CN holds).
  /// Coordinator: the host agents dial, an IPv4/IPv6 address or a DNS name.
  std::string name;
  /// More subject alternative names; each an IP address or a DNS name (detected).
  std::vector<std::string> extra_sans;
  /// Validity in days, 1-36500.
  int days = 825;
};

/// The PEM files an operation wrote: certificate (mode 0644) and private key (mode 0600).
struct IssuedFiles {
  std::string cert_file;
  std::string key_file;
};

/**
 * Creates the cluster CA: an EC P-256 key and a self-signed CA certificate (basicConstraints
 * critical CA:TRUE, keyUsage keyCertSign+cRLSign, subjectKeyIdentifier), written as
 * `dir/ca.pem` and `dir/ca.key` (0600). `dir` is created when missing.
 * @param written set to the two paths on success.
 * @param detail on failure, the user-facing text (names the field or the file and the reason).
 * @return `errc::invalid_argument` for bad options; `boost::system::errc::file_exists` when a
 *         CA is there and `options.force` is false; system errors for I/O.
 * No partial writes: the files appear together or not at all.
 * Thread safety: safe to call concurrently for different directories.
 */
error_code create_ca(const std::string& dir, const CaOptions& options, IssuedFiles& written, std::string& detail);

/// Throwing form of `create_ca`: throws `quartzflow::error` carrying the detail.
IssuedFiles create_ca(const std::string& dir, const CaOptions& options = {});

/**
 * Issues a certificate signed by the CA in `dir` (`dir/ca.pem` + `dir/ca.key`).
 * Agent: CN = name, EKU clientAuth+serverAuth, SAN DNS:name when the name is a DNS name;
 * files `dir/agent-NAME.pem` and `.key`. Coordinator: CN = host, SAN IP:host or DNS:host,
 * EKU serverAuth+clientAuth; files `dir/coordinator-HOST.pem` and `.key` (':' of an IPv6 host
 * becomes '_'). Both: every extra SAN, authorityKeyIdentifier, random positive 128-bit
 * serial, notBefore 5 minutes ago. An existing pair of the same name is replaced (renewal).
 * @param written set to the two paths on success.
 * @param detail on failure, the user-facing text, e.g.
 *        `agent: "a b" must be 1-253 printable ASCII characters without spaces or '/'`.
 * @return `errc::invalid_argument` for bad options or an unusable CA;
 *         `boost::system::errc::no_such_file_or_directory` when there is no CA (the detail
 *         names the file and says to run `qfctl certs init`); system errors for I/O.
 * No partial writes: on failure nothing new is left in `dir`.
 * Thread safety: safe to call concurrently for different names.
 */
error_code issue_certificate(const std::string& dir, const IssueOptions& options, IssuedFiles& written,
                             std::string& detail);

/// Throwing form of `issue_certificate`: throws `quartzflow::error` carrying the detail.
IssuedFiles issue_certificate(const std::string& dir, const IssueOptions& options);

/**
 * The subject common name (CN) of the first certificate in a PEM file, as UTF-8; qf-agent
 * uses it as its default agent id, the coordinator compares it with the registered agent id.
 * @param ec set on failure: system errors when the file cannot be read,
 *        `errc::invalid_argument` when it holds no PEM certificate or the certificate has no CN.
 * @param detail on failure, the user-facing text naming the file.
 * @return the CN; empty on failure.
 * Thread safety: safe to call concurrently.
 */
std::string certificate_common_name(const std::string& cert_file, error_code& ec, std::string& detail);

/// Throwing form of `certificate_common_name`: throws `quartzflow::error` carrying the detail.
std::string certificate_common_name(const std::string& cert_file);

/**
 * Why the certificate in `cert_file` cannot be used at `now`: not valid yet, or expired
 * (the file and the dates named); nullopt when it can, or when the file is unreadable (the
 * TLS library reports that). `warning` is set when it expires within 30 days.
 */
std::optional<std::string> certificate_date_problem(const std::string& cert_file,
                                                    std::chrono::system_clock::time_point now, std::string& warning);

/// Why `key_file` is unsafe to use: every user of the host may read or write it. nullopt
/// otherwise (also when it cannot be read; the TLS library reports that); `warning` is set
/// when its group may.
std::optional<std::string> key_file_permission_problem(const std::string& key_file, std::string& warning);

}  // namespace quartzflow
