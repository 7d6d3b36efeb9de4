// SPDX-License-Identifier: Apache-2.0
// The Store's alert tables on SQLite and on PostgreSQL (the same cases against both): rules,
// channels, silences, monitors, alerts, and the delivery outbox (idempotent enqueue, due
// order, attempts appended, lists, purge).
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/io_context.hpp>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "pg_server.hpp"
#include "quiet_log.hpp"
#include "temp_dir.hpp"

#include <quartzflow/pg_store.hpp>
#include <quartzflow/store.hpp>

namespace qf = quartzflow;
namespace v1 = quartzflow::v1;
using std::chrono::milliseconds;

namespace {

enum class Backend { sqlite, postgres };

std::ostream& operator<<(std::ostream& out, Backend backend) {
  return out << (backend == Backend::sqlite ? "SQLite" : "PostgreSQL");
}

#define FOR_EACH_BACKEND()                                              \
  const Backend backend = GENERATE(Backend::sqlite, Backend::postgres); \
  INFO("backend: " << backend)

/// A fresh store on one backend with each call in a transaction of its own.
struct AlertStore {
  explicit AlertStore(Backend backend) {
    qf::error_code ec;
    std::string detail;
    if (backend == Backend::sqlite) {
      store = qf::open_sqlite_store(io.get_executor(), {dir.file("coordinator.db"), milliseconds{0}}, ec, &detail);
    } else {
      qf::PostgresStoreOptions options;
      options.dsn = qf::testing::postgres_test_database();
      options.max_batch_delay = milliseconds{0};
      store = qf::open_postgres_store(io.get_executor(), options, ec, &detail);
    }
    INFO(detail);
    REQUIRE_FALSE(ec);
    REQUIRE(store);
  }

  /// Runs `body` in a read-write transaction and returns what it returned; `thrown` gets the
  /// error text of a body that threw (then the transaction rolled back).
  template <typename Body>
  auto run(Body body, std::string* thrown = nullptr) {
    using Result = std::invoke_result_t<Body&, qf::StoreTransaction&>;
    std::optional<Result> value;
    std::optional<qf::error_code> outcome;
    std::string what;
    store->transact(
        [&](qf::StoreTransaction& tx, qf::error_code& ec) {
          try {
            value.emplace(body(tx));
          } catch (const qf::error& e) {
            what = e.what();
            ec = e.code();
          }
        },
        [&](qf::error_code ec) { outcome = ec; });
    io.restart();
    io.run_for(std::chrono::seconds(10));
    REQUIRE(outcome);
    if (thrown) {
      *thrown = what;
    } else {
      INFO(what);
      REQUIRE_FALSE(*outcome);
    }
    return value;
  }

  qf::testing::TempDir dir;
  boost::asio::io_context io;
  std::unique_ptr<qf::Store> store;
};

v1::Delivery pending(const std::string& id, std::int64_t created, std::int64_t next_attempt,
                     const std::string& channel = "ops") {
  v1::Delivery d;
  d.set_id(id);
  d.set_kind(v1::DELIVERY_KIND_NOTIFICATION);
  d.set_state(v1::DELIVERY_STATE_PENDING);
  d.set_channel_id(channel);
  d.mutable_notification()->set_id("n-" + id);
  d.set_created_unix_ms(created);
  d.set_next_attempt_unix_ms(next_attempt);
  return d;
}

std::vector<std::string> ids_of(const std::vector<v1::Delivery>& deliveries) {
  std::vector<std::string> out;
  for (const auto& d : deliveries) out.push_back(d.id());
  return out;
}

}  // namespace

