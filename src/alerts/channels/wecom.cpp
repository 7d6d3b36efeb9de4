// SPDX-License-Identifier: Apache-2.0
// WeCom (WeChat Work) group robot: a `markdown` message, at most 4096 bytes of UTF-8.
#include "channel_format.hpp"
#include "message_text.hpp"

#include <fmt/format.h>

namespace quartzflow::alerts {

namespace {

namespace pb = google::protobuf;

constexpr std::size_t k_max_items = 10;
constexpr std::size_t k_max_content_bytes = 4096;

/// `<@userid>` mentions someone in WeCom markdown: text from runs must not.
std::string defuse(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    out += text[i];
    if (text[i] == '<' && i + 1 < text.size() && text[i + 1] == '@') out += ' ';
  }
  return out;
}

std::string markdown(const MessageText& text, v1::NotificationKind kind) {
  const bool zh = text.language == "zh";
  // WeCom colours: info green, warning orange-red, comment grey.
  const char* colour = kind == v1::NOTIFICATION_KIND_RESOLVED ? "info"
                       : kind == v1::NOTIFICATION_KIND_TEST   ? "comment"
                                                              : "warning";
  std::string out =
      fmt::format("## <font color=\"{}\">{}</font>\n{}\n", colour, defuse(text.title), defuse(text.intro));
  const std::size_t shown = std::min(text.items.size(), k_max_items);
  for (std::size_t i = 0; i < shown; ++i) {
    const auto& item = text.items[i];
    out += "\n**" + defuse(item.heading) + "**\n";
    for (const auto& [label, value] : item.fields)
      out += fmt::format("> {}{}<font color=\"comment\">{}</font>\n", label, zh ? "：" : ": ", defuse(value));
    if (!item.output_head.empty()) {
      out += fmt::format("> {}{}\n", text.output_label, zh ? "：" : ":");
      std::size_t start = 0;
      while (start < item.output_head.size()) {
        const auto end = item.output_head.find('\n', start);
        out += "> `" +
               defuse(item.output_head.substr(start, end == std::string::npos ? std::string::npos : end - start)) +
               "`\n";
        if (end == std::string::npos) break;
        start = end + 1;
      }
    }
    if (!item.console_url.empty()) out += fmt::format("[{}]({})\n", text.console_label, item.console_url);
  }
  if (text.items.size() > shown) out += "\n" + text.omitted(text.items.size() - shown) + "\n";
  if (!text.more.empty()) out += "\n" + text.more + "\n";
  return truncate_utf8(out, k_max_content_bytes);
}

}  // namespace

Result<OutgoingMessage> format_wecom(const v1::Notification& notification, const v1::Channel& channel) {
  auto url = require_http_url(channel.url(), "channel.url");
  if (!url) return invalid<OutgoingMessage>(url.error.field, url.error.reason);
  const auto text = compose_text(notification, message_language(notification, channel), channel.id());
  pb::Struct content;
  json_set(content, "content", json_string(markdown(text, notification.kind())));
  pb::Struct body;
  json_set(body, "msgtype", json_string("markdown"));
  json_set(body, "markdown", json_object(std::move(content)));
  HttpMessage message;
  message.url = std::move(url.value);
  message.headers.emplace_back("Content-Type", "application/json; charset=utf-8");
  message.body = print_json(body);
  Result<OutgoingMessage> result;
  result.value.http = std::move(message);
  return result;
}

}  // namespace quartzflow::alerts
