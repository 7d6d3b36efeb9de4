// SPDX-License-Identifier: Apache-2.0
// The words of a notification in English and Chinese, and the formatters' shared helpers.
#include "message_text.hpp"

#include <cmath>
#include <ctime>

#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>

#include "../../common/utf8.hpp"

namespace quartzflow::alerts {

namespace {

namespace pb = google::protobuf;

bool zh(std::string_view language) { return language == "zh"; }

std::string status_word(v1::ExecutionStatus status, std::string_view language) {
  const bool z = zh(language);
  switch (status) {
    case v1::EXECUTION_STATUS_PENDING: return z ? "等待中" : "pending";
    case v1::EXECUTION_STATUS_RUNNING: return z ? "运行中" : "running";
    case v1::EXECUTION_STATUS_SUCCESS: return z ? "成功" : "succeeded";
    case v1::EXECUTION_STATUS_FAILURE: return z ? "失败" : "failed";
    case v1::EXECUTION_STATUS_TIMEOUT: return z ? "超时" : "timed out";
    case v1::EXECUTION_STATUS_CANCELLED: return z ? "已取消" : "cancelled";
    case v1::EXECUTION_STATUS_SKIPPED: return z ? "已跳过" : "skipped";
    case v1::EXECUTION_STATUS_MISSED: return z ? "错过" : "missed";
    default: return {};
  }
}

std::string kind_tag(v1::NotificationKind kind, std::string_view language) {
  const bool z = zh(language);
  switch (kind) {
    case v1::NOTIFICATION_KIND_REPEAT: return z ? "【持续告警】" : "[Still firing]";
    case v1::NOTIFICATION_KIND_ESCALATION: return z ? "【告警升级】" : "[Escalated]";
    case v1::NOTIFICATION_KIND_RESOLVED: return z ? "【已恢复】" : "[Resolved]";
    case v1::NOTIFICATION_KIND_TEST: return z ? "【测试】" : "[Test]";
    default: return z ? "【告警】" : "[Firing]";
  }
}

/// What the alert is about: task (with its name), agent or monitor.
std::string subject(const v1::NotificationItem& item) {
  const auto& alert = item.alert();
  if (!alert.task_id().empty()) {
    if (!item.task_name().empty() && item.task_name() != alert.task_id())
      return fmt::format("{} ({})", item.task_name(), alert.task_id());
    return alert.task_id();
  }
  if (!alert.agent_id().empty()) return alert.agent_id();
  return alert.monitor_id();
}

ItemText item_text(const v1::NotificationItem& item, std::string_view language) {
  const bool z = zh(language);
  const auto& alert = item.alert();
  ItemText out;
  const bool resolved = alert.state() == v1::ALERT_STATE_RESOLVED;
  const std::string state = resolved ? (z ? "已恢复" : "resolved") : (z ? "触发中" : "firing");
  out.heading = alert.summary().empty() ? fmt::format("{} · {}", subject(item), state)
                                        : fmt::format("{}: {} · {}", subject(item), alert.summary(), state);
  auto add = [&](std::string_view en_label, std::string_view zh_label, std::string value) {
    if (!value.empty()) out.fields.emplace_back(std::string(z ? zh_label : en_label), std::move(value));
  };
  if (!alert.task_id().empty()) add("Task", "任务", subject(item));
  add("Agent", "执行节点", !alert.agent_id().empty() ? alert.agent_id() : item.agent_id());
  add("Monitor", "监控", alert.monitor_id());
  if (item.status() != v1::EXECUTION_STATUS_UNSPECIFIED) add("Status", "状态", status_word(item.status(), language));
  add("Reason", "原因", item.reason());
  if (item.duration_ms() > 0) add("Duration", "耗时", format_duration(item.duration_ms(), language));
  add("Run", "执行 ID", alert.execution_id());
  if (alert.count() > 1) add("Occurrences", "次数", std::to_string(alert.count()));
  if (alert.started_unix_ms() > 0) add("Since", "开始时间", format_utc_ms(alert.started_unix_ms()));
  if (resolved && alert.resolved_unix_ms() > 0) add("Resolved", "恢复时间", format_utc_ms(alert.resolved_unix_ms()));
  if (!alert.acknowledged_by().empty()) add("Acknowledged by", "确认人", alert.acknowledged_by());
  out.output_head = item.output_head();
  out.console_url = item.console_url();
  return out;
}

}  // namespace

std::string MessageText::omitted(std::size_t n) const {
  return zh(language) ? fmt::format("……另有 {} 条告警，请在控制台查看", n)
                      : fmt::format("… and {} more alert{} (see the console)", n, n == 1 ? "" : "s");
}

MessageText compose_text(const v1::Notification& notification, std::string_view language, std::string_view channel_id) {
  const bool z = zh(language);
  MessageText text;
  text.language = z ? "zh" : "en";
  text.console_url = notification.console_url();
  text.output_label = z ? "输出（前几行）" : "First lines of output";
  text.console_label = z ? "在控制台中查看" : "Open in console";
  const auto kind = notification.kind();
  const std::string tag = kind_tag(kind, language);
  if (kind == v1::NOTIFICATION_KIND_TEST) {
    text.title = z ? fmt::format("{}QuartzFlow 测试通知（通道 {}）", tag, channel_id)
                   : fmt::format("{} QuartzFlow test notification (channel {})", tag, channel_id);
    text.intro =
        z ? fmt::format(
                "这是一条由 qfctl channel test 发往通道 {} 的测试通知，并没有告警在触发。收到即说明该通道配置正确。",
                channel_id)
          : fmt::format(
                "This is a test notification sent by `qfctl channel test` to channel {}; no alert "
                "is firing. Receiving it means the channel works.",
                channel_id);
  } else {
    const int n = notification.items_size();
    std::string what;
    if (n == 1) {
      const auto& item = notification.items(0);
      what = item.alert().summary().empty() ? subject(item) : subject(item) + ": " + item.alert().summary();
    } else {
      what = z ? fmt::format("{} 条告警", n) : fmt::format("{} alerts", n);
    }
    text.title = z ? fmt::format("{}{}：{}", tag, notification.rule_id(), what)
                   : fmt::format("{} {}: {}", tag, notification.rule_id(), what);
    text.intro = z ? fmt::format("级别：{}", severity_word(notification.severity(), language))
                   : fmt::format("Severity: {}", severity_word(notification.severity(), language));
    if (!notification.rule_description().empty())
      text.intro += (z ? "。规则：" : ". Rule: ") + notification.rule_description();
  }
  for (const auto& item : notification.items()) text.items.push_back(item_text(item, language));
  if (notification.more_firing() > 0) {
    text.more = z ? fmt::format("……另有 {} 条告警仍在触发", notification.more_firing())
                  : fmt::format("… and {} more firing alerts", notification.more_firing());
  }
  return text;
}

std::string plain_text(const MessageText& text) {
  const bool z = zh(text.language);
  std::string out = text.title + "\n\n" + text.intro + "\n";
  for (const auto& item : text.items) {
    out += "\n" + item.heading + "\n";
    for (const auto& [label, value] : item.fields) out += fmt::format("  {}{}{}\n", label, z ? "：" : ": ", value);
    if (!item.output_head.empty()) {
      out += fmt::format("  {}{}\n", text.output_label, z ? "：" : ":");
      std::size_t start = 0;
      while (start < item.output_head.size()) {
        const auto end = item.output_head.find('\n', start);
        out +=
            "    " + item.output_head.substr(start, end == std::string::npos ? std::string::npos : end - start) + "\n";
        if (end == std::string::npos) break;
        start = end + 1;
      }
    }
    if (!item.console_url.empty())
      out += fmt::format("  {}{}{}\n", text.console_label, z ? "：" : ": ", item.console_url);
  }
  if (!text.more.empty()) out += "\n" + text.more + "\n";
  if (!text.console_url.empty()) out += fmt::format("\nQuartzFlow{}{}\n", z ? "：" : ": ", text.console_url);
  return out;
}

std::string truncate_utf8(std::string_view text, std::size_t max_bytes, std::string_view suffix) {
  if (text.size() <= max_bytes) return std::string(text);
  if (max_bytes <= suffix.size()) return std::string(suffix.substr(0, max_bytes));
  std::size_t cut = max_bytes - suffix.size();
  // Back up over continuation bytes (10xxxxxx) so the cut lands on a sequence start.
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return detail::valid_utf8(text.substr(0, cut)) + std::string(suffix);
}

std::string format_duration(std::int64_t duration_ms, std::string_view language) {
  const bool z = zh(language);
  if (duration_ms < 1000) return z ? fmt::format("{} 毫秒", duration_ms) : fmt::format("{} ms", duration_ms);
  if (duration_ms < 60'000) {
    const double seconds = std::floor(static_cast<double>(duration_ms) / 100.0) / 10.0;
    return z ? fmt::format("{:.1f} 秒", seconds) : fmt::format("{:.1f} s", seconds);
  }
  const std::int64_t seconds = duration_ms / 1000;
  if (seconds < 3600)
    return z ? fmt::format("{} 分 {} 秒", seconds / 60, seconds % 60)
             : fmt::format("{}m {:02}s", seconds / 60, seconds % 60);
  return z ? fmt::format("{} 小时 {} 分", seconds / 3600, seconds / 60 % 60)
           : fmt::format("{}h {:02}m", seconds / 3600, seconds / 60 % 60);
}

std::string format_utc_ms(std::int64_t unix_ms) {
  const std::time_t seconds = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, unix_ms % 1000);
}

