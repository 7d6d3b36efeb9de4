// SPDX-License-Identifier: Apache-2.0
// qf-agent and qfctl as real processes: schedules, graceful SIGTERM, SIGHUP reload, startup
// validation, kill -9 at random moments, and reading the store while the agent writes it.
#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include <filesystem>
#include <utility>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "child_process.hpp"

#include <quartzflow/local_store.hpp>
#include <quartzflow/time.hpp>

namespace {

namespace fs = std::filesystem;
namespace qf = quartzflow;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;
using namespace quartzflow::testing;

const std::string k_agent_path = QUARTZFLOW_QF_AGENT;
const std::string k_qfctl_path = QUARTZFLOW_QFCTL;

/// A config and manifest in a temp dir, and the agent started on them.
struct AgentFixture {
  TempDir dir;
  fs::path config_file = dir.path() / "agent.yaml";
  fs::path manifest_file = dir.path() / "tasks.yaml";
  fs::path store_file = dir.path() / "data" / "agent.db";
  int lifetimes = 0;

  explicit AgentFixture(const std::string& manifest) {
    write_text(config_file, "data_dir: data\nmanifest_file: tasks.yaml\n");
    write_text(manifest_file, manifest);
  }

  fs::path stderr_file(int lifetime) const { return dir.path() / ("agent-" + std::to_string(lifetime) + ".err"); }

  std::unique_ptr<ChildProcess> start(const std::vector<std::string>& extra = {"--shutdown-grace", "1"}) {
    ++lifetimes;
    std::vector<std::string> args{k_agent_path, "--config", config_file.string()};
    args.insert(args.end(), extra.begin(), extra.end());
    return std::make_unique<ChildProcess>(args, dir.path() / ("agent-" + std::to_string(lifetimes) + ".out"),
                                          stderr_file(lifetimes));
  }
  std::string log(int lifetime) const { return read_text(stderr_file(lifetime)); }
  std::string log() const { return log(lifetimes); }
};

/// One `<id> <STATUS> ...` line of the agent's log.
struct Report {
  std::string execution_id;
  std::string status;  ///< RUNNING or a final state, as logged
  std::size_t offset;  ///< where the line starts in the log
};

std::vector<Report> reports_in(const std::string& log) {
  static const std::regex line(
      R"(\[info\] (\S+:\d+:\S+) (RUNNING \(attempt \d+\)|(SUCCESS|FAILURE|TIMEOUT|CANCELLED|SKIPPED|MISSED) in -?\d+ ms))");
  std::vector<Report> found;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), line); it != std::sregex_iterator(); ++it) {
    const auto& m = *it;
    found.push_back({m[1].str(), m[3].matched ? m[3].str() : "RUNNING", static_cast<std::size_t>(m.position(0))});
  }
  return found;
}

/// Final reports of `task` in `log` that start at or after `from`.
std::vector<Report> finals_of(const std::string& log, const std::string& task, const std::string& status,
                              std::size_t from = 0) {
  std::vector<Report> found;
  for (auto& r : reports_in(log))
    if (r.offset >= from && r.status == status && r.execution_id.rfind(task + ":", 0) == 0) found.push_back(r);
  return found;
}

std::string status_name(qf::v1::ExecutionStatus status) {
  return qf::v1::ExecutionStatus_Name(status).substr(std::string("EXECUTION_STATUS_").size());
}

bool is_final(qf::v1::ExecutionStatus status) {
  return status != qf::v1::EXECUTION_STATUS_PENDING && status != qf::v1::EXECUTION_STATUS_RUNNING &&
         status != qf::v1::EXECUTION_STATUS_UNSPECIFIED;
}

/// The store opened read-only, as qfctl does.
struct StoreReader {
  boost::asio::io_context io;
  std::unique_ptr<qf::LocalStore> store;

  explicit StoreReader(const fs::path& file) {
    qf::LocalStoreOptions options;
    options.path = file.string();
    options.read_only = true;
    qf::error_code ec;
    std::string detail;
    store = qf::LocalStore::open(io.get_executor(), options, ec, &detail);
    INFO(detail);
    REQUIRE(store != nullptr);
  }

  std::vector<qf::v1::Execution> all_executions() const {
    qf::ExecutionQuery query;
    query.limit = 1'000'000;
    query.newest_first = false;
    qf::error_code ec;
    auto records = store->executions(query, ec);
    REQUIRE_FALSE(ec);
    return records;
  }

  std::map<std::string, qf::v1::Execution> by_id() const {
    std::map<std::string, qf::v1::Execution> records;
    for (auto& r : all_executions()) records[r.execution_id()] = r;
    return records;
  }
};

