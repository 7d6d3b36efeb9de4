// SPDX-License-Identifier: Apache-2.0
// `qfctl exec ...`, `qfctl stats` and `qfctl audit` through the admin API: executions and
// their logs, statistics, and the audit log.
#include <chrono>
#include <iostream>
#include <memory>
#include <thread>

#include <fmt/format.h>

#include <quartzflow/execution_status.hpp>
#include <quartzflow/v1/admin.pb.h>

#include "api.hpp"
#include "commands.hpp"
#include "table.hpp"

namespace qfctl {
namespace {

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;

struct HistoryArgs {
  std::string id;
  // exec ls
  std::string task;
  std::string agent;
  std::string group;
  std::vector<std::string> statuses;
  std::string from;
  std::string to;
  std::string keyword;
  std::uint32_t page = 1;
  std::uint32_t page_size = 20;
  // logs, cancel
  bool follow = false;
  std::string reason;
  // stats
  std::string range;
  std::string by;
  // audit
  std::string actor;
  std::string action;
  std::string target_type;
  std::string since;
};

std::string path_of(std::string_view id) { return "/executions/" + url_encode(id); }

std::string status_text(v1::ExecutionStatus status) { return short_enum_name(v1::ExecutionStatus_descriptor(), status); }

std::string clipped(std::string text, std::size_t limit) {
  for (auto& c : text)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  return text.size() > limit ? text.substr(0, limit - 3) + "..." : text;
}

void check_status(const std::string& status) {
  if (!parse_enum_name(v1::ExecutionStatus_descriptor(), status))
    throw CommandFailure{k_exit_invalid_input, fmt::format("--status \"{}\": expected one of {}", status,
                                                           enum_choices(v1::ExecutionStatus_descriptor()))};
}

// --- exec --------------------------------------------------------------------------------

void run_exec_ls(const ApiFlags& flags, const HistoryArgs& args) {
  Query query{{"page", std::to_string(args.page)}, {"page_size", std::to_string(args.page_size)}};
  if (!args.task.empty()) query.emplace_back("task_id", args.task);
  if (!args.agent.empty()) query.emplace_back("agent_id", args.agent);
  for (const auto& s : args.statuses) {
    check_status(s);
    query.emplace_back("status", s);
  }
  if (!args.from.empty()) query.emplace_back("from_unix_ms", std::to_string(unix_ms_of(args.from, "--from")));
  if (!args.to.empty()) query.emplace_back("to_unix_ms", std::to_string(unix_ms_of(args.to, "--to")));
  if (!args.keyword.empty()) query.emplace_back("keyword", args.keyword);
  auto api = ApiClient::from_flags(flags);
  if (!args.group.empty()) query.emplace_back("group_id", group_id_of(api, args.group));
  const auto listing = api.get<v1::ListExecutionsResponse>("/executions", query);
  if (flags.format() != OutputFormat::table) return print_message(listing, flags.format());
  if (listing.items().empty()) {
    std::cout << "no executions match\n";
    return;
  }
  Table table({"EXECUTION ID", "TASK", "AGENT", "STATUS", "TRIGGER", "SCHEDULED", "DURATION", "EXIT", "DETAIL"});
  for (const auto& e : listing.items()) {
    std::string detail = !e.error_message().empty() ? e.error_message() : !e.skip_detail().empty() ? e.skip_detail()
                                                                                                   : e.failure_reason();
    table.add({e.execution_id(), e.task_name().empty() ? e.task_id() : e.task_name(),
               e.agent_id().empty() ? "-" : e.agent_id(), status_text(e.status()),
               short_enum_name(v1::TriggerType_descriptor(), e.trigger()), time_text(e.scheduled_unix_ms()),
               e.started_unix_ms() ? duration_text(e.duration_ms()) : "-",
               e.has_exit_code() ? std::to_string(e.exit_code()) : "-", clipped(detail, 60)});
  }
  table.print(std::cout);
  print_paging(static_cast<std::size_t>(listing.items_size()), listing.total(), listing.page(), listing.page_size());
}

void run_exec_get(const ApiFlags& flags, const HistoryArgs& args) {
  auto api = ApiClient::from_flags(flags);
  const auto e = api.get<v1::Execution>(path_of(args.id));
  if (flags.format() != OutputFormat::table) return print_message(e, flags.format());
  std::vector<std::pair<std::string, std::string>> fields = {
      {"execution id", e.execution_id()},
      {"task", fmt::format("{} ({}, revision {})", e.task_id(), e.task_name(), e.task_revision())},
      {"agent", e.agent_id().empty() ? "-"
                : e.agent_hostname().empty() ? e.agent_id()
                : fmt::format("{} ({}{})", e.agent_id(), e.agent_hostname(), e.agent_ip().empty() ? "" : " " + e.agent_ip())},
      {"status", status_text(e.status())},
      {"trigger", fmt::format("{}{}", short_enum_name(v1::TriggerType_descriptor(), e.trigger()),
                              e.triggered_by().empty() ? "" : " by " + e.triggered_by())},
      {"attempt", std::to_string(e.attempt())},
      {"scheduled", time_text(e.scheduled_unix_ms())},
      {"started", time_text(e.started_unix_ms())},
      {"ended", time_text(e.ended_unix_ms())},
      {"duration", e.started_unix_ms() ? duration_text(e.duration_ms()) : "-"},
      {"exit code", e.has_exit_code() ? std::to_string(e.exit_code()) : "-"},
  };
  if (e.shard_total() > 0) fields.emplace_back("shard", fmt::format("{} of {}", e.shard_index(), e.shard_total()));
  if (e.signal() != 0) fields.emplace_back("signal", std::to_string(e.signal()));
  if (e.http_status() != 0) fields.emplace_back("http status", std::to_string(e.http_status()));
  if (!e.failure_reason().empty()) fields.emplace_back("failure reason", e.failure_reason());
  if (!e.error_message().empty()) fields.emplace_back("error", e.error_message());
  if (e.skip_reason() != v1::SKIP_REASON_UNSPECIFIED)
    fields.emplace_back("skipped", fmt::format("{}: {}", short_enum_name(v1::SkipReason_descriptor(), e.skip_reason()),
                                               e.skip_detail()));
  if (!e.cancelled_by().empty()) fields.emplace_back("cancelled by", e.cancelled_by());
  for (const auto& [name, value] : e.params()) fields.emplace_back("param " + name, value);
  fields.emplace_back("output", fmt::format("{} bytes{}", e.output_bytes(),
                                            e.output_truncated() ? " (truncated; qfctl exec logs shows what is kept)" : ""));
  print_fields(fields);
  if (!e.output().empty()) std::cout << "---\n" << e.output() << (e.output().back() == '\n' ? "" : "\n");
}

void run_exec_logs(const ApiFlags& flags, const HistoryArgs& args) {
  auto api = ApiClient::from_flags(flags);
  constexpr std::uint32_t k_page_bytes = 1 << 20;
  std::uint64_t offset = 0;
  while (true) {
    const auto response = api.get<v1::ExecutionLogResponse>(
        path_of(args.id) + "/logs", {{"offset", std::to_string(offset)}, {"max_bytes", std::to_string(k_page_bytes)}});
    const auto& chunk = response.chunk();
    if (flags.format() != OutputFormat::table && !args.follow) return print_message(response, flags.format());
    std::cout << chunk.data() << std::flush;
    // Past the first 10 KB the coordinator reads the log from the agent; slices end on
    // character boundaries, so the next one starts at next_offset.
    offset = chunk.next_offset() ? chunk.next_offset() : chunk.offset() + chunk.data().size();
    if (!response.agent_log_error().empty()) {
      std::cerr << fmt::format("qfctl: {} (of {} bytes)\n", response.agent_log_error(), chunk.total_bytes());
      break;
    }
    if (chunk.eof()) break;                                 // final, and all of it read
    if (offset < chunk.total_bytes()) continue;             // the next page is there already
    if (!args.follow) break;
    // Polling keeps this free of the events socket; the record grows as the agent reports.
    std::this_thread::sleep_for(std::chrono::seconds{1});
  }
}

void run_exec_cancel(const ApiFlags& flags, const HistoryArgs& args) {
  v1::CancelExecutionRequest request;
  request.set_reason(args.reason);
  auto api = ApiClient::from_flags(flags);
  const auto response = api.post<v1::CancelExecutionResponse>(path_of(args.id) + "/cancel", &request);
  if (flags.format() != OutputFormat::table) return print_message(response, flags.format());
  std::cout << fmt::format("cancel requested for {} (now {})\n", args.id,
                           response.has_execution() ? status_text(response.execution().status()) : "unknown");
}

void run_exec_retry(const ApiFlags& flags, const HistoryArgs& args) {
  auto api = ApiClient::from_flags(flags);
  const auto response = api.post<v1::TriggerResponse>(path_of(args.id) + "/retry");
  if (flags.format() != OutputFormat::table) return print_message(response, flags.format());
  for (const auto& id : response.execution_ids()) std::cout << id << "\n";
  if (!args.follow) return;
  // Wait for the retry to end; its exit status is the command's (0 only on SUCCESS).
  for (const auto& id : response.execution_ids()) {
    v1::Execution e;
    do {
      std::this_thread::sleep_for(std::chrono::milliseconds{500});
      e = api.get<v1::Execution>(path_of(id));
    } while (!qf::is_final(e.status()));
    std::cout << fmt::format("{}: {} on {}\n", id, status_text(e.status()), e.agent_id());
    if (e.status() != v1::EXECUTION_STATUS_SUCCESS)
      throw CommandFailure{k_exit_failure, fmt::format("the retry ended {}", status_text(e.status()))};
  }
}

// --- stats, audit --------------------------------------------------------------------------

std::string percent(double value) { return fmt::format("{:.1f}%", value); }

void run_stats(const ApiFlags& flags, const HistoryArgs& args) {
  auto api = ApiClient::from_flags(flags);
  Query query;
  if (!args.task.empty()) query.emplace_back("task_id", args.task);
  if (!args.agent.empty()) query.emplace_back("agent_id", args.agent);
  if (!args.group.empty()) query.emplace_back("group_id", group_id_of(api, args.group));
  if (!args.range.empty()) query.emplace_back("range", args.range);
  if (!args.by.empty()) query.emplace_back("group_by", args.by);
  const auto stats = api.get<v1::StatsResponse>("/executions/stats", query);
  if (flags.format() != OutputFormat::table) return print_message(stats, flags.format());
  const auto& s = stats.summary();
  print_fields({
      {"range", fmt::format("{} to {}", time_text(s.from_unix_ms()), time_text(s.to_unix_ms()))},
      {"runs", fmt::format("{} total: {} success, {} failure, {} timeout, {} cancelled, {} skipped, {} missed", s.total(),
                           s.success(), s.failure(), s.timeout(), s.cancelled(), s.skipped(), s.missed())},
      {"now", fmt::format("{} running, {} pending", s.running(), s.pending())},
      {"success rate", s.success() + s.failure() + s.timeout() + s.cancelled() == 0 ? "-" : percent(s.success_rate_percent())},
      {"duration", fmt::format("avg {}, p50 {}, p95 {}, max {}", duration_text(s.avg_duration_ms()),
                               duration_text(s.p50_duration_ms()), duration_text(s.p95_duration_ms()),
                               duration_text(s.max_duration_ms()))},
  });
  if (!s.top_failure_reasons().empty()) {
    std::cout << "\nfailure reasons:\n";
    Table table({"REASON", "COUNT", "LAST EXECUTION", "EXAMPLE"});
    for (const auto& r : s.top_failure_reasons())
      table.add({r.reason(), std::to_string(r.count()), r.last_execution_id(), clipped(r.example_error_message(), 60)});
    table.print(std::cout);
  }
  if (!stats.top_failing_tasks().empty()) {
    std::cout << "\nfailing tasks:\n";
    Table table({"TASK", "FAILURES", "RUNS", "SUCCESS RATE"});
    for (const auto& t : stats.top_failing_tasks())
      table.add({t.task_name().empty() ? t.task_id() : t.task_name(), std::to_string(t.failure_count()),
                 std::to_string(t.total()), percent(t.success_rate_percent())});
    table.print(std::cout);
  }
  if (!args.by.empty()) {
    std::cout << fmt::format("\nby {}:\n", args.by);
    Table table({args.by == "agent" ? "AGENT" : "TASK", "NAME", "RUNS", "SUCCESS RATE", "P50", "P95", "SKIPPED",
                 "MISSED"});
    for (const auto& g : stats.groups())
      table.add({g.key(), g.name(), std::to_string(g.stats().total()),
                 g.stats().total() == 0 ? "-" : percent(g.stats().success_rate_percent()),
                 duration_text(g.stats().p50_duration_ms()), duration_text(g.stats().p95_duration_ms()),
                 std::to_string(g.stats().skipped()), std::to_string(g.stats().missed())});
    table.print(std::cout);
    if (stats.group_count() > static_cast<std::uint32_t>(stats.groups_size()))
      std::cout << fmt::format("({} of {} shown)\n", stats.groups_size(), stats.group_count());
  }
}

void run_audit(const ApiFlags& flags, const HistoryArgs& args) {
  Query query{{"page", std::to_string(args.page)}, {"page_size", std::to_string(args.page_size)}};
  if (!args.actor.empty()) query.emplace_back("actor", args.actor);
  if (!args.action.empty()) query.emplace_back("action", args.action);
  if (!args.target_type.empty()) query.emplace_back("target_type", args.target_type);
  if (!args.since.empty()) query.emplace_back("from_unix_ms", std::to_string(unix_ms_of(args.since, "--since")));
  if (!args.keyword.empty()) query.emplace_back("keyword", args.keyword);
  auto api = ApiClient::from_flags(flags);
  const auto listing = api.get<v1::ListAuditResponse>("/audit", query);
  if (flags.format() != OutputFormat::table) return print_message(listing, flags.format());
  if (listing.items().empty()) {
    std::cout << "no audit entries match\n";
    return;
  }
  Table table({"TIME", "ACTOR", "ACTION", "TARGET", "OK", "FROM", "DETAIL"});
  for (const auto& e : listing.items()) {
    std::string actor = e.actor();
    if (!e.token_name().empty()) actor += " (token " + e.token_name() + ")";
    std::string target = e.target_type().empty() ? "-" : e.target_type() + " " + (e.target_name().empty() ? e.target_id() : e.target_name());
    table.add({time_text(e.at_unix_ms()), actor, e.action(), target, yes_no(e.success()),
               e.source_ip().empty() ? "-" : e.source_ip(), clipped(e.detail(), 60)});
  }
  table.print(std::cout);
  print_paging(static_cast<std::size_t>(listing.items_size()), listing.total(), listing.page(), listing.page_size());
}

std::shared_ptr<ApiFlags> api_command(CLI::App& command) {
  auto flags = std::make_shared<ApiFlags>();
  add_api_flags(command, *flags);
  command.fallthrough();
  return flags;
}

}  // namespace

void add_history_commands(CLI::App& app) {
  auto args = std::make_shared<HistoryArgs>();

  auto* exec = app.add_subcommand("exec", "executions and their logs (admin API)");
  exec->require_subcommand(1);
  auto exec_flags = api_command(*exec);
  auto* ls = exec->add_subcommand("ls", "list executions, newest first");
  ls->add_option("--task", args->task, "only this task id");
  ls->add_option("--agent", args->agent, "only this agent id");
  ls->add_option("--group", args->group, "only agents of this group (id or name)");
  ls->add_option("--status", args->statuses, "only this status (repeatable): " +
                                                 enum_choices(v1::ExecutionStatus_descriptor()));
  ls->add_option("--from", args->from, "scheduled at or after this RFC 3339 instant");
  ls->add_option("--to", args->to, "scheduled before this RFC 3339 instant");
  ls->add_option("--keyword", args->keyword, "substring of the task name, id, failure reason or error");
  ls->add_option("--page", args->page, "page number")->check(CLI::Range(1u, 1000000u));
  ls->add_option("--page-size", args->page_size, "executions per page")->check(CLI::Range(1u, 500u))->capture_default_str();
  ls->callback([exec_flags, args] { run_exec_ls(*exec_flags, *args); });
  auto* get = exec->add_subcommand("get", "an execution with the start of its output");
  get->add_option("id", args->id, "execution id")->required();
  get->callback([exec_flags, args] { run_exec_get(*exec_flags, *args); });
  auto* logs = exec->add_subcommand("logs", "the output of an execution");
  logs->add_option("id", args->id, "execution id")->required();
  logs->add_flag("-f,--follow", args->follow, "keep reading (every second) until the execution has finished");
  // The whole log: past the first 10 KB the coordinator fetches it from the agent.
  logs->callback([exec_flags, args] { run_exec_logs(*exec_flags, *args); });
  auto* cancel = exec->add_subcommand("cancel", "cancel a pending or running execution");
  cancel->add_option("id", args->id, "execution id")->required();
  cancel->add_option("--reason", args->reason, "why, recorded with the execution and in the audit log");
  cancel->callback([exec_flags, args] { run_exec_cancel(*exec_flags, *args); });
  auto* retry = exec->add_subcommand(
      "retry", "run a finished execution again on the agent it ran on (trigger RETRY, linked to it); prints the new id");
  retry->add_option("id", args->id, "execution id")->required();
  retry->add_flag("-w,--wait", args->follow, "wait until the retry has ended; fail unless it succeeded");
  retry->callback([exec_flags, args] { run_exec_retry(*exec_flags, *args); });
  mention_api_flags(*exec);

  auto* stats = app.add_subcommand("stats", "execution statistics: counts, success rate, durations, failures (admin API)");
  auto stats_flags = api_command(*stats);
  stats->add_option("--task", args->task, "only this task id");
  stats->add_option("--group", args->group, "only agents of this group (id or name)");
  stats->add_option("--agent", args->agent, "only this agent id");
  stats->add_option("--range", args->range, "how far back: 24h, 7d, 30d (default 7d)");
  stats->add_option("--by", args->by, "also break the figures down per agent or per task")
      ->check(CLI::IsMember({"agent", "task"}));
  stats->callback([stats_flags, args] { run_stats(*stats_flags, *args); });

  auto* audit = app.add_subcommand("audit", "the audit log: who changed what, when, from where (admin API)");
  auto audit_flags = api_command(*audit);
  audit->add_option("--actor", args->actor, "only this user (or system)");
  audit->add_option("--action", args->action, "only this action (task.create), or all of an object (task.)");
  audit->add_option("--target-type", args->target_type, "task, group, agent, execution, user, token");
  audit->add_option("--since", args->since, "at or after this RFC 3339 instant");
  audit->add_option("--keyword", args->keyword, "substring of the target name or detail");
  audit->add_option("--page", args->page, "page number")->check(CLI::Range(1u, 1000000u));
  audit->add_option("--page-size", args->page_size, "entries per page")->check(CLI::Range(1u, 500u))->capture_default_str();
  audit->callback([audit_flags, args] { run_audit(*audit_flags, *args); });
}

}  // namespace qfctl
