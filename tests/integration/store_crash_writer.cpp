// SPDX-License-Identifier: Apache-2.0
// Helper of the LocalStore crash test: records executions as fast as the store commits them
// and prints each execution id (one line, unbuffered) only after its completion succeeded.
// Usage: quartzflow_store_crash_writer <store file> <stats time zone> [chains]
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

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

}  // namespace

int main(int argc, char** argv) {
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
