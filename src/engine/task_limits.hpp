// SPDX-License-Identifier: Apache-2.0
// Bounds on a task's lists and texts: validate_task enforces them, the OpenAPI document
// states them (maxItems, uniqueItems), from this one table.
#pragma once

#include <cstddef>
#include <string_view>

namespace quartzflow::detail {

inline constexpr std::size_t k_max_small_list = 64;  // group_ids, downstream_task_ids, params, labels, headers
inline constexpr std::size_t k_max_argv = 1024;
inline constexpr std::size_t k_max_interpreter = 16;
inline constexpr std::size_t k_max_env = 256;
inline constexpr std::size_t k_max_value_bytes = 16 * 1024;     // one argv element, env, header, label or default value
inline constexpr std::size_t k_max_document_bytes = 256 * 1024;  // a shell script or an HTTP body

struct ListBound {
  std::string_view field;  ///< full protobuf name of the field
  std::size_t max_elements;
  bool unique;
};

/// Number lists are bounded by their range once repeats are refused.
inline constexpr ListBound k_task_list_bounds[] = {
    {"quartzflow.v1.Task.group_ids", k_max_small_list, true},
    {"quartzflow.v1.Task.downstream_task_ids", k_max_small_list, true},
    {"quartzflow.v1.Task.params", k_max_small_list, false},
    {"quartzflow.v1.Task.labels", k_max_small_list, false},
    {"quartzflow.v1.HttpSpec.headers", k_max_small_list, false},
    {"quartzflow.v1.HttpSpec.success_status_codes", 500, true},
    {"quartzflow.v1.HttpSpec.success_status_classes", 5, true},
    {"quartzflow.v1.ShellSpec.argv", k_max_argv, false},
    {"quartzflow.v1.ShellSpec.interpreter", k_max_interpreter, false},
    {"quartzflow.v1.ShellSpec.env", k_max_env, false},
    {"quartzflow.v1.RetryPolicy.retry_on_exit_codes", 255, true},
    {"quartzflow.v1.RetryPolicy.retry_on_http_status_classes", 5, true},
    {"quartzflow.v1.RetryPolicy.retry_on_http_status_codes", 500, true},
};

}  // namespace quartzflow::detail
