// SPDX-License-Identifier: Apache-2.0
// The agent <-> coordinator QUIC transport at scale, on loopback, in two
// processes: the coordinator (Coordinator on a SQLite file store behind a
// QuicServer) in the parent, light simulated agents (the protocol spoken
// directly over QuicConnector connections, one certificate per agent) in a
// child forked after the certificates exist.
//
// Measures: mutual-TLS handshakes/s (sequential and concurrent); N idle
// sessions (registered, snapshot acknowledged) and the coordinator's memory per
// session (its own process's VmRSS delta over N); the latency of a config
// change every agent must hold (all_agents task) from the create/update call to
// each agent's receipt of the push; the rate of final execution records stored
// durably (acknowledged) from ExecutionResultBatch.
// `--help` lists the flags; QF_BENCH_VERBOSE=1 (or --verbose) prints progress
// to stderr.
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <quartzflow/v1/agent_protocol.pb.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <quartzflow/catalog.hpp>
#include <quartzflow/certs.hpp>
#include <quartzflow/coordinator.hpp>
#include <quartzflow/coordinator_dispatcher.hpp>
#include <quartzflow/log.hpp>
#include <quartzflow/quic.hpp>
#include <quartzflow/store.hpp>
#include <quartzflow/version.hpp>

#include "bench_support.hpp"
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <vector>

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;
namespace asio = boost::asio;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* k_task_id = "bench-all";

using quartzflow::bench::progress;

std::int64_t wall_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::int64_t wall_ms() { return wall_us() / 1000; }

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

/// Resident set of this process, kB (VmRSS).
long rss_kb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  return 0;
}

/// CPU time of every thread of this process, seconds.
double cpu_seconds() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

std::vector<std::string> split(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> out;
  for (std::string word; in >> word;) out.push_back(word);
  return out;
}

/// Datagrams the kernel dropped for a full UDP receive buffer, machine-wide
/// (Udp: RcvbufErrors in /proc/net/snmp): on loopback, QUIC packets lost in
/// this bench.
std::uint64_t udp_receive_drops() {
  std::ifstream snmp("/proc/net/snmp");
  std::string header, values;
  while (std::getline(snmp, header))
    if (header.rfind("Udp:", 0) == 0 && std::getline(snmp, values)) {
      const auto names = split(header);
      const auto numbers = split(values);
      for (std::size_t i = 0; i < names.size() && i < numbers.size(); ++i)
        if (names[i] == "RcvbufErrors") return std::stoull(numbers[i]);
    }
  return 0;
}

double percentile(const std::vector<double>& sorted, double p) {
  if (sorted.empty()) return 0;
  return sorted[std::min(sorted.size() - 1, static_cast<std::size_t>(static_cast<double>(sorted.size()) * p))];
}

// --- options
// ---------------------------------------------------------------------------

struct BenchOptions {
  std::size_t agents = 1000;
  std::size_t connect_concurrency = 100;
  std::size_t handshakes = 1000;
  std::size_t handshake_concurrency = 50;
  std::size_t pushes = 3;
  std::size_t ingest_agents = 50;
  std::size_t batch = 500;
  std::size_t window = 1;
  double ingest_seconds = 5;
  std::string certs;
};

void usage() {
  std::printf(
      "qf-bench-quic: the QUIC agent transport on loopback (coordinator in "
      "this process, agents in a child)\n"
      "  --agents N                 simulated agents (idle sessions, push "
      "fan-out); default 1000\n"
      "  --connect-concurrency N    agent handshakes in flight while "
      "connecting them; default 100\n"
      "  --handshakes N             handshakes per handshake run; default 1000 "
      "(0 = skip)\n"
      "  --handshake-concurrency N  in flight in the concurrent handshake run; "
      "default 50\n"
      "  --pushes N                 config changes pushed to every agent; "
      "default 3\n"
      "  --ingest-agents N          agents sending results; default 50 (0 = "
      "skip)\n"
      "  --batch N                  records per ExecutionResultBatch (the "
      "coordinator allows 500); default 500\n"
      "  --window N                 batches in flight per agent; default 1\n"
      "  --ingest-seconds S         how long agents send; default 5\n"
      "  --certs DIR                certificate cache, kept across runs; "
      "default $TMPDIR/qf-bench-quic-certs\n"
      "  --verbose                  progress on stderr (also "
      "QF_BENCH_VERBOSE=1)\n");
}

bool parse_options(int argc, char** argv, BenchOptions& options) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--benchmark_", 0) == 0) continue;  // `./tools/qf bench ARGS` passes these to every suite
    if (arg == "--help" || arg == "-h") {
      usage();
      std::exit(0);
    }
    if (arg == "--verbose") {
      quartzflow::bench::verbose = true;
      continue;
    }
    std::string value;
    if (auto eq = arg.find('='); eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg.resize(eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      std::fprintf(stderr, "%s: needs a value\n", arg.c_str());
      return false;
    }
    auto count = [&](std::size_t& out) {
      char* end = nullptr;
      const unsigned long long parsed = std::strtoull(value.c_str(), &end, 10);
      if (end == value.c_str() || *end != '\0')
        throw std::invalid_argument(arg + ": \"" + value + "\" is not a number");
      out = static_cast<std::size_t>(parsed);
    };
    try {
      if (arg == "--agents")
        count(options.agents);
      else if (arg == "--connect-concurrency")
        count(options.connect_concurrency);
      else if (arg == "--handshakes")
        count(options.handshakes);
      else if (arg == "--handshake-concurrency")
        count(options.handshake_concurrency);
      else if (arg == "--pushes")
        count(options.pushes);
      else if (arg == "--ingest-agents")
        count(options.ingest_agents);
      else if (arg == "--batch")
        count(options.batch);
      else if (arg == "--window")
        count(options.window);
      else if (arg == "--ingest-seconds")
        options.ingest_seconds = std::stod(value);
      else if (arg == "--certs")
        options.certs = value;
      else
        throw std::invalid_argument(arg + ": unknown flag (see --help)");
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s\n", e.what());
      return false;
    }
  }
  options.agents = std::max<std::size_t>(options.agents, 1);
  options.connect_concurrency = std::max<std::size_t>(options.connect_concurrency, 1);
  options.handshake_concurrency = std::max<std::size_t>(options.handshake_concurrency, 1);
  options.window = std::max<std::size_t>(options.window, 1);
  options.batch = std::clamp<std::size_t>(options.batch, 1, 500);
  options.ingest_agents = std::min(options.ingest_agents, options.agents);
  if (options.certs.empty()) options.certs = (fs::temp_directory_path() / "qf-bench-quic-certs").string();
  return true;
}

