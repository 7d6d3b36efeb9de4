// SPDX-License-Identifier: Apache-2.0
// A heartbeat monitor's next deadline from its schedule and grace.
#include "monitor_schedule.hpp"

#include <algorithm>
#include <chrono>

#include <quartzflow/cron.hpp>

namespace quartzflow::alerts {

std::int64_t monitor_last_event_unix_ms(const v1::Monitor& monitor) {
  return std::max({monitor.last_ping_unix_ms(), monitor.last_fail_unix_ms(), monitor.created_unix_ms()});
}

std::int64_t monitor_deadline_after(const v1::Monitor& monitor, std::int64_t since_unix_ms) {
  if (monitor.paused()) return 0;
  const std::int64_t grace_ms =
      (monitor.grace_seconds() > 0 ? std::int64_t{monitor.grace_seconds()} : k_default_monitor_grace_seconds) * 1000;
  if (monitor.period_seconds() > 0) return since_unix_ms + std::int64_t{monitor.period_seconds()} * 1000 + grace_ms;
  if (monitor.cron().empty()) return 0;
  CronOptions options;
  options.time_zone = monitor.time_zone().empty() ? "UTC" : monitor.time_zone();
  error_code ec;
  const auto cron = CronExpr::parse(monitor.cron(), options, ec);
  if (!cron) return 0;
  // The cron works in whole seconds: a ping in the middle of a second counts from that second.
  const auto after = Instant{std::chrono::seconds{since_unix_ms / 1000}};
  const auto next = cron->next(after);
  if (!next) return 0;
  return std::chrono::duration_cast<std::chrono::milliseconds>(next->time_since_epoch()).count() + grace_ms;
}

std::int64_t monitor_next_deadline(const v1::Monitor& monitor) {
  return monitor_deadline_after(monitor, monitor_last_event_unix_ms(monitor));
}

}  // namespace quartzflow::alerts
