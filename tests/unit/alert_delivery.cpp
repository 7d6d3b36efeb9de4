// SPDX-License-Identifier: Apache-2.0
// The delivery worker (src/alerts/delivery_worker.hpp) against real local receivers
// (tests/alerts/receivers.py: HTTP endpoints that check signatures as DingTalk, Feishu and
// QuartzFlow's own receivers do, and an aiosmtpd server with STARTTLS and AUTH), over an
// in-memory outbox; and the retry rule.
#include <algorithm>
#include <deque>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <utility>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <catch2/catch.hpp>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include "alerts/delivery_worker.hpp"
#include "common/clock.hpp"
#include "quiet_log.hpp"
#include "run_until.hpp"
#include "temp_dir.hpp"

extern char** environ;

namespace qa = quartzflow::alerts;
namespace v1 = quartzflow::v1;
namespace pb = google::protobuf;
using quartzflow::testing::run_until;
using quartzflow::testing::TempDir;

namespace {

/// tests/alerts/receivers.py as a child process; stopped (stdin closed, SIGTERM) at the end.
class Receivers {
 public:
  explicit Receivers(const TempDir& dir) : records_(dir.file("records.jsonl")) {
    int out[2];
    int in[2];
    REQUIRE(::pipe(out) == 0);
    REQUIRE(::pipe(in) == 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_adddup2(&actions, in[0], 0);
    posix_spawn_file_actions_addclose(&actions, out[0]);
    posix_spawn_file_actions_addclose(&actions, in[1]);
    std::vector<std::string> args = {QF_ALERT_PYTHON, QF_ALERT_RECEIVERS, "--records", records_,
                                     "--dir",         dir.path().string()};
    std::vector<char*> argv;
    for (auto& arg : args) argv.push_back(arg.data());
    argv.push_back(nullptr);
    REQUIRE(posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ) == 0);
    posix_spawn_file_actions_destroy(&actions);
    ::close(out[1]);
    ::close(in[0]);
    stdin_ = in[1];
    std::string line;
    char c = 0;
    while (::read(out[0], &c, 1) == 1 && c != '\n') line += c;
    ::close(out[0]);
    INFO("receivers.py said: " << line);
    REQUIRE(std::sscanf(line.c_str(), "http=%d https=%d smtp=%d smtps=%d", &http_port_, &https_port_, &smtp_port_,
                        &smtps_port_) == 4);
    cert_ = line.substr(line.find("cert=") + 5);
  }
  ~Receivers() {
    ::close(stdin_);
    ::kill(pid_, SIGTERM);
    int status = 0;
    ::waitpid(pid_, &status, 0);
  }
  Receivers(const Receivers&) = delete;
  Receivers& operator=(const Receivers&) = delete;

  std::string url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(http_port_) + path; }
  std::string https_url(const std::string& path) const {
    return "https://127.0.0.1:" + std::to_string(https_port_) + path;
  }
  int smtp_port() const { return smtp_port_; }
  int smtps_port() const { return smtps_port_; }
  const std::string& cert() const { return cert_; }

  /// Every request received so far, in order.
  std::vector<pb::Struct> records() const {
    std::vector<pb::Struct> out;
    std::ifstream in(records_);
    std::string line;
    while (std::getline(in, line)) {
      pb::Struct record;
      if (pb::util::JsonStringToMessage(line, &record).ok()) out.push_back(std::move(record));
    }
    return out;
  }
  std::vector<pb::Struct> records_for(const std::string& path) const {
    std::vector<pb::Struct> out;
    for (auto& record : records())
      if (record.fields().contains("path") && record.fields().at("path").string_value() == path) out.push_back(record);
    return out;
  }

 private:
  std::string records_;
  pid_t pid_ = -1;
  int stdin_ = -1;
  int http_port_ = 0;
  int https_port_ = 0;
  int smtp_port_ = 0;
  int smtps_port_ = 0;
  std::string cert_;
};

std::string field(const pb::Struct& record, const std::string& name) {
  const auto it = record.fields().find(name);
  return it == record.fields().end() ? std::string{} : it->second.string_value();
}
std::string header(const pb::Struct& record, const std::string& name) {
  const auto& headers = record.fields().at("headers").struct_value().fields();
  const auto it = headers.find(name);
  return it == headers.end() ? std::string{} : it->second.string_value();
}

/// The Store's outbox rules in memory: due = PENDING and next attempt passed, oldest first.
class FakeOutbox final : public qa::DeliveryOutbox {
 public:
  explicit FakeOutbox(boost::asio::io_context& io) : io_(io) {}

  void add(qa::DueDelivery due) {
    if (due.delivery.state() == v1::DELIVERY_STATE_UNSPECIFIED) due.delivery.set_state(v1::DELIVERY_STATE_PENDING);
    order_.push_back(due.delivery.id());
    rows_[due.delivery.id()] = std::move(due);
  }
  const v1::Delivery& row(const std::string& id) const { return rows_.at(id).delivery; }