/// The local date (UTC, the agent's default stats zone) a final record is counted on.
std::string stats_date(const qf::v1::Execution& r) {
  const std::int64_t ms = r.started_unix_ms() != 0 ? r.started_unix_ms() : r.scheduled_unix_ms();
  return qf::format_rfc3339(qf::Instant{seconds{ms / 1000}}).substr(0, 10);
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

const char* const k_echo_and_sleeper = R"(tasks:
  - name: echo
    enabled: true
    schedule: "* * * * * *"
    shell:
      argv: [echo, hello from echo]
  - name: sleeper
    enabled: true
    schedule: "* * * * * *"
    shell:
      argv: [sleep, "30"]
)";

}  // namespace

TEST_CASE("the agent runs a manifest's tasks on schedule and a graceful SIGTERM flushes every record",
          "[agent][integration]") {
  AgentFixture fixture(k_echo_and_sleeper);
  auto agent = fixture.start({"--shutdown-grace", "1"});

  // Two echo runs reported and the sleep running: the schedule fires every second.
  const bool ran = wait_until(
      [&] {
        const auto log = fixture.log();
        const auto reports = reports_in(log);
        return finals_of(log, "echo", "SUCCESS").size() >= 2 &&
               std::any_of(reports.begin(), reports.end(), [](const Report& r) {
                 return r.status == "RUNNING" && r.execution_id.rfind("sleeper:", 0) == 0;
               });
      },
      seconds{10});
  INFO(fixture.log());
  REQUIRE(ran);
  std::vector<pid_t> task_processes = descendants_of(agent->pid());
  REQUIRE_FALSE(task_processes.empty());  // sleep 30 is running

  const auto stop_requested = Clock::now();
  agent->signal(SIGTERM);
  const auto status = agent->wait_for_exit(seconds{6});
  const auto stop_took = Clock::now() - stop_requested;
  const std::string log = fixture.log();
  INFO(log);
  REQUIRE(status.has_value());
  REQUIRE(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
  CHECK(stop_took >= milliseconds{900});  // the running sleep got its 1 s of grace
  CHECK(stop_took < seconds{5});
  CHECK(contains(log, "stopped; every record is flushed"));
  CHECK_FALSE(contains(log, "[error]"));
  for (const pid_t p : task_processes) CHECK_FALSE(process_alive(p));  // no task left behind

  // Every run the log reported is in the store with the reported state.
  StoreReader reader(fixture.store_file);
  const auto records = reader.by_id();
  const auto reports = reports_in(log);
  std::size_t echo_successes = 0;
  std::string cancelled_sleep;
  for (const auto& report : reports) {
    if (report.status == "RUNNING") continue;
    INFO(report.execution_id);
    const auto it = records.find(report.execution_id);
    REQUIRE(it != records.end());
    CHECK(status_name(it->second.status()) == report.status);
    if (report.execution_id.rfind("echo:", 0) == 0) {
      CHECK(report.status == "SUCCESS");
      ++echo_successes;
    } else if (report.status == "CANCELLED") {
      cancelled_sleep = report.execution_id;
    } else {
      CHECK(report.status == "SKIPPED");  // later sleeper fires overlap the running one
    }
  }
  CHECK(echo_successes >= 2);
  REQUIRE_FALSE(cancelled_sleep.empty());
  const auto& sleep_record = records.at(cancelled_sleep);
  CHECK(sleep_record.cancelled_by() == "agent shutdown");
  CHECK(sleep_record.started_unix_ms() != 0);
  for (const auto& [id, record] : records) {
    INFO(id << " " << status_name(record.status()));
    CHECK(is_final(record.status()));  // nothing left PENDING or RUNNING
    if (record.task_id() == "echo") CHECK(record.status() == qf::v1::EXECUTION_STATUS_SUCCESS);
  }
  qf::error_code ec;
  CHECK(reader.store->unfinished(ec).empty());

  const auto stats = run_command({k_qfctl_path, "local", "--store", fixture.store_file.string(), "stats"},
                                 fixture.dir.path());
  INFO(stats.out << stats.err);
  CHECK(stats.exit_status == 0);
  CHECK(std::regex_search(stats.out, std::regex(R"(TASK +TOTAL +SUCCESS +FAILURE +SUCCESS RATE +AVG DURATION)")));
  std::smatch echo_row;
  REQUIRE(std::regex_search(stats.out, echo_row, std::regex(R"(\necho +(\d+) +(\d+) +0 +100\.0% +\d+ms)")));
  CHECK(echo_row[1].str() == echo_row[2].str());
  CHECK(std::regex_search(stats.out, std::regex(R"(\nsleeper +1 +0 +0 +0\.0% +\d)")));
}

TEST_CASE("SIGHUP reloads the manifest, and an invalid manifest is refused while the previous config stays",
          "[agent][integration]") {
  AgentFixture fixture(R"(tasks:
  - name: alpha
    enabled: true
    schedule: "* * * * * *"
    shell:
      argv: [echo, alpha]
)");
  auto agent = fixture.start();
  REQUIRE(wait_until([&] { return !finals_of(fixture.log(), "alpha", "SUCCESS").empty(); }, seconds{10}));

  // A + B: B starts running after the reload.
  write_text(fixture.manifest_file, R"(tasks:
  - name: alpha
    enabled: true
    schedule: "* * * * * *"
    shell:
      argv: [echo, alpha]
  - name: beta
    enabled: true
    schedule: "* * * * * *"
    shell:
      argv: [echo, beta]
)");
  agent->signal(SIGHUP);
  const bool reloaded = wait_until(
      [&] {
        const auto log = fixture.log();
        return contains(log, "loaded 2 task(s)") && !finals_of(log, "beta", "SUCCESS").empty();
      },
      seconds{10});
  INFO(fixture.log());
  REQUIRE(reloaded);
  CHECK(contains(fixture.log(), "(config version 2)"));

  // An invalid cron (6 fields, seconds first: the second field is the minute).
  write_text(fixture.manifest_file, R"(tasks:
  - name: alpha
    enabled: true
    schedule: "0 61 * * * *"
    shell:
      argv: [echo, alpha]
)");
  agent->signal(SIGHUP);
  const std::string refusal = fixture.manifest_file.string() + ":4:";
  REQUIRE(wait_until([&] { return contains(fixture.log(), "minute: 61 is out of range 0-59"); }, seconds{10}));
  const std::string after_refusal = fixture.log();
  const std::size_t refused_at = after_refusal.find("minute: 61 is out of range 0-59");
  INFO(after_refusal);
  CHECK(contains(after_refusal, refusal));
  CHECK(contains(after_refusal, "tasks[0].schedule.cron.minute: 61 is out of range 0-59"));
  CHECK_FALSE(contains(after_refusal, "config version 3"));

  // The previous config (alpha and beta, every second) is still in force.
  const bool still_running = wait_until(
      [&] {
        const auto log = fixture.log();
        return finals_of(log, "alpha", "SUCCESS", refused_at).size() >= 2 &&
               finals_of(log, "beta", "SUCCESS", refused_at).size() >= 2;
      },
      seconds{10});
  INFO(fixture.log());
  CHECK(still_running);
  CHECK(agent->exited() == false);

  agent->signal(SIGTERM);
  const auto status = agent->wait_for_exit(seconds{6});
  REQUIRE(status.has_value());
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);

  StoreReader reader(fixture.store_file);
  qf::ExecutionQuery beta;
  beta.task_id = "beta";
  qf::error_code ec;
  CHECK(reader.store->count_executions(beta, ec) >= 3);
}

