// SPDX-License-Identifier: Apache-2.0
// The coordinator's admin HTTP API under load: a Coordinator on a SQLite file store (or
// `--store postgres`: PostgreSQL, bench_postgres.hpp) and its AdminServer (HTTP/1.1,
// 127.0.0.1) on one io_context run by one thread, as in production; keep-alive Beast clients
// on another thread with their own io_context. Phases (each 1 s of warm-up, then measured):
// GET /api/v1/tasks?page_size=20, GET /api/v1/tasks/<random id>, GET
// /api/v1/executions?task_id=<random id>&page_size=20 (over --executions records),
// GET /healthz (the HTTP floor: no authentication, no store). Prints requests/s, latency
// p50/p99/max, errors and the CPU of each thread, so the reader sees what was the limit.
// `--help` lists the flags; QF_BENCH_VERBOSE=1 (or --verbose) prints progress to stderr.
#include <pthread.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <CLI/CLI.hpp>
#include <google/protobuf/util/json_util.h>

#include <quartzflow/admin.hpp>
#include <quartzflow/auth.hpp>
#include <quartzflow/coordinator.hpp>
#include <quartzflow/log.hpp>
#include <quartzflow/store.hpp>
#include <quartzflow/v1/admin.pb.h>

#include "bench_postgres.hpp"
#include "bench_support.hpp"

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace fs = std::filesystem;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* k_group = "bench";
constexpr const char* k_plugin = "bench.noop";
/// Fires once a year (1 January, 00:00): list and get compute a real next fire, while no
/// fire (and no SKIPPED record for want of agents) disturbs the measurement.
constexpr const char* k_cron = "0 0 1 1 *";
constexpr std::uint32_t k_setup_pbkdf2_iterations = 1000;
constexpr const char* k_admin_user = "bench-admin";
constexpr const char* k_admin_password = "load-test-secret-0426";
constexpr std::size_t k_creates_in_flight = 64;
constexpr auto k_create_budget = 120s;
constexpr auto k_setup_step_budget = 30s;
constexpr auto k_drain_budget = 15s;      // requests in flight at the end of a phase
constexpr auto k_request_timeout = 10s;   // one request and its response, client side
constexpr auto k_reconnect_delay = 50ms;  // after an I/O error, before connecting again
constexpr double k_target_per_s = 20'000;  // issue 6, GET task list / get, 2 cores
constexpr double k_saturated = 0.9;        // of a core: this thread was the limit

using quartzflow::bench::progress;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

// --- CPU per thread -----------------------------------------------------------------------

/// CPU seconds per thread name (/proc/self/task/*/stat, clock-tick resolution) and of the
/// whole process (getrusage), at one instant.
struct CpuSample {
  std::map<std::string, double> by_thread;
  double process_s = 0;
  Clock::time_point at;
};

CpuSample sample_cpu() {
  CpuSample sample;
  sample.at = Clock::now();
  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc/self/task", ec)) {
    std::ifstream in(entry.path() / "stat");
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto open = stat.find('(');
    const auto close = stat.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close < open) continue;
    const std::string name = stat.substr(open + 1, close - open - 1);
    // After "(comm) ": state is field 3 of proc(5); utime and stime are fields 14 and 15.
    std::istringstream fields(stat.substr(close + 2));
    std::vector<std::string> words;
    for (std::string word; fields >> word && words.size() < 13;) words.push_back(word);
    if (words.size() < 13) continue;
    sample.by_thread[name] += (std::stod(words[11]) + std::stod(words[12])) / tick;
  }
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  sample.process_s = static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
                     static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
  return sample;
}

/// CPU used between two samples as a fraction of one core, per thread name.
std::map<std::string, double> cores_used(const CpuSample& before, const CpuSample& after) {
  const double wall = std::chrono::duration<double>(after.at - before.at).count();
  std::map<std::string, double> out;
  if (wall <= 0) return out;
  for (const auto& [name, seconds] : after.by_thread) {
    auto it = before.by_thread.find(name);
    out[name] = (seconds - (it == before.by_thread.end() ? 0 : it->second)) / wall;
  }
  out["(process)"] = (after.process_s - before.process_s) / wall;
  return out;
}

constexpr const char* k_server_thread = "bench-server";  // runs the coordinator's io_context
constexpr const char* k_client_thread = "bench-client";  // runs the load generator's

// --- options ------------------------------------------------------------------------------

struct BenchOptions {
  std::string store = "sqlite";
  std::size_t executions = 10'000;
  std::size_t tasks = 1000;
  std::size_t connections = 50;
  double seconds = 10;
  double warm_up = 1;
  std::vector<std::string> phases{"list", "get", "executions", "health"};
};

// --- the server side ----------------------------------------------------------------------

