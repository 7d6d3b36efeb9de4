// SPDX-License-Identifier: Apache-2.0
// Alert actions of the admin API: heartbeat monitor pings (POST /api/v1/ping/{token}, /start,
// /fail: no authentication, the token is the credential) and channel tests.
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include <quartzflow/catalog.hpp>
#include <quartzflow/v1/alerts_api.pb.h>

#include "../common/clock.hpp"
#include "admin_api.hpp"

namespace quartzflow::detail {

namespace {

using CallPtr = std::shared_ptr<ApiCall>;
constexpr int k_public = 0;
constexpr int k_operator = 2;
/// A ping's body (a log line for healthchecks-style clients) is not kept; a larger one is refused.
constexpr std::size_t k_max_ping_body = 10 * 1024;

enum class PingKind { success, start, fail };

}  // namespace

void AdminApi::add_alert_action_routes() {
  const auto ping = [this](CallPtr call, PingKind kind) {
    if (call->request.body.size() > k_max_ping_body)
      return call->fail(v1::API_ERROR_CODE_INVALID_ARGUMENT,
                        fmt::format("ping body has {} bytes; at most {}", call->request.body.size(), k_max_ping_body),
                        "body", fmt::format("at most {} bytes", k_max_ping_body));
    // Like a login: a client that sent unknown tokens waits longer at each try (per address).
    auto timer = std::make_shared<boost::asio::steady_timer>(executor_, login_delay(call->request.peer_ip));
    timer->async_wait([weak = weak_from_this(), timer, call, kind](const error_code&) {
      auto self = weak.lock();
      if (!self) return;
      // The token is looked up by its SHA-256: no comparison of secrets that could leak timing.
      const std::string token_sha256 = sha256_hex(call->params.at("token"));
      auto pinged = std::make_shared<std::optional<v1::Monitor>>();
      self->coordinator_.store().transact(
          [token_sha256, kind, pinged](StoreTransaction& tx, error_code&) {
            auto stored = tx.monitor_by_token_sha256(token_sha256);
            if (!stored) return;
            auto& m = stored->monitor;
            const auto now = now_unix_ms();
            switch (kind) {
              case PingKind::success:
                m.set_last_ping_unix_ms(now);
                m.set_status("UP");
                break;
              case PingKind::fail:
                m.set_last_fail_unix_ms(now);
                m.set_status("DOWN");
                break;
              case PingKind::start: m.set_last_start_unix_ms(now); break;
            }
            tx.put_monitor(*stored);
            *pinged = m;
          },
          [weak, call, pinged](error_code ec) {
            auto api = weak.lock();
            if (ec)
              return call->fail(v1::API_ERROR_CODE_UNAVAILABLE, fmt::format("store unavailable: {}", ec.message()));
            if (!*pinged) {
              if (api) api->login_failed(call->request.peer_ip);
              return call->fail(v1::API_ERROR_CODE_NOT_FOUND, "no monitor has this ping token", "token",
                                "is not the token of a monitor");
            }
            if (api && api->options_.alerts.changed) api->options_.alerts.changed();
            call->ok(**pinged);
          });
    });
  };
  add("POST", "/api/v1/ping/{token}", k_public, nullptr, v1::Monitor::descriptor(),
      "Heartbeat: the monitor's job succeeded (no authentication: the token is the credential)",
      [ping](CallPtr call) { ping(std::move(call), PingKind::success); });
  add("POST", "/api/v1/ping/{token}/start", k_public, nullptr, v1::Monitor::descriptor(),
      "Heartbeat: the monitor's job started (its deadline stays)",
      [ping](CallPtr call) { ping(std::move(call), PingKind::start); });
  add("POST", "/api/v1/ping/{token}/fail", k_public, nullptr, v1::Monitor::descriptor(),
      "Heartbeat: the monitor's job failed (its MONITOR_DOWN alerts fire at once)",
      [ping](CallPtr call) { ping(std::move(call), PingKind::fail); });

  add("POST", "/api/v1/channels/{id}/test", k_operator, nullptr, v1::Delivery::descriptor(),
      "Send a TEST notification through a channel now; the answer is the recorded delivery with its attempt "
      "(state DELIVERED or FAILED, http_status, error)",
      [this](CallPtr call) {
        const std::string id = call->params.at("id");
        if (!options_.alerts.test_channel)
          return call->fail(v1::API_ERROR_CODE_UNAVAILABLE, "alert delivery does not run in this process");
        auto channel = std::make_shared<std::optional<v1::Channel>>();
        coordinator_.store().read(
            [id, channel](StoreTransaction& tx, error_code&) { *channel = tx.channel(id); },
            [weak = weak_from_this(), call, channel, id](error_code ec) {
              auto self = weak.lock();
              if (!self) return;
              if (ec)
                return call->fail(v1::API_ERROR_CODE_UNAVAILABLE, fmt::format("store unavailable: {}", ec.message()));
              if (!*channel)
                return call->fail(v1::API_ERROR_CODE_NOT_FOUND, fmt::format("no channel with id \"{}\"", id), "id",
                                  "no such channel");
              self->test_channel(call, std::move(**channel));
            });
      });
}

void AdminApi::test_channel(std::shared_ptr<ApiCall> call, v1::Channel channel) {
  const std::string& id = channel.id();
  options_.alerts.test_channel(channel, [weak = weak_from_this(), call, id](error_code ec, const v1::Delivery& sent) {
    auto self = weak.lock();
    if (ec) return call->fail(v1::API_ERROR_CODE_UNAVAILABLE, fmt::format("store unavailable: {}", ec.message()));
    const bool delivered = sent.state() == v1::DELIVERY_STATE_DELIVERED;
    if (self) {
      const std::string detail =
          delivered ? "delivered"
                    : (sent.attempts_size() > 0 ? sent.attempts(sent.attempts_size() - 1).error() : "not delivered");
      self->audit(*call, "channel.test", "channel", id, id, delivered, detail);
    }
    call->ok(sent);
  });
}

}  // namespace quartzflow::detail
