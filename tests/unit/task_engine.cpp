// SPDX-License-Identifier: Apache-2.0
// TaskEngine with real processes: policies, timeouts on process groups, cancel, retries,
// params as environment only, plugins, schedules and misfires.
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include <utility>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

#include <spdlog/sinks/ostream_sink.h>

#include <quartzflow/log.hpp>
#include <quartzflow/task.hpp>
#include <quartzflow/task_engine.hpp>

#include "full_disk_vfs.hpp"

namespace qf = quartzflow;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

/// An engine on its own io_context and an in-memory store, recording final records.
struct Fixture {
  boost::asio::io_context io;
  std::unique_ptr<qf::LocalStore> store;
  std::unique_ptr<qf::TaskEngine> engine;
  std::vector<qf::v1::Execution> finals;
  std::vector<qf::v1::Execution> events;
  fs::path dir;
  std::function<void(qf::TaskEngineOptions&)> configure;  ///< applied by make_engine

  explicit Fixture(std::string store_path = ":memory:") {
    dir = fs::temp_directory_path() / ("qf-engine-" + std::to_string(::getpid()) + "-" + std::to_string(counter()++));
    fs::create_directories(dir);
    qf::LocalStoreOptions options;
    options.path = store_path == ":memory:" ? (dir / "agent.db").string() : store_path;
    qf::error_code ec;
    std::string detail;
    store = qf::LocalStore::open(io.get_executor(), options, ec, &detail);
    REQUIRE(store);
    make_engine();
  }
  ~Fixture() {
    engine.reset();
    store.reset();
    std::error_code ignored;
    fs::remove_all(dir, ignored);
  }
  static int& counter() {
    static int n = 0;
    return n;
  }
  void make_engine() {
    qf::TaskEngineOptions options;
    options.agent_id = "agent-1";
    options.progress_interval = 1s;
    if (configure) configure(options);
    engine = std::make_unique<qf::TaskEngine>(io.get_executor(), *store, options);
    engine->set_sink([this](const qf::v1::Execution& e) {
      events.push_back(e);
      if (e.status() != qf::v1::EXECUTION_STATUS_PENDING && e.status() != qf::v1::EXECUTION_STATUS_RUNNING)
        finals.push_back(e);
    });
  }
  void apply(std::vector<qf::v1::Task> tasks) {
    qf::ValidationError error;
    INFO(error.message());
    REQUIRE(engine->apply(std::move(tasks), 1, &error));
  }
  std::string trigger(const std::string& task, std::map<std::string, std::string> params = {}) {
    qf::error_code ec;
    std::string detail;
    auto id = engine->trigger(task, std::move(params), ec, &detail);
    INFO(detail);
    REQUIRE(id);
    return *id;
  }
  /// Runs the io_context until `done` or the deadline; bounded, never a bare sleep.
  template <typename Pred>
  bool run_until(Pred done, std::chrono::milliseconds limit = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      if (io.stopped()) io.restart();  // it stops itself whenever it runs out of work
      io.run_one_for(20ms);
    }
    return done();
  }
  const qf::v1::Execution* final_of(const std::string& id) const {
    for (const auto& e : finals)
      if (e.execution_id() == id) return &e;
    return nullptr;
  }
};

qf::v1::Task shell_task(const std::string& id, const std::string& script) {
  qf::v1::Task task;
  task.set_id(id);
  task.set_name(id);
  task.set_enabled(true);
  task.mutable_shell()->set_script(script);
  task.mutable_schedule()->mutable_manual();
  return task;
}

bool process_alive(pid_t pid) { return ::kill(pid, 0) == 0; }

/// Alive and not a zombie (a zombie is dead, waiting for whoever reaps orphans).
bool process_running(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return false;
  const auto close = line.rfind(')');
  return close == std::string::npos || close + 2 >= line.size() || line[close + 2] != 'Z';
}

}  // namespace

TEST_CASE("a shell run records SUCCESS with its output, exit code and times", "[engine]") {
  Fixture f;
  f.apply({shell_task("hello", "echo hello; echo oops >&2")});
  const auto id = f.trigger("hello");
  REQUIRE(f.run_until([&] { return f.final_of(id) != nullptr; }));
  const auto& r = *f.final_of(id);
  CHECK(r.status() == qf::v1::EXECUTION_STATUS_SUCCESS);
  CHECK(r.exit_code() == 0);
  CHECK(r.output().find("hello") != std::string::npos);
  CHECK(r.output().find("oops") != std::string::npos);
  CHECK(r.trigger() == qf::v1::TRIGGER_TYPE_MANUAL);
  CHECK(r.agent_id() == "agent-1");
  CHECK(r.started_unix_ms() > 0);
  CHECK(r.ended_unix_ms() >= r.started_unix_ms());
  // RUNNING was reported before the final state, and the store holds the final record.
  CHECK(std::any_of(f.events.begin(), f.events.end(), [&](auto& e) {
    return e.execution_id() == id && e.status() == qf::v1::EXECUTION_STATUS_RUNNING;
  }));
  qf::error_code ec;
  const auto stored = f.store->execution(id, ec);
  REQUIRE(stored);
  CHECK(stored->status() == qf::v1::EXECUTION_STATUS_SUCCESS);
}

TEST_CASE("a failing command records its exit code, a missing one is not retried", "[engine]") {
  Fixture f;
  auto missing = shell_task("missing", "");
  missing.mutable_shell()->clear_script();
  missing.mutable_shell()->add_argv("/no/such/program");
  missing.mutable_retry()->set_max_retries(3);
  f.apply({shell_task("fails", "exit 7"), missing});
  const auto a = f.trigger("fails");
  const auto b = f.trigger("missing");
  REQUIRE(f.run_until([&] { return f.final_of(a) && f.final_of(b); }));
  CHECK(f.final_of(a)->status() == qf::v1::EXECUTION_STATUS_FAILURE);
  CHECK(f.final_of(a)->exit_code() == 7);
  CHECK(f.final_of(a)->failure_reason() == "exit code 7");
  CHECK(f.final_of(b)->status() == qf::v1::EXECUTION_STATUS_FAILURE);
  CHECK(f.final_of(b)->error_message().find("/no/such/program") != std::string::npos);
  f.run_until([] { return false; }, 300ms);
  CHECK(f.finals.size() == 2);  // no retry of a spawn failure
}

TEST_CASE("a timeout kills the whole process group", "[engine]") {
  Fixture f;
  const auto pid_file = f.dir / "child.pid";
  auto task = shell_task("slow", "sleep 30 & echo $! > '" + pid_file.string() + "'; sleep 30");
  task.set_timeout_seconds(1);
  task.mutable_shell()->set_kill_grace_seconds(1);
  f.apply({task});
  const auto id = f.trigger("slow");
  REQUIRE(f.run_until([&] { return f.final_of(id) != nullptr; }, 8s));
  CHECK(f.final_of(id)->status() == qf::v1::EXECUTION_STATUS_TIMEOUT);
  pid_t child = 0;
  std::ifstream(pid_file) >> child;
  REQUIRE(child > 0);
  // The background grandchild was in the group: it is gone too (reaped by init).
  f.run_until([&] { return !process_alive(child); }, 3s);
  CHECK_FALSE(process_alive(child));
}

