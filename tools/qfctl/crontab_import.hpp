// SPDX-License-Identifier: Apache-2.0
// A crontab (user format, or /etc/crontab and cron.d with the user column) read as cron reads
// it and written as a task manifest; pure: text in, YAML and the lines it could not map out.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace qfctl {

struct CrontabImportOptions {
  std::string source_name;     ///< shown in the header and the `crontab` label (`/etc/crontab`, `-`)
  std::optional<bool> system;  ///< true: a user column after the schedule; nullopt: detect
  std::string user;            ///< user format: the crontab's owner (run_as_user); empty = the agent's
  std::string group;           ///< group (id or name) of every task; empty = none
  std::string time_zone;       ///< zone when the crontab sets no CRON_TZ/TZ; empty = UTC; `local` allowed
  std::string prefix;          ///< prepended to every task name (`web1-`); empty = none
  /// Detection of the format (`system` unset): whether a word names a user of this host.
  std::function<bool(const std::string&)> user_exists;
};

/// A line cron would run (or a setting) that has no faithful task form.
struct CrontabProblem {
  std::size_t line = 0;  ///< 1-based
  std::string reason;
  std::string text;  ///< the line as written
};

struct CrontabImport {
  std::string yaml;                      ///< the manifest; unmapped lines are comments in it
  std::vector<CrontabProblem> problems;  ///< in line order
  std::size_t task_count = 0;
  bool system_format = false;  ///< what was read (given or detected)
};

/**
 * Converts a crontab. Environment lines apply to the jobs after them (as in cron): `SHELL`
 * becomes the interpreter, `CRON_TZ` the schedules' zone (`TZ` too, and stays in the
 * environment), `MAILTO` a label and the commands that create its e-mail channel and alert
 * rule (a manifest holds no alert rules), `RANDOM_DELAY` (minutes) the jitter, anything else
 * `shell.env`; what all tasks share goes to the manifest's `defaults`. `%` works as in
 * cron: `\%` is a `%`, the first unescaped `%` ends the command and the rest, each `%` a
 * newline, is its standard input. The comment lines (up to 3) right above a job are its
 * description; other comments are kept as YAML comments. Each problem is reported, never
 * dropped: the line is kept in the YAML as a comment.
 */
CrontabImport import_crontab(std::string_view text, const CrontabImportOptions& options);

}  // namespace qfctl