TEST_CASE("an invalid config or manifest at startup exits with status 2 and names the field",
          "[agent][integration]") {
  TempDir dir;
  const fs::path config = dir.path() / "agent.yaml";
  const fs::path manifest = dir.path() / "tasks.yaml";
  write_text(manifest, R"(tasks:
  - name: ok
    enabled: true
    schedule: "*/5 * * * * *"
    shell:
      argv: [echo, ok]
)");
  auto run_agent = [&] {
    return run_command({k_agent_path, "--config", config.string()}, dir.path(), seconds{10});
  };

  SECTION("an unknown field in agent.yaml") {
    write_text(config, "data_dir: data\nmanifest_file: tasks.yaml\nbogus_field: 3\n");
    const auto result = run_agent();
    INFO(result.err);
    CHECK(result.exit_status == 2);
    CHECK(contains(result.err, config.string() + ":3:1: unknown field \"bogus_field\""));
    CHECK_FALSE(fs::exists(dir.path() / "data"));  // refused before anything is created
  }
  SECTION("an invalid log_level") {
    write_text(config, "data_dir: data\nmanifest_file: tasks.yaml\nlog_level: chatty\n");
    const auto result = run_agent();
    INFO(result.err);
    CHECK(result.exit_status == 2);
    CHECK(contains(result.err, "log_level: \"chatty\""));
  }
  SECTION("no manifest_file") {
    write_text(config, "data_dir: data\n");
    const auto result = run_agent();
    INFO(result.err);
    CHECK(result.exit_status == 2);
    CHECK(contains(result.err, "manifest_file: is required"));
  }
  SECTION("a cron field out of range in the manifest") {
    write_text(config, "data_dir: data\nmanifest_file: tasks.yaml\n");
    write_text(manifest, R"(tasks:
  - name: ok
    enabled: true
    schedule: "0 61 * * * *"
    shell:
      argv: [echo, ok]
)");
    const auto result = run_agent();
    INFO(result.err);
    CHECK(result.exit_status == 2);
    CHECK(contains(result.err, manifest.string() + ":4:"));
    CHECK(contains(result.err, "tasks[0].schedule.cron.minute: 61 is out of range 0-59"));
  }
  SECTION("an unknown field of a task in the manifest") {
    write_text(config, "data_dir: data\nmanifest_file: tasks.yaml\n");
    write_text(manifest, R"(tasks:
  - name: ok
    enabled: true
    schedule: "*/5 * * * * *"
    timeout_secs: 5
    shell:
      argv: [echo, ok]
)");
    const auto result = run_agent();
    INFO(result.err);
    CHECK(result.exit_status == 2);
    CHECK(contains(result.err, manifest.string() + ":5:"));
    CHECK(contains(result.err, "unknown field \"timeout_secs\""));
  }
  SECTION("a missing manifest file") {
    write_text(config, "data_dir: data\nmanifest_file: missing.yaml\n");
    const auto result = run_agent();
    INFO(result.err);
    CHECK(result.exit_status == 2);
    CHECK(contains(result.err, "missing.yaml"));
  }
}