// --- certificates
// ----------------------------------------------------------------------

std::string agent_name(std::size_t index) {
  std::string digits = std::to_string(index);
  return "bench-agent-" + std::string(digits.size() < 5 ? 5 - digits.size() : 0, '0') + digits;
}

/// The cluster CA, the coordinator's certificate for 127.0.0.1 and one per
/// agent, cached in a directory: only the missing ones are issued.
struct Pki {
  std::string dir;
  qf::TlsFiles coordinator;

  qf::TlsFiles agent(std::size_t index) const {
    const std::string name = agent_name(index);
    return {dir + "/ca.pem", dir + "/agent-" + name + ".pem", dir + "/agent-" + name + ".key"};
  }
};

std::string prepare_pki(const std::string& dir, std::size_t agents, Pki& pki, double& issue_s, std::size_t& issued) {
  pki.dir = dir;
  std::error_code fs_ec;
  fs::create_directories(dir, fs_ec);
  std::string detail;
  qf::IssuedFiles written;
  bool fresh = false;
  if (!fs::exists(dir + "/ca.pem") || !fs::exists(dir + "/ca.key")) {
    qf::CaOptions ca;
    ca.common_name = "QuartzFlow bench CA";
    ca.force = true;
    if (qf::create_ca(dir, ca, written, detail)) return "creating the CA: " + detail;
    fresh = true;  // what the old CA signed (if anything) no longer verifies
  }
  pki.coordinator = {dir + "/ca.pem", dir + "/coordinator-127.0.0.1.pem", dir + "/coordinator-127.0.0.1.key"};
  if (fresh || !fs::exists(pki.coordinator.cert_file) || !fs::exists(pki.coordinator.key_file)) {
    qf::IssueOptions server;
    server.kind = qf::CertificateKind::coordinator;
    server.name = "127.0.0.1";
    if (qf::issue_certificate(dir, server, written, detail)) return "issuing the coordinator certificate: " + detail;
  }
  std::vector<std::size_t> missing;
  for (std::size_t i = 0; i < agents; ++i) {
    const auto files = pki.agent(i);
    if (fresh || !fs::exists(files.cert_file) || !fs::exists(files.key_file)) missing.push_back(i);
  }
  issued = missing.size();
  const auto start = Clock::now();
  // Two writers (the machine has two cores); issue_certificate is safe for
  // different names.
  std::string failure;
  std::mutex failure_mutex;
  auto worker = [&](std::size_t first) {
    for (std::size_t k = first; k < missing.size(); k += 2) {
      qf::IssueOptions agent;
      agent.kind = qf::CertificateKind::agent;
      agent.name = agent_name(missing[k]);
      qf::IssuedFiles files;
      std::string why;
      if (qf::issue_certificate(dir, agent, files, why)) {
        std::lock_guard lock(failure_mutex);
        failure = "issuing " + agent.name + ": " + why;
        return;
      }
      if (first == 0 && k % 1000 == 0 && k > 0) progress("  %zu of %zu agent certificates issued", k, missing.size());
    }
  };
  std::thread second(worker, 1);
  worker(0);
  second.join();
  issue_s = seconds_since(start);
  return failure;
}

// --- the control channel between the two processes
// -----------------------------------

/// Newline-terminated text lines over a socketpair; reads never block.
class Control {
 public:
  explicit Control(int fd) : fd_(fd) { ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK); }
  ~Control() { ::close(fd_); }
  Control(const Control&) = delete;
  Control& operator=(const Control&) = delete;

  void send(const std::string& line) {
    const std::string data = line + "\n";
    std::size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = ::send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
      if (n > 0) {
        done += static_cast<std::size_t>(n);
      } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        pollfd p{fd_, POLLOUT, 0};
        ::poll(&p, 1, 100);
      } else {
        closed_ = true;
        return;
      }
    }
  }

  /// The next complete line, if one has arrived.
  bool next(std::string& line) {
    for (;;) {
      if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
        line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return true;
      }
      char chunk[4096];
      const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
      if (n > 0) {
        buffer_.append(chunk, static_cast<std::size_t>(n));
        continue;
      }
      if (n == 0) closed_ = true;
      return false;
    }
  }

  bool closed() const noexcept { return closed_; }

 private:
  int fd_;
  std::string buffer_;
  bool closed_ = false;
};

// --- the agents' side (child process)
// --------------------------------------------------

/// A simulated agent: the protocol's session steps without engine or local
/// store.
struct SimAgent {
  explicit SimAgent(asio::io_context& io) : heartbeat(io) {}
  std::size_t index = 0;
  std::string id;
  std::unique_ptr<qf::QuicConnector> connector;
  std::shared_ptr<qf::Connection> connection;
  std::uint64_t next_message_id = 1;
  std::uint32_t connect_attempts = 0;
  bool registered = false;
  bool ready = false;  ///< snapshot received and acknowledged
  std::int64_t applied_version = 0;
  std::chrono::seconds heartbeat_interval{15};
  asio::steady_timer heartbeat;
  std::vector<std::pair<std::int64_t, std::int64_t>> receipts;  ///< (config version, wall µs) per push received
  // Result ingest.
  std::uint64_t record_seq = 0;
  std::map<std::uint64_t, std::size_t> batches_in_flight;  ///< message id -> records
};

class AgentSide {
 public:
  AgentSide(int control_fd, const Pki& pki) : control_(control_fd), pki_(pki), random_(42) {}

