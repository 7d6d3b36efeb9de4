// SPDX-License-Identifier: Apache-2.0
// Task configs (the protobuf `Task`): validation with field paths, and the bridges between
// the protobuf schedule and `ScheduleSpec`.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <quartzflow/error.hpp>
#include <quartzflow/schedule.hpp>
#include <quartzflow/v1/execution.pb.h>
#include <quartzflow/v1/task.pb.h>

namespace quartzflow {

/// The default timeout when `timeout_seconds` is 0, and the accepted range.
inline constexpr std::chrono::seconds k_default_timeout{300};
inline constexpr std::chrono::seconds k_min_timeout{1};
inline constexpr std::chrono::seconds k_max_timeout{86400};

/// The `ScheduleSpec` a protobuf `Schedule` describes (no validation; see validate_task).
ScheduleSpec schedule_spec_from_proto(const v1::Schedule& schedule);
/// Fills `out` from a spec (kind, zone, policies, window, limits, jitter).
void schedule_spec_to_proto(const ScheduleSpec& spec, v1::Schedule& out);

/**
 * Checks every field of a task: id and name (`[A-Za-z0-9._-]`, 1-64 characters, no `:`),
 * exactly one executor with its required fields (shell: argv or script; http: absolute http
 * or https URL, method; plugin: name), the schedule (parsed with the task name as H seed),
 * timeout range, retry policy, concurrency and overlap settings, param names.
 * Returns the first problem, with `field` a path such as `schedule.cron.minute` or
 * `shell.argv`, or nullopt when the task is valid.
 */
std::optional<ValidationError> validate_task(const v1::Task& task);

/// Validates a set of tasks: each task, plus unique ids and names. Field paths are
/// prefixed with `tasks[i].`.
std::optional<ValidationError> validate_tasks(const std::vector<v1::Task>& tasks);

/// The timeout a run of `task` gets.
std::chrono::seconds effective_timeout(const v1::Task& task);

/**
 * Whether an attempt that ended with `status` may be retried under `retry` (the attempt
 * count is the caller's to check): TIMEOUT when `retry_on_timeout`; FAILURE by HTTP status
 * (codes, classes; default 5xx and 429) or exit code (listed, or any); configuration
 * failures (`spawn failed`, `invalid request`, `tls setup failed`) never; `agent lost` always.
 */
bool retryable(v1::ExecutionStatus status, std::string_view failure_reason, std::optional<int> exit_code,
               std::uint32_t http_status, const v1::RetryPolicy& retry);

/// The wait before the retry after `failed_attempt`: interval * multiplier^(attempt-1),
/// capped, plus a jitter derived from `execution_id` (the same on every host).
std::chrono::milliseconds retry_delay(const v1::RetryPolicy& retry, std::uint32_t failed_attempt,
                                      std::string_view execution_id);

/// The validated `Schedule` of a task (throws quartzflow::error when invalid).
Schedule task_schedule(const v1::Task& task);

}  // namespace quartzflow
