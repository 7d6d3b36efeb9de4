// SPDX-License-Identifier: Apache-2.0
// qfctl's output: API objects as JSON, YAML (quoted where a reader would misread) or text
// fields, times, durations and enum short names; message files read as JSON or YAML.
#include "api.hpp"

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>

#include <fmt/format.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/json_util.h>
#include <yaml-cpp/yaml.h>

#include <quartzflow/time.hpp>
#include <quartzflow/yaml_config.hpp>

#include "common/enum_names.hpp"  // src/: one short-name table per enum, as YAML and the API read them
#include "common/text.hpp"

namespace qfctl {
namespace {

namespace pb = google::protobuf;
namespace qf = quartzflow;

using qf::detail::lower_ascii;

// --- YAML ----------------------------------------------------------------------------------

/// Strings a YAML reader would take for something else (booleans, numbers, null) are quoted.
bool needs_quotes(const std::string& text) {
  if (text.empty()) return true;
  static const char* const k_special[] = {"true", "false", "yes", "no", "on", "off", "null", "~", "y", "n"};
  const std::string lowered = lower_ascii(text);
  for (const char* word : k_special)
    if (lowered == word) return true;
  const char first = text.front();
  if (std::isdigit(static_cast<unsigned char>(first)) || first == '-' || first == '+' || first == '.') {
    char* end = nullptr;
    std::strtod(text.c_str(), &end);
    if (end == text.c_str() + text.size()) return true;
  }
  return text.front() == ' ' || text.back() == ' ';
}


void emit_message(YAML::Emitter& out, const pb::Message& message, const YamlStyle& style, bool top);

void emit_scalar(YAML::Emitter& out, const pb::Message& m, const pb::FieldDescriptor* f, int index,
                 const YamlStyle& style) {
  const auto* r = m.GetReflection();
  const bool rep = index >= 0;
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32:
      out << (rep ? r->GetRepeatedInt32(m, f, index) : r->GetInt32(m, f));
      break;
    case pb::FieldDescriptor::CPPTYPE_INT64:
      out << (rep ? r->GetRepeatedInt64(m, f, index) : r->GetInt64(m, f));
      break;
    case pb::FieldDescriptor::CPPTYPE_UINT32:
      out << (rep ? r->GetRepeatedUInt32(m, f, index) : r->GetUInt32(m, f));
      break;
    case pb::FieldDescriptor::CPPTYPE_UINT64:
      out << (rep ? r->GetRepeatedUInt64(m, f, index) : r->GetUInt64(m, f));
      break;
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      out << fmt::format("{}", rep ? r->GetRepeatedDouble(m, f, index) : r->GetDouble(m, f));
      break;
    case pb::FieldDescriptor::CPPTYPE_FLOAT:
      out << fmt::format("{}", rep ? r->GetRepeatedFloat(m, f, index) : r->GetFloat(m, f));
      break;
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      out << ((rep ? r->GetRepeatedBool(m, f, index) : r->GetBool(m, f)) ? "true" : "false");
      break;
    case pb::FieldDescriptor::CPPTYPE_ENUM: {
      const int value = rep ? r->GetRepeatedEnumValue(m, f, index) : r->GetEnumValue(m, f);
      const auto* named = f->enum_type()->FindValueByNumber(value);
      if (!named) out << value;
      else out << (style.short_enum_names ? short_enum_name(f->enum_type(), value) : named->name());
      break;
    }
    case pb::FieldDescriptor::CPPTYPE_STRING:
      emit_string(out, rep ? r->GetRepeatedString(m, f, index) : r->GetString(m, f));
      break;
    case pb::FieldDescriptor::CPPTYPE_MESSAGE:
      emit_message(out, rep ? r->GetRepeatedMessage(m, f, index) : r->GetMessage(m, f), style, false);
      break;
  }
}

void emit_map(YAML::Emitter& out, const pb::Message& m, const pb::FieldDescriptor* f, const YamlStyle& style) {
  const auto* r = m.GetReflection();
  const auto* key_field = f->message_type()->map_key();
  const auto* value_field = f->message_type()->map_value();
  // Map order is unspecified: sorted keys keep the output stable (and diffable).
  std::vector<std::pair<std::string, const pb::Message*>> entries;
  for (int i = 0; i < r->FieldSize(m, f); ++i) {
    const auto& entry = r->GetRepeatedMessage(m, f, i);
    const auto* er = entry.GetReflection();
    std::string key;
    switch (key_field->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_STRING: key = er->GetString(entry, key_field); break;
      case pb::FieldDescriptor::CPPTYPE_INT32: key = std::to_string(er->GetInt32(entry, key_field)); break;
      case pb::FieldDescriptor::CPPTYPE_INT64: key = std::to_string(er->GetInt64(entry, key_field)); break;
      case pb::FieldDescriptor::CPPTYPE_UINT32: key = std::to_string(er->GetUInt32(entry, key_field)); break;
      case pb::FieldDescriptor::CPPTYPE_UINT64: key = std::to_string(er->GetUInt64(entry, key_field)); break;
      case pb::FieldDescriptor::CPPTYPE_BOOL: key = er->GetBool(entry, key_field) ? "true" : "false"; break;
      default: break;
    }
    entries.emplace_back(std::move(key), &entry);
  }
  std::sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  if (entries.empty()) {
    out << YAML::Flow << YAML::BeginMap << YAML::EndMap;
    return;
  }
  out << YAML::BeginMap;
  for (const auto& [key, entry] : entries) {
    out << YAML::Key;
    emit_string(out, key);
    out << YAML::Value;
    emit_scalar(out, *entry, value_field, -1, style);
  }
  out << YAML::EndMap;
}

void emit_message(YAML::Emitter& out, const pb::Message& message, const YamlStyle& style, bool top) {
  const auto* descriptor = message.GetDescriptor();
  const auto* r = message.GetReflection();
  std::vector<const pb::FieldDescriptor*> fields;
  if (style.include_defaults) {
    for (int i = 0; i < descriptor->field_count(); ++i) {
      const auto* f = descriptor->field(i);
      // As the JSON mapping prints: unset messages and oneof members stay out.
      if (!f->is_repeated() && (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE || f->containing_oneof()) &&
          !r->HasField(message, f))
        continue;
      fields.push_back(f);
    }
  } else {
    r->ListFields(message, &fields);
  }
  if (top && !style.omit.empty())
    fields.erase(std::remove_if(fields.begin(), fields.end(),
                                [&](const pb::FieldDescriptor* f) {
                                  return std::find(style.omit.begin(), style.omit.end(), f->name()) != style.omit.end();
                                }),
                 fields.end());
  if (fields.empty()) {
    out << YAML::Flow << YAML::BeginMap << YAML::EndMap;
    return;
  }
  out << YAML::BeginMap;
  for (const auto* f : fields) {
    out << YAML::Key << f->name() << YAML::Value;
    if (f->is_map()) {
      emit_map(out, message, f, style);
    } else if (f->is_repeated()) {
      const int size = r->FieldSize(message, f);
      if (size == 0) {
        out << YAML::Flow << YAML::BeginSeq << YAML::EndSeq;
        continue;
      }
      out << YAML::BeginSeq;
      for (int i = 0; i < size; ++i) emit_scalar(out, message, f, i, style);
      out << YAML::EndSeq;
    } else {
      emit_scalar(out, message, f, -1, style);
    }
  }
  out << YAML::EndMap;
}

}  // namespace

