// SPDX-License-Identifier: Apache-2.0
// Slack incoming webhook: `text` (the notification's fallback) and Block Kit `blocks`.
// Limits (Slack's): a header 150 characters, a section 3000, 50 blocks per message.
#include "channel_format.hpp"
#include "message_text.hpp"

#include <fmt/format.h>

namespace quartzflow::alerts {

namespace {

namespace pb = google::protobuf;

constexpr std::size_t k_max_items = 10;
constexpr std::size_t k_section_bytes = 2900;

/// Slack's mrkdwn reads `&`, `<` and `>` as markup (`<!channel>` pings everyone).
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

pb::Value text_object(std::string_view type, std::string text) {
  pb::Struct object;
  json_set(object, "type", json_string(type));
  json_set(object, "text", json_string(text));
  return json_object(std::move(object));
}

pb::Value block(std::string_view type, pb::Value text) {
  pb::Struct object;
  json_set(object, "type", json_string(type));
  json_set(object, "text", std::move(text));
  return json_object(std::move(object));
}

pb::Value context_block(std::string text) {
  pb::Struct object;
  json_set(object, "type", json_string("context"));
  json_set(object, "elements", json_list({text_object("mrkdwn", std::move(text))}));
  return json_object(std::move(object));
}

}  // namespace

Result<OutgoingMessage> format_slack(const v1::Notification& notification, const v1::Channel& channel) {
  auto url = require_http_url(channel.url(), "channel.url");
  if (!url) return invalid<OutgoingMessage>(url.error.field, url.error.reason);
  const auto text = compose_text(notification, message_language(notification, channel), channel.id());
  std::vector<pb::Value> blocks;
  blocks.push_back(block("header", text_object("plain_text", truncate_utf8(text.title, 150))));
  blocks.push_back(block("section", text_object("mrkdwn", truncate_utf8(escape(text.intro), k_section_bytes))));
  const std::size_t shown = std::min(text.items.size(), k_max_items);
  for (std::size_t i = 0; i < shown; ++i) {
    const auto& item = text.items[i];
    std::string section = "*" + escape(item.heading) + "*\n";
    for (const auto& [label, value] : item.fields) section += fmt::format("*{}:* {}\n", escape(label), escape(value));
    if (!item.console_url.empty()) section += fmt::format("<{}|{}>\n", item.console_url, escape(text.console_label));
    if (!item.output_head.empty()) {
      // The fence goes last so that a cut output still leaves the fields and the link.
      const std::size_t room = k_section_bytes > section.size() + 8 ? k_section_bytes - section.size() - 8 : 0;
      section += "```" + truncate_utf8(escape(item.output_head), room) + "```";
    }
    blocks.push_back(block("section", text_object("mrkdwn", truncate_utf8(section, k_section_bytes))));
  }
  std::string footer;
  if (text.items.size() > shown) footer += escape(text.omitted(text.items.size() - shown)) + "\n";
  if (!text.more.empty()) footer += escape(text.more) + "\n";
  if (!text.console_url.empty()) footer += fmt::format("<{}|QuartzFlow>", text.console_url);
  if (!footer.empty()) blocks.push_back(context_block(std::move(footer)));

  pb::Struct body;
  json_set(body, "text", json_string(truncate_utf8(text.title, 3000)));
  json_set(body, "blocks", json_list(std::move(blocks)));
  Result<OutgoingMessage> result;
  HttpMessage message;
  message.url = std::move(url.value);
  message.headers.emplace_back("Content-Type", "application/json; charset=utf-8");
  message.body = print_json(body);
  result.value.http = std::move(message);
  return result;
}

}  // namespace quartzflow::alerts