TEST_CASE("a run whose spawner process is killed ends killed, with its group, and the next run starts",
          "[engine]") {
  Fixture f;
  const auto parent_file = f.dir / "parent.pid";
  const auto child_file = f.dir / "child.pid";
  f.apply({shell_task("held", "sleep 30 & echo $! > '" + child_file.string() + "'; echo $PPID > '" +
                                  parent_file.string() + "'; wait"),
           shell_task("after", "echo after")});
  const auto id = f.trigger("held");
  pid_t spawner = 0, child = 0;
  REQUIRE(f.run_until([&] {
    std::ifstream parent(parent_file), background(child_file);
    return static_cast<bool>(parent >> spawner) && static_cast<bool>(background >> child);
  }));
  REQUIRE(spawner != ::getpid());  // runs are started by the spawner, a child of the agent
  REQUIRE(::kill(spawner, SIGKILL) == 0);
  REQUIRE(f.run_until([&] { return f.final_of(id) != nullptr; }, 5s));
  CHECK(f.final_of(id)->status() == qf::v1::EXECUTION_STATUS_FAILURE);
  CHECK(f.final_of(id)->failure_reason() == "signal 9");
  f.run_until([&] { return !process_running(child); }, 3s);
  CHECK_FALSE(process_running(child));  // the run's background process went with its group
  const auto next = f.trigger("after");
  REQUIRE(f.run_until([&] { return f.final_of(next) != nullptr; }));
  CHECK(f.final_of(next)->status() == qf::v1::EXECUTION_STATUS_SUCCESS);
  CHECK(f.final_of(next)->output() == "after\n");
}

TEST_CASE("a process that ignores SIGTERM is killed after the grace period", "[engine]") {
  Fixture f;
  auto task = shell_task("stubborn", "trap '' TERM; sleep 30");
  task.set_timeout_seconds(1);
  task.mutable_shell()->set_kill_grace_seconds(1);
  f.apply({task});
  const auto start = std::chrono::steady_clock::now();
  const auto id = f.trigger("stubborn");
  REQUIRE(f.run_until([&] { return f.final_of(id) != nullptr; }, 8s));
  CHECK(f.final_of(id)->status() == qf::v1::EXECUTION_STATUS_TIMEOUT);
  CHECK(std::chrono::steady_clock::now() - start >= 1900ms);
}

TEST_CASE("cancel works from RUNNING and from PENDING", "[engine]") {
  Fixture f;
  auto task = shell_task("queued", "sleep 30");
  task.set_overlap_policy(qf::v1::OVERLAP_POLICY_QUEUE);
  f.apply({task});
  const auto first = f.trigger("queued");
  const auto second = f.trigger("queued");
  f.run_until([&] { return f.engine->running_count() == 1; });
  CHECK(f.engine->queued_count() == 1);
  REQUIRE(f.engine->cancel(second));
  REQUIRE(f.run_until([&] { return f.final_of(second) != nullptr; }));
  CHECK(f.final_of(second)->status() == qf::v1::EXECUTION_STATUS_CANCELLED);
  REQUIRE(f.engine->cancel(first, "alice"));
  REQUIRE(f.run_until([&] { return f.final_of(first) != nullptr; }));
  CHECK(f.final_of(first)->status() == qf::v1::EXECUTION_STATUS_CANCELLED);
  CHECK(f.final_of(first)->cancelled_by() == "alice");
  CHECK_FALSE(f.engine->cancel("no-such-execution"));
}

TEST_CASE("overlap skip records the fire as SKIPPED naming the running one", "[engine]") {
  Fixture f;
  f.apply({shell_task("busy", "sleep 1")});
  const auto first = f.trigger("busy");
  const auto second = f.trigger("busy");
  REQUIRE(f.run_until([&] { return f.final_of(second) != nullptr; }));
  CHECK(f.final_of(second)->status() == qf::v1::EXECUTION_STATUS_SKIPPED);
  CHECK(f.final_of(second)->skip_reason() == qf::v1::SKIP_REASON_OVERLAP);
  CHECK(f.final_of(second)->skip_detail().find(first) != std::string::npos);
  REQUIRE(f.run_until([&] { return f.final_of(first) != nullptr; }));
  CHECK(f.final_of(first)->status() == qf::v1::EXECUTION_STATUS_SUCCESS);
}

TEST_CASE("overlap replace cancels the running run and starts the new one", "[engine]") {
  Fixture f;
  auto task = shell_task("replace", "sleep 30");
  task.set_overlap_policy(qf::v1::OVERLAP_POLICY_REPLACE);
  f.apply({task});
  const auto first = f.trigger("replace");
  f.run_until([&] { return f.engine->running_count() == 1; });
  const auto second = f.trigger("replace");
  REQUIRE(f.run_until([&] { return f.final_of(first) != nullptr; }));
  CHECK(f.final_of(first)->status() == qf::v1::EXECUTION_STATUS_CANCELLED);
  CHECK(f.final_of(first)->cancelled_by() == "replaced by " + second);
  REQUIRE(f.run_until([&] {
    auto active = f.engine->active_executions();
    return active.size() == 1 && active.front() == second;
  }));
  f.engine->cancel(second);
  REQUIRE(f.run_until([&] { return f.final_of(second) != nullptr; }));
}

TEST_CASE("concurrency limits and allow run several at once", "[engine]") {
  Fixture f;
  auto task = shell_task("parallel", "sleep 1");
  task.set_overlap_policy(qf::v1::OVERLAP_POLICY_ALLOW);
  task.set_max_concurrent_runs(2);
  f.apply({task});
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(f.trigger("parallel"));
  f.run_until([&] { return f.engine->running_count() == 2; });
  CHECK(f.engine->running_count() == 2);
  CHECK(f.engine->queued_count() == 1);
  REQUIRE(f.run_until([&] { return f.finals.size() == 3; }));
  for (const auto& e : f.finals) CHECK(e.status() == qf::v1::EXECUTION_STATUS_SUCCESS);
}

TEST_CASE("retries follow the policy: attempts, ids, and which failures retry", "[engine]") {
  Fixture f;
  auto flaky = shell_task("flaky", "exit 3");
  flaky.mutable_retry()->set_max_retries(2);
  flaky.mutable_retry()->set_interval_seconds(1);
  auto fussy = shell_task("fussy", "exit 3");
  fussy.mutable_retry()->set_max_retries(2);
  fussy.mutable_retry()->add_retry_on_exit_codes(4);  // 3 is not retryable
  f.apply({flaky, fussy});
  const auto id = f.trigger("flaky");
  const auto other = f.trigger("fussy");
  REQUIRE(f.run_until([&] { return f.final_of(id + ":r3") != nullptr && f.final_of(other); }));
  CHECK(f.final_of(id)->attempt() == 1);
  CHECK(f.final_of(id + ":r2")->attempt() == 2);
  CHECK(f.final_of(id + ":r2")->trigger() == qf::v1::TRIGGER_TYPE_RETRY);
  CHECK(f.final_of(id + ":r3")->root_execution_id() == id);
  f.run_until([] { return false; }, 300ms);
  CHECK(f.final_of(id + ":r4") == nullptr);
  CHECK(f.final_of(other + ":r2") == nullptr);
}

TEST_CASE("retry delays follow the policy, 0 means the documented 60 seconds", "[engine]") {
  qf::v1::RetryPolicy retry;
  CHECK(qf::retry_delay(retry, 1, "x") == 60s);
  retry.set_interval_seconds(2);
  retry.set_backoff_multiplier(3.0);
  retry.set_max_interval_seconds(10);
  CHECK(qf::retry_delay(retry, 1, "x") == 2s);
  CHECK(qf::retry_delay(retry, 2, "x") == 6s);
  CHECK(qf::retry_delay(retry, 3, "x") == 10s);  // capped
  retry.set_jitter_seconds(5);
  const auto jittered = qf::retry_delay(retry, 1, "some-id");
  CHECK(jittered >= 2s);
  CHECK(jittered <= 7s);
  CHECK(qf::retry_delay(retry, 1, "some-id") == jittered);  // the same on every host
  CHECK(qf::retryable(qf::v1::EXECUTION_STATUS_FAILURE, "agent lost", std::nullopt, 0, retry));
  CHECK_FALSE(qf::retryable(qf::v1::EXECUTION_STATUS_FAILURE, "spawn failed", std::nullopt, 0, retry));
  CHECK_FALSE(qf::retryable(qf::v1::EXECUTION_STATUS_TIMEOUT, "timeout", std::nullopt, 0, retry));
}