void emit_string(YAML::Emitter& out, const std::string& text) {
  if (text.find('\n') != std::string::npos && text.back() == '\n' && text.find('\t') == std::string::npos)
    out << YAML::Literal << text;
  else if (needs_quotes(text) || text.find('\n') != std::string::npos)
    out << YAML::DoubleQuoted << text;
  else
    out << text;
}

// --- output ------------------------------------------------------------------------------

std::string message_to_json(const pb::Message& message, bool pretty) {
  std::string out;
  pb::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;
  options.add_whitespace = pretty;
  (void)pb::util::MessageToJsonString(message, &out, options);
  return out;
}

std::string message_to_yaml(const pb::Message& message, const YamlStyle& style) {
  YAML::Emitter out;
  out.SetIndent(2);
  out.SetSeqFormat(YAML::Block);
  out.SetMapFormat(YAML::Block);
  emit_message(out, message, style, true);
  return std::string(out.c_str()) + "\n";
}

void print_message(const pb::Message& message, OutputFormat format) {
  if (format == OutputFormat::yaml) std::cout << message_to_yaml(message);
  else std::cout << message_to_json(message);
  std::cout << std::flush;
}

std::string time_text(std::int64_t unix_ms) {
  if (unix_ms == 0) return "-";
  return qf::format_rfc3339(qf::Instant{std::chrono::seconds{unix_ms / 1000}});
}