TEST_CASE("kill -9 at random moments never loses a reported run nor counts one twice",
          "[agent][integration]") {
  AgentFixture fixture(R"(tasks:
  - name: fast
    enabled: true
    schedule: "* * * * * *"
    shell:
      argv: [echo, fast]
  - name: slow
    enabled: true
    schedule: "* * * * * *"
    shell:
      argv: [sleep, "0.3"]
)");
  // Each lifetime starts at a random offset into a wall-clock second, after 0-1 extra whole
  // seconds of downtime (so fires are owed and the misfire policy runs), and is killed after a
  // random 0.5-2.5 s. With this seed three lifetimes are killed before the first regular fire
  // after their catch-up run: the restart that follows must not resolve that fire again.
  constexpr std::uint32_t k_seed = 2341;
  constexpr int k_kills = 10;
  std::mt19937 random(k_seed);
  std::uniform_int_distribution<int> extra_downtime_s(0, 1);
  std::uniform_int_distribution<int> offset_in_second_ms(0, 999);
  std::uniform_int_distribution<int> lifetime_ms(500, 2500);
  INFO("seed " << k_seed);

  for (int i = 0; i < k_kills; ++i) {
    const auto start_at = std::chrono::ceil<seconds>(std::chrono::system_clock::now()) +
                          seconds{extra_downtime_s(random)} + milliseconds{offset_in_second_ms(random)};
    const milliseconds lifetime{lifetime_ms(random)};
    std::this_thread::sleep_until(start_at);  // at most 3 s away
    auto agent = fixture.start();
    // The random moment is the point of the test; the agent must not exit by itself meanwhile.
    std::this_thread::sleep_for(lifetime);
    INFO("lifetime " << fixture.lifetimes << " of " << lifetime.count() << " ms: " << fixture.log());
    REQUIRE_FALSE(agent->wait_for_exit(milliseconds{0}).has_value());
    agent->kill_tree();
  }
  // A last, graceful lifetime resolves what the last kill left RUNNING.
  {
    auto agent = fixture.start();
    const bool reported = wait_until(
        [&] {
          const auto log = fixture.log();
          const auto started = log.find("started as");
          if (started == std::string::npos) return false;
          for (const auto& r : reports_in(log))
            if (r.offset > started && r.status != "RUNNING") return true;
          return false;
        },
        seconds{10});
    INFO(fixture.log());
    REQUIRE(reported);
    agent->signal(SIGTERM);
    const auto status = agent->wait_for_exit(seconds{6});
    REQUIRE(status.has_value());
    REQUIRE(WIFEXITED(*status));
    REQUIRE(WEXITSTATUS(*status) == 0);
  }

  // What the logs reported, over every lifetime.
  std::map<std::string, std::vector<std::pair<std::string, int>>> finals_reported;  // id -> (state, lifetime)
  std::set<std::string> running_reported;
  for (int lifetime = 1; lifetime <= fixture.lifetimes; ++lifetime) {
    const auto log = fixture.log(lifetime);
    INFO("lifetime " << lifetime << ": " << log);
    CHECK_FALSE(contains(log, "[error]"));
    for (const auto& r : reports_in(log)) {
      if (r.status == "RUNNING") {
        running_reported.insert(r.execution_id);
      } else {
        finals_reported[r.execution_id].emplace_back(r.status, lifetime);
      }
    }
  }
  REQUIRE(finals_reported.size() >= 5);

  StoreReader reader(fixture.store_file);
  const auto records = reader.all_executions();
  qf::error_code ec;
  CHECK(reader.store->count_executions(qf::ExecutionQuery{}, ec) == records.size());
  std::map<std::string, int> copies;
  for (const auto& r : records) ++copies[r.execution_id()];
  std::map<std::string, qf::v1::Execution> by_id;
  for (const auto& r : records) by_id[r.execution_id()] = r;

  // Every reported final run is stored once, with the state that was reported, and was
  // reported final once: a fire that already ended is neither run nor resolved again.
  for (const auto& [id, states] : finals_reported) {
    std::string reported_as;
    for (const auto& [state, lifetime] : states)
      reported_as += state + " in lifetime " + std::to_string(lifetime) + "; ";
    INFO(id << " reported as " << reported_as);
    CHECK(states.size() == 1);
    REQUIRE(copies[id] == 1);
    const auto& stored = by_id.at(id);
    INFO("stored as " << status_name(stored.status()) << " " << stored.failure_reason() << " "
                      << stored.skip_detail() << " trigger " << qf::v1::TriggerType_Name(stored.trigger()));
    CHECK(status_name(stored.status()) == states.front().first);
  }
  for (const auto& id : running_reported) {
    INFO(id << " was reported RUNNING");
    REQUIRE(by_id.count(id) == 1);
    CHECK(is_final(by_id.at(id).status()));
  }
  for (const auto& r : records) {
    INFO(r.execution_id() << " " << status_name(r.status()) << " " << r.failure_reason());
    CHECK(copies[r.execution_id()] == 1);
    // Final but never reported is fine: the kill came between the commit and the log line.
    CHECK(is_final(r.status()));
  }

  // Daily stats count each final record once, on its day.
  struct Counts {
    std::uint32_t success = 0, failure = 0, timeout = 0, cancelled = 0, skipped = 0, missed = 0;
  };
  std::map<std::pair<std::string, std::string>, Counts> expected;  // (date, task) -> counts
  std::string first_date = "9999-12-31";
  std::string last_date = "0000-01-01";
  for (const auto& r : records) {
    const auto date = stats_date(r);
    first_date = std::min(first_date, date);
    last_date = std::max(last_date, date);
    auto& c = expected[{date, r.task_id()}];
    switch (r.status()) {
      case qf::v1::EXECUTION_STATUS_SUCCESS: ++c.success; break;
      case qf::v1::EXECUTION_STATUS_FAILURE: ++c.failure; break;
      case qf::v1::EXECUTION_STATUS_TIMEOUT: ++c.timeout; break;
      case qf::v1::EXECUTION_STATUS_CANCELLED: ++c.cancelled; break;
      case qf::v1::EXECUTION_STATUS_SKIPPED: ++c.skipped; break;
      case qf::v1::EXECUTION_STATUS_MISSED: ++c.missed; break;
      default: break;
    }
  }
  const auto stats = reader.store->daily_stats(first_date, last_date, std::nullopt, ec);
  REQUIRE_FALSE(ec);
  CHECK(stats.size() == expected.size());
  for (const auto& row : stats) {
    INFO(row.date() << " " << row.task_id());
    const auto it = expected.find({row.date(), row.task_id()});
    REQUIRE(it != expected.end());
    const Counts& c = it->second;
    CHECK(row.success() == c.success);
    CHECK(row.failure() == c.failure);
    CHECK(row.timeout() == c.timeout);
    CHECK(row.cancelled() == c.cancelled);
    CHECK(row.skipped() == c.skipped);
    CHECK(row.missed() == c.missed);
    CHECK(row.total() == c.success + c.failure + c.timeout + c.cancelled);
  }
}

