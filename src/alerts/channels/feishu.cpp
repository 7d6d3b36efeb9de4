// SPDX-License-Identifier: Apache-2.0
// Feishu / Lark custom bot: an `interactive` card; signed with `timestamp` (s) and `sign` in
// the body when the channel has a secret.
#include "channel_format.hpp"
#include "message_text.hpp"
#include "signing.hpp"

#include <fmt/format.h>

namespace quartzflow::alerts {

namespace {

namespace pb = google::protobuf;

constexpr std::size_t k_max_items = 10;
constexpr std::size_t k_max_output_bytes = 2048;

/// lark_md reads `<at id=all></at>` as a mention: text from runs is escaped.
std::string escape(std::string_view text) {
  std::string out;
  for (const char c : text) {
    if (c == '&') out += "&amp;";
    else if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else out += c;
  }
  return out;
}

pb::Value text_element(std::string_view tag, std::string content) {
  pb::Struct text;
  json_set(text, "tag", json_string(tag));
  json_set(text, "content", json_string(content));
  return json_object(std::move(text));
}

pb::Value div(std::string_view tag, std::string content) {
  pb::Struct element;
  json_set(element, "tag", json_string("div"));
  json_set(element, "text", text_element(tag, std::move(content)));
  return json_object(std::move(element));
}

pb::Value simple(std::string_view tag) {
  pb::Struct element;
  json_set(element, "tag", json_string(tag));
  return json_object(std::move(element));
}

pb::Value link_button(std::string label, std::string url) {
  pb::Struct button;
  json_set(button, "tag", json_string("button"));
  json_set(button, "text", text_element("plain_text", std::move(label)));
  json_set(button, "type", json_string("default"));
  json_set(button, "url", json_string(url));
  pb::Struct action;
  json_set(action, "tag", json_string("action"));
  json_set(action, "actions", json_list({json_object(std::move(button))}));
  return json_object(std::move(action));
}

std::string header_colour(const v1::Notification& notification) {
  if (notification.kind() == v1::NOTIFICATION_KIND_RESOLVED) return "green";
  if (notification.kind() == v1::NOTIFICATION_KIND_TEST) return "blue";
  if (notification.severity() == v1::ALERT_SEVERITY_CRITICAL) return "red";
  if (notification.severity() == v1::ALERT_SEVERITY_INFO) return "blue";
  return "orange";
}

}  // namespace

Result<OutgoingMessage> format_feishu(const v1::Notification& notification, const v1::Channel& channel,
                                      std::string_view secret, std::int64_t now_unix_ms) {
  auto url = require_http_url(channel.url(), "channel.url");
  if (!url) return invalid<OutgoingMessage>(url.error.field, url.error.reason);
  const auto text = compose_text(notification, message_language(notification, channel), channel.id());
  const bool zh = text.language == "zh";

  std::vector<pb::Value> elements;
  elements.push_back(div("lark_md", escape(text.intro)));
  const std::size_t shown = std::min(text.items.size(), k_max_items);
  for (std::size_t i = 0; i < shown; ++i) {
    const auto& item = text.items[i];
    elements.push_back(simple("hr"));
    std::string fields = "**" + escape(item.heading) + "**\n";
    for (const auto& [label, value] : item.fields)
      fields += fmt::format("**{}**{}{}\n", escape(label), zh ? "：" : ": ", escape(value));
    elements.push_back(div("lark_md", std::move(fields)));
    if (!item.output_head.empty()) {
      // plain_text: the output is shown as it is, never read as markup.
      elements.push_back(div("plain_text", text.output_label + (zh ? "：\n" : ":\n") +
                                               truncate_utf8(item.output_head, k_max_output_bytes)));
    }
    if (!item.console_url.empty()) elements.push_back(link_button(text.console_label, item.console_url));
  }
  std::string note;
  if (text.items.size() > shown) note += text.omitted(text.items.size() - shown) + "\n";
  if (!text.more.empty()) note += text.more + "\n";
  if (!note.empty()) {
    pb::Struct element;
    json_set(element, "tag", json_string("note"));
    json_set(element, "elements", json_list({text_element("plain_text", note)}));
    elements.push_back(json_object(std::move(element)));
  }

  pb::Struct title;
  json_set(title, "tag", json_string("plain_text"));
  json_set(title, "content", json_string(truncate_utf8(text.title, 300)));
  pb::Struct header;
  json_set(header, "title", json_object(std::move(title)));
  json_set(header, "template", json_string(header_colour(notification)));
  pb::Struct config;
  json_set(config, "wide_screen_mode", json_bool(true));
  pb::Struct card;
  json_set(card, "config", json_object(std::move(config)));
  json_set(card, "header", json_object(std::move(header)));
  json_set(card, "elements", json_list(std::move(elements)));
  pb::Struct body;
  if (!secret.empty()) {
    // Feishu: sign = base64(HmacSHA256(key = timestamp + "\n" + secret, message = "")).
    const std::string timestamp = std::to_string(now_unix_ms / 1000);
    json_set(body, "timestamp", json_string(timestamp));
    json_set(body, "sign", json_string(base64_encode(hmac_sha256(timestamp + "\n" + std::string(secret), ""))));
  }
  json_set(body, "msg_type", json_string("interactive"));
  json_set(body, "card", json_object(std::move(card)));

  HttpMessage message;
  message.url = std::move(url.value);
  message.headers.emplace_back("Content-Type", "application/json; charset=utf-8");
  message.body = print_json(body);
  Result<OutgoingMessage> result;
  result.value.http = std::move(message);
  return result;
}

}  // namespace quartzflow::alerts
