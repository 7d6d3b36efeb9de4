// SPDX-License-Identifier: Apache-2.0
// Helper of the LocalStore crash test: records executions as fast as the store commits them
// and prints each execution id (one line, unbuffered) only after its completion succeeded.
// Usage: quartzflow_store_crash_writer <store file> <stats time zone> [chains]
//        quartzflow_store_crash_writer <store file> config
// The second form saves configuration versions one after another instead (every tenth one
// whole, the others as deltas that change every task) and prints each version once saved.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <fmt/format.h>

#include <quartzflow/local_store.hpp>

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;

namespace {

constexpr std::int64_t k_first_scheduled_ms = 1772323200000;  // 2026-03-01T00:00:00Z
constexpr std::int64_t k_fire_period_ms = 600'000;            // one fire every 10 minutes
constexpr const char* k_task_id = "crash";

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "store_crash_writer: %s\n", why.c_str());
  std::_Exit(2);
}

void print_line(const std::string& id) {
  const std::string line = id + "\n";
  // One write(2) per line: a pipe delivers lines this short whole, even across kill -9.
  if (::write(STDOUT_FILENO, line.data(), line.size()) != static_cast<ssize_t>(line.size())) std::_Exit(3);
}

/// The fire number n, in the state `status`; what it becomes is decided by n.
v1::Execution fire(std::int64_t n, v1::ExecutionStatus status) {
  v1::Execution r;
  const std::int64_t scheduled = k_first_scheduled_ms + n * k_fire_period_ms;
  r.set_execution_id(fmt::format("{}:{}:agent-1", k_task_id, scheduled));
  r.set_task_id(k_task_id);
  r.set_task_name("crash test");
  r.set_agent_id("agent-1");
  r.set_trigger(v1::TRIGGER_TYPE_SCHEDULED);
  r.set_scheduled_unix_ms(scheduled);
  r.set_attempt(1);
  r.set_root_execution_id(r.execution_id());
  r.set_status(status);
  r.set_updated_unix_ms(scheduled);
  const bool ran = status == v1::EXECUTION_STATUS_RUNNING || status == v1::EXECUTION_STATUS_SUCCESS ||
                   status == v1::EXECUTION_STATUS_FAILURE;
  if (ran) r.set_started_unix_ms(scheduled + 1000 + (n % 5) * 100);
  if (ran && status != v1::EXECUTION_STATUS_RUNNING) {
    r.set_duration_ms(100 + n % 1000);
    r.set_ended_unix_ms(r.started_unix_ms() + r.duration_ms());
    r.set_exit_code(status == v1::EXECUTION_STATUS_SUCCESS ? 0 : 1);
    r.set_output(fmt::format("output of fire {}\n", n));
  }
  if (status == v1::EXECUTION_STATUS_SKIPPED) r.set_skip_reason(v1::SKIP_REASON_OVERLAP);
  if (status == v1::EXECUTION_STATUS_MISSED) r.set_skip_reason(v1::SKIP_REASON_MISFIRE);
  return r;
}

/// The life of fire n: the states it is recorded in, in order; the last one is final and
/// some final states are recorded twice (a repeated report must not be counted twice).
std::vector<v1::ExecutionStatus> life_of(std::int64_t n) {
  switch (n % 10) {
    case 0: return {v1::EXECUTION_STATUS_SKIPPED};
    case 1: return {v1::EXECUTION_STATUS_MISSED};
    case 2: return {v1::EXECUTION_STATUS_PENDING, v1::EXECUTION_STATUS_CANCELLED};
    default: break;
  }
  const auto final_status = n % 4 == 0 ? v1::EXECUTION_STATUS_FAILURE : v1::EXECUTION_STATUS_SUCCESS;
  if (n % 7 == 0) return {v1::EXECUTION_STATUS_RUNNING, final_status, final_status};
  return {v1::EXECUTION_STATUS_PENDING, v1::EXECUTION_STATUS_RUNNING, final_status};
}

/// One chain of writes: fire after fire, each state after the previous one committed.
class Chain {
 public:
  Chain(qf::LocalStore& store, std::int64_t& next_fire) : store_(store), next_fire_(next_fire) {}

  void start_next_fire() {
    n_ = next_fire_++;
    states_ = life_of(n_);
    step_ = 0;
    record_step();
  }