TEST_CASE("qfctl local reads the store while the agent runs and names a missing store",
          "[agent][integration]") {
  AgentFixture fixture(R"(tasks:
  - name: echo
    enabled: true
    schedule: "* * * * * *"
    shell:
      argv: [echo, hello from echo]
)");
  auto agent = fixture.start();
  REQUIRE(wait_until([&] { return !finals_of(fixture.log(), "echo", "SUCCESS").empty(); }, seconds{10}));
  const std::string store = fixture.store_file.string();

  // Several rounds of every read command while the agent keeps writing once a second.
  const auto until = Clock::now() + milliseconds{2500};
  int rounds = 0;
  while (Clock::now() < until || rounds < 2) {
    ++rounds;
    for (const std::vector<std::string>& command : std::vector<std::vector<std::string>>{
             {"stats"}, {"history"}, {"history", "--json"}, {"logs", "--task-id", "echo", "--last"}, {"export"}}) {
      std::vector<std::string> args{k_qfctl_path, "local", "--store", store};
      args.insert(args.end(), command.begin(), command.end());
      const auto reported_before = finals_of(fixture.log(), "echo", "SUCCESS");
      const auto result = run_command(args, fixture.dir.path());
      INFO("qfctl local " << command.front() << ": " << result.out << result.err);
      CHECK(result.exit_status == 0);
      CHECK(result.err.empty());  // no "database is locked", no warning
      if (command.front() == "logs") CHECK(result.out == "hello from echo\n");
      if (command.front() == "history" && command.size() == 2) {
        // A reported run is durable: every one reported before the command is in its output.
        for (const auto& r : reported_before) CHECK(contains(result.out, r.execution_id));
        CHECK(contains(result.out, "\"status\": \"EXECUTION_STATUS_SUCCESS\""));
      }
    }
  }
  CHECK_FALSE(agent->exited());
  const auto reported = finals_of(fixture.log(), "echo", "SUCCESS");
  REQUIRE_FALSE(reported.empty());
  const auto history =
      run_command({k_qfctl_path, "local", "--store", store, "history", "--json"}, fixture.dir.path());
  for (const auto& r : reported) CHECK(contains(history.out, r.execution_id));

  agent->signal(SIGTERM);
  const auto status = agent->wait_for_exit(seconds{6});
  REQUIRE(status.has_value());
  CHECK(WIFEXITED(*status));
  CHECK(WEXITSTATUS(*status) == 0);
  CHECK_FALSE(contains(fixture.log(), "[error]"));

  // A store that does not exist: a clear error, and nothing is created.
  const fs::path missing = fixture.dir.path() / "nowhere" / "agent.db";
  for (const char* command : {"stats", "history"}) {
    const auto result = run_command({k_qfctl_path, "local", "--store", missing.string(), command}, fixture.dir.path());
    INFO(result.err);
    CHECK(result.exit_status == 1);
    CHECK(contains(result.err, "no agent store at " + missing.string()));
  }
  CHECK_FALSE(fs::exists(missing));
}

