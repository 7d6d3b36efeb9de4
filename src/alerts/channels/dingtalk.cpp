// SPDX-License-Identifier: Apache-2.0
// DingTalk custom robot: a `markdown` message; signed ("加签") with `timestamp` (ms) and
// `sign` query parameters when the channel has a secret.
#include "channel_format.hpp"
#include "message_text.hpp"
#include "signing.hpp"

#include <fmt/format.h>

namespace quartzflow::alerts {

namespace {

namespace pb = google::protobuf;

constexpr std::size_t k_max_items = 10;
constexpr std::size_t k_max_text_bytes = 12000;

/// DingTalk's markdown keeps a single newline inside a paragraph: blank lines separate.
std::string markdown(const MessageText& text) {
  const bool zh = text.language == "zh";
  std::string out = "### " + text.title + "\n\n" + text.intro + "\n\n";
  const std::size_t shown = std::min(text.items.size(), k_max_items);
  for (std::size_t i = 0; i < shown; ++i) {
    const auto& item = text.items[i];
    out += "#### " + item.heading + "\n\n";
    for (const auto& [label, value] : item.fields) out += fmt::format("- **{}**{}{}\n", label, zh ? "：" : ": ", value);
    out += "\n";
    if (!item.output_head.empty()) {
      out += fmt::format("**{}**\n\n", text.output_label);
      std::size_t start = 0;
      while (start < item.output_head.size()) {
        const auto end = item.output_head.find('\n', start);
        out +=
            "> " + item.output_head.substr(start, end == std::string::npos ? std::string::npos : end - start) + "\n\n";
        if (end == std::string::npos) break;
        start = end + 1;
      }
    }
    if (!item.console_url.empty()) out += fmt::format("[{}]({})\n\n", text.console_label, item.console_url);
  }
  if (text.items.size() > shown) out += text.omitted(text.items.size() - shown) + "\n\n";
  if (!text.more.empty()) out += text.more + "\n\n";
  return truncate_utf8(out, k_max_text_bytes);
}

}  // namespace

Result<OutgoingMessage> format_dingtalk(const v1::Notification& notification, const v1::Channel& channel,
                                        std::string_view secret, std::int64_t now_unix_ms) {
  auto url = require_http_url(channel.url(), "channel.url");
  if (!url) return invalid<OutgoingMessage>(url.error.field, url.error.reason);
  const auto text = compose_text(notification, message_language(notification, channel), channel.id());
  pb::Struct content;
  json_set(content, "title", json_string(truncate_utf8(text.title, 200)));
  json_set(content, "text", json_string(markdown(text)));
  pb::Struct body;
  json_set(body, "msgtype", json_string("markdown"));
  json_set(body, "markdown", json_object(std::move(content)));

  HttpMessage message;
  message.url = std::move(url.value);
  if (!secret.empty()) {
    // DingTalk: sign = urlEncode(base64(HmacSHA256(key = secret, timestamp + "\n" + secret))).
    const std::string timestamp = std::to_string(now_unix_ms);
    const std::string sign = base64_encode(hmac_sha256(secret, timestamp + "\n" + std::string(secret)));
    message.url += message.url.find('?') == std::string::npos ? '?' : '&';
    message.url += "timestamp=" + timestamp + "&sign=" + url_encode(sign);
  }
  message.headers.emplace_back("Content-Type", "application/json; charset=utf-8");
  message.body = print_json(body);
  Result<OutgoingMessage> result;
  result.value.http = std::move(message);
  return result;
}

}  // namespace quartzflow::alerts
