// SPDX-License-Identifier: Apache-2.0
// Retry rules shared by the agent's engine (local retries) and the coordinator (retries on
// another agent).
#include <algorithm>
#include <cmath>

#include <quartzflow/task.hpp>

#include "../common/stable_hash.hpp"

namespace quartzflow {

bool retryable(v1::ExecutionStatus status, std::string_view failure_reason, std::optional<int> exit_code,
               std::uint32_t http_status, const v1::RetryPolicy& retry) {
  // Configuration problems fail the same way every time: report them at once.
  for (std::string_view deterministic : {"spawn failed", "invalid request", "tls setup failed"})
    if (failure_reason == deterministic) return false;
  if (status == v1::EXECUTION_STATUS_TIMEOUT) return retry.retry_on_timeout();
  if (status != v1::EXECUTION_STATUS_FAILURE) return false;
  if (failure_reason == "agent lost") return true;  // the host failed, not the task
  if (http_status != 0) {
    for (auto code : retry.retry_on_http_status_codes())
      if (code == http_status) return true;
    if (retry.retry_on_http_status_classes_size() == 0) return http_status >= 500 || http_status == 429;
    for (auto cls : retry.retry_on_http_status_classes())
      if (http_status / 100 == cls) return true;
    return false;
  }
  if (retry.retry_on_exit_codes_size() == 0 || !exit_code) return true;
  return std::find(retry.retry_on_exit_codes().begin(), retry.retry_on_exit_codes().end(), *exit_code) !=
         retry.retry_on_exit_codes().end();
}

std::chrono::milliseconds retry_delay(const v1::RetryPolicy& retry, std::uint32_t failed_attempt,
                                      std::string_view execution_id) {
  const double multiplier = retry.backoff_multiplier() >= 1.0 ? retry.backoff_multiplier() : 1.0;
  const double interval = retry.interval_seconds() == 0 ? 60.0 : retry.interval_seconds();
  double delay_s = interval * std::pow(multiplier, static_cast<double>(failed_attempt - 1));
  if (retry.max_interval_seconds() > 0) delay_s = std::min(delay_s, static_cast<double>(retry.max_interval_seconds()));
  auto delay = std::chrono::milliseconds{static_cast<std::int64_t>(delay_s * 1000.0)};
  if (retry.jitter_seconds() > 0)
    delay += std::chrono::milliseconds{
        static_cast<std::int64_t>(detail::stable_hash(execution_id) % (retry.jitter_seconds() * 1000ull + 1))};
  return delay;
}

}  // namespace quartzflow