/// The coordinator and its admin API on one io_context; the thread that calls `run_until`
/// (setup and teardown) or `serve` is the only one that runs it.
class Server {
 public:
  asio::io_context io;
  fs::path dir;
  std::unique_ptr<qf::Store> store;
  std::unique_ptr<qf::Authenticator> auth;
  std::unique_ptr<qf::Coordinator> coordinator;
  std::unique_ptr<qf::AdminServer> admin;
  std::string token;  ///< the API token's secret
  double create_s = 0;
  std::string store_description;

  Server() {
    dir = quartzflow::bench::make_temp_dir("qf-bench-admin");
  }

  ~Server() {
    admin.reset();
    coordinator.reset();
    auth.reset();
    store.reset();
    std::error_code ignored;
    fs::remove_all(dir, ignored);
  }

  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
    return quartzflow::bench::run_io_until(io, done, timeout);
  }

  /// Store, coordinator (started, then the admin API made ready), admin user and token,
  /// `tasks` tasks. An empty string, or what failed.
  std::string set_up(std::size_t tasks, bool postgres, std::size_t executions) {
    qf::error_code ec;
    std::string detail;
    if (postgres) {
      store = qf::bench::open_bench_postgres_store(io.get_executor(), detail);
      store_description = "PostgreSQL store (" + qf::bench::BenchPostgres::instance().describe() + ")";
    } else {
      store = qf::open_sqlite_store(io.get_executor(), qf::SqliteStoreOptions{(dir / "coordinator.db").string()}, ec,
                                    &detail);
      store_description = "SQLite file store in " + dir.string();
    }
    if (!store) return "cannot open the store: " + detail;
    qf::AuthOptions auth_options;
    auth_options.pbkdf2_iterations = k_setup_pbkdf2_iterations;
    auth = std::make_unique<qf::Authenticator>(*store, io.get_executor(), auth_options);
    coordinator = std::make_unique<qf::Coordinator>(io.get_executor(), *store);
    qf::AdminServerOptions admin_options;
    admin_options.host = "127.0.0.1";
    admin_options.port = 0;
    admin = std::make_unique<qf::AdminServer>(io.get_executor(), *coordinator, *auth, admin_options);
    if (admin->listen(detail)) return "the admin API cannot listen: " + detail;

    std::optional<qf::error_code> started;
    coordinator->start([&](qf::error_code start_ec) { started = start_ec; });
    if (!run_until([&] { return started.has_value(); }, k_setup_step_budget) || *started)
      return "the coordinator did not start";
    admin->set_ready(true);

    if (auto error = make_token(); !error.empty()) return error;
    if (auto error = make_group(); !error.empty()) return error;
    const auto start = Clock::now();
    if (auto error = create_tasks(tasks); !error.empty()) return error;
    create_s = seconds_since(start);
    return write_executions(tasks, executions);
  }

  void tear_down() {
    if (admin) admin->stop();
    if (coordinator) coordinator->stop();
    run_until([] { return false; }, 200ms);
    if (store) store->flush();
    io.poll();
  }

 private:
  std::string make_token() {
    std::optional<qf::ApiResult<v1::User>> user;
    auth->ensure_admin(k_admin_user, k_admin_password, [&](qf::ApiResult<v1::User> r) { user = std::move(r); });
    if (!run_until([&] { return user.has_value(); }, k_setup_step_budget)) return "ensure_admin did not answer";
    if (!*user) return "ensure_admin failed: " + user->failure().message;
    // The caller of create_token as the API would see the admin after a login.
    qf::Principal caller;
    caller.user = user->value();
    caller.role = v1::ROLE_ADMIN;
    caller.kind = v1::ACTOR_KIND_USER;
    v1::CreateApiTokenRequest request;
    request.set_name("qf-bench-admin");
    request.set_role(v1::ROLE_VIEWER);  // the phases only read
    std::optional<qf::ApiResult<v1::CreateApiTokenResponse>> created;
    qf::Actor actor;
    actor.name = k_admin_user;
    actor.address = "127.0.0.1";
    actor.kind = v1::ACTOR_KIND_USER;
    auth->create_token(caller, request, actor,
                       [&](qf::ApiResult<v1::CreateApiTokenResponse> r) { created = std::move(r); });
    if (!run_until([&] { return created.has_value(); }, k_setup_step_budget)) return "create_token did not answer";
    if (!*created) return "create_token failed: " + created->failure().message;
    token = created->value().secret();
    return {};
  }

  std::string make_group() {
    v1::Group group;
    group.set_id(k_group);
    group.set_name(k_group);
    std::optional<qf::CatalogResult<v1::Group>> created;
    coordinator->create_group(group, qf::Actor{"bench", ""},
                              [&](qf::CatalogResult<v1::Group> r) { created = std::move(r); });
    if (!run_until([&] { return created.has_value(); }, k_setup_step_budget)) return "create_group did not answer";
    if (!*created) return "create_group failed: " + created->error.message();
    return {};
  }

  /// `count` final records of the tasks, straight into the store (history for the
  /// executions phase), in transactions of 1,000.
  std::string write_executions(std::size_t tasks, std::size_t count) {
    constexpr std::int64_t k_start_ms = 1'767'225'600'000;  // 2026-01-01T00:00:00Z
    for (std::size_t first = 0; first < count; first += 1000) {
      std::vector<v1::Execution> chunk;
      for (std::size_t i = first; i < std::min(count, first + 1000); ++i) {
        v1::Execution e;
        const auto task = "t" + std::to_string(i % tasks);
        const auto scheduled = k_start_ms + static_cast<std::int64_t>(i / tasks) * 60'000;
        e.set_execution_id(task + ":" + std::to_string(scheduled) + ":agent-" + std::to_string(i % 4));
        e.set_task_id(task);
        e.set_task_name("bench-task-" + task);
        e.set_agent_id("agent-" + std::to_string(i % 4));
        e.set_group_id(k_group);
        e.set_trigger(v1::TRIGGER_TYPE_SCHEDULED);
        e.set_status(v1::EXECUTION_STATUS_SUCCESS);
        e.set_scheduled_unix_ms(scheduled);
        e.set_started_unix_ms(scheduled + 2);
        e.set_ended_unix_ms(scheduled + 40);
        e.set_duration_ms(38);
        e.set_attempt(1);
        e.set_exit_code(0);
        e.set_output("done\n");
        chunk.push_back(std::move(e));
      }
      std::optional<qf::error_code> written;
      store->transact(
          [chunk = std::move(chunk)](qf::StoreTransaction& tx, qf::error_code&) {
            for (const auto& e : chunk) tx.upsert_execution(e);
          },
          [&](qf::error_code write_ec) { written = write_ec; });
      if (!run_until([&] { return written.has_value(); }, k_setup_step_budget)) return "writing executions timed out";
      if (*written) return "writing executions failed: " + written->message();
    }
    return {};
  }

  /// Tasks t0..t<count-1> through the coordinator, several calls in flight.
  std::string create_tasks(std::size_t count) {
    std::size_t next = 0;
    std::size_t in_flight = 0;
    std::size_t created = 0;
    std::string error;
    std::function<void()> launch = [&] {
      while (error.empty() && in_flight < k_creates_in_flight && next < count) {
        v1::Task task;
        task.set_id("t" + std::to_string(next++));
        task.set_name("bench-task-" + task.id());
        task.set_description("created by qf-bench-admin");
        task.set_enabled(true);
        task.add_group_ids(k_group);
        task.mutable_plugin()->set_name(k_plugin);
        task.mutable_placement()->set_mode(v1::PLACEMENT_MODE_ONE);
        task.mutable_schedule()->set_cron(k_cron);
        ++in_flight;
        coordinator->create_task(std::move(task), qf::Actor{"bench", ""}, [&](qf::CatalogResult<v1::Task> r) {
          --in_flight;
          if (!r) {
            if (error.empty()) error = "create_task failed: " + r.error.message();
            return;
          }
          ++created;
          launch();
        });
      }
    };
    launch();
    const bool finished = run_until([&] { return !error.empty() || created == count; }, k_create_budget);
    // The calls still in flight finish before the locals they reference go away.
    if (error.empty() && !finished) error = "creating the tasks took too long: " + std::to_string(created) + " of " +
                                            std::to_string(count) + " created";
    next = count;
    run_until([&] { return in_flight == 0; }, k_create_budget);
    return error;
  }
};

