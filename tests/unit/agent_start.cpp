// SPDX-License-Identifier: Apache-2.0
// What a migration from crontab needs of the engine and the manifests: agent-start tasks
// (`@reboot`), schedules in the host's zone (`time_zone: local`), QF_AGENT_ID / QF_HOSTNAME
// in runs, and manifest-wide defaults.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>

#include <catch2/catch.hpp>

#include <utility>
#include <boost/asio/io_context.hpp>

#include <quartzflow/cron.hpp>
#include <quartzflow/execution_status.hpp>
#include <quartzflow/task.hpp>
#include <quartzflow/task_engine.hpp>
#include <quartzflow/yaml_config.hpp>

#include "temp_dir.hpp"

namespace qf = quartzflow;
using namespace std::chrono_literals;

namespace {

/// An engine on a LocalStore file that outlives it, so that a test can start the agent again.
struct Agent {
  boost::asio::io_context io;
  qf::testing::TempDir dir{"qf-agent-start"};
  std::unique_ptr<qf::LocalStore> store;
  std::unique_ptr<qf::TaskEngine> engine;
  std::vector<qf::v1::Execution> finals;

  Agent() { open(); }
  ~Agent() { close(); }

  void open() {
    qf::LocalStoreOptions options;
    options.path = dir.file("agent.db");
    qf::error_code ec;
    std::string detail;
    store = qf::LocalStore::open(io.get_executor(), options, ec, &detail);
    REQUIRE(store);
    qf::TaskEngineOptions engine_options;
    engine_options.agent_id = "agent-7";
    engine_options.hostname = "host-7.example";
    engine = std::make_unique<qf::TaskEngine>(io.get_executor(), *store, engine_options);
    engine->set_sink([this](const qf::v1::Execution& e) {
      if (qf::is_final(e.status())) finals.push_back(e);
    });
  }
  /// As a stopped process: every record flushed, the engine and the store closed.
  void close() {
    if (!engine) return;
    bool stopped = false;
    engine->stop(0s, [&] { stopped = true; });
    run_until([&] { return stopped; });
    engine.reset();
    store.reset();
    io.restart();
    io.poll();
  }
  void apply(std::vector<qf::v1::Task> tasks, std::uint64_t version) {
    qf::ValidationError error;
    INFO(error.message());
    REQUIRE(engine->apply(std::move(tasks), version, &error));
  }
  template <typename Pred>
  bool run_until(Pred done, std::chrono::milliseconds limit = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      if (io.stopped()) io.restart();
      io.run_one_for(20ms);
    }
    return done();
  }
  void run_for(std::chrono::milliseconds span) {
    run_until([] { return false; }, span);
  }
};

qf::v1::Task boot_task(const std::string& id, const std::string& script) {
  qf::v1::Task task;
  task.set_id(id);
  task.set_name(id);
  task.set_enabled(true);
  task.mutable_shell()->set_script(script);
  task.mutable_schedule()->mutable_agent_start();
  return task;
}

/// Sets an environment variable for one scope, then puts back what was there.
struct ScopedEnv {
  std::string name;
  std::optional<std::string> saved;
  ScopedEnv(std::string n, const char* value) : name(std::move(n)) {
    if (const char* old = std::getenv(name.c_str())) saved = old;
    if (value) {
      ::setenv(name.c_str(), value, 1);
    } else {
      ::unsetenv(name.c_str());
    }
  }
  ~ScopedEnv() {
    if (saved) {
      ::setenv(name.c_str(), saved->c_str(), 1);
    } else {
      ::unsetenv(name.c_str());
    }
  }
};

}  // namespace

