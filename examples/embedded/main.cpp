// SPDX-License-Identifier: Apache-2.0
// qf-embedded: a whole QuartzFlow cluster in one process and one io_context: a coordinator
// (SQLite store) and three agents linked by the in-process network, running sample tasks.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include <unistd.h>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <quartzflow/coordinator.hpp>
#include <quartzflow/agent_dispatcher.hpp>
#include <quartzflow/coordinator_dispatcher.hpp>
#include <quartzflow/execution_status.hpp>
#include <quartzflow/local_store.hpp>
#include <quartzflow/log.hpp>
#include <quartzflow/store.hpp>
#include <quartzflow/task_engine.hpp>
#include <quartzflow/transport.hpp>
#include <quartzflow/version.hpp>

namespace asio = boost::asio;
namespace fs = std::filesystem;
namespace qf = quartzflow;

namespace {

constexpr int k_exit_usage = 2;
constexpr const char* k_coordinator_address = "coordinator";
constexpr const char* k_coordinator_db = "coordinator.db";
constexpr auto k_connect_timeout = std::chrono::seconds{10};
constexpr auto k_shutdown_grace = std::chrono::seconds{2};

struct AgentSpec {
  const char* id;
  const char* group;
};
constexpr AgentSpec k_agents[] = {{"agent-1", "web"}, {"agent-2", "web"}, {"agent-3", "batch"}};

/// One agent: its own LocalStore file, TaskEngine and dispatcher (agent side).
struct DemoAgent {
  std::string id;
  std::string group;
  fs::path db_path;
  std::unique_ptr<qf::LocalStore> store;
  std::unique_ptr<qf::TaskEngine> engine;
  std::unique_ptr<qf::Connector> connector;
  std::unique_ptr<qf::AgentDispatcher> dispatcher;  // last: it uses the three above
};

std::string host_name() {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  return host[0] != '\0' ? host : "localhost";
}

std::string local_time(std::int64_t unix_ms) {
  const std::time_t seconds = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  ::localtime_r(&seconds, &tm);
  return fmt::format("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec);
}

std::string status_name(qf::v1::ExecutionStatus status) {
  return qf::v1::ExecutionStatus_Name(status).substr(std::string("EXECUTION_STATUS_").size());
}

std::string first_line(const std::string& text) {
  auto line = text.substr(0, text.find('\n'));
  if (line.size() > 80) line = line.substr(0, 77) + "...";
  return line;
}

void print_run(const qf::v1::Execution& run) {
  std::string task = run.task_name().empty() ? run.task_id() : run.task_name();
  if (run.shard_total() > 0) task += fmt::format(" [shard {}/{}]", run.shard_index(), run.shard_total());
  if (run.trigger() == qf::v1::TRIGGER_TYPE_MANUAL) task += " [manual]";
  if (run.trigger() == qf::v1::TRIGGER_TYPE_RETRY) task += fmt::format(" [retry {}]", run.attempt());
  std::string detail = first_line(run.output());
  if (detail.empty()) detail = !run.error_message().empty() ? run.error_message() : run.skip_detail();
  const std::int64_t when = run.ended_unix_ms() != 0 ? run.ended_unix_ms() : run.scheduled_unix_ms();
  std::cout << fmt::format("{}  {:<26} {:<8} {:<9} {:>5} ms  {}\n", local_time(when), task,
                           run.agent_id().empty() ? "-" : run.agent_id(), status_name(run.status()),
                           run.duration_ms(), detail)
            << std::flush;
}

/// The qfctl built next to this program (build/tools/qfctl/qfctl), else plain `qfctl`.
std::string qfctl_command() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    // build/examples/embedded/qf-embedded -> build/tools/qfctl/qfctl
    const fs::path built = self.parent_path().parent_path().parent_path() / "tools" / "qfctl" / "qfctl";
    if (fs::exists(built, ec)) return built.string();
  }
  return "qfctl";
}

