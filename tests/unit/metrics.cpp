// SPDX-License-Identifier: Apache-2.0
// RunMetrics (bounded series, lower-case labels, valid exposition text) and MetricsServer
// (GET /metrics over a real socket; bad, oversized or slow requests close the connection).
#include <algorithm>
#include <array>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <catch2/catch.hpp>

#include <utility>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>

#include <quartzflow/local_store.hpp>
#include <quartzflow/metrics.hpp>

#include "metrics/metrics_request.hpp"

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;
namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

v1::Execution final_record(const std::string& task, v1::ExecutionStatus status, std::int64_t ended_ms = 0,
                           v1::SkipReason reason = v1::SKIP_REASON_UNSPECIFIED) {
  v1::Execution r;
  r.set_execution_id(task + ":" + std::to_string(ended_ms));
  r.set_task_id(task);
  r.set_status(status);
  r.set_ended_unix_ms(ended_ms);
  r.set_skip_reason(reason);
  return r;
}

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

/// Parses Prometheus text format 0.0.4 strictly: every line is a comment (HELP/TYPE), or
/// `name{label="value",...} number`; fails the test on anything else.
std::vector<Sample> parse_exposition(const std::string& text) {
  static const std::regex sample_line(R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? ([-+0-9.eE]+|NaN|\+Inf|-Inf)$)");
  static const std::regex label(R"re(([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$))re");
  static const std::regex comment(R"(^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$)");
  std::vector<Sample> out;
  std::istringstream in(text);
  REQUIRE((text.empty() || text.back() == '\n'));
  for (std::string line; std::getline(in, line);) {
    INFO("line: " << line);
    if (line.rfind('#', 0) == 0) {
      REQUIRE(std::regex_match(line, comment));
      continue;
    }
    std::smatch m;
    REQUIRE(std::regex_match(line, m, sample_line));
    Sample s;
    s.name = m[1];
    std::string labels = m[3];
    while (!labels.empty()) {
      std::smatch l;
      REQUIRE(std::regex_search(labels, l, label, std::regex_constants::match_continuous));
      REQUIRE(s.labels.emplace(l[1], l[2]).second);
      labels = l.suffix();
    }
    s.value = std::stod(m[4]);
    out.push_back(std::move(s));
  }
  return out;
}

double value_of(const std::vector<Sample>& samples, const std::string& name,
                const std::map<std::string, std::string>& labels) {
  for (const auto& s : samples)
    if (s.name == name && s.labels == labels) return s.value;
  FAIL("no sample " << name);
  return -1;
}

}  // namespace

