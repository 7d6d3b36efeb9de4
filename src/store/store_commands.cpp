// SPDX-License-Identifier: Apache-2.0
// Commands through any coordinator in the StoreTransaction: a standby queues a trigger, retry
// or cancel; the leader claims it (behind its fencing check), answers it; the standby reads
// the answer or withdraws the command when it stops waiting. Times are the database's clock.
#include <fmt/format.h>

#include "sql_transaction.hpp"

namespace quartzflow::detail {

std::int64_t SqlStoreTransaction::database_now_unix_ms() {
  auto rows = statement(fmt::format("SELECT {}", db_.dialect().now_unix_ms_sql));
  if (!rows.next()) throw error(errc::store_failed, "store: the database's clock could not be read");
  return rows.int64(0);
}

v1::Command SqlStoreTransaction::queue_command(const v1::Command& command, std::chrono::milliseconds wait) {
  require_writable("queue_command");
  if (command.kind() == v1::COMMAND_KIND_UNSPECIFIED) throw_invalid("command", "kind", "is unspecified");
  if (command.target_id().empty()) throw_invalid("command", "target_id", "is empty");
  const std::int64_t now = database_now_unix_ms();
  v1::Command queued = command;
  queued.set_id(0);
  queued.set_state(v1::COMMAND_STATE_QUEUED);
  queued.set_queued_unix_ms(now);
  queued.set_deadline_unix_ms(now + wait.count());
  queued.clear_claimed_epoch();
  queued.clear_claimed_by();
  queued.clear_answered_unix_ms();
  queued.clear_result();
  {
    auto inserted = statement(
        "INSERT INTO commands (state, deadline_unix_ms, claimed_epoch, updated_unix_ms, record) "
        "VALUES (?1, ?2, 0, ?3, ?4) RETURNING id");
    inserted.bind(1, static_cast<std::int64_t>(v1::COMMAND_STATE_QUEUED))
        .bind(2, queued.deadline_unix_ms())
        .bind(3, now)
        .bind_blob(4, serialize_deterministic(queued));
    if (!inserted.next()) throw error(errc::store_failed, "store: queue_command: no id returned");
    queued.set_id(inserted.int64(0));
  }
  // The record carries its id too, so a reader needs only the record.
  statement("UPDATE commands SET record = ?1 WHERE id = ?2")
      .bind_blob(1, serialize_deterministic(queued))
      .bind(2, queued.id())
      .run();
  return queued;
}

bool SqlStoreTransaction::commands_waiting(std::uint64_t epoch) {
  auto rows = statement("SELECT 1 FROM commands WHERE state = ?1 OR (state = ?2 AND claimed_epoch < ?3) LIMIT 1");
  rows.bind(1, static_cast<std::int64_t>(v1::COMMAND_STATE_QUEUED))
      .bind(2, static_cast<std::int64_t>(v1::COMMAND_STATE_CLAIMED))
      .bind(3, static_cast<std::int64_t>(epoch));
  return rows.next();
}

std::vector<v1::Command> SqlStoreTransaction::claim_commands(std::uint64_t epoch, std::string_view holder_id,
                                                             std::size_t limit,
                                                             std::chrono::milliseconds abandon_after) {
  require_writable("claim_commands");
  const std::int64_t now = database_now_unix_ms();
  auto rewrite = [this, now](const v1::Command& c, std::int64_t expected_state, std::int64_t expected_epoch) {
    return statement(
               "UPDATE commands SET state = ?1, claimed_epoch = ?2, updated_unix_ms = ?3, record = ?4 "
               "WHERE id = ?5 AND state = ?6 AND claimed_epoch = ?7")
               .bind(1, static_cast<std::int64_t>(c.state()))
               .bind(2, static_cast<std::int64_t>(c.claimed_epoch()))
               .bind(3, now)
               .bind_blob(4, serialize_deterministic(c))
               .bind(5, c.id())
               .bind(6, expected_state)
               .bind(7, expected_epoch)
               .run() > 0;
  };
  // Claimed under an older lease and never answered: that leader stopped (or was fenced)
  // somewhere between the claim and the answer. The run may have been recorded, so it is
  // not run again; its waiter hears so. A while after the claim only: a leader that lost its
  // lease but lives answers what it ran, and requeues what its fencing refused.
  std::vector<v1::Command> stale;
  {
    auto rows = statement(
        "SELECT record FROM commands WHERE state = ?1 AND claimed_epoch < ?2 AND updated_unix_ms <= ?3 ORDER BY id");
    rows.bind(1, static_cast<std::int64_t>(v1::COMMAND_STATE_CLAIMED))
        .bind(2, static_cast<std::int64_t>(epoch))
        .bind(3, now - abandon_after.count());
    while (rows.next()) parse_record(rows.blob(0), stale.emplace_back());
  }
  for (auto& c : stale) {
    const auto claimed_epoch = static_cast<std::int64_t>(c.claimed_epoch());
    c.set_state(v1::COMMAND_STATE_ANSWERED);
    c.set_answered_unix_ms(now);
    auto* result = c.mutable_result();
    result->Clear();
    result->set_error_code(static_cast<int>(errc::fenced));
    result->set_error_reason(fmt::format(
        "the leader {} (epoch {}) took this command and stopped before answering it: it may have run once, and "
        "it is not run again; look for its execution before sending it again",
        c.claimed_by(), c.claimed_epoch()));
    rewrite(c, v1::COMMAND_STATE_CLAIMED, claimed_epoch);
  }
  // Past their deadline: their waiter has given up (or is gone); nobody runs them.
  std::vector<v1::Command> late;
  {
    auto rows = statement("SELECT record FROM commands WHERE state = ?1 AND deadline_unix_ms <= ?2 ORDER BY id");
    rows.bind(1, static_cast<std::int64_t>(v1::COMMAND_STATE_QUEUED)).bind(2, now);
    while (rows.next()) parse_record(rows.blob(0), late.emplace_back());
  }
  for (auto& c : late) {
    c.set_state(v1::COMMAND_STATE_WITHDRAWN);
    rewrite(c, v1::COMMAND_STATE_QUEUED, 0);
  }
  std::vector<v1::Command> queued;
  {
    auto rows = statement("SELECT record FROM commands WHERE state = ?1 ORDER BY id LIMIT ?2");
    rows.bind(1, static_cast<std::int64_t>(v1::COMMAND_STATE_QUEUED)).bind(2, static_cast<std::int64_t>(limit));
    while (rows.next()) parse_record(rows.blob(0), queued.emplace_back());
  }
  std::vector<v1::Command> claimed;
  for (auto& c : queued) {
    c.set_state(v1::COMMAND_STATE_CLAIMED);
    c.set_claimed_epoch(epoch);
    c.set_claimed_by(std::string(holder_id));
    // Another leader's claim committed first (PostgreSQL re-checks the state under the row lock).
    if (rewrite(c, v1::COMMAND_STATE_QUEUED, 0)) claimed.push_back(std::move(c));
  }
  return claimed;
}

bool SqlStoreTransaction::answer_command(std::int64_t id, std::uint64_t epoch, const v1::CommandResult& result) {
  require_writable("answer_command");
  const std::int64_t now = database_now_unix_ms();
  std::optional<v1::Command> stored;
  {
    auto rows = statement("SELECT record FROM commands WHERE id = ?1 AND state = ?2 AND claimed_epoch = ?3");
    rows.bind(1, id)
        .bind(2, static_cast<std::int64_t>(v1::COMMAND_STATE_CLAIMED))
        .bind(3, static_cast<std::int64_t>(epoch));
    if (rows.next()) parse_record(rows.blob(0), stored.emplace());
  }
  if (!stored) return false;
  stored->set_state(v1::COMMAND_STATE_ANSWERED);
  stored->set_answered_unix_ms(now);
  *stored->mutable_result() = result;
  return statement(
             "UPDATE commands SET state = ?1, updated_unix_ms = ?2, record = ?3 "
             "WHERE id = ?4 AND state = ?5 AND claimed_epoch = ?6")
             .bind(1, static_cast<std::int64_t>(v1::COMMAND_STATE_ANSWERED))
             .bind(2, now)
             .bind_blob(3, serialize_deterministic(*stored))
             .bind(4, id)
             .bind(5, static_cast<std::int64_t>(v1::COMMAND_STATE_CLAIMED))
             .bind(6, static_cast<std::int64_t>(epoch))
             .run() > 0;
}

bool SqlStoreTransaction::requeue_command(std::int64_t id, std::uint64_t epoch) {
  require_writable("requeue_command");
  const std::int64_t now = database_now_unix_ms();
  std::optional<v1::Command> stored;
  {
    auto rows = statement("SELECT record FROM commands WHERE id = ?1 AND state = ?2 AND claimed_epoch = ?3");
    rows.bind(1, id)
        .bind(2, static_cast<std::int64_t>(v1::COMMAND_STATE_CLAIMED))
        .bind(3, static_cast<std::int64_t>(epoch));
    if (rows.next()) parse_record(rows.blob(0), stored.emplace());
  }
  if (!stored) return false;
  stored->set_state(v1::COMMAND_STATE_QUEUED);
  stored->clear_claimed_epoch();
  stored->clear_claimed_by();
  return statement(
             "UPDATE commands SET state = ?1, claimed_epoch = 0, updated_unix_ms = ?2, record = ?3 "
             "WHERE id = ?4 AND state = ?5 AND claimed_epoch = ?6")
             .bind(1, static_cast<std::int64_t>(v1::COMMAND_STATE_QUEUED))
             .bind(2, now)
             .bind_blob(3, serialize_deterministic(*stored))
             .bind(4, id)
             .bind(5, static_cast<std::int64_t>(v1::COMMAND_STATE_CLAIMED))
             .bind(6, static_cast<std::int64_t>(epoch))
             .run() > 0;
}

std::vector<v1::Command> SqlStoreTransaction::commands(std::span<const std::int64_t> ids) {
  std::vector<v1::Command> out;
  if (ids.empty()) return out;
  std::string sql = "SELECT record FROM commands WHERE id IN (";
  for (std::size_t i = 0; i < ids.size(); ++i) sql += fmt::format("{}?{}", i ? ", " : "", i + 1);
  sql += ") ORDER BY id";
  auto rows = statement(sql);
  for (std::size_t i = 0; i < ids.size(); ++i) rows.bind(static_cast<int>(i + 1), ids[i]);
  while (rows.next()) parse_record(rows.blob(0), out.emplace_back());
  return out;
}

std::optional<v1::Command> SqlStoreTransaction::withdraw_command(std::int64_t id) {
  require_writable("withdraw_command");
  std::optional<v1::Command> stored;
  {
    auto rows = statement("SELECT record FROM commands WHERE id = ?1");
    rows.bind(1, id);
    if (rows.next()) parse_record(rows.blob(0), stored.emplace());
  }
  if (!stored || stored->state() != v1::COMMAND_STATE_QUEUED) return stored;
  stored->set_state(v1::COMMAND_STATE_WITHDRAWN);
  const bool withdrawn = statement(
                             "UPDATE commands SET state = ?1, updated_unix_ms = ?2, record = ?3 "
                             "WHERE id = ?4 AND state = ?5")
                             .bind(1, static_cast<std::int64_t>(v1::COMMAND_STATE_WITHDRAWN))
                             .bind(2, database_now_unix_ms())
                             .bind_blob(3, serialize_deterministic(*stored))
                             .bind(4, id)
                             .bind(5, static_cast<std::int64_t>(v1::COMMAND_STATE_QUEUED))
                             .run() > 0;
  if (withdrawn) return stored;
  // A leader's claim committed in between (PostgreSQL): what it left is the answer.
  auto rows = statement("SELECT record FROM commands WHERE id = ?1");
  rows.bind(1, id);
  if (!rows.next()) return std::nullopt;
  v1::Command now_stored;
  parse_record(rows.blob(0), now_stored);
  return now_stored;
}

std::size_t SqlStoreTransaction::purge_commands(std::int64_t older_than_unix_ms) {
  require_writable("purge_commands");
  return static_cast<std::size_t>(
      statement("DELETE FROM commands WHERE (state IN (?1, ?2) AND updated_unix_ms < ?3) OR (state = ?4 AND "
                "deadline_unix_ms < ?3)")
          .bind(1, static_cast<std::int64_t>(v1::COMMAND_STATE_ANSWERED))
          .bind(2, static_cast<std::int64_t>(v1::COMMAND_STATE_WITHDRAWN))
          .bind(3, older_than_unix_ms)
          .bind(4, static_cast<std::int64_t>(v1::COMMAND_STATE_QUEUED))
          .run());
}

}  // namespace quartzflow::detail