  void async_due(std::int64_t now_unix_ms, int limit, DueHandler done) override {
    std::vector<qa::DueDelivery> due;
    for (const auto& id : order_) {
      const auto& row = rows_.at(id);
      if (static_cast<int>(due.size()) >= limit) break;
      if (row.delivery.state() == v1::DELIVERY_STATE_PENDING && row.delivery.next_attempt_unix_ms() <= now_unix_ms)
        due.push_back(row);
    }
    boost::asio::post(io_, [done = std::move(done), due = std::move(due)]() mutable { done({}, std::move(due)); });
  }

  void async_record(const std::string& id, const v1::DeliveryAttempt& attempt, v1::DeliveryState state,
                    std::int64_t next_attempt_unix_ms, RecordHandler done) override {
    auto& row = rows_.at(id).delivery;
    *row.add_attempts() = attempt;
    row.set_attempt_count(row.attempt_count() + 1);
    row.set_state(state);
    row.set_next_attempt_unix_ms(next_attempt_unix_ms);
    boost::asio::post(io_, [done = std::move(done)] { done({}); });
  }

 private:
  boost::asio::io_context& io_;
  std::map<std::string, qa::DueDelivery> rows_;
  std::vector<std::string> order_;
};

qa::DeliveryWorkerOptions fast_options() {
  qa::DeliveryWorkerOptions options;
  options.poll_interval = std::chrono::milliseconds{30};
  options.first_retry = std::chrono::milliseconds{100};
  options.max_retry = std::chrono::milliseconds{400};
  options.jitter = 0;
  return options;
}

v1::Channel make_channel(const std::string& id, v1::ChannelType type, const std::string& url,
                         const std::string& secret = {}) {
  v1::Channel channel;
  channel.set_id(id);
  channel.set_type(type);
  channel.set_url(url);
  if (!secret.empty()) channel.mutable_secret()->set_value(secret);
  channel.set_timeout_seconds(5);
  return channel;
}

qa::DueDelivery notification_to(const std::string& channel_id, const std::string& id) {
  qa::DueDelivery due;
  due.delivery.set_id("d-" + id);
  due.delivery.set_kind(v1::DELIVERY_KIND_NOTIFICATION);
  due.delivery.set_state(v1::DELIVERY_STATE_PENDING);
  due.delivery.set_channel_id(channel_id);
  due.delivery.set_created_unix_ms(quartzflow::detail::now_unix_ms());
  auto* n = due.delivery.mutable_notification();
  n->set_id(id);
  n->set_kind(v1::NOTIFICATION_KIND_FIRING);
  n->set_rule_id("rule-1");
  n->set_severity(v1::ALERT_SEVERITY_WARNING);
  auto* item = n->add_items();
  item->mutable_alert()->set_task_id("backup");
  item->mutable_alert()->set_state(v1::ALERT_STATE_FIRING);
  item->set_status(v1::EXECUTION_STATUS_FAILURE);
  // `${` is the HTTP executor's placeholder syntax: it must reach receivers as written.
  item->set_reason("exit code 1 in ${HOME} $${x}");
  return due;
}

/// A worker over a FakeOutbox with these channels; secrets are their inline values.
struct Rig {
  quartzflow::testing::QuietLog quiet;  // the failed attempts are logged on purpose
  boost::asio::io_context io;
  FakeOutbox* outbox = nullptr;
  std::map<std::string, v1::Channel> channels;
  std::unique_ptr<qa::DeliveryWorker> worker;

  explicit Rig(qa::DeliveryWorkerOptions options = fast_options()) {
    auto box = std::make_unique<FakeOutbox>(io);
    outbox = box.get();
    worker = std::make_unique<qa::DeliveryWorker>(
        io.get_executor(), std::move(box),
        [this](const std::string& id) -> std::optional<v1::Channel> {
          const auto it = channels.find(id);
          if (it == channels.end()) return std::nullopt;
          return it->second;
        },
        [](const v1::Secret& secret) {
          quartzflow::Result<std::string> result;
          result.value = secret.value();
          return result;
        },
        std::move(options));
  }
  void add_channel(v1::Channel channel) { channels[channel.id()] = std::move(channel); }
  bool settle(const std::vector<std::string>& ids, std::chrono::milliseconds limit = std::chrono::seconds{20}) {
    return run_until(
        io,
        [&] {
          return std::all_of(ids.begin(), ids.end(), [&](const std::string& id) {
            return outbox->row(id).state() != v1::DELIVERY_STATE_PENDING;
          });
        },
        limit);
  }
};

}  // namespace