  int run() {
    auto guard = asio::make_work_guard(io_);
    while (!quit_) {
      io_.run_for(2ms);
      std::string line;
      while (control_.next(line)) handle(split(line));
      if (control_.closed()) break;
      check_progress();
    }
    for (auto& a : agents_)
      if (a && a->connection) a->connection->close("the bench is over");
    io_.run_for(50ms);  // the closes leave
    return 0;
  }

 private:
  asio::io_context io_;
  Control control_;
  const Pki& pki_;
  std::mt19937_64 random_;
  bool quit_ = false;

  // Handshake runs.
  std::unique_ptr<qf::QuicConnector> hs_connector_;
  std::size_t hs_target_ = 0, hs_started_ = 0, hs_ok_ = 0, hs_failed_ = 0, hs_concurrency_ = 0;
  std::string hs_last_error_;
  Clock::time_point hs_start_;
  bool hs_running_ = false;

  // Sessions.
  std::uint16_t port_ = 0;
  std::vector<std::shared_ptr<SimAgent>> agents_;
  std::deque<std::size_t> to_connect_;
  std::size_t connecting_ = 0, connect_concurrency_ = 0, ready_ = 0, connect_failures_ = 0, disconnects_ = 0;
  std::string last_connect_error_;
  bool agents_running_ = false;
  Clock::time_point agents_start_;
  Clock::time_point agents_deadline_;
  std::size_t protocol_errors_ = 0;

  // Push waits.
  bool push_waiting_ = false;
  std::int64_t push_version_ = 0, push_t0_us_ = 0;
  Clock::time_point push_deadline_;
  double push_cpu_ = 0;

  // Ingest.
  bool ingesting_ = false, ingest_reported_ = false;
  std::string ingest_task_;
  std::int64_t ingest_revision_ = 0;
  std::size_t batch_ = 0, window_ = 0;
  Clock::time_point ingest_start_, ingest_end_, ingest_last_ack_;
  std::uint64_t ingest_acked_ = 0, ingest_rejected_ = 0, ingest_sent_ = 0;
  double ingest_cpu_ = 0;
  std::vector<double> ack_latency_ms_;
  std::map<std::pair<std::size_t, std::uint64_t>, Clock::time_point> batch_sent_;

  // --- commands
  // ------------------------------------------------------------------------

  void handle(const std::vector<std::string>& cmd) {
    if (cmd.empty()) return;
    auto num = [&](std::size_t i) { return std::stoll(cmd.at(i)); };
    if (cmd[0] == "QUIT") {
      quit_ = true;
    } else if (cmd[0] == "HS") {
      start_handshakes(static_cast<std::uint16_t>(num(1)), static_cast<std::size_t>(num(2)),
                       static_cast<std::size_t>(num(3)));
    } else if (cmd[0] == "AGENTS") {
      start_agents(static_cast<std::uint16_t>(num(1)), static_cast<std::size_t>(num(2)),
                   static_cast<std::size_t>(num(3)));
    } else if (cmd[0] == "ARM") {
      push_cpu_ = cpu_seconds();
      control_.send("ARMED");
    } else if (cmd[0] == "PUSH_WAIT") {
      push_version_ = num(1);
      push_t0_us_ = num(2);
      push_deadline_ = Clock::now() + std::chrono::seconds(num(3));
      push_waiting_ = true;
    } else if (cmd[0] == "INGEST") {
      start_ingest(static_cast<std::size_t>(num(1)), static_cast<std::size_t>(num(2)), static_cast<std::size_t>(num(3)),
                   std::stod(cmd.at(4)), cmd.at(5), num(6));
    }
  }

  void check_progress() {
    if (hs_running_ && hs_ok_ + hs_failed_ == hs_target_) {
      hs_running_ = false;
      control_.send("HS_DONE " + std::to_string(hs_ok_) + " " + std::to_string(hs_failed_) + " " +
                    std::to_string(seconds_since(hs_start_)) + " " + (hs_last_error_.empty() ? "-" : "error"));
      if (!hs_last_error_.empty()) std::fprintf(stderr, "handshake failure: %s\n", hs_last_error_.c_str());
    }
    if (agents_running_) {
      const bool settled = connecting_ == 0 && to_connect_.empty();
      const bool all = ready_ + connect_failures_ >= agents_.size();
      if ((settled && all) || Clock::now() > agents_deadline_) {
        agents_running_ = false;
        if (!last_connect_error_.empty())
          std::fprintf(stderr, "agent connect failure: %s\n", last_connect_error_.c_str());
        control_.send("AGENTS_DONE " + std::to_string(ready_) + " " + std::to_string(connect_failures_) + " " +
                      std::to_string(seconds_since(agents_start_)) + " " + std::to_string(rss_kb()) + " " +
                      std::to_string(disconnects_));
      }
    }
    if (push_waiting_) {
      std::size_t have = 0, online = 0;
      for (const auto& a : agents_) {
        if (!a->connection || !a->ready) continue;
        ++online;
        if (a->applied_version >= push_version_) ++have;
      }
      if (have == online || Clock::now() > push_deadline_) {
        push_waiting_ = false;
        std::vector<double> latency_ms;
        for (const auto& a : agents_)
          for (const auto& [version, at_us] : a->receipts)
            if (version >= push_version_) {
              latency_ms.push_back(static_cast<double>(at_us - push_t0_us_) / 1000.0);
              break;
            }
        std::sort(latency_ms.begin(), latency_ms.end());
        control_.send("PUSH_DONE " + std::to_string(latency_ms.size()) + " " + std::to_string(online) + " " +
                      std::to_string(percentile(latency_ms, 0.5)) + " " + std::to_string(percentile(latency_ms, 0.99)) +
                      " " + std::to_string(latency_ms.empty() ? 0.0 : latency_ms.back()) + " " +
                      std::to_string(cpu_seconds() - push_cpu_));
      }
    }
    if (ingesting_ && !ingest_reported_ && Clock::now() >= ingest_end_) {
      std::size_t outstanding = 0;
      for (const auto& a : agents_) outstanding += a->batches_in_flight.size();
      if (outstanding == 0 || Clock::now() > ingest_end_ + 20s) {
        ingest_reported_ = true;
        ingesting_ = false;
        std::sort(ack_latency_ms_.begin(), ack_latency_ms_.end());
        const double elapsed = std::chrono::duration<double>(ingest_last_ack_ - ingest_start_).count();
        control_.send("INGEST_DONE " + std::to_string(ingest_acked_) + " " + std::to_string(ingest_rejected_) + " " +
                      std::to_string(elapsed) + " " + std::to_string(ingest_sent_) + " " +
                      std::to_string(percentile(ack_latency_ms_, 0.5)) + " " +
                      std::to_string(percentile(ack_latency_ms_, 0.99)) + " " +
                      std::to_string(cpu_seconds() - ingest_cpu_) + " " + std::to_string(outstanding));
      }
    }
  }

