// SPDX-License-Identifier: Apache-2.0
// Task validation (every rule, with its field path and reason), timeouts, task schedules and
// the protobuf <-> ScheduleSpec bridges.
#include <catch2/catch.hpp>
#include <functional>
#include <quartzflow/task.hpp>
#include <string>

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;
using std::chrono::seconds;

namespace {

v1::Task shell_task(const std::string& name = "backup") {
  v1::Task task;
  task.set_id(name);
  task.set_name(name);
  task.mutable_shell()->add_argv("/bin/true");
  task.mutable_schedule()->set_cron("0 2 * * *");
  return task;
}

/// The full message of the first problem, or "" when the task is valid.
std::string problem(const v1::Task& task) {
  const auto error = qf::validate_task(task);
  return error ? error->message() : std::string();
}

struct Rule {
  const char* what;
  std::function<void(v1::Task&)> break_it;
  const char* field;
  const char* reason;  ///< a part of the reason
};

}  // namespace

TEST_CASE("a complete shell, http and plugin task are each valid", "[task]") {
  CHECK(problem(shell_task()).empty());

  v1::Task http = shell_task("ping");
  auto& spec = *http.mutable_http();
  spec.set_method("POST");
  spec.set_url("https://user@example.com:8443/hook?x=${name}&literal=$${kept}");
  (*spec.mutable_headers())["X-Name"] = "${name}";
  spec.set_body(R"({"name":"${name}"})");
  http.add_params()->set_name("name");
  spec.add_success_status_codes(204);
  spec.add_success_status_classes(2);
  spec.set_timeout_seconds(30);
  http.set_timeout_seconds(86400);
  CHECK(problem(http).empty());

  v1::Task plugin = shell_task("sleeper");
  plugin.mutable_plugin()->set_name("builtin.sleep");
  plugin.clear_schedule();
  auto& retry = *plugin.mutable_retry();
  retry.set_max_retries(100);
  retry.set_interval_seconds(10);
  retry.set_backoff_multiplier(2.5);
  retry.set_max_interval_seconds(600);
  retry.set_jitter_seconds(3600);
  retry.add_retry_on_exit_codes(3);
  retry.add_retry_on_http_status_classes(5);
  retry.add_retry_on_http_status_codes(429);
  plugin.mutable_placement()->set_mode(v1::PLACEMENT_MODE_SHARDED);
  plugin.mutable_placement()->set_shard_count(10000);
  plugin.set_max_concurrent_runs(10000);
  plugin.set_max_queued_runs(100000);
  auto* param = plugin.add_params();
  param->set_name("_Region_2");
  plugin.add_params()->set_name(std::string(64, 'p'));
  CHECK(problem(plugin).empty());
}

