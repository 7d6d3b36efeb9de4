// SPDX-License-Identifier: Apache-2.0
// YAML documents read into protobuf messages by reflection, remembering where each field was
// written so that later (semantic) errors can point at a line; and task manifests.
#include <fmt/format.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <quartzflow/task.hpp>
#include <quartzflow/yaml_config.hpp>
#include <set>
#include <sstream>
#include <vector>

#include "../common/enum_names.hpp"
#include "../common/message_limits.hpp"
#include "../common/utf8.hpp"

namespace quartzflow {

namespace {

namespace pb = google::protobuf;

constexpr std::size_t k_max_file_bytes = 16 * 1024 * 1024;
// Any list in a manifest (tasks, groups, a task's fields; those have tighter rules of their own).
constexpr std::size_t k_max_manifest_list_elements = 100000;

/// Field path -> where its key (or list element) was written.
using PositionMap = std::map<std::string, YAML::Mark>;

/// Unwinds the recursive walk to yaml_to_message; never escapes this file.
struct ReadFailure {
  YAML::Mark mark;
  std::string field;
  std::string reason;
};

[[noreturn]] void fail(const YAML::Mark& mark, std::string field, std::string reason) {
  throw ReadFailure{mark, std::move(field), std::move(reason)};
}

std::string child_path(const std::string& parent, std::string_view name) {
  return parent.empty() ? std::string(name) : fmt::format("{}.{}", parent, name);
}

/// The path without its last component: `a.b[2]` -> `a.b` -> `a` -> ``.
std::string parent_path(const std::string& path) {
  if (!path.empty() && path.back() == ']') {
    // Map keys are written `["key"]` and may contain dots or brackets themselves.
    const bool quoted = path.size() >= 2 && path[path.size() - 2] == '"';
    const auto open = quoted ? path.rfind("[\"") : path.rfind('[');
    return open == std::string::npos ? std::string() : path.substr(0, open);
  }
  const auto separator = path.find_last_of(".[");
  return separator == std::string::npos ? std::string() : path.substr(0, separator);
}

/// `a list`, `a map` or the scalar text itself: what was found where something else was due.
std::string describe_node(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    case YAML::NodeType::Null:
      return "nothing";
    case YAML::NodeType::Scalar: {
      // Enough to recognise the value; a whole script would drown the message.
      constexpr std::size_t k_shown = 60;
      const std::string& text = node.Scalar();
      return text.size() <= k_shown ? fmt::format("\"{}\"", text) : fmt::format("\"{}...\"", text.substr(0, k_shown));
    }
    case YAML::NodeType::Undefined:
      break;
  }
  return "nothing";
}

/// `OverlapPolicy` -> `overlap policy`; `OVERLAP_POLICY_` is the prefix of its values.
std::string words_of(std::string_view camel, char separator, bool upper_case) {
  std::string out;
  for (std::size_t i = 0; i < camel.size(); ++i) {
    const char c = camel[i];
    if (i > 0 && std::isupper(static_cast<unsigned char>(c)) != 0) out += separator;
    out += static_cast<char>(upper_case ? std::toupper(static_cast<unsigned char>(c))
                                        : std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

/// `a misfire policy`, `an overlap policy`.
std::string with_article(const std::string& noun) {
  const bool vowel = !noun.empty() && std::string_view("aeiou").find(noun.front()) != std::string_view::npos;
  return (vowel ? "an " : "a ") + noun;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string unknown_field_reason(const pb::Descriptor* message, const std::string& name) {
  const pb::FieldDescriptor* closest = nullptr;
  std::size_t best = std::numeric_limits<std::size_t>::max();
  for (int i = 0; i < message->field_count(); ++i) {
    const std::size_t distance = edit_distance(detail::lower_ascii(name), message->field(i)->name());
    if (distance < best) {
      best = distance;
      closest = message->field(i);
    }
  }
  if (closest && best <= std::max<std::size_t>(2, name.size() / 3))
    return fmt::format("unknown field \"{}\"; did you mean \"{}\"?", name, closest->name());
  constexpr int k_listed = 12;
  std::string fields;
  for (int i = 0; i < message->field_count() && i < k_listed; ++i)
    fields += fmt::format("{}{}", i == 0 ? "" : ", ", message->field(i)->name());
  if (message->field_count() > k_listed) fields += ", ...";
  return fmt::format("unknown field \"{}\" (the fields of {} are {})", name, message->name(), fields);
}

struct ParsedInteger {
  enum class Status { ok, malformed, too_large } status = Status::malformed;
  bool negative = false;
  std::uint64_t magnitude = 0;
};

/// Decimal integers with an optional sign; YAML's other integer forms are not accepted.
ParsedInteger parse_integer(std::string_view text) {
  ParsedInteger parsed;
  if (!text.empty() && (text.front() == '-' || text.front() == '+')) {
    parsed.negative = text.front() == '-';
    text.remove_prefix(1);
  }
  if (text.empty() || std::isdigit(static_cast<unsigned char>(text.front())) == 0) return parsed;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), parsed.magnitude);
  if (end != text.data() + text.size()) return parsed;
  parsed.status = ec == std::errc{} ? ParsedInteger::Status::ok : ParsedInteger::Status::too_large;
  return parsed;
}

/// The integer in [low, high] the scalar holds, or a failure naming the range.
template <typename Int>
Int integer_in_range(const YAML::Node& node, const std::string& path) {
  const std::string& text = node.Scalar();
  const ParsedInteger parsed = parse_integer(text);
  if (parsed.status == ParsedInteger::Status::malformed)
    fail(node.Mark(), path, fmt::format("\"{}\" is not an integer", text));
  constexpr auto low = std::numeric_limits<Int>::min();
  constexpr auto high = std::numeric_limits<Int>::max();
  auto out_of_range = [&] { fail(node.Mark(), path, fmt::format("{} is out of range {}-{}", text, low, high)); };
  if (parsed.status == ParsedInteger::Status::too_large) out_of_range();
  if (parsed.negative) {
    if (parsed.magnitude == 0) return 0;
    if constexpr (std::is_unsigned_v<Int>) {
      out_of_range();
    } else {
      // -(magnitude) >= low  <=>  magnitude - 1 <= -(low + 1)
      if (parsed.magnitude - 1 > static_cast<std::uint64_t>(-(low + 1))) out_of_range();
      return static_cast<Int>(-static_cast<Int>(parsed.magnitude - 1) - 1);
    }
  }
  if (parsed.magnitude > static_cast<std::uint64_t>(high)) out_of_range();
  return static_cast<Int>(parsed.magnitude);
}

double floating(const YAML::Node& node, const std::string& path) {
  std::string_view text = node.Scalar();
  const std::string lowered = detail::lower_ascii(text);
  if (lowered == ".inf" || lowered == "+.inf") return std::numeric_limits<double>::infinity();
  if (lowered == "-.inf") return -std::numeric_limits<double>::infinity();
  if (lowered == ".nan") return std::numeric_limits<double>::quiet_NaN();
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc{} || end != text.data() + text.size() ||
      std::isalpha(static_cast<unsigned char>(text.back())) != 0)
    fail(node.Mark(), path, fmt::format("\"{}\" is not a number", node.Scalar()));
  return value;
}

bool boolean(const YAML::Node& node, const std::string& path) {
  const std::string& text = node.Scalar();
  // YAML 1.2 core schema: yes/no/on/off are strings there, and surprising as booleans.
  if (text == "true" || text == "True" || text == "TRUE") return true;
  if (text == "false" || text == "False" || text == "FALSE") return false;
  fail(node.Mark(), path, fmt::format("\"{}\" is not a boolean (true or false)", text));
}

const pb::EnumValueDescriptor* enum_value(const YAML::Node& node, const pb::EnumDescriptor* type,
                                          const std::string& path) {
  const std::string& text = node.Scalar();
  if (const ParsedInteger number = parse_integer(text); number.status != ParsedInteger::Status::malformed) {
    if (number.status == ParsedInteger::Status::ok && number.magnitude <= std::numeric_limits<int>::max()) {
      const int value = number.negative ? -static_cast<int>(number.magnitude) : static_cast<int>(number.magnitude);
      if (const auto* found = type->FindValueByNumber(value)) return found;
    }
  } else {
    if (const auto* value = detail::EnumNames::of(type).find(text)) return value;
  }
  const std::string choices = detail::EnumNames::of(type).choices();  // *_UNSPECIFIED: write nothing instead
  fail(node.Mark(), path,
       fmt::format("\"{}\" is not {}; expected one of {}", text, with_article(words_of(type->name(), ' ', false)),
                   choices));
}

/// Walks a YAML node tree alongside a message's descriptor.
class MessageReader {
 public:
  explicit MessageReader(PositionMap* positions) : positions_(positions) {}

  void read_message(const YAML::Node& node, pb::Message& message, const std::string& path) {
    // A bare key (`manual:`) stands for an empty message: that is how YAML writes "present".
    if (node.IsNull()) return;
    if (!node.IsMap()) fail(node.Mark(), path, fmt::format("expected a map of fields, found {}", describe_node(node)));
    const pb::Descriptor* descriptor = message.GetDescriptor();
    const pb::Reflection* reflection = message.GetReflection();
    std::set<std::string> seen;
    for (const auto& pair : node) {
      // Copies: yaml-cpp's iterator yields a temporary proxy, not references into the tree.
      const YAML::Node key = pair.first;
      const YAML::Node value = pair.second;
      if (!key.IsScalar())
        fail(key.Mark(), path, fmt::format("expected a field name as key, found {}", describe_node(key)));
      const std::string& name = key.Scalar();
      const std::string field_path = child_path(path, name);
      if (!seen.insert(name).second) fail(key.Mark(), field_path, fmt::format("duplicate key \"{}\"", name));
      const pb::FieldDescriptor* field = descriptor->FindFieldByName(name);
      if (field == nullptr) fail(key.Mark(), path, unknown_field_reason(descriptor, name));
      if (const pb::OneofDescriptor* oneof = field->real_containing_oneof()) {
        const pb::FieldDescriptor* already = reflection->GetOneofFieldDescriptor(message, oneof);
        if (already != nullptr && already != field) {
          std::string members;
          for (int i = 0; i < oneof->field_count(); ++i)
            members += fmt::format("{}{}", i == 0 ? "" : ", ", oneof->field(i)->name());
          fail(key.Mark(), field_path,
               fmt::format("conflicts with \"{}\": only one of {} may be set", already->name(), members));
        }
      }
      record(field_path, key.Mark());
      read_field(value, message, field, field_path);
    }
  }

 private:
  void record(const std::string& path, const YAML::Mark& mark) {
    if (positions_ != nullptr && !mark.is_null()) positions_->emplace(path, mark);
  }

  void read_field(const YAML::Node& node, pb::Message& message, const pb::FieldDescriptor* field,
                  const std::string& path) {
    if (field->is_map()) return read_map(node, message, field, path);
    if (field->is_repeated()) return read_list(node, message, field, path);
    if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE)
      return read_submessage(node, *message.GetReflection()->MutableMessage(&message, field), path);
    if (node.IsNull()) {
      // Nothing written keeps the default; inside a oneof it still selects the member.
      if (field->real_containing_oneof() != nullptr) set_default(message, field);
      return;
    }
    set_scalar(node, message, field, path);
  }

  void read_submessage(const YAML::Node& node, pb::Message& message, const std::string& path) {
    if (message.GetDescriptor() == v1::Schedule::descriptor() && node.IsScalar()) {
      error_code ec;
      ValidationError detail;
      const auto spec = ScheduleSpec::from_text(node.Scalar(), ec, &detail);
      if (!spec) fail(node.Mark(), path, detail.reason);
      v1::Schedule schedule;
      schedule_spec_to_proto(*spec, schedule);
      message.CopyFrom(schedule);
      return;
    }
    read_message(node, message, path);
  }

  void read_list(const YAML::Node& node, pb::Message& message, const pb::FieldDescriptor* field,
                 const std::string& path) {
    if (node.IsNull()) return;
    if (!node.IsSequence()) fail(node.Mark(), path, fmt::format("expected a list, found {}", describe_node(node)));
    const pb::Reflection* reflection = message.GetReflection();
    for (std::size_t i = 0; i < node.size(); ++i) {
      const YAML::Node element = node[i];
      const std::string element_path = fmt::format("{}[{}]", path, i);
      record(element_path, element.Mark());
      if (field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
        read_submessage(element, *reflection->AddMessage(&message, field), element_path);
      } else {
        if (element.IsNull()) fail(element.Mark(), element_path, "a list element is empty");
        set_scalar(element, message, field, element_path);
      }
    }
  }

  void read_map(const YAML::Node& node, pb::Message& message, const pb::FieldDescriptor* field,
                const std::string& path) {
    if (node.IsNull()) return;
    if (!node.IsMap()) fail(node.Mark(), path, fmt::format("expected a map, found {}", describe_node(node)));
    const pb::Reflection* reflection = message.GetReflection();
    const pb::FieldDescriptor* key_field = field->message_type()->map_key();
    const pb::FieldDescriptor* value_field = field->message_type()->map_value();
    std::set<std::string> seen;
    for (const auto& pair : node) {
      // Copies: yaml-cpp's iterator yields a temporary proxy, not references into the tree.
      const YAML::Node key = pair.first;
      const YAML::Node value = pair.second;
      if (!key.IsScalar()) fail(key.Mark(), path, fmt::format("expected a scalar key, found {}", describe_node(key)));
      const std::string entry_path = fmt::format("{}[\"{}\"]", path, key.Scalar());
      if (!seen.insert(key.Scalar()).second)
        fail(key.Mark(), entry_path, fmt::format("duplicate key \"{}\"", key.Scalar()));
      record(entry_path, key.Mark());
      pb::Message& entry = *reflection->AddMessage(&message, field);
      set_scalar(key, entry, key_field, entry_path);
      if (value_field->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
        read_submessage(value, *entry.GetReflection()->MutableMessage(&entry, value_field), entry_path);
      } else if (value.IsNull()) {
        set_default(entry, value_field);
      } else {
        set_scalar(value, entry, value_field, entry_path);
      }
    }
  }

  static void set_default(pb::Message& message, const pb::FieldDescriptor* field) {
    const pb::Reflection* reflection = message.GetReflection();
    switch (field->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_INT32:
        reflection->SetInt32(&message, field, 0);
        break;
      case pb::FieldDescriptor::CPPTYPE_INT64:
        reflection->SetInt64(&message, field, 0);
        break;
      case pb::FieldDescriptor::CPPTYPE_UINT32:
        reflection->SetUInt32(&message, field, 0);
        break;
      case pb::FieldDescriptor::CPPTYPE_UINT64:
        reflection->SetUInt64(&message, field, 0);
        break;
      case pb::FieldDescriptor::CPPTYPE_DOUBLE:
        reflection->SetDouble(&message, field, 0);
        break;
      case pb::FieldDescriptor::CPPTYPE_FLOAT:
        reflection->SetFloat(&message, field, 0);
        break;
      case pb::FieldDescriptor::CPPTYPE_BOOL:
        reflection->SetBool(&message, field, false);
        break;
      case pb::FieldDescriptor::CPPTYPE_ENUM:
        reflection->SetEnumValue(&message, field, 0);
        break;
      case pb::FieldDescriptor::CPPTYPE_STRING:
        reflection->SetString(&message, field, "");
        break;
      case pb::FieldDescriptor::CPPTYPE_MESSAGE:
        reflection->MutableMessage(&message, field);
        break;
    }
  }

  /// Sets (or, for a repeated field, appends) one scalar converted to the field's type.
  static void set_scalar(const YAML::Node& node, pb::Message& message, const pb::FieldDescriptor* field,
                         const std::string& path) {
    const pb::Reflection* reflection = message.GetReflection();
    const bool repeated = field->is_repeated();
    if (!node.IsScalar())
      fail(node.Mark(), path, fmt::format("expected {}, found {}", scalar_kind(field), describe_node(node)));
    switch (field->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_INT32: {
        const auto value = integer_in_range<std::int32_t>(node, path);
        repeated ? reflection->AddInt32(&message, field, value) : reflection->SetInt32(&message, field, value);
        break;
      }
      case pb::FieldDescriptor::CPPTYPE_INT64: {
        const auto value = integer_in_range<std::int64_t>(node, path);
        repeated ? reflection->AddInt64(&message, field, value) : reflection->SetInt64(&message, field, value);
        break;
      }
      case pb::FieldDescriptor::CPPTYPE_UINT32: {
        const auto value = integer_in_range<std::uint32_t>(node, path);
        repeated ? reflection->AddUInt32(&message, field, value) : reflection->SetUInt32(&message, field, value);
        break;
      }
      case pb::FieldDescriptor::CPPTYPE_UINT64: {
        const auto value = integer_in_range<std::uint64_t>(node, path);
        repeated ? reflection->AddUInt64(&message, field, value) : reflection->SetUInt64(&message, field, value);
        break;
      }
      case pb::FieldDescriptor::CPPTYPE_DOUBLE: {
        const double value = floating(node, path);
        repeated ? reflection->AddDouble(&message, field, value) : reflection->SetDouble(&message, field, value);
        break;
      }
      case pb::FieldDescriptor::CPPTYPE_FLOAT: {
        const double value = floating(node, path);
        if (std::isfinite(value) && std::abs(value) > std::numeric_limits<float>::max())
          fail(node.Mark(), path, fmt::format("{} is out of range of a 32-bit float", node.Scalar()));
        const auto narrow = static_cast<float>(value);
        repeated ? reflection->AddFloat(&message, field, narrow) : reflection->SetFloat(&message, field, narrow);
        break;
      }
      case pb::FieldDescriptor::CPPTYPE_BOOL: {
        const bool value = boolean(node, path);
        repeated ? reflection->AddBool(&message, field, value) : reflection->SetBool(&message, field, value);
        break;
      }
      case pb::FieldDescriptor::CPPTYPE_ENUM: {
        const auto* value = enum_value(node, field->enum_type(), path);
        repeated ? reflection->AddEnum(&message, field, value) : reflection->SetEnum(&message, field, value);
        break;
      }
      case pb::FieldDescriptor::CPPTYPE_STRING:
        repeated ? reflection->AddString(&message, field, node.Scalar())
                 : reflection->SetString(&message, field, node.Scalar());
        break;
      case pb::FieldDescriptor::CPPTYPE_MESSAGE:
        fail(node.Mark(), path, "expected a map of fields");
    }
  }

  static std::string scalar_kind(const pb::FieldDescriptor* field) {
    switch (field->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_INT32:
      case pb::FieldDescriptor::CPPTYPE_INT64:
      case pb::FieldDescriptor::CPPTYPE_UINT32:
      case pb::FieldDescriptor::CPPTYPE_UINT64:
        return "an integer";
      case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      case pb::FieldDescriptor::CPPTYPE_FLOAT:
        return "a number";
      case pb::FieldDescriptor::CPPTYPE_BOOL:
        return "a boolean";
      case pb::FieldDescriptor::CPPTYPE_ENUM:
        return with_article(words_of(field->enum_type()->name(), ' ', false));
      case pb::FieldDescriptor::CPPTYPE_STRING:
        return "a string";
      case pb::FieldDescriptor::CPPTYPE_MESSAGE:
        break;
    }
    return "a map of fields";
  }

  PositionMap* positions_;
};

std::string display_name(std::string_view file_name) {
  return file_name.empty() ? std::string("<string>") : std::string(file_name);
}

void set_position(YamlError& error, const YAML::Mark& mark) {
  error.line = mark.is_null() ? 0 : mark.line + 1;
  error.column = mark.is_null() ? 0 : mark.column + 1;
}

/// Counts parse events and gives up past a budget. yaml-cpp 0.7 loops forever, allocating,
/// on a ',' where a block node should start (`,` alone is enough; found by fuzzing): a
/// document cannot hold more nodes than about one per byte, so a first pass with this
/// handler stops such input before LoadAll builds it.
class EventBudget : public YAML::EventHandler {
 public:
  explicit EventBudget(std::size_t events) : left_(events) {}
  void OnDocumentStart(const YAML::Mark& mark) override { spend(mark); }
  void OnDocumentEnd() override { spend({}); }
  void OnNull(const YAML::Mark& mark, YAML::anchor_t) override { spend(mark); }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t) override { spend(mark); }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t, const std::string&) override { spend(mark); }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
    spend(mark);
  }
  void OnSequenceEnd() override { spend({}); }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {
    spend(mark);
  }
  void OnMapEnd() override { spend({}); }

 private:
  void spend(const YAML::Mark& mark) {
    if (left_-- == 0) throw YAML::ParserException(mark, "the YAML parser did not make progress here (a stray ','?)");
  }
  std::size_t left_;
};

