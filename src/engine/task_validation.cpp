// SPDX-License-Identifier: Apache-2.0
// Task validation: every field of a protobuf `Task` checked, the first problem reported with
// the path of the offending field (as named in the proto, hence in YAML and JSON).
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <map>
#include <quartzflow/task.hpp>
#include <string_view>

#include "../common/task_policies.hpp"
#include "../executors/placeholders.hpp"
#include "task_limits.hpp"

namespace quartzflow {

namespace {

constexpr std::size_t k_max_id_length = 64;
constexpr std::size_t k_max_description_length = 512;
constexpr std::size_t k_max_param_name_length = 64;
constexpr std::size_t k_max_label_key_length = 63;
constexpr std::uint32_t k_max_kill_grace_seconds = 3600;
constexpr std::uint32_t k_max_span_seconds = 86400;
constexpr std::uint32_t k_max_retries = 100;
constexpr std::uint32_t k_max_retry_jitter_seconds = 3600;
constexpr std::uint32_t k_default_retry_interval_seconds = 60;
constexpr std::uint32_t k_max_concurrent_runs = 10000;
constexpr std::uint32_t k_max_queued_runs = 100000;
constexpr std::uint32_t k_max_misfire_fire_all_limit = 10000;
constexpr std::uint32_t k_max_shard_count = 10000;
// Lists and texts are bounded (task_limits.hpp) so that one task cannot cost the
// coordinator and every agent megabytes on each list, push and sync.
using namespace detail;  // the k_max_* bounds

/// The failure being built: the caller's `input` plus field and reason.
class Checker {
 public:
  explicit Checker(std::string input) : input_(std::move(input)) {}

  ValidationError fail(std::string field, std::string reason) const {
    return {input_, std::move(field), std::move(reason)};
  }