 private:
  void record_step() {
    auto record = fire(n_, states_[step_]);
    const bool last = step_ + 1 == states_.size();
    std::string log = last ? fmt::format("full log of fire {}\n", n_) : std::string();
    store_.async_record(std::move(record), std::move(log), [this, last](qf::error_code ec) {
      if (ec) die("write failed: " + ec.message());
      if (!last) {
        ++step_;
        record_step();
        return;
      }
      print_line(fire(n_, states_.back()).execution_id());
      start_next_fire();
    });
  }

  qf::LocalStore& store_;
  std::int64_t& next_fire_;
  std::int64_t n_ = 0;
  std::vector<v1::ExecutionStatus> states_;
  std::size_t step_ = 0;
};

constexpr int k_config_tasks = 300;

/// The tasks of configuration version v: every one carries v as its revision, and the task
/// "odd" exists in odd versions only, so that a mix of two versions shows.
v1::Task config_task(const std::string& id, std::uint64_t version) {
  v1::Task task;
  task.set_id(id);
  task.set_name(id);
  task.set_enabled(true);
  task.set_revision(static_cast<std::int64_t>(version));
  task.mutable_shell()->set_script(fmt::format("echo {} {}", id, version));
  task.mutable_schedule()->set_cron("0 0 * * *");
  return task;
}

void save_config_version(qf::LocalStore& store, std::uint64_t version) {
  auto done = [&store, version](qf::error_code ec) {
    if (ec) die("config save failed: " + ec.message());
    print_line(std::to_string(version));
    save_config_version(store, version + 1);
  };
  std::vector<v1::Task> tasks;
  for (int i = 0; i < k_config_tasks; ++i) tasks.push_back(config_task(fmt::format("task-{}", i), version));
  if (version % 10 == 0) {
    if (version % 2 == 1) tasks.push_back(config_task("odd", version));
    return store.async_save_config(qf::CachedConfig{std::move(tasks), version}, done);
  }
  std::vector<std::string> removed;
  if (version % 2 == 1) {
    tasks.push_back(config_task("odd", version));
  } else {
    removed.push_back("odd");
  }
  store.async_save_config_delta(qf::CachedConfigDelta{std::move(tasks), std::move(removed), version}, done);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[2]) == "config") {
    boost::asio::io_context io;
    qf::LocalStoreOptions options;
    options.path = argv[1];
    qf::error_code ec;
    std::string detail;
    auto store = qf::LocalStore::open(io.get_executor(), options, ec, &detail);
    if (!store) die("open: " + ec.message() + ": " + detail);
    const auto cached = store->cached_config(ec);
    if (ec) die("cached_config: " + ec.message());
    save_config_version(*store, cached.version + 1);
    auto keep_running = boost::asio::make_work_guard(io);
    io.run();  // until killed
    return 0;
  }
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s <store file> <stats time zone> [chains]\n", argv[0]);
    return 1;
  }
  const int chains = argc > 3 ? std::atoi(argv[3]) : 32;
  boost::asio::io_context io;
  qf::LocalStoreOptions options;
  options.path = argv[1];
  options.stats_time_zone = argv[2];
  options.full_logs_per_task = 5;
  qf::error_code ec;
  std::string detail;
  auto store = qf::LocalStore::open(io.get_executor(), options, ec, &detail);
  if (!store) die("open: " + ec.message() + ": " + detail);
  // Resume after the latest fire a previous (killed) writer committed.
  const auto last = store->last_scheduled(k_task_id, ec);
  if (ec) die("last_scheduled: " + ec.message());
  std::int64_t next_fire = 0;
  if (last) {
    const auto last_ms = std::chrono::duration_cast<std::chrono::milliseconds>(last->time_since_epoch()).count();
    next_fire = (last_ms - k_first_scheduled_ms) / k_fire_period_ms + 1;
  }
  std::vector<std::unique_ptr<Chain>> running;
  for (int i = 0; i < chains; ++i) running.push_back(std::make_unique<Chain>(*store, next_fire));
  for (auto& chain : running) chain->start_next_fire();
  auto keep_running = boost::asio::make_work_guard(io);
  io.run();  // until killed
  return 0;
}