TEST_CASE("retry backoff waits between attempts", "[engine]") {
  Fixture f;
  auto task = shell_task("backoff", "exit 1");
  task.mutable_retry()->set_max_retries(1);
  task.mutable_retry()->set_interval_seconds(1);
  f.apply({task});
  const auto id = f.trigger("backoff");
  REQUIRE(f.run_until([&] { return f.final_of(id + ":r2") != nullptr; }, 5s));
  const auto gap = f.final_of(id + ":r2")->started_unix_ms() - f.final_of(id)->ended_unix_ms();
  CHECK(gap >= 900);
}

TEST_CASE("params reach the process only as environment variables", "[engine]") {
  Fixture f;
  const auto marker = f.dir / "pwned";
  f.apply({shell_task("echo-param", "printf '%s' \"$QF_PARAM_TARGET_HOST\"")});
  const std::string attack = "$(touch " + marker.string() + "); `touch " + marker.string() + "`";
  const auto id = f.trigger("echo-param", {{"target-host", attack}});
  REQUIRE(f.run_until([&] { return f.final_of(id) != nullptr; }));
  CHECK(f.final_of(id)->output() == attack);  // printed literally
  CHECK_FALSE(fs::exists(marker));            // never executed
  CHECK(f.final_of(id)->params().at("target-host") == attack);
}

TEST_CASE("run variables describe the run", "[engine]") {
  Fixture f;
  f.apply({shell_task("vars", "echo \"$QF_TASK_ID|$QF_EXECUTION_ID|$QF_SCHEDULED_AT|$QF_ATTEMPT\"")});
  const auto id = f.trigger("vars");
  REQUIRE(f.run_until([&] { return f.final_of(id) != nullptr; }));
  const auto& out = f.final_of(id)->output();
  CHECK(out.find("vars|" + id + "|") == 0);
  CHECK(out.find("Z|1") != std::string::npos);
}

TEST_CASE("plugin functions run by name, failures and unknown names are recorded", "[engine]") {
  Fixture f;
  int calls = 0;
  f.engine->plugins().add("count", [&](const qf::PluginCall& call) {
    ++calls;
    return qf::PluginResult{true, "counted " + call.request->execution_id, {}};
  });
  f.engine->plugins().add("broken", [](const qf::PluginCall&) -> qf::PluginResult {
    throw std::runtime_error("disk on fire");
  });
  auto make = [](const std::string& id, const std::string& plugin) {
    qf::v1::Task t;
    t.set_id(id);
    t.set_name(id);
    t.set_enabled(true);
    t.mutable_plugin()->set_name(plugin);
    return t;
  };
  f.apply({make("p1", "count"), make("p2", "broken"), make("p3", "nobody")});
  const auto a = f.trigger("p1");
  const auto b = f.trigger("p2");
  const auto c = f.trigger("p3");
  REQUIRE(f.run_until([&] { return f.final_of(a) && f.final_of(b) && f.final_of(c); }));
  CHECK(calls == 1);
  CHECK(f.final_of(a)->status() == qf::v1::EXECUTION_STATUS_SUCCESS);
  CHECK(f.final_of(a)->output() == "counted " + a);
  CHECK(f.final_of(b)->status() == qf::v1::EXECUTION_STATUS_FAILURE);
  CHECK(f.final_of(b)->error_message() == "plugin threw: disk on fire");
  CHECK(f.final_of(c)->status() == qf::v1::EXECUTION_STATUS_FAILURE);
  CHECK(f.final_of(c)->error_message().find("nobody") != std::string::npos);
}

TEST_CASE("scheduled fires use the all-placement execution id", "[engine]") {
  Fixture f;
  auto task = shell_task("tick", "true");
  task.mutable_schedule()->set_cron("* * * * * *");
  f.apply({task});
  f.engine->start();
  REQUIRE(f.run_until([&] { return f.finals.size() >= 2; }, 5s));
  for (const auto& e : f.finals) {
    CHECK(e.trigger() == qf::v1::TRIGGER_TYPE_SCHEDULED);
    CHECK(e.scheduled_unix_ms() % 1000 == 0);
    CHECK(e.execution_id() == "tick:" + std::to_string(e.scheduled_unix_ms()) + ":agent-1");
    // Fires start on their second, not up to a second late (generous bound: noisy machines).
    CHECK(e.started_unix_ms() - e.scheduled_unix_ms() < 300);
    CHECK(e.started_unix_ms() >= e.scheduled_unix_ms());
  }
  CHECK(f.finals[1].scheduled_unix_ms() - f.finals[0].scheduled_unix_ms() == 1000);
}

TEST_CASE("after a restart the misfire policy decides what is owed", "[engine]") {
  const auto now_s = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
  const auto hour_ago = now_s - std::chrono::hours{1};
  for (auto policy : {qf::v1::MISFIRE_POLICY_SKIP, qf::v1::MISFIRE_POLICY_FIRE_ONCE, qf::v1::MISFIRE_POLICY_FIRE_ALL}) {
    DYNAMIC_SECTION("policy " << qf::v1::MisfirePolicy_Name(policy)) {
      Fixture f;
      auto task = shell_task("every10m", "true");
      task.mutable_schedule()->set_cron("0 */10 * * * *");
      task.set_misfire_policy(policy);
      // A previous life of the agent recorded a fire an hour ago.
      qf::v1::Execution old;
      old.set_execution_id("every10m:old");
      old.set_task_id("every10m");
      old.set_trigger(qf::v1::TRIGGER_TYPE_SCHEDULED);
      old.set_status(qf::v1::EXECUTION_STATUS_SUCCESS);
      old.set_scheduled_unix_ms(hour_ago.time_since_epoch().count() * 1000);
      bool written = false;
      f.store->async_record(old, "", [&](qf::error_code ec) { written = !ec; });
      REQUIRE(f.run_until([&] { return written; }));
      f.apply({task});
      f.engine->start();
      // Six fires are owed (every 10 minutes over the hour), five or six depending on the phase.
      f.run_until([&] { return f.engine->running_count() == 0 && f.finals.size() >= 5; }, 5s);
      f.run_until([] { return false; }, 500ms);
      std::size_t missed = 0;
      std::size_t caught_up = 0;
      for (const auto& e : f.finals) {
        if (e.status() == qf::v1::EXECUTION_STATUS_MISSED) ++missed;
        if (e.trigger() == qf::v1::TRIGGER_TYPE_MISFIRE_CATCHUP) ++caught_up;
      }
      const std::size_t owed = missed + caught_up;
      CHECK(owed >= 5);
      CHECK(owed <= 6);
      if (policy == qf::v1::MISFIRE_POLICY_SKIP) CHECK(caught_up == 0);
      if (policy == qf::v1::MISFIRE_POLICY_FIRE_ONCE) CHECK(caught_up == 1);
      if (policy == qf::v1::MISFIRE_POLICY_FIRE_ALL) CHECK(missed == 0);
    }
  }
}

TEST_CASE("a run left RUNNING by a crash becomes FAILURE at start", "[engine]") {
  Fixture f;
  qf::v1::Execution crashed;
  crashed.set_execution_id("t:1:agent-1");
  crashed.set_task_id("t");
  crashed.set_status(qf::v1::EXECUTION_STATUS_RUNNING);
  bool written = false;
  f.store->async_record(crashed, "", [&](qf::error_code ec) { written = !ec; });
  REQUIRE(f.run_until([&] { return written; }));
  f.engine->start();
  REQUIRE(f.run_until([&] { return f.final_of("t:1:agent-1") != nullptr; }));
  CHECK(f.final_of("t:1:agent-1")->status() == qf::v1::EXECUTION_STATUS_FAILURE);
  CHECK(f.final_of("t:1:agent-1")->failure_reason() == "agent restarted");
}