/// Runs the event-budget pass over `text`; throws YAML::Exception like LoadAll.
void check_parse_terminates(const std::string& text) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  EventBudget budget(2 * text.size() + 16);
  while (parser.HandleNextDocument(budget)) {
  }
}

/// Schedules are where YAML's indicators bite: `@every 90s` and `*/5 * * * *` unquoted.
std::string syntax_hint(std::string_view text, const YAML::Mark& mark) {
  if (mark.is_null() || mark.pos < 0 || static_cast<std::size_t>(mark.pos) >= text.size()) return {};
  switch (text[static_cast<std::size_t>(mark.pos)]) {
    case '@':
    case '`':
      return fmt::format(" (a value starting with {} must be quoted)", text[static_cast<std::size_t>(mark.pos)]);
    case '*':
      return " (a value starting with * is read as an alias: quote it, e.g. \"*/5 * * * *\")";
    default:
      return {};
  }
}

bool read_yaml(std::string_view yaml_text, std::string_view file_name, pb::Message& out, YamlError& error,
               PositionMap* positions) {
  const std::string file = display_name(file_name);
  // Strings become protobuf strings, which must be UTF-8 (a peer refuses to parse them).
  if (const auto bad = detail::first_invalid_utf8(yaml_text); bad != std::string_view::npos) {
    const auto before = yaml_text.substr(0, bad);
    const auto line_start = before.rfind('\n');
    error = {file, static_cast<int>(std::count(before.begin(), before.end(), '\n')) + 1,
             static_cast<int>(line_start == std::string_view::npos ? bad + 1 : bad - line_start), "",
             "the text is not valid UTF-8"};
    return false;
  }
  std::vector<YAML::Node> documents;
  try {
    check_parse_terminates(std::string(yaml_text));
    documents = YAML::LoadAll(std::string(yaml_text));
  } catch (const YAML::Exception& e) {
    error = {file, 0, 0, "", e.msg + syntax_hint(yaml_text, e.mark)};
    set_position(error, e.mark);
    return false;
  }
  if (documents.size() > 1) {
    error = {file, 0, 0, "", "only one YAML document is allowed"};
    set_position(error, documents[1].Mark());
    return false;
  }
  std::unique_ptr<pb::Message> fresh(out.New());
  PositionMap fresh_positions;
  try {
    MessageReader reader(positions ? &fresh_positions : nullptr);
    if (!documents.empty()) reader.read_message(documents.front(), *fresh, "");
  } catch (const ReadFailure& failure) {
    error = {file, 0, 0, failure.field, failure.reason};
    set_position(error, failure.mark);
    return false;
  } catch (const YAML::Exception& e) {
    error = {file, 0, 0, "", e.msg};
    set_position(error, e.mark);
    return false;
  }
  out.CopyFrom(*fresh);
  if (positions) *positions = std::move(fresh_positions);
  return true;
}