TEST_CASE("every task rule rejects a bad value with the field and the reason", "[task]") {
  const std::vector<Rule> rules{
      {"empty id", [](v1::Task& t) { t.clear_id(); }, "id", "is required"},
      {"id with a colon", [](v1::Task& t) { t.set_id("a:b"); }, "id", "contains ':'"},
      {"id too long", [](v1::Task& t) { t.set_id(std::string(65, 'a')); }, "id", "65 characters long; at most 64"},
      {"empty name", [](v1::Task& t) { t.clear_name(); }, "name", "is required"},
      {"name with a space", [](v1::Task& t) { t.set_name("my task"); }, "name", "contains ' '"},
      {"description too long", [](v1::Task& t) { t.set_description(std::string(513, 'd')); }, "description",
       "513 characters"},
      {"no executor", [](v1::Task& t) { t.clear_executor(); }, "executor", "one of shell, http, plugin is required"},
      {"shell without argv or script", [](v1::Task& t) { t.mutable_shell()->clear_argv(); }, "shell.argv",
       "one of argv and script is required"},
      {"shell with argv and script", [](v1::Task& t) { t.mutable_shell()->set_script("echo"); }, "shell.script",
       "must not be set together with argv"},
      {"shell with an empty program", [](v1::Task& t) { t.mutable_shell()->set_argv(0, ""); }, "shell.argv[0]",
       "the program is empty"},
      {"relative working directory", [](v1::Task& t) { t.mutable_shell()->set_working_dir("tmp"); },
       "shell.working_dir", "\"tmp\" is not an absolute path"},
      {"kill grace too long", [](v1::Task& t) { t.mutable_shell()->set_kill_grace_seconds(3601); },
       "shell.kill_grace_seconds", "3601 is out of range 0-3600 seconds"},
      {"environment name with =", [](v1::Task& t) { (*t.mutable_shell()->mutable_env())["A=B"] = "x"; },
       "shell.env[\"A=B\"]", "not a valid environment variable name"},
      {"unknown http method",
       [](v1::Task& t) {
         t.mutable_http()->set_method("FETCH");
         t.mutable_http()->set_url("http://h");
       },
       "http.method", "\"FETCH\" is not one of GET, POST, PUT, PATCH, DELETE, HEAD"},
      {"lower-case http method",
       [](v1::Task& t) {
         t.mutable_http()->set_method("get");
         t.mutable_http()->set_url("http://h");
       },
       "http.method", "is not one of"},
      {"missing url", [](v1::Task& t) { t.mutable_http(); }, "http.url", "is required"},
      {"ftp url", [](v1::Task& t) { t.mutable_http()->set_url("ftp://example.com/x"); }, "http.url",
       "is not an absolute http:// or https:// URL"},
      {"relative url", [](v1::Task& t) { t.mutable_http()->set_url("/hook"); }, "http.url", "is not an absolute"},
      {"url without host", [](v1::Task& t) { t.mutable_http()->set_url("http:///path"); }, "http.url", "has no host"},
      {"url with only a port", [](v1::Task& t) { t.mutable_http()->set_url("https://:80/"); }, "http.url",
       "has no host"},
      {"url with a space", [](v1::Task& t) { t.mutable_http()->set_url("http://a b/"); }, "http.url", "white space"},
      {"status code 99",
       [](v1::Task& t) {
         t.mutable_http()->set_url("http://h");
         t.mutable_http()->add_success_status_codes(99);
       },
       "http.success_status_codes[0]", "99 is out of range 100-599"},
      {"status code 600",
       [](v1::Task& t) {
         t.mutable_http()->set_url("http://h");
         t.mutable_http()->add_success_status_codes(200);
         t.mutable_http()->add_success_status_codes(600);
       },
       "http.success_status_codes[1]", "600 is out of range 100-599"},
      {"status class 6",
       [](v1::Task& t) {
         t.mutable_http()->set_url("http://h");
         t.mutable_http()->add_success_status_classes(6);
       },
       "http.success_status_classes[0]", "6 is out of range 1-5"},
      {"status class 0",
       [](v1::Task& t) {
         t.mutable_http()->set_url("http://h");
         t.mutable_http()->add_success_status_classes(0);
       },
       "http.success_status_classes[0]", "0 is out of range 1-5"},
      {"http timeout",
       [](v1::Task& t) {
         t.mutable_http()->set_url("http://h");
         t.mutable_http()->set_timeout_seconds(86401);
       },
       "http.timeout_seconds", "86401 is out of range 0-86400 seconds"},
      {"client cert without key",
       [](v1::Task& t) {
         t.mutable_http()->set_url("http://h");
         t.mutable_http()->set_client_cert_file("/c.pem");
       },
       "http.client_key_file", "is required with client_cert_file"},
      {"plugin without name", [](v1::Task& t) { t.mutable_plugin(); }, "plugin.name", "is required"},
      {"schedule without kind", [](v1::Task& t) { t.mutable_schedule()->clear_cron(); }, "schedule",
       "one of cron, interval_seconds, fixed_delay_seconds, once_at_unix_ms, manual, agent_start is required"},
      {"cron minute 61", [](v1::Task& t) { t.mutable_schedule()->set_cron("61 * * * *"); }, "schedule.cron.minute",
       "61 is out of range 0-59"},
      {"unknown zone", [](v1::Task& t) { t.mutable_schedule()->set_time_zone("Mars/Olympus"); }, "schedule.time_zone",
       "Mars/Olympus"},
      {"interval 0", [](v1::Task& t) { t.mutable_schedule()->set_interval_seconds(0); }, "schedule.interval_seconds",
       "0s is out of range 1s-366d"},
      {"fixed delay too long", [](v1::Task& t) { t.mutable_schedule()->set_fixed_delay_seconds(400 * 86400); },
       "schedule.fixed_delay_seconds", "out of range 1s-366d"},
      {"schedule jitter", [](v1::Task& t) { t.mutable_schedule()->set_jitter_seconds(86401); },
       "schedule.jitter_seconds", "86401s is out of range 0s-1d"},
      {"window end before start",
       [](v1::Task& t) {
         t.mutable_schedule()->set_window_start_unix_ms(2'000'000'000'000);
         t.mutable_schedule()->set_window_end_unix_ms(1'000'000'000'000);
       },
       "schedule.window_end_unix_ms", "is before window_start"},
      {"once at a fraction of a second",
       [](v1::Task& t) { t.mutable_schedule()->set_once_at_unix_ms(1'700'000'000'500); }, "schedule.once_at_unix_ms",
       "1700000000500 is not a whole second"},
      {"timeout too long", [](v1::Task& t) { t.set_timeout_seconds(90000); }, "timeout_seconds",
       "90000 is out of range 1-86400 seconds"},
      {"too many retries", [](v1::Task& t) { t.mutable_retry()->set_max_retries(101); }, "retry.max_retries",
       "101 is out of range 0-100"},
      {"retry interval", [](v1::Task& t) { t.mutable_retry()->set_interval_seconds(86401); }, "retry.interval_seconds",
       "86401 is out of range 1-86400 seconds"},
      {"backoff below 1", [](v1::Task& t) { t.mutable_retry()->set_backoff_multiplier(0.5); },
       "retry.backoff_multiplier", "0.5 is out of range 1.0-10.0"},
      {"backoff above 10", [](v1::Task& t) { t.mutable_retry()->set_backoff_multiplier(10.5); },
       "retry.backoff_multiplier", "10.5 is out of range 1.0-10.0"},
      {"backoff NaN", [](v1::Task& t) { t.mutable_retry()->set_backoff_multiplier(std::nan("")); },
       "retry.backoff_multiplier", "out of range"},
      {"max interval below interval",
       [](v1::Task& t) {
         t.mutable_retry()->set_interval_seconds(120);
         t.mutable_retry()->set_max_interval_seconds(60);
       },
       "retry.max_interval_seconds", "60 is less than the retry interval of 120 seconds"},
      {"max interval below the default interval", [](v1::Task& t) { t.mutable_retry()->set_max_interval_seconds(30); },
       "retry.max_interval_seconds", "30 is less than the retry interval of 60 seconds"},
      {"retry jitter", [](v1::Task& t) { t.mutable_retry()->set_jitter_seconds(3601); }, "retry.jitter_seconds",
       "3601 is out of range 0-3600 seconds"},
      {"retry exit code 0", [](v1::Task& t) { t.mutable_retry()->add_retry_on_exit_codes(0); },
       "retry.retry_on_exit_codes[0]", "0 is out of range 1-255"},
      {"retry http class", [](v1::Task& t) { t.mutable_retry()->add_retry_on_http_status_classes(9); },
       "retry.retry_on_http_status_classes[0]", "9 is out of range 1-5"},
      {"retry http code", [](v1::Task& t) { t.mutable_retry()->add_retry_on_http_status_codes(1000); },
       "retry.retry_on_http_status_codes[0]", "1000 is out of range 100-599"},
      {"concurrency", [](v1::Task& t) { t.set_max_concurrent_runs(10001); }, "max_concurrent_runs",
       "10001 is out of range 1-10000"},
      {"queue", [](v1::Task& t) { t.set_max_queued_runs(100001); }, "max_queued_runs",
       "100001 is out of range 1-100000"},
      {"misfire limit", [](v1::Task& t) { t.set_misfire_fire_all_limit(10001); }, "misfire_fire_all_limit",
       "out of range 1-10000"},
      {"unknown overlap policy number", [](v1::Task& t) { t.set_overlap_policy(static_cast<v1::OverlapPolicy>(42)); },
       "overlap_policy", "42 is not an overlap policy"},
      {"too many shards",
       [](v1::Task& t) {
         t.mutable_placement()->set_mode(v1::PLACEMENT_MODE_SHARDED);
         t.mutable_placement()->set_shard_count(10001);
       },
       "placement.shard_count", "10001 is out of range 0-10000"},
      {"shards without SHARDED", [](v1::Task& t) { t.mutable_placement()->set_shard_count(4); },
       "placement.shard_count", "is only allowed with mode SHARDED"},
      {"empty param name", [](v1::Task& t) { t.add_params(); }, "params[0].name", "is required"},
      {"param name with a digit first", [](v1::Task& t) { t.add_params()->set_name("1st"); }, "params[0].name",
       "\"1st\" is not a parameter name"},
      {"param name with a dash", [](v1::Task& t) { t.add_params()->set_name("a-b"); }, "params[0].name",
       "is not a parameter name"},
      {"param name too long", [](v1::Task& t) { t.add_params()->set_name(std::string(65, 'p')); }, "params[0].name",
       "is not a parameter name"},
      {"duplicate param",
       [](v1::Task& t) {
         t.add_params()->set_name("region");
         t.add_params()->set_name("zone");
         t.add_params()->set_name("Region");
       },
       "params[2].name", "\"Region\" is already declared by params[0] (names are compared ignoring case)"},
      {"empty group id", [](v1::Task& t) { t.add_group_ids(); }, "group_ids[0]", "is empty"},
      {"self trigger", [](v1::Task& t) { t.add_downstream_task_ids(t.id()); }, "downstream_task_ids[0]",
       "a task cannot trigger itself"},
      {"bad downstream id", [](v1::Task& t) { t.add_downstream_task_ids("a/b"); }, "downstream_task_ids[0]",
       "contains '/'"},
      {"undeclared placeholder in the url", [](v1::Task& t) { t.mutable_http()->set_url("http://h/${region}"); },
       "http.url", "${region} names no parameter declared in params"},
      {"placeholder without its brace",
       [](v1::Task& t) {
         t.add_params()->set_name("region");
         t.mutable_http()->set_url("http://h/");
         t.mutable_http()->set_body("{\"r\":\"${region\"}");
       },
       "http.body", "is not a placeholder"},
      {"unclosed placeholder",
       [](v1::Task& t) {
         t.mutable_http()->set_url("http://h/");
         (*t.mutable_http()->mutable_headers())["X-A"] = "${a";
       },
       "http.headers[\"X-A\"]", "has no closing '}'"},
      {"duplicate exit codes",
       [](v1::Task& t) {
         for (int i = 0; i < 3; ++i) t.mutable_retry()->add_retry_on_exit_codes(7);
       },
       "retry.retry_on_exit_codes[1]", "repeats retry.retry_on_exit_codes[0]"},
      {"duplicate group ids",
       [](v1::Task& t) {
         t.add_group_ids("web");
         t.add_group_ids("db");
         t.add_group_ids("web");
       },
       "group_ids[2]", "repeats group_ids[0]"},
      {"65 group ids",
       [](v1::Task& t) {
         for (int i = 0; i < 65; ++i) t.add_group_ids("g" + std::to_string(i));
       },
       "group_ids", "has 65 elements; at most 64 are allowed"},
      {"duplicate success codes",
       [](v1::Task& t) {
         t.mutable_http()->set_url("http://h/");
         t.mutable_http()->add_success_status_codes(200);
         t.mutable_http()->add_success_status_codes(200);
       },
       "http.success_status_codes[1]", "repeats"},
      {"duplicate downstream ids",
       [](v1::Task& t) {
         t.add_downstream_task_ids("next");
         t.add_downstream_task_ids("next");
       },
       "downstream_task_ids[1]", "repeats downstream_task_ids[0]"},
      {"1025 argv elements",
       [](v1::Task& t) {
         for (int i = 0; i < 1025; ++i) t.mutable_shell()->add_argv("x");
       },
       "shell.argv", "at most 1024"},
      {"a huge script",
       [](v1::Task& t) {
         t.mutable_shell()->clear_argv();
         t.mutable_shell()->set_script(std::string(256 * 1024 + 1, '#'));
       },
       "shell.script", "is 262145 bytes long; at most 262144"},
      {"257 environment variables",
       [](v1::Task& t) {
         for (int i = 0; i < 257; ++i) (*t.mutable_shell()->mutable_env())["V" + std::to_string(i)] = "x";
       },
       "shell.env", "at most 256"},
      {"65 labels",
       [](v1::Task& t) {
         for (int i = 0; i < 65; ++i) (*t.mutable_labels())["k" + std::to_string(i)] = "v";
       },
       "labels", "at most 64"},
      {"65 params",
       [](v1::Task& t) {
         for (int i = 0; i < 65; ++i) t.add_params()->set_name("p" + std::to_string(i));
       },
       "params", "at most 64"},
      {"long label key", [](v1::Task& t) { (*t.mutable_labels())[std::string(64, 'k')] = "v"; },
       "labels[\"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk\"]", "at most 63"},
  };
  for (const auto& rule : rules) {
    INFO(rule.what);
    v1::Task task = shell_task();
    rule.break_it(task);
    const auto error = qf::validate_task(task);
    REQUIRE(error);
    CHECK(error->field == rule.field);
    CHECK_THAT(error->reason, Catch::Contains(rule.reason));
  }
}