// --- the load generator -------------------------------------------------------------------

enum class Phase { list, get, executions, health };

struct PhaseSpec {
  Phase phase;
  const char* key;    ///< the --phases name
  const char* label;  ///< what the table calls it
  bool authenticated;
};

constexpr PhaseSpec k_phases[] = {
    {Phase::list, "list", "GET /api/v1/tasks?page_size=20", true},
    {Phase::get, "get", "GET /api/v1/tasks/<random id>", true},
    {Phase::executions, "executions", "GET /api/v1/executions?task_id=<random id>&page_size=20", true},
    {Phase::health, "health", "GET /healthz", false},
};

/// The server's own view of the API requests (from /metrics): AdminApi's route-to-reply
/// time and its store reads (queued to completion back on the io_context).
struct ServerMetrics {
  double request_sum_s = 0;
  double request_count = 0;
  double store_sum_s = 0;
  double store_count = 0;
  bool ok = false;
};

struct PhaseResult {
  const PhaseSpec* spec = nullptr;
  double seconds = 0;                   ///< the measured window
  std::uint64_t responses = 0;          ///< in the window
  std::uint64_t status_errors = 0;      ///< in the window: not 200, or not {"code":0,...}
  std::uint64_t io_errors = 0;          ///< in the window: connection failures, timeouts
  std::uint64_t errors_outside = 0;     ///< during warm-up and drain
  std::uint64_t body_bytes = 0;         ///< in the window
  std::vector<std::uint32_t> latency_us;  ///< in the window, sorted at the end
  std::map<std::string, double> cores;  ///< CPU per thread over the window, in cores
  ServerMetrics metrics_delta;
  std::string first_error;
};

