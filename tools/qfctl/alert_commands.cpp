// SPDX-License-Identifier: Apache-2.0
// `qfctl alert ...`, `qfctl channel ...`, `qfctl silence ...` and `qfctl monitor ...` through
// the admin API: alert rules, the alerts they raised, notification channels (secrets shown
// only as hints), silences and heartbeat monitors.
#include <chrono>
#include <iostream>
#include <memory>

#include <fmt/format.h>

#include <quartzflow/v1/alerts.pb.h>
#include <quartzflow/v1/alerts_api.pb.h>

#include "api.hpp"
#include "commands.hpp"
#include "table.hpp"

namespace qfctl {
namespace {

namespace v1 = quartzflow::v1;

struct AlertArgs {
  std::string id;
  std::string file;
  std::string state;
  std::string rule;
  std::string task;
  std::string comment;
  std::vector<std::string> rule_ids;
  std::vector<std::string> task_ids;
  std::vector<std::string> agent_ids;
  std::vector<std::string> monitor_ids;
  std::string duration;
  std::string reason;
  bool active = false;
  std::uint32_t page = 1;
  std::uint32_t page_size = 20;
};

std::string joined(const google::protobuf::RepeatedPtrField<std::string>& words) {
  std::string text;
  for (const auto& w : words) text += (text.empty() ? "" : ",") + w;
  return text.empty() ? "-" : text;
}

std::string or_dash(const std::string& text) { return text.empty() ? "-" : text; }

Query paging(const AlertArgs& args) {
  return {{"page", std::to_string(args.page)}, {"page_size", std::to_string(args.page_size)}};
}

/// `90s`, `30m`, `2h`, `1d`, or several (`1h30m`) in milliseconds; throws CommandFailure
/// naming `flag` for anything else.
std::int64_t duration_ms(const std::string& text, std::string_view flag) {
  std::int64_t total = 0;
  std::size_t i = 0;
  const auto bad = [&] {
    return CommandFailure{k_exit_invalid_input,
                          fmt::format("{} \"{}\": expected a duration such as 90s, 30m, 2h, 1d or 1h30m", flag, text)};
  };
  if (text.empty()) throw bad();
  while (i < text.size()) {
    std::int64_t number = 0;
    const auto start = i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9' && number < 1'000'000'000)
      number = number * 10 + (text[i++] - '0');
    if (i == start || i == text.size()) throw bad();
    const char unit = text[i++];
    const std::int64_t scale = unit == 's'   ? 1'000
                               : unit == 'm' ? 60'000
                               : unit == 'h' ? 3'600'000
                               : unit == 'd' ? 86'400'000
                                             : 0;
    if (scale == 0) throw bad();
    total += number * scale;
  }
  if (total <= 0) throw bad();
  return total;
}

std::string severity_text(v1::AlertSeverity severity) {
  return severity == v1::ALERT_SEVERITY_UNSPECIFIED ? "warning"
                                                    : short_enum_name(v1::AlertSeverity_descriptor(), severity);
}

// --- rules and alerts ----------------------------------------------------------------------

void run_rules(const ApiFlags& flags, const AlertArgs& args) {
  auto api = ApiClient::from_flags(flags);
  const auto listing = api.get<v1::ListAlertRulesResponse>("/alert-rules", paging(args));
  if (flags.format() != OutputFormat::table) return print_message(listing, flags.format());
  if (listing.items().empty()) {
    std::cout << "no alert rules\n";
    return;
  }
  Table table({"ID", "CONDITION", "SEVERITY", "CHANNELS", "ESCALATION", "DISABLED", "DESCRIPTION"});
  for (const auto& r : listing.items())
    table.add({r.id(), short_enum_name(v1::AlertCondition_descriptor(), r.condition()), severity_text(r.severity()),
               joined(r.channel_ids()), std::to_string(r.escalation_size()), yes_no(r.disabled()), r.description()});
  table.print(std::cout);
  print_paging(static_cast<std::size_t>(listing.items_size()), listing.total(), listing.page(), listing.page_size());
}

void run_rule_create(const ApiFlags& flags, const AlertArgs& args) {
  v1::AlertRule rule;
  read_message_file(args.file, rule);
  auto api = ApiClient::from_flags(flags);
  const auto created = api.post<v1::AlertRule>("/alert-rules", &rule);
  if (flags.format() != OutputFormat::table) return print_message(created, flags.format());
  std::cout << fmt::format("created alert rule {}\n", created.id());
}

void run_rule_delete(const ApiFlags& flags, const AlertArgs& args) {
  auto api = ApiClient::from_flags(flags);
  api.remove("/alert-rules/" + url_encode(args.id));
  if (flags.format() == OutputFormat::table) std::cout << fmt::format("deleted alert rule {}\n", args.id);
}

std::string subject_of(const v1::Alert& a) {
  if (!a.task_id().empty()) return "task " + a.task_id();
  if (!a.agent_id().empty()) return "agent " + a.agent_id();
  if (!a.monitor_id().empty()) return "monitor " + a.monitor_id();
  return "-";
}

void run_alert_list(const ApiFlags& flags, const AlertArgs& args) {
  auto api = ApiClient::from_flags(flags);
  auto query = paging(args);
  if (!args.state.empty()) {
    if (!parse_enum_name(v1::AlertState_descriptor(), args.state))
      throw CommandFailure{k_exit_invalid_input, fmt::format("--state \"{}\": expected one of {}", args.state,
                                                             enum_choices(v1::AlertState_descriptor()))};
    query.emplace_back("state", args.state);
  }
  if (!args.rule.empty()) query.emplace_back("rule_id", args.rule);
  if (!args.task.empty()) query.emplace_back("task_id", args.task);
  const auto listing = api.get<v1::ListAlertsResponse>("/alerts", query);
  if (flags.format() != OutputFormat::table) return print_message(listing, flags.format());
  if (listing.items().empty()) {
    std::cout << "no alerts match\n";
    return;
  }
  Table table({"ID", "STATE", "SEVERITY", "SUBJECT", "STARTED", "COUNT", "ACKNOWLEDGED BY", "SUMMARY"});
  for (const auto& a : listing.items())
    table.add({a.id(), short_enum_name(v1::AlertState_descriptor(), a.state()), severity_text(a.severity()),
               subject_of(a), time_text(a.started_unix_ms()), std::to_string(a.count()), or_dash(a.acknowledged_by()),
               a.summary()});
  table.print(std::cout);
  print_paging(static_cast<std::size_t>(listing.items_size()), listing.total(), listing.page(), listing.page_size());
}

void run_alert_ack(const ApiFlags& flags, const AlertArgs& args) {
  auto api = ApiClient::from_flags(flags);
  v1::AckAlertRequest request;
  request.set_comment(args.comment);
  const auto alert = api.post<v1::Alert>("/alerts/" + url_encode(args.id) + "/ack", &request);
  if (flags.format() != OutputFormat::table) return print_message(alert, flags.format());
  std::cout << fmt::format("acknowledged alert {} ({}: no more repeats or escalation)\n", alert.id(),
                           subject_of(alert));
}

// --- channels ------------------------------------------------------------------------------

std::string secret_text(const v1::Secret& secret) { return secret.set() ? secret.hint() : "-"; }

std::string target_of(const v1::Channel& c) {
  if (c.type() == v1::CHANNEL_TYPE_EMAIL)
    return fmt::format("{} via {}", joined(c.email().to()), c.email().smtp_host());
  return or_dash(c.url());
}

void run_channel_list(const ApiFlags& flags, const AlertArgs& args) {
  auto api = ApiClient::from_flags(flags);
  const auto listing = api.get<v1::ListChannelsResponse>("/channels", paging(args));
  if (flags.format() != OutputFormat::table) return print_message(listing, flags.format());
  if (listing.items().empty()) {
    std::cout << "no channels\n";
    return;
  }
  Table table({"ID", "TYPE", "TARGET", "SECRET", "DISABLED", "DESCRIPTION"});
  for (const auto& c : listing.items())
    table.add({c.id(), short_enum_name(v1::ChannelType_descriptor(), c.type()), target_of(c),
               secret_text(c.type() == v1::CHANNEL_TYPE_EMAIL ? c.email().password() : c.secret()),
               yes_no(c.disabled()), c.description()});
  table.print(std::cout);
  print_paging(static_cast<std::size_t>(listing.items_size()), listing.total(), listing.page(), listing.page_size());
}

void run_channel_create(const ApiFlags& flags, const AlertArgs& args) {
  v1::Channel channel;
  read_message_file(args.file, channel);
  auto api = ApiClient::from_flags(flags);
  const auto created = api.post<v1::Channel>("/channels", &channel);
  if (flags.format() != OutputFormat::table) return print_message(created, flags.format());
  std::cout << fmt::format("created channel {} ({})\n", created.id(),
                           short_enum_name(v1::ChannelType_descriptor(), created.type()));
}

/// Sends a TEST notification now; exits 1 unless the receiver acknowledged it.
void run_channel_test(const ApiFlags& flags, const AlertArgs& args) {
  auto api = ApiClient::from_flags(flags);
  const auto sent = api.post<v1::Delivery>("/channels/" + url_encode(args.id) + "/test");
  const auto attempt = sent.attempts_size() > 0 ? sent.attempts(sent.attempts_size() - 1) : v1::DeliveryAttempt{};
  const std::string answer =
      attempt.http_status() > 0 ? fmt::format("HTTP {}", attempt.http_status()) : "no HTTP answer";
  const bool delivered = sent.state() == v1::DELIVERY_STATE_DELIVERED;
  if (flags.format() != OutputFormat::table) print_message(sent, flags.format());
  else if (delivered)
    std::cout << fmt::format("test notification delivered through channel {} ({}, {} ms)\n", args.id, answer,
                             attempt.duration_ms());
  if (!delivered)
    throw CommandFailure{k_exit_failure, fmt::format("test notification through channel {} failed ({}): {}", args.id,
                                                     answer, attempt.error())};
}

void run_channel_delete(const ApiFlags& flags, const AlertArgs& args) {
  auto api = ApiClient::from_flags(flags);
  api.remove("/channels/" + url_encode(args.id));
  if (flags.format() == OutputFormat::table) std::cout << fmt::format("deleted channel {}\n", args.id);
}

// --- silences ------------------------------------------------------------------------------

void run_silence_create(const ApiFlags& flags, const AlertArgs& args) {
  const auto length = duration_ms(args.duration, "--for");
  v1::Silence silence;
  for (const auto& id : args.rule_ids) silence.add_rule_ids(id);
  for (const auto& id : args.task_ids) silence.add_task_ids(id);
  for (const auto& id : args.agent_ids) silence.add_agent_ids(id);
  for (const auto& id : args.monitor_ids) silence.add_monitor_ids(id);
  const auto now =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  silence.set_starts_unix_ms(now);
  silence.set_ends_unix_ms(now + length);
  silence.set_reason(args.reason);
  auto api = ApiClient::from_flags(flags);
  const auto created = api.post<v1::Silence>("/silences", &silence);
  if (flags.format() != OutputFormat::table) return print_message(created, flags.format());
  std::cout << fmt::format("created silence {} until {}\n", created.id(), time_text(created.ends_unix_ms()));
}

void run_silence_list(const ApiFlags& flags, const AlertArgs& args) {
  auto api = ApiClient::from_flags(flags);
  auto query = paging(args);
  if (args.active) query.emplace_back("active", "true");
  const auto listing = api.get<v1::ListSilencesResponse>("/silences", query);
  if (flags.format() != OutputFormat::table) return print_message(listing, flags.format());
  if (listing.items().empty()) {
    std::cout << "no silences\n";
    return;
  }
  Table table({"ID", "RULES", "TASKS", "AGENTS", "MONITORS", "STARTS", "ENDS", "BY", "REASON"});
  for (const auto& s : listing.items())
    table.add({s.id(), joined(s.rule_ids()), joined(s.task_ids()), joined(s.agent_ids()), joined(s.monitor_ids()),
               time_text(s.starts_unix_ms()), time_text(s.ends_unix_ms()), or_dash(s.created_by()), s.reason()});
  table.print(std::cout);
  print_paging(static_cast<std::size_t>(listing.items_size()), listing.total(), listing.page(), listing.page_size());
}

void run_silence_delete(const ApiFlags& flags, const AlertArgs& args) {
  auto api = ApiClient::from_flags(flags);
  api.remove("/silences/" + url_encode(args.id));
  if (flags.format() == OutputFormat::table) std::cout << fmt::format("deleted silence {}\n", args.id);
}

// --- monitors ------------------------------------------------------------------------------

void run_monitor_list(const ApiFlags& flags, const AlertArgs& args) {
  auto api = ApiClient::from_flags(flags);
  const auto listing = api.get<v1::ListMonitorsResponse>("/monitors", paging(args));
  if (flags.format() != OutputFormat::table) return print_message(listing, flags.format());
  if (listing.items().empty()) {
    std::cout << "no monitors\n";
    return;
  }
  Table table({"ID", "SCHEDULE", "GRACE", "STATUS", "LAST PING", "PAUSED", "TOKEN", "DESCRIPTION"});
  for (const auto& m : listing.items()) {
    const auto schedule = !m.cron().empty()
                              ? fmt::format("{} ({})", m.cron(), m.time_zone().empty() ? "UTC" : m.time_zone())
                              : fmt::format("every {}", duration_text(std::int64_t{m.period_seconds()} * 1000));
    table.add({m.id(), schedule, duration_text(std::int64_t{m.grace_seconds() == 0 ? 300 : m.grace_seconds()} * 1000),
               or_dash(m.status()), time_text(m.last_ping_unix_ms()), yes_no(m.paused()), m.token(), m.description()});
  }
  table.print(std::cout);
  print_paging(static_cast<std::size_t>(listing.items_size()), listing.total(), listing.page(), listing.page_size());
}

void run_monitor_create(const ApiFlags& flags, const AlertArgs& args) {
  v1::Monitor monitor;
  read_message_file(args.file, monitor);
  auto api = ApiClient::from_flags(flags);
  const auto created = api.post<v1::Monitor>("/monitors", &monitor);
  if (flags.format() != OutputFormat::table) return print_message(created, flags.format());
  std::cout << fmt::format("created monitor {}\nping token (shown this once): {}\n", created.id(), created.token());
}

void run_monitor_delete(const ApiFlags& flags, const AlertArgs& args) {
  auto api = ApiClient::from_flags(flags);
  api.remove("/monitors/" + url_encode(args.id));
  if (flags.format() == OutputFormat::table) std::cout << fmt::format("deleted monitor {}\n", args.id);
}

/// A command group with the API flags, its sub-commands taking them too.
CLI::App* api_group(CLI::App& app, const char* name, const char* help, std::shared_ptr<ApiFlags>& flags) {
  auto* group = app.add_subcommand(name, help);
  group->require_subcommand(1);
  flags = std::make_shared<ApiFlags>();
  add_api_flags(*group, *flags);
  group->fallthrough();
  return group;
}

void add_paging(CLI::App& command, AlertArgs& args, const char* what) {
  command.add_option("--page", args.page, "page number")->check(CLI::Range(1u, 1000000u));
  command.add_option("--page-size", args.page_size, fmt::format("{} per page", what))
      ->check(CLI::Range(1u, 500u))
      ->capture_default_str();
}

}  // namespace

