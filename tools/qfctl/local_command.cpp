// SPDX-License-Identifier: Apache-2.0
// `qfctl local`: read an agent's LocalStore (read-only, also while the agent runs).
#include <iostream>
#include <sstream>
#include <map>
#include <memory>

#include <utility>
#include <boost/asio/io_context.hpp>
#include <date/tz.h>
#include <fmt/format.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <quartzflow/local_store.hpp>
#include <quartzflow/schedule.hpp>
#include <quartzflow/task.hpp>

#include "commands.hpp"
#include "common/enum_names.hpp"  // src/: the short names YAML, the API and qfctl share
#include "table.hpp"

namespace qfctl {
namespace {

namespace qf = quartzflow;
namespace pb = google::protobuf;

constexpr int k_exit_failure = 1;

struct LocalArgs {
  std::string store = "qf-agent-data/agent.db";
  std::string time_zone = "UTC";
  bool json = false;
  // stats
  bool today = false;
  std::string date;
  int days = 0;
  std::string task_id;
  // history
  std::string status;
  std::size_t limit = 200;
  // logs
  std::string execution_id;
  bool last = false;
  // tasks
  std::size_t count = 3;
  std::string after;
};

/// The store, opened read-only; a missing one is a clear error.
struct OpenStore {
  boost::asio::io_context io;
  std::unique_ptr<qf::LocalStore> store;
};

std::unique_ptr<OpenStore> open_store(const LocalArgs& args) {
  auto open = std::make_unique<OpenStore>();
  qf::LocalStoreOptions options;
  options.path = args.store;
  options.read_only = true;
  qf::error_code ec;
  std::string detail;
  open->store = qf::LocalStore::open(open->io.get_executor(), options, ec, &detail);
  if (!open->store)
    throw CommandFailure{k_exit_failure, fmt::format("{} (use --store PATH to the agent's agent.db)",
                                                     detail.empty() ? ec.message() : detail)};
  return open;
}

const date::time_zone* zone_of(const LocalArgs& args) {
  try {
    return date::locate_zone(args.time_zone);
  } catch (const std::exception&) {
    throw CommandFailure{k_exit_invalid_input, fmt::format("--tz: \"{}\" is not a known IANA time zone", args.time_zone)};
  }
}

date::year_month_day parse_date(const std::string& text, const char* flag) {
  int y = 0;
  unsigned m = 0;
  unsigned d = 0;
  char dash1 = 0;
  char dash2 = 0;
  std::istringstream in(text);
  in >> y >> dash1 >> m >> dash2 >> d;
  const date::year_month_day ymd{date::year{y}, date::month{m}, date::day{d}};
  if (text.size() != 10 || in.fail() || dash1 != '-' || dash2 != '-' || !ymd.ok())
    throw CommandFailure{k_exit_invalid_input, fmt::format("{}: \"{}\" is not a date such as 2026-11-25", flag, text)};
  return ymd;
}

std::string format_date(date::year_month_day ymd) { return date::format("%F", ymd); }

date::year_month_day today(const LocalArgs& args) {
  const auto local = zone_of(args)->to_local(std::chrono::system_clock::now());
  return date::year_month_day{date::floor<date::days>(local)};
}

/// [from, to] dates chosen by --today, --date or --days.
std::pair<std::string, std::string> date_range(const LocalArgs& args) {
  const auto now = today(args);
  if (!args.date.empty()) {
    const auto d = format_date(parse_date(args.date, "--date"));
    return {d, d};
  }
  if (args.days > 0) {
    const auto from = date::year_month_day{date::sys_days{now} - date::days{args.days - 1}};
    return {format_date(from), format_date(now)};
  }
  return {format_date(now), format_date(now)};
}

std::string status_name(qf::v1::ExecutionStatus status) {
  return qf::detail::EnumNames::of(qf::v1::ExecutionStatus_descriptor()).short_name(status);
}

std::string duration_text(std::int64_t ms) {
  if (ms < 1000) return fmt::format("{}ms", ms);
  if (ms < 60'000) return fmt::format("{:.1f}s", static_cast<double>(ms) / 1000.0);
  return fmt::format("{}m{:02}s", ms / 60'000, ms / 1000 % 60);
}

std::string instant_text(std::int64_t unix_ms) {
  if (unix_ms == 0) return "";
  return qf::format_rfc3339(qf::Instant{std::chrono::seconds{unix_ms / 1000}});
}

std::string to_json(const pb::Message& message) {
  std::string out;
  pb::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.add_whitespace = true;
  (void)pb::util::MessageToJsonString(message, &out, options);
  return out;
}

void run_stats(const LocalArgs& args) {
  auto open = open_store(args);
  const auto [from, to] = date_range(args);
  qf::error_code ec;
  const auto rows = open->store->daily_stats(from, to, args.task_id.empty() ? std::nullopt : std::optional(args.task_id), ec);
  if (ec) throw CommandFailure{k_exit_failure, "reading stats failed: " + ec.message()};
  // Sum the days per task.
  std::map<std::string, qf::v1::DailyStats> per_task;
  for (const auto& row : rows) {
    auto& sum = per_task[row.task_id()];
    sum.set_task_id(row.task_id());
    sum.set_task_name(row.task_name());
    sum.set_total(sum.total() + row.total());
    sum.set_success(sum.success() + row.success());
    sum.set_failure(sum.failure() + row.failure());
    sum.set_timeout(sum.timeout() + row.timeout());
    sum.set_cancelled(sum.cancelled() + row.cancelled());
    sum.set_skipped(sum.skipped() + row.skipped());
    sum.set_missed(sum.missed() + row.missed());
    sum.set_total_duration_ms(sum.total_duration_ms() + row.total_duration_ms());
  }
  if (args.json) {
    for (const auto& row : rows) std::cout << to_json(row);
    return;
  }
  std::cout << (from == to ? fmt::format("Tasks on {} ({})\n", from, args.time_zone)
                           : fmt::format("Tasks from {} to {} ({})\n", from, to, args.time_zone));
  Table table({"TASK", "TOTAL", "SUCCESS", "FAILURE", "SUCCESS RATE", "AVG DURATION"});
  for (const auto& [id, s] : per_task) {
    const auto ran = s.success() + s.failure() + s.timeout() + s.cancelled();
    const auto failed = s.failure() + s.timeout();
    table.add({s.task_name().empty() ? id : s.task_name(), std::to_string(s.total()), std::to_string(s.success()),
               std::to_string(failed), ran == 0 ? "-" : fmt::format("{:.1f}%", 100.0 * s.success() / ran),
               ran == 0 ? "-" : duration_text(s.total_duration_ms() / ran)});
  }
  if (per_task.empty()) {
    std::cout << "no runs recorded\n";
    return;
  }
  table.print(std::cout);
}

qf::ExecutionQuery day_query(const LocalArgs& args) {
  qf::ExecutionQuery query;
  const auto* zone = zone_of(args);
  const auto day = args.date.empty() ? today(args) : parse_date(args.date, "--date");
  const auto local_start = date::local_days{day};
  query.scheduled_from = std::chrono::floor<std::chrono::seconds>(zone->to_sys(local_start, date::choose::earliest));
  query.scheduled_to =
      std::chrono::floor<std::chrono::seconds>(zone->to_sys(local_start + date::days{1}, date::choose::earliest));
  if (!args.task_id.empty()) query.task_id = args.task_id;
  if (!args.status.empty()) {
    qf::v1::ExecutionStatus status;
    std::string upper = "EXECUTION_STATUS_";
    for (char c : args.status) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    if (!qf::v1::ExecutionStatus_Parse(upper, &status) || status == qf::v1::EXECUTION_STATUS_UNSPECIFIED)
      throw CommandFailure{k_exit_invalid_input,
                           fmt::format("--status: \"{}\" is not one of pending, running, success, failure, timeout, "
                                       "cancelled, skipped, missed", args.status)};
    query.status = status;
  }
  query.limit = args.limit;
  return query;
}

void run_history(const LocalArgs& args) {
  auto open = open_store(args);
  auto query = day_query(args);
  qf::error_code ec;
  const auto records = open->store->executions(query, ec);
  if (ec) throw CommandFailure{k_exit_failure, "reading executions failed: " + ec.message()};
  if (args.json) {
    for (const auto& r : records) std::cout << to_json(r);
    return;
  }
  if (records.empty()) {
    std::cout << "no executions match\n";
    return;
  }
  Table table({"EXECUTION ID", "TASK", "STATUS", "SCHEDULED", "DURATION", "EXIT", "DETAIL"});
  for (const auto& r : records) {
    std::string detail = !r.error_message().empty() ? r.error_message() : r.skip_detail();
    if (detail.size() > 60) detail = detail.substr(0, 57) + "...";
    table.add({r.execution_id(), r.task_name().empty() ? r.task_id() : r.task_name(), status_name(r.status()),
               instant_text(r.scheduled_unix_ms()), r.started_unix_ms() ? duration_text(r.duration_ms()) : "",
               r.has_exit_code() ? std::to_string(r.exit_code()) : "", detail});
  }
  table.print(std::cout);
}

void run_logs(const LocalArgs& args) {
  auto open = open_store(args);
  qf::error_code ec;
  std::string id = args.execution_id;
  if (id.empty()) {
    if (args.task_id.empty())
      throw CommandFailure{k_exit_invalid_input, "logs: give --execution-id ID, or --task-id ID --last"};
    qf::ExecutionQuery query;
    query.task_id = args.task_id;
    query.limit = 20;
    for (const auto& r : open->store->executions(query, ec)) {
      if (r.status() == qf::v1::EXECUTION_STATUS_SKIPPED || r.status() == qf::v1::EXECUTION_STATUS_MISSED) continue;
      id = r.execution_id();
      break;
    }
    if (id.empty()) throw CommandFailure{k_exit_failure, fmt::format("no runs of task \"{}\" are recorded", args.task_id)};
  }
  const auto record = open->store->execution(id, ec);
  if (!record) throw CommandFailure{k_exit_failure, fmt::format("no execution \"{}\" is recorded", id)};
  if (const auto log = open->store->full_log(id, ec)) {
    std::cout << *log;
    return;
  }
  std::cout << record->output();
  if (record->output_truncated())
    std::cerr << fmt::format("qfctl: the full log of {} is no longer kept; this is its first {} bytes of {}\n", id,
                             record->output().size(), record->output_bytes());
}

/// The day-file shapes of the requirements: executions of a day, and the day's stats.
void run_export(const LocalArgs& args) {
  auto open = open_store(args);
  auto query = day_query(args);
  query.limit = 1'000'000;
  query.newest_first = false;
  qf::error_code ec;
  const auto records = open->store->executions(query, ec);
  const std::string day = format_date(args.date.empty() ? today(args) : parse_date(args.date, "--date"));
  const std::string agent = records.empty() ? "" : records.front().agent_id();

  pb::Struct file;
  auto& fields = *file.mutable_fields();
  fields["date"].set_string_value(day);
  fields["client_id"].set_string_value(agent);
  auto* executions = fields["executions"].mutable_list_value();
  for (const auto& r : records) {
    auto& e = *executions->add_values()->mutable_struct_value()->mutable_fields();
    e["execution_id"].set_string_value(r.execution_id());
    e["task_id"].set_string_value(r.task_id());
    e["task_name"].set_string_value(r.task_name());
    e["status"].set_string_value(status_name(r.status()));
    e["start_time"].set_string_value(instant_text(r.started_unix_ms()));
    e["end_time"].set_string_value(instant_text(r.ended_unix_ms()));
    e["duration_ms"].set_number_value(static_cast<double>(r.duration_ms()));
    if (r.has_exit_code()) {
      e["exit_code"].set_number_value(r.exit_code());
    } else {
      e["exit_code"].set_null_value(pb::NULL_VALUE);
    }
    e["synced"].set_bool_value(r.synced());
  }
  auto stats = open->store->daily_stats(day, day, std::nullopt, ec);
  auto* tasks = fields["daily_stats"].mutable_struct_value()->mutable_fields();
  (*tasks)["date"].set_string_value(day);
  (*tasks)["client_id"].set_string_value(agent);
  auto* per_task = (*tasks)["tasks"].mutable_struct_value()->mutable_fields();
  for (const auto& s : stats) {
    auto& t = *(*per_task)[s.task_id()].mutable_struct_value()->mutable_fields();
    t["task_name"].set_string_value(s.task_name());
    auto& c = *t["stats"].mutable_struct_value()->mutable_fields();
    c["total"].set_number_value(s.total());
    c["success"].set_number_value(s.success());
    c["failure"].set_number_value(s.failure());
    c["timeout"].set_number_value(s.timeout());
    c["cancelled"].set_number_value(s.cancelled());
    c["skipped"].set_number_value(s.skipped());
    c["missed"].set_number_value(s.missed());
    c["avg_duration_ms"].set_number_value(static_cast<double>(s.avg_duration_ms()));
    auto& hourly = *t["hourly"].mutable_struct_value()->mutable_fields();
    for (int h = 0; h < s.runs_per_hour_size() && h < 24; ++h) hourly[fmt::format("{:02}", h)].set_number_value(s.runs_per_hour(h));
  }
  std::cout << to_json(file);
}

/// The tasks the agent holds (its cached configuration) and their next fires: what will run
/// on this host even while its coordinator is unreachable.
void run_tasks(const LocalArgs& args) {
  auto open = open_store(args);
  qf::error_code ec;
  const auto config = open->store->cached_config(ec);
  if (ec) throw CommandFailure{k_exit_failure, "reading the cached configuration failed: " + ec.message()};
  qf::Instant after = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
  if (!args.after.empty()) {
    const auto parsed = qf::parse_rfc3339(args.after);
    if (!parsed)
      throw CommandFailure{
          k_exit_invalid_input,
          fmt::format("--after: \"{}\" is not an RFC 3339 instant such as 2026-11-25T08:00:00Z", args.after)};
    after = *parsed;
  }
  const auto* zone = zone_of(args);
  const auto local_text = [&](qf::Instant t) { return date::format("%F %T %Z", date::make_zoned(zone, t)); };

  struct Row {
    const qf::v1::Task* task;
    std::string schedule;
    std::string state;  // enabled, disabled, or why its schedule is unusable
    std::optional<qf::Instant> last;
    std::vector<qf::Instant> next;
  };
  std::vector<Row> rows;
  for (const auto& task : config.tasks) {
    Row row{&task, "", task.enabled() ? "enabled" : "disabled", {}, {}};
    if (auto last = open->store->last_scheduled(task.id(), ec); !ec) row.last = last;
    qf::ValidationError why;
    const auto schedule = qf::Schedule::create(qf::schedule_spec_from_proto(task.schedule()), task.name(), ec, &why);
    if (!schedule) {
      row.state = "invalid schedule: " + (why.reason.empty() ? ec.message() : why.message());
      ec.clear();
    } else {
      row.schedule = schedule->describe();
      if (task.enabled()) {
        qf::ScheduleState state;
        state.last_scheduled = row.last;
        qf::Instant from = after;
        for (std::size_t i = 0; i < args.count; ++i) {
          const auto fire = schedule->next(from, state);
          if (!fire) break;
          row.next.push_back(fire->start_at);
          from = fire->scheduled;
          state.last_scheduled = fire->scheduled;
          ++state.runs;
        }
      }
    }
    rows.push_back(std::move(row));
  }

  if (args.json) {
    pb::Struct out;
    auto& fields = *out.mutable_fields();
    fields["config_version"].set_number_value(static_cast<double>(config.version));
    fields["after"].set_string_value(qf::format_rfc3339(after));
    auto* list = fields["tasks"].mutable_list_value();
    for (const auto& row : rows) {
      auto& t = *list->add_values()->mutable_struct_value()->mutable_fields();
      t["id"].set_string_value(row.task->id());
      t["name"].set_string_value(row.task->name());
      t["enabled"].set_bool_value(row.task->enabled());
      t["schedule"].set_string_value(row.schedule);
      t["state"].set_string_value(row.state);
      if (row.last) t["last_scheduled"].set_string_value(qf::format_rfc3339(*row.last));
      else t["last_scheduled"].set_null_value(pb::NULL_VALUE);
      auto* next = t["next_fires"].mutable_list_value();
      for (const auto& fire : row.next) next->add_values()->set_string_value(qf::format_rfc3339(fire));
    }
    std::cout << to_json(out);
    return;
  }
  std::cout << fmt::format("{} task(s) held by the agent (cached configuration version {}), fires after {} ({})\n",
                           rows.size(), config.version, local_text(after), args.time_zone);
  if (rows.empty()) {
    std::cout << "no tasks are cached: the agent has not received a configuration yet\n";
    return;
  }
  Table table({"TASK", "ID", "SCHEDULE", "STATE", "LAST FIRE", "NEXT FIRES"});
  for (const auto& row : rows) {
    std::string next;
    for (const auto& fire : row.next) next += (next.empty() ? "" : ", ") + local_text(fire);
    if (next.empty()) next = !row.task->enabled() || row.schedule.empty() ? "-" : "none (manual or finished)";
    table.add(
        {row.task->name(), row.task->id(), row.schedule, row.state, row.last ? local_text(*row.last) : "-", next});
  }
  table.print(std::cout);
}

}  // namespace

void add_local_commands(CLI::App& app) {
  auto* local = app.add_subcommand("local", "read this host's agent store (works while the agent runs)");
  local->require_subcommand(1);
  auto args = std::make_shared<LocalArgs>();
  local->add_option("--store", args->store, "the agent's store file (agent.db in its data_dir)")->capture_default_str();
  local->add_option("--tz", args->time_zone, "time zone of dates (use the agent's stats_time_zone)")->capture_default_str();

  auto* stats = local->add_subcommand("stats", "runs per task: total, success, failure, success rate, average duration");
  stats->add_flag("--today", args->today, "today (the default)");
  stats->add_option("--date", args->date, "one day, YYYY-MM-DD");
  stats->add_option("--days", args->days, "the last N days, today included")->check(CLI::Range(1, 3660));
  stats->add_option("--task-id", args->task_id, "one task only");
  stats->add_flag("--json", args->json, "JSON (daily stats rows) for scripts");
  stats->callback([args] { run_stats(*args); });

  auto* history = local->add_subcommand("history", "executions of a day, newest first");
  history->add_option("--date", args->date, "YYYY-MM-DD (default today)");
  history->add_option("--status", args->status, "pending, running, success, failure, timeout, cancelled, skipped, missed");
  history->add_option("--task-id", args->task_id, "one task only");
  history->add_option("--limit", args->limit, "at most this many")->capture_default_str();
  history->add_flag("--json", args->json, "JSON for scripts");
  history->callback([args] { run_history(*args); });

  auto* logs = local->add_subcommand("logs", "the output of a run");
  logs->add_option("--execution-id", args->execution_id, "this execution");
  logs->add_option("--task-id", args->task_id, "with --last: the task's latest run");
  logs->add_flag("--last", args->last, "the latest run of --task-id");
  logs->callback([args] { run_logs(*args); });

  auto* tasks =
      local->add_subcommand("tasks", "the tasks the agent holds and their next fires (no coordinator needed)");
  tasks->add_option("--count", args->count, "next fires shown per task")
      ->check(CLI::Range(0, 100))
      ->capture_default_str();
  tasks->add_option("--after", args->after, "fires after this RFC 3339 instant (default now)");
  tasks->add_flag("--json", args->json, "JSON for scripts");
  tasks->callback([args] { run_tasks(*args); });

  auto* exp = local->add_subcommand("export", "a day as JSON: executions and daily stats");
  exp->add_option("--date", args->date, "YYYY-MM-DD (default today)");
  exp->callback([args] { run_export(*args); });
}

}  // namespace qfctl
