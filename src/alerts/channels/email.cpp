// SPDX-License-Identifier: Apache-2.0
// E-mail: a complete RFC 5322 message, text/plain in UTF-8 (RFC 2045 base64 body), the
// subject in RFC 2047 encoded words when it is not plain ASCII.
#include "channel_format.hpp"
#include "message_text.hpp"
#include "signing.hpp"

#include <algorithm>
#include <ctime>

#include <fmt/format.h>

namespace quartzflow::alerts {

namespace {

bool has_line_break(std::string_view text) { return text.find_first_of("\r\n") != std::string_view::npos; }

bool plain_ascii(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u >= 0x20 && u < 0x7F;
  });
}

/// The address of `Name <addr>` or of a bare address.
std::string bare_address(std::string_view text) {
  const auto open = text.rfind('<');
  const auto close = text.rfind('>');
  if (open != std::string_view::npos && close != std::string_view::npos && close > open)
    return std::string(text.substr(open + 1, close - open - 1));
  const auto first = text.find_first_not_of(' ');
  const auto last = text.find_last_not_of(' ');
  return first == std::string_view::npos ? std::string{} : std::string(text.substr(first, last - first + 1));
}

bool plausible_address(std::string_view address) {
  const auto at = address.find('@');
  return at != std::string_view::npos && at > 0 && at + 1 < address.size() && plain_ascii(address) &&
         address.find_first_of(" <>,;\"") == std::string_view::npos;
}

/**
 * RFC 2047 encoded words (`=?UTF-8?B?...?=`, 60 characters for 36 bytes of text, so that the
 * first line with `Subject: ` stays within 78),
 * split between UTF-8 sequences and folded onto continuation lines; plain ASCII stays as it is.
 */
std::string encode_header_text(std::string_view text) {
  // Short ASCII stays readable; anything longer is folded as encoded words (78-column lines).
  if (plain_ascii(text) && text.size() <= 60) return std::string(text);
  std::string out;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = std::min(text.size(), start + 36);
    while (end < text.size() && end > start && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
    if (!out.empty()) out += "\r\n ";
    out += "=?UTF-8?B?" + base64_encode(text.substr(start, end - start)) + "?=";
    start = end;
  }
  return out;
}

/// RFC 5322 3.3 date-time in UTC, independent of the locale.
std::string rfc5322_date(std::int64_t unix_ms) {
  static constexpr const char* k_days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* k_months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                             "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  const std::time_t seconds = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  return fmt::format("{}, {:02} {} {:04} {:02}:{:02}:{:02} +0000", k_days[tm.tm_wday], tm.tm_mday, k_months[tm.tm_mon],
                     tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/// Base64 in lines of 76 characters (RFC 2045 6.8).
std::string base64_lines(std::string_view bytes) {
  const std::string encoded = base64_encode(bytes);
  std::string out;
  for (std::size_t i = 0; i < encoded.size(); i += 76) out += encoded.substr(i, 76) + "\r\n";
  return out;
}

}  // namespace

Result<OutgoingMessage> format_email(const v1::Notification& notification, const v1::Channel& channel,
                                     std::int64_t now_unix_ms) {
  const auto& settings = channel.email();
  if (settings.smtp_host().empty()) return invalid<OutgoingMessage>("channel.email.smtp_host", "is required");
  if (settings.from().empty()) return invalid<OutgoingMessage>("channel.email.from", "is required");
  if (has_line_break(settings.from()) || !plain_ascii(settings.from()) ||
      !plausible_address(bare_address(settings.from())))
    return invalid<OutgoingMessage>("channel.email.from", "is not an e-mail address");
  if (settings.to().empty()) return invalid<OutgoingMessage>("channel.email.to", "needs at least one recipient");
  EmailMessage email;
  email.mail_from = bare_address(settings.from());
  for (int i = 0; i < settings.to_size(); ++i) {
    const std::string address = bare_address(settings.to(i));
    if (has_line_break(settings.to(i)) || !plausible_address(address))
      return invalid<OutgoingMessage>(fmt::format("channel.email.to[{}]", i), "is not an e-mail address");
    email.rcpt_to.push_back(address);
  }
  const auto text = compose_text(notification, message_language(notification, channel), channel.id());
  // One address per folded line once they no longer fit on one (RFC 5322 2.2.3).
  std::string recipients;
  std::size_t line = 4;  // "To: "
  for (const auto& address : email.rcpt_to) {
    if (!recipients.empty()) {
      recipients += ',';
      ++line;
      if (line + 1 + address.size() > 78) {
        recipients += "\r\n";
        line = 0;
      }
      recipients += ' ';
      ++line;
    }
    recipients += address;
    line += address.size();
  }
  std::string& data = email.data;
  data += "From: " + settings.from() + "\r\n";
  data += "To: " + recipients + "\r\n";
  data += "Subject: " + encode_header_text(truncate_utf8(text.title, 400)) + "\r\n";
  data += "Date: " + rfc5322_date(now_unix_ms) + "\r\n";
  // The same notification keeps its Message-ID: a mail client shows a re-delivery once.
  data += "Message-ID: <" + hex_encode(hmac_sha256("quartzflow message id", notification.id())).substr(0, 32) +
          "@quartzflow.invalid>\r\n";
  data += "X-QuartzFlow-Notification-Id: " + encode_header_text(notification.id()) + "\r\n";
  data += "MIME-Version: 1.0\r\n";
  data += "Content-Type: text/plain; charset=UTF-8\r\n";
  data += "Content-Transfer-Encoding: base64\r\n";
  data += "\r\n";
  data += base64_lines(plain_text(text));
  Result<OutgoingMessage> result;
  result.value.email = std::move(email);
  return result;
}

}  // namespace quartzflow::alerts