TEST_CASE("an invalid config changes nothing", "[engine]") {
  Fixture f;
  f.apply({shell_task("keep", "true")});
  auto bad = shell_task("bad", "true");
  bad.set_timeout_seconds(999999);
  qf::ValidationError error;
  CHECK_FALSE(f.engine->apply({shell_task("other", "true"), bad}, 2, &error));
  CHECK(error.field.find("timeout_seconds") != std::string::npos);
  CHECK(f.engine->config_version() == 1);
  qf::error_code ec;
  CHECK(f.engine->trigger("keep", {}, ec));
  CHECK_FALSE(f.engine->trigger("other", {}, ec));
}

TEST_CASE("stop gives running tasks the grace period, then cancels them", "[engine]") {
  Fixture f;
  f.apply({shell_task("quick", "sleep 0.3"), shell_task("long", "sleep 30")});
  const auto quick = f.trigger("quick");
  const auto slow = f.trigger("long");
  f.run_until([&] { return f.engine->running_count() == 2; });
  bool stopped = false;
  f.engine->stop(1s, [&] { stopped = true; });
  REQUIRE(f.run_until([&] { return stopped; }, 15s));
  CHECK(f.final_of(quick)->status() == qf::v1::EXECUTION_STATUS_SUCCESS);
  CHECK(f.final_of(slow)->status() == qf::v1::EXECUTION_STATUS_CANCELLED);
  CHECK(f.final_of(slow)->cancelled_by() == "agent shutdown");
}

TEST_CASE("shared-object plugins load from a directory through the C ABI", "[engine]") {
  Fixture f;
  std::vector<std::string> errors;
  CHECK(qf::load_plugins(f.engine->plugins(), QF_TEST_PLUGIN_DIR, errors) == 1);
  CHECK(errors.empty());
  // Something that is not a plugin is refused with its name, and nothing crashes.
  std::ofstream(f.dir / "junk.so") << "not an ELF file";
  CHECK(qf::load_plugins(f.engine->plugins(), f.dir.string(), errors) == 0);
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].find("junk.so") != std::string::npos);
  CHECK(qf::load_plugins(f.engine->plugins(), (f.dir / "missing").string(), errors) == 0);

  qf::v1::Task task;
  task.set_id("greet");
  task.set_name("greet");
  task.set_enabled(true);
  task.mutable_plugin()->set_name("hello");
  (*task.mutable_plugin()->mutable_config())["greeting"] = "Bonjour";
  task.set_overlap_policy(qf::v1::OVERLAP_POLICY_ALLOW);  // both triggers run
  f.apply({task});
  const auto ok = f.trigger("greet", {{"name", "Ada"}});
  const auto bad = f.trigger("greet", {{"fail", "yes"}});
  REQUIRE(f.run_until([&] { return f.final_of(ok) && f.final_of(bad); }));
  CHECK(f.final_of(ok)->status() == qf::v1::EXECUTION_STATUS_SUCCESS);
  CHECK(f.final_of(ok)->output() == "Bonjour, Ada! (execution " + ok + ", attempt 1)\n");
  CHECK(f.final_of(bad)->status() == qf::v1::EXECUTION_STATUS_FAILURE);
  CHECK(f.final_of(bad)->error_message() == "asked to fail");
}

TEST_CASE("run_as_user runs the command as that user, and only for a root agent", "[engine]") {
  Fixture f;
  auto task = shell_task("as-nobody", "id -u");
  task.mutable_shell()->set_run_as_user("nobody");
  auto ghost = shell_task("as-ghost", "id -u");
  ghost.mutable_shell()->set_run_as_user("no-such-user-here");
  f.apply({task, ghost});
  const auto id = f.trigger("as-nobody");
  const auto missing = f.trigger("as-ghost");
  REQUIRE(f.run_until([&] { return f.final_of(id) && f.final_of(missing); }));
  CHECK(f.final_of(missing)->status() == qf::v1::EXECUTION_STATUS_FAILURE);
  CHECK(f.final_of(missing)->error_message() == "unknown user no-such-user-here");
  if (::geteuid() == 0) {
    CHECK(f.final_of(id)->status() == qf::v1::EXECUTION_STATUS_SUCCESS);
    CHECK(f.final_of(id)->output() == "65534\n");  // nobody on Debian
  } else {
    CHECK(f.final_of(id)->status() == qf::v1::EXECUTION_STATUS_FAILURE);
    CHECK(f.final_of(id)->error_message() == "run_as_user needs an agent running as root");
  }
}

