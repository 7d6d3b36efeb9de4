// SPDX-License-Identifier: Apache-2.0
#include "message_limits.hpp"

#include <fmt/format.h>
#include <google/protobuf/descriptor.h>

namespace quartzflow::detail {

namespace pb = google::protobuf;

namespace {

std::optional<std::pair<std::string, std::string>> walk(const pb::Message& message, std::size_t max_elements,
                                                        const std::string& prefix) {
  const pb::Reflection* reflection = message.GetReflection();
  std::vector<const pb::FieldDescriptor*> fields;
  reflection->ListFields(message, &fields);
  for (const pb::FieldDescriptor* field : fields) {
    const std::string path = prefix + field->name();
    if (!field->is_repeated()) {
      if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE)
        if (auto found = walk(reflection->GetMessage(message, field), max_elements, path + "."))
          return found;
      continue;
    }
    const auto size = static_cast<std::size_t>(reflection->FieldSize(message, field));
    if (size > max_elements)
      return std::pair{path, fmt::format("has {} {}; at most {} are allowed", size,
                                         field->is_map() ? "entries" : "elements", max_elements)};
    if (field->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE || field->is_map()) continue;
    for (std::size_t i = 0; i < size; ++i) {
      const auto& element = reflection->GetRepeatedMessage(message, field, static_cast<int>(i));
      if (auto found = walk(element, max_elements, fmt::format("{}[{}].", path, i))) return found;
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::pair<std::string, std::string>> oversized_repeated_field(const pb::Message& message,
                                                                            std::size_t max_elements) {
  return walk(message, max_elements, "");
}

}  // namespace quartzflow::detail