TEST_CASE("run metrics give N tasks series of their own and count the rest under _other", "[metrics]") {
  constexpr std::size_t n = 5;
  qf::RunMetrics metrics(qf::RunMetricsOptions{n, true});
  for (std::size_t i = 0; i < n + 10; ++i) {
    const auto task = "task-" + std::to_string(100 + i);
    metrics.count(final_record(task, v1::EXECUTION_STATUS_SUCCESS, 1'700'000'000'000 + static_cast<int>(i)),
                  [](const std::string& id) { return id == "task-100" ? std::string("Web") : std::string(); });
    metrics.count(final_record(task, v1::EXECUTION_STATUS_FAILURE, 5));
  }
  metrics.count(final_record("task-100", v1::EXECUTION_STATUS_RUNNING));  // not final: not counted
  CHECK(metrics.task_series() == n);
  std::string text;
  metrics.write(text, "qf_");
  const auto samples = parse_exposition(text);
  std::set<std::string> tasks;
  std::size_t runs_lines = 0;
  for (const auto& s : samples) {
    for (const auto& [key, value] : s.labels)
      if (key == "status" || key == "reason")
        CHECK(std::none_of(value.begin(), value.end(), [](char c) { return c >= 'A' && c <= 'Z'; }));
    if (s.name != "qf_runs_total") continue;
    ++runs_lines;
    tasks.insert(s.labels.at("task"));
  }
  CHECK(tasks.size() == n + 1);  // the cap and _other
  CHECK(tasks.count("_other") == 1);
  CHECK(runs_lines == (n + 1) * 6);
  CHECK(value_of(samples, "qf_runs_total", {{"task", "task-100"}, {"group", "Web"}, {"status", "success"}}) == 1);
  CHECK(value_of(samples, "qf_runs_total", {{"task", "task-101"}, {"group", "_none"}, {"status", "failure"}}) == 1);
  CHECK(value_of(samples, "qf_runs_total", {{"task", "_other"}, {"group", "_other"}, {"status", "success"}}) == 10);
  CHECK(value_of(samples, "qf_runs_total", {{"task", "_other"}, {"group", "_other"}, {"status", "missed"}}) == 0);
  CHECK(value_of(samples, "qf_task_last_success_timestamp_seconds", {{"task", "task-104"}, {"group", "_none"}}) ==
        Approx(1'700'000'000.004));
  std::size_t gauges = 0;
  for (const auto& s : samples) gauges += s.name == "qf_task_last_success_timestamp_seconds" ? 1 : 0;
  CHECK(gauges == n);
}

TEST_CASE("run metrics count MISSED and SKIPPED by reason, lower case, and escape label values", "[metrics]") {
  qf::RunMetrics metrics(qf::RunMetricsOptions{10, false});
  metrics.count(final_record("a\"b\\c\nd", v1::EXECUTION_STATUS_MISSED, 1, v1::SKIP_REASON_MISFIRE));
  metrics.count(final_record("t", v1::EXECUTION_STATUS_MISSED, 2, v1::SKIP_REASON_MISFIRE));
  metrics.count(final_record("t", v1::EXECUTION_STATUS_SKIPPED, 3, v1::SKIP_REASON_OVERLAP));
  metrics.count(final_record("t", v1::EXECUTION_STATUS_SKIPPED, 4, v1::SKIP_REASON_NO_AGENT));
  metrics.count(final_record("t", v1::EXECUTION_STATUS_SKIPPED, 5, v1::SKIP_REASON_NO_AGENT));
  std::string text;
  metrics.write(text, "qf_agent_");
  const auto samples = parse_exposition(text);
  CHECK(value_of(samples, "qf_agent_runs_missed_total", {}) == 2);
  CHECK(value_of(samples, "qf_agent_runs_skipped_total", {{"reason", "overlap"}}) == 1);
  CHECK(value_of(samples, "qf_agent_runs_skipped_total", {{"reason", "no_agent"}}) == 2);
  CHECK(value_of(samples, "qf_agent_runs_skipped_total", {{"reason", "queue_full"}}) == 0);
  CHECK(value_of(samples, "qf_agent_runs_total", {{"task", "t"}, {"status", "skipped"}}) == 3);
  CHECK(value_of(samples, "qf_agent_runs_total", {{"task", R"(a\"b\\c\nd)"}, {"status", "missed"}}) == 1);
  for (const auto& s : samples) CHECK(s.labels.count("group") == 0);
}

TEST_CASE("a last success read from the store takes a series under the cap and never goes back", "[metrics]") {
  qf::RunMetrics metrics(qf::RunMetricsOptions{2, true});
  metrics.note_last_success("a", "g", 5'000);
  metrics.note_last_success("b", "", 6'000);
  metrics.note_last_success("c", "g", 7'000);  // over the cap: left out
  metrics.count(final_record("a", v1::EXECUTION_STATUS_SUCCESS, 9'000));
  metrics.count(final_record("b", v1::EXECUTION_STATUS_SUCCESS, 1'000));  // older than the stored one
  CHECK(metrics.task_series() == 2);
  std::string text;
  metrics.write(text, "qf_");
  const auto samples = parse_exposition(text);
  CHECK(value_of(samples, "qf_task_last_success_timestamp_seconds", {{"task", "a"}, {"group", "g"}}) == 9);
  CHECK(value_of(samples, "qf_task_last_success_timestamp_seconds", {{"task", "b"}, {"group", "_none"}}) == 6);
  CHECK(value_of(samples, "qf_runs_total", {{"task", "a"}, {"group", "g"}, {"status", "success"}}) == 1);
  for (const auto& s : samples) CHECK((s.labels.count("task") == 0 || s.labels.at("task") != "c"));
}

TEST_CASE("the metrics request parser takes GET /metrics and refuses what is not HTTP", "[metrics]") {
  using qf::detail::MetricsRequest;
  using qf::detail::parse_metrics_request;
  CHECK(parse_metrics_request("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n") == MetricsRequest::metrics);
  CHECK(parse_metrics_request("GET /metrics?x=1 HTTP/1.0\r\n\r\n") == MetricsRequest::metrics);
  CHECK(parse_metrics_request("GET /metrics HTTP/1.1\r\nHost: x\r\n") == MetricsRequest::incomplete);
  CHECK(parse_metrics_request("GET /metr") == MetricsRequest::incomplete);
  CHECK(parse_metrics_request("GET / HTTP/1.1\r\n\r\n") == MetricsRequest::not_found);
  CHECK(parse_metrics_request("POST /metrics HTTP/1.1\r\n\r\n") == MetricsRequest::bad_method);
  CHECK(parse_metrics_request("GET /metrics HTTP/2\r\n\r\n") == MetricsRequest::malformed);
  CHECK(parse_metrics_request("GET metrics HTTP/1.1\r\n\r\n") == MetricsRequest::malformed);
  CHECK(parse_metrics_request("get /metrics HTTP/1.1\r\n\r\n") == MetricsRequest::malformed);
  CHECK(parse_metrics_request("GET /metrics HTTP/1.1\r\nX: \x01\r\n\r\n") == MetricsRequest::malformed);
  CHECK(parse_metrics_request(std::string("\x16\x03\x01\x02\x00", 5)) == MetricsRequest::malformed);  // TLS
  CHECK(parse_metrics_request("GET  HTTP/1.1\r\n\r\n") == MetricsRequest::malformed);
  // Bytes after the head's blank line never change the decision (a pipelined request, a body).
  CHECK(parse_metrics_request("GET /metrics HTTP/1.1\r\n\r\n\x01garbage") == MetricsRequest::metrics);
  CHECK(parse_metrics_request("GET /a\nb HTTP/1.1\r\n\r\n") == MetricsRequest::malformed);  // a bare LF in the line
}

namespace {

/// Sends `request` to the server and returns everything it answers until it closes.
std::string exchange(asio::io_context& io, std::uint16_t port, const std::string& request, bool& closed) {
  asio::ip::tcp::socket socket(io);
  socket.connect({asio::ip::make_address("127.0.0.1"), port});
  if (!request.empty()) asio::write(socket, asio::buffer(request));
  std::string answer;
  std::array<char, 4096> buffer{};
  closed = false;
  socket.non_blocking(true);
  const auto deadline = std::chrono::steady_clock::now() + 3s;
  while (std::chrono::steady_clock::now() < deadline) {
    io.run_for(5ms);
    qf::error_code ec;
    const auto n = socket.read_some(asio::buffer(buffer), ec);
    if (ec == asio::error::would_block) continue;
    if (ec) {
      closed = true;
      break;
    }
    answer.append(buffer.data(), n);
  }
  return answer;
}

}  // namespace

TEST_CASE("the metrics server answers GET /metrics and closes bad, oversized and slow requests", "[metrics]") {
  asio::io_context io;
  qf::MetricsServerOptions options;
  options.port = 0;
  options.max_request_bytes = 1024;
  options.request_timeout = 300ms;
  int renders = 0;
  qf::MetricsServer server(io.get_executor(), options, [&] {
    ++renders;
    return std::string("qf_test_total 7\n");
  });
  server.listen();
  REQUIRE(server.port() != 0);
  bool closed = false;

  auto ok = exchange(io, server.port(), "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", closed);
  CHECK(closed);
  CHECK(ok.rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
  CHECK(ok.find("Content-Type: text/plain; version=0.0.4") != std::string::npos);
  CHECK(ok.find("Content-Length: 16\r\n") != std::string::npos);
  CHECK(ok.substr(ok.size() - 16) == "qf_test_total 7\n");
  CHECK(renders == 1);

  CHECK(exchange(io, server.port(), "GET /other HTTP/1.1\r\n\r\n", closed).rfind("HTTP/1.1 404", 0) == 0);
  CHECK(exchange(io, server.port(), "DELETE /metrics HTTP/1.1\r\n\r\n", closed).rfind("HTTP/1.1 405", 0) == 0);

  // Bad input, too much of it, or too slow: closed without an answer, nothing rendered.
  CHECK(exchange(io, server.port(), std::string("\x16\x03\x01\x00\x10garbage", 12), closed).empty());
  CHECK(closed);
  CHECK(exchange(io, server.port(), "GET /metrics HTTP/1.1\r\nX: " + std::string(4000, 'a'), closed).empty());
  CHECK(closed);
  CHECK(exchange(io, server.port(), "GET /metrics HTTP/1.1\r\n", closed).empty());  // never finished
  CHECK(closed);
  CHECK(renders == 1);

  // Still serving after all that.
  CHECK(exchange(io, server.port(), "GET /metrics HTTP/1.0\r\n\r\n", closed).rfind("HTTP/1.1 200 OK", 0) == 0);
  CHECK(renders == 2);
}

TEST_CASE("the metrics server refuses a bad listen address naming it", "[metrics]") {
  asio::io_context io;
  qf::MetricsServerOptions options;
  options.host = "localhost:x";
  qf::MetricsServer server(io.get_executor(), options, [] { return std::string(); });
  qf::error_code ec;
  std::string detail;
  server.listen(ec, &detail);
  CHECK(ec == qf::errc::invalid_argument);
  CHECK(detail.find("\"localhost:x\"") != std::string::npos);
}

TEST_CASE("the local store counts the records no coordinator has acknowledged (the sync backlog)", "[metrics]") {
  asio::io_context io;
  qf::LocalStoreOptions options;
  options.path = ":memory:";
  options.max_batch_delay = 0ms;
  auto store = qf::LocalStore::open(io.get_executor(), options);
  const auto wait = [&](bool& done) {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (!done && std::chrono::steady_clock::now() < deadline) {
      if (io.stopped()) io.restart();  // no work queued between the store's completions
      io.run_one_for(50ms);
    }
    REQUIRE(done);
  };
  qf::error_code ec;
  CHECK(store->unsynced_count(ec) == 0);
  CHECK_FALSE(ec);
  for (int i = 0; i < 3; ++i) {
    auto record = final_record("t", v1::EXECUTION_STATUS_SUCCESS, 1'000 * (i + 1));
    record.set_scheduled_unix_ms(1'000 * (i + 1));
    record.set_status(i == 2 ? v1::EXECUTION_STATUS_RUNNING : v1::EXECUTION_STATUS_SUCCESS);
    bool done = false;
    store->async_record(record, "", [&](qf::error_code e) {
      CHECK_FALSE(e);
      done = true;
    });
    wait(done);
  }
  CHECK(store->unsynced_count(ec) == 3);  // final or not, until acknowledged
  bool synced = false;
  store->async_mark_synced({"t:1000", "t:2000"}, [&](qf::error_code e) {
    CHECK_FALSE(e);
    synced = true;
  });
  wait(synced);
  CHECK(store->unsynced_count(ec) == 1);
  CHECK_FALSE(ec);
}