  // --- handshakes
  // ----------------------------------------------------------------------

  void start_handshakes(std::uint16_t port, std::size_t count, std::size_t concurrency) {
    qf::QuicOptions options;
    options.tls = pki_.agent(0);
    hs_connector_ = std::make_unique<qf::QuicConnector>(io_.get_executor(), "127.0.0.1", port, "127.0.0.1", options);
    hs_target_ = count;
    hs_started_ = hs_ok_ = hs_failed_ = 0;
    hs_concurrency_ = concurrency;
    hs_last_error_.clear();
    hs_start_ = Clock::now();
    hs_running_ = true;
    for (std::size_t i = 0; i < concurrency && hs_started_ < hs_target_; ++i) next_handshake();
  }

  void next_handshake() {
    ++hs_started_;
    hs_connector_->connect([this](qf::error_code ec, std::shared_ptr<qf::Connection> connection) {
      if (ec) {
        ++hs_failed_;
        hs_last_error_ = hs_connector_->last_error();
      } else {
        ++hs_ok_;
        connection->close("handshake measured");
      }
      if (hs_started_ < hs_target_) next_handshake();
    });
  }

  // --- sessions
  // ------------------------------------------------------------------------

  void start_agents(std::uint16_t port, std::size_t count, std::size_t concurrency) {
    port_ = port;
    connect_concurrency_ = concurrency;
    agents_start_ = Clock::now();
    // Budget: handshakes at a few hundred per second, with room.
    agents_deadline_ = agents_start_ + 30s + std::chrono::milliseconds(count * 10);
    for (std::size_t i = 0; i < count; ++i) {
      auto a = std::make_shared<SimAgent>(io_);
      a->index = i;
      a->id = agent_name(i);
      agents_.push_back(a);
      to_connect_.push_back(i);
    }
    agents_running_ = true;
    launch_connects();
  }

  void launch_connects() {
    while (connecting_ < connect_concurrency_ && !to_connect_.empty()) {
      const std::size_t i = to_connect_.front();
      to_connect_.pop_front();
      connect_agent(*agents_[i]);
    }
  }

  void connect_agent(SimAgent& a) {
    if (!a.connector) {
      qf::QuicOptions options;
      options.tls = pki_.agent(a.index);
      a.connector = std::make_unique<qf::QuicConnector>(io_.get_executor(), "127.0.0.1", port_, "127.0.0.1", options);
    }
    ++connecting_;
    ++a.connect_attempts;
    std::weak_ptr<SimAgent> weak = agents_[a.index];
    a.connector->connect([this, weak](qf::error_code ec, std::shared_ptr<qf::Connection> connection) {
      --connecting_;
      auto agent = weak.lock();
      if (!agent) return;
      if (ec) {
        last_connect_error_ = agent->connector->last_error();
        if (agent->connect_attempts < 3) {
          to_connect_.push_back(agent->index);
        } else {
          ++connect_failures_;
        }
      } else {
        attach(agent, std::move(connection));
      }
      launch_connects();
    });
  }

  void attach(const std::shared_ptr<SimAgent>& a, std::shared_ptr<qf::Connection> connection) {
    a->connection = std::move(connection);
    std::weak_ptr<SimAgent> weak = a;
    a->connection->start({[this, weak](std::string message) {
                            if (auto agent = weak.lock()) on_message(*agent, message);
                          },
                          [this, weak](std::string reason) {
                            auto agent = weak.lock();
                            if (!agent) return;
                            progress("agent %s disconnected: %s", agent->id.c_str(), reason.c_str());
                            agent->connection.reset();
                            agent->heartbeat.cancel();
                            ++disconnects_;
                            if (agent->ready) --ready_;
                            agent->ready = false;
                          }});
    v1::Envelope e;
    auto* reg = e.mutable_register_request();
    reg->set_agent_id(a->id);
    reg->set_hostname(a->id + ".bench");
    reg->add_ips("127.0.0.1");
    reg->set_agent_version(qf::version);
    reg->set_platform("linux");
    reg->set_agent_unix_ms(wall_ms());
    reg->set_applied_config_version(a->applied_version);
    reg->set_instance_id(std::to_string(random_()));
    reg->add_executors("plugin:bench.noop");
    send(*a, e);
  }

  bool send(SimAgent& a, v1::Envelope& e, std::uint64_t in_reply_to = 0) {
    if (!a.connection) return false;
    const std::uint64_t id = a.next_message_id++;
    e.set_protocol_version(qf::k_protocol_version);
    e.set_message_id(id);
    e.set_in_reply_to(in_reply_to);
    e.set_sent_unix_ms(wall_ms());
    return a.connection->send(e.SerializeAsString());
  }

  void arm_heartbeat(SimAgent& a, std::chrono::milliseconds after) {
    a.heartbeat.expires_after(after);
    std::weak_ptr<SimAgent> weak = agents_[a.index];
    a.heartbeat.async_wait([this, weak](const qf::error_code& ec) {
      auto agent = weak.lock();
      if (ec || !agent || !agent->connection) return;
      v1::Envelope e;
      e.mutable_heartbeat()->set_applied_config_version(agent->applied_version);
      e.mutable_heartbeat()->set_agent_unix_ms(wall_ms());
      send(*agent, e);
      arm_heartbeat(*agent, agent->heartbeat_interval);
    });
  }

  void pull(SimAgent& a, bool full) {
    v1::Envelope e;
    e.mutable_config_pull()->set_applied_config_version(a.applied_version);
    e.mutable_config_pull()->set_full(full);
    send(a, e);
  }

