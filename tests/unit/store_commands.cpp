// SPDX-License-Identifier: Apache-2.0
// Commands through any coordinator and the execution change feed in the Store, on SQLite and
// on PostgreSQL (the same cases against both); the change feed's cursor and the state a
// change wrote, without a store.
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/io_context.hpp>

#include <catch2/catch.hpp>

#include "coordinator/change_feed.hpp"
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

/// A fresh store on one backend (a SQLite file, or a new PostgreSQL database of the tests'
/// server) and its io_context; `run` and `read` give what a transaction's body returned.
struct CommandStore {
  explicit CommandStore(Backend backend) {
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

  /// What `body` returned; with `thrown`, the text of what it threw (the transaction then
  /// rolled back) instead of failing the test.
  template <typename Body>
  auto run(Body body, std::string* thrown = nullptr, bool read_only = false) {
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
    if (read_only) store->read(work, done);
    else store->transact(work, done);
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
  template <typename Body>
  auto read(Body body) {
    return *run(std::move(body), nullptr, true);
  }

  /// Takes the lease for `holder` (a free or expired one: epoch + 1).
  std::uint64_t lead(const std::string& holder) {
    auto lease =
        *run([&](qf::StoreTransaction& tx) { return tx.acquire_or_renew_leader(holder, {}, milliseconds{60'000}); });
    REQUIRE(lease.holder_id == holder);
    return lease.epoch;
  }

  /// `from` stops cleanly (releases the lease) and `to` takes over: the epoch + 1.
  std::uint64_t hand_over(const std::string& from, const std::string& to) {
    REQUIRE(*run([&](qf::StoreTransaction& tx) { return tx.release_leader(from); }));
    return lead(to);
  }

  v1::Command queue(v1::CommandKind kind, const std::string& target, milliseconds wait = milliseconds{60'000}) {
    v1::Command c;
    c.set_kind(kind);
    c.set_target_id(target);
    c.set_origin_coordinator_id("standby");
    c.mutable_actor()->set_name("alice");
    c.mutable_actor()->set_kind(v1::ACTOR_KIND_USER);
    (*c.mutable_params())["day"] = "monday";
    return *run([&](qf::StoreTransaction& tx) { return tx.queue_command(c, wait); });
  }

  /// The claim a leader makes: its fencing check, then the claim, in one transaction.
  std::vector<v1::Command> claim(std::uint64_t epoch, const std::string& holder,
                                 milliseconds abandon_after = milliseconds{2'000}, std::string* thrown = nullptr) {
    auto claimed = run(
        [&](qf::StoreTransaction& tx) {
          tx.check_fence(epoch);
          return tx.claim_commands(epoch, holder, 16, abandon_after);
        },
        thrown);
    return claimed ? *claimed : std::vector<v1::Command>{};
  }

  v1::Command stored(std::int64_t id) {
    auto found = read([&](qf::StoreTransaction& tx) {
      const std::int64_t ids[] = {id};
      return tx.commands(ids);
    });
    REQUIRE(found.size() == 1);
    return found.front();
  }

  bool waiting(std::uint64_t epoch) {
    return read([&](qf::StoreTransaction& tx) { return tx.commands_waiting(epoch); });
  }

  void upsert(const std::string& id, v1::ExecutionStatus status, const std::string& agent = "a1") {
    v1::Execution e;
    e.set_execution_id(id);
    e.set_task_id("t");
    e.set_agent_id(agent);
    e.set_status(status);
    if (status != v1::EXECUTION_STATUS_PENDING) e.set_started_unix_ms(1'000);
    if (status == v1::EXECUTION_STATUS_SUCCESS) e.set_ended_unix_ms(2'000), e.set_exit_code(0);
    run([&](qf::StoreTransaction& tx) { return tx.upsert_execution(e); });
  }

  std::vector<qf::ExecutionChange> changes(std::int64_t after, std::vector<std::int64_t> also = {},
                                           std::size_t limit = 100) {
    return read([&](qf::StoreTransaction& tx) { return tx.execution_changes(after, also, limit); });
  }

  qf::testing::TempDir dir;
  boost::asio::io_context io;
  std::unique_ptr<qf::Store> store;
};

}  // namespace

TEST_CASE("a queued command is claimed once by the leader, answered once, and read back with its answer",
          "[store][commands]") {
  qf::testing::QuietLog quiet;
  FOR_EACH_BACKEND();
  CommandStore s{backend};
  const auto epoch = s.lead("c1");
  CHECK_FALSE(s.waiting(epoch));

  const auto queued = s.queue(v1::COMMAND_KIND_TRIGGER, "backup");
  CHECK(queued.id() > 0);
  CHECK(queued.state() == v1::COMMAND_STATE_QUEUED);
  CHECK(queued.deadline_unix_ms() - queued.queued_unix_ms() == 60'000);
  CHECK(s.waiting(epoch));

  auto claimed = s.claim(epoch, "c1");
  REQUIRE(claimed.size() == 1);
  CHECK(claimed[0].id() == queued.id());
  CHECK(claimed[0].state() == v1::COMMAND_STATE_CLAIMED);
  CHECK(claimed[0].claimed_epoch() == epoch);
  CHECK(claimed[0].claimed_by() == "c1");
  CHECK(claimed[0].actor().name() == "alice");
  CHECK(claimed[0].params().at("day") == "monday");
  CHECK(claimed[0].origin_coordinator_id() == "standby");
  // Claimed: not waiting, not claimed a second time.
  CHECK_FALSE(s.waiting(epoch));
  CHECK(s.claim(epoch, "c1").empty());

  v1::CommandResult result;
  result.add_execution_ids("backup:1700000000000");
  CHECK(*s.run([&](qf::StoreTransaction& tx) { return tx.answer_command(queued.id(), epoch, result); }));
  CHECK_FALSE(*s.run([&](qf::StoreTransaction& tx) { return tx.answer_command(queued.id(), epoch, result); }));
  const auto answered = s.stored(queued.id());
  CHECK(answered.state() == v1::COMMAND_STATE_ANSWERED);
  REQUIRE(answered.result().execution_ids_size() == 1);
  CHECK(answered.result().execution_ids(0) == "backup:1700000000000");
  CHECK(answered.answered_unix_ms() >= answered.queued_unix_ms());
  // Too late to withdraw: the answer stays.
  auto after = *s.run([&](qf::StoreTransaction& tx) { return tx.withdraw_command(queued.id()); });
  REQUIRE(after);
  CHECK(after->state() == v1::COMMAND_STATE_ANSWERED);
}

TEST_CASE("a deposed leader claims nothing: its fencing check fails the claim and the next leader takes the command",
          "[store][commands]") {
  qf::testing::QuietLog quiet;
  FOR_EACH_BACKEND();
  CommandStore s{backend};
  const auto old_epoch = s.lead("c1");
  const auto queued = s.queue(v1::COMMAND_KIND_CANCEL, "backup:1");
  const auto new_epoch = s.hand_over("c1", "c2");
  REQUIRE(new_epoch == old_epoch + 1);

  std::string thrown;
  CHECK(s.claim(old_epoch, "c1", milliseconds{2'000}, &thrown).empty());
  CHECK_THAT(thrown, Catch::Contains("lease lost: epoch"));
  CHECK(s.stored(queued.id()).state() == v1::COMMAND_STATE_QUEUED);

  auto claimed = s.claim(new_epoch, "c2");
  REQUIRE(claimed.size() == 1);
  CHECK(claimed[0].claimed_by() == "c2");
}

TEST_CASE("a command an older leader claimed and never answered is answered 'may have run' and never run again",
          "[store][commands]") {
  qf::testing::QuietLog quiet;
  FOR_EACH_BACKEND();
  CommandStore s{backend};
  const auto old_epoch = s.lead("c1");
  const auto queued = s.queue(v1::COMMAND_KIND_TRIGGER, "backup");
  REQUIRE(s.claim(old_epoch, "c1").size() == 1);  // c1 claims it, then is gone
  const auto new_epoch = s.hand_over("c1", "c2");
  CHECK(s.waiting(new_epoch));

  // Within the grace the old leader may still answer: nothing changes.
  CHECK(s.claim(new_epoch, "c2", milliseconds{60'000}).empty());
  CHECK(s.stored(queued.id()).state() == v1::COMMAND_STATE_CLAIMED);
  // After it: answered errc::fenced, not claimed by the new leader.
  CHECK(s.claim(new_epoch, "c2", milliseconds{0}).empty());
  const auto abandoned = s.stored(queued.id());
  CHECK(abandoned.state() == v1::COMMAND_STATE_ANSWERED);
  CHECK(abandoned.result().error_code() == static_cast<int>(qf::errc::fenced));
  CHECK_THAT(abandoned.result().error_reason(),
             Catch::Contains("the leader c1") && Catch::Contains("may have run once"));
  CHECK_FALSE(s.waiting(new_epoch));
  // The old leader's late answer changes nothing.
  v1::CommandResult late;
  late.add_execution_ids("backup:1");
  CHECK_FALSE(*s.run([&](qf::StoreTransaction& tx) { return tx.answer_command(queued.id(), old_epoch, late); }));
}

TEST_CASE("a command whose run was fenced goes back to the queue and the next leader runs it", "[store][commands]") {
  qf::testing::QuietLog quiet;
  FOR_EACH_BACKEND();
  CommandStore s{backend};
  const auto old_epoch = s.lead("c1");
  const auto queued = s.queue(v1::COMMAND_KIND_RETRY, "backup:1");
  REQUIRE(s.claim(old_epoch, "c1").size() == 1);
  const auto new_epoch = s.hand_over("c1", "c2");
  CHECK(*s.run([&](qf::StoreTransaction& tx) { return tx.requeue_command(queued.id(), old_epoch); }));
  // Only the claim's own epoch may requeue it.
  CHECK_FALSE(*s.run([&](qf::StoreTransaction& tx) { return tx.requeue_command(queued.id(), old_epoch); }));
  auto claimed = s.claim(new_epoch, "c2", milliseconds{0});
  REQUIRE(claimed.size() == 1);
  CHECK(claimed[0].id() == queued.id());
  CHECK(claimed[0].claimed_epoch() == new_epoch);
}

TEST_CASE("a withdrawn command, or one past its deadline, is never claimed", "[store][commands]") {
  qf::testing::QuietLog quiet;
  FOR_EACH_BACKEND();
  CommandStore s{backend};
  const auto epoch = s.lead("c1");
  const auto withdrawn = s.queue(v1::COMMAND_KIND_TRIGGER, "backup");
  auto after = *s.run([&](qf::StoreTransaction& tx) { return tx.withdraw_command(withdrawn.id()); });
  REQUIRE(after);
  CHECK(after->state() == v1::COMMAND_STATE_WITHDRAWN);
  const auto late = s.queue(v1::COMMAND_KIND_TRIGGER, "backup", milliseconds{0});
  CHECK(s.claim(epoch, "c1").empty());
  CHECK(s.stored(late.id()).state() == v1::COMMAND_STATE_WITHDRAWN);
  CHECK_FALSE(s.waiting(epoch));
  CHECK_FALSE(*s.run([&](qf::StoreTransaction& tx) { return tx.withdraw_command(999'999); }));
  // Old answered and withdrawn commands are purged; a queued one is kept.
  const auto kept = s.queue(v1::COMMAND_KIND_TRIGGER, "backup");
  const auto purged = *s.run([&](qf::StoreTransaction& tx) { return tx.purge_commands(kept.queued_unix_ms() + 1); });
  CHECK(purged == 2);
  CHECK(s.stored(kept.id()).state() == v1::COMMAND_STATE_QUEUED);
}

TEST_CASE("a command without a kind or a target is refused naming the field and nothing is queued",
          "[store][commands]") {
  qf::testing::QuietLog quiet;
  FOR_EACH_BACKEND();
  CommandStore s{backend};
  const auto epoch = s.lead("c1");
  v1::Command no_kind;
  no_kind.set_target_id("backup");
  v1::Command no_target;
  no_target.set_kind(v1::COMMAND_KIND_CANCEL);
  std::string thrown;
  s.run([&](qf::StoreTransaction& tx) { return tx.queue_command(no_kind, milliseconds{1'000}); }, &thrown);
  CHECK_THAT(thrown, Catch::Contains("kind") && Catch::Contains("is unspecified"));
  s.run([&](qf::StoreTransaction& tx) { return tx.queue_command(no_target, milliseconds{1'000}); }, &thrown);
  CHECK_THAT(thrown, Catch::Contains("target_id") && Catch::Contains("is empty"));
  CHECK_FALSE(s.waiting(epoch));
}

TEST_CASE("every stored change of an execution is in the change feed, in order, with the execution's record",
          "[store][change_feed]") {
  qf::testing::QuietLog quiet;
  FOR_EACH_BACKEND();
  CommandStore s{backend};
  CHECK(s.read([](qf::StoreTransaction& tx) { return tx.latest_execution_change(); }) == 0);
  s.upsert("t:1", v1::EXECUTION_STATUS_PENDING);
  s.upsert("t:1", v1::EXECUTION_STATUS_RUNNING);
  s.upsert("t:2", v1::EXECUTION_STATUS_PENDING);
  s.upsert("t:1", v1::EXECUTION_STATUS_SUCCESS);
  s.upsert("t:1", v1::EXECUTION_STATUS_SUCCESS);  // the same record again: no change
  const auto latest = s.read([](qf::StoreTransaction& tx) { return tx.latest_execution_change(); });

  auto all = s.changes(0);
  REQUIRE(all.size() == 4);
  CHECK(all.back().seq == latest);
  for (std::size_t i = 1; i < all.size(); ++i) CHECK(all[i].seq > all[i - 1].seq);
  CHECK(all[0].status == v1::EXECUTION_STATUS_PENDING);
  CHECK(all[1].status == v1::EXECUTION_STATUS_RUNNING);
  CHECK(all[2].record.execution_id() == "t:2");
  CHECK(all[3].status == v1::EXECUTION_STATUS_SUCCESS);
  // The record is the execution as stored now, whatever the change wrote.
  CHECK(all[0].record.status() == v1::EXECUTION_STATUS_SUCCESS);
  CHECK(all[0].at_unix_ms > 0);

  // After a seq, with earlier seqs asked for again, at most `limit`.
  auto later = s.changes(all[1].seq, {all[0].seq});
  REQUIRE(later.size() == 3);
  CHECK(later[0].seq == all[0].seq);
  CHECK(later[1].seq == all[2].seq);
  CHECK(s.changes(0, {}, 2).size() == 2);
  CHECK(s.changes(latest).empty());

  // Purged by age, the oldest first, at most `max_rows` at a time; newer ones stay and seqs go on.
  const auto cut = all.back().at_unix_ms + 1;
  CHECK(*s.run([&](qf::StoreTransaction& tx) { return tx.purge_execution_changes(cut, 3); }) == 3);
  CHECK(s.changes(0).size() == 1);
  CHECK(*s.run([&](qf::StoreTransaction& tx) { return tx.purge_execution_changes(cut, 100); }) == 1);
  CHECK(s.changes(0).empty());
  s.upsert("t:3", v1::EXECUTION_STATUS_PENDING);
  auto next = s.changes(0);
  REQUIRE(next.size() == 1);
  CHECK(next[0].seq > latest);
  CHECK(*s.run([&](qf::StoreTransaction& tx) { return tx.purge_execution_changes(0, 100); }) == 0);
}

TEST_CASE("the change feed cursor publishes each seq once, also one that commits after a later one", "[change_feed]") {
  qf::detail::ChangeFeedCursor cursor{1'000};
  cursor.start_at(10);
  CHECK(cursor.after() == 10);
  CHECK(cursor.accept({11, 12}, 0) == std::vector<bool>{true, true});
  // 13 and 14 are not visible yet (their transactions have not committed): holes.
  CHECK(cursor.accept({15}, 100) == std::vector<bool>{true});
  CHECK(cursor.after() == 15);
  CHECK(cursor.holes() == std::vector<std::int64_t>{13, 14});
  // 14 commits: published once, the hole closes.
  CHECK(cursor.accept({14, 16}, 200) == std::vector<bool>{true, true});
  CHECK(cursor.holes() == std::vector<std::int64_t>{13});
  CHECK(cursor.accept({14}, 300) == std::vector<bool>{false});
  // 13 never comes (a rolled-back transaction): given up after the wait.
  CHECK(cursor.accept({}, 1'099).empty());
  CHECK(cursor.holes() == std::vector<std::int64_t>{13});
  cursor.accept({}, 1'100);
  CHECK(cursor.holes().empty());
  // Nothing at or below the start is published.
  cursor.start_at(100);
  CHECK(cursor.accept({100, 101}, 2'000) == std::vector<bool>{false, true});
}

TEST_CASE("a change read after its run moved on shows the state it wrote, without the later state's fields",
          "[change_feed]") {
  v1::Execution done;
  done.set_execution_id("t:1");
  done.set_status(v1::EXECUTION_STATUS_SUCCESS);
  done.set_agent_id("a1");
  done.set_started_unix_ms(1'000);
  done.set_ended_unix_ms(2'000);
  done.set_duration_ms(1'000);
  done.set_exit_code(0);
  CHECK(qf::detail::execution_as_of(done, v1::EXECUTION_STATUS_SUCCESS).SerializeAsString() ==
        done.SerializeAsString());
  const auto running = qf::detail::execution_as_of(done, v1::EXECUTION_STATUS_RUNNING);
  CHECK(running.status() == v1::EXECUTION_STATUS_RUNNING);
  CHECK(running.started_unix_ms() == 1'000);
  CHECK(running.agent_id() == "a1");
  CHECK(running.ended_unix_ms() == 0);
  CHECK(running.duration_ms() == 0);
  CHECK_FALSE(running.has_exit_code());
  const auto pending = qf::detail::execution_as_of(done, v1::EXECUTION_STATUS_PENDING);
  CHECK(pending.status() == v1::EXECUTION_STATUS_PENDING);
  CHECK(pending.started_unix_ms() == 0);
}