double percentile_ms(const std::vector<std::uint32_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto index = std::min(sorted.size() - 1, static_cast<std::size_t>(static_cast<double>(sorted.size()) * p));
  return sorted[index] / 1000.0;
}

double metric_value(const std::string& text, std::string_view name) {
  const std::string prefix = std::string(name) + " ";
  for (std::size_t at = 0; at < text.size();) {
    const auto end = text.find('\n', at);
    const std::string_view line(text.data() + at, (end == std::string::npos ? text.size() : end) - at);
    if (line.substr(0, prefix.size()) == prefix)
      return std::strtod(std::string(line.substr(prefix.size())).c_str(), nullptr);
    if (end == std::string::npos) break;
    at = end + 1;
  }
  return 0;
}

/// Keep-alive connections, one request in flight on each, all on one io_context that the
/// thread calling `run_phase` runs.
class LoadGenerator {
 public:
  LoadGenerator(tcp::endpoint server, std::string token, std::size_t tasks)
      : server_(server), authorization_("Bearer " + std::move(token)), task_ids_(0, tasks - 1) {}

  /// Opens `count` connections (blocking); what failed, or empty.
  std::string connect(std::size_t count) {
    for (std::size_t i = 0; i < count; ++i) {
      auto c = std::make_unique<Connection>(io_);
      beast::error_code ec;
      c->stream.socket().connect(server_, ec);
      if (ec) return "connection " + std::to_string(i) + ": " + ec.message();
      c->stream.socket().set_option(tcp::no_delay(true), ec);
      connections_.push_back(std::move(c));
    }
    return {};
  }

  /// A blocking request on a connection of its own (setup checks, /metrics).
  http::response<http::string_body> fetch(const std::string& target, bool authenticated, beast::error_code& ec) {
    http::response<http::string_body> response;
    beast::tcp_stream stream(io_);
    stream.socket().connect(server_, ec);
    if (ec) return response;
    http::request<http::empty_body> request(http::verb::get, target, 11);
    request.set(http::field::host, "127.0.0.1");
    request.set(http::field::user_agent, "qf-bench-admin");
    if (authenticated) request.set(http::field::authorization, authorization_);
    request.keep_alive(false);
    http::write(stream, request, ec);
    beast::flat_buffer buffer;
    if (!ec) http::read(stream, buffer, response, ec);
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    return response;
  }

  ServerMetrics metrics() {
    beast::error_code ec;
    const auto response = fetch("/metrics", false, ec);
    ServerMetrics m;
    if (ec || response.result_int() != 200) return m;
    const auto& text = response.body();
    m.request_sum_s = metric_value(text, "qf_http_request_duration_seconds_sum");
    m.request_count = metric_value(text, "qf_http_request_duration_seconds_count");
    m.store_sum_s = metric_value(text, "qf_store_latency_seconds_sum");
    m.store_count = metric_value(text, "qf_store_latency_seconds_count");
    m.ok = true;
    return m;
  }

