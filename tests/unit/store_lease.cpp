// SPDX-License-Identifier: Apache-2.0
// The Store's leader lease, fencing check and coordinators registry, on SQLite and on
// PostgreSQL (the same cases against both); on PostgreSQL, a takeover that waits for a fire
// transaction holding the fencing check's row lock.
#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/io_context.hpp>

#include <catch2/catch.hpp>

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

/// A store on `where`: a SQLite path (or ":memory:"), or a PostgreSQL DSN.
std::unique_ptr<qf::Store> open_store(boost::asio::io_context& io, Backend backend, const std::string& where) {
  qf::error_code ec;
  std::string detail;
  std::unique_ptr<qf::Store> store;
  if (backend == Backend::sqlite) {
    store = qf::open_sqlite_store(io.get_executor(), {where, milliseconds{0}}, ec, &detail);
  } else {
    qf::PostgresStoreOptions options;
    options.dsn = where;
    options.max_batch_delay = milliseconds{0};
    store = qf::open_postgres_store(io.get_executor(), options, ec, &detail);
  }
  INFO(detail);
  REQUIRE_FALSE(ec);
  REQUIRE(store);
  return store;
}

std::string fresh_place(Backend backend, const qf::testing::TempDir& dir) {
  return backend == Backend::sqlite ? dir.file("coordinator.db") : qf::testing::postgres_test_database();
}

#define FOR_EACH_BACKEND()                                              \
  const Backend backend = GENERATE(Backend::sqlite, Backend::postgres); \
  INFO("backend: " << backend)

/// Runs `body` in a transaction; returns what it returned, or the error it threw (as text).
template <typename Body>
auto run_tx(boost::asio::io_context& io, qf::Store& store, Body body, std::string* thrown = nullptr,
            bool read = false) {
  using Result = std::invoke_result_t<Body&, qf::StoreTransaction&>;
  std::optional<Result> value;
  std::optional<qf::error_code> outcome;
  std::string what;
  auto work = [&](qf::StoreTransaction& tx, qf::error_code& ec) {
    try {
      value.emplace(body(tx));
    } catch (const qf::error& e) {
      what = e.what();
      ec = e.code();
    }
  };
  auto done = [&](qf::error_code ec) { outcome = ec; };
  if (read) store.read(work, done);
  else store.transact(work, done);
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

const qf::CoordinatorAddresses k_a{"a.example:7443", "https://a.example:8443"};
const qf::CoordinatorAddresses k_b{"b.example:7443", "https://b.example:8443"};
constexpr milliseconds k_long{60'000};
constexpr milliseconds k_expired{0};  // expires at once: the next statement sees it expired

/// A fresh store on one backend, its io_context, and the lease calls each in a transaction of
/// its own.
struct LeaseStore {
  explicit LeaseStore(Backend backend) : store{open_store(io, backend, fresh_place(backend, dir))} {}

  /// run_tx on this store.
  template <typename Body>
  auto run(Body body, std::string* thrown = nullptr) {
    return run_tx(io, *store, std::move(body), thrown);
  }
  /// What `body` returns in a read transaction.
  template <typename Body>
  auto read(Body body) {
    return *run_tx(io, *store, std::move(body), nullptr, true);
  }

  qf::LeaderLease acquire(const std::string& holder, const qf::CoordinatorAddresses& addresses, milliseconds ttl) {
    return *run([&](qf::StoreTransaction& tx) { return tx.acquire_or_renew_leader(holder, addresses, ttl); });
  }
  bool release(const std::string& holder) {
    return *run([&](qf::StoreTransaction& tx) { return tx.release_leader(holder); });
  }
  qf::LeaderLease lease() {
    return read([](qf::StoreTransaction& tx) { return tx.leader_lease(); });
  }

  qf::testing::TempDir dir;
  boost::asio::io_context io;
  std::unique_ptr<qf::Store> store;
};

/// Records a pending run `execution_id` of task "t".
void upsert_pending_run(qf::StoreTransaction& tx, const std::string& execution_id) {
  v1::Execution run;
  run.set_execution_id(execution_id);
  run.set_task_id("t");
  run.set_status(v1::EXECUTION_STATUS_PENDING);
  tx.upsert_execution(run);
}

/// Keeps the store's thread in one transaction (a batch in progress: a long group commit) from
/// construction until `release()`, so that what is queued meanwhile waits behind it.
class StoreHold {
 public:
  /// A completion handler that checks the transaction committed and counts it in `done`.
  auto count() {
    return [this](qf::error_code ec) {
      CHECK_FALSE(ec);
      ++done;
    };
  }

  /// `in_batch` runs in the held transaction once it is released.
  explicit StoreHold(
      qf::Store& store, std::function<void()> in_batch = [] {}) {
    store.transact(
        [this, in_batch = std::move(in_batch)](qf::StoreTransaction&, qf::error_code&) {
          busy_.set_value();
          released_.wait();
          in_batch();
        },
        count());
    busy_.get_future().wait();
  }

  void release() { release_.set_value(); }

  int done = 0;  ///< transactions completed, the held one included

 private:
  std::promise<void> release_;
  std::shared_future<void> released_ = release_.get_future().share();
  std::promise<void> busy_;
};

/// Runs `io` in short slices until `done()` or `limit` has passed.
template <typename Done>
void run_until(boost::asio::io_context& io, Done done, std::chrono::seconds limit, milliseconds slice) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    io.restart();
    io.run_for(slice);
  }
}

}  // namespace

