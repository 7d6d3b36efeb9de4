// SPDX-License-Identifier: Apache-2.0
// The formatter for each channel type, and how the receivers' answers read.
#include "channel_format.hpp"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <fmt/format.h>

#include "message_text.hpp"

namespace quartzflow::alerts {

std::string message_language(const v1::Notification& notification, const v1::Channel& channel) {
  const std::string& chosen = channel.language().empty() ? notification.language() : channel.language();
  return chosen.starts_with("zh") ? "zh" : "en";
}

v1::Notification test_notification(const v1::Channel& channel, std::string_view console_url, std::int64_t now_unix_ms) {
  v1::Notification notification;
  notification.set_id(fmt::format("test:{}:{}", channel.id(), now_unix_ms));
  notification.set_kind(v1::NOTIFICATION_KIND_TEST);
  notification.set_severity(v1::ALERT_SEVERITY_INFO);
  notification.set_created_unix_ms(now_unix_ms);
  notification.set_console_url(std::string(console_url));
  notification.set_language(channel.language().starts_with("zh") ? "zh" : "en");
  return notification;
}

Result<OutgoingMessage> format_notification(const v1::Notification& notification, const v1::Channel& channel,
                                            std::string_view secret, std::int64_t now_unix_ms) {
  switch (channel.type()) {
    case v1::CHANNEL_TYPE_WEBHOOK: return format_webhook(notification, channel, secret, now_unix_ms);
    case v1::CHANNEL_TYPE_EMAIL: return format_email(notification, channel, now_unix_ms);
    case v1::CHANNEL_TYPE_SLACK: return format_slack(notification, channel);
    case v1::CHANNEL_TYPE_DINGTALK: return format_dingtalk(notification, channel, secret, now_unix_ms);
    case v1::CHANNEL_TYPE_WECOM: return format_wecom(notification, channel);
    case v1::CHANNEL_TYPE_FEISHU: return format_feishu(notification, channel, secret, now_unix_ms);
    case v1::CHANNEL_TYPE_PAGERDUTY: return format_pagerduty(notification, channel, secret, now_unix_ms);
    default: return invalid<OutgoingMessage>("channel.type", "is not a channel type this build can send");
  }
}

namespace {

/// The vendor's error code in a 200 answer: 0 when the body says success or is not JSON.
std::pair<long long, std::string> vendor_error(v1::ChannelType type, std::string_view body) {
  google::protobuf::Struct parsed;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;
  if (!google::protobuf::util::JsonStringToMessage(std::string(body), &parsed, options).ok()) return {0, {}};
  const auto& fields = parsed.fields();
  auto number = [&](const char* key) -> std::optional<long long> {
    const auto it = fields.find(key);
    if (it == fields.end() || !it->second.has_number_value()) return std::nullopt;
    return static_cast<long long>(it->second.number_value());
  };
  auto text = [&](const char* key) -> std::string {
    const auto it = fields.find(key);
    return it == fields.end() ? std::string{} : it->second.string_value();
  };
  if (type == v1::CHANNEL_TYPE_DINGTALK || type == v1::CHANNEL_TYPE_WECOM) {
    return {number("errcode").value_or(0), text("errmsg")};
  }
  // Feishu: {"code":0,"msg":"success"}; older answers {"StatusCode":0,"StatusMessage":"success"}.
  if (auto code = number("code")) return {*code, text("msg")};
  return {number("StatusCode").value_or(0), text("StatusMessage")};
}

}  // namespace

ResponseReading read_http_response(v1::ChannelType type, unsigned status, std::string_view body) {
  ResponseReading reading;
  if (status >= 200 && status < 300) {
    if (type == v1::CHANNEL_TYPE_DINGTALK || type == v1::CHANNEL_TYPE_WECOM || type == v1::CHANNEL_TYPE_FEISHU) {
      const auto [code, message] = vendor_error(type, body);
      if (code != 0) {
        const bool rate_limited = (type == v1::CHANNEL_TYPE_DINGTALK && code == 130101) ||
                                  (type == v1::CHANNEL_TYPE_WECOM && code == 45009) ||
                                  (type == v1::CHANNEL_TYPE_FEISHU && code == 11232);
        reading.verdict = rate_limited ? Verdict::retry : Verdict::give_up;
        reading.error = fmt::format("HTTP {} with error code {}: {}", status, code, truncate_utf8(message, 200));
        return reading;
      }
    }
    reading.verdict = Verdict::delivered;
    return reading;
  }
  reading.verdict = (status == 408 || status == 429 || status >= 500) ? Verdict::retry : Verdict::give_up;
  reading.error = fmt::format("HTTP {}", status);
  return reading;
}

}  // namespace quartzflow::alerts