TEST_CASE("routed runs keep the coordinator's id, attempt, shard and params, a re-sent request runs once",
          "[engine]") {
  Fixture f;
  f.apply({shell_task("held", "echo held")});
  f.engine->start();
  qf::v1::RunRequest request;
  request.set_execution_id("report:1700000000000:s1");
  request.set_task_id("report");
  request.set_trigger(qf::v1::TRIGGER_TYPE_SCHEDULED);
  request.set_scheduled_unix_ms(1'700'000'000'000);
  request.set_attempt(2);
  request.set_root_execution_id("report:1700000000000");
  request.set_shard_index(1);
  request.set_shard_total(3);
  (*request.mutable_params())["day"] = "mon";
  *request.mutable_task() = shell_task("report", "sleep 0.3; echo $QF_SHARD_INDEX/$QF_SHARD_TOTAL $QF_ATTEMPT $QF_PARAM_DAY");
  qf::error_code ec;
  std::string detail;
  REQUIRE(f.engine->run(request, ec, &detail));
  REQUIRE(f.engine->run(request, ec, &detail));  // the coordinator re-sent it
  REQUIRE(f.run_until([&] { return f.final_of(request.execution_id()) != nullptr; }));
  f.run_until([] { return false; }, 200ms);
  CHECK(f.finals.size() == 1);
  const auto& r = *f.final_of(request.execution_id());
  CHECK(r.status() == qf::v1::EXECUTION_STATUS_SUCCESS);
  CHECK(r.output() == "1/3 2 mon\n");
  CHECK(r.attempt() == 2);
  CHECK(r.root_execution_id() == "report:1700000000000");
  CHECK(r.shard_index() == 1);
  CHECK(r.trigger() == qf::v1::TRIGGER_TYPE_SCHEDULED);
  CHECK(r.scheduled_unix_ms() == 1'700'000'000'000);

  // A task it does not hold and was not sent; an invalid config; a task id mismatch.
  qf::v1::RunRequest unknown;
  unknown.set_execution_id("x:1");
  unknown.set_task_id("x");
  CHECK_FALSE(f.engine->run(unknown, ec, &detail));
  CHECK(ec == qf::errc::not_found);
  CHECK(detail.find("task_id") != std::string::npos);
  auto invalid = request;
  invalid.set_execution_id("report:2");
  invalid.mutable_task()->set_timeout_seconds(999'999);
  CHECK_FALSE(f.engine->run(invalid, ec, &detail));
  CHECK(ec == qf::errc::invalid_argument);
  CHECK(detail.find("task.timeout_seconds") != std::string::npos);
  auto mismatch = request;
  mismatch.set_execution_id("report:3");
  mismatch.set_task_id("other");
  CHECK_FALSE(f.engine->run(mismatch, ec, &detail));
  CHECK(detail == "task.id: differs from task_id");
}

TEST_CASE("shards of one fire on the same agent run side by side, the next fire still overlaps", "[engine]") {
  Fixture f;
  f.engine->start();
  const auto shard = [](const std::string& fire, std::int64_t scheduled, std::uint32_t index) {
    qf::v1::RunRequest request;
    request.set_execution_id(fmt::format("{}:s{}", fire, index));
    request.set_task_id("reindex");
    request.set_trigger(qf::v1::TRIGGER_TYPE_SCHEDULED);
    request.set_scheduled_unix_ms(scheduled);
    request.set_root_execution_id(fire);
    request.set_shard_index(index);
    request.set_shard_total(2);
    *request.mutable_task() = shell_task("reindex", "sleep 0.4; echo $QF_SHARD_INDEX");  // overlap: skip
    return request;
  };
  qf::error_code ec;
  std::string detail;
  REQUIRE(f.engine->run(shard("reindex:1000", 1'000'000, 0), ec, &detail));
  REQUIRE(f.engine->run(shard("reindex:1000", 1'000'000, 1), ec, &detail));
  REQUIRE(f.engine->run(shard("reindex:2000", 2'000'000, 0), ec, &detail));  // the next fire, too early
  REQUIRE(f.run_until([&] {
    return f.final_of("reindex:1000:s0") && f.final_of("reindex:1000:s1") && f.final_of("reindex:2000:s0");
  }));
  CHECK(f.final_of("reindex:1000:s0")->status() == qf::v1::EXECUTION_STATUS_SUCCESS);
  CHECK(f.final_of("reindex:1000:s1")->status() == qf::v1::EXECUTION_STATUS_SUCCESS);
  CHECK(f.final_of("reindex:1000:s1")->output() == "1\n");
  CHECK(f.final_of("reindex:2000:s0")->status() == qf::v1::EXECUTION_STATUS_SKIPPED);
}

TEST_CASE("a routed run whose policy retries on another agent is not retried here", "[engine]") {
  Fixture f;
  f.engine->start();
  auto task = shell_task("flaky", "exit 1");
  task.mutable_retry()->set_max_retries(2);
  task.mutable_retry()->set_interval_seconds(1);
  task.mutable_retry()->set_retry_on_another_agent(true);
  qf::v1::RunRequest request;
  request.set_execution_id("flaky:1");
  request.set_task_id("flaky");
  request.set_trigger(qf::v1::TRIGGER_TYPE_MANUAL);
  *request.mutable_task() = task;
  qf::error_code ec;
  REQUIRE(f.engine->run(request, ec));
  REQUIRE(f.run_until([&] { return f.final_of("flaky:1") != nullptr; }));
  f.run_until([] { return false; }, 1500ms);
  CHECK(f.final_of("flaky:1:r2") == nullptr);
  CHECK(f.finals.size() == 1);
}

TEST_CASE("a run's recorded output is valid UTF-8 however binary the program's output", "[engine]") {
  Fixture f;
  f.apply({shell_task("binary", R"(printf 'ok \303\251 \300\257 \355\240\200 \360\237\230\200 \342\202')")});
  f.engine->start();
  const auto id = f.trigger("binary");
  REQUIRE(f.run_until([&] { return f.final_of(id) != nullptr; }));
  const std::string fffd = "\xEF\xBF\xBD";
  // Valid sequences stay; each byte of an invalid one (overlong, surrogate, cut short) is
  // replaced by U+FFFD.
  CHECK(f.final_of(id)->output() ==
        "ok \xC3\xA9 " + fffd + fffd + " " + fffd + fffd + fffd + " \xF0\x9F\x98\x80 " + fffd + fffd);
  qf::v1::Execution parsed;
  CHECK(parsed.ParseFromString(f.final_of(id)->SerializeAsString()));  // a peer can read it
  qf::error_code ec;
  CHECK(f.store->full_log(id, ec)->size() == 20);  // the full log keeps the bytes as they were
}

namespace {

/// The library's log captured for a test (and restored after it).
struct CapturedLog {
  std::ostringstream text;
  std::shared_ptr<spdlog::logger> saved = qf::logger();
  CapturedLog() {
    auto logger = std::make_shared<spdlog::logger>("test", std::make_shared<spdlog::sinks::ostream_sink_mt>(text));
    logger->set_level(spdlog::level::debug);
    logger->set_pattern("[%l] %v");
    qf::set_logger(logger);
  }
  ~CapturedLog() { qf::set_logger(saved); }
  CapturedLog(const CapturedLog&) = delete;
  CapturedLog& operator=(const CapturedLog&) = delete;
  std::size_t count(const std::string& part) {
    const std::string all = text.str();
    std::size_t n = 0;
    for (auto at = all.find(part); at != std::string::npos; at = all.find(part, at + 1)) ++n;
    return n;
  }
};

std::vector<std::string> lines_of(const fs::path& file) {
  std::ifstream in(file);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(line);
  return lines;
}

}  // namespace

TEST_CASE("while the store cannot commit no run starts and nothing uncommitted is reported, then runs resume",
          "[engine]") {
  qf::testing::FullDiskVfs disk;  // before the store: its connections write through it
  CapturedLog log;
  Fixture f;
  f.configure = [](qf::TaskEngineOptions& options) { options.store_probe_interval = 300ms; };
  f.make_engine();
  std::vector<qf::StoreHealth> changes;
  f.engine->set_store_health_handler([&](const qf::StoreHealth& h) { changes.push_back(h); });
  // The side effect each run leaves: its execution id, appended to a file.
  const fs::path ran_file = f.dir / "ran.txt";
  auto task = shell_task("tick", fmt::format("echo \"$QF_EXECUTION_ID\" | tee -a '{}'", ran_file.string()));
  task.mutable_schedule()->set_cron("* * * * * *");
  f.apply({task});
  f.engine->start();
  REQUIRE(f.run_until([&] { return f.finals.size() >= 2; }, 10s));
  CHECK(f.engine->store_health().available);

  disk.set_full(true);
  // The next run's RUNNING record cannot be committed: the engine notices.
  REQUIRE(f.run_until([&] { return !f.engine->store_health().available; }, 5s));
  const auto down = f.engine->store_health();
  CHECK(down.disk_full);
  CHECK(down.error.find("full") != std::string::npos);
  CHECK(down.unavailable_since_unix_ms > 0);
  CHECK(down.outages == 1);
  REQUIRE(changes.size() == 1);
  CHECK_FALSE(changes.back().available);
  REQUIRE(f.run_until([&] { return f.engine->running_count() == 0; }, 5s));  // an echo ends at once
  const auto ran_before_outage = lines_of(ran_file).size();
  f.run_until([] { return false; }, 3500ms);
  CHECK(lines_of(ran_file).size() == ran_before_outage);  // no run started while full
  CHECK(f.engine->store_health().fires_not_started >= 3);
  CHECK_FALSE(f.engine->store_health().available);
  qf::error_code ec;
  std::string detail;
  CHECK_FALSE(f.engine->trigger("tick", {}, ec, &detail));
  CHECK(ec == qf::errc::conflict);
  CHECK(detail.find("local store full") != std::string::npos);
  // Nothing reported that the store lacks.
  for (const auto& reported : f.finals) {
    INFO(reported.execution_id());
    const auto stored = f.store->execution(reported.execution_id(), ec);
    REQUIRE(stored);
    CHECK(stored->status() == reported.status());
  }

  disk.set_full(false);
  REQUIRE(f.run_until([&] { return f.engine->store_health().available; }, 5s));
  REQUIRE(changes.size() == 2);
  CHECK(changes.back().available);
  const auto ran_at_recovery = lines_of(ran_file).size();
  REQUIRE(f.run_until([&] { return lines_of(ran_file).size() >= ran_at_recovery + 2; }, 10s));
  bool stopped = false;
  f.engine->stop(2s, [&] { stopped = true; });
  REQUIRE(f.run_until([&] { return stopped; }));
  f.store->flush();

  const auto health = f.engine->store_health();
  CHECK(health.available);
  CHECK(health.uncommitted_records == 0);
  CHECK(health.outages == 1);
  qf::ExecutionQuery all;
  all.limit = 100000;
  std::map<std::string, qf::v1::Execution> stored;
  for (auto& r : f.store->executions(all, ec)) stored[r.execution_id()] = r;
  REQUIRE_FALSE(ec);
  CHECK(f.store->unfinished(ec).empty());
  // Every run that happened (its side effect) is in the store as SUCCESS and was reported
  // once; every record of a run that started is one of them.
  const auto ran = lines_of(ran_file);
  std::set<std::string> ran_ids(ran.begin(), ran.end());
  CHECK(ran_ids.size() == ran.size());
  for (const auto& id : ran) {
    INFO(id);
    REQUIRE(stored.count(id));
    CHECK(stored[id].status() == qf::v1::EXECUTION_STATUS_SUCCESS);
    CHECK(f.store->full_log(id, ec) == std::optional<std::string>(id + "\n"));  // held ones keep their log
    CHECK(std::count_if(f.finals.begin(), f.finals.end(), [&](auto& e) { return e.execution_id() == id; }) == 1);
  }
  std::size_t started = 0, skipped_full = 0;
  for (const auto& [id, r] : stored) {
    if (r.started_unix_ms() != 0) {
      ++started;
      CHECK(ran_ids.count(id));
    }
    if (r.status() == qf::v1::EXECUTION_STATUS_SKIPPED && r.skip_detail().rfind("local store full: ", 0) == 0)
      ++skipped_full;
  }
  CHECK(started == ran.size());
  // Each fire not started is on record, with why.
  CHECK(skipped_full == health.fires_not_started_total);
  CHECK(skipped_full >= 3);
  for (const auto& reported : f.finals) {
    INFO(reported.execution_id());
    REQUIRE(stored.count(reported.execution_id()));
    CHECK(stored[reported.execution_id()].status() == reported.status());
  }
  // Said loudly, once each way, not once per fire or probe.
  INFO(log.text.str());
  CHECK(log.count("[error] local store full: database or disk is full; no new runs start") == 1);
  CHECK(log.count("[warning] local store can commit again") == 1);
  CHECK(log.count("[error]") <= 6);
}

TEST_CASE("a task applied without enabled is scheduled, enabled false is not", "[engine]") {
  Fixture f;
  auto implicit = shell_task("implicit", "true");
  implicit.clear_enabled();
  implicit.mutable_schedule()->set_interval_seconds(1);
  auto off = shell_task("off", "true");
  off.set_enabled(false);
  off.mutable_schedule()->set_interval_seconds(1);
  f.apply({implicit, off});
  f.engine->start();
  REQUIRE(f.run_until([&] {
    return std::any_of(f.finals.begin(), f.finals.end(), [](auto& e) { return e.task_id() == "implicit"; });
  }));
  CHECK(std::none_of(f.finals.begin(), f.finals.end(), [](auto& e) { return e.task_id() == "off"; }));
}

TEST_CASE("fires owed after a stalled io thread all run, one after another, none skipped", "[engine]") {
  Fixture f;
  // The side effect each run leaves: its execution id, appended to a file.
  const fs::path ran_file = f.dir / "ran.txt";
  f.engine->plugins().add("note", [&](const qf::PluginCall& call) {
    std::ofstream(ran_file, std::ios::app) << call.request->execution_id << "\n";
    return qf::PluginResult{true, "", {}};
  });
  qf::v1::Task task;
  task.set_id("tick");
  task.set_name("tick");
  task.set_enabled(true);
  task.mutable_plugin()->set_name("note");
  task.mutable_schedule()->set_cron("* * * * * *");  // overlap policy: the default (skip)
  f.apply({task});
  f.engine->start();
  REQUIRE(f.run_until([&] { return f.finals.size() >= 1; }, 5s));
  // Stall the io thread just after a fire, for 2.6 s: three fires fall due meanwhile.
  const auto first = f.finals.size();
  REQUIRE(f.run_until([&] { return f.finals.size() > first; }, 5s));
  boost::asio::post(f.io, [] { std::this_thread::sleep_for(2600ms); });
  const auto stall_started = std::chrono::system_clock::now();
  f.run_until([&] { return std::chrono::system_clock::now() > stall_started + 3500ms; }, 10s);
  REQUIRE(f.run_until([&] { return f.engine->running_count() == 0 && f.engine->queued_count() == 0; }));

  std::size_t late = 0;
  std::vector<std::int64_t> instants;
  for (const auto& e : f.finals) {
    INFO(e.execution_id() << " " << qf::v1::ExecutionStatus_Name(e.status()) << " " << e.skip_detail());
    CHECK(e.status() == qf::v1::EXECUTION_STATUS_SUCCESS);
    instants.push_back(e.scheduled_unix_ms());
    if (e.started_unix_ms() - e.scheduled_unix_ms() > 400) ++late;
  }
  CHECK(late >= 2);  // the owed fires of the stall (two or three, depending on the phase)
  // Every second is there once, in order, and each ran once.
  for (std::size_t i = 1; i < instants.size(); ++i) CHECK(instants[i] - instants[i - 1] == 1000);
  const auto ran = lines_of(ran_file);
  CHECK(ran.size() == f.finals.size());
  CHECK(std::set<std::string>(ran.begin(), ran.end()).size() == ran.size());
}

TEST_CASE("fire_all after a restart runs every owed fire once, in order, under the skip overlap policy",
          "[engine]") {
  Fixture f;
  const fs::path ran_file = f.dir / "ran.txt";
  auto task = shell_task("every10m", fmt::format("echo \"$QF_EXECUTION_ID\" >> '{}'", ran_file.string()));
  task.mutable_schedule()->set_cron("0 */10 * * * *");
  task.set_misfire_policy(qf::v1::MISFIRE_POLICY_FIRE_ALL);
  const auto now_s = std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
  qf::v1::Execution old;
  old.set_execution_id("every10m:old");
  old.set_task_id("every10m");
  old.set_trigger(qf::v1::TRIGGER_TYPE_SCHEDULED);
  old.set_status(qf::v1::EXECUTION_STATUS_SUCCESS);
  old.set_scheduled_unix_ms((now_s - std::chrono::hours{1}).time_since_epoch().count() * 1000);
  bool written = false;
  f.store->async_record(old, "", [&](qf::error_code ec) { written = !ec; });
  REQUIRE(f.run_until([&] { return written; }));
  f.apply({task});
  f.engine->start();
  REQUIRE(f.run_until([&] { return f.finals.size() >= 5 && f.engine->running_count() == 0 &&
                                   f.engine->queued_count() == 0; }));
  f.run_until([] { return false; }, 500ms);  // the last final record's commit
  std::int64_t previous_start = 0;
  for (const auto& e : f.finals) {
    INFO(e.execution_id() << " " << e.skip_detail());
    CHECK(e.trigger() == qf::v1::TRIGGER_TYPE_MISFIRE_CATCHUP);
    CHECK(e.status() == qf::v1::EXECUTION_STATUS_SUCCESS);
    CHECK(e.started_unix_ms() >= previous_start);
    previous_start = e.started_unix_ms();
  }
  CHECK(lines_of(ran_file).size() == f.finals.size());
}

TEST_CASE("under overload the store's queue stays bounded, fires not started are recorded SKIPPED once, and "
          "stop is prompt",
          "[engine]") {
  Fixture f;
  f.engine.reset();
  f.store.reset();
  qf::LocalStoreOptions store_options;
  store_options.path = (f.dir / "bounded.db").string();
  store_options.max_queued_bytes = 64 * 1024;
  store_options.max_batch_delay = 50ms;  // a slow writer: the fires outrun it
  qf::error_code ec;
  f.store = qf::LocalStore::open(f.io.get_executor(), store_options, ec);
  REQUIRE(f.store);
  f.make_engine();
  std::map<std::string, int> ran;  // the side effect: execution id -> times run
  f.engine->plugins().add("note", [&](const qf::PluginCall& call) {
    ++ran[call.request->execution_id];
    return qf::PluginResult{true, "", {}};
  });
  std::vector<qf::v1::Task> tasks;
  for (int i = 0; i < 400; ++i) {
    qf::v1::Task task;
    task.set_id(fmt::format("t{:03}", i));
    task.set_name(task.id());
    task.set_enabled(true);
    task.mutable_plugin()->set_name("note");
    task.mutable_schedule()->set_cron("* * * * * *");
    tasks.push_back(task);
  }
  f.apply(tasks);
  f.engine->start();
  std::size_t max_queued = 0;
  const auto until = std::chrono::steady_clock::now() + 3500ms;
  f.run_until([&] {
    max_queued = std::max<std::size_t>(max_queued, f.store->queued_bytes());
    return std::chrono::steady_clock::now() > until;
  }, 5s);
  const auto during = f.engine->store_health();
  CHECK(during.backlog_fires_not_started_total > 0);
  CHECK(max_queued <= store_options.max_queued_bytes);
  CHECK(f.store->metrics().writes_refused_queue_full == 0);  // the engine held back before the bound

  bool stopped = false;
  const auto stop_started = std::chrono::steady_clock::now();
  f.engine->stop(1s, [&] { stopped = true; });
  REQUIRE(f.run_until([&] { return stopped; }, 10s));
  CHECK(std::chrono::steady_clock::now() - stop_started < 3s);
  f.store->flush();
  const auto health = f.engine->store_health();
  CHECK_FALSE(health.backlogged);
  CHECK(health.backlog_fires_not_recorded_total == 0);

  qf::ExecutionQuery all;
  all.limit = 1'000'000;
  std::size_t succeeded = 0, skipped = 0;
  std::map<std::int64_t, std::size_t> per_instant;
  for (const auto& r : f.store->executions(all, ec)) {
    ++per_instant[r.scheduled_unix_ms()];
    INFO(r.execution_id() << " " << qf::v1::ExecutionStatus_Name(r.status()) << " " << r.skip_detail());
    if (r.status() == qf::v1::EXECUTION_STATUS_SUCCESS) {
      ++succeeded;
      CHECK(ran[r.execution_id()] == 1);
    } else {
      REQUIRE(r.status() == qf::v1::EXECUTION_STATUS_SKIPPED);
      CHECK(r.skip_detail().rfind("local store backlog: ", 0) == 0);
      CHECK(ran.count(r.execution_id()) == 0);
      ++skipped;
    }
  }
  REQUIRE_FALSE(ec);
  CHECK(succeeded == ran.size());  // every run that happened is on record, once
  CHECK(skipped == health.backlog_fires_not_started_total);
  // Every (task, instant) fired is accounted for: 400 tasks each second (the last second may
  // be cut by the stop).
  REQUIRE(per_instant.size() >= 3);
  per_instant.erase(std::prev(per_instant.end()));
  for (const auto& [instant, records] : per_instant) CHECK(records == 400);
}

TEST_CASE("a config delta validates and rebuilds only the tasks it names", "[engine]") {
  // Registration one task at a time must stay O(changed tasks): before apply_delta each
  // delta re-validated and rebuilt every task held (quadratic in the number of tasks).
  Fixture f;
  std::vector<qf::v1::Task> tasks;
  for (int i = 0; i < 500; ++i) tasks.push_back(shell_task(fmt::format("t{}", i), "true"));
  f.apply(tasks);
  const auto after_full = f.engine->config_stats();
  CHECK(after_full.tasks_validated == 500);
  CHECK(after_full.slots_built == 500);

  for (int i = 500; i < 600; ++i) {
    auto problems = f.engine->apply_delta({shell_task(fmt::format("t{}", i), "true")}, {},
                                          static_cast<std::uint64_t>(i));
    REQUIRE(problems.empty());
  }
  auto stats = f.engine->config_stats();
  CHECK(stats.tasks_validated - after_full.tasks_validated == 100);
  CHECK(stats.slots_built - after_full.slots_built == 100);
  CHECK(stats.deltas_applied == 100);
  CHECK(f.engine->task_count() == 600);
  CHECK(f.engine->config_version() == 599);
  CHECK_FALSE(f.trigger("t599").empty());

  // Removal, an invalid upsert (left out; the task it replaced goes, as a full apply without
  // it would), a name another task holds (left out), and two tasks swapping names.
  auto bad = shell_task("t1", "true");
  bad.set_timeout_seconds(999999);
  auto taken = shell_task("new", "true");
  taken.set_name("t3");
  auto swap_a = shell_task("t4", "true");
  swap_a.set_name("t5");
  auto swap_b = shell_task("t5", "true");
  swap_b.set_name("t4");
  const auto before = f.engine->config_stats();
  auto problems = f.engine->apply_delta({bad, taken, swap_a, swap_b}, {"t0", "no-such-task"}, 600);
  REQUIRE(problems.size() == 2);
  CHECK(problems[0].task_id == "t1");
  CHECK(problems[0].error.field.find("timeout_seconds") != std::string::npos);
  CHECK(problems[1].task_id == "new");
  CHECK(problems[1].error.field == "name");
  CHECK(f.engine->config_stats().tasks_validated - before.tasks_validated == 4);
  CHECK(f.engine->config_stats().slots_built - before.slots_built == 2);
  CHECK(f.engine->task_count() == 598);  // t0 and t1 gone, "new" never held
  CHECK(f.engine->config_version() == 600);
  qf::error_code ec;
  CHECK_FALSE(f.engine->trigger("t0", {}, ec));
  CHECK_FALSE(f.engine->trigger("t1", {}, ec));
  CHECK_FALSE(f.engine->trigger("new", {}, ec));
  CHECK_FALSE(f.trigger("t4").empty());
  // The names stay unique across deltas: t1's name is free again, t3's is still taken.
  auto renamed = shell_task("t1", "true");
  CHECK(f.engine->apply_delta({renamed}, {}, 601).empty());
  auto clash = shell_task("t6", "true");
  clash.set_name("t3");
  CHECK(f.engine->apply_delta({clash}, {}, 602).size() == 1);
  CHECK_FALSE(f.engine->trigger("t6", {}, ec));  // replaced by nothing: left out, so removed
}

TEST_CASE("a config delta keeps the schedule of the tasks it does not name", "[engine]") {
  Fixture f;
  auto every_second = shell_task("tick", "true");
  every_second.mutable_schedule()->set_cron("* * * * * *");
  f.apply({every_second});
  f.engine->start();
  // Deltas that name other tasks, arriving faster than the task fires, must not re-arm
  // (and so postpone) its timer.
  const auto deadline = std::chrono::steady_clock::now() + 2500ms;
  int n = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    REQUIRE(f.engine->apply_delta({shell_task(fmt::format("other{}", n), "true")}, {},
                                  static_cast<std::uint64_t>(2 + n))
                .empty());
    ++n;
    f.run_until([] { return false; }, 50ms);
  }
  CHECK(f.finals.size() >= 2);
  for (const auto& e : f.finals) CHECK(e.task_id() == "tick");
}

