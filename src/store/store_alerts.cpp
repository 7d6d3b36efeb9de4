// SPDX-License-Identifier: Apache-2.0
// Alerts in the StoreTransaction: rules, channels, silences and heartbeat monitors (records
// by id), the alerts the engine raises, and the outbox of deliveries with their attempts.
#include <fmt/format.h>

#include "sql_transaction.hpp"

namespace quartzflow::detail {

/**
 * A table of records by id: `id` the primary key, `record` the serialized message, and
 * `columns` copied out of the record for queries to filter and sort on. Its statements are
 * composed once, from the constants below only (input reaches them as bound parameters), and
 * live as long as the program, so they are cached by address like string literals.
 */
struct RecordTable {
  RecordTable(std::string_view table, std::vector<std::string_view> columns)
      : by_id(fmt::format("SELECT record FROM {} WHERE id = ?1", table)),
        remove(fmt::format("DELETE FROM {} WHERE id = ?1", table)),
        count(fmt::format("SELECT COUNT(*) FROM {}", table)),
        select(fmt::format("SELECT record FROM {}", table)),
        all(fmt::format("{} ORDER BY id", select)),
        page(fmt::format("{} LIMIT ?1 OFFSET ?2", all)) {
    // INSERT INTO t (id, c2, ..., record) VALUES (?1, ?2, ..., ?n) ON CONFLICT (id) DO UPDATE SET c2 = excluded.c2, ...
    std::string names = "id";
    std::string values = "?1";
    std::string updates;
    for (std::size_t i = 0; i < columns.size(); ++i) {
      fmt::format_to(std::back_inserter(names), ", {}", columns[i]);
      fmt::format_to(std::back_inserter(values), ", ?{}", i + 2);
      fmt::format_to(std::back_inserter(updates), "{0} = excluded.{0}, ", columns[i]);
    }
    upsert = fmt::format(
        "INSERT INTO {} ({}, record) VALUES ({}, ?{}) ON CONFLICT (id) DO UPDATE SET {}record = excluded.record", table,
        names, values, columns.size() + 2, updates);
  }

