// SPDX-License-Identifier: Apache-2.0
// YAML files (agent config, task manifests) read through yaml-cpp into protobuf messages,
// with errors that name the file, line, field path and reason.
#pragma once

#include <string>
#include <string_view>

#include <google/protobuf/message.h>

#include <quartzflow/error.hpp>
#include <quartzflow/v1/config.pb.h>

namespace quartzflow {

/// Where a YAML problem is: `agent.yaml:12:5: tasks[2].schedule.cron.minute: 61 is out of range 0-59`.
struct YamlError {
  std::string file;     ///< the file name as given (or `<string>`)
  int line = 0;         ///< 1-based; 0 when unknown
  int column = 0;       ///< 1-based; 0 when unknown
  std::string field;    ///< path such as `tasks[2].shell.argv`
  std::string reason;
  std::string message() const;
};

/**
 * Fills `out` from YAML text by protobuf reflection: keys are proto field names; scalars are
 * converted to the field's type (ints range-checked, bools `true/false`, enums by full or
 * short name, e.g. `OVERLAP_POLICY_SKIP` or `skip`); maps and repeated fields from YAML maps
 * and sequences. A `Schedule` may be written as a string in the short form of
 * `ScheduleSpec::from_text` (`"0 2 * * *"`, `"@every 90s"`). Unknown keys, wrong types and
 * duplicates are errors. On error `out` is left unchanged.
 */
bool yaml_to_message(std::string_view yaml_text, std::string_view file_name,
                     google::protobuf::Message& out, YamlError& error);

/// Reads a file and calls yaml_to_message; a missing or unreadable file is an error.
bool yaml_file_to_message(const std::string& path, google::protobuf::Message& out, YamlError& error);

/// Gives `task` the manifest-wide `defaults` it does not set itself (see TaskDefaults).
void apply_task_defaults(const v1::TaskDefaults& defaults, v1::Task& task);

/**
 * Reads a task manifest file, gives each task the file's `defaults` and validates it
 * (validate_tasks). Semantic errors are mapped back to the YAML line of the offending field
 * where possible. On error `out` is unchanged.
 */
bool load_task_manifest(const std::string& path, v1::TaskManifest& out, YamlError& error);

}  // namespace quartzflow
