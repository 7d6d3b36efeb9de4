// SPDX-License-Identifier: Apache-2.0
// `host:port` addresses of the config files (`[::1]:7443` for IPv6), split and checked
// once, so qf-coordinator and qf-agent word their errors alike.
#pragma once

#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace quartzflow::examples {

struct HostPort {
  std::string host;  ///< without brackets
  std::uint16_t port = 0;
};

/**
 * Splits `host:port`. `reason` says what is wrong when it returns nullopt. An IPv6 host
 * must be written in brackets; `allow_port_zero` lets a listener ask for any free port.
 */
inline std::optional<HostPort> parse_host_port(std::string_view text, bool allow_port_zero, std::string& reason) {
  HostPort out;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string_view::npos) {
      reason = "an IPv6 address needs its closing bracket, e.g. [::1]:7443";
      return std::nullopt;
    }
    out.host = std::string(text.substr(1, close - 1));
    if (close + 1 >= text.size() || text[close + 1] != ':') {
      reason = "no port: write host:port, e.g. [::1]:7443";
      return std::nullopt;
    }
    port_text = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      reason = "no port: write host:port, e.g. 127.0.0.1:7443";
      return std::nullopt;
    }
    if (text.find(':') != colon) {
      reason = "an IPv6 address must be in brackets, e.g. [::1]:7443";
      return std::nullopt;
    }
    out.host = std::string(text.substr(0, colon));
    port_text = text.substr(colon + 1);
  }
  if (out.host.empty()) {
    reason = "no host: write host:port, e.g. 127.0.0.1:7443";
    return std::nullopt;
  }
  unsigned port = 0;
  const auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc{} || end != port_text.data() + port_text.size() || port > 65535 ||
      (port == 0 && !allow_port_zero)) {
    reason = "\"" + std::string(port_text) + "\" is not a port number (" + (allow_port_zero ? "0" : "1") + "-65535)";
    return std::nullopt;
  }
  out.port = static_cast<std::uint16_t>(port);
  return out;
}

}  // namespace quartzflow::examples