TEST_CASE("an agent-start task runs once when the engine starts, again when it starts again, not on a reload",
          "[engine][agent_start]") {
  Agent agent;
  agent.apply({boot_task("boot", "echo \"$QF_AGENT_ID $QF_HOSTNAME\"")}, 1);
  agent.engine->start();
  REQUIRE(agent.run_until([&] { return agent.finals.size() == 1; }));
  const auto first = agent.finals.front();
  CHECK(first.status() == qf::v1::EXECUTION_STATUS_SUCCESS);
  CHECK(first.trigger() == qf::v1::TRIGGER_TYPE_SCHEDULED);
  CHECK(first.output() == "agent-7 host-7.example\n");

  // A new configuration (a reload, a reconnect's snapshot, a changed task) runs nothing.
  auto changed = boot_task("boot", "echo changed");
  changed.set_description("still the boot task");
  agent.apply({changed, boot_task("boot2", "echo added later")}, 2);
  agent.run_for(1500ms);
  CHECK(agent.finals.size() == 1);

  // The agent process starts again with its configuration: each agent-start task runs once.
  agent.close();
  agent.finals.clear();
  agent.open();
  agent.apply({changed, boot_task("boot2", "echo added later")}, 2);
  agent.engine->start();
  REQUIRE(agent.run_until([&] { return agent.finals.size() == 2; }));
  agent.run_for(1s);
  REQUIRE(agent.finals.size() == 2);
  std::set<std::string> tasks;
  for (const auto& e : agent.finals) {
    tasks.insert(e.task_id());
    CHECK(e.status() == qf::v1::EXECUTION_STATUS_SUCCESS);
    CHECK(e.execution_id() != first.execution_id());
  }
  CHECK(tasks == std::set<std::string>{"boot", "boot2"});
}

TEST_CASE("an engine that starts without configuration runs agent-start tasks from the first one only",
          "[engine][agent_start]") {
  Agent agent;
  agent.engine->start();  // a connected agent's first start: nothing cached yet
  agent.run_for(300ms);
  CHECK(agent.finals.empty());
  auto disabled = boot_task("off", "echo never");
  disabled.set_enabled(false);
  agent.apply({boot_task("boot", "echo first config"), disabled}, 5);
  REQUIRE(agent.run_until([&] { return agent.finals.size() == 1; }));
  CHECK(agent.finals.front().task_id() == "boot");
  agent.apply({boot_task("boot", "echo first config"), boot_task("boot3", "echo later")}, 6);
  agent.run_for(1500ms);
  CHECK(agent.finals.size() == 1);
}

TEST_CASE("agent-start schedules and the local zone are refused for routed placements, naming the field",
          "[engine][agent_start]") {
  auto task = boot_task("boot", "true");
  CHECK_FALSE(qf::validate_task(task).has_value());
  task.mutable_placement()->set_mode(qf::v1::PLACEMENT_MODE_ONE);
  auto problem = qf::validate_task(task);
  REQUIRE(problem);
  CHECK(problem->field == "schedule.agent_start");

  task.mutable_schedule()->set_cron("0 9 * * *");
  task.mutable_schedule()->set_time_zone("local");
  problem = qf::validate_task(task);
  REQUIRE(problem);
  CHECK(problem->field == "schedule.time_zone");
  task.mutable_placement()->set_mode(qf::v1::PLACEMENT_MODE_ALL);
  CHECK_FALSE(qf::validate_task(task).has_value());

  qf::error_code ec;
  auto spec = qf::ScheduleSpec::from_text("@reboot", ec);
  REQUIRE(spec);
  CHECK(spec->kind == qf::ScheduleKind::agent_start);
  CHECK_FALSE(qf::ScheduleSpec::from_text("@reboot now", ec).has_value());
}

TEST_CASE("time_zone local is the zone of the host, read from TZ when it names one", "[cron][agent_start]") {
  {
    ScopedEnv tz("TZ", "Asia/Tokyo");
    CHECK(qf::local_time_zone_name() == "Asia/Tokyo");
    qf::CronOptions options;
    options.time_zone = "local";
    const auto expr = qf::CronExpr::parse("0 9 * * *", options);
    // 09:00 in Tokyo is 00:00 UTC.
    const auto after = qf::parse_rfc3339("2026-03-01T12:00:00Z");
    REQUIRE(after);
    CHECK(qf::format_rfc3339(*expr.next(*after)) == "2026-03-02T00:00:00Z");
  }
  {
    ScopedEnv tz("TZ", ":America/New_York");
    CHECK(qf::local_time_zone_name() == "America/New_York");
  }
  {
    // Not a zone name: the host's files decide, and the answer is always a zone the database knows.
    ScopedEnv tz("TZ", "no/such-zone");
    qf::CronOptions options;
    options.time_zone = qf::local_time_zone_name();
    CHECK_NOTHROW(qf::CronExpr::parse("0 9 * * *", options));
  }
}