TEST_CASE("alert rules, channels, silences and monitors are stored, listed by id, replaced and deleted",
          "[store][alerts]") {
  qf::testing::QuietLog quiet;
  FOR_EACH_BACKEND();
  AlertStore s{backend};

  s.run([](qf::StoreTransaction& tx) {
    for (const char* id : {"rule-b", "rule-a", "rule-c"}) {
      v1::AlertRule rule;
      rule.set_id(id);
      rule.set_condition(v1::ALERT_CONDITION_RUN_FAILED);
      rule.add_channel_ids("ops");
      tx.put_alert_rule(rule);
    }
    v1::Channel channel;
    channel.set_id("ops");
    channel.set_type(v1::CHANNEL_TYPE_WEBHOOK);
    channel.set_url("https://hooks.example/ops");
    channel.mutable_secret()->set_sealed("v1:AAAA");
    tx.put_channel(channel);
    return 0;
  });

  auto page = *s.run([](qf::StoreTransaction& tx) { return tx.list_alert_rules(2, 2); });
  CHECK(page.total == 3);
  REQUIRE(page.items.size() == 1);
  CHECK(page.items[0].id() == "rule-c");
  auto first = *s.run([](qf::StoreTransaction& tx) { return tx.list_alert_rules(0, 0); });
  REQUIRE(first.items.size() == 3);
  CHECK(first.items[0].id() == "rule-a");

  // Replaced by id, not added.
  s.run([](qf::StoreTransaction& tx) {
    auto rule = *tx.alert_rule("rule-a");
    rule.set_description("changed");
    tx.put_alert_rule(rule);
    return 0;
  });
  auto all = *s.run([](qf::StoreTransaction& tx) { return tx.all_alert_rules(); });
  REQUIRE(all.size() == 3);
  CHECK(all[0].description() == "changed");

  auto channel = *s.run([](qf::StoreTransaction& tx) { return tx.channel("ops"); });
  REQUIRE(channel);
  CHECK(channel->secret().sealed() == "v1:AAAA");
  CHECK(s.run([](qf::StoreTransaction& tx) { return tx.delete_channel("ops"); }) == true);
  CHECK(s.run([](qf::StoreTransaction& tx) { return tx.delete_channel("ops"); }) == false);
  CHECK_FALSE(*s.run([](qf::StoreTransaction& tx) { return tx.channel("ops"); }));
  CHECK(s.run([](qf::StoreTransaction& tx) { return tx.delete_alert_rule("rule-b"); }) == true);
  CHECK(s.run([](qf::StoreTransaction& tx) { return tx.all_alert_rules().size(); }) == 2u);

  // Silences: by end, latest first; `active_at` leaves out those that ended.
  s.run([](qf::StoreTransaction& tx) {
    const std::pair<const char*, std::int64_t> silences[] = {{"s1", 1'000}, {"s2", 5'000}, {"s3", 3'000}};
    for (const auto& [id, ends] : silences) {
      v1::Silence silence;
      silence.set_id(id);
      silence.add_rule_ids("rule-a");
      silence.set_ends_unix_ms(ends);
      silence.set_reason("maintenance");
      tx.put_silence(silence);
    }
    return 0;
  });
  auto silences = *s.run([](qf::StoreTransaction& tx) { return tx.list_silences(0, 0, 0); });
  REQUIRE(silences.items.size() == 3);
  CHECK(silences.items[0].id() == "s2");
  CHECK(silences.items[2].id() == "s1");
  auto active = *s.run([](qf::StoreTransaction& tx) { return tx.list_silences(2'000, 0, 0); });
  CHECK(active.total == 2);
  CHECK(s.run([](qf::StoreTransaction& tx) { return tx.silence("s3")->reason(); }) == "maintenance");

  // Monitors: found by the hash of their token, which no two share.
  s.run([](qf::StoreTransaction& tx) {
    qf::StoredMonitor monitor;
    monitor.monitor.set_id("backup");
    monitor.monitor.set_period_seconds(3600);
    monitor.token_sha256 = "hash-1";
    tx.put_monitor(monitor);
    return 0;
  });
  auto by_token = *s.run([](qf::StoreTransaction& tx) { return tx.monitor_by_token_sha256("hash-1"); });
  REQUIRE(by_token);
  CHECK(by_token->monitor.id() == "backup");
  CHECK_FALSE(*s.run([](qf::StoreTransaction& tx) { return tx.monitor_by_token_sha256("hash-2"); }));
  std::string thrown;
  s.run(
      [](qf::StoreTransaction& tx) {
        qf::StoredMonitor other;
        other.monitor.set_id("other");
        other.token_sha256 = "hash-1";
        tx.put_monitor(other);
        return 0;
      },
      &thrown);
  CHECK_THAT(thrown, Catch::Contains("token"));
  CHECK(s.run([](qf::StoreTransaction& tx) { return tx.all_monitors().size(); }) == 1u);
  CHECK(s.run([](qf::StoreTransaction& tx) { return tx.delete_monitor("backup"); }) == true);
  CHECK(s.run([](qf::StoreTransaction& tx) { return tx.list_monitors(0, 0).total; }) == 0u);

  // An empty id is refused and writes nothing.
  s.run(
      [](qf::StoreTransaction& tx) {
        tx.put_alert_rule(v1::AlertRule{});
        return 0;
      },
      &thrown);
  CHECK_THAT(thrown, Catch::Contains("id: is empty"));
  CHECK(s.run([](qf::StoreTransaction& tx) { return tx.all_alert_rules().size(); }) == 2u);
}

TEST_CASE("alerts are upserted by id and listed newest first by state, rule and task", "[store][alerts]") {
  qf::testing::QuietLog quiet;
  FOR_EACH_BACKEND();
  AlertStore s{backend};

  s.run([](qf::StoreTransaction& tx) {
    struct Row {
      const char* id;
      const char* rule;
      const char* task;
      v1::AlertState state;
      std::int64_t started;
    };
    const Row rows[] = {{"a1", "r1", "t1", v1::ALERT_STATE_RESOLVED, 100},
                        {"a2", "r1", "t2", v1::ALERT_STATE_FIRING, 200},
                        {"a3", "r2", "t1", v1::ALERT_STATE_FIRING, 300}};
    for (const auto& row : rows) {
      v1::Alert alert;
      alert.set_id(row.id);
      alert.set_rule_id(row.rule);
      alert.set_task_id(row.task);
      alert.set_state(row.state);
      alert.set_started_unix_ms(row.started);
      tx.upsert_alert(alert);
    }
    return 0;
  });
  auto all = *s.run([](qf::StoreTransaction& tx) { return tx.list_alerts({}); });
  CHECK(all.total == 3);
  REQUIRE(all.items.size() == 3);
  CHECK(all.items[0].id() == "a3");
  CHECK(all.items[2].id() == "a1");

  qf::AlertFilter firing;
  firing.state = v1::ALERT_STATE_FIRING;
  CHECK(s.run([&](qf::StoreTransaction& tx) { return tx.list_alerts(firing).total; }) == 2u);
  qf::AlertFilter of_task;
  of_task.task_id = "t1";
  of_task.rule_id = "r2";
  auto one = *s.run([&](qf::StoreTransaction& tx) { return tx.list_alerts(of_task); });
  REQUIRE(one.items.size() == 1);
  CHECK(one.items[0].id() == "a3");

  // A resolve is an upsert of the same id: no second row.
  s.run([](qf::StoreTransaction& tx) {
    auto alert = *tx.alert("a2");
    alert.set_state(v1::ALERT_STATE_RESOLVED);
    alert.set_resolved_unix_ms(250);
    tx.upsert_alert(alert);
    return 0;
  });
  auto still_firing = *s.run([](qf::StoreTransaction& tx) { return tx.firing_alerts(); });
  REQUIRE(still_firing.size() == 1);
  CHECK(still_firing[0].id() == "a3");
  CHECK(s.run([](qf::StoreTransaction& tx) { return tx.list_alerts({}).total; }) == 3u);
  CHECK(s.run([](qf::StoreTransaction& tx) { return tx.alert("a2")->resolved_unix_ms(); }) == 250);
}

TEST_CASE("a delivery enqueued twice is stored once and keeps its attempts", "[store][alerts][outbox]") {
  qf::testing::QuietLog quiet;
  FOR_EACH_BACKEND();
  AlertStore s{backend};

  s.run([](qf::StoreTransaction& tx) {
    tx.enqueue_delivery(pending("d1", 1'000, 1'000));
    return 0;
  });
  v1::DeliveryAttempt failed;
  failed.set_at_unix_ms(1'100);
  failed.set_http_status(503);
  failed.set_error("HTTP 503");
  s.run([&](qf::StoreTransaction& tx) {
    tx.record_delivery_attempt("d1", failed, v1::DELIVERY_STATE_PENDING, 6'000);
    return 0;
  });
  // The enqueue retried after a crash: the same id again, with no attempts.
  s.run([](qf::StoreTransaction& tx) {
    auto again = pending("d1", 1'000, 1'000);
    again.mutable_notification()->set_id("something else");
    tx.enqueue_delivery(again);
    return 0;
  });
  auto listed = *s.run([](qf::StoreTransaction& tx) { return tx.list_deliveries({}); });
  CHECK(listed.total == 1);
  REQUIRE(listed.items.size() == 1);
  const auto& d = listed.items[0];
  CHECK(d.notification().id() == "n-d1");
  REQUIRE(d.attempts_size() == 1);
  CHECK(d.attempts(0).http_status() == 503);
  CHECK(d.next_attempt_unix_ms() == 6'000);
}

TEST_CASE("due deliveries are the pending ones whose time has come, oldest first, at most the limit",
          "[store][alerts][outbox]") {
  qf::testing::QuietLog quiet;
  FOR_EACH_BACKEND();
  AlertStore s{backend};

  s.run([](qf::StoreTransaction& tx) {
    tx.enqueue_delivery(pending("late", 3'000, 9'000));  // not due at 5'000
    tx.enqueue_delivery(pending("second", 2'000, 2'000));
    tx.enqueue_delivery(pending("first", 1'000, 4'000));  // older, retried later, due now
    tx.enqueue_delivery(pending("tie-a", 2'500, 2'500));
    tx.enqueue_delivery(pending("tie-b", 2'500, 2'500));  // same instant: insertion order
    auto done = pending("done", 500, 500);
    done.set_state(v1::DELIVERY_STATE_DELIVERED);
    tx.enqueue_delivery(done);
    return 0;
  });
  auto due = *s.run([](qf::StoreTransaction& tx) { return tx.due_deliveries(5'000, 10); });
  CHECK(ids_of(due) == std::vector<std::string>{"first", "second", "tie-a", "tie-b"});
  auto limited = *s.run([](qf::StoreTransaction& tx) { return tx.due_deliveries(5'000, 2); });
  CHECK(ids_of(limited) == std::vector<std::string>{"first", "second"});
  CHECK(s.run([](qf::StoreTransaction& tx) { return tx.due_deliveries(2'000, 10).size(); }) == 1u);
  CHECK(s.run([](qf::StoreTransaction& tx) { return tx.due_deliveries(5'000, 0).size(); }) == 0u);

  // Delivered: no longer due.
  s.run([](qf::StoreTransaction& tx) {
    v1::DeliveryAttempt ok;
    ok.set_at_unix_ms(5'000);
    ok.set_http_status(200);
    tx.record_delivery_attempt("first", ok, v1::DELIVERY_STATE_DELIVERED, 0);
    return 0;
  });
  auto after = *s.run([](qf::StoreTransaction& tx) { return tx.due_deliveries(10'000, 10); });
  CHECK(ids_of(after) == std::vector<std::string>{"second", "tie-a", "tie-b", "late"});
}

TEST_CASE("delivery attempts are appended in order, the latest 100 kept and all counted", "[store][alerts][outbox]") {
  qf::testing::QuietLog quiet;
  FOR_EACH_BACKEND();
  AlertStore s{backend};

  s.run([](qf::StoreTransaction& tx) {
    tx.enqueue_delivery(pending("d", 1'000, 1'000));
    return 0;
  });
  s.run([](qf::StoreTransaction& tx) {
    for (int i = 1; i <= 105; ++i) {
      v1::DeliveryAttempt attempt;
      attempt.set_at_unix_ms(1'000 + i);
      attempt.set_error(fmt::format("attempt {}", i));
      tx.record_delivery_attempt("d", attempt, i == 105 ? v1::DELIVERY_STATE_FAILED : v1::DELIVERY_STATE_PENDING,
                                 2'000 + i);
    }
    // An unknown id changes nothing.
    tx.record_delivery_attempt("unknown", v1::DeliveryAttempt{}, v1::DELIVERY_STATE_FAILED, 0);
    return 0;
  });
  auto d = **s.run([](qf::StoreTransaction& tx) { return tx.delivery("d"); });
  CHECK(d.attempt_count() == 105);
  REQUIRE(d.attempts_size() == 100);
  CHECK(d.attempts(0).error() == "attempt 6");
  CHECK(d.attempts(99).error() == "attempt 105");
  CHECK(d.state() == v1::DELIVERY_STATE_FAILED);
  CHECK_FALSE(*s.run([](qf::StoreTransaction& tx) { return tx.delivery("unknown"); }));

  std::string thrown;
  s.run(
      [](qf::StoreTransaction& tx) {
        tx.record_delivery_attempt("d", v1::DeliveryAttempt{}, v1::DELIVERY_STATE_UNSPECIFIED, 0);
        return 0;
      },
      &thrown);
  CHECK_THAT(thrown, Catch::Contains("state"));
  CHECK(s.run([](qf::StoreTransaction& tx) { return tx.delivery("d")->attempt_count(); }) == 105u);
}

TEST_CASE("deliveries are listed newest first by state, kind, channel and execution, and purged when done and old",
          "[store][alerts][outbox]") {
  qf::testing::QuietLog quiet;
  FOR_EACH_BACKEND();
  AlertStore s{backend};

  s.run([](qf::StoreTransaction& tx) {
    tx.enqueue_delivery(pending("n1", 1'000, 1'000, "ops"));
    tx.enqueue_delivery(pending("n2", 2'000, 2'000, "mail"));
    auto callback = pending("c1", 3'000, 3'000, "");
    callback.set_kind(v1::DELIVERY_KIND_CALLBACK);
    callback.set_execution_id("t1:123:1");
    tx.enqueue_delivery(callback);
    v1::DeliveryAttempt ok;
    ok.set_at_unix_ms(1'500);
    tx.record_delivery_attempt("n1", ok, v1::DELIVERY_STATE_DELIVERED, 0);
    v1::DeliveryAttempt gave_up;
    gave_up.set_at_unix_ms(9'000);
    tx.record_delivery_attempt("n2", gave_up, v1::DELIVERY_STATE_FAILED, 0);
    return 0;
  });
  auto all = *s.run([](qf::StoreTransaction& tx) { return tx.list_deliveries({}); });
  CHECK(ids_of(all.items) == std::vector<std::string>{"c1", "n2", "n1"});

  qf::DeliveryFilter by_channel;
  by_channel.channel_id = "ops";
  CHECK(ids_of(s.run([&](qf::StoreTransaction& tx) { return tx.list_deliveries(by_channel); })->items) ==
        std::vector<std::string>{"n1"});
  qf::DeliveryFilter by_execution;
  by_execution.execution_id = "t1:123:1";
  by_execution.kind = v1::DELIVERY_KIND_CALLBACK;
  CHECK(ids_of(s.run([&](qf::StoreTransaction& tx) { return tx.list_deliveries(by_execution); })->items) ==
        std::vector<std::string>{"c1"});
  qf::DeliveryFilter failed;
  failed.state = v1::DELIVERY_STATE_FAILED;
  CHECK(ids_of(s.run([&](qf::StoreTransaction& tx) { return tx.list_deliveries(failed); })->items) ==
        std::vector<std::string>{"n2"});
  qf::DeliveryFilter paged;
  paged.page = 2;
  paged.page_size = 2;
  auto page = *s.run([&](qf::StoreTransaction& tx) { return tx.list_deliveries(paged); });
  CHECK(page.total == 3);
  CHECK(ids_of(page.items) == std::vector<std::string>{"n1"});

  // Purge: n1 was delivered at 1'500, n2 gave up at 9'000, c1 is pending (never purged).
  CHECK(s.run([](qf::StoreTransaction& tx) { return tx.purge_deliveries(5'000); }) == 1u);
  CHECK(ids_of(s.run([](qf::StoreTransaction& tx) { return tx.list_deliveries({}); })->items) ==
        std::vector<std::string>{"c1", "n2"});
  CHECK(s.run([](qf::StoreTransaction& tx) { return tx.purge_deliveries(100'000); }) == 1u);
  CHECK(ids_of(s.run([](qf::StoreTransaction& tx) { return tx.list_deliveries({}); })->items) ==
        std::vector<std::string>{"c1"});
}
