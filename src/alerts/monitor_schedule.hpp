// SPDX-License-Identifier: Apache-2.0
// When a heartbeat monitor's next ping is due: from its cron (in its zone) or its period,
// plus its grace. Shared by the ping endpoint and the alert service.
#pragma once

#include <cstdint>

#include <quartzflow/v1/alerts.pb.h>

namespace quartzflow::alerts {

/// Grace when `Monitor.grace_seconds` is 0 (alerts.proto: default 300).
inline constexpr std::int64_t k_default_monitor_grace_seconds = 300;

/// The instant the monitor counts from: its latest ping (success or /fail), else its creation.
std::int64_t monitor_last_event_unix_ms(const v1::Monitor& monitor);

/**
 * The instant by which the next ping must arrive when the previous one came at
 * `since_unix_ms`: `since + period + grace`, or the cron's first fire strictly after `since`
 * (in `time_zone`, UTC when empty) plus grace. 0 (no deadline) when the monitor is paused,
 * has no schedule, or its cron does not parse (the API refuses those) or never fires again.
 */
std::int64_t monitor_deadline_after(const v1::Monitor& monitor, std::int64_t since_unix_ms);

/// monitor_deadline_after(monitor, monitor_last_event_unix_ms(monitor)).
std::int64_t monitor_next_deadline(const v1::Monitor& monitor);

}  // namespace quartzflow::alerts