TEST_CASE("the retry rule backs off from 5 s doubling to 1 h and gives up by its limits", "[alerts]") {
  const qa::DeliveryWorkerOptions options;
  v1::Delivery notification;
  notification.set_kind(v1::DELIVERY_KIND_NOTIFICATION);
  notification.set_created_unix_ms(1);
  const std::int64_t now = 1'000'000;
  auto delay = [&](std::uint32_t attempts, double unit) {
    const auto plan = qa::plan_after_attempt(notification, qa::Verdict::retry, attempts, 10, now, options, unit);
    REQUIRE(plan.state == v1::DELIVERY_STATE_PENDING);
    return plan.next_attempt_unix_ms - now;
  };
  CHECK(delay(1, 0) == 5'000);
  CHECK(delay(2, 0) == 10'000);
  CHECK(delay(3, 0) == 20'000);
  CHECK(delay(11, 0) == 3'600'000);  // 5 s x 2^10 = 85 min, capped
  CHECK(delay(40, 0) == 3'600'000);
  CHECK(delay(2, 0.999) > 8'000);  // up to 20 % less at random, never more
  CHECK(delay(2, 0.999) <= 10'000);
  CHECK(qa::plan_after_attempt(notification, qa::Verdict::delivered, 1, 10, now, options, 0).state ==
        v1::DELIVERY_STATE_DELIVERED);
  CHECK(qa::plan_after_attempt(notification, qa::Verdict::give_up, 1, 10, now, options, 0).state ==
        v1::DELIVERY_STATE_FAILED);
  const auto day_later =
      qa::plan_after_attempt(notification, qa::Verdict::retry, 30, 10, 24 * 3'600'000 + 1, options, 0);
  CHECK(day_later.state == v1::DELIVERY_STATE_FAILED);
  CHECK(day_later.gave_up == "after 30 attempts over 24 h");
  CHECK(qa::plan_after_attempt(notification, qa::Verdict::retry, 30, 10, 24 * 3'600'000, options, 0).state ==
        v1::DELIVERY_STATE_PENDING);
  // Without a creation time the age runs from the first attempt, not from 1970.
  notification.set_created_unix_ms(0);
  CHECK(qa::plan_after_attempt(notification, qa::Verdict::retry, 1, 10, now, options, 0).state ==
        v1::DELIVERY_STATE_PENDING);
  notification.add_attempts()->set_at_unix_ms(now - 24 * 3'600'000);
  CHECK(qa::plan_after_attempt(notification, qa::Verdict::retry, 2, 10, now, options, 0).state ==
        v1::DELIVERY_STATE_FAILED);

  v1::Delivery callback;
  callback.set_kind(v1::DELIVERY_KIND_CALLBACK);
  CHECK(qa::plan_after_attempt(callback, qa::Verdict::retry, 2, 3, now, options, 0).state ==
        v1::DELIVERY_STATE_PENDING);
  const auto last = qa::plan_after_attempt(callback, qa::Verdict::retry, 3, 3, now, options, 0);
  CHECK(last.state == v1::DELIVERY_STATE_FAILED);
  CHECK(last.gave_up == "after 3 attempts");
}

TEST_CASE("every channel type reaches a real receiver, signatures checked the vendors' way", "[alerts][integration]") {
  TempDir dir("qf-alerts");
  Receivers receivers(dir);
  Rig rig;
  rig.add_channel(make_channel("hook", v1::CHANNEL_TYPE_WEBHOOK, receivers.url("/webhook/a"), "webhook-secret"));
  rig.add_channel(
      make_channel("ding", v1::CHANNEL_TYPE_DINGTALK, receivers.url("/dingtalk/a?access_token=T"), "SECdingtalk"));
  rig.add_channel(make_channel("lark", v1::CHANNEL_TYPE_FEISHU, receivers.url("/feishu/a"), "feishu-secret"));
  rig.add_channel(make_channel("slack", v1::CHANNEL_TYPE_SLACK, receivers.url("/slack/a")));
  rig.add_channel(make_channel("wecom", v1::CHANNEL_TYPE_WECOM, receivers.url("/wecom/a")));
  rig.add_channel(make_channel("pd", v1::CHANNEL_TYPE_PAGERDUTY, receivers.url("/pagerduty/a"), "routing-key"));
  std::vector<std::string> ids;
  for (const char* channel : {"hook", "ding", "lark", "slack", "wecom", "pd"}) {
    auto due = notification_to(channel, std::string("n-") + channel);
    ids.push_back(due.delivery.id());
    rig.outbox->add(std::move(due));
  }
  rig.worker->start();
  REQUIRE(rig.settle(ids));
  for (const auto& id : ids) {
    INFO(id << ": " << rig.outbox->row(id).DebugString());
    CHECK(rig.outbox->row(id).state() == v1::DELIVERY_STATE_DELIVERED);
    REQUIRE(rig.outbox->row(id).attempts_size() == 1);
    CHECK(rig.outbox->row(id).attempts(0).error().empty());
    CHECK(rig.outbox->row(id).attempts(0).http_status() / 100 == 2);
  }
  for (const char* path : {"/webhook/a", "/dingtalk/a", "/feishu/a"}) {
    const auto records = receivers.records_for(path);
    REQUIRE(records.size() == 1);
    INFO(path << ": " << field(records[0], "why"));
    CHECK(records[0].fields().at("verified").bool_value());
  }
  CHECK(header(receivers.records_for("/webhook/a")[0], "X-QuartzFlow-Notification-Id") == "n-hook");
  CHECK(field(receivers.records_for("/webhook/a")[0], "body").find("exit code 1 in ${HOME} $${x}") !=
        std::string::npos);
  const auto metrics = rig.worker->metrics();
  CHECK(metrics.by_channel_type[v1::CHANNEL_TYPE_DINGTALK].delivered == 1);
  CHECK(metrics.by_channel_type[v1::CHANNEL_TYPE_PAGERDUTY].delivered == 1);
  CHECK(metrics.prometheus_text().find(
            "qf_alert_deliveries_total{kind=\"notification\",channel_type=\"feishu\",result=\"delivered\"} 1\n") !=
        std::string::npos);
}

TEST_CASE("https receivers are verified against the channel's CA file", "[alerts][integration]") {
  TempDir dir("qf-alerts");
  Receivers receivers(dir);
  Rig rig;
  auto trusted =
      make_channel("trusted", v1::CHANNEL_TYPE_WEBHOOK, receivers.https_url("/webhook/tls"), "webhook-secret");
  trusted.set_ca_file(receivers.cert());
  rig.add_channel(trusted);
  // Without the CA file the self-signed certificate is refused (the system store lacks it).
  rig.add_channel(make_channel("untrusted", v1::CHANNEL_TYPE_WEBHOOK, receivers.https_url("/webhook/tls-refused")));
  rig.outbox->add(notification_to("trusted", "n1"));
  rig.outbox->add(notification_to("untrusted", "n2"));
  rig.worker->start();
  REQUIRE(rig.settle({"d-n1"}));
  REQUIRE(run_until(rig.io, [&] { return rig.outbox->row("d-n2").attempts_size() >= 1; }));
  CHECK(rig.outbox->row("d-n1").state() == v1::DELIVERY_STATE_DELIVERED);
  REQUIRE(receivers.records_for("/webhook/tls").size() == 1);
  CHECK(receivers.records_for("/webhook/tls")[0].fields().at("verified").bool_value());
  const auto& refused = rig.outbox->row("d-n2");
  CHECK(refused.state() == v1::DELIVERY_STATE_PENDING);
  CHECK(refused.attempts(0).http_status() == 0);
  CHECK(refused.attempts(0).error().find("failed verification") != std::string::npos);
  CHECK(receivers.records_for("/webhook/tls-refused").empty());
}

TEST_CASE("a signature the vendor refuses gives up on its error code", "[alerts][integration]") {
  TempDir dir("qf-alerts");
  Receivers receivers(dir);
  Rig rig;
  rig.add_channel(make_channel("ding", v1::CHANNEL_TYPE_DINGTALK, receivers.url("/dingtalk/wrong"), "SECnot-the-key"));
  rig.add_channel(make_channel("hook", v1::CHANNEL_TYPE_WEBHOOK, receivers.url("/webhook/wrong"), "not-the-key"));
  rig.outbox->add(notification_to("ding", "n1"));
  rig.outbox->add(notification_to("hook", "n2"));
  rig.worker->start();
  REQUIRE(rig.settle({"d-n1", "d-n2"}));
  const auto& ding = rig.outbox->row("d-n1");
  CHECK(ding.state() == v1::DELIVERY_STATE_FAILED);
  REQUIRE(ding.attempts_size() == 1);
  CHECK(ding.attempts(0).http_status() == 200);
  CHECK(ding.attempts(0).error() == "HTTP 200 with error code 310000: sign not match");
  const auto& hook = rig.outbox->row("d-n2");
  CHECK(hook.state() == v1::DELIVERY_STATE_FAILED);
  CHECK(hook.attempts(0).http_status() == 401);
  CHECK(rig.worker->metrics().by_channel_type[v1::CHANNEL_TYPE_DINGTALK].given_up == 1);
}

TEST_CASE("a receiver that fails for a while then recovers gets the backlog once", "[alerts][integration]") {
  TempDir dir("qf-alerts");
  Receivers receivers(dir);
  Rig rig;
  // The first 8 requests get 503: each of the 5 deliveries fails once or twice, then passes.
  rig.add_channel(make_channel("flaky", v1::CHANNEL_TYPE_WEBHOOK, receivers.url("/flaky/8/backlog")));
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    auto due = notification_to("flaky", "n" + std::to_string(i));
    ids.push_back(due.delivery.id());
    rig.outbox->add(std::move(due));
  }
  rig.worker->start();
  REQUIRE(rig.settle(ids));
  const auto records = receivers.records_for("/flaky/8/backlog");
  std::map<std::string, int> accepted;
  std::map<std::string, int> requests;
  for (const auto& record : records) {
    const auto id = header(record, "X-QuartzFlow-Notification-Id");
    ++requests[id];
    if (record.fields().at("status").number_value() == 200) ++accepted[id];
  }
  CHECK(records.size() == 13);
  for (int i = 0; i < 5; ++i) {
    const std::string id = "n" + std::to_string(i);
    const auto& row = rig.outbox->row("d-" + id);
    CHECK(row.state() == v1::DELIVERY_STATE_DELIVERED);
    CHECK(accepted[id] == 1);
    // Every attempt was recorded: the failed ones with the receiver's 503.
    CHECK(row.attempts_size() == requests[id]);
    for (int k = 0; k + 1 < row.attempts_size(); ++k) {
      CHECK(row.attempts(k).http_status() == 503);
      CHECK(row.attempts(k).error() == "HTTP 503");
    }
  }
  CHECK(rig.worker->metrics().by_channel_type[v1::CHANNEL_TYPE_WEBHOOK].failed_attempts == 8);
}

TEST_CASE("no more than max_in_flight deliveries are sent at once", "[alerts][integration]") {
  TempDir dir("qf-alerts");
  Receivers receivers(dir);
  auto options = fast_options();
  options.max_in_flight = 2;
  Rig rig(options);
  rig.add_channel(make_channel("slow", v1::CHANNEL_TYPE_WEBHOOK, receivers.url("/slow/0.2/bounded")));
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) {
    auto due = notification_to("slow", "n" + std::to_string(i));
    ids.push_back(due.delivery.id());
    rig.outbox->add(std::move(due));
  }
  rig.worker->start();
  REQUIRE(rig.settle(ids));
  const auto records = receivers.records_for("/slow/0.2/bounded");
  CHECK(records.size() == 6);
  double most = 0;
  for (const auto& record : records) most = std::max(most, record.fields().at("concurrent").number_value());
  CHECK(most == 2);
  for (const auto& id : ids) CHECK(rig.outbox->row(id).state() == v1::DELIVERY_STATE_DELIVERED);
}

TEST_CASE("a 4xx answer gives up at once, a slow receiver is retried after the timeout", "[alerts][integration]") {
  TempDir dir("qf-alerts");
  Receivers receivers(dir);
  Rig rig;
  rig.add_channel(make_channel("reject", v1::CHANNEL_TYPE_SLACK, receivers.url("/reject/x")));
  auto slow = make_channel("slow", v1::CHANNEL_TYPE_WEBHOOK, receivers.url("/slow-once/3/x"));
  slow.set_timeout_seconds(1);
  rig.add_channel(slow);
  rig.outbox->add(notification_to("reject", "n1"));
  rig.outbox->add(notification_to("slow", "n2"));
  rig.worker->start();
  REQUIRE(rig.settle({"d-n1", "d-n2"}));
  const auto& rejected = rig.outbox->row("d-n1");
  CHECK(rejected.state() == v1::DELIVERY_STATE_FAILED);
  REQUIRE(rejected.attempts_size() == 1);
  CHECK(rejected.attempts(0).http_status() == 400);
  CHECK(rejected.attempts(0).error() == "HTTP 400");

  const auto& retried = rig.outbox->row("d-n2");
  CHECK(retried.state() == v1::DELIVERY_STATE_DELIVERED);
  REQUIRE(retried.attempts_size() == 2);
  CHECK(retried.attempts(0).http_status() == 0);
  CHECK(retried.attempts(0).error() == "timeout: no complete answer within 1 s");
  CHECK(retried.attempts(0).duration_ms() >= 900);
  CHECK(retried.attempts(1).http_status() == 200);
  // At least once: the receiver saw both, with one id to deduplicate on.
  const auto records = receivers.records_for("/slow-once/3/x");
  CHECK(records.size() == 2);
  for (const auto& record : records) CHECK(header(record, "X-QuartzFlow-Notification-Id") == "n2");
}

TEST_CASE("result callbacks post the signed run record and stop after max_attempts", "[alerts][integration]") {
  TempDir dir("qf-alerts");
  Receivers receivers(dir);
  Rig rig;
  v1::Execution execution;
  execution.set_execution_id("backup:1700000000000:a1");
  execution.set_task_id("backup");
  execution.set_status(v1::EXECUTION_STATUS_FAILURE);
  execution.set_failure_reason("exit 1");

  qa::DueDelivery ok;
  ok.delivery.set_id("cb-ok");
  ok.delivery.set_kind(v1::DELIVERY_KIND_CALLBACK);
  ok.delivery.set_execution_id(execution.execution_id());
  ok.execution = execution;
  ok.callback.emplace();
  ok.callback->set_url(receivers.url("/webhook/cb"));
  ok.callback->mutable_secret()->set_value("webhook-secret");
  rig.outbox->add(ok);

  qa::DueDelivery down = ok;
  down.delivery.set_id("cb-down");
  down.callback->set_url(receivers.url("/flaky/100/cb"));
  down.callback->set_max_attempts(3);
  rig.outbox->add(down);

  qa::DueDelivery orphan = ok;
  orphan.delivery.set_id("cb-orphan");
  orphan.callback.reset();
  rig.outbox->add(orphan);

  rig.worker->start();
  REQUIRE(rig.settle({"cb-ok", "cb-down", "cb-orphan"}));
  CHECK(rig.outbox->row("cb-ok").state() == v1::DELIVERY_STATE_DELIVERED);
  const auto records = receivers.records_for("/webhook/cb");
  REQUIRE(records.size() == 1);
  CHECK(records[0].fields().at("verified").bool_value());
  CHECK(header(records[0], "X-QuartzFlow-Execution-Id") == execution.execution_id());
  v1::Execution received;
  REQUIRE(pb::util::JsonStringToMessage(field(records[0], "body"), &received).ok());
  CHECK(received.failure_reason() == "exit 1");

  const auto& failed = rig.outbox->row("cb-down");
  CHECK(failed.state() == v1::DELIVERY_STATE_FAILED);
  REQUIRE(failed.attempts_size() == 3);
  CHECK(failed.attempts(2).error() == "HTTP 503; gave up after 3 attempts");
  CHECK(receivers.records_for("/flaky/100/cb").size() == 3);

  CHECK(rig.outbox->row("cb-orphan").state() == v1::DELIVERY_STATE_FAILED);
  CHECK(rig.outbox->row("cb-orphan").attempts(0).error() == "the run's task no longer has callback 0");
  CHECK(rig.worker->metrics().callbacks.delivered == 1);
  CHECK(rig.worker->metrics().callbacks.given_up == 2);
}

TEST_CASE("e-mail goes through STARTTLS or TLS, and AUTH, to a real SMTP server", "[alerts][integration]") {
  TempDir dir("qf-alerts");
  Receivers receivers(dir);
  Rig rig;
  auto mail = make_channel("mail", v1::CHANNEL_TYPE_EMAIL, "");
  auto* email = mail.mutable_email();
  email->set_smtp_host("127.0.0.1");
  email->set_smtp_port(static_cast<std::uint32_t>(receivers.smtp_port()));
  email->set_username("alerts");
  email->mutable_password()->set_value("smtp-password");
  email->set_from("QuartzFlow <qf@example.com>");
  email->add_to("ops@example.com");
  email->set_ca_file(receivers.cert());
  mail.set_language("zh");
  rig.add_channel(mail);
  auto smtps = mail;
  smtps.set_id("smtps");
  smtps.mutable_email()->set_smtp_port(static_cast<std::uint32_t>(receivers.smtps_port()));
  smtps.mutable_email()->set_security(v1::SMTP_SECURITY_TLS);
  rig.add_channel(smtps);
  email->mutable_password()->set_value("wrong-password-123");
  mail.set_id("bad-login");
  rig.add_channel(mail);
  rig.outbox->add(notification_to("mail", "n1"));
  rig.outbox->add(notification_to("bad-login", "n2"));
  rig.outbox->add(notification_to("smtps", "n3"));
  rig.worker->start();
  REQUIRE(rig.settle({"d-n1", "d-n2", "d-n3"}));
  INFO(rig.outbox->row("d-n3").DebugString());
  CHECK(rig.outbox->row("d-n3").state() == v1::DELIVERY_STATE_DELIVERED);
  INFO(rig.outbox->row("d-n1").DebugString());
  CHECK(rig.outbox->row("d-n1").state() == v1::DELIVERY_STATE_DELIVERED);
  std::vector<pb::Struct> mails;
  for (const auto& record : receivers.records())
    if (record.fields().contains("smtp")) mails.push_back(record);
  REQUIRE(mails.size() == 2);
  std::sort(mails.begin(), mails.end(), [](const pb::Struct& a, const pb::Struct& b) {
    return field(a, "data").find("Notification-Id: n1") != std::string::npos &&
           field(b, "data").find("Notification-Id: n1") == std::string::npos;
  });
  CHECK(mails[1].fields().at("tls").bool_value());
  CHECK(mails[1].fields().at("authenticated").bool_value());
  CHECK(mails[0].fields().at("tls").bool_value());
  CHECK(mails[0].fields().at("authenticated").bool_value());
  CHECK(field(mails[0], "mail_from") == "qf@example.com");
  CHECK(mails[0].fields().at("rcpt_tos").list_value().values(0).string_value() == "ops@example.com");
  CHECK(field(mails[0], "data").find("Subject: =?UTF-8?B?") != std::string::npos);
  CHECK(field(mails[0], "data").find("X-QuartzFlow-Notification-Id: n1\r\n") != std::string::npos);

  const auto& refused = rig.outbox->row("d-n2");
  CHECK(refused.state() == v1::DELIVERY_STATE_FAILED);
  REQUIRE(refused.attempts_size() == 1);
  CHECK(refused.attempts(0).error().find("535") != std::string::npos);
  CHECK(refused.attempts(0).error().find("wrong-password-123") == std::string::npos);
}

TEST_CASE("missing, disabled and unreachable channels: failed, waiting, retried without leaking secrets",
          "[alerts][integration]") {
  Rig rig;
  // A port nothing listens on: bind one, note it, close it.
  boost::asio::ip::tcp::acceptor probe(rig.io, {boost::asio::ip::make_address("127.0.0.1"), 0});
  const auto port = probe.local_endpoint().port();
  probe.close();
  rig.add_channel(make_channel("wecom", v1::CHANNEL_TYPE_WECOM,
                               "http://127.0.0.1:" + std::to_string(port) + "/cgi-bin/webhook/send?key=SECRETKEY123"));
  auto disabled = make_channel("off", v1::CHANNEL_TYPE_SLACK, "http://127.0.0.1:1/x");
  disabled.set_disabled(true);
  rig.add_channel(disabled);
  rig.outbox->add(notification_to("wecom", "n1"));
  rig.outbox->add(notification_to("off", "n2"));
  rig.outbox->add(notification_to("gone", "n3"));
  rig.worker->start();
  REQUIRE(run_until(rig.io, [&] {
    return rig.outbox->row("d-n1").attempts_size() >= 2 && rig.outbox->row("d-n2").attempts_size() >= 1 &&
           rig.outbox->row("d-n3").state() == v1::DELIVERY_STATE_FAILED;
  }));
  const auto& unreachable = rig.outbox->row("d-n1");
  CHECK(unreachable.state() == v1::DELIVERY_STATE_PENDING);
  CHECK(unreachable.attempts(0).http_status() == 0);
  CHECK(unreachable.attempts(0).error().find("cannot connect to 127.0.0.1:") == 0);
  CHECK(unreachable.attempts(0).error().find("SECRETKEY123") == std::string::npos);
  CHECK(unreachable.attempts(1).at_unix_ms() - unreachable.attempts(0).at_unix_ms() >= 90);

  const auto& waiting = rig.outbox->row("d-n2");
  CHECK(waiting.state() == v1::DELIVERY_STATE_PENDING);
  CHECK(waiting.attempts(0).error() == "channel off is disabled: the delivery waits");
  CHECK(waiting.next_attempt_unix_ms() >= waiting.attempts(0).at_unix_ms() + 300'000);
  CHECK(rig.worker->metrics().by_channel_type[v1::CHANNEL_TYPE_SLACK].failed_attempts == 0);

  CHECK(rig.outbox->row("d-n3").attempts(0).error() == "channel gone no longer exists");
}

TEST_CASE("over the Store's outbox: delivered, recorded, and a send lost with its process is sent again",
          "[alerts][integration]") {
  TempDir dir("qf-alerts");
  Receivers receivers(dir);
  const std::string db = dir.file("coordinator.db");
  auto lookup = [&](const std::string& id) -> std::optional<v1::Channel> {
    if (id == "slow") return make_channel("slow", v1::CHANNEL_TYPE_WEBHOOK, receivers.url("/slow-once/4/lost"));
    return make_channel("hook", v1::CHANNEL_TYPE_WEBHOOK, receivers.url("/webhook/store"), "webhook-secret");
  };
  auto secrets = [](const v1::Secret& secret) {
    quartzflow::Result<std::string> result;
    result.value = secret.value();
    return result;
  };
  auto read_delivery = [&](quartzflow::Store& store, boost::asio::io_context& io, const std::string& id) {
    std::optional<v1::Delivery> out;
    bool done = false;
    store.read([&](quartzflow::StoreTransaction& tx, quartzflow::error_code&) { out = tx.delivery(id); },
               [&](quartzflow::error_code) { done = true; });
    REQUIRE(run_until(io, [&] { return done; }));
    REQUIRE(out);
    return *out;
  };
  quartzflow::testing::QuietLog quiet;
  {
    // A first coordinator: the notification to a slow receiver is in flight when it dies.
    boost::asio::io_context io;
    auto store = quartzflow::open_sqlite_store(io.get_executor(), {db});
    auto due = notification_to("slow", "lost-1");
    bool enqueued = false;
    store->transact(
        [&](quartzflow::StoreTransaction& tx, quartzflow::error_code&) { tx.enqueue_delivery(due.delivery); },
        [&](quartzflow::error_code ec) { enqueued = !ec; });
    REQUIRE(run_until(io, [&] { return enqueued; }));
    qa::DeliveryWorker worker(io, *store, lookup, secrets, fast_options());
    worker.start();
    REQUIRE(run_until(io, [&] { return receivers.records_for("/slow-once/4/lost").size() == 1; }));
    CHECK(worker.metrics().in_flight == 1);
  }  // gone without an answer: nothing recorded
  {
    boost::asio::io_context io;
    auto store = quartzflow::open_sqlite_store(io.get_executor(), {db});
    CHECK(read_delivery(*store, io, "d-lost-1").attempts_size() == 0);
    // A run with a result callback on its task, and a notification.
    v1::Task task;
    task.set_id("backup");
    task.set_name("backup");
    task.mutable_shell()->add_argv("true");
    auto* callback = task.add_callbacks();
    callback->set_url(receivers.url("/webhook/store-callback"));
    callback->mutable_secret()->set_value("webhook-secret");
    v1::Execution execution;
    execution.set_execution_id("backup:1700000000000");
    execution.set_task_id("backup");
    execution.set_status(v1::EXECUTION_STATUS_SUCCESS);
    v1::Delivery callback_delivery;
    callback_delivery.set_id("cb-1");
    callback_delivery.set_kind(v1::DELIVERY_KIND_CALLBACK);
    callback_delivery.set_state(v1::DELIVERY_STATE_PENDING);
    callback_delivery.set_execution_id(execution.execution_id());
    callback_delivery.set_created_unix_ms(quartzflow::detail::now_unix_ms());
    bool written = false;
    store->transact(
        [&](quartzflow::StoreTransaction& tx, quartzflow::error_code&) {
          // This worker has no channel lookup: it takes the channels read with the deliveries.
          tx.put_channel(*lookup("slow"));
          tx.put_channel(*lookup("hook"));
          tx.put_task(task);
          tx.upsert_execution(execution);
          tx.enqueue_delivery(notification_to("hook", "n-store").delivery);
          tx.enqueue_delivery(callback_delivery);
        },
        [&](quartzflow::error_code ec) { written = !ec; });
    REQUIRE(run_until(io, [&] { return written; }));

    qa::DeliveryWorker worker(io, *store, {}, secrets, fast_options());
    worker.start();
    REQUIRE(run_until(io, [&] {
      return worker.metrics().by_channel_type[v1::CHANNEL_TYPE_WEBHOOK].delivered == 2 &&
             worker.metrics().callbacks.delivered == 1 && worker.metrics().in_flight == 0;
    }));
    for (const char* id : {"d-lost-1", "d-n-store", "cb-1"}) {
      const auto delivery = read_delivery(*store, io, id);
      INFO(delivery.DebugString());
      CHECK(delivery.state() == v1::DELIVERY_STATE_DELIVERED);
      REQUIRE(delivery.attempts_size() == 1);
      CHECK(delivery.attempts(0).http_status() == 200);
    }
    // At least once: the receiver had the lost send and its repetition, under one id.
    const auto lost = receivers.records_for("/slow-once/4/lost");
    REQUIRE(lost.size() == 2);
    CHECK(header(lost[0], "X-QuartzFlow-Notification-Id") == header(lost[1], "X-QuartzFlow-Notification-Id"));
    const auto callbacks = receivers.records_for("/webhook/store-callback");
    REQUIRE(callbacks.size() == 1);
    CHECK(callbacks[0].fields().at("verified").bool_value());
    CHECK(header(callbacks[0], "X-QuartzFlow-Execution-Id") == "backup:1700000000000");
    worker.stop();
  }
}

TEST_CASE("a channel test is sent at once and answered with its attempt, nothing recorded", "[alerts][integration]") {
  TempDir dir("qf-alerts");
  Receivers receivers(dir);
  Rig rig;  // not started: send_now needs no polling
  auto hook = make_channel("hook", v1::CHANNEL_TYPE_WEBHOOK, receivers.url("/webhook/test"), "webhook-secret");
  hook.set_disabled(true);  // a test goes out all the same
  auto reject = make_channel("slack", v1::CHANNEL_TYPE_SLACK, receivers.url("/reject/test"));
  std::vector<std::pair<v1::DeliveryAttempt, qa::Verdict>> answers;
  const auto now = quartzflow::detail::now_unix_ms();
  for (const auto* channel : {&hook, &reject}) {
    rig.worker->send_now(
        qa::test_notification(*channel, "https://qf.example.com/", now), *channel,
        [&](v1::DeliveryAttempt attempt, qa::Verdict verdict) { answers.emplace_back(std::move(attempt), verdict); });
  }
  CHECK(answers.empty());  // never inline
  REQUIRE(run_until(rig.io, [&] { return answers.size() == 2; }));
  std::sort(answers.begin(), answers.end(),
            [](const auto& a, const auto& b) { return a.first.http_status() < b.first.http_status(); });
  CHECK(answers[0].first.http_status() == 200);
  CHECK(answers[0].second == qa::Verdict::delivered);
  CHECK(answers[1].first.http_status() == 400);
  CHECK(answers[1].second == qa::Verdict::give_up);
  const auto records = receivers.records_for("/webhook/test");
  REQUIRE(records.size() == 1);
  CHECK(records[0].fields().at("verified").bool_value());
  CHECK(header(records[0], "X-QuartzFlow-Notification-Id") == "test:hook:" + std::to_string(now));
  CHECK(field(records[0], "body").find("\"kind\":\"NOTIFICATION_KIND_TEST\"") != std::string::npos);
  CHECK(field(receivers.records_for("/reject/test")[0], "body")
            .find("[Test] QuartzFlow test notification (channel slack)") != std::string::npos);
  const auto metrics = rig.worker->metrics();
  CHECK(metrics.by_channel_type[v1::CHANNEL_TYPE_WEBHOOK].delivered == 0);
}
