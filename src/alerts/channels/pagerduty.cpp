// SPDX-License-Identifier: Apache-2.0
// PagerDuty Events API v2: trigger and resolve events of one alert per rule (dedup_key).
#include "channel_format.hpp"
#include "message_text.hpp"

#include "../../common/enum_names.hpp"

namespace quartzflow::alerts {

namespace {

namespace pb = google::protobuf;

constexpr int k_max_detailed_alerts = 10;

std::string pagerduty_severity(v1::AlertSeverity severity) {
  switch (severity) {
    case v1::ALERT_SEVERITY_CRITICAL: return "critical";
    case v1::ALERT_SEVERITY_INFO: return "info";
    default: return "warning";
  }
}

/// The affected system: the first alert's agent (its own, or the host its run ran on: PagerDuty
/// prefers a host name), else its task or monitor.
std::string source(const v1::Notification& notification) {
  for (const auto& item : notification.items()) {
    const auto& alert = item.alert();
    const auto& agent = !alert.agent_id().empty() ? alert.agent_id() : item.agent_id();
    if (!agent.empty()) return "quartzflow/agent/" + agent;
    if (!alert.task_id().empty()) return "quartzflow/task/" + alert.task_id();
    if (!alert.monitor_id().empty()) return "quartzflow/monitor/" + alert.monitor_id();
  }
  return "quartzflow";
}

pb::Value alert_details(const v1::NotificationItem& item) {
  pb::Struct details;
  const auto& alert = item.alert();
  auto put = [&](const std::string& key, const std::string& value) {
    if (!value.empty()) json_set(details, key, json_string(value));
  };
  put("alert_id", alert.id());
  put("task_id", alert.task_id());
  put("task_name", item.task_name());
  put("agent_id", !alert.agent_id().empty() ? alert.agent_id() : item.agent_id());
  put("monitor_id", alert.monitor_id());
  put("summary", alert.summary());
  if (item.status() != v1::EXECUTION_STATUS_UNSPECIFIED)
    put("status", detail::EnumNames::of(v1::ExecutionStatus_descriptor()).short_name(item.status()));
  put("reason", item.reason());
  if (item.duration_ms() > 0) json_set(details, "duration_ms", json_number(static_cast<double>(item.duration_ms())));
  put("execution_id", alert.execution_id());
  put("output_head", truncate_utf8(item.output_head(), 1024));
  put("console_url", item.console_url());
  return json_object(std::move(details));
}

}  // namespace

Result<OutgoingMessage> format_pagerduty(const v1::Notification& notification, const v1::Channel& channel,
                                         std::string_view routing_key, std::int64_t now_unix_ms) {
  if (routing_key.empty()) return invalid<OutgoingMessage>("channel.secret", "the PagerDuty routing key is required");
  auto url =
      require_http_url(channel.url().empty() ? std::string(k_pagerduty_events_url) : channel.url(), "channel.url");
  if (!url) return invalid<OutgoingMessage>(url.error.field, url.error.reason);
  const bool test = notification.kind() == v1::NOTIFICATION_KIND_TEST;
  const bool resolve = notification.kind() == v1::NOTIFICATION_KIND_RESOLVED;

  pb::Struct body;
  json_set(body, "routing_key", json_string(routing_key));
  json_set(body, "event_action", json_string(resolve ? "resolve" : "trigger"));
  // One PagerDuty alert per rule (Alertmanager's group): the resolve closes what the
  // triggers opened; a test opens an alert of its own.
  const std::string dedup_key = test ? "quartzflow/test/" + notification.id() : "quartzflow/" + notification.rule_id();
  json_set(body, "dedup_key", json_string(truncate_utf8(dedup_key, 255, "")));
  if (!resolve) {
    const auto text = compose_text(notification, message_language(notification, channel), channel.id());
    pb::Struct payload;
    json_set(payload, "summary", json_string(truncate_utf8(text.title, 1024)));
    json_set(payload, "source", json_string(source(notification)));
    json_set(payload, "severity", json_string(test ? "info" : pagerduty_severity(notification.severity())));
    json_set(payload, "timestamp", json_string(format_utc_ms(now_unix_ms)));
    json_set(payload, "component", json_string("quartzflow"));
    if (!notification.rule_id().empty()) json_set(payload, "group", json_string(notification.rule_id()));
    if (!notification.items().empty()) {
      json_set(payload, "class",
               json_string(detail::EnumNames::of(v1::AlertCondition_descriptor())
                               .short_name(notification.items(0).alert().condition())));
    }
    pb::Struct details;
    json_set(details, "notification_id", json_string(notification.id()));
    json_set(details, "kind",
             json_string(detail::EnumNames::of(v1::NotificationKind_descriptor()).short_name(notification.kind())));
    if (!notification.rule_description().empty())
      json_set(details, "rule_description", json_string(notification.rule_description()));
    std::vector<pb::Value> alerts;
    std::vector<pb::Value> links;
    for (int i = 0; i < notification.items_size() && i < k_max_detailed_alerts; ++i) {
      alerts.push_back(alert_details(notification.items(i)));
      if (!notification.items(i).console_url().empty() && links.size() < 5) {
        pb::Struct link;
        json_set(link, "href", json_string(notification.items(i).console_url()));
        json_set(link, "text", json_string(text.console_label));
        links.push_back(json_object(std::move(link)));
      }
    }
    if (!alerts.empty()) json_set(details, "alerts", json_list(std::move(alerts)));
    if (notification.items_size() > k_max_detailed_alerts || notification.more_firing() > 0) {
      json_set(details, "more_alerts",
               json_number(static_cast<double>(std::max(0, notification.items_size() - k_max_detailed_alerts)) +
                           notification.more_firing()));
    }
    json_set(payload, "custom_details", json_object(std::move(details)));
    json_set(body, "payload", json_object(std::move(payload)));
    json_set(body, "client", json_string("QuartzFlow"));
    if (!notification.console_url().empty()) json_set(body, "client_url", json_string(notification.console_url()));
    if (!links.empty()) json_set(body, "links", json_list(std::move(links)));
  }
  HttpMessage message;
  message.url = std::move(url.value);
  message.headers.emplace_back("Content-Type", "application/json");
  message.body = print_json(body);
  Result<OutgoingMessage> result;
  result.value.http = std::move(message);
  return result;
}

}  // namespace quartzflow::alerts
