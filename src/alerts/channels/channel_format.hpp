// SPDX-License-Identifier: Apache-2.0
// Channel formatters: pure functions from a notification (or a run's record), a channel, its
// resolved secret and the time to the request that delivers it, and the reading of the
// receiver's answer. No I/O, no clock: the delivery worker sends what they return.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <quartzflow/error.hpp>
#include <quartzflow/v1/alerts.pb.h>
#include <quartzflow/v1/execution.pb.h>

namespace quartzflow::alerts {

/// An HTTP request to send (HTTP/1.1, one per connection).
struct HttpMessage {
  std::string method = "POST";
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

/// An e-mail to hand to an SMTP server.
struct EmailMessage {
  std::string mail_from;             ///< envelope sender: the bare address of `email.from`
  std::vector<std::string> rcpt_to;  ///< envelope recipients
  std::string data;                  ///< the complete RFC 5322 message, CRLF line ends
};

/// What a formatter returns: exactly one of the two is set.
struct OutgoingMessage {
  std::optional<HttpMessage> http;
  std::optional<EmailMessage> email;
};

/// Default PagerDuty Events API v2 endpoint (Channel.url empty).
inline constexpr std::string_view k_pagerduty_events_url = "https://events.pagerduty.com/v2/enqueue";

/// "zh" for a channel or notification language starting with "zh", else "en". The channel's
/// language overrides the notification's.
std::string message_language(const v1::Notification& notification, const v1::Channel& channel);

/**
 * Formats `notification` for `channel`. `secret` is the resolved `channel.secret` (empty when
 * none is set); `now_unix_ms` dates the signatures. Failures (a required setting missing) are
 * errc::invalid_argument naming the channel field.
 *
 *  - WEBHOOK: POST of the Notification in protobuf's JSON mapping (proto field names, default
 *    values printed); headers `X-QuartzFlow-Notification-Id`, `X-QuartzFlow-Timestamp` (unix
 *    seconds) and, with a secret, `X-QuartzFlow-Signature` (see quartzflow_signature).
 *  - SLACK: incoming-webhook JSON, `text` (the fallback) and `blocks` (header, sections).
 *  - DINGTALK: robot `markdown` message; with a secret, `timestamp` (ms) and `sign` query
 *    parameters: base64(HMAC-SHA256(key = secret, message = timestamp + "\n" + secret)),
 *    URL-encoded.
 *  - WECOM: group robot `markdown` message (content cut to 4096 bytes).
 *  - FEISHU: custom bot `interactive` card; with a secret, `timestamp` (s) and `sign` in the
 *    body: base64(HMAC-SHA256(key = timestamp + "\n" + secret, message = "")).
 *  - PAGERDUTY: Events API v2, `routing_key` = the secret, `event_action` resolve for RESOLVED
 *    notifications else trigger, `dedup_key` = `quartzflow/<rule id>` (the alert group, so the
 *    resolve closes what the triggers opened; a TEST uses its own key), payload summary,
 *    severity, source, component, group, class and custom_details.
 *  - EMAIL: a text/plain UTF-8 message (see format_email).
 */
Result<OutgoingMessage> format_notification(const v1::Notification& notification, const v1::Channel& channel,
                                            std::string_view secret, std::int64_t now_unix_ms);

/// A TEST notification for `channel` (`qfctl channel test`): no alerts, id
/// `test:<channel id>:<now>`, the channel's language, the console's base URL.
v1::Notification test_notification(const v1::Channel& channel, std::string_view console_url, std::int64_t now_unix_ms);

Result<OutgoingMessage> format_webhook(const v1::Notification& notification, const v1::Channel& channel,
                                       std::string_view secret, std::int64_t now_unix_ms);
Result<OutgoingMessage> format_slack(const v1::Notification& notification, const v1::Channel& channel);
Result<OutgoingMessage> format_dingtalk(const v1::Notification& notification, const v1::Channel& channel,
                                        std::string_view secret, std::int64_t now_unix_ms);
Result<OutgoingMessage> format_wecom(const v1::Notification& notification, const v1::Channel& channel);
Result<OutgoingMessage> format_feishu(const v1::Notification& notification, const v1::Channel& channel,
                                      std::string_view secret, std::int64_t now_unix_ms);
Result<OutgoingMessage> format_pagerduty(const v1::Notification& notification, const v1::Channel& channel,
                                         std::string_view routing_key, std::int64_t now_unix_ms);
/**
 * EMAIL: `From` = email.from, `To` = the recipients, `Subject` (RFC 2047 encoded words when
 * not plain ASCII), `Date`, `Message-ID` (derived from the notification id: a re-delivery
 * carries the same one), `X-QuartzFlow-Notification-Id`, MIME text/plain; charset=UTF-8 in
 * base64.
 */
Result<OutgoingMessage> format_email(const v1::Notification& notification, const v1::Channel& channel,
                                     std::int64_t now_unix_ms);

/**
 * A result callback: POST of `execution` in protobuf's JSON mapping to `callback.url`, with
 * `X-QuartzFlow-Execution-Id` (the receiver's idempotency key), `X-QuartzFlow-Delivery-Id`,
 * `X-QuartzFlow-Timestamp` and, with a secret, `X-QuartzFlow-Signature` as for webhooks.
 */
Result<OutgoingMessage> format_callback(const v1::Execution& execution, const v1::ResultCallback& callback,
                                        std::string_view delivery_id, std::string_view secret,
                                        std::int64_t now_unix_ms);

/// How a receiver answered.
enum class Verdict {
  delivered,  ///< acknowledged
  retry,      ///< try again later (transport error, timeout, 5xx, 408, 429, a vendor's rate limit)
  give_up,    ///< a permanent refusal (other 4xx and 3xx, a vendor error code)
};

struct ResponseReading {
  Verdict verdict = Verdict::retry;
  std::string error;  ///< empty when delivered
};

/**
 * Reads an HTTP answer: 2xx is delivered, except that DingTalk, WeCom and Feishu answer 200
 * with an error code in a JSON body (`errcode`, `code` or `StatusCode` other than 0): those
 * give up, but for the vendors' rate limits (DingTalk 130101, WeCom 45009, Feishu 11232),
 * which retry. 408, 429 and 5xx retry; other statuses give up.
 */
ResponseReading read_http_response(v1::ChannelType type, unsigned status, std::string_view body);

}  // namespace quartzflow::alerts
