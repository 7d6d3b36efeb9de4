// SPDX-License-Identifier: Apache-2.0
// Short names of protobuf enum values (`skip` for OVERLAP_POLICY_SKIP): one table per enum,
// read and written alike by YAML manifests, the admin API's query parameters and qfctl.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <google/protobuf/descriptor.h>

#include "text.hpp"

namespace quartzflow::detail {

/**
 * The names of one enum's values: the full name (`OVERLAP_POLICY_SKIP`) and the short name,
 * the full name without the prefix all values share, lower case (`skip`). The prefix is the
 * UNSPECIFIED value's name without `UNSPECIFIED` (protobuf style: every enum of the API starts
 * with one), else the enum's type name in upper snake case.
 *
 * Thread safety: `of` may be called from any thread; a table never changes once built.
 */
class EnumNames {
 public:
  /// The table of `type`, built on first use.
  static const EnumNames& of(const google::protobuf::EnumDescriptor* type) {
    static std::mutex mutex;
    static std::map<const google::protobuf::EnumDescriptor*, std::unique_ptr<const EnumNames>> tables;
    const std::lock_guard lock(mutex);
    auto& table = tables[type];
    if (!table) table.reset(new EnumNames(type));
    return *table;
  }

  /// The short name of `number`; the number as text when the enum has no such value.
  std::string short_name(int number) const {
    for (const auto& entry : entries_)
      if (entry.value->number() == number) return entry.short_name;
    return std::to_string(number);
  }

  /// The value named `text`, its full or its short name in any case; nullptr when none.
  const google::protobuf::EnumValueDescriptor* find(std::string_view text) const {
    const std::string wanted = lower_ascii(text);
    for (const auto& entry : entries_)
      if (entry.lower_full_name == wanted || entry.short_name == wanted) return entry.value;
    return nullptr;
  }

  /// The short names a user may write, `a, b, c` (the UNSPECIFIED value left out: unset it).
  std::string choices() const {
    std::string out;
    for (const auto& entry : entries_) {
      if (entry.value->number() == 0) continue;
      if (!out.empty()) out += ", ";
      out += entry.short_name;
    }
    return out;
  }

 private:
  struct Entry {
    const google::protobuf::EnumValueDescriptor* value;
    std::string lower_full_name;
    std::string short_name;
  };

  explicit EnumNames(const google::protobuf::EnumDescriptor* type) {
    std::string prefix;
    const std::string& first = type->value(0)->name();
    if (const auto cut = first.rfind("UNSPECIFIED"); cut != std::string::npos) {
      prefix = first.substr(0, cut);
    } else {
      for (const char c : type->name()) {  // OverlapPolicy -> OVERLAP_POLICY_
        if (c >= 'A' && c <= 'Z' && !prefix.empty()) prefix += '_';
        prefix += static_cast<char>(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
      }
      prefix += '_';
    }
    for (int i = 0; i < type->value_count(); ++i) {
      const auto* value = type->value(i);
      const std::string& name = value->name();
      const bool prefixed = name.size() > prefix.size() && name.compare(0, prefix.size(), prefix) == 0;
      entries_.push_back({value, lower_ascii(name), lower_ascii(prefixed ? name.substr(prefix.size()) : name)});
    }
  }

  std::vector<Entry> entries_;
};

}  // namespace quartzflow::detail