bool read_text_file(const std::string& path, std::string& text, YamlError& error) {
  auto fail_with = [&](std::string reason) {
    error = {path, 0, 0, "", std::move(reason)};
    return false;
  };
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) return fail_with(fmt::format("cannot open: {}", std::strerror(errno)));
  std::string content;
  char buffer[65536];
  while (true) {
    const std::size_t n = std::fread(buffer, 1, sizeof buffer, file.get());
    content.append(buffer, n);
    if (content.size() > k_max_file_bytes) return fail_with(fmt::format("is larger than {} bytes", k_max_file_bytes));
    if (n < sizeof buffer) break;
  }
  if (std::ferror(file.get())) return fail_with(fmt::format("cannot read: {}", std::strerror(errno)));
  text = std::move(content);
  return true;
}

}  // namespace

std::string YamlError::message() const {
  std::string text = display_name(file);
  if (line > 0) {
    text += fmt::format(":{}", line);
    if (column > 0) text += fmt::format(":{}", column);
  }
  if (!field.empty()) text += ": " + field;
  if (!reason.empty()) text += ": " + reason;
  return text;
}

bool yaml_to_message(std::string_view yaml_text, std::string_view file_name, google::protobuf::Message& out,
                     YamlError& error) {
  return read_yaml(yaml_text, file_name, out, error, nullptr);
}