void add_alert_commands(CLI::App& app) {
  auto args = std::make_shared<AlertArgs>();

  std::shared_ptr<ApiFlags> alert_flags;
  auto* alert = api_group(app, "alert", "alert rules and the alerts they raised (admin API)", alert_flags);
  auto* rules = alert->add_subcommand("rules", "list alert rules");
  add_paging(*rules, *args, "rules");
  rules->callback([alert_flags, args] { run_rules(*alert_flags, *args); });
  auto* rule_create =
      alert->add_subcommand("rule-create", "create an alert rule from a YAML or JSON file (an AlertRule)");
  rule_create->add_option("-f,--file", args->file, "the rule file; - for stdin")->required();
  rule_create->callback([alert_flags, args] { run_rule_create(*alert_flags, *args); });
  auto* rule_delete = alert->add_subcommand("rule-delete", "delete an alert rule");
  rule_delete->add_option("id", args->id, "rule id")->required();
  rule_delete->callback([alert_flags, args] { run_rule_delete(*alert_flags, *args); });
  auto* list = alert->add_subcommand("list", "list alerts, newest first");
  list->add_option("--state", args->state, "firing or resolved");
  list->add_option("--rule", args->rule, "only alerts of this rule");
  list->add_option("--task", args->task, "only alerts about this task");
  add_paging(*list, *args, "alerts");
  list->callback([alert_flags, args] { run_alert_list(*alert_flags, *args); });
  auto* ack = alert->add_subcommand("ack", "acknowledge a firing alert: no more repeats or escalation");
  ack->add_option("id", args->id, "alert id")->required();
  ack->add_option("--comment", args->comment, "why, or what is being done about it");
  ack->callback([alert_flags, args] { run_alert_ack(*alert_flags, *args); });

  std::shared_ptr<ApiFlags> channel_flags;
  auto* channel = api_group(app, "channel", "notification channels (admin API)", channel_flags);
  auto* channel_list = channel->add_subcommand("list", "list channels (secrets as hints)");
  channel_list->alias("ls");
  add_paging(*channel_list, *args, "channels");
  channel_list->callback([channel_flags, args] { run_channel_list(*channel_flags, *args); });
  auto* channel_create = channel->add_subcommand("create", "create a channel from a YAML or JSON file (a Channel)");
  channel_create->add_option("-f,--file", args->file, "the channel file; - for stdin")->required();
  channel_create->callback([channel_flags, args] { run_channel_create(*channel_flags, *args); });
  auto* channel_test = channel->add_subcommand(
      "test",
      "send a TEST notification through a channel now and show the receiver's answer (exit 1 unless delivered)");
  channel_test->add_option("id", args->id, "channel id")->required();
  channel_test->callback([channel_flags, args] { run_channel_test(*channel_flags, *args); });
  auto* channel_delete = channel->add_subcommand("delete", "delete a channel no alert rule uses");
  channel_delete->alias("rm");
  channel_delete->add_option("id", args->id, "channel id")->required();
  channel_delete->callback([channel_flags, args] { run_channel_delete(*channel_flags, *args); });

  std::shared_ptr<ApiFlags> silence_flags;
  auto* silence = api_group(app, "silence", "silences: mute notifications for a while (admin API)", silence_flags);
  auto* silence_create = silence->add_subcommand("create", "mute notifications of matching alerts");
  silence_create->add_option("--rule", args->rule_ids, "alerts of this rule (repeatable)");
  silence_create->add_option("--task", args->task_ids, "alerts about this task (repeatable)");
  silence_create->add_option("--agent", args->agent_ids, "alerts about this agent (repeatable)");
  silence_create->add_option("--monitor", args->monitor_ids, "alerts about this monitor (repeatable)");
  silence_create->add_option("--for", args->duration, "how long from now: 90s, 30m, 2h, 1d")->required();
  silence_create->add_option("--reason", args->reason, "why")->required();
  silence_create->callback([silence_flags, args] { run_silence_create(*silence_flags, *args); });
  auto* silence_list = silence->add_subcommand("list", "list silences, latest end first");
  silence_list->alias("ls");
  silence_list->add_flag("--active", args->active, "only those not ended yet");
  add_paging(*silence_list, *args, "silences");
  silence_list->callback([silence_flags, args] { run_silence_list(*silence_flags, *args); });
  auto* silence_delete = silence->add_subcommand("delete", "delete a silence (notifications resume)");
  silence_delete->alias("rm");
  silence_delete->add_option("id", args->id, "silence id")->required();
  silence_delete->callback([silence_flags, args] { run_silence_delete(*silence_flags, *args); });

  std::shared_ptr<ApiFlags> monitor_flags;
  auto* monitor = api_group(app, "monitor", "heartbeat monitors of jobs run elsewhere (admin API)", monitor_flags);
  auto* monitor_list = monitor->add_subcommand("list", "list monitors");
  monitor_list->alias("ls");
  add_paging(*monitor_list, *args, "monitors");
  monitor_list->callback([monitor_flags, args] { run_monitor_list(*monitor_flags, *args); });
  auto* monitor_create = monitor->add_subcommand(
      "create", "create a monitor from a YAML or JSON file (a Monitor); prints its ping token once");
  monitor_create->add_option("-f,--file", args->file, "the monitor file; - for stdin")->required();
  monitor_create->callback([monitor_flags, args] { run_monitor_create(*monitor_flags, *args); });
  auto* monitor_delete = monitor->add_subcommand("delete", "delete a monitor");
  monitor_delete->alias("rm");
  monitor_delete->add_option("id", args->id, "monitor id")->required();
  monitor_delete->callback([monitor_flags, args] { run_monitor_delete(*monitor_flags, *args); });

  for (auto* group : {alert, channel, silence, monitor}) mention_api_flags(*group);
}

}  // namespace qfctl