namespace {

/// A small tmpfs mounted for one test (root, or a permitted mount namespace), unmounted after.
class SmallTmpfs {
 public:
  SmallTmpfs(const fs::path& where, const std::string& size) : path_(where) {
    fs::create_directories(where);
    mounted_ = ::mount("tmpfs", where.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, ("size=" + size).c_str()) == 0;
    if (!mounted_) why_ = std::strerror(errno);
  }
  ~SmallTmpfs() {
    if (mounted_) ::umount2(path_.c_str(), MNT_DETACH);
  }
  SmallTmpfs(const SmallTmpfs&) = delete;
  SmallTmpfs& operator=(const SmallTmpfs&) = delete;
  bool mounted() const noexcept { return mounted_; }
  const std::string& why() const noexcept { return why_; }

  /// Writes a file until the filesystem has no space left; returns the bytes written.
  std::size_t fill(const fs::path& file) {
    const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    const std::string chunk(4096, 'x');
    std::size_t written = 0;
    for (;;) {
      const auto n = ::write(fd, chunk.data(), chunk.size());
      if (n <= 0) break;
      written += static_cast<std::size_t>(n);
    }
    ::close(fd);
    return written;
  }

 private:
  fs::path path_;
  bool mounted_ = false;
  std::string why_;
};

std::size_t count_of(const std::string& text, const std::string& part) {
  std::size_t n = 0;
  for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

std::vector<std::string> lines_in(const fs::path& file) {
  std::istringstream in(read_text(file));
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(line);
  return lines;
}

}  // namespace

TEST_CASE("an agent whose data disk fills stops starting runs, reports only what it committed, and recovers",
          "[agent][integration][slow]") {
  TempDir outside;  // the side-effect file lives off the small disk
  const fs::path ran_file = outside.path() / "ran.txt";
  AgentFixture fixture(fmt::format(R"(tasks:
  - name: tick
    enabled: true
    schedule: "* * * * * *"
    shell:
      script: "echo $QF_EXECUTION_ID >> '{}'; head -c 6000 /dev/zero | tr '\\0' x"
)",
                                   ran_file.string()));
  SmallTmpfs disk(fixture.dir.path() / "data", "3m");
  if (!disk.mounted()) {
    WARN("skipped: mounting a 3 MB tmpfs is not permitted here (" << disk.why() << ")");
    return;
  }
  auto agent = fixture.start({"--shutdown-grace", "2"});
  REQUIRE(wait_until([&] { return finals_of(fixture.log(), "tick", "SUCCESS").size() >= 2; }, seconds{10}));