bool yaml_file_to_message(const std::string& path, google::protobuf::Message& out, YamlError& error) {
  std::string text;
  if (!read_text_file(path, text, error)) return false;
  return yaml_to_message(text, path, out, error);
}

void apply_task_defaults(const v1::TaskDefaults& defaults, v1::Task& task) {
  if (task.has_shell()) {
    auto& shell = *task.mutable_shell();
    for (const auto& [name, value] : defaults.env()) shell.mutable_env()->insert({name, value});  // keeps the task's
    if (!shell.script().empty() && shell.interpreter().empty())
      for (const auto& word : defaults.interpreter()) shell.add_interpreter(word);
    if (shell.working_dir().empty()) shell.set_working_dir(defaults.working_dir());
    if (shell.run_as_user().empty()) shell.set_run_as_user(defaults.run_as_user());
  }
  if (!defaults.time_zone().empty() && task.has_schedule() && task.schedule().time_zone().empty())
    task.mutable_schedule()->set_time_zone(defaults.time_zone());
  if (task.group_ids().empty() && !task.all_agents())
    for (const auto& group : defaults.group_ids()) task.add_group_ids(group);
  for (const auto& [key, value] : defaults.labels()) task.mutable_labels()->insert({key, value});
}

bool load_task_manifest(const std::string& path, v1::TaskManifest& out, YamlError& error) {
  std::string text;
  if (!read_text_file(path, text, error)) return false;
  v1::TaskManifest manifest;
  PositionMap positions;
  if (!read_yaml(text, path, manifest, error, &positions)) return false;
  if (auto oversized = detail::oversized_repeated_field(manifest, k_max_manifest_list_elements)) {
    error = {path, 0, 0, oversized->first, oversized->second};
    if (const auto found = positions.find(oversized->first); found != positions.end()) set_position(error, found->second);
    return false;
  }
  for (auto& task : *manifest.mutable_tasks()) {
    apply_task_defaults(manifest.defaults(), task);
    if (task.id().empty()) task.set_id(task.name());
    if (!task.has_enabled()) task.set_enabled(true);  // declarative: a listed task runs unless it says otherwise
  }
  const std::vector<v1::Task> tasks(manifest.tasks().begin(), manifest.tasks().end());
  if (auto problem = validate_tasks(tasks)) {
    error = {path, 0, 0, problem->field, problem->reason};
    // The deepest field that was written: `tasks[2].schedule.cron.minute` is reported at
    // `tasks[2].schedule` when the schedule was given in its text form.
    for (std::string at = problem->field;; at = parent_path(at)) {
      if (const auto found = positions.find(at); found != positions.end()) {
        set_position(error, found->second);
        break;
      }
      if (at.empty()) break;
    }
    return false;
  }
  out = std::move(manifest);
  return true;
}

}  // namespace quartzflow