TEST_CASE("a free leader lease is taken at epoch 1 and renewed by its holder at the same epoch", "[store][lease]") {
  qf::testing::QuietLog quiet;
  FOR_EACH_BACKEND();
  LeaseStore s{backend};

  auto before = s.lease();
  CHECK(before.holder_id.empty());
  CHECK(before.epoch == 0);
  CHECK_FALSE(before.held());

  auto taken = s.acquire("a", k_a, k_long);
  CHECK(taken.holder_id == "a");
  CHECK(taken.epoch == 1);
  CHECK(taken.held());
  CHECK(taken.holder_addresses.agent == k_a.agent);
  CHECK(taken.holder_addresses.admin == k_a.admin);
  CHECK(taken.expires_at_unix_ms - taken.now_unix_ms == k_long.count());

  auto renewed = s.acquire("a", k_a, k_long);
  CHECK(renewed.holder_id == "a");
  CHECK(renewed.epoch == 1);
  CHECK(renewed.expires_at_unix_ms >= taken.expires_at_unix_ms);

  auto read = s.lease();
  CHECK(read.holder_id == "a");
  CHECK(read.epoch == 1);
}

TEST_CASE("a leader lease another coordinator holds is left alone until it expires, then taken at epoch + 1",
          "[store][lease]") {
  qf::testing::QuietLog quiet;
  FOR_EACH_BACKEND();
  LeaseStore s{backend};

  s.acquire("a", k_a, k_long);
  auto refused = s.acquire("b", k_b, k_long);
  CHECK(refused.holder_id == "a");
  CHECK(refused.epoch == 1);
  CHECK(refused.holder_addresses.agent == k_a.agent);  // where a standby redirects agents

  // a renews with a lease that is over at once: b takes it.
  s.acquire("a", k_a, k_expired);
  auto taken = s.acquire("b", k_b, k_long);
  CHECK(taken.holder_id == "b");
  CHECK(taken.epoch == 2);
  CHECK(taken.holder_addresses.agent == k_b.agent);

  // a, back from a pause, cannot renew: it is b's now.
  auto late = s.acquire("a", k_a, k_long);
  CHECK(late.holder_id == "b");
  CHECK(late.epoch == 2);

  // Its own expired lease is taken again at a new epoch, never renewed at the old one.
  s.acquire("b", k_b, k_expired);
  auto again = s.acquire("b", k_b, k_long);
  CHECK(again.holder_id == "b");
  CHECK(again.epoch == 3);
}

TEST_CASE("releasing the leader lease hands it over at once, and only its holder can release it", "[store][lease]") {
  qf::testing::QuietLog quiet;
  FOR_EACH_BACKEND();
  LeaseStore s{backend};

  s.acquire("a", k_a, k_long);
  CHECK_FALSE(s.release("b"));
  CHECK(s.release("a"));
  auto free = s.lease();
  CHECK(free.holder_id.empty());
  CHECK(free.epoch == 1);
  CHECK_FALSE(free.held());
  auto taken = s.acquire("b", k_b, k_long);
  CHECK(taken.holder_id == "b");
  CHECK(taken.epoch == 2);
}

