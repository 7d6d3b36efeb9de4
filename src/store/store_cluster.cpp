// SPDX-License-Identifier: Apache-2.0
// The cluster half of the StoreTransaction: the leader lease (one row; epoch + 1 on every
// takeover; the database's clock decides expiry) and the coordinators registry.
#include <fmt/format.h>

#include "sql_transaction.hpp"

namespace quartzflow::detail {

LeaderLease SqlStoreTransaction::read_lease(const char* lock) {
  auto rows =
      statement(fmt::format("SELECT holder_id, agent_address, admin_address, epoch, expires_at_unix_ms, {} "
                            "FROM leader_lease WHERE id = 1{}",
                            db_.dialect().now_unix_ms_sql, lock));
  LeaderLease lease;
  if (!rows.next()) throw error(errc::store_failed, "store: the leader_lease row is missing");
  lease.holder_id = rows.text(0);
  lease.holder_addresses.agent = rows.text(1);
  lease.holder_addresses.admin = rows.text(2);
  lease.epoch = static_cast<std::uint64_t>(rows.int64(3));
  lease.expires_at_unix_ms = rows.int64(4);
  lease.now_unix_ms = rows.int64(5);
  return lease;
}

LeaderLease SqlStoreTransaction::acquire_or_renew_leader(std::string_view holder_id,
                                                         const CoordinatorAddresses& addresses,
                                                         std::chrono::milliseconds ttl) {
  require_writable("acquire_or_renew_leader");
  if (holder_id.empty()) throw error(errc::invalid_argument, "acquire_or_renew_leader: holder_id: is empty");
  // A standby's poll of a lease another holder keeps reads it without a lock: it must not
  // make the leader's fire transactions (FOR SHARE) wait every poll.
  LeaderLease lease = read_lease("");
  if (lease.holder_id != holder_id && lease.held()) return lease;
  // The row lock (PostgreSQL) makes competing takeovers take turns: each decides on the
  // lease as the previous one left it (read again under the lock).
  if (*db_.dialect().lock_for_update != '\0') lease = read_lease(db_.dialect().lock_for_update);
  const bool mine = lease.holder_id == holder_id && lease.held();
  if (!mine && lease.held()) return lease;  // another holder's, not expired
  if (!mine) ++lease.epoch;                 // a takeover (of a free, expired or own expired lease)
  lease.holder_id = std::string(holder_id);
  lease.holder_addresses = addresses;
  lease.expires_at_unix_ms = lease.now_unix_ms + ttl.count();
  statement(
      "UPDATE leader_lease SET holder_id = ?1, agent_address = ?2, admin_address = ?3, epoch = ?4, "
      "expires_at_unix_ms = ?5 WHERE id = 1")
      .bind(1, holder_id)
      .bind(2, addresses.agent)
      .bind(3, addresses.admin)
      .bind(4, static_cast<std::int64_t>(lease.epoch))
      .bind(5, lease.expires_at_unix_ms)
      .run();
  return lease;
}

bool SqlStoreTransaction::release_leader(std::string_view holder_id) {
  require_writable("release_leader");
  // The epoch stays: the next holder's is one more.
  return statement(
             "UPDATE leader_lease SET holder_id = '', agent_address = '', admin_address = '', "
             "expires_at_unix_ms = 0 WHERE id = 1 AND holder_id = ?1")
             .bind(1, holder_id)
             .run() > 0;
}

LeaderLease SqlStoreTransaction::leader_lease() { return read_lease(""); }

void SqlStoreTransaction::check_fence(std::uint64_t epoch) {
  const LeaderLease lease = read_lease(db_.dialect().lock_for_share);
  if (lease.epoch != epoch)
    throw error(errc::fenced, fmt::format("lease lost: epoch {} is not the current one (the lease is at epoch {}, "
                                          "held by \"{}\")",
                                          epoch, lease.epoch, lease.holder_id));
  if (!lease.held())
    throw error(errc::fenced, fmt::format("lease lost: epoch {} expired {} ms ago without a renewal", epoch,
                                          lease.now_unix_ms - lease.expires_at_unix_ms));
}

void SqlStoreTransaction::put_coordinator_heartbeat(const v1::CoordinatorInfo& coordinator) {
  require_writable("put_coordinator_heartbeat");
  if (coordinator.id().empty()) throw error(errc::invalid_argument, "coordinator: id: is empty");
  const std::int64_t now = read_lease("").now_unix_ms;
  v1::CoordinatorInfo stored = coordinator;
  stored.set_last_seen_unix_ms(now);
  stored.clear_alive();
  statement(
      "INSERT INTO coordinators (id, last_seen_unix_ms, record) VALUES (?1, ?2, ?3) ON CONFLICT (id) DO UPDATE "
      "SET last_seen_unix_ms = excluded.last_seen_unix_ms, record = excluded.record")
      .bind(1, stored.id())
      .bind(2, now)
      .bind_blob(3, serialize_deterministic(stored))
      .run();
}

std::vector<v1::CoordinatorInfo> SqlStoreTransaction::list_coordinators() {
  auto rows = statement("SELECT record FROM coordinators ORDER BY id");
  std::vector<v1::CoordinatorInfo> out;
  while (rows.next()) parse_record(rows.blob(0), out.emplace_back());
  return out;
}

}  // namespace quartzflow::detail