std::string duration_text(std::int64_t ms) {
  if (ms < 1000) return fmt::format("{}ms", ms);
  if (ms < 60'000) return fmt::format("{:.1f}s", static_cast<double>(ms) / 1000.0);
  if (ms < 3'600'000) return fmt::format("{}m{:02}s", ms / 60'000, ms / 1000 % 60);
  return fmt::format("{}h{:02}m", ms / 3'600'000, ms / 60'000 % 60);
}

std::string short_enum_name(const pb::EnumDescriptor* type, int value) {
  return qf::detail::EnumNames::of(type).short_name(value);
}

std::optional<int> parse_enum_name(const pb::EnumDescriptor* type, std::string_view text) {
  const auto* value = qf::detail::EnumNames::of(type).find(text);
  return value ? std::optional<int>(value->number()) : std::nullopt;
}

std::string enum_choices(const pb::EnumDescriptor* type) { return qf::detail::EnumNames::of(type).choices(); }

std::int64_t unix_ms_of(const std::string& text, std::string_view flag) {
  const auto instant = qf::parse_rfc3339(text);
  if (!instant)
    throw CommandFailure{k_exit_invalid_input, fmt::format("{} \"{}\": expected an RFC 3339 instant such as "
                                                           "2026-03-08T07:00:00Z",
                                                           flag, text)};
  return std::chrono::duration_cast<std::chrono::milliseconds>(instant->time_since_epoch()).count();
}

void print_fields(const std::vector<std::pair<std::string, std::string>>& fields) {
  std::size_t width = 0;
  for (const auto& [key, value] : fields) width = std::max(width, key.size());
  std::string out;
  for (const auto& [key, value] : fields) out += fmt::format("{:<{}}  {}\n", key + ":", width + 1, value);
  std::cout << out << std::flush;
}

void print_paging(std::size_t shown, std::uint64_t total, std::uint32_t page, std::uint32_t page_size) {
  const std::uint64_t before = static_cast<std::uint64_t>(std::max<std::uint32_t>(page, 1) - 1) * page_size;
  if (before + shown < total)
    std::cout << fmt::format("({} of {} shown: --page {} for more)\n", shown, total, std::max<std::uint32_t>(page, 1) + 1);
}

void read_message_file(const std::string& path, pb::Message& out) {
  std::string text;
  if (path == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  } else {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw CommandFailure{k_exit_invalid_input, fmt::format("{}: cannot open: {}", path, std::strerror(errno))};
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const auto first = text.find_first_not_of(" \t\r\n");
  const bool json = (path.size() > 5 && path.compare(path.size() - 5, 5, ".json") == 0) ||
                    (first != std::string::npos && text[first] == '{');
  const std::string shown = path == "-" ? "<stdin>" : path;
  if (json) {
    pb::util::JsonParseOptions options;
    options.ignore_unknown_fields = false;
    if (const auto status = pb::util::JsonStringToMessage(text, &out, options); !status.ok())
      throw CommandFailure{k_exit_invalid_input,
                           fmt::format("{}: not a valid {} in JSON: {}", shown, out.GetDescriptor()->name(),
                                       status.message().as_string())};
    return;
  }
  qf::YamlError error;
  if (!qf::yaml_to_message(text, shown, out, error)) throw CommandFailure{k_exit_invalid_input, error.message()};
}

}  // namespace qfctl
