// SPDX-License-Identifier: Apache-2.0
// One HTTP(S) request to the coordinator's admin API. Beast and OpenSSL stay in
// api_client.cpp, the one slow translation unit of qfctl.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace qfctl {

/// `http://127.0.0.1:8443` or `https://coordinator.example.com` split into its parts.
struct ServerUrl {
  bool https = false;
  std::string host;       ///< without brackets for IPv6
  std::string port;       ///< always set (80/443 when the URL had none)
  std::string base_path;  ///< a path prefix before /api/v1, without the trailing '/'; usually empty
  std::string text;       ///< the URL as given, for messages
};

/// How the server certificate is checked (HTTPS only).
struct TlsSettings {
  std::string ca_file;  ///< PEM bundle; empty = the system trust store
  bool insecure = false;  ///< no verification at all
};

struct HttpRequest {
  std::string method;        ///< GET, POST, PUT, DELETE
  std::string target;        ///< path and query, percent-encoded, e.g. `/api/v1/tasks?page=2`
  std::string body;          ///< JSON, or empty
  std::string bearer_token;  ///< sent as `Authorization: Bearer ...` when not empty
  std::uint64_t max_response_bytes = 0;  ///< a larger body fails; 0 = 64 MiB
};

struct HttpResponse {
  unsigned status = 0;
  std::string content_type;
  std::string body;
};

/**
 * Sends `request` on a new connection and reads the whole response.
 * @param timeout bounds connecting, the TLS handshake, sending and receiving together.
 * @param failure set to the reason (e.g. `connect: Connection refused`, `TLS handshake: the
 *        certificate did not verify: self-signed certificate in certificate chain`) when there
 *        is no response.
 * @return the response, or nullopt with `failure` set.
 */
std::optional<HttpResponse> send_http_request(const ServerUrl& server, const TlsSettings& tls,
                                              std::chrono::seconds timeout, const HttpRequest& request,
                                              std::string& failure);

}  // namespace qfctl
