// SPDX-License-Identifier: Apache-2.0
// The schema: generated, linked, every enum starts at *_UNSPECIFIED, and JSON uses proto names;
// every enum value's short name (YAML, the admin API and qfctl read and write them) round-trips.
#include <algorithm>
#include <cctype>
#include <functional>
#include <set>

#include <catch2/catch.hpp>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/json_util.h>

#include <quartzflow/v1/admin.pb.h>
#include <quartzflow/v1/agent_protocol.pb.h>
#include <quartzflow/v1/task.pb.h>

#include "common/enum_names.hpp"  // internal: the one short-name table per enum

namespace pb = google::protobuf;

TEST_CASE("every enum of the schema starts with an UNSPECIFIED zero", "[proto]") {
  const pb::FileDescriptor* file = quartzflow::v1::Task::descriptor()->file();
  std::vector<const pb::FileDescriptor*> files{file};
  for (int i = 0; i < file->dependency_count(); ++i) files.push_back(file->dependency(i));
  int enums = 0;
  auto check_enum = [&](const pb::EnumDescriptor* e) {
    INFO(e->full_name());
    REQUIRE(e->value_count() > 0);
    CHECK(e->value(0)->number() == 0);
    CHECK(e->value(0)->name().find("_UNSPECIFIED") != std::string::npos);
    ++enums;
  };
  std::function<void(const pb::Descriptor*)> walk = [&](const pb::Descriptor* m) {
    for (int i = 0; i < m->enum_type_count(); ++i) check_enum(m->enum_type(i));
    for (int i = 0; i < m->nested_type_count(); ++i) walk(m->nested_type(i));
  };
  for (const auto* f : files) {
    for (int i = 0; i < f->enum_type_count(); ++i) check_enum(f->enum_type(i));
    for (int i = 0; i < f->message_type_count(); ++i) walk(f->message_type(i));
  }
  CHECK(enums >= 3);
}

TEST_CASE("tasks round-trip through JSON with snake_case names", "[proto]") {
  quartzflow::v1::Task task;
  task.set_name("nightly-backup");
  task.set_timeout_seconds(600);
  std::string json;
  pb::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  REQUIRE(pb::util::MessageToJsonString(task, &json, options).ok());
  CHECK(json.find("\"timeout_seconds\"") != std::string::npos);
  quartzflow::v1::Task back;
  REQUIRE(pb::util::JsonStringToMessage(json, &back).ok());
  CHECK(back.name() == "nightly-backup");
  CHECK(back.timeout_seconds() == 600);
  CHECK_FALSE(pb::util::JsonStringToMessage(R"({"no_such_field": 1})", &back).ok());
}

TEST_CASE("every enum value round-trips through its short name, its full name and its number", "[proto]") {
  using quartzflow::detail::EnumNames;
  // Every file of the schema: the admin API's and the agent protocol's, with what they import.
  std::vector<const pb::FileDescriptor*> files{quartzflow::v1::ApiErrorCode_descriptor()->file(),
                                               quartzflow::v1::Envelope::descriptor()->file()};
  for (std::size_t i = 0; i < files.size(); ++i)
    for (int d = 0; d < files[i]->dependency_count(); ++d)
      if (std::find(files.begin(), files.end(), files[i]->dependency(d)) == files.end())
        files.push_back(files[i]->dependency(d));
  int values = 0;
  auto check_enum = [&](const pb::EnumDescriptor* e) {
    const auto& names = EnumNames::of(e);
    CHECK(&EnumNames::of(e) == &names);  // one table per enum
    std::set<std::string> short_names;
    for (int i = 0; i < e->value_count(); ++i) {
      const auto* value = e->value(i);
      const std::string short_name = names.short_name(value->number());
      INFO(value->full_name() << " -> " << short_name);
      CHECK(!short_name.empty());
      CHECK(short_names.insert(short_name).second);
      CHECK(short_name == quartzflow::detail::lower_ascii(short_name));
      std::string upper = short_name;
      for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      CHECK(value->name().ends_with("_" + upper));
      CHECK(names.find(short_name) == value);
      CHECK(names.find(upper) == value);
      CHECK(names.find(value->name()) == value);
      CHECK(names.find(quartzflow::detail::lower_ascii(value->name())) == value);
      const bool listed = names.choices().find(short_name) != std::string::npos;
      CHECK((listed || value->number() == 0));
      ++values;
    }
    CHECK(names.find("no such value") == nullptr);
    CHECK(names.short_name(1 << 20) == std::to_string(1 << 20));
  };
  std::function<void(const pb::Descriptor*)> walk = [&](const pb::Descriptor* m) {
    for (int i = 0; i < m->enum_type_count(); ++i) check_enum(m->enum_type(i));
    for (int i = 0; i < m->nested_type_count(); ++i) walk(m->nested_type(i));
  };
  for (const auto* f : files) {
    if (f->package() != "quartzflow.v1") continue;
    for (int i = 0; i < f->enum_type_count(); ++i) check_enum(f->enum_type(i));
    for (int i = 0; i < f->message_type_count(); ++i) walk(f->message_type(i));
  }
  CHECK(values >= 100);
  // The short names a manifest and the CLI use, spelled out for a few enums.
  CHECK(EnumNames::of(quartzflow::v1::OverlapPolicy_descriptor()).short_name(quartzflow::v1::OVERLAP_POLICY_SKIP) ==
        "skip");
  CHECK(EnumNames::of(quartzflow::v1::ExecutionStatus_descriptor()).choices().starts_with("pending, "));
  CHECK(EnumNames::of(quartzflow::v1::PlacementMode_descriptor()).find("Sharded")->number() ==
        quartzflow::v1::PLACEMENT_MODE_SHARDED);
}