TEST_CASE("tasks due at the same instant share one timer: each fires once per instant, RUNNING before its final",
          "[engine]") {
  Fixture f;
  std::size_t bodies = 0;
  f.engine->plugins().add("count", [&](const qf::PluginCall&) {
    ++bodies;
    return qf::PluginResult{};
  });
  std::vector<qf::v1::Task> tasks;
  for (int i = 0; i < 300; ++i) {
    qf::v1::Task task;
    task.set_id(fmt::format("p{}", i));
    task.set_name(task.id());
    task.set_enabled(true);
    task.mutable_plugin()->set_name("count");
    task.mutable_schedule()->set_cron("* * * * * *");
    tasks.push_back(task);
  }
  f.apply(tasks);
  f.engine->start();
  // Re-applied while armed (every slot re-armed: the old entries go stale, some are compacted)
  // and one task re-armed by a delta many times: none of this may fire anything twice.
  for (int round = 0; round < 3; ++round) {
    f.run_until([] { return false; }, 700ms);
    REQUIRE(f.engine->apply(tasks, static_cast<std::uint64_t>(2 + round)));
    for (int i = 0; i < 2000; ++i) REQUIRE(f.engine->apply_delta({tasks[0]}, {}, 10 + i).empty());
  }
  f.run_until([] { return false; }, 700ms);
  bool stopped = false;
  f.engine->stop(1s, [&] { stopped = true; });
  REQUIRE(f.run_until([&] { return stopped; }));
  std::set<std::string> final_ids;
  std::map<std::string, int> per_task;
  for (const auto& e : f.finals) {
    CHECK(e.status() == qf::v1::EXECUTION_STATUS_SUCCESS);
    CHECK(final_ids.insert(e.execution_id()).second);  // no instant ran twice
    ++per_task[e.task_id()];
  }
  CHECK(final_ids.size() == bodies);
  CHECK(per_task.size() == 300);  // every task fired
  for (const auto& [task, n] : per_task) CHECK(n >= 2);
  // Each run's RUNNING record reached the sink before its final one.
  std::set<std::string> running;
  for (const auto& e : f.events) {
    if (e.status() == qf::v1::EXECUTION_STATUS_RUNNING) running.insert(e.execution_id());
    if (e.status() == qf::v1::EXECUTION_STATUS_SUCCESS) CHECK(running.count(e.execution_id()) == 1);
  }
}

