// SPDX-License-Identifier: Apache-2.0
// What every chat and e-mail channel says about a notification, in English or Chinese, as
// plain parts (title, fields, output, links) that each format lays out its own way; and the
// small JSON and text helpers the formatters share.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <google/protobuf/struct.pb.h>

#include <quartzflow/error.hpp>
#include <quartzflow/v1/alerts.pb.h>

namespace quartzflow::alerts {

/// One alert of a notification, in words.
struct ItemText {
  std::string heading;                                      ///< the subject and its state
  std::vector<std::pair<std::string, std::string>> fields;  ///< label, value (non-empty only)
  std::string output_head;                                  ///< the run's first lines, as they are
  std::string console_url;
};

/// A notification in words, in one language.
struct MessageText {
  std::string language;  ///< "en" or "zh"
  std::string title;     ///< one line: kind, rule, what
  std::string intro;     ///< severity and rule description, or what a test is
  std::vector<ItemText> items;
  std::string more;           ///< "... and N more firing alerts", or empty
  std::string output_label;   ///< "First lines of output"
  std::string console_label;  ///< "Open in console"
  std::string console_url;    ///< the console's base URL
  /// "... and N more alerts (see the console)" for `n` items a channel leaves out.
  std::string omitted(std::size_t n) const;
};

/// The words of `notification` in `language` ("en" or "zh"), for `channel_id` (named by tests).
MessageText compose_text(const v1::Notification& notification, std::string_view language, std::string_view channel_id);

/// Plain text of the whole message (title, intro, items with fields, output and links), the
/// e-mail body and the chat channels' fallback.
std::string plain_text(const MessageText& text);

/// `text` cut to at most `max_bytes` bytes without splitting a UTF-8 sequence; `suffix`
/// (counted in the budget) marks a cut.
std::string truncate_utf8(std::string_view text, std::size_t max_bytes, std::string_view suffix = "…");

/// "850 ms", "12.3 s", "2m 05s" / "850 毫秒", "12.3 秒", "2 分 5 秒".
std::string format_duration(std::int64_t duration_ms, std::string_view language);

/// RFC 3339 UTC with milliseconds ("2026-12-05T09:28:06.123Z").
std::string format_utc_ms(std::int64_t unix_ms);

/// The severity's word: critical, warning, info / 严重, 警告, 提示 (UNSPECIFIED: warning).
std::string severity_word(v1::AlertSeverity severity, std::string_view language);

/// A JSON value builder over google.protobuf.Struct, printed through protobuf's JSON mapping.
google::protobuf::Value json_string(std::string_view text);
google::protobuf::Value json_number(double number);
google::protobuf::Value json_bool(bool value);
google::protobuf::Value json_object(google::protobuf::Struct object);
google::protobuf::Value json_list(std::vector<google::protobuf::Value> values);
/// Sets `object[key] = value` and returns `object`'s field for chaining.
void json_set(google::protobuf::Struct& object, const std::string& key, google::protobuf::Value value);
std::string print_json(const google::protobuf::Message& message);
/// A Message in protobuf's JSON mapping as the admin API prints it (proto field names, default
/// values printed).
std::string print_message_json(const google::protobuf::Message& message);

/// Checks that `url` is an absolute http:// or https:// URL without white space; the error
/// names `field` and never repeats the URL (it may carry a token).
Result<std::string> require_http_url(std::string_view url, std::string_view field);

/// An invalid_argument Result naming `field` and `reason`.
template <typename T>
Result<T> invalid(std::string field, std::string reason) {
  Result<T> result;
  result.ec = make_error_code(errc::invalid_argument);
  result.error.field = std::move(field);
  result.error.reason = std::move(reason);
  return result;
}

}  // namespace quartzflow::alerts
