// SPDX-License-Identifier: Apache-2.0
// Alerts in the StoreTransaction: rules, channels, silences and heartbeat monitors (records
// by id), the alerts the engine raises, and the outbox of deliveries with their attempts.
#include <fmt/format.h>

#include "sql_transaction.hpp"

namespace quartzflow::detail {
namespace {

/// The store keeps this many of a delivery's latest attempts (attempt_count counts all).
constexpr int k_max_kept_attempts = 100;

template <typename T>
std::optional<T> read_one(BorrowedStatement& rows) {
  if (!rows.next()) return std::nullopt;
  T out;
  parse_record(rows.blob(0), out);
  return out;
}

template <typename T>
std::vector<T> read_all(BorrowedStatement& rows) {
  std::vector<T> out;
  while (rows.next()) parse_record(rows.blob(0), out.emplace_back());
  return out;
}

void require_id(std::string_view input, const std::string& id) {
  if (id.empty()) throw_invalid(input, "id", "is empty");
}

}  // namespace

// ---- rules, channels: a record per id ----

std::optional<v1::AlertRule> SqlStoreTransaction::alert_rule(std::string_view id) {
  auto rows = statement("SELECT record FROM alert_rules WHERE id = ?1");
  rows.bind(1, id);
  return read_one<v1::AlertRule>(rows);
}

void SqlStoreTransaction::put_alert_rule(const v1::AlertRule& rule) {
  require_writable("put_alert_rule");
  require_id("alert rule", rule.id());
  statement(
      "INSERT INTO alert_rules (id, record) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET record = excluded.record")
      .bind(1, rule.id())
      .bind_blob(2, serialize_deterministic(rule))
      .run();
}

bool SqlStoreTransaction::delete_alert_rule(std::string_view id) {
  require_writable("delete_alert_rule");
  return statement("DELETE FROM alert_rules WHERE id = ?1").bind(1, id).run() > 0;
}

Listing<v1::AlertRule> SqlStoreTransaction::list_alert_rules(std::uint32_t page, std::uint32_t page_size) {
  const auto paging = paging_of(page, page_size);
  Listing<v1::AlertRule> out;
  out.total = count("SELECT COUNT(*) FROM alert_rules", {});
  auto rows = statement("SELECT record FROM alert_rules ORDER BY id LIMIT ?1 OFFSET ?2");
  rows.bind(1, paging.limit).bind(2, paging.offset);
  out.items = read_all<v1::AlertRule>(rows);
  return out;
}

std::vector<v1::AlertRule> SqlStoreTransaction::all_alert_rules() {
  auto rows = statement("SELECT record FROM alert_rules ORDER BY id");
  return read_all<v1::AlertRule>(rows);
}

std::optional<v1::Channel> SqlStoreTransaction::channel(std::string_view id) {
  auto rows = statement("SELECT record FROM alert_channels WHERE id = ?1");
  rows.bind(1, id);
  return read_one<v1::Channel>(rows);
}

void SqlStoreTransaction::put_channel(const v1::Channel& channel) {
  require_writable("put_channel");
  require_id("channel", channel.id());
  statement(
      "INSERT INTO alert_channels (id, record) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET record = "
      "excluded.record")
      .bind(1, channel.id())
      .bind_blob(2, serialize_deterministic(channel))
      .run();
}

bool SqlStoreTransaction::delete_channel(std::string_view id) {
  require_writable("delete_channel");
  return statement("DELETE FROM alert_channels WHERE id = ?1").bind(1, id).run() > 0;
}

Listing<v1::Channel> SqlStoreTransaction::list_channels(std::uint32_t page, std::uint32_t page_size) {
  const auto paging = paging_of(page, page_size);
  Listing<v1::Channel> out;
  out.total = count("SELECT COUNT(*) FROM alert_channels", {});
  auto rows = statement("SELECT record FROM alert_channels ORDER BY id LIMIT ?1 OFFSET ?2");
  rows.bind(1, paging.limit).bind(2, paging.offset);
  out.items = read_all<v1::Channel>(rows);
  return out;
}

std::vector<v1::Channel> SqlStoreTransaction::all_channels() {
  auto rows = statement("SELECT record FROM alert_channels ORDER BY id");
  return read_all<v1::Channel>(rows);
}

// ---- silences ----

std::optional<v1::Silence> SqlStoreTransaction::silence(std::string_view id) {
  auto rows = statement("SELECT record FROM alert_silences WHERE id = ?1");
  rows.bind(1, id);
  return read_one<v1::Silence>(rows);
}

void SqlStoreTransaction::put_silence(const v1::Silence& silence) {
  require_writable("put_silence");
  require_id("silence", silence.id());
  statement(
      "INSERT INTO alert_silences (id, ends_unix_ms, record) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO UPDATE SET "
      "ends_unix_ms = excluded.ends_unix_ms, record = excluded.record")
      .bind(1, silence.id())
      .bind(2, silence.ends_unix_ms())
      .bind_blob(3, serialize_deterministic(silence))
      .run();
}

bool SqlStoreTransaction::delete_silence(std::string_view id) {
  require_writable("delete_silence");
  return statement("DELETE FROM alert_silences WHERE id = ?1").bind(1, id).run() > 0;
}

Listing<v1::Silence> SqlStoreTransaction::list_silences(std::int64_t active_at_unix_ms, std::uint32_t page,
                                                        std::uint32_t page_size) {
  SqlConditions where;
  if (active_at_unix_ms > 0) where.add("ends_unix_ms > ?", {active_at_unix_ms});
  const auto paging = paging_of(page, page_size);
  Listing<v1::Silence> out;
  out.total = count("SELECT COUNT(*) FROM alert_silences" + where.where(), where.values());
  auto rows = statement("SELECT record FROM alert_silences" + where.where() +
                        " ORDER BY ends_unix_ms DESC, id LIMIT ? OFFSET ?");
  const int next = rows.bind_all(where.values());
  rows.bind(next, paging.limit).bind(next + 1, paging.offset);
  out.items = read_all<v1::Silence>(rows);
  return out;
}

// ---- monitors ----

namespace {

std::optional<StoredMonitor> read_monitor(BorrowedStatement& rows) {
  if (!rows.next()) return std::nullopt;
  StoredMonitor out;
  parse_record(rows.blob(0), out.monitor);
  out.token_sha256 = rows.text(1);
  return out;
}

}  // namespace

std::optional<StoredMonitor> SqlStoreTransaction::monitor(std::string_view id) {
  auto rows = statement("SELECT record, token_sha256 FROM alert_monitors WHERE id = ?1");
  rows.bind(1, id);
  return read_monitor(rows);
}

std::optional<StoredMonitor> SqlStoreTransaction::monitor_by_token_sha256(std::string_view token_sha256) {
  auto rows = statement("SELECT record, token_sha256 FROM alert_monitors WHERE token_sha256 = ?1");
  rows.bind(1, token_sha256);
  return read_monitor(rows);
}

void SqlStoreTransaction::put_monitor(const StoredMonitor& stored) {
  require_writable("put_monitor");
  require_id("monitor", stored.monitor.id());
  if (stored.token_sha256.empty()) throw_invalid("monitor", "token_sha256", "is empty");
  {
    auto other = statement("SELECT id FROM alert_monitors WHERE token_sha256 = ?1 AND id <> ?2");
    other.bind(1, stored.token_sha256).bind(2, stored.monitor.id());
    if (other.next()) throw error(errc::conflict, ValidationError{"monitor", "token", "is another monitor's token"});
  }
  statement(
      "INSERT INTO alert_monitors (id, token_sha256, record) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO UPDATE SET "
      "token_sha256 = excluded.token_sha256, record = excluded.record")
      .bind(1, stored.monitor.id())
      .bind(2, stored.token_sha256)
      .bind_blob(3, serialize_deterministic(stored.monitor))
      .run();
}

bool SqlStoreTransaction::delete_monitor(std::string_view id) {
  require_writable("delete_monitor");
  return statement("DELETE FROM alert_monitors WHERE id = ?1").bind(1, id).run() > 0;
}

Listing<v1::Monitor> SqlStoreTransaction::list_monitors(std::uint32_t page, std::uint32_t page_size) {
  const auto paging = paging_of(page, page_size);
  Listing<v1::Monitor> out;
  out.total = count("SELECT COUNT(*) FROM alert_monitors", {});
  auto rows = statement("SELECT record FROM alert_monitors ORDER BY id LIMIT ?1 OFFSET ?2");
  rows.bind(1, paging.limit).bind(2, paging.offset);
  out.items = read_all<v1::Monitor>(rows);
  return out;
}

std::vector<v1::Monitor> SqlStoreTransaction::all_monitors() {
  auto rows = statement("SELECT record FROM alert_monitors ORDER BY id");
  return read_all<v1::Monitor>(rows);
}

// ---- alerts ----

void SqlStoreTransaction::upsert_alert(const v1::Alert& alert) {
  require_writable("upsert_alert");
  require_id("alert", alert.id());
  if (alert.rule_id().empty()) throw_invalid("alert", "rule_id", "is empty");
  statement(
      "INSERT INTO alerts (id, rule_id, state, task_id, started_unix_ms, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6) "
      "ON CONFLICT (id) DO UPDATE SET rule_id = excluded.rule_id, state = excluded.state, task_id = "
      "excluded.task_id, started_unix_ms = excluded.started_unix_ms, record = excluded.record")
      .bind(1, alert.id())
      .bind(2, alert.rule_id())
      .bind(3, static_cast<std::int64_t>(alert.state()))
      .bind(4, alert.task_id())
      .bind(5, alert.started_unix_ms())
      .bind_blob(6, serialize_deterministic(alert))
      .run();
}

std::optional<v1::Alert> SqlStoreTransaction::alert(std::string_view id) {
  auto rows = statement("SELECT record FROM alerts WHERE id = ?1");
  rows.bind(1, id);
  return read_one<v1::Alert>(rows);
}

Listing<v1::Alert> SqlStoreTransaction::list_alerts(const AlertFilter& filter) {
  SqlConditions where;
  if (filter.state != v1::ALERT_STATE_UNSPECIFIED) {
    if (!v1::AlertState_IsValid(filter.state))
      throw_invalid("alert list request", "state",
                    fmt::format("{} is not an AlertState", static_cast<int>(filter.state)));
    where.add("state = ?", {static_cast<std::int64_t>(filter.state)});
  }
  if (!filter.rule_id.empty()) where.add("rule_id = ?", {filter.rule_id});
  if (!filter.task_id.empty()) where.add("task_id = ?", {filter.task_id});
  const auto paging = paging_of(filter.page, filter.page_size);
  Listing<v1::Alert> out;
  out.total = count("SELECT COUNT(*) FROM alerts" + where.where(), where.values());
  auto rows = statement("SELECT record FROM alerts" + where.where() +
                        " ORDER BY started_unix_ms DESC, id DESC LIMIT ? OFFSET ?");
  const int next = rows.bind_all(where.values());
  rows.bind(next, paging.limit).bind(next + 1, paging.offset);
  out.items = read_all<v1::Alert>(rows);
  return out;
}

std::vector<v1::Alert> SqlStoreTransaction::firing_alerts() {
  auto rows = statement("SELECT record FROM alerts WHERE state = ?1 ORDER BY started_unix_ms, id");
  rows.bind(1, static_cast<std::int64_t>(v1::ALERT_STATE_FIRING));
  return read_all<v1::Alert>(rows);
}

// ---- the delivery outbox ----

void SqlStoreTransaction::enqueue_delivery(const v1::Delivery& delivery) {
  require_writable("enqueue_delivery");
  require_id("delivery", delivery.id());
  if (delivery.state() == v1::DELIVERY_STATE_UNSPECIFIED || !v1::DeliveryState_IsValid(delivery.state()))
    throw_invalid("delivery", "state", "is required (PENDING for a new delivery)");
  const std::int64_t updated = delivery.created_unix_ms() != 0 ? delivery.created_unix_ms() : now_unix_ms();
  statement(
      "INSERT INTO deliveries (id, kind, state, channel_id, execution_id, created_unix_ms, next_attempt_unix_ms, "
      "updated_unix_ms, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (id) DO NOTHING")
      .bind(1, delivery.id())
      .bind(2, static_cast<std::int64_t>(delivery.kind()))
      .bind(3, static_cast<std::int64_t>(delivery.state()))
      .bind(4, delivery.channel_id())
      .bind(5, delivery.execution_id())
      .bind(6, delivery.created_unix_ms())
      .bind(7, delivery.next_attempt_unix_ms())
      .bind(8, updated)
      .bind_blob(9, serialize_deterministic(delivery))
      .run();
}

std::optional<v1::Delivery> SqlStoreTransaction::delivery(std::string_view id) {
  auto rows = statement("SELECT record FROM deliveries WHERE id = ?1");
  rows.bind(1, id);
  return read_one<v1::Delivery>(rows);
}

std::vector<v1::Delivery> SqlStoreTransaction::due_deliveries(std::int64_t now_unix_ms, int limit) {
  if (limit <= 0) return {};
  auto rows = statement(
      "SELECT record FROM deliveries WHERE state = ?1 AND next_attempt_unix_ms <= ?2 ORDER BY created_unix_ms, rowid "
      "LIMIT ?3");
  rows.bind(1, static_cast<std::int64_t>(v1::DELIVERY_STATE_PENDING)).bind(2, now_unix_ms).bind(3, std::int64_t{limit});
  return read_all<v1::Delivery>(rows);
}

void SqlStoreTransaction::record_delivery_attempt(const std::string& id, const v1::DeliveryAttempt& attempt,
                                                  v1::DeliveryState state, std::int64_t next_attempt_unix_ms) {
  require_writable("record_delivery_attempt");
  if (state == v1::DELIVERY_STATE_UNSPECIFIED || !v1::DeliveryState_IsValid(state))
    throw_invalid("delivery attempt", "state", "is required: PENDING, DELIVERED or FAILED");
  auto stored = delivery(id);
  if (!stored) return;
  *stored->add_attempts() = attempt;
  const int excess = stored->attempts_size() - k_max_kept_attempts;
  if (excess > 0) stored->mutable_attempts()->DeleteSubrange(0, excess);
  stored->set_attempt_count(stored->attempt_count() + 1);
  stored->set_state(state);
  stored->set_next_attempt_unix_ms(next_attempt_unix_ms);
  statement(
      "UPDATE deliveries SET state = ?2, next_attempt_unix_ms = ?3, updated_unix_ms = ?4, record = ?5 WHERE id = ?1")
      .bind(1, id)
      .bind(2, static_cast<std::int64_t>(state))
      .bind(3, next_attempt_unix_ms)
      .bind(4, attempt.at_unix_ms() != 0 ? attempt.at_unix_ms() : now_unix_ms())
      .bind_blob(5, serialize_deterministic(*stored))
      .run();
}

Listing<v1::Delivery> SqlStoreTransaction::list_deliveries(const DeliveryFilter& filter) {
  constexpr std::string_view input = "delivery list request";
  SqlConditions where;
  if (filter.state != v1::DELIVERY_STATE_UNSPECIFIED) {
    if (!v1::DeliveryState_IsValid(filter.state))
      throw_invalid(input, "state", fmt::format("{} is not a DeliveryState", static_cast<int>(filter.state)));
    where.add("state = ?", {static_cast<std::int64_t>(filter.state)});
  }
  if (filter.kind != v1::DELIVERY_KIND_UNSPECIFIED) {
    if (!v1::DeliveryKind_IsValid(filter.kind))
      throw_invalid(input, "kind", fmt::format("{} is not a DeliveryKind", static_cast<int>(filter.kind)));
    where.add("kind = ?", {static_cast<std::int64_t>(filter.kind)});
  }
  if (!filter.channel_id.empty()) where.add("channel_id = ?", {filter.channel_id});
  if (!filter.execution_id.empty()) where.add("execution_id = ?", {filter.execution_id});
  const auto paging = paging_of(filter.page, filter.page_size);
  Listing<v1::Delivery> out;
  out.total = count("SELECT COUNT(*) FROM deliveries" + where.where(), where.values());
  auto rows = statement("SELECT record FROM deliveries" + where.where() +
                        " ORDER BY created_unix_ms DESC, rowid DESC LIMIT ? OFFSET ?");
  const int next = rows.bind_all(where.values());
  rows.bind(next, paging.limit).bind(next + 1, paging.offset);
  out.items = read_all<v1::Delivery>(rows);
  return out;
}

std::size_t SqlStoreTransaction::purge_deliveries(std::int64_t older_than_unix_ms) {
  require_writable("purge_deliveries");
  return static_cast<std::size_t>(statement("DELETE FROM deliveries WHERE state IN (?1, ?2) AND updated_unix_ms < ?3")
                                      .bind(1, static_cast<std::int64_t>(v1::DELIVERY_STATE_DELIVERED))
                                      .bind(2, static_cast<std::int64_t>(v1::DELIVERY_STATE_FAILED))
                                      .bind(3, older_than_unix_ms)
                                      .run());
}

}  // namespace quartzflow::detail