TEST_CASE("a run that ends while an instant's fires start is over for the policies at once", "[engine]") {
  // The records of runs started and ended during a burst (the tasks due at one instant) wait
  // for its end; the running count must not: a run of the same task dispatched meanwhile (a
  // trigger, a routed run, a retry) met a stale count and was SKIPPED "still running" under
  // the default overlap policy, naming a run that had ended.
  Fixture f;
  std::size_t burst_bodies = 0, fast_bodies = 0;
  std::vector<std::string> fast_ids;
  std::string trigger_error;
  auto trigger_fast = [&] {
    qf::error_code ec;
    std::string detail;
    if (auto id = f.engine->trigger("fast", {}, ec, &detail)) {
      fast_ids.push_back(*id);
    } else {
      trigger_error = detail;
    }
  };
  f.engine->plugins().add("fast", [&](const qf::PluginCall&) {
    ++fast_bodies;
    return qf::PluginResult{};
  });
  f.engine->plugins().add("burst", [&](const qf::PluginCall&) {
    ++burst_bodies;
    // The first body of the first instant triggers `fast`; its body runs and ends a few
    // turns later, within the burst; a body near the end of the burst triggers it again.
    if (burst_bodies == 1) trigger_fast();
    if (burst_bodies == 150 && fast_bodies == 1) trigger_fast();
    return qf::PluginResult{};
  });
  std::vector<qf::v1::Task> tasks;
  for (int i = 0; i < 200; ++i) {
    qf::v1::Task task;
    task.set_id(fmt::format("b{}", i));
    task.set_name(task.id());
    task.set_enabled(true);
    task.mutable_plugin()->set_name("burst");
    task.mutable_schedule()->set_cron("* * * * * *");
    tasks.push_back(task);
  }
  qf::v1::Task fast;  // default overlap policy (skip), at most one run at once
  fast.set_id("fast");
  fast.set_name("fast");
  fast.set_enabled(true);
  fast.mutable_plugin()->set_name("fast");
  fast.mutable_schedule()->mutable_manual();
  tasks.push_back(fast);
  f.apply(tasks);
  f.engine->start();
  REQUIRE(f.run_until([&] { return fast_ids.size() == 2 && f.final_of(fast_ids[0]) && f.final_of(fast_ids[1]); }, 5s));
  INFO(trigger_error);
  CHECK(fast_bodies == 2);
  for (const auto& id : fast_ids) {
    const auto* record = f.final_of(id);
    INFO(id << ": " << record->skip_detail());
    CHECK(record->status() == qf::v1::EXECUTION_STATUS_SUCCESS);
  }
  // Each run's RUNNING record still reached the sink before its final one.
  std::set<std::string> running;
  for (const auto& e : f.events) {
    if (e.status() == qf::v1::EXECUTION_STATUS_RUNNING) running.insert(e.execution_id());
    if (e.status() == qf::v1::EXECUTION_STATUS_SUCCESS) CHECK(running.count(e.execution_id()) == 1);
  }
}