/// Creates `dir`, or a fresh one under $TMPDIR (or /tmp) when empty. In a given directory the
/// stores of an earlier run are removed (only those), so every run starts from nothing.
fs::path prepare_data_dir(const std::string& requested) {
  if (requested.empty()) {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern = (fs::path(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") / "qf-embedded-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr)
      throw std::runtime_error(fmt::format("cannot create a directory like {}: {}", pattern, std::strerror(errno)));
    return fs::path(pattern);
  }
  const fs::path dir = fs::absolute(requested);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error(fmt::format("cannot create {}: {}", dir.string(), ec.message()));
  std::vector<std::string> databases{k_coordinator_db};
  for (const auto& agent : k_agents) databases.push_back(std::string(agent.id) + ".db");
  for (const auto& db : databases)
    for (const char* suffix : {"", "-wal", "-shm", "-journal"}) fs::remove(dir / (db + suffix));
  return dir;
}

qf::v1::Task shell_task(const std::string& name, const std::string& description, std::uint32_t every_seconds,
                        const std::string& command) {
  qf::v1::Task task;
  task.set_id(name);
  task.set_name(name);
  task.set_description(description);
  task.set_enabled(true);
  task.mutable_schedule()->set_interval_seconds(every_seconds);  // `@every Ns`
  auto* shell = task.mutable_shell();
  shell->add_argv("/bin/sh");
  shell->add_argv("-c");
  shell->add_argv(command);
  task.set_timeout_seconds(30);
  return task;
}

/// The sample catalog: one task of each placement.
std::vector<qf::v1::Task> sample_tasks() {
  std::vector<qf::v1::Task> tasks;

  auto health = shell_task("web-health", "every web agent checks itself, from its own clock", 2,
                           R"sh(echo "healthy, load average $(cut -d ' ' -f 1 /proc/loadavg)")sh");
  health.mutable_placement()->set_mode(qf::v1::PLACEMENT_MODE_ALL);
  health.add_group_ids("web");
  tasks.push_back(health);

  auto report = shell_task("report", "the coordinator sends each run to one agent, round robin", 3,
                           R"sh(echo "report for region $QF_PARAM_REGION done")sh");
  report.mutable_placement()->set_mode(qf::v1::PLACEMENT_MODE_ONE);
  report.mutable_placement()->set_routing(qf::v1::ROUTING_STRATEGY_ROUND_ROBIN);
  report.add_group_ids("web");
  report.add_group_ids("batch");
  auto* region = report.add_params();
  region->set_name("region");
  region->set_description("which region the report covers");
  region->set_default_value("eu-west");
  tasks.push_back(report);

  auto reindex = shell_task("reindex", "each run is split into 3 shards over all agents", 5,
                            R"sh(echo "reindexing shard $QF_SHARD_INDEX of $QF_SHARD_TOTAL")sh");
  reindex.mutable_placement()->set_mode(qf::v1::PLACEMENT_MODE_SHARDED);
  reindex.mutable_placement()->set_shard_count(3);
  reindex.set_all_agents(true);
  tasks.push_back(reindex);
  return tasks;
}

std::string placement_name(const qf::v1::Task& task) {
  switch (task.placement().mode()) {
    case qf::v1::PLACEMENT_MODE_ONE: return "one";
    case qf::v1::PLACEMENT_MODE_SHARDED: return "sharded";
    default: return "all";
  }
}

/// Counts by status as "3 SUCCESS, 1 FAILURE" (SUCCESS first, zeros left out).
std::string status_counts(const qf::v1::Stats& stats) {
  std::vector<std::string> parts;
  const std::pair<std::uint64_t, const char*> counts[] = {
      {stats.success(), "SUCCESS"}, {stats.failure(), "FAILURE"},     {stats.timeout(), "TIMEOUT"},
      {stats.cancelled(), "CANCELLED"}, {stats.skipped(), "SKIPPED"}, {stats.missed(), "MISSED"},
      {stats.running(), "RUNNING"},  {stats.pending(), "PENDING"}};
  for (const auto& [count, name] : counts)
    if (count > 0) parts.push_back(fmt::format("{} {}", count, name));
  return parts.empty() ? "none" : fmt::format("{}", fmt::join(parts, ", "));
}

/// The whole demo: owns the cluster and walks it through start, tasks, trigger and stop.
class EmbeddedCluster {
 public:
  EmbeddedCluster(asio::io_context& io, fs::path data_dir, int seconds)
      : io_(io), data_dir_(std::move(data_dir)), seconds_(seconds), network_(io.get_executor()),
        signals_(io, SIGINT, SIGTERM), run_timer_(io), trigger_timer_(io), connect_timer_(io) {}

  /// Opens the stores and starts everything; false (with the reason printed) on failure.
  bool start() {
    started_unix_ms_ = now_unix_ms();
    qf::error_code ec;
    std::string detail;
    qf::SqliteStoreOptions store_options;
    store_options.path = (data_dir_ / k_coordinator_db).string();
    store_ = qf::open_sqlite_store(io_.get_executor(), store_options, ec, &detail);
    if (!store_) {
      std::cerr << "qf-embedded: cannot open the coordinator store " << store_options.path << ": "
                << (detail.empty() ? ec.message() : detail) << "\n";
      return false;
    }
    qf::CoordinatorOptions options;
    options.agent_grace = std::chrono::milliseconds{500};        // the agents are right here
    options.dispatcher.heartbeat_interval = std::chrono::seconds{2};
    coordinator_ = std::make_unique<qf::Coordinator>(io_.get_executor(), *store_, options);
    coordinator_->on_execution([this](const qf::v1::Execution& run) { on_run(run); });

    for (const auto& spec : k_agents)
      if (!open_agent(spec)) return false;

    signals_.async_wait([this](const qf::error_code& e, int signal) {
      if (e) return;
      std::cout << fmt::format("\nsignal {} received: stopping (a second one quits at once)\n", signal);
      signals_.async_wait([this](const qf::error_code& again, int) {
        if (!again) io_.stop();
      });
      stop();
    });

    coordinator_->start([this](qf::error_code e) {
      if (e) return fail(fmt::format("the coordinator did not start: {}", e.message()));
      network_.listen(k_coordinator_address,
                      [this](std::shared_ptr<qf::Connection> connection) { coordinator_->accept(std::move(connection)); });
      std::cout << fmt::format("coordinator started, listening on in-process address \"{}\"\n", k_coordinator_address);
      create_groups(0);
    });
    return true;
  }

  int exit_code() const noexcept { return exit_code_; }

 private:
  static std::int64_t now_unix_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }

  bool open_agent(const AgentSpec& spec) {
    auto agent = std::make_unique<DemoAgent>();
    agent->id = spec.id;
    agent->group = spec.group;
    agent->db_path = data_dir_ / (agent->id + ".db");
    qf::LocalStoreOptions store_options;
    store_options.path = agent->db_path.string();
    qf::error_code ec;
    std::string detail;
    agent->store = qf::LocalStore::open(io_.get_executor(), store_options, ec, &detail);
    if (!agent->store) {
      std::cerr << "qf-embedded: cannot open the store of " << agent->id << " (" << store_options.path
                << "): " << (detail.empty() ? ec.message() : detail) << "\n";
      return false;
    }
    qf::TaskEngineOptions engine_options;
    engine_options.agent_id = agent->id;
    engine_options.hostname = host_name();
    agent->engine = std::make_unique<qf::TaskEngine>(io_.get_executor(), *agent->store, engine_options);
    agent->connector = network_.connector(k_coordinator_address, agent->id);
    qf::AgentDispatcherOptions dispatcher_options;
    dispatcher_options.agent_id = agent->id;
    dispatcher_options.hostname = engine_options.hostname;
    dispatcher_options.labels = {{"demo", "embedded"}, {"role", agent->group}};
    dispatcher_options.config_group = agent->group;
    dispatcher_options.agent_version = qf::version;
    dispatcher_options.heartbeat_interval = std::chrono::seconds{2};
    agent->dispatcher = std::make_unique<qf::AgentDispatcher>(io_.get_executor(), *agent->engine, *agent->store,
                                                              *agent->connector, dispatcher_options);
    agents_.push_back(std::move(agent));
    return true;
  }

  void create_groups(std::size_t index) {
    if (stopping_) return;
    static constexpr const char* k_groups[][2] = {{"web", "web servers (agent-1, agent-2)"},
                                                 {"batch", "batch workers (agent-3)"}};
    if (index == std::size(k_groups)) {
      std::cout << "groups created: web, batch\n";
      return start_agents();
    }
    qf::v1::Group group;
    group.set_id(k_groups[index][0]);
    group.set_name(k_groups[index][0]);
    group.set_description(k_groups[index][1]);
    coordinator_->create_group(group, qf::Actor{"qf-embedded", {}}, [this, index](qf::CatalogResult<qf::v1::Group> r) {
      if (!r) return fail(fmt::format("creating group failed: {}", r.error.message()));
      create_groups(index + 1);
    });
  }

  void start_agents() {
    for (auto& agent : agents_) {
      agent->dispatcher->start();
      agent->engine->start();
    }
    connect_deadline_ = std::chrono::steady_clock::now() + k_connect_timeout;
    wait_for_agents();
  }

  /// Tasks are created once every agent is registered, so the first routed fires find them.
  void wait_for_agents() {
    if (stopping_) return;
    const bool all_connected =
        std::all_of(agents_.begin(), agents_.end(), [](const auto& a) { return a->dispatcher->connected(); });
    if (all_connected) {
      std::vector<std::string> names;
      for (const auto& agent : agents_) names.push_back(fmt::format("{} (group {})", agent->id, agent->group));
      std::cout << fmt::format("{} agents online: {}\n", agents_.size(), fmt::join(names, ", "));
      return create_tasks(sample_tasks(), 0);
    }
    if (std::chrono::steady_clock::now() > connect_deadline_)
      return fail(fmt::format("the agents did not register with the coordinator within {} s",
                              k_connect_timeout.count()));
    connect_timer_.expires_after(std::chrono::milliseconds{50});
    connect_timer_.async_wait([this](const qf::error_code& e) {
      if (!e) wait_for_agents();
    });
  }

  void create_tasks(std::vector<qf::v1::Task> tasks, std::size_t index) {
    if (stopping_) return;
    if (index == tasks.size()) return run();
    auto task = tasks[index];
    coordinator_->create_task(task, qf::Actor{"qf-embedded", {}},
                              [this, tasks = std::move(tasks), index](qf::CatalogResult<qf::v1::Task> r) mutable {
                                if (!r) return fail(fmt::format("creating task failed: {}", r.error.message()));
                                const auto& t = r.value;
                                std::cout << fmt::format("task created: {:<10} placement {:<7} every {} s  {}\n",
                                                         t.name(), placement_name(t), t.schedule().interval_seconds(),
                                                         t.description());
                                task_names_.push_back({t.id(), t.name(), placement_name(t)});
                                create_tasks(std::move(tasks), index + 1);
                              });
  }

  void run() {
    std::cout << "\n"
              << (seconds_ > 0 ? fmt::format("running for {} s (Ctrl-C stops earlier).", seconds_)
                               : std::string("running until Ctrl-C (SIGINT) or SIGTERM."))
              << " Each finished run, as the coordinator stores it:\n"
              << fmt::format("{:<8}  {:<26} {:<8} {:<9} {:>8}  {}\n", "time", "task", "agent", "status", "duration",
                             "first line of output")
              << std::flush;
    // A manual run of `report` with a parameter, a few seconds in.
    const int trigger_after = seconds_ > 0 ? std::clamp(seconds_ / 2, 1, 4) : 4;
    trigger_timer_.expires_after(std::chrono::seconds{trigger_after});
    trigger_timer_.async_wait([this](const qf::error_code& e) {
      if (!e) trigger_report();
    });
    if (seconds_ > 0) {
      run_timer_.expires_after(std::chrono::seconds{seconds_});
      run_timer_.async_wait([this](const qf::error_code& e) {
        if (e) return;
        std::cout << fmt::format("\n{} s are up: stopping\n", seconds_);
        stop();
      });
    }
  }

  void trigger_report() {
    if (stopping_) return;
    coordinator_->trigger("report", {{"region", "us-east"}}, qf::Actor{"qf-embedded", {}}, [](qf::TriggerResult r) {
      if (r.ec) {
        std::cout << "manual trigger of report failed: " << r.error.message() << "\n";
        return;
      }
      std::cout << fmt::format("manual trigger: report with region=us-east, execution {}\n",
                               fmt::join(r.value, ", "));
    });
  }

  void on_run(const qf::v1::Execution& run) {
    // Only final states, once each: the same record may be stored again when re-sent.
    if (!qf::is_final(run.status()) || !printed_runs_.insert(run.execution_id()).second) return;
    print_run(run);
  }

  /// Agents say goodbye, engines end their runs, then the coordinator; then the summary.
  void stop() {
    if (stopping_) return;
    stopping_ = true;
    run_timer_.cancel();
    trigger_timer_.cancel();
    connect_timer_.cancel();
    coordinator_->scheduler().stop();  // no new fires while the agents leave
    for (auto& agent : agents_) agent->dispatcher->stop();
    auto engines_left = std::make_shared<std::size_t>(agents_.size());
    for (auto& agent : agents_) {
      agent->engine->stop(k_shutdown_grace, [this, engines_left] {
        if (--*engines_left > 0) return;
        coordinator_->stop();
        store_->flush();  // the summary reads what was written up to now
        if (exit_code_ == 0) return print_summary();
        io_.stop();
      });
    }
  }

  void fail(std::string message) {
    std::cerr << "qf-embedded: " << message << "\n";
    exit_code_ = 1;
    if (!stopping_) stop();
  }

  struct TaskName {
    std::string id;
    std::string name;
    std::string placement;
  };

  void print_summary() {
    struct Figures {
      qf::v1::Stats total;
      std::vector<qf::v1::Stats> by_task;
      std::vector<qf::v1::Stats> by_agent;
    };
    auto figures = std::make_shared<Figures>();
    qf::v1::StatsQuery query;
    query.set_from_unix_ms(started_unix_ms_ - 60'000);
    query.set_to_unix_ms(now_unix_ms() + 60'000);
    std::vector<std::string> task_ids;
    for (const auto& t : task_names_) task_ids.push_back(t.id);
    std::vector<std::string> agent_ids;
    for (const auto& a : agents_) agent_ids.push_back(a->id);
    store_->read(
        [figures, query, task_ids, agent_ids](qf::StoreTransaction& tx, qf::error_code&) {
          figures->total = tx.stats(query).summary();
          for (const auto& id : task_ids) {
            auto per_task = query;
            per_task.set_task_id(id);
            figures->by_task.push_back(tx.stats(per_task).summary());
          }
          for (const auto& id : agent_ids) {
            auto per_agent = query;
            per_agent.set_agent_id(id);
            figures->by_agent.push_back(tx.stats(per_agent).summary());
          }
        },
        [this, figures](qf::error_code ec) {
          if (ec) {
            std::cerr << "qf-embedded: reading the summary from the coordinator store failed: " << ec.message() << "\n";
            exit_code_ = 1;
          } else {
            print_figures(figures->total, figures->by_task, figures->by_agent);
          }
          io_.stop();
        });
  }

  void print_figures(const qf::v1::Stats& total, const std::vector<qf::v1::Stats>& by_task,
                     const std::vector<qf::v1::Stats>& by_agent) {
    std::cout << fmt::format("\nSummary, as the coordinator stored it: {} run(s) ran; {}\n", total.total(), status_counts(total));
    for (std::size_t i = 0; i < by_task.size() && i < task_names_.size(); ++i)
      std::cout << fmt::format("  task  {:<10} placement {:<7} {:>3} ran: {}\n", task_names_[i].name,
                               task_names_[i].placement, by_task[i].total(), status_counts(by_task[i]));
    for (std::size_t i = 0; i < by_agent.size() && i < agents_.size(); ++i)
      std::cout << fmt::format("  agent {:<10} group {:<11} {:>3} ran: {}\n", agents_[i]->id, agents_[i]->group,
                               by_agent[i].total(), status_counts(by_agent[i]));
    const std::string qfctl = qfctl_command();
    std::cout << fmt::format(
        "\nThe data stays in {dir}:\n"
        "  {db:<16} the coordinator's catalog and run history (SQLite)\n"
        "  agent-N.db       each agent's own record of what it ran (also runs not yet sent)\n"
        "Look at what an agent ran, and at the output of its last reindex shard:\n"
        "  {qfctl} local --store {dir}/agent-1.db history\n"
        "  {qfctl} local --store {dir}/agent-1.db logs --task-id reindex --last\n",
        fmt::arg("dir", data_dir_.string()), fmt::arg("db", k_coordinator_db), fmt::arg("qfctl", qfctl));
  }

  asio::io_context& io_;
  fs::path data_dir_;
  int seconds_;
  std::int64_t started_unix_ms_ = 0;
  // Destroyed in reverse: agents first, then the coordinator, the network, the store.
  std::unique_ptr<qf::Store> store_;
  qf::InprocNetwork network_;
  std::unique_ptr<qf::Coordinator> coordinator_;
  std::vector<std::unique_ptr<DemoAgent>> agents_;
  asio::signal_set signals_;
  asio::steady_timer run_timer_;
  asio::steady_timer trigger_timer_;
  asio::steady_timer connect_timer_;
  std::chrono::steady_clock::time_point connect_deadline_;
  std::vector<TaskName> task_names_;
  std::set<std::string> printed_runs_;
  bool stopping_ = false;
  int exit_code_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"qf-embedded: a coordinator and three agents in one process, running sample tasks"};
  int seconds = 20;
  std::string data_dir_option;
  std::string log_level = "warn";
  app.add_option("--seconds", seconds, "how long to run; 0 = until Ctrl-C (SIGINT) or SIGTERM")
      ->check(CLI::Range(0, 86'400))
      ->capture_default_str();
  app.add_option("--data-dir", data_dir_option,
                 "where the stores go (earlier stores there are replaced); default: a new directory under "
                 "$TMPDIR or /tmp");
  app.add_option("--log-level", log_level,
                 "library log level: trace, debug, info (agents online, sessions), warn, error")
      ->capture_default_str();
  app.set_version_flag("--version", qf::version);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : k_exit_usage;
  }
  if (!qf::set_log_level(log_level)) {
    std::cerr << "qf-embedded: --log-level: \"" << log_level << "\" is not one of trace, debug, info, warn, error\n";
    return k_exit_usage;
  }

  std::cout << std::unitbuf;  // each line at once, in order with the library's log on stderr
  fs::path data_dir;
  try {
    data_dir = prepare_data_dir(data_dir_option);
  } catch (const std::exception& e) {
    std::cerr << "qf-embedded: --data-dir: " << e.what() << "\n";
    return 1;
  }
  std::cout << fmt::format("qf-embedded {}: a coordinator and 3 agents in one process\n", qf::version)
            << fmt::format("data directory: {} (coordinator.db, agent-1.db .. agent-3.db)\n", data_dir.string());

  asio::io_context io;
  EmbeddedCluster cluster(io, data_dir, seconds);
  if (!cluster.start()) return 1;
  io.run();
  return cluster.exit_code();
}
