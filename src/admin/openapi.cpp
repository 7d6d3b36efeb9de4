// SPDX-License-Identifier: Apache-2.0
// The OpenAPI 3.0 document of the admin API, generated from the route table and the proto
// descriptors, so it cannot drift from what the server does (a test calls every path).
#include <set>
#include <tuple>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include "../common/text.hpp"
#include "../engine/task_limits.hpp"
#include "admin_api.hpp"
#include "api.hpp"
// After the headers whose parameters are named `version` (-Wshadow).
#include <quartzflow/version.hpp>

namespace quartzflow::detail {
namespace {

namespace pb = google::protobuf;

pb::Value text(std::string_view s) {
  pb::Value v;
  v.set_string_value(std::string(s));
  return v;
}

pb::Value flag(bool b) {
  pb::Value v;
  v.set_bool_value(b);
  return v;
}

pb::Value object(std::initializer_list<std::pair<const char*, pb::Value>> fields) {
  pb::Value v;
  auto& s = *v.mutable_struct_value()->mutable_fields();
  for (const auto& [k, value] : fields) s[k] = value;
  return v;
}

pb::Value& field(pb::Value& v, const std::string& name) { return (*v.mutable_struct_value()->mutable_fields())[name]; }

pb::Value ref(const pb::Descriptor* d) { return object({{"$ref", text("#/components/schemas/" + d->name())}}); }

/// The JSON schema of one field (protobuf's JSON mapping: 64-bit integers are strings).
pb::Value field_schema(const pb::FieldDescriptor& f, std::set<const pb::Descriptor*>& needed) {
  pb::Value item;
  switch (f.cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32:
    case pb::FieldDescriptor::CPPTYPE_UINT32: item = object({{"type", text("integer")}}); break;
    case pb::FieldDescriptor::CPPTYPE_INT64:
    case pb::FieldDescriptor::CPPTYPE_UINT64:
      item = object({{"type", text("string")}, {"format", text("int64")}});
      break;
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
    case pb::FieldDescriptor::CPPTYPE_FLOAT: item = object({{"type", text("number")}}); break;
    case pb::FieldDescriptor::CPPTYPE_BOOL: item = object({{"type", text("boolean")}}); break;
    case pb::FieldDescriptor::CPPTYPE_STRING: item = object({{"type", text("string")}}); break;
    case pb::FieldDescriptor::CPPTYPE_ENUM: {
      item = object({{"type", text("string")}});
      auto& values = *field(item, "enum").mutable_list_value();
      for (int i = 0; i < f.enum_type()->value_count(); ++i) *values.add_values() = text(f.enum_type()->value(i)->name());
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_MESSAGE:
      if (f.is_map()) {
        const auto* value_field = f.message_type()->map_value();
        std::size_t max_properties = k_max_body_list_elements;
        for (const auto& bound : k_task_list_bounds)
          if (bound.field == f.full_name()) max_properties = bound.max_elements;
        auto schema = object({{"type", text("object")}, {"additionalProperties", field_schema(*value_field, needed)}});
        field(schema, "maxProperties").set_number_value(static_cast<double>(max_properties));
        return schema;
      }
      needed.insert(f.message_type());
      item = ref(f.message_type());
      break;
  }
  if (f.is_repeated()) {
    // Every list of a request body is bounded (k_max_body_list_elements); a task's tighter.
    std::size_t max_items = k_max_body_list_elements;
    bool unique = false;
    for (const auto& bound : k_task_list_bounds)
      if (bound.field == f.full_name()) std::tie(max_items, unique) = std::pair{bound.max_elements, bound.unique};
    // Id lists of actions: 1000 ids at most, each once (checked by the handlers).
    for (const char* id_list : {"quartzflow.v1.BatchTaskRequest.task_ids", "quartzflow.v1.TriggerRequest.agent_ids"})
      if (f.full_name() == id_list) std::tie(max_items, unique) = std::pair{std::size_t{1000}, true};
    auto schema = object({{"type", text("array")}, {"items", item}});
    field(schema, "maxItems").set_number_value(static_cast<double>(max_items));
    if (unique) field(schema, "uniqueItems").set_bool_value(true);
    return schema;
  }
  return item;
}

pb::Value message_schema(const pb::Descriptor& d, std::set<const pb::Descriptor*>& needed) {
  pb::Value schema = object({{"type", text("object")}});
  auto& properties = field(schema, "properties");
  properties.mutable_struct_value();
  for (int i = 0; i < d.field_count(); ++i) field(properties, d.field(i)->name()) = field_schema(*d.field(i), needed);
  return schema;
}

pb::Value parameter(const std::string& name, const char* in, pb::Value schema, bool required) {
  return object({{"name", text(name)}, {"in", text(in)}, {"required", flag(required)}, {"schema", std::move(schema)}});
}

}  // namespace

std::string AdminApi::openapi_json() const {
  std::set<const pb::Descriptor*> needed;
  pb::Value doc = object({{"openapi", text("3.0.3")},
                          {"info", object({{"title", text("QuartzFlow admin API")}, {"version", text(version)}})}});
  auto& paths = field(doc, "paths");
  paths.mutable_struct_value();
  for (const auto& route : routes_) {
    auto& path_item = field(paths, route.pattern);
    path_item.mutable_struct_value();
    pb::Value op = object({{"summary", text(route.summary)},
                           {"operationId", text(route.method + " " + route.pattern)}});
    auto& params = *field(op, "parameters").mutable_list_value();
    for (const auto& segment : route.segments)
      if (segment.size() > 2 && segment.front() == '{')
        *params.add_values() = parameter(segment.substr(1, segment.size() - 2), "path", object({{"type", text("string")}}), true);
    const bool query_input = route.method == "GET" || route.method == "DELETE";
    if (route.input && query_input) {
      for (int i = 0; i < route.input->field_count(); ++i) {
        const auto& f = *route.input->field(i);
        if (f.cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) continue;  // not expressible as a query
        auto param = parameter(f.name(), "query", field_schema(f, needed), false);
        if (f.cpp_type() == pb::FieldDescriptor::CPPTYPE_ENUM)
          field(param, "description") =
              text("A value name, its short form without the prefix, or its number (" + f.name() + "=1)");
        *params.add_values() = std::move(param);
      }
      // Other names of parameters (the requirements' section 8), e.g. client_id for agent_id.
      for (const auto& alias : query_aliases()) {
        if (alias.message != route.input->full_name()) continue;
        const auto* f = route.input->FindFieldByName(std::string(alias.field));
        if (!f) continue;
        auto param = parameter(std::string(alias.alias), "query",
                               alias.time ? object({{"type", text("string")}}) : field_schema(*f, needed), false);
        field(param, "description") = text(
            "Alias of " + f->name() + (alias.time ? ": RFC 3339 (2025-01-10T02:00:00Z) or unix milliseconds" : ""));
        *params.add_values() = std::move(param);
      }
    } else if (route.input) {
      needed.insert(route.input);
      field(op, "requestBody") =
          object({{"required", flag(true)},
                  {"content", object({{"application/json", object({{"schema", ref(route.input)}})}})}});
    }
    pb::Value data = route.output ? (needed.insert(route.output), ref(route.output)) : object({{"type", text("object")}});
    pb::Value envelope = object({{"type", text("object")},
                                 {"properties", object({{"code", object({{"type", text("integer")}})}, {"data", data}})}});
    pb::Value responses = object(
        {{"default", object({{"description", text("error")},
                             {"content", object({{"application/json",
                                                  object({{"schema", object({{"$ref", text("#/components/schemas/Error")}})}})}})}})}});
    field(responses, std::to_string(route.success_status)) =
        object({{"description", text("success")},
                {"content", object({{"application/json", object({{"schema", envelope}})}})}});
    field(op, "responses") = std::move(responses);
    if (route.min_rank > 0) {
      pb::Value security;
      auto& list = *security.mutable_list_value();
      *list.add_values() = object({{"bearer", pb::Value{}}});
      field(*list.mutable_values(0), "bearer").mutable_list_value();
      *list.add_values() = object({{"session", pb::Value{}}});
      field(*list.mutable_values(1), "session").mutable_list_value();
      field(op, "security") = std::move(security);
      field(op, "x-min-role") = text(route.min_rank >= 3 ? "admin" : route.min_rank == 2 ? "operator" : "viewer");
    }
    field(path_item, lower_ascii(route.method)) = std::move(op);
  }
  // Schemas, following references until every message is described.
  auto& schemas = field(field(doc, "components"), "schemas");
  schemas.mutable_struct_value();
  std::set<const pb::Descriptor*> done;
  while (true) {
    const pb::Descriptor* next = nullptr;
    for (const auto* d : needed)
      if (!done.count(d)) {
        next = d;
        break;
      }
    if (!next) break;
    done.insert(next);
    field(schemas, next->name()) = message_schema(*next, needed);
  }
  field(schemas, "Error") = object(
      {{"type", text("object")},
       {"properties",
        object({{"code", object({{"type", text("integer")}})},
                {"error", object({{"type", text("string")}})},
                {"message", object({{"type", text("string")}})},
                {"details", object({{"type", text("array")},
                                    {"items", object({{"type", text("object")},
                                                      {"properties", object({{"field", object({{"type", text("string")}})},
                                                                             {"reason", object({{"type", text("string")}})}})}})}})},
                {"request_id", object({{"type", text("string")}})}})}});
  field(field(doc, "components"), "securitySchemes") =
      object({{"bearer", object({{"type", text("http")}, {"scheme", text("bearer")}})},
              {"session", object({{"type", text("apiKey")}, {"in", text("cookie")}, {"name", text("qf_session")}})}});
  std::string out;
  (void)pb::util::MessageToJsonString(doc.struct_value(), &out);
  return out;
}

}  // namespace quartzflow::detail
