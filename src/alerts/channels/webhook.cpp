// SPDX-License-Identifier: Apache-2.0
// Generic webhook (the Notification as JSON) and result callbacks (the Execution as JSON),
// both signed with quartzflow_signature.
#include "channel_format.hpp"
#include "message_text.hpp"
#include "signing.hpp"

namespace quartzflow::alerts {

namespace {

HttpMessage signed_json_post(std::string url, std::string body, std::string_view secret, std::int64_t now_unix_ms) {
  HttpMessage message;
  message.url = std::move(url);
  message.body = std::move(body);
  const std::int64_t timestamp = now_unix_ms / 1000;
  message.headers.emplace_back("Content-Type", "application/json; charset=utf-8");
  message.headers.emplace_back("X-QuartzFlow-Timestamp", std::to_string(timestamp));
  if (!secret.empty())
    message.headers.emplace_back("X-QuartzFlow-Signature", quartzflow_signature(secret, timestamp, message.body));
  return message;
}

}  // namespace

Result<OutgoingMessage> format_webhook(const v1::Notification& notification, const v1::Channel& channel,
                                       std::string_view secret, std::int64_t now_unix_ms) {
  auto url = require_http_url(channel.url(), "channel.url");
  if (!url) return invalid<OutgoingMessage>(url.error.field, url.error.reason);
  Result<OutgoingMessage> result;
  auto message = signed_json_post(std::move(url.value), print_message_json(notification), secret, now_unix_ms);
  message.headers.emplace_back("X-QuartzFlow-Notification-Id", notification.id());
  result.value.http = std::move(message);
  return result;
}

Result<OutgoingMessage> format_callback(const v1::Execution& execution, const v1::ResultCallback& callback,
                                        std::string_view delivery_id, std::string_view secret,
                                        std::int64_t now_unix_ms) {
  auto url = require_http_url(callback.url(), "callbacks.url");
  if (!url) return invalid<OutgoingMessage>(url.error.field, url.error.reason);
  Result<OutgoingMessage> result;
  auto message = signed_json_post(std::move(url.value), print_message_json(execution), secret, now_unix_ms);
  message.headers.emplace_back("X-QuartzFlow-Execution-Id", execution.execution_id());
  message.headers.emplace_back("X-QuartzFlow-Delivery-Id", std::string(delivery_id));
  result.value.http = std::move(message);
  return result;
}

}  // namespace quartzflow::alerts