 private:
  std::string input_;
};

/// `size` elements are at most `max`.
std::optional<ValidationError> check_count(const Checker& check, std::string_view field, std::size_t size,
                                           std::size_t max) {
  if (size <= max) return std::nullopt;
  return check.fail(std::string(field), fmt::format("has {} elements; at most {} are allowed", size, max));
}

/// `text` is at most `max` bytes.
std::optional<ValidationError> check_size(const Checker& check, const std::string& field, std::string_view text,
                                          std::size_t max) {
  if (text.size() <= max) return std::nullopt;
  return check.fail(field, fmt::format("is {} bytes long; at most {} are allowed", text.size(), max));
}

/// No value appears twice in `values` (a repeated protobuf field).
template <typename Values>
std::optional<ValidationError> check_unique(const Checker& check, std::string_view field, const Values& values) {
  std::map<typename Values::value_type, int> seen;
  int i = 0;
  for (const auto& value : values) {
    if (const auto [it, inserted] = seen.emplace(value, i); !inserted)
      return check.fail(fmt::format("{}[{}]", field, i), fmt::format("repeats {}[{}]", field, it->second));
    ++i;
  }
  return std::nullopt;
}

bool is_id_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' || c == '_' || c == '-'; }

/// Why `value` is not an id (`[A-Za-z0-9._-]{1,64}`), or nullopt.
std::optional<std::string> id_problem(std::string_view value) {
  if (value.empty()) return "is required";
  if (value.size() > k_max_id_length)
    return fmt::format("is {} characters long; at most {} are allowed", value.size(), k_max_id_length);
  for (char c : value) {
    if (!is_id_char(c))
      return fmt::format("\"{}\" contains '{}'; only A-Z a-z 0-9 . _ - are allowed", value,
                         std::isprint(static_cast<unsigned char>(c))
                             ? std::string(1, c)
                             : fmt::format("\\x{:02x}", static_cast<unsigned char>(c)));
  }
  return std::nullopt;
}

bool is_param_name(std::string_view name) {
  if (name.empty() || name.size() > k_max_param_name_length) return false;
  if (std::isdigit(static_cast<unsigned char>(name.front())) != 0) return false;
  for (char c : name)
    if (std::isalnum(static_cast<unsigned char>(c)) == 0 && c != '_') return false;
  return true;
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string out_of_range(std::uint64_t value, std::uint64_t low, std::uint64_t high, std::string_view unit = {}) {
  return fmt::format("{} is out of range {}-{}{}{}", value, low, high, unit.empty() ? "" : " ", unit);
}

/// Whether `url` is an absolute http(s) URL with a host; the reason when not.
std::optional<std::string> url_problem(std::string_view url) {
  if (url.empty()) return "is required";
  for (char c : url)
    if (std::isspace(static_cast<unsigned char>(c)) != 0 || std::iscntrl(static_cast<unsigned char>(c)) != 0)
      return fmt::format("\"{}\" contains white space or control characters", url);
  const auto scheme_end = url.find("://");
  const std::string scheme = scheme_end == std::string_view::npos ? "" : upper(url.substr(0, scheme_end));
  if (scheme != "HTTP" && scheme != "HTTPS")
    return fmt::format("\"{}\" is not an absolute http:// or https:// URL", url);
  std::string_view authority = url.substr(scheme_end + 3);
  authority = authority.substr(0, authority.find_first_of("/?#"));
  if (const auto at = authority.rfind('@'); at != std::string_view::npos) authority = authority.substr(at + 1);
  std::string_view host = authority;
  if (!host.empty() && host.front() == '[') {
    const auto close = host.find(']');
    host = close == std::string_view::npos ? std::string_view{} : host.substr(0, close + 1);
  } else {
    host = host.substr(0, host.find(':'));
  }
  if (host.empty() || host == "[]") return fmt::format("\"{}\" has no host", url);
  return std::nullopt;
}

std::optional<ValidationError> check_shell(const Checker& check, const v1::ShellSpec& shell) {
  if (shell.argv_size() == 0 && shell.script().empty())
    return check.fail("shell.argv", "is empty and no script is given; one of argv and script is required");
  if (shell.argv_size() != 0 && !shell.script().empty())
    return check.fail("shell.script", "must not be set together with argv; set one of argv and script");
  if (shell.argv_size() != 0 && shell.argv(0).empty()) return check.fail("shell.argv[0]", "the program is empty");
  if (auto e = check_count(check, "shell.argv", shell.argv_size(), k_max_argv)) return e;
  for (int i = 0; i < shell.argv_size(); ++i)
    if (auto e = check_size(check, fmt::format("shell.argv[{}]", i), shell.argv(i), k_max_value_bytes)) return e;
  if (auto e = check_count(check, "shell.interpreter", shell.interpreter_size(), k_max_interpreter)) return e;
  for (int i = 0; i < shell.interpreter_size(); ++i)
    if (auto e = check_size(check, fmt::format("shell.interpreter[{}]", i), shell.interpreter(i), k_max_value_bytes))
      return e;
  if (auto e = check_size(check, "shell.script", shell.script(), k_max_document_bytes)) return e;
  if (auto e = check_count(check, "shell.env", shell.env_size(), k_max_env)) return e;
  if (shell.interpreter_size() != 0 && shell.interpreter(0).empty())
    return check.fail("shell.interpreter[0]", "the interpreter program is empty");
  if (!shell.working_dir().empty() && shell.working_dir().front() != '/')
    return check.fail("shell.working_dir", fmt::format("\"{}\" is not an absolute path", shell.working_dir()));
  for (const auto& [name, value] : shell.env()) {
    if (name.empty() || name.find('=') != std::string::npos || name.find('\0') != std::string::npos)
      return check.fail(fmt::format("shell.env[\"{}\"]", name), "is not a valid environment variable name");
    if (auto e = check_size(check, fmt::format("shell.env[\"{}\"]", name), value, k_max_value_bytes)) return e;
  }
  if (shell.kill_grace_seconds() > k_max_kill_grace_seconds)
    return check.fail("shell.kill_grace_seconds",
                      out_of_range(shell.kill_grace_seconds(), 0, k_max_kill_grace_seconds, "seconds"));
  return std::nullopt;
}

std::optional<ValidationError> check_status_codes(const Checker& check, std::string_view field,
                                                  const google::protobuf::RepeatedField<std::uint32_t>& codes) {
  if (auto e = check_unique(check, field, codes)) return e;
  for (int i = 0; i < codes.size(); ++i)
    if (codes[i] < 100 || codes[i] > 599)
      return check.fail(fmt::format("{}[{}]", field, i), out_of_range(codes[i], 100, 599));
  return std::nullopt;
}

std::optional<ValidationError> check_status_classes(const Checker& check, std::string_view field,
                                                    const google::protobuf::RepeatedField<std::uint32_t>& classes) {
  if (auto e = check_unique(check, field, classes)) return e;
  for (int i = 0; i < classes.size(); ++i)
    if (classes[i] < 1 || classes[i] > 5)
      return check.fail(fmt::format("{}[{}]", field, i), out_of_range(classes[i], 1, 5));
  return std::nullopt;
}

/// `${name}` placeholders in `text` are well formed and name declared parameters.
std::optional<ValidationError> check_placeholders(const Checker& check, const std::string& field,
                                                  std::string_view text, const v1::Task& task) {
  std::string undeclared;
  const auto problem = detail::placeholder_problem(text, [&](std::string_view name) {
    if (!undeclared.empty()) return;
    const auto& params = task.params();
    if (std::none_of(params.begin(), params.end(), [&](const v1::ParamSpec& p) { return p.name() == name; }))
      undeclared = name;
  });
  if (problem) return check.fail(field, *problem);
  if (!undeclared.empty())
    return check.fail(field, fmt::format("${{{}}} names no parameter declared in params", undeclared));
  return std::nullopt;
}

std::optional<ValidationError> check_http(const Checker& check, const v1::Task& task) {
  const v1::HttpSpec& http = task.http();
  static constexpr std::string_view methods[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"};
  if (!http.method().empty() && std::find(std::begin(methods), std::end(methods), http.method()) == std::end(methods))
    return check.fail("http.method",
                      fmt::format("\"{}\" is not one of GET, POST, PUT, PATCH, DELETE, HEAD", http.method()));
  if (auto problem = url_problem(http.url())) return check.fail("http.url", std::move(*problem));
  if (auto e = check_placeholders(check, "http.url", http.url(), task)) return e;
  if (auto e = check_size(check, "http.url", http.url(), k_max_value_bytes)) return e;
  if (auto e = check_count(check, "http.headers", http.headers_size(), k_max_small_list)) return e;
  for (const auto& [name, value] : http.headers()) {
    if (name.empty()) return check.fail("http.headers", "a header name is empty");
    if (auto e = check_size(check, fmt::format("http.headers[\"{}\"]", name), value, k_max_value_bytes)) return e;
    if (auto e = check_placeholders(check, fmt::format("http.headers[\"{}\"]", name), value, task)) return e;
  }
  if (auto e = check_placeholders(check, "http.body", http.body(), task)) return e;
  if (auto e = check_size(check, "http.body", http.body(), k_max_document_bytes)) return e;
  if (http.timeout_seconds() > k_max_span_seconds)
    return check.fail("http.timeout_seconds", out_of_range(http.timeout_seconds(), 0, k_max_span_seconds, "seconds"));
  if (auto e = check_status_codes(check, "http.success_status_codes", http.success_status_codes())) return e;
  if (auto e = check_status_classes(check, "http.success_status_classes", http.success_status_classes())) return e;
  if (!http.client_cert_file().empty() && http.client_key_file().empty())
    return check.fail("http.client_key_file", "is required with client_cert_file");
  if (http.client_cert_file().empty() && !http.client_key_file().empty())
    return check.fail("http.client_cert_file", "is required with client_key_file");
  return std::nullopt;
}

/// Schedule::create names the spec's members; the task's schema names proto fields.
std::string proto_schedule_field(const std::string& spec_field, const v1::Schedule& schedule) {
  if (spec_field == "schedule.period")
    return schedule.kind_case() == v1::Schedule::kFixedDelaySeconds ? "schedule.fixed_delay_seconds"
                                                                    : "schedule.interval_seconds";
  if (spec_field == "schedule.at") return "schedule.once_at_unix_ms";
  if (spec_field == "schedule.jitter") return "schedule.jitter_seconds";
  if (spec_field == "schedule.window_start") return "schedule.window_start_unix_ms";
  if (spec_field == "schedule.window_end") return "schedule.window_end_unix_ms";
  return spec_field;
}

/// The task's schedule, or the reason it has none (field and reason; input left empty).
std::optional<Schedule> make_schedule(const v1::Task& task, error_code& ec, ValidationError& detail) {
  if (!task.has_schedule()) return Schedule::create(ScheduleSpec{}, task.name(), ec, &detail);
  const v1::Schedule& schedule = task.schedule();
  if (schedule.kind_case() == v1::Schedule::KIND_NOT_SET) {
    ec = errc::invalid_argument;
    detail = {"", "schedule",
              "one of cron, interval_seconds, fixed_delay_seconds, once_at_unix_ms, manual, agent_start is required"};
    return std::nullopt;
  }
  const std::pair<const char*, std::int64_t> instants[] = {
      {"schedule.once_at_unix_ms",
       schedule.kind_case() == v1::Schedule::kOnceAtUnixMs ? schedule.once_at_unix_ms() : 0},
      {"schedule.window_start_unix_ms", schedule.window_start_unix_ms()},
      {"schedule.window_end_unix_ms", schedule.window_end_unix_ms()}};
  for (const auto& [field, ms] : instants) {
    if (ms % 1000 != 0) {
      ec = errc::invalid_argument;
      detail = {"", field, fmt::format("{} is not a whole second (a multiple of 1000 ms)", ms)};
      return std::nullopt;
    }
  }
  auto result = Schedule::create(schedule_spec_from_proto(schedule), task.name(), ec, &detail);
  if (!result) detail.field = proto_schedule_field(detail.field, schedule);
  return result;
}

std::optional<ValidationError> check_retry(const Checker& check, const v1::RetryPolicy& retry) {
  if (retry.max_retries() > k_max_retries)
    return check.fail("retry.max_retries", out_of_range(retry.max_retries(), 0, k_max_retries));
  if (retry.interval_seconds() > k_max_span_seconds)
    return check.fail("retry.interval_seconds",
                      out_of_range(retry.interval_seconds(), 1, k_max_span_seconds, "seconds"));
  const double multiplier = retry.backoff_multiplier();
  if (!(multiplier == 0.0 || (multiplier >= 1.0 && multiplier <= 10.0)))
    return check.fail("retry.backoff_multiplier", fmt::format("{} is out of range 1.0-10.0 (0 means 1.0)", multiplier));
  if (retry.max_interval_seconds() > k_max_span_seconds)
    return check.fail("retry.max_interval_seconds",
                      out_of_range(retry.max_interval_seconds(), 1, k_max_span_seconds, "seconds"));
  const std::uint32_t interval =
      retry.interval_seconds() == 0 ? k_default_retry_interval_seconds : retry.interval_seconds();
  if (retry.max_interval_seconds() != 0 && retry.max_interval_seconds() < interval)
    return check.fail("retry.max_interval_seconds", fmt::format("{} is less than the retry interval of {} seconds",
                                                                retry.max_interval_seconds(), interval));
  if (retry.jitter_seconds() > k_max_retry_jitter_seconds)
    return check.fail("retry.jitter_seconds",
                      out_of_range(retry.jitter_seconds(), 0, k_max_retry_jitter_seconds, "seconds"));
  if (auto e = check_unique(check, "retry.retry_on_exit_codes", retry.retry_on_exit_codes())) return e;
  for (int i = 0; i < retry.retry_on_exit_codes_size(); ++i) {
    const auto code = retry.retry_on_exit_codes(i);
    if (code < 1 || code > 255)
      return check.fail(fmt::format("retry.retry_on_exit_codes[{}]", i), fmt::format("{} is out of range 1-255", code));
  }
  if (auto e = check_status_classes(check, "retry.retry_on_http_status_classes", retry.retry_on_http_status_classes()))
    return e;
  return check_status_codes(check, "retry.retry_on_http_status_codes", retry.retry_on_http_status_codes());
}

std::optional<ValidationError> check_params(const Checker& check, const v1::Task& task) {
  // Parameters reach shell runs as QF_PARAM_<NAME upper-cased>: names that differ only in
  // case would collide there.
  if (auto e = check_count(check, "params", task.params_size(), k_max_small_list)) return e;
  std::map<std::string, int> seen;
  for (int i = 0; i < task.params_size(); ++i) {
    const std::string& name = task.params(i).name();
    const std::string field = fmt::format("params[{}].name", i);
    if (name.empty()) return check.fail(field, "is required");
    if (!is_param_name(name))
      return check.fail(
          field, fmt::format("\"{}\" is not a parameter name ([A-Za-z_][A-Za-z0-9_], at most 64 characters)", name));
    const auto [it, inserted] = seen.emplace(upper(name), i);
    if (!inserted)
      return check.fail(
          field,
          fmt::format("\"{}\" is already declared by params[{}] (names are compared ignoring case)", name, it->second));
    if (auto e = check_size(check, fmt::format("params[{}].description", i), task.params(i).description(),
                            k_max_description_length))
      return e;
    if (auto e = check_size(check, fmt::format("params[{}].default_value", i), task.params(i).default_value(),
                            k_max_value_bytes))
      return e;
  }
  return std::nullopt;
}

std::string task_input(const v1::Task& task) {
  return task.name().empty() ? std::string("task") : fmt::format("task \"{}\"", task.name());
}

}  // namespace

std::optional<ValidationError> validate_task(const v1::Task& task) {
  const Checker check(task_input(task));
  // The name first: an empty id is derived from it, so its problem is the name's.
  if (auto problem = id_problem(task.name())) return check.fail("name", std::move(*problem));
  if (auto problem = id_problem(task.id())) return check.fail("id", std::move(*problem));
  if (task.description().size() > k_max_description_length)
    return check.fail("description", fmt::format("is {} characters long; at most {} are allowed",
                                                 task.description().size(), k_max_description_length));

  switch (task.executor_case()) {
    case v1::Task::EXECUTOR_NOT_SET:
      return check.fail("executor", "one of shell, http, plugin is required");
    case v1::Task::kShell:
      if (auto e = check_shell(check, task.shell())) return e;
      break;
    case v1::Task::kHttp:
      if (auto e = check_http(check, task)) return e;
      break;
    case v1::Task::kPlugin:
      if (task.plugin().name().empty()) return check.fail("plugin.name", "is required");
      break;
  }

  {
    error_code ec;
    ValidationError detail;
    if (!make_schedule(task, ec, detail)) return check.fail(std::move(detail.field), std::move(detail.reason));
  }

  if (task.has_placement()) {
    const v1::Placement& placement = task.placement();
    if (!v1::PlacementMode_IsValid(placement.mode()))
      return check.fail("placement.mode",
                        fmt::format("{} is not a placement mode", static_cast<int>(placement.mode())));
    if (!v1::RoutingStrategy_IsValid(placement.routing()))
      return check.fail("placement.routing",
                        fmt::format("{} is not a routing strategy", static_cast<int>(placement.routing())));
    if (placement.shard_count() > k_max_shard_count)
      return check.fail("placement.shard_count", out_of_range(placement.shard_count(), 0, k_max_shard_count));
    if (placement.shard_count() != 0 && placement.mode() != v1::PLACEMENT_MODE_SHARDED)
      return check.fail("placement.shard_count", "is only allowed with mode SHARDED");
  }
  // Both are read by the agent that fires the task: a routed task is fired by the coordinator.
  if (detail::coordinator_routed(task)) {
    if (task.schedule().kind_case() == v1::Schedule::kAgentStart)
      return check.fail("schedule.agent_start",
                        "runs when an agent starts: only with placement ALL (each agent runs it from its own start)");
    if (task.schedule().time_zone() == "local")
      return check.fail("schedule.time_zone",
                        "\"local\" is the zone of the agent that fires the task: only with placement ALL");
  }

  if (task.timeout_seconds() > static_cast<std::uint64_t>(k_max_timeout.count()))
    return check.fail("timeout_seconds",
                      out_of_range(task.timeout_seconds(), static_cast<std::uint64_t>(k_min_timeout.count()),
                                   static_cast<std::uint64_t>(k_max_timeout.count()), "seconds"));
  if (task.has_retry())
    if (auto e = check_retry(check, task.retry())) return e;
  if (task.max_concurrent_runs() > k_max_concurrent_runs)
    return check.fail("max_concurrent_runs", out_of_range(task.max_concurrent_runs(), 1, k_max_concurrent_runs));
  if (!v1::OverlapPolicy_IsValid(task.overlap_policy()))
    return check.fail("overlap_policy",
                      fmt::format("{} is not an overlap policy", static_cast<int>(task.overlap_policy())));
  if (task.max_queued_runs() > k_max_queued_runs)
    return check.fail("max_queued_runs", out_of_range(task.max_queued_runs(), 1, k_max_queued_runs));
  if (!v1::MisfirePolicy_IsValid(task.misfire_policy()))
    return check.fail("misfire_policy",
                      fmt::format("{} is not a misfire policy", static_cast<int>(task.misfire_policy())));
  if (task.misfire_fire_all_limit() > k_max_misfire_fire_all_limit)
    return check.fail("misfire_fire_all_limit",
                      out_of_range(task.misfire_fire_all_limit(), 1, k_max_misfire_fire_all_limit));

  if (auto e = check_count(check, "group_ids", task.group_ids_size(), k_max_small_list)) return e;
  for (int i = 0; i < task.group_ids_size(); ++i) {
    if (task.group_ids(i).empty()) return check.fail(fmt::format("group_ids[{}]", i), "is empty");
    if (auto e = check_size(check, fmt::format("group_ids[{}]", i), task.group_ids(i), k_max_id_length)) return e;
  }
  if (auto e = check_unique(check, "group_ids", task.group_ids())) return e;
  if (auto e = check_params(check, task)) return e;
  if (auto e = check_count(check, "downstream_task_ids", task.downstream_task_ids_size(), k_max_small_list)) return e;
  if (auto e = check_unique(check, "downstream_task_ids", task.downstream_task_ids())) return e;
  for (int i = 0; i < task.downstream_task_ids_size(); ++i) {
    const std::string field = fmt::format("downstream_task_ids[{}]", i);
    if (auto problem = id_problem(task.downstream_task_ids(i))) return check.fail(field, std::move(*problem));
    if (task.downstream_task_ids(i) == task.id()) return check.fail(field, "a task cannot trigger itself");
  }
  if (auto e = check_count(check, "labels", task.labels_size(), k_max_small_list)) return e;
  for (const auto& [key, value] : task.labels()) {
    if (key.empty()) return check.fail("labels", "a label key is empty");
    if (auto e = check_size(check, fmt::format("labels[\"{}\"]", key), value, k_max_value_bytes)) return e;
    if (key.size() > k_max_label_key_length)
      return check.fail(
          fmt::format("labels[\"{}\"]", key),
          fmt::format("the key is {} characters long; at most {} are allowed", key.size(), k_max_label_key_length));
  }
  return std::nullopt;
}

std::optional<ValidationError> validate_tasks(const std::vector<v1::Task>& tasks) {
  std::map<std::string, std::size_t> ids;
  std::map<std::string, std::size_t> names;
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    const v1::Task& task = tasks[i];
    const std::string prefix = fmt::format("tasks[{}].", i);
    if (auto e = validate_task(task)) {
      e->field = prefix + e->field;
      return e;
    }
    if (const auto [it, inserted] = ids.emplace(task.id(), i); !inserted)
      return ValidationError{task_input(task), prefix + "id",
                             fmt::format("\"{}\" is already the id of tasks[{}]", task.id(), it->second)};
    if (const auto [it, inserted] = names.emplace(task.name(), i); !inserted)
      return ValidationError{task_input(task), prefix + "name",
                             fmt::format("\"{}\" is already the name of tasks[{}]", task.name(), it->second)};
  }
  return std::nullopt;
}

std::chrono::seconds effective_timeout(const v1::Task& task) {
  if (task.timeout_seconds() == 0) return k_default_timeout;
  return std::min(std::chrono::seconds{task.timeout_seconds()}, k_max_timeout);
}

Schedule task_schedule(const v1::Task& task) {
  error_code ec;
  ValidationError detail;
  auto schedule = make_schedule(task, ec, detail);
  if (!schedule) {
    detail.input = task_input(task);
    throw error(ec, std::move(detail));
  }
  return std::move(*schedule);
}

}  // namespace quartzflow
