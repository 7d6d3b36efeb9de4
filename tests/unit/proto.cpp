// SPDX-License-Identifier: Apache-2.0
// The schema: generated, linked, every enum starts at *_UNSPECIFIED, and JSON uses proto names.
#include <functional>

#include <catch2/catch.hpp>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/json_util.h>

#include <quartzflow/v1/task.pb.h>

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
