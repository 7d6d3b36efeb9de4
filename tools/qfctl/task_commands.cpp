// SPDX-License-Identifier: Apache-2.0
// `qfctl task ...` through the admin API: list, show, create, edit, delete, enable, disable,
// trigger and preview tasks (`task apply` is in task_apply.cpp).
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>

#include <fmt/format.h>

#include <quartzflow/time.hpp>
#include <quartzflow/v1/admin.pb.h>
#include <quartzflow/yaml_config.hpp>

#include "api.hpp"
#include "commands.hpp"
#include "table.hpp"

namespace qfctl {
namespace {

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;

struct TaskArgs {
  std::string id;
  // ls
  std::string status;
  std::string group;
  std::string keyword;
  bool enabled = false;
  bool disabled = false;
  std::string label_selector;
  std::string sort;
  std::uint32_t page = 1;
  std::uint32_t page_size = 20;
  // create
  std::string file;
  // trigger
  std::vector<std::string> params;
  std::string reason;
  std::vector<std::string> agents;
  // batch
  std::string action;
  std::vector<std::string> ids;
  // next
  std::uint32_t count = 5;
  // edit / update
  bool force = false;
};

std::string path_of(std::string_view id) { return "/tasks/" + url_encode(id); }

/// Fields the coordinator fills in; they are left out of `task edit` and ignored on input.
const std::vector<std::string> k_task_output_fields = {"group_names",        "upstream_task_ids",  "revision",
                                                       "config_version",     "created_at_unix_ms", "updated_at_unix_ms",
                                                       "created_by",         "updated_by"};

/// Cron text, `@every 90s`, `@once ...`, `@manual`, with the zone when not UTC.
std::string schedule_text(const v1::Schedule& s) {
  std::string text;
  switch (s.kind_case()) {
    case v1::Schedule::kCron: text = s.cron(); break;
    case v1::Schedule::kIntervalSeconds: text = "@every " + qf::format_duration(std::chrono::seconds{s.interval_seconds()}); break;
    case v1::Schedule::kFixedDelaySeconds:
      text = "@delay " + qf::format_duration(std::chrono::seconds{s.fixed_delay_seconds()});
      break;
    case v1::Schedule::kOnceAtUnixMs: text = "@once " + time_text(s.once_at_unix_ms()); break;
    case v1::Schedule::kManual: text = "@manual"; break;
    case v1::Schedule::kAgentStart: text = "@reboot"; break;
    case v1::Schedule::KIND_NOT_SET: text = "-"; break;
  }
  if (!s.time_zone().empty() && s.time_zone() != "UTC") text += " (" + s.time_zone() + ")";
  return text;
}

std::string groups_text(const v1::Task& task) {
  if (task.all_agents()) return "(all agents)";
  std::string text;
  for (int i = 0; i < task.group_ids_size(); ++i) {
    const std::string& name = i < task.group_names_size() && !task.group_names(i).empty() ? task.group_names(i)
                                                                                          : task.group_ids(i);
    text += (text.empty() ? "" : ",") + name;
  }
  return text.empty() ? "-" : text;
}

std::string status_text(v1::ExecutionStatus status) {
  return status == v1::EXECUTION_STATUS_UNSPECIFIED ? "-" : short_enum_name(v1::ExecutionStatus_descriptor(), status);
}

std::string executor_text(const v1::Task& task) {
  if (task.has_shell()) {
    if (task.shell().argv_size() > 0) {
      std::string text;
      for (const auto& word : task.shell().argv()) text += (text.empty() ? "" : " ") + word;
      return "shell: " + (text.size() > 80 ? text.substr(0, 77) + "..." : text);
    }
    return "shell script";
  }
  if (task.has_http()) return fmt::format("http: {} {}", task.http().method().empty() ? "GET" : task.http().method(), task.http().url());
  if (task.has_plugin()) return "plugin: " + task.plugin().name();
  return "-";
}

void run_ls(const ApiFlags& flags, const TaskArgs& args) {
  auto api = ApiClient::from_flags(flags);
  Query query{{"page", std::to_string(args.page)}, {"page_size", std::to_string(args.page_size)}};
  if (!args.status.empty()) {
    if (!parse_enum_name(v1::ExecutionStatus_descriptor(), args.status))
      throw CommandFailure{k_exit_invalid_input, fmt::format("--status \"{}\": expected one of {}", args.status,
                                                             enum_choices(v1::ExecutionStatus_descriptor()))};
    query.emplace_back("last_status", args.status);
  }
  if (!args.group.empty()) query.emplace_back("group_id", group_id_of(api, args.group));
  if (!args.keyword.empty()) query.emplace_back("keyword", args.keyword);
  if (args.enabled) query.emplace_back("enabled", "enabled");
  if (args.disabled) query.emplace_back("enabled", "disabled");
  if (!args.label_selector.empty()) query.emplace_back("label_selector", args.label_selector);
  if (!args.sort.empty()) query.emplace_back("sort", args.sort);
  const auto listing = api.get<v1::ListTasksResponse>("/tasks", query);
  if (flags.format() != OutputFormat::table) return print_message(listing, flags.format());
  if (listing.items().empty()) {
    std::cout << "no tasks match\n";
    return;
  }
  Table table({"ID", "NAME", "ENABLED", "SCHEDULE", "NEXT FIRE", "LAST", "GROUPS"});
  for (const auto& s : listing.items()) {
    const auto& t = s.task();
    table.add({t.id(), t.name(), yes_no(t.enabled()), schedule_text(t.schedule()), time_text(s.next_fire_unix_ms()),
               status_text(s.last_status()), groups_text(t)});
  }
  table.print(std::cout);
  print_paging(static_cast<std::size_t>(listing.items_size()), listing.total(), listing.page(), listing.page_size());
}

void run_get(const ApiFlags& flags, const TaskArgs& args) {
  auto api = ApiClient::from_flags(flags);
  const auto s = api.get<v1::TaskSummary>(path_of(args.id));
  if (flags.format() != OutputFormat::table) return print_message(s, flags.format());
  const auto& t = s.task();
  const auto& placement = t.placement();
  std::string placement_text = short_enum_name(v1::PlacementMode_descriptor(),
                                               placement.mode() == v1::PLACEMENT_MODE_UNSPECIFIED ? v1::PLACEMENT_MODE_ALL
                                                                                                  : placement.mode());
  if (placement.mode() == v1::PLACEMENT_MODE_ONE || placement.mode() == v1::PLACEMENT_MODE_SHARDED)
    placement_text += fmt::format(" ({})", short_enum_name(v1::RoutingStrategy_descriptor(),
                                                          placement.routing() == v1::ROUTING_STRATEGY_UNSPECIFIED
                                                              ? v1::ROUTING_STRATEGY_ROUND_ROBIN
                                                              : placement.routing()));
  std::vector<std::pair<std::string, std::string>> fields = {
      {"id", t.id()},
      {"name", t.name()},
      {"description", t.description().empty() ? "-" : t.description()},
      {"enabled", yes_no(t.enabled())},
      {"schedule", fmt::format("{}  ({})", schedule_text(t.schedule()), s.schedule_description())},
      {"runs", executor_text(t)},
      {"placement", placement_text},
      {"groups", groups_text(t)},
      {"next fire", time_text(s.next_fire_unix_ms())},
      {"last run", s.last_execution_id().empty()
                       ? "-"
                       : fmt::format("{} {} (scheduled {})", s.last_execution_id(), status_text(s.last_status()),
                                     time_text(s.last_scheduled_unix_ms()))},
      {"history", fmt::format("{} runs: {} succeeded, {} failed; {} running now", s.run_count(), s.success_count(),
                              s.failure_count(), s.running_count())},
      {"agents", fmt::format("{} targeted, {} online, {} in sync", s.target_agent_count(), s.online_agent_count(),
                             s.in_sync_agent_count())},
      {"revision", fmt::format("{} (updated {} by {})", t.revision(), time_text(t.updated_at_unix_ms()),
                               t.updated_by().empty() ? "-" : t.updated_by())},
  };
  for (const auto& p : t.params())
    fields.emplace_back("param " + p.name(), fmt::format("default \"{}\"{}{}", p.default_value(),
                                                        p.required() ? ", required" : "",
                                                        p.description().empty() ? "" : "; " + p.description()));
  print_fields(fields);
}

void print_task_result(const ApiFlags& flags, const v1::Task& task, std::string_view verb) {
  if (flags.format() != OutputFormat::table) return print_message(task, flags.format());
  std::cout << fmt::format("{} task {} ({}, revision {}{})\n", verb, task.id(), task.name(), task.revision(),
                           task.enabled() ? "" : ", disabled");
}

void run_create(const ApiFlags& flags, const TaskArgs& args) {
  v1::Task task;
  read_message_file(args.file, task);
  auto api = ApiClient::from_flags(flags);
  const auto created = api.post<v1::Task>("/tasks", &task);
  print_task_result(flags, created, "created");
  if (!created.enabled() && flags.format() == OutputFormat::table)
    std::cerr << fmt::format("qfctl: note: the file does not say `enabled: true`, so the task does not run on its "
                             "schedule; qfctl task enable {}\n",
                             created.id());
}

/// Runs $VISUAL or $EDITOR (else vi) on `file` through the shell, so that EDITOR may hold arguments.
void run_editor(const std::string& file) {
  std::string editor = std::getenv("VISUAL") ? std::getenv("VISUAL") : "";
  if (editor.empty() && std::getenv("EDITOR")) editor = std::getenv("EDITOR");
  if (editor.empty()) editor = "vi";
  const pid_t pid = ::fork();
  if (pid < 0) throw CommandFailure{k_exit_failure, fmt::format("cannot start the editor: {}", std::strerror(errno))};
  if (pid == 0) {
    const std::string command = editor + " \"$1\"";
    ::execl("/bin/sh", "sh", "-c", command.c_str(), "qfctl-edit", file.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw CommandFailure{k_exit_failure, fmt::format("the editor \"{}\" failed (status {}); nothing was changed; "
                                                     "the file is kept at {}",
                                                     editor, WIFEXITED(status) ? WEXITSTATUS(status) : -1, file)};
}

std::string read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void run_edit(const ApiFlags& flags, const TaskArgs& args) {
  auto api = ApiClient::from_flags(flags);
  const auto stored = api.get<v1::TaskSummary>(path_of(args.id)).task();
  YamlStyle style;
  style.include_defaults = false;
  style.short_enum_names = true;
  style.omit = k_task_output_fields;
  const std::string original =
      fmt::format("# Task {} at revision {}. Save and quit to update it; an unchanged file changes nothing.\n"
                  "# Fields as in `qfctl task create`; see proto/quartzflow/v1/task.proto.\n",
                  stored.id(), stored.revision()) +
      message_to_yaml(stored, style);

  std::string file = (std::filesystem::temp_directory_path() / "qfctl-task-XXXXXX.yaml").string();
  const int fd = ::mkstemps(file.data(), 5);
  if (fd < 0) throw CommandFailure{k_exit_failure, fmt::format("cannot create a temporary file: {}", std::strerror(errno))};
  const bool written = ::write(fd, original.data(), original.size()) == static_cast<ssize_t>(original.size());
  ::close(fd);
  if (!written) throw CommandFailure{k_exit_failure, fmt::format("cannot write {}", file)};

  run_editor(file);
  const std::string edited = read_whole_file(file);
  if (edited == original) {
    ::unlink(file.c_str());
    std::cout << fmt::format("task {}: no changes\n", stored.id());
    return;
  }
  v1::Task task;
  qf::YamlError error;
  if (!qf::yaml_to_message(edited, file, task, error))
    throw CommandFailure{k_exit_invalid_input,
                         fmt::format("{}\nnothing was changed; your edit is kept in {}", error.message(), file)};
  task.set_revision(stored.revision());  // a concurrent change is refused, not overwritten
  try {
    const Query query = args.force ? Query{{"force", "true"}} : Query{};
    const auto updated = api.put<v1::Task>(path_of(stored.id()), task, query);
    ::unlink(file.c_str());
    print_task_result(flags, updated, "updated");
  } catch (CommandFailure& failure) {
    failure.message += fmt::format("\nnothing was changed; your edit is kept in {}", file);
    throw;
  }
}

void run_set_enabled(const ApiFlags& flags, const TaskArgs& args, bool enabled) {
  auto api = ApiClient::from_flags(flags);
  const auto task = api.post<v1::Task>(path_of(args.id) + (enabled ? "/enable" : "/disable"));
  print_task_result(flags, task, enabled ? "enabled" : "disabled");
}

void run_rm(const ApiFlags& flags, const TaskArgs& args) {
  auto api = ApiClient::from_flags(flags);
  api.remove(path_of(args.id));
  if (flags.format() == OutputFormat::table) std::cout << fmt::format("deleted task {} (its history stays)\n", args.id);
}

void run_trigger(const ApiFlags& flags, const TaskArgs& args) {
  v1::TriggerRequest request;
  for (const auto& param : args.params) {
    const auto eq = param.find('=');
    if (eq == std::string::npos || eq == 0)
      throw CommandFailure{k_exit_invalid_input, fmt::format("--param \"{}\": expected NAME=VALUE", param)};
    (*request.mutable_params())[param.substr(0, eq)] = param.substr(eq + 1);
  }
  request.set_reason(args.reason);
  for (const auto& agent : args.agents) request.add_agent_ids(agent);
  auto api = ApiClient::from_flags(flags);
  const auto response = api.post<v1::TriggerResponse>(path_of(args.id) + "/trigger", &request);
  if (flags.format() != OutputFormat::table) return print_message(response, flags.format());
  for (const auto& id : response.execution_ids()) std::cout << id << "\n";
  if (response.execution_ids().empty()) std::cerr << "qfctl: no execution was created (no agent to run it?)\n";
}

void run_batch(const ApiFlags& flags, const TaskArgs& args) {
  v1::BatchTaskRequest request;
  if (args.action == "enable") request.set_action(v1::BATCH_TASK_ACTION_ENABLE);
  else if (args.action == "disable") request.set_action(v1::BATCH_TASK_ACTION_DISABLE);
  else if (args.action == "delete") request.set_action(v1::BATCH_TASK_ACTION_DELETE);
  else
    throw CommandFailure{k_exit_invalid_input,
                         fmt::format("action \"{}\": expected enable, disable or delete", args.action)};
  for (const auto& id : args.ids) request.add_task_ids(id);
  auto api = ApiClient::from_flags(flags);
  const auto response = api.post<v1::BatchTaskResponse>("/tasks/batch", &request);
  if (flags.format() != OutputFormat::table) return print_message(response, flags.format());
  const char* done = args.action == "enable" ? "enabled" : args.action == "disable" ? "disabled" : "deleted";
  for (const auto& r : response.results()) std::cout << fmt::format("{} task {}\n", done, r.id());
}

void run_next(const ApiFlags& flags, const TaskArgs& args) {
  auto api = ApiClient::from_flags(flags);
  const auto preview = api.get<v1::CronParseResponse>(path_of(args.id) + "/next", {{"count", std::to_string(args.count)}});
  if (flags.format() != OutputFormat::table) return print_message(preview, flags.format());
  Table table({"UTC", "LOCAL", "ZONE", "NOTE"});
  for (const auto& f : preview.next_fires()) {
    std::string note;
    if (f.dst_rule() == v1::DST_RULE_GAP_SHIFTED) note = "DST gap: shifted";
    else if (f.dst_rule() == v1::DST_RULE_OVERLAP_FIRST) note = "DST overlap: first";
    else if (f.dst_rule() == v1::DST_RULE_OVERLAP_SECOND) note = "DST overlap: second";
    else if (f.near_dst_transition()) note = "near a DST change";
    table.add({time_text(f.unix_ms()), f.local_time(), f.zone_abbreviation(), note});
  }
  std::cout << preview.description() << "\n";
  if (preview.next_fires().empty()) {
    std::cout << "no further fires\n";
    return;
  }
  table.print(std::cout);
}

}  // namespace

void add_task_commands(CLI::App& app) {
  auto* task = app.add_subcommand("task", "tasks on the coordinator (admin API)");
  task->require_subcommand(1);
  auto flags = std::make_shared<ApiFlags>();
  add_api_flags(*task, *flags);
  task->fallthrough();  // `qfctl task ls -o json`: the sub-commands pass the API flags up
  auto args = std::make_shared<TaskArgs>();

  auto* ls = task->add_subcommand("ls", "list tasks with their next fire and last status");
  ls->add_option("--status", args->status, "only tasks whose latest run has this status (success, failure, ...)");
  ls->add_option("--group", args->group, "only tasks of this group (id or name)");
  ls->add_option("--keyword", args->keyword, "substring of the name or description");
  auto* enabled = ls->add_flag("--enabled", args->enabled, "only enabled tasks");
  ls->add_flag("--disabled", args->disabled, "only disabled tasks")->excludes(enabled);
  ls->add_option("--label", args->label_selector, "label selector key=value[,key=value]");
  ls->add_option("--sort", args->sort, "name, created_at_unix_ms, updated_at_unix_ms, next_fire_unix_ms, "
                                       "last_scheduled_unix_ms; '-' prefix for descending");
  ls->add_option("--page", args->page, "page number")->check(CLI::Range(1u, 1000000u));
  ls->add_option("--page-size", args->page_size, "tasks per page")->check(CLI::Range(1u, 500u))->capture_default_str();
  ls->callback([flags, args] { run_ls(*flags, *args); });

  auto* get = task->add_subcommand("get", "a task with its live figures");
  get->add_option("id", args->id, "task id")->required();
  get->callback([flags, args] { run_get(*flags, *args); });

  auto* create = task->add_subcommand("create", "create a task from a YAML or JSON file (a Task)");
  create->add_option("-f,--file", args->file, "the task file; - for stdin")->required();
  create->callback([flags, args] { run_create(*flags, *args); });

  auto* edit = task->add_subcommand("edit", "edit a task's YAML in $EDITOR and save it back");
  edit->add_option("id", args->id, "task id")->required();
  edit->add_flag("--force", args->force, "save even while runs of the task are in progress");
  edit->callback([flags, args] { run_edit(*flags, *args); });

  auto* rm = task->add_subcommand("rm", "delete a task (its history stays)");
  rm->add_option("id", args->id, "task id")->required();
  rm->callback([flags, args] { run_rm(*flags, *args); });

  auto* enable = task->add_subcommand("enable", "schedule a task again");
  enable->add_option("id", args->id, "task id")->required();
  enable->callback([flags, args] { run_set_enabled(*flags, *args, true); });

  auto* disable = task->add_subcommand("disable", "stop scheduling a task");
  disable->add_option("id", args->id, "task id")->required();
  disable->callback([flags, args] { run_set_enabled(*flags, *args, false); });

  auto* trigger = task->add_subcommand("trigger", "run a task now; prints the execution ids");
  trigger->add_option("id", args->id, "task id")->required();
  trigger->add_option("--param", args->params, "a run parameter NAME=VALUE (repeatable)");
  trigger->add_option("--reason", args->reason, "why, for the audit log");
  trigger->add_option("--agent", args->agents,
                      "run it on this agent (repeatable; each must be online and of the task's groups); "
                      "default: the placement decides");
  trigger->callback([flags, args] { run_trigger(*flags, *args); });

  auto* batch = task->add_subcommand(
      "batch", "enable, disable or delete many tasks at once: all or nothing (every unknown id is named)");
  batch->add_option("action", args->action, "enable, disable or delete")
      ->required()
      ->check(CLI::IsMember({"enable", "disable", "delete"}));
  batch->add_option("ids", args->ids, "task ids (1-1000)")->required();
  batch->callback([flags, args] { run_batch(*flags, *args); });

  auto* next = task->add_subcommand("next", "the next fires of a task as the coordinator computes them");
  next->add_option("id", args->id, "task id")->required();
  next->add_option("--count", args->count, "how many fires")->check(CLI::Range(1u, 100u))->capture_default_str();
  next->callback([flags, args] { run_next(*flags, *args); });

  add_task_apply_command(*task, flags);
  mention_api_flags(*task);
}

}  // namespace qfctl
