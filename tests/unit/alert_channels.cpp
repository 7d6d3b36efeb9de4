// SPDX-License-Identifier: Apache-2.0
// Channel formatters (src/alerts/channels): exact signatures against values computed apart
// (RFC 4231, Python's hmac), the vendors' body shapes, both languages, e-mail encoding, and
// how receivers' answers read.
#include <string>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <catch2/catch.hpp>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>

#include "alerts/channels/channel_format.hpp"
#include "alerts/channels/message_text.hpp"
#include "alerts/channels/signing.hpp"

namespace qa = quartzflow::alerts;
namespace v1 = quartzflow::v1;
namespace pb = google::protobuf;

namespace {

constexpr std::int64_t k_now_ms = 1'700'000'000'123;

v1::Notification sample_notification(v1::NotificationKind kind = v1::NOTIFICATION_KIND_FIRING) {
  v1::Notification n;
  n.set_id("rule-backup:1700000000000:1");
  n.set_kind(kind);
  n.set_rule_id("rule-backup");
  n.set_rule_description("Nightly backups must not fail");
  n.set_severity(v1::ALERT_SEVERITY_CRITICAL);
  n.set_created_unix_ms(k_now_ms);
  n.set_console_url("https://qf.example.com/");
  auto* item = n.add_items();
  auto* alert = item->mutable_alert();
  alert->set_id("rule-backup:task:backup-db:1700000000000");
  alert->set_rule_id("rule-backup");
  alert->set_state(kind == v1::NOTIFICATION_KIND_RESOLVED ? v1::ALERT_STATE_RESOLVED : v1::ALERT_STATE_FIRING);
  alert->set_condition(v1::ALERT_CONDITION_RUN_FAILED);
  alert->set_task_id("backup-db");
  alert->set_summary("exit code 3");
  alert->set_execution_id("backup-db:1700000000000:db-host-1");
  alert->set_started_unix_ms(1'700'000'000'000);
  item->set_task_name("Database backup");
  item->set_agent_id("db-host-1");  // the run's agent: a task alert has no agent of its own
  item->set_status(v1::EXECUTION_STATUS_FAILURE);
  item->set_reason("exit code 3");
  item->set_duration_ms(83'000);
  item->set_output_head("pg_dump: error: connection refused\n<at id=all></at> & <!channel>");
  item->set_console_url("https://qf.example.com/runs/backup-db:1700000000000:db-host-1");
  return n;
}

v1::Channel channel(v1::ChannelType type, std::string url) {
  v1::Channel c;
  c.set_id("ops");
  c.set_type(type);
  c.set_url(std::move(url));
  return c;
}

pb::Struct parse_object(const std::string& json) {
  pb::Struct object;
  REQUIRE(pb::util::JsonStringToMessage(json, &object).ok());
  return object;
}

std::string header(const qa::HttpMessage& message, const std::string& name) {
  for (const auto& [n, v] : message.headers)
    if (n == name) return v;
  return {};
}

/// HMAC-SHA256 hex computed here with OpenSSL directly, apart from the code under test.
std::string independent_hmac_hex(const std::string& key, const std::string& data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(data.data()),
       data.size(), digest, &length);
  std::string hex;
  for (unsigned i = 0; i < length; ++i) {
    static const char* digits = "0123456789abcdef";
    hex += digits[digest[i] >> 4];
    hex += digits[digest[i] & 15];
  }
  return hex;
}

std::string base64_decode(const std::string& text) {
  std::string out(text.size(), '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  REQUIRE(n >= 0);
  // EVP_DecodeBlock counts the padding as zero bytes.
  const auto padding = text.size() - text.find_last_not_of('=') - 1;
  out.resize(static_cast<std::size_t>(n) - padding);
  return out;
}

}  // namespace

TEST_CASE("alert signing primitives match RFC 4231 and values computed with Python", "[alerts]") {
  // RFC 4231 test case 2.
  CHECK(qa::hex_encode(qa::hmac_sha256("Jefe", "what do ya want for nothing?")) ==
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  CHECK(qa::base64_encode("") == "");
  CHECK(qa::base64_encode("f") == "Zg==");
  CHECK(qa::base64_encode("foobar") == "Zm9vYmFy");
  CHECK(qa::url_encode("a+b/c=d ~_.-") == "a%2Bb%2Fc%3Dd%20~_.-");
  // python: hmac.new(b"webhook-secret", b"1700000000." + b'{"a":1}', sha256).hexdigest()
  CHECK(qa::quartzflow_signature("webhook-secret", 1'700'000'000, R"({"a":1})") ==
        "sha256=2ff3101d20a9c9551ad8fbe65d513983f9ea07874c06dadf559d0c4e7f43181c");
}

TEST_CASE("a webhook carries the notification as JSON, signed over its timestamp and body", "[alerts]") {
  const auto n = sample_notification();
  auto result =
      qa::format_webhook(n, channel(v1::CHANNEL_TYPE_WEBHOOK, "https://hooks.example.com/qf"), "s3cret", k_now_ms);
  REQUIRE(result);
  const auto& http = *result.value.http;
  CHECK(http.method == "POST");
  CHECK(http.url == "https://hooks.example.com/qf");
  CHECK(header(http, "X-QuartzFlow-Notification-Id") == n.id());
  CHECK(header(http, "X-QuartzFlow-Timestamp") == "1700000000");
  CHECK(header(http, "X-QuartzFlow-Signature") ==
        "sha256=" + independent_hmac_hex("s3cret", "1700000000." + http.body));
  v1::Notification parsed;
  REQUIRE(pb::util::JsonStringToMessage(http.body, &parsed).ok());
  CHECK(pb::util::MessageDifferencer::Equals(parsed, n));
  // Proto field names, as the admin API prints them.
  CHECK(http.body.find("\"rule_id\":\"rule-backup\"") != std::string::npos);

  SECTION("no secret: no signature header") {
    auto unsigned_result = qa::format_webhook(n, channel(v1::CHANNEL_TYPE_WEBHOOK, "http://h/x"), "", k_now_ms);
    REQUIRE(unsigned_result);
    CHECK(header(*unsigned_result.value.http, "X-QuartzFlow-Signature").empty());
  }
  SECTION("a URL that is not http(s) is refused, naming the field and not repeating the URL") {
    auto bad = qa::format_webhook(n, channel(v1::CHANNEL_TYPE_WEBHOOK, "ftp://token@h/x"), "", k_now_ms);
    REQUIRE_FALSE(bad);
    CHECK(bad.error.field == "channel.url");
    CHECK(bad.message().find("token") == std::string::npos);
  }
}

TEST_CASE("a result callback posts the run's record with the execution id header, signed", "[alerts]") {
  v1::Execution execution;
  execution.set_execution_id("backup-db:1700000000000:db-host-1");
  execution.set_task_id("backup-db");
  execution.set_status(v1::EXECUTION_STATUS_SUCCESS);
  v1::ResultCallback callback;
  callback.set_url("https://erp.example.com/qf-callback");
  auto result = qa::format_callback(execution, callback, "cb-1", "k", k_now_ms);
  REQUIRE(result);
  const auto& http = *result.value.http;
  CHECK(header(http, "X-QuartzFlow-Execution-Id") == execution.execution_id());
  CHECK(header(http, "X-QuartzFlow-Delivery-Id") == "cb-1");
  CHECK(header(http, "X-QuartzFlow-Signature") == "sha256=" + independent_hmac_hex("k", "1700000000." + http.body));
  v1::Execution parsed;
  REQUIRE(pb::util::JsonStringToMessage(http.body, &parsed).ok());
  CHECK(pb::util::MessageDifferencer::Equals(parsed, execution));
}

TEST_CASE("a DingTalk message is markdown with DingTalk's timestamp and sign query parameters", "[alerts]") {
  auto n = sample_notification();
  auto result =
      qa::format_dingtalk(n, channel(v1::CHANNEL_TYPE_DINGTALK, "https://oapi.dingtalk.com/robot/send?access_token=T"),
                          "SECexample", 1'700'000'000'000);
  REQUIRE(result);
  const auto& http = *result.value.http;
  // python: quote_plus(b64encode(hmac.new(b"SECexample", b"1700000000000\nSECexample", sha256).digest()))
  CHECK(http.url ==
        "https://oapi.dingtalk.com/robot/send?access_token=T&timestamp=1700000000000"
        "&sign=uroalHrWHORz59talE1o26b8HuX2kOp8WlAN91F9Pj0%3D");
  const auto body = parse_object(http.body);
  CHECK(body.fields().at("msgtype").string_value() == "markdown");
  const auto& markdown = body.fields().at("markdown").struct_value().fields();
  CHECK(markdown.at("title").string_value().find("[Firing] rule-backup") == 0);
  const auto& text = markdown.at("text").string_value();
  CHECK(text.find("**Task**: Database backup (backup-db)") != std::string::npos);
  CHECK(text.find("**Agent**: db-host-1") != std::string::npos);
  CHECK(text.find("**Duration**: 1m 23s") != std::string::npos);
  CHECK(text.find("> pg_dump: error: connection refused") != std::string::npos);
  CHECK(text.find("(https://qf.example.com/runs/backup-db:1700000000000:db-host-1)") != std::string::npos);
}

TEST_CASE("a Feishu card carries Feishu's timestamp and sign in its body", "[alerts]") {
  auto result = qa::format_feishu(sample_notification(), channel(v1::CHANNEL_TYPE_FEISHU, "https://open.feishu.cn/x"),
                                  "feishu-secret", 1'700'000'000'999);
  REQUIRE(result);
  const auto body = parse_object(result.value.http->body);
  CHECK(body.fields().at("timestamp").string_value() == "1700000000");
  // python: b64encode(hmac.new(b"1700000000\nfeishu-secret", b"", sha256).digest())
  CHECK(body.fields().at("sign").string_value() == "OrBzY1Y01Gq+HgJsl+7OfWcMVwc7YocohQm5iiZwjhU=");
  CHECK(body.fields().at("msg_type").string_value() == "interactive");
  const auto& card = body.fields().at("card").struct_value().fields();
  CHECK(card.at("header").struct_value().fields().at("template").string_value() == "red");
  // The run's output goes in plain_text (shown as it is); lark_md text is escaped, so the
  // `<at id=all>` in the output mentions nobody.
  bool output_shown = false;
  for (const auto& element : card.at("elements").list_value().values()) {
    const auto& fields = element.struct_value().fields();
    if (!fields.contains("text")) continue;
    const auto& text = fields.at("text").struct_value().fields();
    const auto& content = text.at("content").string_value();
    if (text.at("tag").string_value() == "lark_md") CHECK(content.find("<at") == std::string::npos);
    if (text.at("tag").string_value() == "plain_text" && content.find("<at id=all></at>") != std::string::npos)
      output_shown = true;
  }
  CHECK(output_shown);
}

TEST_CASE("Slack gets text and blocks with mrkdwn escaped", "[alerts]") {
  auto result = qa::format_slack(sample_notification(),
                                 channel(v1::CHANNEL_TYPE_SLACK, "https://hooks.slack.com/services/T/B/X"));
  REQUIRE(result);
  const auto body = parse_object(result.value.http->body);
  CHECK(body.fields().at("text").string_value().find(
            "[Firing] rule-backup: Database backup (backup-db): exit code 3") == 0);
  const auto& blocks = body.fields().at("blocks").list_value().values();
  REQUIRE(blocks.size() >= 3);
  CHECK(blocks[0].struct_value().fields().at("type").string_value() == "header");
  const std::string item =
      blocks[2].struct_value().fields().at("text").struct_value().fields().at("text").string_value();
  CHECK(item.find("&lt;!channel&gt;") != std::string::npos);
  CHECK(item.find("<!channel>") == std::string::npos);
  CHECK(item.find("<https://qf.example.com/runs/backup-db:1700000000000:db-host-1|Open in console>") !=
        std::string::npos);
}

TEST_CASE("WeCom markdown stays within 4096 bytes of valid UTF-8 however long the output", "[alerts]") {
  auto n = sample_notification();
  n.set_language("zh");
  std::string output;
  for (int i = 0; i < 400; ++i) output += "第" + std::to_string(i) + "行：数据库连接失败\n";
  n.mutable_items(0)->set_output_head(output);
  auto result =
      qa::format_wecom(n, channel(v1::CHANNEL_TYPE_WECOM, "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=K"));
  REQUIRE(result);
  const auto body = parse_object(result.value.http->body);  // parses: valid UTF-8
  const auto& content = body.fields().at("markdown").struct_value().fields().at("content").string_value();
  CHECK(content.size() <= 4096);
  CHECK(content.find("【告警】rule-backup：") != std::string::npos);
  CHECK(content.find("任务：") != std::string::npos);
  CHECK(content.find("执行节点：") != std::string::npos);
}

TEST_CASE("PagerDuty events trigger and resolve one alert per rule", "[alerts]") {
  const auto pd = channel(v1::CHANNEL_TYPE_PAGERDUTY, "");
  auto trigger = qa::format_pagerduty(sample_notification(), pd, "routing-key-32", k_now_ms);
  REQUIRE(trigger);
  CHECK(trigger.value.http->url == "https://events.pagerduty.com/v2/enqueue");
  auto body = parse_object(trigger.value.http->body);
  CHECK(body.fields().at("routing_key").string_value() == "routing-key-32");
  CHECK(body.fields().at("event_action").string_value() == "trigger");
  CHECK(body.fields().at("dedup_key").string_value() == "quartzflow/rule-backup");
  const auto& payload = body.fields().at("payload").struct_value().fields();
  CHECK(payload.at("severity").string_value() == "critical");
  CHECK(payload.at("source").string_value() == "quartzflow/agent/db-host-1");
  CHECK(payload.at("summary").string_value().find("[Firing] rule-backup") == 0);
  CHECK(payload.at("class").string_value() == "run_failed");

  auto resolve =
      qa::format_pagerduty(sample_notification(v1::NOTIFICATION_KIND_RESOLVED), pd, "routing-key-32", k_now_ms);
  REQUIRE(resolve);
  body = parse_object(resolve.value.http->body);
  CHECK(body.fields().at("event_action").string_value() == "resolve");
  CHECK(body.fields().at("dedup_key").string_value() == "quartzflow/rule-backup");

  auto missing = qa::format_pagerduty(sample_notification(), pd, "", k_now_ms);
  REQUIRE_FALSE(missing);
  CHECK(missing.error.field == "channel.secret");
}

TEST_CASE("test notifications say they are tests, in English and in Chinese", "[alerts]") {
  auto n = sample_notification(v1::NOTIFICATION_KIND_TEST);
  n.clear_items();
  const auto en = qa::compose_text(n, "en", "ops");
  CHECK(en.title == "[Test] QuartzFlow test notification (channel ops)");
  CHECK(en.intro.find("no alert is firing") != std::string::npos);
  const auto zh = qa::compose_text(n, "zh", "ops");
  CHECK(zh.title == "【测试】QuartzFlow 测试通知（通道 ops）");
  CHECK(zh.intro.find("测试通知") != std::string::npos);
  auto c = channel(v1::CHANNEL_TYPE_SLACK, "https://h/x");
  c.set_language("zh-CN");
  CHECK(qa::message_language(n, c) == "zh");
}

TEST_CASE("an e-mail is a complete RFC 5322 message with an RFC 2047 subject", "[alerts]") {
  auto n = sample_notification();
  n.set_language("zh");
  v1::Channel c;
  c.set_id("mail");
  c.set_type(v1::CHANNEL_TYPE_EMAIL);
  c.mutable_email()->set_smtp_host("127.0.0.1");
  c.mutable_email()->set_from("QuartzFlow <qf@example.com>");
  c.mutable_email()->add_to("ops@example.com");
  c.mutable_email()->add_to("Oncall <oncall@example.com>");
  for (int i = 0; i < 4; ++i) c.mutable_email()->add_to("database-team-" + std::to_string(i) + "@example.com");
  auto result = qa::format_email(n, c, k_now_ms);
  REQUIRE(result);
  const auto& email = *result.value.email;
  CHECK(email.mail_from == "qf@example.com");
  REQUIRE(email.rcpt_to.size() == 6);
  CHECK(email.rcpt_to[1] == "oncall@example.com");
  CHECK(email.data.find(
            "To: ops@example.com, oncall@example.com, database-team-0@example.com,\r\n "
            "database-team-1@example.com, database-team-2@example.com,\r\n database-team-3@example.com\r\n") !=
        std::string::npos);
  const auto& data = email.data;
  CHECK(data.find("Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n") != std::string::npos);
  CHECK(data.find("Content-Type: text/plain; charset=UTF-8\r\n") != std::string::npos);
  // Every line ends in CRLF and fits in 78 characters (the subject is folded).
  std::size_t start = 0;
  while (start < data.size()) {
    const auto end = data.find("\r\n", start);
    REQUIRE(end != std::string::npos);
    CHECK(end - start <= 78);
    CHECK(data.substr(start, end - start).find('\n') == std::string::npos);
    start = end + 2;
  }
  // Decode the subject's encoded words and the body: the Chinese title and fields come back.
  const auto subject_at = data.find("Subject: ");
  const auto subject_end = data.find("\r\nDate:");
  std::string subject;
  std::size_t word = data.find("=?UTF-8?B?", subject_at);
  while (word != std::string::npos && word < subject_end) {
    const auto close = data.find("?=", word + 10);
    subject += base64_decode(data.substr(word + 10, close - word - 10));
    word = data.find("=?UTF-8?B?", close);
  }
  CHECK(subject == qa::compose_text(n, "zh", "mail").title);
  std::string body_b64;
  for (std::size_t at = data.find("\r\n\r\n") + 4; at < data.size();) {
    const auto end = data.find("\r\n", at);
    body_b64 += data.substr(at, end - at);
    at = end + 2;
  }
  const std::string body = base64_decode(body_b64);
  CHECK(body.find("任务：Database backup (backup-db)") != std::string::npos);
  CHECK(body.find("耗时：1 分 23 秒") != std::string::npos);

  SECTION("a recipient with a line break is refused by its index") {
    c.mutable_email()->set_to(1, "x@example.com\r\nBcc: victim@example.com");
    auto bad = qa::format_email(n, c, k_now_ms);
    REQUIRE_FALSE(bad);
    CHECK(bad.error.field == "channel.email.to[1]");
  }
}

TEST_CASE("receivers' answers read as delivered, retry or give up", "[alerts]") {
  using qa::Verdict;
  CHECK(qa::read_http_response(v1::CHANNEL_TYPE_WEBHOOK, 204, "").verdict == Verdict::delivered);
  CHECK(qa::read_http_response(v1::CHANNEL_TYPE_WEBHOOK, 503, "").verdict == Verdict::retry);
  CHECK(qa::read_http_response(v1::CHANNEL_TYPE_WEBHOOK, 429, "").verdict == Verdict::retry);
  CHECK(qa::read_http_response(v1::CHANNEL_TYPE_WEBHOOK, 408, "").verdict == Verdict::retry);
  CHECK(qa::read_http_response(v1::CHANNEL_TYPE_WEBHOOK, 404, "").verdict == Verdict::give_up);
  CHECK(qa::read_http_response(v1::CHANNEL_TYPE_SLACK, 200, "ok").verdict == Verdict::delivered);
  CHECK(qa::read_http_response(v1::CHANNEL_TYPE_DINGTALK, 200, R"({"errcode":0,"errmsg":"ok"})").verdict ==
        Verdict::delivered);
  const auto sign =
      qa::read_http_response(v1::CHANNEL_TYPE_DINGTALK, 200, R"({"errcode":310000,"errmsg":"sign not match"})");
  CHECK(sign.verdict == Verdict::give_up);
  CHECK(sign.error == "HTTP 200 with error code 310000: sign not match");
  CHECK(qa::read_http_response(v1::CHANNEL_TYPE_DINGTALK, 200, R"({"errcode":130101,"errmsg":"send too fast"})")
            .verdict == Verdict::retry);
  CHECK(qa::read_http_response(v1::CHANNEL_TYPE_WECOM, 200, R"({"errcode":45009,"errmsg":"api freq out of limit"})")
            .verdict == Verdict::retry);
  CHECK(qa::read_http_response(v1::CHANNEL_TYPE_FEISHU, 200, R"({"code":19021,"msg":"sign match fail"})").verdict ==
        Verdict::give_up);
  CHECK(qa::read_http_response(v1::CHANNEL_TYPE_FEISHU, 200, R"({"StatusCode":0,"StatusMessage":"success"})").verdict ==
        Verdict::delivered);
}