TEST_CASE("validation messages read as the console shows them", "[task]") {
  v1::Task task = shell_task();
  task.set_timeout_seconds(90000);
  CHECK(problem(task) == "invalid task \"backup\": timeout_seconds: 90000 is out of range 1-86400 seconds");

  task = shell_task();
  task.mutable_schedule()->set_cron("61 * * * *");
  CHECK(problem(task) == "invalid task \"backup\": schedule.cron.minute: 61 is out of range 0-59");

  task = shell_task();
  task.clear_executor();
  CHECK(problem(task) == "invalid task \"backup\": executor: one of shell, http, plugin is required");

  task = shell_task();
  task.set_id("nightly:backup");
  CHECK(problem(task) ==
        "invalid task \"backup\": id: \"nightly:backup\" contains ':'; only A-Z a-z 0-9 . _ - are allowed");

  task = shell_task();
  task.mutable_http()->set_url("example.com/hook");
  CHECK(problem(task) ==
        "invalid task \"backup\": http.url: \"example.com/hook\" is not an absolute http:// or https:// URL");

  task = shell_task();
  task.clear_name();
  CHECK(problem(task) == "invalid task: name: is required");
}

TEST_CASE("boundary values of the ranges are accepted", "[task]") {
  v1::Task task = shell_task();
  task.set_timeout_seconds(1);
  task.mutable_shell()->set_kill_grace_seconds(3600);
  task.mutable_shell()->set_working_dir("/srv");
  task.mutable_retry()->set_backoff_multiplier(1.0);
  task.mutable_retry()->set_interval_seconds(86400);
  task.mutable_retry()->set_max_interval_seconds(86400);
  task.mutable_schedule()->set_jitter_seconds(86400);
  task.set_id(std::string(64, 'i'));
  task.set_name("a.b_c-D9");
  CHECK(problem(task).empty());
  task.mutable_retry()->set_backoff_multiplier(10.0);
  CHECK(problem(task).empty());
  task.mutable_http()->set_url("http://[::1]:8080/");
  task.mutable_http()->set_method("HEAD");
  CHECK(problem(task).empty());
}