TEST_CASE("a fire transaction fenced with an old or expired epoch is refused and records nothing", "[store][lease]") {
  qf::testing::QuietLog quiet;
  FOR_EACH_BACKEND();
  LeaseStore s{backend};

  auto fire = [](std::uint64_t epoch, const std::string& id) {
    return [epoch, id](qf::StoreTransaction& tx) {
      tx.check_fence(epoch);
      upsert_pending_run(tx, id);
      return true;
    };
  };
  auto recorded = [&](const std::string& id) {
    return s.read([id](qf::StoreTransaction& tx) { return tx.execution(id).has_value(); });
  };

  s.acquire("a", k_a, k_long);
  s.run(fire(1, "t:1000"));
  CHECK(recorded("t:1000"));

  // Expired (a paused leader): refused, though nobody took over yet.
  s.acquire("a", k_a, k_expired);
  std::string why;
  s.run(fire(1, "t:2000"), &why);
  CHECK(why.find("lease lost: epoch 1 expired") != std::string::npos);
  CHECK_FALSE(recorded("t:2000"));

  // Taken over: the old epoch is refused, the new one passes.
  s.acquire("b", k_b, k_long);
  why.clear();
  s.run(fire(1, "t:3000"), &why);
  CHECK(why.find("lease lost: epoch 1 is not the current one") != std::string::npos);
  CHECK_FALSE(recorded("t:3000"));
  s.run(fire(2, "t:3000"));
  CHECK(recorded("t:3000"));
}

