// SPDX-License-Identifier: Apache-2.0
// What each config version changed (the config_changes table), so that the other
// coordinators on the database reload only the objects a change touched.
#include "sql_transaction.hpp"

namespace quartzflow::detail {
namespace {

/// Longer ranges are read as a full reload: cheaper than this many changes one by one.
constexpr std::uint64_t k_max_versions_read = 10'000;

}  // namespace

void SqlStoreTransaction::record_config_change(std::uint64_t version, ConfigTarget target, std::string_view id) {
  require_writable("record_config_change");
  statement("INSERT INTO config_changes (version, target, id) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING")
      .bind(1, static_cast<std::int64_t>(version))
      .bind(2, static_cast<std::int64_t>(target))
      .bind(3, id)
      .run();
}

std::optional<std::vector<ConfigChangeRef>> SqlStoreTransaction::config_changes_since(std::uint64_t after,
                                                                                      std::uint64_t upto) {
  std::vector<ConfigChangeRef> changes;
  if (upto <= after) return changes;
  if (upto - after > k_max_versions_read) return std::nullopt;
  // Every version of the range must have its changes recorded: one committed before this
  // table existed (or by code that records nothing) makes the caller reload everything.
  auto recorded = statement("SELECT COUNT(DISTINCT version) FROM config_changes WHERE version > ?1 AND version <= ?2");
  recorded.bind(1, static_cast<std::int64_t>(after)).bind(2, static_cast<std::int64_t>(upto));
  if (!recorded.next() || static_cast<std::uint64_t>(recorded.int64(0)) != upto - after) return std::nullopt;
  auto rows = statement("SELECT DISTINCT target, id FROM config_changes WHERE version > ?1 AND version <= ?2");
  rows.bind(1, static_cast<std::int64_t>(after)).bind(2, static_cast<std::int64_t>(upto));
  while (rows.next()) {
    const auto target = rows.int64(0);
    if (target < static_cast<std::int64_t>(ConfigTarget::task) ||
        target > static_cast<std::int64_t>(ConfigTarget::agent))
      return std::nullopt;  // a kind this build does not know: reload everything
    changes.push_back(ConfigChangeRef{static_cast<ConfigTarget>(target), rows.text(1)});
  }
  return changes;
}

}  // namespace quartzflow::detail