  PhaseResult run_phase(const PhaseSpec& spec, std::chrono::duration<double> warm_up,
                        std::chrono::duration<double> measure) {
    PhaseResult result;
    result.spec = &spec;
    result.latency_us.reserve(static_cast<std::size_t>(measure.count() * 50'000));
    result_ = &result;
    spec_ = &spec;
    recording_ = false;
    issuing_ = true;
    const auto before_metrics = metrics();
    for (auto& c : connections_) {
      ++in_flight_;
      send(*c);
    }
    run_for(std::chrono::duration_cast<std::chrono::milliseconds>(warm_up));
    const auto cpu_before = sample_cpu();
    const auto window_start = Clock::now();
    recording_ = true;
    run_for(std::chrono::duration_cast<std::chrono::milliseconds>(measure));
    recording_ = false;
    result.seconds = seconds_since(window_start);
    const auto cpu_after = sample_cpu();
    issuing_ = false;
    if (!run_until([this] { return in_flight_ == 0; }, k_drain_budget)) {
      progress("  %zu requests still in flight after the phase: closing their connections", in_flight_);
      for (auto& c : connections_) {
        beast::error_code ignored;
        c->stream.socket().close(ignored);
      }
      run_until([this] { return in_flight_ == 0; }, k_drain_budget);
    }
    const auto after_metrics = metrics();
    if (before_metrics.ok && after_metrics.ok) {
      result.metrics_delta.request_sum_s = after_metrics.request_sum_s - before_metrics.request_sum_s;
      result.metrics_delta.request_count = after_metrics.request_count - before_metrics.request_count;
      result.metrics_delta.store_sum_s = after_metrics.store_sum_s - before_metrics.store_sum_s;
      result.metrics_delta.store_count = after_metrics.store_count - before_metrics.store_count;
      result.metrics_delta.ok = true;
    }
    result.cores = cores_used(cpu_before, cpu_after);
    std::sort(result.latency_us.begin(), result.latency_us.end());
    result_ = nullptr;
    return result;
  }

  void close() {
    for (auto& c : connections_) {
      beast::error_code ignored;
      c->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
      c->stream.socket().close(ignored);
    }
    io_.poll();
    connections_.clear();
  }

  std::uint64_t responses_total() const noexcept { return responses_total_; }

 private:
  struct Connection {
    explicit Connection(asio::io_context& io) : stream(io), retry(io) {}
    beast::tcp_stream stream;
    asio::steady_timer retry;
    beast::flat_buffer buffer;
    http::request<http::empty_body> request;
    http::response<http::string_body> response;
    Clock::time_point sent_at;
  };

  void run_for(std::chrono::milliseconds span) {
    run_until([] { return false; }, span);
  }

  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
    return quartzflow::bench::run_io_until(io_, done, timeout);
  }

  std::string target() {
    switch (spec_->phase) {
      case Phase::list: return "/api/v1/tasks?page_size=20";
      case Phase::get: return "/api/v1/tasks/t" + std::to_string(task_ids_(random_));
      case Phase::executions: return "/api/v1/executions?page_size=20&task_id=t" + std::to_string(task_ids_(random_));
      case Phase::health: return "/healthz";
    }
    return "/";
  }

  /// False (and the connection leaves the phase) once the phase stops issuing.
  bool keep_going() {
    if (issuing_) return true;
    --in_flight_;
    return false;
  }

  void send(Connection& c) {
    if (!keep_going()) return;
    c.request = {};
    c.request.method(http::verb::get);
    c.request.target(target());
    c.request.version(11);
    c.request.set(http::field::host, "127.0.0.1");
    c.request.set(http::field::user_agent, "qf-bench-admin");
    if (spec_->authenticated) c.request.set(http::field::authorization, authorization_);
    c.response = {};
    c.sent_at = Clock::now();
    c.stream.expires_after(k_request_timeout);
    http::async_write(c.stream, c.request, [this, &c](beast::error_code ec, std::size_t) {
      if (ec) return on_io_error(c, ec, "write");
      http::async_read(c.stream, c.buffer, c.response,
                       [this, &c](beast::error_code read_ec, std::size_t) { on_response(c, read_ec); });
    });
  }

  void on_response(Connection& c, beast::error_code ec) {
    if (ec) return on_io_error(c, ec, "read");
    ++responses_total_;
    const auto latency = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - c.sent_at);
    const auto& body = c.response.body();
    const bool ok = c.response.result_int() == 200 &&
                    (spec_->phase == Phase::health ? body == "ok\n" : body.rfind(R"({"code":0,)", 0) == 0);
    if (!ok) {
      count_error(std::to_string(c.response.result_int()) + " " + body.substr(0, 300));
    } else if (recording_ && result_) {
      ++result_->responses;
      result_->body_bytes += body.size();
      result_->latency_us.push_back(static_cast<std::uint32_t>(std::min<std::int64_t>(latency.count(), UINT32_MAX)));
    }
    if (!c.response.keep_alive()) {
      count_error("the server closed a keep-alive connection (Connection: close)");
      return reconnect(c);
    }
    send(c);
  }

  void on_io_error(Connection& c, beast::error_code ec, const char* what) {
    count_error(std::string(what) + ": " + ec.message(), true);
    reconnect(c);
  }

  void count_error(const std::string& what, bool io = false) {
    if (!result_) return;  // after the phase (closing)
    if (result_->first_error.empty()) result_->first_error = what;
    if (!recording_) ++result_->errors_outside;
    else if (io) ++result_->io_errors;
    else ++result_->status_errors;
  }

  void reconnect(Connection& c) {
    beast::error_code ignored;
    c.stream.socket().close(ignored);
    c.buffer.clear();
    c.retry.expires_after(k_reconnect_delay);
    c.retry.async_wait([this, &c](beast::error_code) {
      if (!keep_going()) return;
      c.stream.expires_after(k_request_timeout);
      c.stream.async_connect(server_, [this, &c](beast::error_code ec) {
        if (ec) {
          count_error("connect: " + ec.message(), true);
          return reconnect(c);  // still in the phase: the retry leaves it through keep_going()
        }
        beast::error_code ignored_option;
        c.stream.socket().set_option(tcp::no_delay(true), ignored_option);
        send(c);
      });
    });
  }

