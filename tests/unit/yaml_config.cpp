// SPDX-License-Identifier: Apache-2.0
// YAML -> protobuf by reflection: types, enums, maps, lists, text schedules, every kind of
// error with its line and column, and task manifests whose semantic errors point at a line.
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <quartzflow/task.hpp>
#include <quartzflow/yaml_config.hpp>
#include <string>

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;
namespace fs = std::filesystem;
using google::protobuf::util::MessageDifferencer;

namespace {

/// A file in a fresh temporary directory, removed with the object.
class TempFile {
 public:
  TempFile(const std::string& name, const std::string& content) {
    static int counter = 0;
    dir_ = fs::temp_directory_path() / ("qf-yaml-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    fs::create_directories(dir_);
    path_ = (dir_ / name).string();
    std::ofstream(path_) << content;
  }
  ~TempFile() {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  fs::path dir_;
  std::string path_;
};

/// The error message of reading `yaml` into a Task, or "" when it reads.
template <typename Message = v1::Task>
std::string yaml_error(const std::string& yaml) {
  Message message;
  qf::YamlError error;
  if (qf::yaml_to_message(yaml, "t.yaml", message, error)) return {};
  return error.message();
}

// Line numbers matter below: the checks name them.
const char* const k_manifest = R"(# a manifest with one task of each executor
groups:
  - name: web
    tags: [prod, eu]
tasks:
  - name: rotate-logs
    enabled: true
    schedule: "0 3 * * *"
    shell:
      argv: [/usr/sbin/logrotate, /etc/logrotate.conf]
      env:
        LANG: C
        EMPTY:
      kill_grace_seconds: 10
    labels: {team: ops}
    overlap_policy: OVERLAP_POLICY_QUEUE
    max_queued_runs: 3
  - id: ping-1
    name: ping
    enabled: true
    schedule:
      cron: "*/10 * * * *"
      time_zone: Europe/Paris
      dst_gap_policy: skip
      dst_overlap_policy: 3
      window_start_unix_ms: 1767225600000
      max_runs: 18446744073709551615
    http:
      method: POST
      url: https://example.com/hook
      headers:
        Authorization: Bearer ${token}
      body: '{"ok": true}'
      success_status_codes: [200, 204]
      success_status_classes: [2]
    retry:
      max_retries: 3
      interval_seconds: 5
      backoff_multiplier: 2.5
      retry_on_exit_codes: [+2, 3]
      retry_on_http_status_codes: [429]
    placement: {mode: one, routing: consistent_hash, hash_key: "${token}"}
    params:
      - name: token
        required: true
  - name: sleeper
    schedule: "@every 90s"
    plugin:
      name: builtin.sleep
      config: {seconds: "5"}
    misfire_policy: fire_all
    misfire_fire_all_limit: 10
  - name: by-hand
    plugin: {name: builtin.echo}
    schedule:
      manual:
)";

}  // namespace

TEST_CASE("a manifest with every executor and both schedule forms reads field by field", "[yaml]") {
  v1::TaskManifest manifest;
  qf::YamlError error;
  const bool read = qf::yaml_to_message(k_manifest, "m.yaml", manifest, error);
  INFO(error.message());
  REQUIRE(read);
  REQUIRE(manifest.groups_size() == 1);
  CHECK(manifest.groups(0).tags_size() == 2);
  REQUIRE(manifest.tasks_size() == 4);

  const v1::Task& shell = manifest.tasks(0);
  CHECK(shell.id().empty());  // filled only by load_task_manifest
  CHECK(shell.enabled());
  CHECK(shell.schedule().cron() == "0 3 * * *");
  REQUIRE(shell.shell().argv_size() == 2);
  CHECK(shell.shell().argv(1) == "/etc/logrotate.conf");
  CHECK(shell.shell().env().at("LANG") == "C");
  CHECK(shell.shell().env().at("EMPTY").empty());
  CHECK(shell.shell().kill_grace_seconds() == 10);
  CHECK(shell.labels().at("team") == "ops");
  CHECK(shell.overlap_policy() == v1::OVERLAP_POLICY_QUEUE);

  const v1::Task& http = manifest.tasks(1);
  CHECK(http.id() == "ping-1");
  CHECK(http.schedule().cron() == "*/10 * * * *");
  CHECK(http.schedule().time_zone() == "Europe/Paris");
  CHECK(http.schedule().dst_gap_policy() == v1::DST_GAP_POLICY_SKIP);
  CHECK(http.schedule().dst_overlap_policy() == v1::DST_OVERLAP_POLICY_BOTH);
  CHECK(http.schedule().window_start_unix_ms() == 1'767'225'600'000);
  CHECK(http.schedule().max_runs() == 18'446'744'073'709'551'615ULL);
  CHECK(http.http().method() == "POST");
  CHECK(http.http().headers().at("Authorization") == "Bearer ${token}");
  CHECK(http.http().body() == R"({"ok": true})");
  CHECK(http.http().success_status_codes_size() == 2);
  CHECK(http.retry().backoff_multiplier() == 2.5);
  REQUIRE(http.retry().retry_on_exit_codes_size() == 2);
  CHECK(http.retry().retry_on_exit_codes(0) == 2);
  CHECK(http.placement().mode() == v1::PLACEMENT_MODE_ONE);
  CHECK(http.placement().routing() == v1::ROUTING_STRATEGY_CONSISTENT_HASH);
  CHECK(http.params(0).required());

  const v1::Task& plugin = manifest.tasks(2);
  CHECK(plugin.schedule().interval_seconds() == 90);
  CHECK(plugin.plugin().config().at("seconds") == "5");
  CHECK(plugin.misfire_policy() == v1::MISFIRE_POLICY_FIRE_ALL);

  CHECK(manifest.tasks(3).schedule().has_manual());  // `manual:` with nothing = present
}

TEST_CASE("a message read from YAML reads back identically from its JSON", "[yaml]") {
  v1::TaskManifest manifest;
  qf::YamlError error;
  REQUIRE(qf::yaml_to_message(k_manifest, "m.yaml", manifest, error));
  // JSON is YAML: the protobuf JSON form (enum names, 64-bit integers as strings, nested
  // maps) must read back into the same message.
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.add_whitespace = true;
  REQUIRE(google::protobuf::util::MessageToJsonString(manifest, &json, options).ok());
  v1::TaskManifest back;
  REQUIRE(qf::yaml_to_message(json, "m.json", back, error));
  INFO(json);
  CHECK(MessageDifferencer::Equals(manifest, back));
  CHECK(json.find("\"OVERLAP_POLICY_QUEUE\"") != std::string::npos);
}

TEST_CASE("enums accept the full name, the short name and the number", "[yaml]") {
  for (const char* text : {"OVERLAP_POLICY_REPLACE", "replace", "Replace", "4"}) {
    INFO(text);
    v1::Task task;
    qf::YamlError error;
    REQUIRE(qf::yaml_to_message(std::string("overlap_policy: ") + text, "", task, error));
    CHECK(task.overlap_policy() == v1::OVERLAP_POLICY_REPLACE);
  }
  CHECK(yaml_error("overlap_policy: sometimes") ==
        "t.yaml:1:17: overlap_policy: \"sometimes\" is not an overlap policy; expected one of allow, skip, queue, "
        "replace");
  CHECK(yaml_error("overlap_policy: 9") ==
        "t.yaml:1:17: overlap_policy: \"9\" is not an overlap policy; expected one of allow, skip, queue, replace");
}

TEST_CASE("integers are range-checked for their field type", "[yaml]") {
  CHECK(yaml_error("timeout_seconds: 4294967295").empty());
  CHECK(yaml_error("timeout_seconds: 4294967296") ==
        "t.yaml:1:18: timeout_seconds: 4294967296 is out of range 0-4294967295");
  CHECK(yaml_error("timeout_seconds: -1") == "t.yaml:1:18: timeout_seconds: -1 is out of range 0-4294967295");
  CHECK(yaml_error("timeout_seconds: 1.5") == "t.yaml:1:18: timeout_seconds: \"1.5\" is not an integer");
  CHECK(yaml_error("timeout_seconds: 0x10") == "t.yaml:1:18: timeout_seconds: \"0x10\" is not an integer");
  CHECK(yaml_error("revision: -9223372036854775808").empty());
  CHECK(yaml_error("revision: 9223372036854775808") ==
        "t.yaml:1:11: revision: 9223372036854775808 is out of range -9223372036854775808-9223372036854775807");
  CHECK(yaml_error("revision: 99999999999999999999") ==
        "t.yaml:1:11: revision: 99999999999999999999 is out of range -9223372036854775808-9223372036854775807");
  CHECK(yaml_error("retry: {retry_on_exit_codes: [1, 2147483648]}") ==
        "t.yaml:1:34: retry.retry_on_exit_codes[1]: 2147483648 is out of range -2147483648-2147483647");
  CHECK(yaml_error("schedule: {max_runs: -0}").empty());
  CHECK(yaml_error("retry: {backoff_multiplier: fast}") ==
        "t.yaml:1:29: retry.backoff_multiplier: \"fast\" is not a number");
  CHECK(yaml_error("retry: {backoff_multiplier: 1e1}").empty());
}

TEST_CASE("booleans are true or false, and strings take any scalar", "[yaml]") {
  CHECK(yaml_error("enabled: True").empty());
  CHECK(yaml_error("enabled: yes") == "t.yaml:1:10: enabled: \"yes\" is not a boolean (true or false)");
  v1::Task task;
  qf::YamlError error;
  REQUIRE(qf::yaml_to_message("name: 123\ndescription: true\n", "", task, error));
  CHECK(task.name() == "123");
  CHECK(task.description() == "true");
}

TEST_CASE("unknown fields, duplicate keys and wrong node types are errors with a position", "[yaml]") {
  CHECK(yaml_error("nmae: x") == "t.yaml:1:1: unknown field \"nmae\"; did you mean \"name\"?");
  CHECK(yaml_error("shell:\n  argv: [a]\n  colour: red\n") ==
        "t.yaml:3:3: shell: unknown field \"colour\" (the fields of ShellSpec are argv, script, interpreter, "
        "working_dir, env, run_as_user, kill_grace_seconds, clear_env)");
  CHECK(yaml_error("name: a\nname: b\n") == "t.yaml:2:1: name: duplicate key \"name\"");
  CHECK(yaml_error("labels:\n  a: 1\n  a: 2\n") == "t.yaml:3:3: labels[\"a\"]: duplicate key \"a\"");
  CHECK(yaml_error("shell:\n  argv: /bin/true\n") == "t.yaml:2:9: shell.argv: expected a list, found \"/bin/true\"");
  CHECK(yaml_error("shell:\n  argv: [[a]]\n") == "t.yaml:2:10: shell.argv[0]: expected a string, found a list");
  CHECK(yaml_error("shell: [a]") == "t.yaml:1:8: shell: expected a map of fields, found a list");
  CHECK(yaml_error("labels: [a]") == "t.yaml:1:9: labels: expected a map, found a list");
  CHECK(yaml_error("timeout_seconds: {a: 1}") == "t.yaml:1:18: timeout_seconds: expected an integer, found a map");
  CHECK(yaml_error("- a\n- b\n") == "t.yaml:1:1: expected a map of fields, found a list");
  CHECK(yaml_error("shell: {argv: [a]}\nhttp: {url: \"http://h\"}\n") ==
        "t.yaml:2:1: http: conflicts with \"shell\": only one of shell, http, plugin may be set");
  CHECK(yaml_error("params:\n  - name: a\n  - 7\n") == "t.yaml:3:5: params[1]: expected a map of fields, found \"7\"");
}

TEST_CASE("YAML syntax errors, extra documents and text schedules report their line", "[yaml]") {
  const std::string syntax = yaml_error("name: a\nshell: {argv: [a]\n");
  CHECK_THAT(syntax, Catch::StartsWith("t.yaml:"));
  CHECK_THAT(syntax, Catch::Contains("end of map flow not found"));
  CHECK(yaml_error("name: a\nschedule: @every 90s\n") ==
        "t.yaml:2:11: unknown token (a value starting with @ must be quoted)");
  CHECK(yaml_error("schedule: */5 * * * *\n") ==
        "t.yaml:1:11: the referenced anchor is not defined (a value starting with * is read as an alias: quote it, "
        "e.g. \"*/5 * * * *\")");
  CHECK(yaml_error("name: a\n---\nname: b\n") == "t.yaml:3:1: only one YAML document is allowed");
  CHECK(yaml_error("name: a\nschedule: \"@every soon\"\n") ==
        "t.yaml:2:11: schedule: \"soon\" is not a duration such as 90s or 1h30m");
  CHECK(yaml_error("schedule: \"   \"") == "t.yaml:1:11: schedule: is empty");
  CHECK(yaml_error("").empty());
  CHECK(yaml_error("# only a comment\n").empty());
}

TEST_CASE("a failed read leaves the message untouched", "[yaml]") {
  v1::Task task;
  task.set_name("before");
  qf::YamlError error;
  CHECK_FALSE(qf::yaml_to_message("name: after\ntimeout_seconds: -5\n", "", task, error));
  CHECK(task.name() == "before");
  CHECK(error.file == "<string>");
  CHECK(error.line == 2);
  CHECK(error.column == 18);
  CHECK(error.field == "timeout_seconds");
  // A successful read replaces the message rather than merging into it.
  REQUIRE(qf::yaml_to_message("timeout_seconds: 5\n", "", task, error));
  CHECK(task.name().empty());
  CHECK(task.timeout_seconds() == 5);
}

TEST_CASE("yaml_file_to_message reads files and names missing ones", "[yaml]") {
  TempFile file("agent.yaml",
                "data_dir: /var/lib/qf\ncoordinators: [\"a:7443\", \"b:7443\"]\nmax_log_bytes: 1048576\n");
  v1::AgentConfig config;
  qf::YamlError error;
  REQUIRE(qf::yaml_file_to_message(file.path(), config, error));
  CHECK(config.coordinators_size() == 2);
  CHECK(config.max_log_bytes() == 1'048'576);

  CHECK_FALSE(qf::yaml_file_to_message(file.path() + ".missing", config, error));
  CHECK(error.message() == file.path() + ".missing: cannot open: No such file or directory");
  CHECK(config.coordinators_size() == 2);

  TempFile bad("agent.yaml", "data_dir: /x\nretention_days: week\n");
  CHECK_FALSE(qf::yaml_file_to_message(bad.path(), config, error));
  CHECK(error.message() == bad.path() + ":2:17: retention_days: \"week\" is not an integer");
}

TEST_CASE("load_task_manifest fills ids from names and validates every task", "[yaml]") {
  TempFile file("tasks.yaml", k_manifest);
  v1::TaskManifest manifest;
  qf::YamlError error;
  const bool loaded = qf::load_task_manifest(file.path(), manifest, error);
  INFO(error.message());
  REQUIRE(loaded);
  CHECK(manifest.tasks(0).id() == "rotate-logs");
  CHECK(manifest.tasks(1).id() == "ping-1");
  CHECK(manifest.tasks(2).id() == "sleeper");
}

TEST_CASE("semantic errors in a manifest point at the deepest line that was written", "[yaml]") {
  auto load_error = [](const std::string& yaml) {
    TempFile file("tasks.yaml", yaml);
    v1::TaskManifest manifest;
    manifest.add_tasks()->set_name("untouched");
    qf::YamlError error;
    if (qf::load_task_manifest(file.path(), manifest, error)) return std::string("loaded");
    CHECK(manifest.tasks_size() == 1);
    CHECK(manifest.tasks(0).name() == "untouched");
    // The file name is a temporary path: report what follows it.
    return error.message().substr(file.path().size());
  };
  const std::string head = "tasks:\n  - name: a\n    shell: {argv: [/bin/true]}\n";
  // Text form: the cron field is inside the string, so the line is that of `schedule:`.
  CHECK(load_error(head + "  - name: b\n    shell: {argv: [x]}\n    schedule: \"61 * * * *\"\n") ==
        ":6:5: tasks[1].schedule.cron.minute: 61 is out of range 0-59");
  // Map form: the line of `cron:`.
  CHECK(load_error(
            head +
            "  - name: b\n    shell: {argv: [x]}\n    schedule:\n      time_zone: UTC\n      cron: \"61 * * * *\"\n") ==
        ":8:7: tasks[1].schedule.cron.minute: 61 is out of range 0-59");
  // A field that was never written (the executor) falls back to the task's list item.
  CHECK(load_error(head + "  - name: b\n") == ":4:5: tasks[1].executor: one of shell, http, plugin is required");
  CHECK(load_error(head + "  - name: b\n    shell:\n      argv: [x]\n      working_dir: tmp\n") ==
        ":7:7: tasks[1].shell.working_dir: \"tmp\" is not an absolute path");
  CHECK(load_error(head + "  - name: b\n    shell: {argv: [x]}\n    timeout_seconds: 90000\n") ==
        ":6:5: tasks[1].timeout_seconds: 90000 is out of range 1-86400 seconds");
  CHECK(load_error(head + "  - name: a\n    shell: {argv: [x]}\n") ==
        ":4:5: tasks[1].id: \"a\" is already the id of tasks[0]");
  CHECK(load_error(head + "  - name: c\n    id: a\n    shell: {argv: [x]}\n") ==
        ":5:5: tasks[1].id: \"a\" is already the id of tasks[0]");
  CHECK(load_error(head + "  - name: c\n    shell: {argv: [x], env: {\"A=B\": x}}\n") ==
        ":5:30: tasks[1].shell.env[\"A=B\"]: is not a valid environment variable name");
  CHECK(load_error(head + "  - name: c\n    shell: {argv: [x]}\n    params: [{name: x}, {name: X}]\n") ==
        ":6:26: tasks[1].params[1].name: \"X\" is already declared by params[0] (names are compared ignoring case)");
  // Schema errors come first and keep their own position.
  CHECK(load_error(head + "  - name: c\n    shel: {argv: [x]}\n") ==
        ":5:5: tasks[1]: unknown field \"shel\"; did you mean \"shell\"?");
}

TEST_CASE("the demo's sample manifest loads and schedules what the demo shows", "[yaml]") {
  const std::string path = std::string(QUARTZFLOW_SOURCE_DIR) + "/examples/agent/sample-manifest.yaml";
  v1::TaskManifest manifest;
  qf::YamlError error;
  const bool loaded = qf::load_task_manifest(path, manifest, error);
  INFO(error.message());
  REQUIRE(loaded);
  REQUIRE(manifest.tasks_size() == 3);

  const v1::Task& hello = manifest.tasks(0);
  CHECK(hello.id() == "hello");
  CHECK(hello.enabled());
  CHECK(hello.params(0).name() == "greeting");
  const auto fires = qf::task_schedule(hello).next_n(*qf::parse_rfc3339("2026-01-01T00:00:00Z"), 3);
  REQUIRE(fires.size() == 3);
  CHECK(qf::format_rfc3339(fires[0].scheduled) == "2026-01-01T00:00:05Z");
  CHECK(qf::format_rfc3339(fires[2].scheduled) == "2026-01-01T00:00:15Z");

  const v1::Task& flaky = manifest.tasks(1);
  CHECK(flaky.shell().script().find("exit 3") != std::string::npos);
  CHECK(flaky.retry().max_retries() == 2);
  CHECK(flaky.retry().interval_seconds() == 1);

  const v1::Task& sleepy = manifest.tasks(2);
  CHECK(qf::effective_timeout(sleepy) == std::chrono::seconds{2});
  CHECK(sleepy.shell().argv(1) == "30");
}

TEST_CASE("a manifest task that does not say enabled is enabled, one that says false is not", "[yaml]") {
  TempFile file("tasks.yaml",
                "tasks:\n  - name: implicit\n    shell: {argv: [/bin/true]}\n"
                "  - name: off\n    enabled: false\n    shell: {argv: [/bin/true]}\n");
  v1::TaskManifest manifest;
  qf::YamlError error;
  REQUIRE(qf::load_task_manifest(file.path(), manifest, error));
  REQUIRE(manifest.tasks_size() == 2);
  CHECK(manifest.tasks(0).has_enabled());
  CHECK(manifest.tasks(0).enabled());
  CHECK(manifest.tasks(1).has_enabled());
  CHECK_FALSE(manifest.tasks(1).enabled());
}

TEST_CASE("lists longer than any manifest may hold are refused with their path", "[yaml]") {
  std::string yaml = "tasks:\n  - name: a\n    shell: {argv: [/bin/true]}\n    retry:\n      retry_on_exit_codes: [";
  for (int i = 0; i < 100001; ++i) yaml += i ? ",3" : "3";
  yaml += "]\n";
  TempFile file("big.yaml", yaml);
  v1::TaskManifest manifest;
  qf::YamlError error;
  REQUIRE_FALSE(qf::load_task_manifest(file.path(), manifest, error));
  CHECK_THAT(error.message(), Catch::Contains("tasks[0].retry.retry_on_exit_codes") &&
                                  Catch::Contains("has 100001 elements; at most 100000"));
}

TEST_CASE("inputs found by fuzzing: a stray comma and bytes that are not UTF-8 are refused at once", "[yaml]") {
  // yaml-cpp 0.7 looped forever, allocating gigabytes, on a ',' where a node should start.
  for (const char* text : {",\n", "---\n,\n", "\"x\"\n,\n", "&x ,\n", "%Y\n,\n", "name: a\n...\n,\n"}) {
    INFO(text);
    CHECK_THAT(yaml_error(text), Catch::Contains("t.yaml:") && Catch::Contains("did not make progress"));
  }
  CHECK(yaml_error<v1::TaskManifest>("tasks:\n  - name: o\n    shell:\n     script: \xff\n") ==
        "t.yaml:4:14: the text is not valid UTF-8");
  // What a valid document holds still reads, however many small nodes it has.
  std::string many = "tasks:\n";
  for (int i = 0; i < 500; ++i) many += "  - {name: t" + std::to_string(i) + ", labels: {a: b}}\n";
  CHECK(yaml_error<v1::TaskManifest>(many).empty());
}