  // Fill the disk: the store fails to commit (SQLITE_FULL) within a few runs.
  const fs::path filler = fixture.dir.path() / "data" / "filler";
  disk.fill(filler);
  const std::string entered = "local store full: ";
  const bool noticed = wait_until(
      [&] {
        disk.fill(fixture.dir.path() / "data" / "filler2");  // space SQLite gave back is taken again
        return contains(fixture.log(), "no new runs start until the store can commit again");
      },
      seconds{60});
  INFO(fixture.log());
  REQUIRE(noticed);
  CHECK(contains(fixture.log(), entered));
  std::this_thread::sleep_for(seconds{1});  // a run in progress ends (it prints 6 KB)
  const auto ran_when_full = lines_in(ran_file).size();
  std::this_thread::sleep_for(seconds{4});
  CHECK(lines_in(ran_file).size() == ran_when_full);  // no run started on a full disk

  // Space returns: the agent finds out by itself and runs again.
  fs::remove(filler);
  fs::remove(fixture.dir.path() / "data" / "filler2");
  REQUIRE(wait_until([&] { return contains(fixture.log(), "local store can commit again"); }, seconds{15}));
  REQUIRE(wait_until([&] { return lines_in(ran_file).size() >= ran_when_full + 2; }, seconds{10}));
  agent->signal(SIGTERM);
  const auto status = agent->wait_for_exit(seconds{10});
  REQUIRE(status.has_value());
  CHECK(WIFEXITED(*status));
  const std::string log = fixture.log();
  INFO(log);
  CHECK(count_of(log, "no new runs start until the store can commit again") == 1);
  CHECK(count_of(log, "local store can commit again") == 1);

  StoreReader reader(fixture.store_file);
  const auto records = reader.by_id();
  qf::error_code ec;
  CHECK(reader.store->unfinished(ec).empty());
  // Every final state the agent reported is the one in its store.
  for (const auto& report : reports_in(log)) {
    if (report.status == "RUNNING") continue;
    INFO(report.execution_id);
    const auto it = records.find(report.execution_id);
    REQUIRE(it != records.end());
    CHECK(status_name(it->second.status()) == report.status);
  }
  // Every run that happened is on record as SUCCESS; every run on record happened.
  const auto ran = lines_in(ran_file);
  const std::set<std::string> ran_ids(ran.begin(), ran.end());
  for (const auto& id : ran) {
    INFO(id);
    const auto it = records.find(id);
    REQUIRE(it != records.end());
    CHECK(it->second.status() == qf::v1::EXECUTION_STATUS_SUCCESS);
  }
  std::size_t skipped_full = 0;
  for (const auto& [id, record] : records) {
    if (record.started_unix_ms() != 0) CHECK(ran_ids.count(id) == 1);
    if (record.status() == qf::v1::EXECUTION_STATUS_SKIPPED && record.skip_detail().rfind(entered, 0) == 0)
      ++skipped_full;
  }
  CHECK(skipped_full >= 3);  // the fires of the outage, each on record with why
}