  asio::io_context io_;
  tcp::endpoint server_;
  std::string authorization_;
  std::vector<std::unique_ptr<Connection>> connections_;
  std::mt19937 random_{6};
  std::uniform_int_distribution<std::size_t> task_ids_;
  const PhaseSpec* spec_ = nullptr;
  PhaseResult* result_ = nullptr;
  bool recording_ = false;
  bool issuing_ = false;
  std::size_t in_flight_ = 0;  ///< connections still in the phase
  std::uint64_t responses_total_ = 0;
};

// --- checks and report --------------------------------------------------------------------

/// A few answers checked for content before the load; what was wrong, one line each.
std::vector<std::string> check_answers(LoadGenerator& client, std::size_t tasks) {
  std::vector<std::string> problems;
  auto data_of = [](const std::string& body) -> std::string {
    constexpr std::string_view envelope = R"({"code":0,"data":)";
    if (body.rfind(envelope, 0) != 0 || body.empty() || body.back() != '}') return {};
    return body.substr(envelope.size(), body.size() - envelope.size() - 1);
  };
  google::protobuf::util::JsonParseOptions lenient;
  lenient.ignore_unknown_fields = true;
  beast::error_code ec;

  auto list = client.fetch("/api/v1/tasks?page_size=20", true, ec);
  v1::ListTasksResponse listing;
  if (ec || list.result_int() != 200)
    problems.push_back("list: " + (ec ? ec.message() : std::to_string(list.result_int()) + " " + list.body()));
  else if (!google::protobuf::util::JsonStringToMessage(data_of(list.body()), &listing, lenient).ok())
    problems.push_back("list: the data is not a ListTasksResponse: " + list.body().substr(0, 200));
  else if (listing.total() != tasks || listing.items_size() != static_cast<int>(std::min<std::size_t>(tasks, 20)))
    problems.push_back("list: total " + std::to_string(listing.total()) + ", " + std::to_string(listing.items_size()) +
                       " items; expected " + std::to_string(tasks) + " and 20");
  else if (listing.items(0).next_fire_unix_ms() == 0 || listing.items(0).schedule_description().empty())
    problems.push_back("list: the first item has no next fire or no schedule description");

  auto get = client.fetch("/api/v1/tasks/t0", true, ec);
  v1::TaskSummary summary;
  if (ec || get.result_int() != 200)
    problems.push_back("get: " + (ec ? ec.message() : std::to_string(get.result_int()) + " " + get.body()));
  else if (!google::protobuf::util::JsonStringToMessage(data_of(get.body()), &summary, lenient).ok())
    problems.push_back("get: the data is not a TaskSummary: " + get.body().substr(0, 200));
  else if (summary.task().id() != "t0")
    problems.push_back("get: task id \"" + summary.task().id() + "\", expected \"t0\"");

  auto anonymous = client.fetch("/api/v1/tasks/t0", false, ec);
  if (ec || anonymous.result_int() != 401)
    problems.push_back("get without a token: " + (ec ? ec.message() : std::to_string(anonymous.result_int())) +
                       ", expected 401");
  auto missing = client.fetch("/api/v1/tasks/no-such-task", true, ec);
  if (ec || missing.result_int() != 404)
    problems.push_back("get of an unknown id: " + (ec ? ec.message() : std::to_string(missing.result_int())) +
                       ", expected 404");
  auto ready = client.fetch("/readyz", false, ec);
  if (ec || ready.result_int() != 200)
    problems.push_back("/readyz: " + (ec ? ec.message() : std::to_string(ready.result_int())) + ", expected 200");
  return problems;
}

std::string percent(double cores) {
  char text[16];
  std::snprintf(text, sizeof text, "%.0f%%", cores * 100);
  return text;
}

double core_of(const PhaseResult& r, const std::string& thread) {
  auto it = r.cores.find(thread);
  return it == r.cores.end() ? 0 : it->second;
}

