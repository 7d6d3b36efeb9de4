// SPDX-License-Identifier: Apache-2.0
// `qfctl import crontab [FILE|-]`: a crontab as a task manifest (see crontab_import.hpp); the
// manifest is read back as `qfctl task apply` reads it before it is written.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>

#include <pwd.h>

#include <fmt/format.h>

#include <quartzflow/schedule.hpp>
#include <quartzflow/task.hpp>
#include <quartzflow/v1/config.pb.h>
#include <quartzflow/yaml_config.hpp>

#include "commands.hpp"
#include "crontab_import.hpp"

namespace qfctl {
namespace {

namespace fs = std::filesystem;
namespace qf = quartzflow;
namespace v1 = quartzflow::v1;

struct ImportArgs {
  std::string file = "-";
  std::string user;
  std::string group;
  std::string time_zone;
  std::string prefix;
  std::string output;
  bool system = false;
  bool user_format = false;
  bool keep_going = false;
};

/// /etc/crontab and the files of a cron.d directory have the user column.
bool system_crontab_path(const std::string& file) {
  if (file == "-") return false;
  const fs::path path = fs::absolute(file).lexically_normal();
  return (path.filename() == "crontab" && path.parent_path().filename() == "etc") ||
         path.parent_path().filename() == "cron.d";
}

void run_import(const ImportArgs& args) {
  std::string text;
  if (args.file == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else {
    std::ifstream in(args.file, std::ios::binary);
    if (!in) throw CommandFailure{k_exit_invalid_input, fmt::format("{}: cannot be read", args.file)};
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  if (args.system && args.user_format)
    throw CommandFailure{k_exit_invalid_input, "--system and --user-format: give one of them"};
  if (args.system && !args.user.empty())
    throw CommandFailure{k_exit_invalid_input,
                         "--user: a system crontab names the user of each job in its user column"};
  if (!args.time_zone.empty() && args.time_zone != "local") {
    qf::error_code ec;
    qf::ValidationError detail;
    qf::ScheduleSpec probe = qf::ScheduleSpec::from_text("@daily");
    probe.time_zone = args.time_zone;
    if (!qf::Schedule::create(probe, "probe", ec, &detail))
      throw CommandFailure{k_exit_invalid_input, fmt::format("--tz: {}", detail.reason)};
  }

  CrontabImportOptions options;
  options.source_name = args.file;
  options.user = args.user;
  options.group = args.group;
  options.time_zone = args.time_zone;
  options.prefix = args.prefix;
  if (args.system || system_crontab_path(args.file)) options.system = true;
  if (args.user_format) options.system = false;
  options.user_exists = [](const std::string& name) { return ::getpwnam(name.c_str()) != nullptr; };
  const auto imported = import_crontab(text, options);

  const std::string shown = args.file == "-" ? "<stdin>" : args.file;
  for (const auto& p : imported.problems) std::cerr << fmt::format("{}:{}: {}: {}\n", shown, p.line, p.reason, p.text);

  // What `task apply` will read: the same reader, the defaults, the validation.
  {
    v1::TaskManifest manifest;
    qf::YamlError error;
    if (!qf::yaml_to_message(imported.yaml, "<generated manifest>", manifest, error))
      throw CommandFailure{1, fmt::format("the generated manifest does not read back (a bug): {}", error.message())};
    std::vector<v1::Task> tasks;
    for (auto task : manifest.tasks()) {
      qf::apply_task_defaults(manifest.defaults(), task);
      if (task.id().empty()) task.set_id(task.name());
      tasks.push_back(std::move(task));
    }
    if (auto problem = qf::validate_tasks(tasks))
      throw CommandFailure{k_exit_invalid_input,
                           fmt::format("the generated manifest is not valid: {}: {}", problem->field, problem->reason)};
  }

  if (!imported.problems.empty() && !args.keep_going)
    throw CommandFailure{k_exit_invalid_input,
                         fmt::format("{} line(s) of {} could not be imported (above); nothing was written. "
                                     "--keep-going writes the others, with these lines as comments",
                                     imported.problems.size(), shown)};
  if (args.output.empty() || args.output == "-") {
    std::cout << imported.yaml << std::flush;
  } else {
    std::ofstream out(args.output, std::ios::binary | std::ios::trunc);
    out << imported.yaml;
    out.close();
    if (!out) throw CommandFailure{1, fmt::format("{}: cannot be written", args.output)};
  }
  std::cerr << fmt::format(
      "{}: {} task(s) imported ({} format){}\n", shown, imported.task_count, imported.system_format ? "system" : "user",
      imported.problems.empty() ? "" : fmt::format(", {} line(s) not imported", imported.problems.size()));
}

}  // namespace

void add_import_commands(CLI::App& app) {
  auto* import_command = app.add_subcommand("import", "turn other schedulers' configuration into task manifests");
  import_command->require_subcommand(1);
  auto args = std::make_shared<ImportArgs>();
  auto* crontab = import_command->add_subcommand(
      "crontab",
      "a crontab (user format, or /etc/crontab and cron.d with the user column) as a task manifest for "
      "`qfctl task apply`; lines that cannot be mapped are reported with their line number");
  crontab->add_option("file", args->file,
                      "the crontab; - (default) for standard input, e.g. `crontab -l | qfctl import crontab`");
  crontab->add_option("--user", args->user, "user format: the crontab's owner; the tasks run as this user");
  crontab->add_option("--group", args->group, "group (id or name) the tasks run in");
  crontab->add_option("--tz", args->time_zone,
                      "time zone of the schedules when the crontab sets no CRON_TZ (IANA name, or local: each "
                      "agent's own zone); default UTC");
  crontab->add_option("--prefix", args->prefix, "prefix of the task names (one crontab per host: the host name)");
  crontab->add_option("-o,--output", args->output, "write the manifest to this file (default standard output)");
  crontab->add_flag("--system", args->system,
                    "the crontab has a user column (as /etc/crontab and cron.d files; "
                    "detected for those paths and when every job names a known user)");
  crontab->add_flag("--user-format", args->user_format, "the crontab has no user column");
  crontab->add_flag("--keep-going", args->keep_going,
                    "write the manifest even when some lines cannot be imported (they are reported and kept as "
                    "comments); exit 0");
  crontab->callback([args] { run_import(*args); });
}

}  // namespace qfctl