TEST_CASE("manifest defaults fill what the tasks leave unset, the tasks' own values win", "[yaml][agent_start]") {
  qf::testing::TempDir dir{"qf-manifest-defaults"};
  const auto path = dir.file("tasks.yaml");
  std::ofstream(path) << R"(defaults:
  env: {PATH: /usr/local/bin:/usr/bin:/bin, MODE: batch}
  interpreter: [/bin/bash, -e]
  working_dir: /srv/app
  time_zone: Europe/Paris
  group_ids: [web]
  labels: {team: data, source: crontab}
  run_as_user: app
tasks:
  - name: dump
    schedule: "30 2 * * *"
    shell: {script: "pg_dump appdb", env: {MODE: nightly}}
  - name: own
    schedule: {cron: "0 * * * *", time_zone: UTC}
    shell: {script: "true", interpreter: [/bin/sh], working_dir: /tmp, run_as_user: nobody}
    group_ids: [batch]
    labels: {team: ops}
  - name: boot
    schedule: "@reboot"
    shell: {argv: [/usr/bin/true]}
    all_agents: true
)";
  qf::v1::TaskManifest manifest;
  qf::YamlError error;
  INFO(error.message());
  REQUIRE(qf::load_task_manifest(path, manifest, error));
  REQUIRE(manifest.tasks_size() == 3);
  const auto& dump = manifest.tasks(0);
  CHECK(dump.shell().env().at("PATH") == "/usr/local/bin:/usr/bin:/bin");
  CHECK(dump.shell().env().at("MODE") == "nightly");
  CHECK(std::vector<std::string>(dump.shell().interpreter().begin(), dump.shell().interpreter().end()) ==
        std::vector<std::string>{"/bin/bash", "-e"});
  CHECK(dump.shell().working_dir() == "/srv/app");
  CHECK(dump.shell().run_as_user() == "app");
  CHECK(dump.schedule().time_zone() == "Europe/Paris");
  CHECK(std::vector<std::string>(dump.group_ids().begin(), dump.group_ids().end()) == std::vector<std::string>{"web"});
  CHECK(dump.labels().at("team") == "data");
  const auto& own = manifest.tasks(1);
  CHECK(own.shell().interpreter_size() == 1);
  CHECK(own.shell().working_dir() == "/tmp");
  CHECK(own.shell().run_as_user() == "nobody");
  CHECK(own.schedule().time_zone() == "UTC");
  CHECK(std::vector<std::string>(own.group_ids().begin(), own.group_ids().end()) == std::vector<std::string>{"batch"});
  CHECK(own.labels().at("team") == "ops");
  CHECK(own.labels().at("source") == "crontab");
  const auto& boot = manifest.tasks(2);
  CHECK(boot.schedule().has_agent_start());
  CHECK(boot.shell().interpreter_size() == 0);  // argv tasks have no interpreter
  CHECK(boot.group_ids_size() == 0);            // all_agents: no groups
}

TEST_CASE("a manifest default that makes a task invalid is refused at the task's field", "[yaml][agent_start]") {
  qf::testing::TempDir dir{"qf-manifest-defaults"};
  const auto path = dir.file("tasks.yaml");
  std::ofstream(path) << R"(defaults:
  time_zone: Mars/Olympus
tasks:
  - name: dump
    schedule: "30 2 * * *"
    shell: {script: "true"}
)";
  qf::v1::TaskManifest manifest;
  qf::YamlError error;
  REQUIRE_FALSE(qf::load_task_manifest(path, manifest, error));
  CHECK(error.field == "tasks[0].schedule.time_zone");
  CHECK(manifest.tasks_size() == 0);
}