void print_report(const std::vector<PhaseResult>& results) {
  std::printf(
      "\n| phase | requests/s | p50 ms | p99 ms | max ms | errors | bytes/response | CPU: server io thread | "
      "store reader | client thread | whole process |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& r : results) {
    const double rate = r.seconds > 0 ? static_cast<double>(r.responses) / r.seconds : 0;
    std::printf("| %s | %.0f | %.2f | %.2f | %.2f | %llu | %.0f | %s | %s | %s | %s |\n", r.spec->label, rate,
                percentile_ms(r.latency_us, 0.5), percentile_ms(r.latency_us, 0.99),
                r.latency_us.empty() ? 0.0 : r.latency_us.back() / 1000.0,
                static_cast<unsigned long long>(r.status_errors) + r.io_errors,
                r.responses ? static_cast<double>(r.body_bytes) / static_cast<double>(r.responses) : 0.0,
                percent(core_of(r, k_server_thread)).c_str(), percent(core_of(r, "qf-store-read")).c_str(),
                percent(core_of(r, k_client_thread)).c_str(), percent(core_of(r, "(process)")).c_str());
  }
  std::printf("\n");
  for (const auto& r : results) {
    const double rate = r.seconds > 0 ? static_cast<double>(r.responses) / r.seconds : 0;
    std::printf("%s: %llu responses in %.2f s", r.spec->label, static_cast<unsigned long long>(r.responses), r.seconds);
    if (r.status_errors + r.io_errors + r.errors_outside > 0)
      std::printf("; errors: %llu bad answers, %llu I/O, %llu outside the window; first: %s",
                  static_cast<unsigned long long>(r.status_errors), static_cast<unsigned long long>(r.io_errors),
                  static_cast<unsigned long long>(r.errors_outside), r.first_error.c_str());
    std::printf("\n");
    if (r.spec->authenticated && r.metrics_delta.ok && r.metrics_delta.request_count > 0)
      std::printf("  server (/metrics, whole phase): route to reply %.3f ms avg over %.0f requests; store read, queued "
                  "to completion on the io thread, %.3f ms avg over %.0f reads\n",
                  r.metrics_delta.request_sum_s * 1000 / r.metrics_delta.request_count, r.metrics_delta.request_count,
                  r.metrics_delta.store_count > 0 ? r.metrics_delta.store_sum_s * 1000 / r.metrics_delta.store_count
                                                  : 0.0,
                  r.metrics_delta.store_count);
    std::string others;
    for (const auto& [thread, cores] : r.cores)
      if (thread != k_server_thread && thread != k_client_thread && thread != "qf-store-read" &&
          thread != "(process)" && cores >= 0.005)
        others += " " + thread + " " + percent(cores);
    if (!others.empty()) std::printf("  other threads' CPU:%s\n", others.c_str());
    const double server = core_of(r, k_server_thread);
    const double client = core_of(r, k_client_thread);
    const double reader = core_of(r, "qf-store-read");
    const char* limit = server >= k_saturated && client >= k_saturated
                            ? "the server io thread and the client thread are both saturated (the generator co-limits)"
                        : server >= k_saturated          ? "the server io thread is saturated"
                        : client >= k_saturated          ? "the client thread is saturated (the generator)"
                        : reader >= k_saturated          ? "the store reader thread is saturated"
                        : core_of(r, "(process)") >= 1.8 ? "both cores are busy"
                                                         : "no thread saturated";
    std::printf("  limit: %s", limit);
    if (r.responses > 0)
      std::printf("; server io thread CPU per request %.1f us",
                  server * r.seconds * 1e6 / static_cast<double>(r.responses));
    if (r.spec->phase != Phase::health)
      std::printf("; target %.0f requests/s: %s", k_target_per_s, rate >= k_target_per_s ? "met" : "not met");
    std::printf("\n");
  }
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  BenchOptions options;
  CLI::App app{"qf-bench-admin: the coordinator's admin HTTP API under load (coordinator and AdminServer on one "
               "io_context thread, keep-alive Beast clients on another)"};
  app.add_option("--tasks", options.tasks, "tasks in the catalog")
      ->check(CLI::Range(1, 1'000'000))
      ->capture_default_str();
  app.add_option("--connections", options.connections, "keep-alive connections, one request in flight each")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  app.add_option("--seconds", options.seconds, "measured seconds per phase")
      ->check(CLI::Range(0.1, 600.0))
      ->capture_default_str();
  app.add_option("--warm-up", options.warm_up, "seconds of load before each phase's measurement")
      ->check(CLI::Range(0.0, 60.0))
      ->capture_default_str();
  app.add_option("--phases", options.phases, "phases to run, in order: list, get, executions, health")
      ->delimiter(',')
      ->check(CLI::IsMember({"list", "get", "executions", "health"}))
      ->capture_default_str();
  // One coordinator per run: QF_BENCH_STORE=postgres picks PostgreSQL, anything else SQLite.
  if (const char* env = std::getenv("QF_BENCH_STORE"); env && std::string_view(env) == "postgres") options.store = env;
  app.add_option("--store", options.store,
                 "the coordinator's store: sqlite (a file) or postgres (QF_BENCH_PG_DSN, else a throwaway server "
                 "started here; default from QF_BENCH_STORE)")
      ->check(CLI::IsMember({"sqlite", "postgres"}))
      ->capture_default_str();
  app.add_option("--executions", options.executions, "final records in the history (the executions phase)")
      ->check(CLI::Range(0, 10'000'000))
      ->capture_default_str();
  app.add_flag("--verbose", quartzflow::bench::verbose, "progress on stderr (also QF_BENCH_VERBOSE=1)");
  // `./tools/qf bench ARGS` passes Google Benchmark flags to every qf-bench-*: ignore them.
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i)
    if (i == 0 || std::string_view(argv[i]).rfind("--benchmark_", 0) != 0) args.push_back(argv[i]);
  try {
    app.parse(static_cast<int>(args.size()), args.data());
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  if (std::getenv("QF_BENCH_VERBOSE") != nullptr) quartzflow::bench::verbose = true;
  qf::set_log_level(quartzflow::bench::verbose ? "warn" : "error");

  // Backstop: every wait below is bounded; should one not be, the process still ends.
  const double drain_s = std::chrono::duration<double>(k_drain_budget).count();
  const double phase_budget = options.warm_up + options.seconds + 2 * drain_s + 5;
  ::alarm(static_cast<unsigned>(300 + static_cast<double>(options.phases.size()) * phase_budget));

  pthread_setname_np(pthread_self(), k_server_thread);
  Server server;
  progress("setting up: store in %s, %zu tasks", server.dir.c_str(), options.tasks);
  if (auto error = server.set_up(options.tasks, options.store == "postgres", options.executions); !error.empty()) {
    std::fprintf(stderr, "qf-bench-admin: %s\n", error.c_str());
    server.tear_down();
    return 1;
  }
  const tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), server.admin->port());

  std::printf("qf-bench-admin: the admin HTTP API (HTTP/1.1 keep-alive on 127.0.0.1:%u) of a Coordinator on one "
              "io_context thread; load from another thread with its own io_context; %u CPUs\n",
              static_cast<unsigned>(endpoint.port()), std::thread::hardware_concurrency());
  std::printf(
      "catalog: %zu tasks (`one` placement, cron \"%s\", group \"%s\") created through the Coordinator in "
      "%.2f s, %zu final records; %s\n",
      options.tasks, k_cron, k_group, server.create_s, options.executions, server.store_description.c_str());
  std::printf("auth: admin user by Authenticator::ensure_admin with PBKDF2 at %u iterations (setup speed only: the "
              "default is %u; no login is measured), then an API token (role VIEWER) sent as Authorization: Bearer\n",
              k_setup_pbkdf2_iterations, qf::k_default_pbkdf2_iterations);
  std::printf("load: %zu keep-alive connections, one request in flight each; per phase %.1f s warm-up, %.1f s "
              "measured; target (issue 6): %.0f requests/s for the task list and get on 2 cores\n",
              options.connections, options.warm_up, options.seconds, k_target_per_s);
  std::fflush(stdout);

  std::atomic<bool> client_done{false};
  std::vector<PhaseResult> results;
  std::vector<std::string> problems;
  std::string client_error;
  std::uint64_t client_responses = 0;
  std::thread client([&] {
    pthread_setname_np(pthread_self(), k_client_thread);
    try {
      LoadGenerator generator(endpoint, server.token, options.tasks);
      problems = check_answers(generator, options.tasks);
      client_error = generator.connect(options.connections);
      for (const auto& key : options.phases) {
        if (!client_error.empty()) break;
        const auto* spec = std::find_if(std::begin(k_phases), std::end(k_phases),
                                        [&](const PhaseSpec& s) { return key == s.key; });
        progress("phase %s", spec->label);
        results.push_back(generator.run_phase(*spec, std::chrono::duration<double>(options.warm_up),
                                              std::chrono::duration<double>(options.seconds)));
      }
      generator.close();
      client_responses = generator.responses_total();
    } catch (const std::exception& e) {
      client_error = e.what();
    }
    client_done = true;
  });
  {
    // The coordinator's thread serves until the load generator is done (bounded by its phases).
    auto work = asio::make_work_guard(server.io);
    while (!client_done.load()) {
      if (server.io.stopped()) server.io.restart();
      server.io.run_for(50ms);
    }
  }
  client.join();
  const auto served = server.admin->stats();
  server.tear_down();

  if (!client_error.empty()) std::fprintf(stderr, "qf-bench-admin: load generator: %s\n", client_error.c_str());
  print_report(results);
  std::printf("checks before the load: %s\n", problems.empty() ? "list, get, 401 without a token, 404 for an unknown "
                                                                 "id and /readyz answered as documented"
                                                               : "");
  for (const auto& p : problems) std::printf("  PROBLEM: %s\n", p.c_str());
  std::printf("server: %llu connections, %llu requests counted (the load generator got %llu responses, plus its "
              "checks and /metrics reads); %llu connections refused\n",
              static_cast<unsigned long long>(served.connections), static_cast<unsigned long long>(served.requests),
              static_cast<unsigned long long>(client_responses),
              static_cast<unsigned long long>(served.connections_refused));
  std::fflush(stdout);
  std::uint64_t errors = 0;
  for (const auto& r : results) errors += r.status_errors + r.io_errors;
  return client_error.empty() && problems.empty() && errors == 0 ? 0 : 1;
}