TEST_CASE("a task without a schedule is manual and its timeout defaults to 300 s", "[task]") {
  v1::Task task = shell_task();
  task.clear_schedule();
  CHECK(problem(task).empty());
  const qf::Schedule schedule = qf::task_schedule(task);
  CHECK(schedule.spec().kind == qf::ScheduleKind::manual);
  CHECK_FALSE(schedule.next(qf::Instant{}).has_value());
  CHECK(qf::effective_timeout(task) == seconds{300});
  task.set_timeout_seconds(2);
  CHECK(qf::effective_timeout(task) == seconds{2});
}

TEST_CASE("task_schedule binds the task name as the H seed and throws on a bad schedule", "[task]") {
  v1::Task a = shell_task("alpha");
  v1::Task b = shell_task("bravo");
  a.mutable_schedule()->set_cron("H * * * *");
  b.mutable_schedule()->set_cron("H * * * *");
  const auto a_fires = qf::task_schedule(a).next_n(qf::Instant{}, 3);
  CHECK(a_fires == qf::task_schedule(a).next_n(qf::Instant{}, 3));
  // The seed is the name, not the id: renaming moves the slot, re-identifying does not.
  v1::Task renamed_id = a;
  renamed_id.set_id("other");
  CHECK(qf::task_schedule(renamed_id).next_n(qf::Instant{}, 3) == a_fires);

  v1::Task bad = shell_task();
  bad.mutable_schedule()->set_cron("* * 32 * *");
  try {
    qf::task_schedule(bad);
    FAIL("expected quartzflow::error");
  } catch (const qf::error& e) {
    CHECK(e.code() == qf::errc::invalid_argument);
    CHECK(e.detail().field == "schedule.cron.day-of-month");
    CHECK_THAT(std::string(e.what()), Catch::StartsWith("invalid task \"backup\": schedule.cron.day-of-month: 32"));
  }
  bad.mutable_schedule()->set_time_zone("Nowhere/Land");
  bad.mutable_schedule()->set_cron("0 0 * * *");
  CHECK_THROWS_AS(qf::task_schedule(bad), qf::error);
}