TEST_CASE("after an overload the held backlog skips are written while runs go on, behind the live runs' records",
          "[engine]") {
  Fixture f;
  f.engine.reset();
  f.store.reset();
  qf::LocalStoreOptions store_options;
  store_options.path = (f.dir / "drain.db").string();
  store_options.max_queued_bytes = 64 * 1024;
  store_options.max_batch_delay = 50ms;  // a slow writer: the fires outrun it
  qf::error_code ec;
  f.store = qf::LocalStore::open(f.io.get_executor(), store_options, ec);
  REQUIRE(f.store);
  f.make_engine();
  std::map<std::string, int> ran;
  f.engine->plugins().add("note", [&](const qf::PluginCall& call) {
    ++ran[call.request->execution_id];
    return qf::PluginResult{true, "", {}};
  });
  std::vector<qf::v1::Task> tasks;
  for (int i = 0; i < 400; ++i) {
    qf::v1::Task task;
    task.set_id(fmt::format("t{:03}", i));
    task.set_name(task.id());
    task.set_enabled(true);
    task.mutable_plugin()->set_name("note");
    task.mutable_schedule()->set_cron("* * * * * *");
    tasks.push_back(task);
  }
  f.apply(tasks);
  f.engine->start();
  const auto overload_until = std::chrono::steady_clock::now() + 2500ms;
  f.run_until([&] { return std::chrono::steady_clock::now() > overload_until; }, 5s);
  REQUIRE(f.engine->store_health().backlog_fires_not_started_total > 0);

  // The load drops to 5 tasks; the held skips (of tasks now gone too) drain without a stop.
  tasks.resize(5);
  f.apply(tasks);
  const auto dropped_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  REQUIRE(f.run_until([&] { return !f.engine->store_health().backlogged; }, 20s));
  f.run_until([] { return false; }, 2500ms);  // two more seconds of live fires
  const auto health = f.engine->store_health();
  CHECK(health.backlog_fires_not_recorded_total == 0);

  qf::ExecutionQuery all;
  all.limit = 1'000'000;
  std::size_t skipped = 0, live_after = 0;
  for (const auto& r : f.store->executions(all, ec)) {
    INFO(r.execution_id() << " " << qf::v1::ExecutionStatus_Name(r.status()) << " " << r.skip_detail());
    if (r.status() == qf::v1::EXECUTION_STATUS_SKIPPED && r.skip_detail().rfind("local store backlog: ", 0) == 0) {
      ++skipped;
      CHECK(ran.count(r.execution_id()) == 0);
    }
    // Once the queue has room the live tasks run every instant while the held skips drain.
    if (r.scheduled_unix_ms() >= dropped_ms + 2000 && r.status() != qf::v1::EXECUTION_STATUS_PENDING &&
        r.status() != qf::v1::EXECUTION_STATUS_RUNNING) {
      CHECK(r.status() == qf::v1::EXECUTION_STATUS_SUCCESS);
      ++live_after;
    }
  }
  REQUIRE_FALSE(ec);
  CHECK(skipped == health.backlog_fires_not_started_total);  // all written, once, before any stop
  CHECK(live_after >= 5);
}