  void ack_config(SimAgent& a, std::int64_t version, v1::ConfigApplyResult result) {
    v1::Envelope e;
    e.mutable_config_ack()->set_config_version(version);
    e.mutable_config_ack()->set_result(result);
    send(a, e);
  }

  void on_message(SimAgent& a, const std::string& message) {
    const std::int64_t received_us = wall_us();
    v1::Envelope e;
    if (!e.ParseFromString(message)) {
      ++protocol_errors_;
      return;
    }
    switch (e.body_case()) {
      case v1::Envelope::kRegisterResult: {
        a.registered = true;
        if (e.register_result().heartbeat_interval_seconds() > 0)
          a.heartbeat_interval = std::chrono::seconds(e.register_result().heartbeat_interval_seconds());
        pull(a, false);
        // Spread the heartbeats over the interval, as agents started at different
        // times would.
        const auto interval = std::chrono::duration_cast<std::chrono::milliseconds>(a.heartbeat_interval);
        arm_heartbeat(a, interval / 2 + std::chrono::milliseconds(
                                            random_() % static_cast<std::uint64_t>(interval.count() / 2 + 1)));
        return;
      }
      case v1::Envelope::kConfigSnapshot: {
        const auto version = e.config_snapshot().config_version();
        a.receipts.emplace_back(version, received_us);
        a.applied_version = version;
        ack_config(a, version, v1::CONFIG_APPLY_RESULT_APPLIED);
        if (!a.ready) {
          a.ready = true;
          ++ready_;
        }
        return;
      }
      case v1::Envelope::kConfigDelta: {
        const auto& delta = e.config_delta();
        a.receipts.emplace_back(delta.config_version(), received_us);
        if (delta.config_version() == a.applied_version)
          return ack_config(a, a.applied_version, v1::CONFIG_APPLY_RESULT_APPLIED);
        if (delta.base_config_version() != a.applied_version) {
          ack_config(a, delta.config_version(), v1::CONFIG_APPLY_RESULT_BASE_MISMATCH);
          return pull(a, true);
        }
        a.applied_version = delta.config_version();
        return ack_config(a, a.applied_version, v1::CONFIG_APPLY_RESULT_APPLIED);
      }
      case v1::Envelope::kHeartbeatAck:
        if (e.heartbeat_ack().desired_config_version() != a.applied_version) pull(a, false);
        return;
      case v1::Envelope::kResultAck:
        return on_result_ack(a, e.result_ack(), e.in_reply_to());
      case v1::Envelope::kError:
        ++protocol_errors_;
        std::fprintf(stderr, "agent %s: coordinator error: %s\n", a.id.c_str(), e.error().message().c_str());
        return;
      case v1::Envelope::kGoodbye:
        progress("agent %s: goodbye: %s", a.id.c_str(), e.goodbye().message().c_str());
        return;
      default:
        return;
    }
  }

  // --- result ingest
  // -------------------------------------------------------------------

  void start_ingest(std::size_t agent_count, std::size_t batch, std::size_t window, double seconds, std::string task,
                    std::int64_t revision) {
    ingest_task_ = std::move(task);
    ingest_revision_ = revision;
    batch_ = batch;
    window_ = window;
    ingest_cpu_ = cpu_seconds();
    ingest_start_ = ingest_last_ack_ = Clock::now();
    ingest_end_ = ingest_start_ + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
    ingesting_ = true;
    std::size_t senders = 0;
    for (auto& a : agents_) {
      if (senders == agent_count) break;
      if (!a->ready || !a->connection) continue;
      ++senders;
      for (std::size_t w = 0; w < window_; ++w) send_batch(*a);
    }
  }

  void send_batch(SimAgent& a) {
    v1::Envelope e;
    auto* results = e.mutable_execution_result_batch();
    const std::int64_t now = wall_ms();
    for (std::size_t i = 0; i < batch_; ++i) {
      auto* r = results->add_results();
      const std::string id = a.id + "-" + std::to_string(++a.record_seq);
      r->set_execution_id(id);
      r->set_root_execution_id(id);
      r->set_task_id(ingest_task_);
      r->set_task_name(ingest_task_);
      r->set_task_revision(ingest_revision_);
      r->set_agent_id(a.id);
      r->set_agent_hostname(a.id + ".bench");
      r->set_agent_ip("127.0.0.1");
      r->set_status(v1::EXECUTION_STATUS_SUCCESS);
      r->set_trigger(v1::TRIGGER_TYPE_SCHEDULED);
      r->set_scheduled_unix_ms(now - 20);
      r->set_started_unix_ms(now - 19);
      r->set_ended_unix_ms(now - 1);
      r->set_duration_ms(18);
      r->set_exit_code(0);
      r->set_attempt(1);
      r->set_output("ok\n");
      r->set_output_bytes(3);
      r->set_updated_unix_ms(now);
    }
    const std::uint64_t id = a.next_message_id;
    if (!send(a, e)) return;
    a.batches_in_flight[id] = batch_;
    batch_sent_[{a.index, id}] = Clock::now();
    ingest_sent_ += batch_;
  }

  void on_result_ack(SimAgent& a, const v1::ResultAck& ack, std::uint64_t in_reply_to) {
    auto it = a.batches_in_flight.find(in_reply_to);
    if (it == a.batches_in_flight.end()) return;
    a.batches_in_flight.erase(it);
    if (auto sent = batch_sent_.find({a.index, in_reply_to}); sent != batch_sent_.end()) {
      ack_latency_ms_.push_back(std::chrono::duration<double, std::milli>(Clock::now() - sent->second).count());
      batch_sent_.erase(sent);
    }
    ingest_acked_ += static_cast<std::uint64_t>(ack.execution_ids_size());
    ingest_rejected_ += static_cast<std::uint64_t>(ack.rejected_size());
    if (ack.rejected_size() > 0 && ingest_rejected_ == static_cast<std::uint64_t>(ack.rejected_size()))
      std::fprintf(stderr, "record rejected: %s\n", ack.rejected(0).reason().c_str());
    ingest_last_ack_ = Clock::now();
    if (ingesting_ && Clock::now() < ingest_end_) send_batch(a);
  }
};