  std::string by_id;
  std::string remove;
  std::string count;
  std::string select;  ///< `SELECT record FROM t`, for a list to add its conditions and order to
  std::string all;     ///< every record, by id
  std::string page;    ///< a page of `all`
  std::string upsert;  ///< binds the id, `columns` in order, then the record
};

namespace {

/// The store keeps this many of a delivery's latest attempts (attempt_count counts all).
constexpr int k_max_kept_attempts = 100;

const RecordTable k_alert_rules{"alert_rules", {}};
const RecordTable k_channels{"alert_channels", {}};
const RecordTable k_silences{"alert_silences", {"ends_unix_ms"}};
const RecordTable k_monitors{"alert_monitors", {"token_sha256"}};
const RecordTable k_alerts{"alerts", {"rule_id", "state", "task_id", "started_unix_ms"}};
// Read through its by_id and select only: enqueue_delivery inserts without replacing.
const RecordTable k_deliveries{"deliveries", {}};

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

// ---- a record per id, the same for every table ----

template <typename T>
std::optional<T> SqlStoreTransaction::get_record(const RecordTable& table, std::string_view id) {
  auto rows = literal_statement(table.by_id.c_str(), table.by_id.size());
  rows.bind(1, id);
  return read_one<T>(rows);
}

void SqlStoreTransaction::put_record(const RecordTable& table, std::string_view id,
                                     const std::vector<SqlValue>& columns,
                                     const google::protobuf::MessageLite& record) {
  auto upsert = literal_statement(table.upsert.c_str(), table.upsert.size());
  upsert.bind(1, id);
  const int next = upsert.bind_all(columns, 2);
  upsert.bind_blob(next, serialize_deterministic(record)).run();
}

bool SqlStoreTransaction::delete_record(const RecordTable& table, std::string_view id) {
  return literal_statement(table.remove.c_str(), table.remove.size()).bind(1, id).run() > 0;
}

template <typename T>
Listing<T> SqlStoreTransaction::list_records(const RecordTable& table, std::uint32_t page, std::uint32_t page_size) {
  const auto paging = paging_of(page, page_size);
  Listing<T> out;
  out.total = count(table.count, {});
  auto rows = literal_statement(table.page.c_str(), table.page.size());
  rows.bind(1, paging.limit).bind(2, paging.offset);
  out.items = read_all<T>(rows);
  return out;
}

/// A filtered list: its SQL varies with the filter, so it is composed per call.
template <typename T>
Listing<T> SqlStoreTransaction::list_records(const RecordTable& table, const SqlConditions& where,
                                             std::string_view order_by, const Paging& paging) {
  Listing<T> out;
  out.total = count(table.count + where.where(), where.values());
  auto rows = statement(fmt::format("{}{} ORDER BY {} LIMIT ? OFFSET ?", table.select, where.where(), order_by));
  const int next = rows.bind_all(where.values());
  rows.bind(next, paging.limit).bind(next + 1, paging.offset);
  out.items = read_all<T>(rows);
  return out;
}

template <typename T>
std::vector<T> SqlStoreTransaction::all_records(const RecordTable& table) {
  auto rows = literal_statement(table.all.c_str(), table.all.size());
  return read_all<T>(rows);
}

// ---- rules, channels ----

std::optional<v1::AlertRule> SqlStoreTransaction::alert_rule(std::string_view id) {
  return get_record<v1::AlertRule>(k_alert_rules, id);
}

void SqlStoreTransaction::put_alert_rule(const v1::AlertRule& rule) {
  require_writable("put_alert_rule");
  require_id("alert rule", rule.id());
  put_record(k_alert_rules, rule.id(), {}, rule);
}

bool SqlStoreTransaction::delete_alert_rule(std::string_view id) {
  require_writable("delete_alert_rule");
  return delete_record(k_alert_rules, id);
}

Listing<v1::AlertRule> SqlStoreTransaction::list_alert_rules(std::uint32_t page, std::uint32_t page_size) {
  return list_records<v1::AlertRule>(k_alert_rules, page, page_size);
}

std::vector<v1::AlertRule> SqlStoreTransaction::all_alert_rules() { return all_records<v1::AlertRule>(k_alert_rules); }

std::optional<v1::Channel> SqlStoreTransaction::channel(std::string_view id) {
  return get_record<v1::Channel>(k_channels, id);
}

void SqlStoreTransaction::put_channel(const v1::Channel& channel) {
  require_writable("put_channel");
  require_id("channel", channel.id());
  put_record(k_channels, channel.id(), {}, channel);
}

bool SqlStoreTransaction::delete_channel(std::string_view id) {
  require_writable("delete_channel");
  return delete_record(k_channels, id);
}

Listing<v1::Channel> SqlStoreTransaction::list_channels(std::uint32_t page, std::uint32_t page_size) {
  return list_records<v1::Channel>(k_channels, page, page_size);
}

std::vector<v1::Channel> SqlStoreTransaction::all_channels() { return all_records<v1::Channel>(k_channels); }

// ---- silences ----

std::optional<v1::Silence> SqlStoreTransaction::silence(std::string_view id) {
  return get_record<v1::Silence>(k_silences, id);
}

void SqlStoreTransaction::put_silence(const v1::Silence& silence) {
  require_writable("put_silence");
  require_id("silence", silence.id());
  put_record(k_silences, silence.id(), {silence.ends_unix_ms()}, silence);
}

bool SqlStoreTransaction::delete_silence(std::string_view id) {
  require_writable("delete_silence");
  return delete_record(k_silences, id);
}

Listing<v1::Silence> SqlStoreTransaction::list_silences(std::int64_t active_at_unix_ms, std::uint32_t page,
                                                        std::uint32_t page_size) {
  SqlConditions where;
  if (active_at_unix_ms > 0) where.add("ends_unix_ms > ?", {active_at_unix_ms});
  return list_records<v1::Silence>(k_silences, where, "ends_unix_ms DESC, id", paging_of(page, page_size));
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
  put_record(k_monitors, stored.monitor.id(), {stored.token_sha256}, stored.monitor);
}

bool SqlStoreTransaction::delete_monitor(std::string_view id) {
  require_writable("delete_monitor");
  return delete_record(k_monitors, id);
}

Listing<v1::Monitor> SqlStoreTransaction::list_monitors(std::uint32_t page, std::uint32_t page_size) {
  return list_records<v1::Monitor>(k_monitors, page, page_size);
}

std::vector<v1::Monitor> SqlStoreTransaction::all_monitors() { return all_records<v1::Monitor>(k_monitors); }

// ---- alerts ----

void SqlStoreTransaction::upsert_alert(const v1::Alert& alert) {
  require_writable("upsert_alert");
  require_id("alert", alert.id());
  if (alert.rule_id().empty()) throw_invalid("alert", "rule_id", "is empty");
  put_record(k_alerts, alert.id(),
             {alert.rule_id(), static_cast<std::int64_t>(alert.state()), alert.task_id(), alert.started_unix_ms()},
             alert);
}

std::optional<v1::Alert> SqlStoreTransaction::alert(std::string_view id) { return get_record<v1::Alert>(k_alerts, id); }

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
  return list_records<v1::Alert>(k_alerts, where, "started_unix_ms DESC, id DESC",
                                 paging_of(filter.page, filter.page_size));
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
  return get_record<v1::Delivery>(k_deliveries, id);
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
  return list_records<v1::Delivery>(k_deliveries, where, "created_unix_ms DESC, rowid DESC",
                                    paging_of(filter.page, filter.page_size));
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
