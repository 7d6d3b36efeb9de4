// SPDX-License-Identifier: Apache-2.0
// A bound on every repeated field and map of a decoded message, whatever its type: the
// last line of defence for input that field-by-field validation does not know yet.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <utility>

#include <google/protobuf/message.h>

namespace quartzflow::detail {

/// The path (`tasks[3].group_ids`) and the reason of the first repeated field or map, depth
/// first, holding more than `max_elements` elements; nullopt when there is none.
std::optional<std::pair<std::string, std::string>> oversized_repeated_field(const google::protobuf::Message& message,
                                                                            std::size_t max_elements);

}  // namespace quartzflow::detail