// --- the coordinator's side (parent process)
// -------------------------------------------

struct HandshakeFigures {
  std::size_t count = 0, concurrency = 0, ok = 0, failed = 0, server_accepted = 0;
  double seconds = 0, server_cpu_s = 0;
  std::uint64_t udp_drops = 0;
};

struct PushFigures {
  std::string what;
  std::size_t received = 0, online = 0;
  double commit_ms = 0, p50_ms = 0, p99_ms = 0, max_ms = 0, agents_cpu_s = 0, coordinator_cpu_s = 0;
  std::uint64_t udp_drops = 0, pushes_sent = 0;
};

class CoordinatorSide {
 public:
  CoordinatorSide(int control_fd, pid_t child, const Pki& pki, const BenchOptions& options)
      : control_(control_fd), child_(child), pki_(pki), options_(options) {
    dir_ = quartzflow::bench::make_temp_dir("qf-bench-quic");
  }

  ~CoordinatorSide() {
    if (coordinator_) coordinator_->stop();
    if (server_) server_->close();
    io_.poll();
    coordinator_.reset();
    server_.reset();
    store_.reset();
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }

  int run() {
    auto guard = asio::make_work_guard(io_);
    int failures = 0;
    if (options_.handshakes > 0) {
      handshakes_.push_back(handshake_run(1));
      handshakes_.push_back(handshake_run(options_.handshake_concurrency));
    }
    ::malloc_trim(0);  // what the handshake runs freed does not hide in the session figure
    if (auto error = start_coordinator(); !error.empty()) {
      std::fprintf(stderr, "%s\n", error.c_str());
      control_.send("QUIT");
      return 1;
    }
    if (!sessions()) ++failures;
    if (ready_ > 0) {
      for (std::size_t k = 0; k < options_.pushes; ++k)
        if (!push(k)) {
          ++failures;
          break;
        }
      if (options_.ingest_agents > 0 && !ingest()) ++failures;
    }
    control_.send("QUIT");
    print_table();
    return failures == 0 ? 0 : 1;
  }

 private:
  asio::io_context io_;
  Control control_;
  pid_t child_;
  const Pki& pki_;
  const BenchOptions& options_;
  fs::path dir_;
  std::unique_ptr<qf::Store> store_;
  std::unique_ptr<qf::Coordinator> coordinator_;
  std::unique_ptr<qf::QuicServer> server_;
  bool child_gone_ = false;

  std::vector<HandshakeFigures> handshakes_;
  std::size_t ready_ = 0, connect_failures_ = 0;
  double connect_s_ = 0;
  long rss_before_kb_ = 0, rss_after_kb_ = 0, agents_rss_kb_ = 0;
  std::size_t online_ = 0;
  std::uint64_t sessions_udp_drops_ = 0;
  std::vector<PushFigures> pushes_;
  v1::Task task_;
  struct {
    bool done = false;
    std::size_t agents = 0, batch = 0, window = 0;
    std::uint64_t acked = 0, rejected = 0, ingested = 0, commits = 0;
    double seconds = 0, ack_p50_ms = 0, ack_p99_ms = 0, coordinator_cpu_s = 0, agents_cpu_s = 0;
    std::uint64_t udp_drops = 0;
  } ingest_;

  bool run_until(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
    return quartzflow::bench::run_io_until(io_, done, timeout, std::chrono::milliseconds{2});
  }