TEST_CASE("validate_tasks prefixes paths and refuses duplicate ids and names", "[task]") {
  std::vector<v1::Task> tasks{shell_task("a"), shell_task("b"), shell_task("c")};
  CHECK_FALSE(qf::validate_tasks(tasks));
  CHECK_FALSE(qf::validate_tasks({}));

  tasks[2].mutable_schedule()->set_cron("0 25 * * *");
  auto error = qf::validate_tasks(tasks);
  REQUIRE(error);
  CHECK(error->message() == "invalid task \"c\": tasks[2].schedule.cron.hour: 25 is out of range 0-23");

  tasks[2] = shell_task("c");
  tasks[2].set_id("a");
  error = qf::validate_tasks(tasks);
  REQUIRE(error);
  CHECK(error->message() == "invalid task \"c\": tasks[2].id: \"a\" is already the id of tasks[0]");

  tasks[2] = shell_task("c");
  tasks[2].set_name("b");
  error = qf::validate_tasks(tasks);
  REQUIRE(error);
  CHECK(error->field == "tasks[2].name");
  CHECK(error->reason == "\"b\" is already the name of tasks[1]");
}

TEST_CASE("schedules convert between the proto and ScheduleSpec without loss", "[task]") {
  const auto at = [](const char* text) { return *qf::parse_rfc3339(text); };
  std::vector<qf::ScheduleSpec> specs(6);
  specs[0].kind = qf::ScheduleKind::cron;
  specs[0].cron = "30 2 * * *";
  specs[0].time_zone = "Europe/Paris";
  specs[0].gap = qf::DstGapPolicy::skip;
  specs[0].overlap = qf::DstOverlapPolicy::both;
  specs[0].window_start = at("2026-01-01T00:00:00Z");
  specs[0].window_end = at("2026-12-31T23:59:59Z");
  specs[0].max_runs = 7;
  specs[0].jitter = seconds{30};
  specs[1].kind = qf::ScheduleKind::interval;
  specs[1].period = seconds{90};
  specs[2].kind = qf::ScheduleKind::fixed_delay;
  specs[2].period = seconds{300};
  specs[2].overlap = qf::DstOverlapPolicy::last;
  specs[3].kind = qf::ScheduleKind::once;
  specs[3].at = at("1969-07-20T20:17:40Z");  // before the epoch: negative milliseconds
  specs[4].kind = qf::ScheduleKind::manual;
  specs[5] = qf::ScheduleSpec::from_text("@every 1h30m");
  for (const auto& spec : specs) {
    v1::Schedule proto;
    proto.set_cron("garbage that to_proto must clear");
    qf::schedule_spec_to_proto(spec, proto);
    const qf::ScheduleSpec back = qf::schedule_spec_from_proto(proto);
    CHECK(back.kind == spec.kind);
    CHECK(back.cron == spec.cron);
    CHECK(back.period == spec.period);
    CHECK(back.at == spec.at);
    CHECK(back.time_zone == spec.time_zone);
    CHECK(back.gap == spec.gap);
    CHECK(back.overlap == spec.overlap);
    CHECK(back.window_start == spec.window_start);
    CHECK(back.window_end == spec.window_end);
    CHECK(back.max_runs == spec.max_runs);
    CHECK(back.jitter == spec.jitter);
  }
  v1::Schedule proto;
  qf::schedule_spec_to_proto(specs[0], proto);
  CHECK(proto.cron() == "30 2 * * *");
  CHECK(proto.window_start_unix_ms() == 1'767'225'600'000);
  CHECK(proto.dst_gap_policy() == v1::DST_GAP_POLICY_SKIP);
  qf::schedule_spec_to_proto(specs[4], proto);
  CHECK(proto.has_manual());
  CHECK(proto.time_zone().empty());  // UTC is the proto's default: left empty

  // Defaults of an empty proto: UTC, shift, first, no window, manual.
  const qf::ScheduleSpec empty = qf::schedule_spec_from_proto(v1::Schedule{});
  CHECK(empty.kind == qf::ScheduleKind::manual);
  CHECK(empty.time_zone == "UTC");
  CHECK_FALSE(empty.window_start);
}