TEST_CASE("a shell run of an agent killed with -9 does not go on, and the restart records why",
          "[agent][integration]") {
  TempDir side;
  const fs::path ran_file = side.path() / "ran.txt";
  const fs::path up_file = side.path() / "up.txt";  // the sleep has its own session now
  AgentFixture fixture(fmt::format(R"(tasks:
  - name: slow
    enabled: true
    schedule: "* * * * * *"
    shell:
      script: 'setsid sh -c "echo up >> {}; exec sleep 3" & wait $!; echo "$QF_EXECUTION_ID" >> {}'
)",
                                   up_file.string(), ran_file.string()));
  std::string id;
  {
    auto agent = fixture.start();
    REQUIRE(wait_until(
        [&] {
          for (const auto& r : reports_in(fixture.log()))
            if (r.status == "RUNNING" && r.execution_id.rfind("slow:", 0) == 0) {
              id = r.execution_id;
              return true;
            }
          return false;
        },
        seconds{10}));
    // Killed before the run's `setsid`, the whole run would die with the agent (a loaded
    // machine got there first once): wait for it, and for its exec.
    REQUIRE(wait_until([&] { return fs::exists(up_file); }, seconds{10}));
    std::this_thread::sleep_for(std::chrono::milliseconds{300});
    agent->signal(SIGKILL);  // the agent only: its children are on their own now
    REQUIRE(agent->wait_for_exit(seconds{5}).has_value());
  }
  INFO("run " << id);
  auto agent = fixture.start();
  // Longer than the run would have lasted: its echo never comes.
  std::this_thread::sleep_for(seconds{4});
  CHECK_FALSE(contains(read_text(ran_file), id));
  agent->signal(SIGTERM);
  REQUIRE(agent->wait_for_exit(seconds{10}).has_value());
  CHECK_FALSE(contains(read_text(ran_file), id));
  StoreReader reader(fixture.store_file);
  const auto records = reader.by_id();
  REQUIRE(records.count(id));
  const auto& record = records.at(id);
  INFO(record.error_message());
  CHECK(record.status() == qf::v1::EXECUTION_STATUS_FAILURE);
  CHECK(record.failure_reason() == "agent restarted");
  // sh died with the agent, and its process group with it; its `sleep`, which left the group
  // (setsid), was left and is killed by the restart, which says so.
  CHECK(contains(record.error_message(), "agent restarted: 1 process(es) it left running were killed: "));
  CHECK(contains(record.error_message(), "(sleep)"));
}

namespace {

/// The children of `pid` (of all its threads), from the kernel's lists.
std::vector<pid_t> children_of(pid_t pid) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& thread : fs::directory_iterator(fs::path("/proc") / std::to_string(pid) / "task", ec)) {
    std::ifstream in(thread.path() / "children");
    for (pid_t child = 0; in >> child;) out.push_back(child);
  }
  return out;
}

std::string comm_of(pid_t pid) {
  std::ifstream in(fs::path("/proc") / std::to_string(pid) / "comm");
  std::string name;
  std::getline(in, name);
  return name;
}

/// Gone, or a zombie that only waits for its reaper.
bool process_gone(pid_t pid) {
  std::ifstream in(fs::path("/proc") / std::to_string(pid) / "stat");
  std::string line;
  if (!std::getline(in, line)) return true;
  const auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'Z';
}

}  // namespace

TEST_CASE("kill -9 of the agent ends its spawner and every process of its runs", "[agent][integration]") {
  AgentFixture fixture(R"(tasks:
  - {name: a, enabled: true, schedule: "* * * * * *", shell: {script: 'sleep 60 & sleep 60'}}
  - {name: b, enabled: true, schedule: "* * * * * *", shell: {script: 'sleep 60 & sleep 60'}}
  - {name: c, enabled: true, schedule: "* * * * * *", shell: {script: 'sleep 60 & sleep 60'}}
)");
  auto agent = fixture.start();
  // The runs are children of one qf-spawner, the agent's child; count them and what they started.
  pid_t spawner = 0;
  std::vector<pid_t> leaders, all_of_runs;
  std::size_t sleeps = 0;
  REQUIRE(wait_until(
      [&] {
        spawner = 0;
        for (pid_t child : children_of(agent->pid()))
          if (comm_of(child) == "qf-spawner") spawner = child;
        if (spawner == 0) return false;
        leaders = children_of(spawner);
        all_of_runs = leaders;
        for (std::size_t i = 0; i < all_of_runs.size(); ++i)
          for (pid_t descendant : children_of(all_of_runs[i])) all_of_runs.push_back(descendant);
        sleeps = static_cast<std::size_t>(
            std::count_if(all_of_runs.begin(), all_of_runs.end(), [](pid_t pid) { return comm_of(pid) == "sleep"; }));
        return leaders.size() == 3 && sleeps == 6;  // sh, and its two sleeps, for each run
      },
      seconds{10}));
  // Each run is its own process group, led by the spawner's child.
  for (pid_t leader : leaders) CHECK(::getpgid(leader) == leader);
  agent->signal(SIGKILL);
  REQUIRE(agent->wait_for_exit(seconds{5}).has_value());
  CHECK(wait_until([&] { return process_gone(spawner); }, seconds{5}));
  // The spawner's parent-death signal makes it kill every run's whole group (the background
  // sleeps too) before it exits.
  CHECK(wait_until(
      [&] { return std::all_of(all_of_runs.begin(), all_of_runs.end(), [](pid_t pid) { return process_gone(pid); }); },
      seconds{5}));
  for (pid_t pid : all_of_runs) {
    INFO("pid " << pid << " " << comm_of(pid));
    CHECK(process_gone(pid));
  }
}