  /// Runs the coordinator until the child answers `reply` (its words), or gives
  /// up.
  std::optional<std::vector<std::string>> await(const std::string& reply, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline && !child_gone_) {
      io_.run_for(2ms);
      std::string line;
      while (control_.next(line)) {
        auto words = split(line);
        if (!words.empty() && words[0] == reply) return words;
      }
      int status = 0;
      if (control_.closed() || ::waitpid(child_, &status, WNOHANG) == child_) {
        child_gone_ = true;
        std::fprintf(stderr, "the agents' process ended unexpectedly\n");
      }
    }
    if (!child_gone_) std::fprintf(stderr, "no %s from the agents' process in time\n", reply.c_str());
    return std::nullopt;
  }

  HandshakeFigures handshake_run(std::size_t concurrency) {
    HandshakeFigures f;
    f.count = options_.handshakes;
    f.concurrency = concurrency;
    qf::QuicOptions quic_options;
    quic_options.tls = pki_.coordinator;
    qf::QuicServer server(io_.get_executor(), quic_options);
    std::string detail;
    if (server.listen(
            "127.0.0.1", 0, [](std::shared_ptr<qf::Connection>) {}, detail)) {
      std::fprintf(stderr, "handshake server: %s\n", detail.c_str());
      return f;
    }
    progress("handshakes: %zu, %zu in flight", f.count, concurrency);
    const double cpu = cpu_seconds();
    const auto drops = udp_receive_drops();
    control_.send("HS " + std::to_string(server.port()) + " " + std::to_string(f.count) + " " +
                  std::to_string(concurrency));
    if (auto words = await("HS_DONE", std::chrono::milliseconds(30'000 + f.count * 50))) {
      f.ok = std::stoull(words->at(1));
      f.failed = std::stoull(words->at(2));
      f.seconds = std::stod(words->at(3));
    }
    f.server_cpu_s = cpu_seconds() - cpu;
    // The server completes the handshake on the client's Finished, just after
    // the client.
    run_until([&] { return server.stats().connections_accepted + server.stats().handshakes_failed >= f.count; }, 2s);
    f.server_accepted = server.stats().connections_accepted;
    f.udp_drops = udp_receive_drops() - drops;
    server.close();
    io_.poll();
    progress("  %zu ok, %zu failed in %.2f s", f.ok, f.failed, f.seconds);
    return f;
  }

  std::string start_coordinator() {
    qf::error_code ec;
    std::string detail;
    store_ = qf::open_sqlite_store(io_.get_executor(),
                                   qf::SqliteStoreOptions{(dir_ / "coordinator.db").string(), 1ms, 64}, ec, &detail);
    if (!store_) return "cannot open the coordinator store: " + detail;
    qf::CoordinatorOptions coordinator_options;
    coordinator_options.agent_grace = 100ms;
    coordinator_ = std::make_unique<qf::Coordinator>(io_.get_executor(), *store_, coordinator_options);
    std::optional<qf::error_code> started;
    coordinator_->start([&](qf::error_code start_ec) { started = start_ec; });
    if (!run_until([&] { return started.has_value(); }, 30s) || *started) return "the coordinator did not start";
    qf::QuicOptions quic_options;
    quic_options.tls = pki_.coordinator;
    server_ = std::make_unique<qf::QuicServer>(io_.get_executor(), quic_options);
    if (server_->listen(
            "127.0.0.1", 0,
            [this](std::shared_ptr<qf::Connection> c) {
              if (coordinator_) coordinator_->accept(std::move(c));
            },
            detail))
      return "cannot listen: " + detail;
    return {};
  }

  bool sessions() {
    const std::size_t n = options_.agents;
    run_until([] { return false; }, 300ms);
    ::malloc_trim(0);
    rss_before_kb_ = rss_kb();
    const auto drops = udp_receive_drops();
    progress(
        "sessions: %zu agents, %zu handshakes in flight (coordinator RSS "
        "%ld kB)",
        n, options_.connect_concurrency, rss_before_kb_);
    control_.send("AGENTS " + std::to_string(server_->port()) + " " + std::to_string(n) + " " +
                  std::to_string(options_.connect_concurrency));
    auto words = await("AGENTS_DONE", std::chrono::milliseconds(60'000 + n * 20));
    if (!words) return false;
    ready_ = std::stoull(words->at(1));
    connect_failures_ = std::stoull(words->at(2));
    connect_s_ = std::stod(words->at(3));
    agents_rss_kb_ = std::stol(words->at(4));
    // The last ConfigAcks and agent rows reach the coordinator and the store.
    run_until([] { return false; }, 1s);
    store_->flush();
    online_ = coordinator_->dispatcher().online_agents().size();
    sessions_udp_drops_ = udp_receive_drops() - drops;
    rss_after_kb_ = rss_kb();
    progress(
        "  %zu ready, %zu failed in %.2f s; %zu online at the "
        "coordinator; RSS %ld kB",
        ready_, connect_failures_, connect_s_, online_, rss_after_kb_);
    return ready_ == n;
  }

  bool push(std::size_t k) {
    PushFigures f;
    control_.send("ARM");
    if (!await("ARMED", 10s)) return false;
    std::optional<qf::CatalogResult<v1::Task>> result;
    auto done = [&](qf::CatalogResult<v1::Task> r) { result = std::move(r); };
    const double cpu = cpu_seconds();
    const auto drops = udp_receive_drops();
    const auto pushes_before = coordinator_->dispatcher().stats().pushes_sent;
    const std::int64_t t0 = wall_us();
    const auto start = Clock::now();
    if (k == 0) {
      f.what = "create";
      v1::Task task;
      task.set_id(k_task_id);
      task.set_name(k_task_id);
      task.set_enabled(true);
      task.set_all_agents(true);
      task.mutable_plugin()->set_name("bench.noop");
      task.mutable_placement()->set_mode(v1::PLACEMENT_MODE_ALL);
      task.mutable_schedule()->mutable_manual();
      coordinator_->create_task(std::move(task), qf::Actor{"bench", ""}, done);
    } else {
      f.what = "update";
      v1::Task task = task_;
      task.set_description("change " + std::to_string(k));
      coordinator_->update_task(std::move(task), false, qf::Actor{"bench", ""}, done);
    }
    if (!run_until([&] { return result.has_value(); }, 30s)) return false;
    f.commit_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    if (!*result) {
      std::fprintf(stderr, "%s_task failed: %s\n", f.what.c_str(), result->error.message().c_str());
      return false;
    }
    task_ = result->value;
    control_.send("PUSH_WAIT " + std::to_string(task_.config_version()) + " " + std::to_string(t0) + " 30");
    auto words = await("PUSH_DONE", 40s);
    if (!words) return false;
    f.coordinator_cpu_s = cpu_seconds() - cpu;
    f.received = std::stoull(words->at(1));
    f.online = std::stoull(words->at(2));
    f.p50_ms = std::stod(words->at(3));
    f.p99_ms = std::stod(words->at(4));
    f.max_ms = std::stod(words->at(5));
    f.agents_cpu_s = std::stod(words->at(6));
    f.udp_drops = udp_receive_drops() - drops;
    f.pushes_sent = coordinator_->dispatcher().stats().pushes_sent - pushes_before;
    progress(
        "push %zu (%s, version %lld): %zu of %zu agents, p50 %.1f ms, p99 "
        "%.1f ms, max %.1f ms",
        k, f.what.c_str(), static_cast<long long>(task_.config_version()), f.received, f.online, f.p50_ms, f.p99_ms,
        f.max_ms);
    pushes_.push_back(f);
    return f.received == f.online;
  }

  bool ingest() {
    auto& f = ingest_;
    f.agents = options_.ingest_agents;
    f.batch = options_.batch;
    f.window = options_.window;
    const auto ingested_before = coordinator_->dispatcher().stats().records_ingested;
    const auto commits_before = store_->metrics().commits;
    const double cpu = cpu_seconds();
    const auto drops = udp_receive_drops();
    progress("ingest: %zu agents, batches of %zu, %zu in flight each, %.0f s", f.agents, f.batch, f.window,
             options_.ingest_seconds);
    control_.send("INGEST " + std::to_string(f.agents) + " " + std::to_string(f.batch) + " " +
                  std::to_string(f.window) + " " + std::to_string(options_.ingest_seconds) + " " + k_task_id + " " +
                  std::to_string(task_.revision()));
    auto words =
        await("INGEST_DONE", std::chrono::milliseconds(40'000 + static_cast<long>(options_.ingest_seconds * 1000)));
    if (!words) return false;
    f.coordinator_cpu_s = cpu_seconds() - cpu;
    f.acked = std::stoull(words->at(1));
    f.rejected = std::stoull(words->at(2));
    f.seconds = std::stod(words->at(3));
    f.ack_p50_ms = std::stod(words->at(5));
    f.ack_p99_ms = std::stod(words->at(6));
    f.agents_cpu_s = std::stod(words->at(7));
    f.ingested = coordinator_->dispatcher().stats().records_ingested - ingested_before;
    f.commits = store_->metrics().commits - commits_before;
    f.udp_drops = udp_receive_drops() - drops;
    f.done = true;
    progress("  %llu acked, %llu rejected in %.2f s", static_cast<unsigned long long>(f.acked),
             static_cast<unsigned long long>(f.rejected), f.seconds);
    return f.rejected == 0 && f.acked > 0;
  }

  void print_table() {
    std::printf(
        "\nqf-bench-quic: QUIC (ngtcp2 + GnuTLS, mutual TLS) on "
        "loopback; coordinator in one process, agents in another\n\n");
    std::printf("| what | figure |\n|---|---|\n");
    for (const auto& h : handshakes_) {
      const double rate = h.seconds > 0 ? static_cast<double>(h.ok) / h.seconds : 0;
      const std::string how =
          h.concurrency == 1 ? "sequential" : "with " + std::to_string(h.concurrency) + " in flight";
      std::printf(
          "| handshakes, %zu %s | %.0f/s (%zu ok, %zu failed, %.2f s; "
          "server accepted %zu; server process CPU %.2f s = %.0f us "
          "each; UDP drops %llu) |\n",
          h.count, how.c_str(), rate, h.ok, h.failed, h.seconds, h.server_accepted, h.server_cpu_s,
          h.ok > 0 ? h.server_cpu_s * 1e6 / static_cast<double>(h.ok) : 0.0,
          static_cast<unsigned long long>(h.udp_drops));
    }
    const double per_session_kb =
        ready_ > 0 ? static_cast<double>(rss_after_kb_ - rss_before_kb_) / static_cast<double>(ready_) : 0;
    std::printf(
        "| idle sessions (registered, snapshot acked) | %zu of %zu in %.1f s "
        "(%zu failed); %zu online at the coordinator; UDP drops %llu |\n",
        ready_, options_.agents, connect_s_, connect_failures_, online_,
        static_cast<unsigned long long>(sessions_udp_drops_));
    std::printf(
        "| coordinator memory per idle session | %.1f kB (VmRSS %ld -> %ld kB; "
        "agents' process %ld kB = %.1f kB per simulated agent) |\n",
        per_session_kb, rss_before_kb_, rss_after_kb_, agents_rss_kb_,
        ready_ > 0 ? static_cast<double>(agents_rss_kb_) / static_cast<double>(ready_) : 0.0);
    for (std::size_t k = 0; k < pushes_.size(); ++k) {
      const auto& p = pushes_[k];
      std::printf(
          "| config push %zu (%s all_agents task), call to receipt | "
          "p50 %.1f ms, p99 %.1f ms, max %.1f ms (%zu of %zu agents; "
          "commit %.1f ms; %llu pushes sent; CPU coordinator %.2f s, "
          "agents %.2f s; UDP drops %llu) |\n",
          k + 1, p.what.c_str(), p.p50_ms, p.p99_ms, p.max_ms, p.received, p.online, p.commit_ms,
          static_cast<unsigned long long>(p.pushes_sent), p.coordinator_cpu_s, p.agents_cpu_s,
          static_cast<unsigned long long>(p.udp_drops));
    }
    if (ingest_.done) {
      const auto& f = ingest_;
      std::printf(
          "| durable result ingest | %.0f records/s (%llu acked in %.2f s; %zu "
          "agents x batches of %zu, %zu in flight each; ack p50 %.0f ms, p99 "
          "%.0f ms; %llu SQLite commits; CPU coordinator %.2f s, agents %.2f "
          "s; rejected %llu; UDP drops %llu) |\n",
          f.seconds > 0 ? static_cast<double>(f.acked) / f.seconds : 0.0, static_cast<unsigned long long>(f.acked),
          f.seconds, f.agents, f.batch, f.window, f.ack_p50_ms, f.ack_p99_ms,
          static_cast<unsigned long long>(f.commits), f.coordinator_cpu_s, f.agents_cpu_s,
          static_cast<unsigned long long>(f.rejected), static_cast<unsigned long long>(f.udp_drops));
    }
    std::fflush(stdout);
  }
};

}  // namespace

int main(int argc, char** argv) {
  BenchOptions options;
  if (!parse_options(argc, argv, options)) return 2;
  if (std::getenv("QF_BENCH_VERBOSE") != nullptr) quartzflow::bench::verbose = true;
  qf::set_log_level(quartzflow::bench::verbose ? "warn" : "error");

  Pki pki;
  double issue_s = 0;
  std::size_t issued = 0;
  std::printf("certificates in %s: checking %zu agent certificates\n", options.certs.c_str(), options.agents);
  std::fflush(stdout);
  if (auto error = prepare_pki(options.certs, options.agents, pki, issue_s, issued); !error.empty()) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 1;
  }
  if (issued > 0)
    std::printf("issued %zu agent certificates in %.1f s (%.2f ms each, 2 threads)\n", issued, issue_s,
                issue_s * 1000 / static_cast<double>(issued));

  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) {
    std::perror("socketpair");
    return 1;
  }
  std::fflush(nullptr);
  // Nothing asynchronous exists yet: the child starts clean and builds its own
  // io_context.
  const pid_t child = ::fork();
  if (child < 0) {
    std::perror("fork");
    return 1;
  }
  if (child == 0) {
    ::close(fds[0]);
    int rc = 1;
    try {
      AgentSide agents(fds[1], pki);
      rc = agents.run();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "agents' process: %s\n", e.what());
    }
    std::fflush(nullptr);
    ::_exit(rc);
  }
  ::close(fds[1]);
  int rc = 1;
  try {
    CoordinatorSide coordinator(fds[0], child, pki, options);
    rc = coordinator.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
  }
  int status = 0;
  ::waitpid(child, &status, 0);
  return rc;
}
