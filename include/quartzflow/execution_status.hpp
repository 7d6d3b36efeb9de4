// SPDX-License-Identifier: Apache-2.0
// Facts about execution states that the engine, the agent store and the coordinator store
// must agree on.
#pragma once

#include <quartzflow/v1/execution.pb.h>

namespace quartzflow {

/// SUCCESS, FAILURE, TIMEOUT, CANCELLED, SKIPPED, MISSED: a state that never changes again
/// (the first final state of an execution id wins).
constexpr bool is_final(v1::ExecutionStatus status) noexcept {
  switch (status) {
    case v1::EXECUTION_STATUS_SUCCESS:
    case v1::EXECUTION_STATUS_FAILURE:
    case v1::EXECUTION_STATUS_TIMEOUT:
    case v1::EXECUTION_STATUS_CANCELLED:
    case v1::EXECUTION_STATUS_SKIPPED:
    case v1::EXECUTION_STATUS_MISSED: return true;
    default: return false;
  }
}

/// The same, for a status stored as an integer column.
constexpr bool is_final(long long status) noexcept { return is_final(static_cast<v1::ExecutionStatus>(status)); }

}  // namespace quartzflow