std::string severity_word(v1::AlertSeverity severity, std::string_view language) {
  const bool z = zh(language);
  switch (severity) {
    case v1::ALERT_SEVERITY_CRITICAL: return z ? "严重" : "critical";
    case v1::ALERT_SEVERITY_INFO: return z ? "提示" : "info";
    default: return z ? "警告" : "warning";
  }
}

pb::Value json_string(std::string_view text) {
  pb::Value value;
  // protobuf refuses to print a string field that is not UTF-8.
  value.set_string_value(detail::valid_utf8(text));
  return value;
}

pb::Value json_number(double number) {
  pb::Value value;
  value.set_number_value(number);
  return value;
}

pb::Value json_bool(bool flag) {
  pb::Value value;
  value.set_bool_value(flag);
  return value;
}

pb::Value json_object(pb::Struct object) {
  pb::Value value;
  *value.mutable_struct_value() = std::move(object);
  return value;
}

pb::Value json_list(std::vector<pb::Value> values) {
  pb::Value value;
  for (auto& v : values) *value.mutable_list_value()->add_values() = std::move(v);
  return value;
}

void json_set(pb::Struct& object, const std::string& key, pb::Value value) {
  (*object.mutable_fields())[key] = std::move(value);
}

std::string print_json(const pb::Message& message) {
  std::string out;
  (void)pb::util::MessageToJsonString(message, &out);
  return out;
}

std::string print_message_json(const pb::Message& message) {
  pb::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  std::string out;
  (void)pb::util::MessageToJsonString(message, &out, options);
  return out;
}

Result<std::string> require_http_url(std::string_view url, std::string_view field) {
  if (url.empty()) return invalid<std::string>(std::string(field), "is required");
  const bool http = url.starts_with("http://") || url.starts_with("https://");
  if (!http) return invalid<std::string>(std::string(field), "must be an absolute http:// or https:// URL");
  for (const char c : url) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7F)
      return invalid<std::string>(std::string(field), "contains white space or control characters");
  }
  Result<std::string> ok;
  ok.value = std::string(url);
  return ok;
}

}  // namespace quartzflow::alerts