TEST_CASE("the coordinators registry keeps each coordinator's last report in the database's clock", "[store][lease]") {
  qf::testing::QuietLog quiet;
  FOR_EACH_BACKEND();
  LeaseStore s{backend};

  auto report = [](std::string id, v1::CoordinatorState state) {
    return [id, state](qf::StoreTransaction& tx) {
      v1::CoordinatorInfo info;
      info.set_id(id);
      info.set_agent_address(id + ".example:7443");
      info.set_version("1.2.3");
      info.set_started_unix_ms(5);
      info.set_last_seen_unix_ms(1);  // ignored: the database's clock is stored
      info.set_state(state);
      tx.put_coordinator_heartbeat(info);
      return true;
    };
  };
  s.run(report("b", v1::COORDINATOR_STATE_STANDBY));
  s.run(report("a", v1::COORDINATOR_STATE_LEADER));
  s.run(report("b", v1::COORDINATOR_STATE_STOPPED));
  auto lease = s.lease();
  auto list = s.read([](qf::StoreTransaction& tx) { return tx.list_coordinators(); });
  REQUIRE(list.size() == 2);
  CHECK(list[0].id() == "a");
  CHECK(list[0].state() == v1::COORDINATOR_STATE_LEADER);
  CHECK(list[1].id() == "b");
  CHECK(list[1].state() == v1::COORDINATOR_STATE_STOPPED);
  CHECK(list[1].agent_address() == "b.example:7443");
  CHECK(list[1].started_unix_ms() == 5);
  CHECK(list[1].last_seen_unix_ms() > 1);
  CHECK(std::abs(list[1].last_seen_unix_ms() - lease.now_unix_ms) < 60'000);

  std::string why;
  s.run(report("", v1::COORDINATOR_STATE_LEADER), &why);
  CHECK(why.find("id") != std::string::npos);
}

TEST_CASE("on PostgreSQL a takeover waits for a fire transaction holding the fencing row lock",
          "[store][lease][postgres]") {
  qf::testing::QuietLog quiet;
  const std::string dsn = qf::testing::postgres_test_database();
  boost::asio::io_context io;
  auto leader = open_store(io, Backend::postgres, dsn);
  auto standby = open_store(io, Backend::postgres, dsn);
  run_tx(io, *leader, [](qf::StoreTransaction& tx) { return tx.acquire_or_renew_leader("a", k_a, milliseconds{300}); });

  // The leader's fire transaction checks the fence, then takes its time before it records.
  std::promise<void> checked;
  auto checked_future = checked.get_future();
  std::optional<qf::error_code> fire_done;
  std::optional<qf::error_code> takeover_done;
  qf::LeaderLease takeover;
  // Set at the end of the fire transaction's body, before its commit; read by the takeover once
  // its lease statement returned. The completions' order on the io_context proves nothing: the
  // fire's store thread posts its completion after COMMIT returns, and the takeover, released
  // by that COMMIT, may post first.
  std::atomic<bool> fire_body_done{false};
  std::atomic<bool> takeover_saw_fire_done{false};
  leader->transact(
      [&](qf::StoreTransaction& tx, qf::error_code&) {
        tx.check_fence(1);
        checked.set_value();
        std::this_thread::sleep_for(milliseconds{600});  // past the lease's expiry
        upsert_pending_run(tx, "t:1000");
        fire_body_done = true;
      },
      [&](qf::error_code ec) { fire_done = ec; });
  checked_future.wait();
  std::this_thread::sleep_for(milliseconds{400});  // the lease has expired in the database now
  standby->transact(
      [&](qf::StoreTransaction& tx, qf::error_code&) {
        takeover = tx.acquire_or_renew_leader("b", k_b, k_long);
        takeover_saw_fire_done = fire_body_done.load();
      },
      [&](qf::error_code ec) { takeover_done = ec; });
  run_until(
      io, [&] { return fire_done && takeover_done; }, std::chrono::seconds(10), milliseconds{20});
  REQUIRE(fire_done);
  REQUIRE(takeover_done);
  CHECK_FALSE(*fire_done);  // checked under the lock, committed before the takeover
  CHECK_FALSE(*takeover_done);
  CHECK(takeover_saw_fire_done);  // the takeover's statement waited for the fire's lock
  CHECK(takeover.holder_id == "b");
  CHECK(takeover.epoch == 2);
}

TEST_CASE("an urgent transaction (the lease renewal) runs ahead of the transactions queued before it",
          "[store][lease]") {
  qf::testing::QuietLog quiet;
  FOR_EACH_BACKEND();
  LeaseStore s{backend};
  std::vector<std::string> order;  // written on the store's thread only, read after the flush
  // A batch in progress (a long group commit) while more work queues up behind it.
  StoreHold hold(*s.store, [&order] { order.emplace_back("batch in progress"); });
  for (const auto* name : {"fire 1", "fire 2"})
    s.store->transact([&order, name](qf::StoreTransaction&, qf::error_code&) { order.emplace_back(name); },
                      hold.count());
  s.store->transact_urgent(
      [&](qf::StoreTransaction& tx, qf::error_code&) {
        tx.acquire_or_renew_leader("a", k_a, k_long);
        order.emplace_back("renewal");
      },
      hold.count());
  hold.release();
  run_until(
      s.io, [&] { return hold.done >= 4; }, std::chrono::seconds(10), milliseconds{20});
  REQUIRE(hold.done == 4);
  CHECK(order == std::vector<std::string>{"batch in progress", "renewal", "fire 1", "fire 2"});
}

TEST_CASE("the lease renewal commits within the lease's local deadline behind a long backlog of slow fire writes",
          "[store][lease]") {
  qf::testing::QuietLog quiet;
  FOR_EACH_BACKEND();
  LeaseStore s{backend};
  constexpr int k_backlog = 200;
  constexpr milliseconds k_per_transaction{20};  // 4 s of queued writes: far past the TTL
  std::promise<void> backlog_started;
  bool backlog_running = false;  // the store's thread only
  StoreHold hold(*s.store);
  for (int i = 0; i < k_backlog; ++i) {
    s.store->transact(
        [&, i](qf::StoreTransaction& tx, qf::error_code&) {
          if (!std::exchange(backlog_running, true)) backlog_started.set_value();
          std::this_thread::sleep_for(k_per_transaction);  // a slow database
          upsert_pending_run(tx, "t:" + std::to_string(1000 * (i + 1)));
        },
        hold.count());
  }
  hold.release();
  backlog_started.get_future().wait();  // a batch of the backlog is being written now
  const auto asked = std::chrono::steady_clock::now();
  std::optional<std::chrono::steady_clock::time_point> renewed_at;
  qf::LeaderLease lease;
  s.store->transact_urgent(
      [&](qf::StoreTransaction& tx, qf::error_code&) { lease = tx.acquire_or_renew_leader("a", k_a, k_long); },
      [&](qf::error_code ec) {
        CHECK_FALSE(ec);
        renewed_at = std::chrono::steady_clock::now();
      });
  run_until(
      s.io, [&] { return hold.done >= k_backlog + 1 && renewed_at; }, std::chrono::seconds(20), milliseconds{5});
  REQUIRE(renewed_at);
  // The leader's local deadline with the default TTL (1.5 s): T - T/10 after the attempt.
  CHECK(*renewed_at - asked < milliseconds{1'350});
  CHECK(lease.holder_id == "a");
  REQUIRE(hold.done == k_backlog + 1);  // the backlog is all written, in several commits
  CHECK(s.store->metrics().commits >= 4);
  CHECK(s.store->metrics().transactions_committed == k_backlog + 2);
}
