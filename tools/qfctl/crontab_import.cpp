// SPDX-License-Identifier: Apache-2.0
// Crontab -> task manifest: lines read as Vixie cron / cronie read them (environment lines,
// five fields or a macro, the user column of system crontabs, `%`), written as YAML.
#include "crontab_import.hpp"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <map>
#include <set>
#include <string>

#include <fmt/format.h>

#include <quartzflow/schedule.hpp>

#include "../../src/common/text.hpp"

namespace qfctl {
namespace {

namespace qf = quartzflow;

constexpr std::size_t k_max_description = 512;
constexpr std::size_t k_max_name_stem = 48;
constexpr std::size_t k_max_description_lines = 3;

bool is_blank(char c) { return c == ' ' || c == '\t'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && (is_blank(s.front()) || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (is_blank(s.back()) || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

/// The first whitespace-separated word of `s` and what follows it (leading blanks skipped).
std::pair<std::string_view, std::string_view> split_word(std::string_view s) {
  while (!s.empty() && is_blank(s.front())) s.remove_prefix(1);
  std::size_t end = 0;
  while (end < s.size() && !is_blank(s[end])) ++end;
  std::string_view rest = s.substr(end);
  while (!rest.empty() && is_blank(rest.front())) rest.remove_prefix(1);
  return {s.substr(0, end), rest};
}

/// Lower case, every run of other characters than [a-z0-9] one `-`, no `-` at the ends.
std::string slug(std::string_view text, std::size_t max_length = 64) {
  std::string out;
  for (char c : qf::detail::lower_ascii(text)) {
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
      out += c;
    } else if (!out.empty() && out.back() != '-') {
      out += '-';
    }
  }
  if (out.size() > max_length) out.resize(max_length);
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out;
}

// --- YAML output ------------------------------------------------------------------------

bool plain_scalar_ok(std::string_view s) {
  if (s.empty() || s != trim(s)) return false;
  static const std::set<std::string> reserved = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"};
  if (reserved.count(qf::detail::lower_ascii(s))) return false;
  const char first = s.front();
  if (!(std::isalpha(static_cast<unsigned char>(first)) || first == '/' || first == '_' || first == '.')) return false;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f || std::string_view("{}[],#&*!|>'\"%@`\\").find(c) != std::string_view::npos)
      return false;
  }
  return s.find(": ") == std::string_view::npos && s.back() != ':';
}

std::string quoted(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string scalar(std::string_view s) { return plain_scalar_ok(s) ? std::string(s) : quoted(s); }

/// `key: value` at `indent`; multi-line text as a literal block when that reads back the same.
std::string yaml_text_field(std::size_t indent, std::string_view key, std::string_view value) {
  const std::string pad(indent, ' ');
  if (value.find('\n') == std::string_view::npos) return fmt::format("{}{}: {}\n", pad, key, scalar(value));
  std::string_view body = value;
  std::string chomp = "|-";
  if (body.back() == '\n') {
    body.remove_suffix(1);
    chomp = "|";
  }
  bool literal_ok = !body.empty() && body.back() != '\n' && !is_blank(body.front());
  for (std::size_t start = 0; literal_ok && start <= body.size();) {
    auto end = body.find('\n', start);
    if (end == std::string_view::npos) end = body.size();
    const auto line = body.substr(start, end - start);
    if (!line.empty() && (is_blank(line.back()) || line.back() == '\r')) literal_ok = false;
    for (char c : line)
      if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f) literal_ok = false;
    start = end + 1;
  }
  if (!literal_ok) return fmt::format("{}{}: {}\n", pad, key, quoted(value));
  std::string out = fmt::format("{}{}: {}\n", pad, key, chomp);
  for (std::size_t start = 0; start <= body.size();) {
    auto end = body.find('\n', start);
    if (end == std::string_view::npos) end = body.size();
    const auto line = body.substr(start, end - start);
    out += line.empty() ? "\n" : pad + "  " + std::string(line) + "\n";
    start = end + 1;
  }
  return out;
}

std::string yaml_map(const std::map<std::string, std::string>& values) {
  std::string out = "{";
  for (const auto& [key, value] : values)
    out += fmt::format("{}{}: {}", out.size() > 1 ? ", " : "", scalar(key), scalar(value));
  return out + "}";
}

std::string yaml_list(const std::vector<std::string>& values) {
  std::string out = "[";
  for (const auto& value : values) out += fmt::format("{}{}", out.size() > 1 ? ", " : "", scalar(value));
  return out + "]";
}

// --- reading the crontab ----------------------------------------------------------------

/// What cron's environment lines say at one point of the file.
struct Environment {
  std::map<std::string, std::string> variables;  ///< exported to the job (PATH, TZ, ...)
  std::string shell = "/bin/sh";
  std::string cron_tz;                ///< CRON_TZ
  std::string tz;                     ///< TZ
  std::optional<std::string> mailto;  ///< MAILTO (empty: no mail)
  std::size_t mailto_line = 0;
  std::uint32_t random_delay_minutes = 0;  ///< RANDOM_DELAY (cronie)
};

struct Job {
  std::size_t line = 0;
  std::string text;      ///< the line as written
  std::string schedule;  ///< five fields joined by one space, or a macro
  std::string user;      ///< system format: the user column
  std::string script;
  std::string description;
  std::vector<std::string> comments;  ///< YAML comment lines to print above the task
  Environment env;
  std::string name;
};

/// `NAME=value` as cron's load_env reads it (quotes around the name or the value dropped);
/// nullopt when the line is not one.
std::optional<std::pair<std::string, std::string>> parse_env_line(std::string_view line) {
  line = trim(line);
  if (line.empty()) return std::nullopt;
  const char first = line.front();
  if (first == '@' || first == '*' || first == '#' || std::isdigit(static_cast<unsigned char>(first)))
    return std::nullopt;
  std::string name;
  std::size_t at = 0;
  if (first == '"' || first == '\'') {
    const auto close = line.find(first, 1);
    if (close == std::string_view::npos) return std::nullopt;
    name = std::string(line.substr(1, close - 1));
    at = close + 1;
  } else {
    while (at < line.size() && !is_blank(line[at]) && line[at] != '=') ++at;
    name = std::string(line.substr(0, at));
  }
  while (at < line.size() && is_blank(line[at])) ++at;
  if (name.empty() || at >= line.size() || line[at] != '=') return std::nullopt;
  std::string_view value = trim(line.substr(at + 1));
  if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') && value.back() == value.front())
    value = value.substr(1, value.size() - 2);
  return std::pair{std::move(name), std::string(value)};
}

/// A comment whose text is a job or a setting: commented out, not a description.
bool commented_out(std::string_view comment_text) {
  if (parse_env_line(comment_text)) return true;
  const auto text = trim(comment_text);
  if (text.empty()) return false;
  if (text.front() == '@') return true;
  if (!(std::isdigit(static_cast<unsigned char>(text.front())) || text.front() == '*')) return false;
  std::size_t words = 0;
  for (auto rest = text; !rest.empty(); rest = split_word(rest).second) ++words;
  return words >= 6;
}

/// The command and its standard input, as cron splits them at `%` (see do_command.c).
std::pair<std::string, std::optional<std::string>> split_percent(std::string_view command) {
  std::string cmd;
  bool escaped = false;
  std::size_t i = 0;
  for (; i < command.size(); ++i) {
    const char c = command[i];
    if (escaped) {
      if (c == '%') cmd.pop_back();  // `\%` is a `%`; other backslashes stay
      cmd += c;
      escaped = false;
      continue;
    }
    if (c == '%') break;
    escaped = c == '\\';
    cmd += c;
  }
  if (i >= command.size()) return {cmd, std::nullopt};
  std::string input;
  escaped = false;
  for (++i; i < command.size(); ++i) {
    char c = command[i];
    if (escaped) {
      if (c != '%') input += '\\';
    } else if (c == '%') {
      c = '\n';
    }
    escaped = c == '\\';
    if (!escaped) input += c;
  }
  if (escaped) input += '\\';
  if (input.empty() || input.back() != '\n') input += '\n';
  return {cmd, input};
}

bool bourne_shell(const std::string& shell) {
  const auto base = shell.substr(shell.find_last_of('/') + 1);
  static const std::set<std::string> shells = {"sh", "bash", "dash", "ksh", "mksh", "zsh", "ash", "yash", "posh"};
  return shells.count(base) > 0;
}

// --- names ------------------------------------------------------------------------------

/// The words of a shell command, split into simple commands at `;`, `&&`, `||`, `|`, `&`,
/// with quotes removed and redirections dropped. Good enough to name a task, not to run it.
std::vector<std::vector<std::string>> simple_commands(std::string_view command) {
  std::vector<std::vector<std::string>> commands(1);
  std::string word;
  bool in_word = false;
  bool skip_next = false;  // the target of a redirection
  auto end_word = [&] {
    if (!in_word) return;
    if (skip_next) {
      skip_next = false;
    } else {
      commands.back().push_back(word);
    }
    word.clear();
    in_word = false;
  };
  auto end_command = [&] {
    end_word();
    if (!commands.back().empty()) commands.emplace_back();
  };
  for (std::size_t i = 0; i < command.size(); ++i) {
    const char c = command[i];
    if (c == '\'' || c == '"') {
      const auto close = command.find(c, i + 1);
      word += command.substr(i + 1, close == std::string_view::npos ? std::string_view::npos : close - i - 1);
      in_word = true;
      if (close == std::string_view::npos) break;
      i = close;
    } else if (c == '\\' && i + 1 < command.size()) {
      word += command[++i];
      in_word = true;
    } else if (is_blank(c)) {
      end_word();
    } else if (c == ';' || c == '&' || c == '|' || c == '(' || c == ')' || c == '`') {
      end_command();
    } else if (c == '>' || c == '<') {
      // `2>&1`, `>>file`, `> /dev/null`: the fd before it and the target after it are not words.
      if (in_word &&
          std::all_of(word.begin(), word.end(), [](char d) { return std::isdigit(static_cast<unsigned char>(d)); })) {
        word.clear();
        in_word = false;
      }
      end_word();
      while (i + 1 < command.size() && (command[i + 1] == '>' || command[i + 1] == '<' || command[i + 1] == '&')) ++i;
      if (i + 1 < command.size() && !is_blank(command[i + 1])) {
        // the target is glued on: `>/dev/null`, `>&2`
        std::size_t j = i + 1;
        while (j < command.size() && !is_blank(command[j]) &&
               std::string_view(";&|()").find(command[j]) == std::string_view::npos)
          ++j;
        i = j - 1;
      } else {
        skip_next = true;
      }
    } else {
      word += c;
      in_word = true;
    }
  }
  end_word();
  if (commands.back().empty()) commands.pop_back();
  return commands;
}

std::string base_name(std::string_view path) {
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  const auto slash = path.find_last_of('/');
  std::string base(slash == std::string_view::npos ? path : path.substr(slash + 1));
  for (const std::string_view extension : {".sh", ".bash", ".py", ".pl", ".rb", ".php", ".js"})
    if (base.size() > extension.size() && base.ends_with(extension)) base.resize(base.size() - extension.size());
  return base;
}

/// A readable name for a job: the program it is about (past `cd`, `test`, wrappers such as
/// `nice`, `flock` or `timeout`), and for runners (`run-parts`, `php`, `python3`...) what
/// they run.
std::string name_stem(std::string_view command) {
  static const std::set<std::string> boilerplate = {"cd",    "test",   "[",    "[[",     "true",  "false", ":",
                                                    "sleep", "if",     "then", "else",   "fi",    "do",    "done",
                                                    "{",     "}",      "!",    "export", "umask", "set",   "ulimit",
                                                    "mkdir", "source", ".",    "wait",   "exit",  "while", "for"};
  static const std::set<std::string> wrappers = {
      "nice",    "ionice", "timeout", "flock",   "sudo",   "env",  "nohup",   "exec",    "command", "time",
      "chronic", "cronic", "setlock", "lockrun", "stdbuf", "chrt", "taskset", "runuser", "su",      "xargs"};
  static const std::set<std::string> runners = {"run-parts", "sh",      "bash",    "dash",        "zsh",
                                                "python",    "python2", "python3", "perl",        "ruby",
                                                "php",       "node",    "java",    "docker",      "podman",
                                                "systemctl", "make",    "rake",    "npm",         "ansible-playbook",
                                                "drush",     "wp",      "bundle",  "invoke-rc.d", "service",
                                                "kubectl",   "psql",    "mysql",   "Rscript",     "pwsh"};
  const auto commands = simple_commands(command);
  std::string fallback;
  for (const auto& words : commands) {
    std::size_t i = 0;
    auto skip_options = [&] {
      while (i < words.size() && (words[i].starts_with("-") || words[i].find('=') != std::string::npos ||
                                  std::isdigit(static_cast<unsigned char>(words[i].front()))))
        ++i;
    };
    static const std::set<std::string> keywords = {"if", "then", "else", "elif", "do", "while", "until", "!", "{", "}"};
    while (i < words.size()) {
      if ((words[i].find('=') != std::string::npos && words[i].front() != '=') || keywords.count(words[i])) {
        ++i;  // VAR=value before the program, `if`, `then`...
        continue;
      }
      const auto base = base_name(words[i]);
      if (!wrappers.count(base)) break;
      ++i;
      // The wrapper's options, and the values of the ones that take one.
      static const std::map<std::string, std::string> value_options = {
          {"nice", "n"}, {"ionice", "cnp"}, {"timeout", "sk"},  {"flock", "wEc"}, {"sudo", "ugCDhprT"},  {"env", "uSC"},
          {"chrt", "p"}, {"taskset", "p"},  {"runuser", "ugc"}, {"su", "cgs"},    {"xargs", "adEeILnPs"}};
      const auto takes = value_options.find(base);
      while (i < words.size() && words[i].starts_with("-")) {
        const bool takes_value = takes != value_options.end() && words[i].size() == 2 &&
                                 takes->second.find(words[i][1]) != std::string::npos;
        ++i;
        if (takes_value && i < words.size()) ++i;
      }
      if (base == "flock" || base == "setlock" || base == "runuser" || base == "su") {
        if (i < words.size()) ++i;  // the lock file, the user
      }
      skip_options();
    }
    if (i >= words.size()) continue;
    const auto program = base_name(words[i]);
    if (fallback.empty()) fallback = program;
    if (boilerplate.count(program)) continue;
    std::string stem = program;
    // Inline code (`perl -e 'sleep ...'`, `sh -c '...'`): a shell's is named by what it runs,
    // another language's is boilerplate (a random sleep, a check).
    if (i + 1 < words.size() && (words[i + 1] == "-e" || words[i + 1] == "-c" || words[i + 1] == "-r")) {
      if (std::set<std::string>{"sh", "bash", "dash", "zsh", "ksh"}.count(program) && i + 2 < words.size()) {
        if (auto inner = name_stem(words[i + 2]); !inner.empty()) return inner;
      }
      continue;
    }
    if (runners.count(program) || program.starts_with("python")) {
      for (std::size_t j = i + 1; j < words.size(); ++j) {
        if (words[j].starts_with("-") || words[j].empty()) continue;
        const auto argument = base_name(words[j]);
        if (!slug(argument).empty()) stem += "-" + argument;
        break;
      }
    }
    return stem;
  }
  return fallback;
}

// --- the manifest -----------------------------------------------------------------------

struct MailTarget {
  std::string addresses;
  std::size_t line = 0;
  std::string channel_id;
};

std::string mail_channel_id(const std::string& addresses) { return "crontab-mail-" + slug(addresses, 51); }

}  // namespace

CrontabImport import_crontab(std::string_view text, const CrontabImportOptions& options) {
  CrontabImport result;
  std::vector<std::string> lines;
  for (std::size_t start = 0; start < text.size();) {
    auto end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    lines.emplace_back(text.substr(start, end - start));
    start = end + 1;
  }

  // Which format: given, or the one every job line fits (a user column naming a known user).
  bool system = false;
  if (options.system) {
    system = *options.system;
  } else {
    std::size_t jobs = 0;
    std::size_t with_user = 0;
    for (const auto& raw : lines) {
      const auto line = trim(raw);
      if (line.empty() || line.front() == '#' || parse_env_line(line)) continue;
      ++jobs;
      std::string_view rest = line;
      const std::size_t fields = line.front() == '@' ? 1 : 5;
      for (std::size_t f = 0; f < fields; ++f) rest = split_word(rest).second;
      const auto [user, command] = split_word(rest);
      if (!user.empty() && !command.empty() && options.user_exists && options.user_exists(std::string(user)))
        ++with_user;
    }
    system = jobs > 0 && with_user == jobs;
  }
  result.system_format = system;

  Environment env;
  env.tz = "";
  std::vector<Job> jobs;
  std::vector<std::string> pending_comments;  // YAML comments waiting for the next task
  std::vector<std::string> description_block;
  std::vector<std::string> trailing_comments;
  auto problem = [&](std::size_t line, std::string reason, const std::string& raw) {
    result.problems.push_back({line, reason, std::string(trim(raw))});
    pending_comments.push_back(fmt::format("# NOT IMPORTED, line {}: {}: {}", line, reason, trim(raw)));
  };
  auto flush_description_block = [&] {
    for (auto& c : description_block) pending_comments.push_back(std::move(c));
    description_block.clear();
  };

  for (std::size_t index = 0; index < lines.size(); ++index) {
    const std::size_t number = index + 1;
    const std::string& raw = lines[index];
    const auto line = trim(raw);
    if (line.empty()) {
      flush_description_block();
      continue;
    }
    if (line.front() == '#') {
      const auto comment_text = trim(line.substr(1));
      if (comment_text.empty() || commented_out(comment_text)) {
        flush_description_block();
        pending_comments.emplace_back(line);
      } else {
        description_block.emplace_back(line);
      }
      continue;
    }
    if (const auto setting = parse_env_line(line)) {
      flush_description_block();
      auto [name, value] = *setting;
      pending_comments.push_back(fmt::format("# line {}: {}", number, line));
      if (name == "SHELL") {
        env.shell = value.empty() ? "/bin/sh" : value;
      } else if (name == "CRON_TZ" || name == "TZ") {
        const std::string zone = !value.empty() && value.front() == ':' ? value.substr(1) : value;
        qf::error_code ec;
        qf::ValidationError detail;
        qf::ScheduleSpec probe;
        probe.kind = qf::ScheduleKind::cron;
        probe.cron = "0 0 * * *";
        probe.time_zone = zone.empty() ? "UTC" : zone;
        if (!qf::Schedule::create(probe, "probe", ec, &detail)) {
          problem(number, fmt::format("{}: \"{}\" is not a known IANA time zone", name, zone), raw);
        } else if (name == "CRON_TZ") {
          env.cron_tz = zone;
        } else {
          env.tz = zone;
          env.variables["TZ"] = value;  // the job saw it in its environment
        }
      } else if (name == "MAILTO") {
        env.mailto = value;
        env.mailto_line = number;
      } else if (name == "RANDOM_DELAY") {
        const bool numeric = !value.empty() && value.size() <= 4 && std::all_of(value.begin(), value.end(), [](char c) {
          return std::isdigit(static_cast<unsigned char>(c));
        });
        if (!numeric || std::stoul(value) > 1440) {
          problem(number, "RANDOM_DELAY: is not a number of minutes (0-1440)", raw);
        } else {
          env.random_delay_minutes = static_cast<std::uint32_t>(std::stoul(value));
        }
      } else {
        env.variables[name] = value;
      }
      continue;
    }

    // A job: five fields or a macro, the user column (system format), the command.
    Job job;
    job.line = number;
    job.text = std::string(line);
    job.env = env;
    std::string_view rest = line;
    if (line.front() == '@') {
      auto [macro, after] = split_word(rest);
      const auto keyword = qf::detail::lower_ascii(macro);
      static const std::set<std::string> macros = {"@reboot", "@yearly", "@annually", "@monthly",
                                                   "@weekly", "@daily",  "@midnight", "@hourly"};
      if (!macros.count(keyword)) {
        flush_description_block();
        problem(number,
                fmt::format("\"{}\" is not a cron macro (@reboot, @yearly, @annually, @monthly, @weekly, "
                            "@daily, @midnight, @hourly)",
                            macro),
                raw);
        continue;
      }
      job.schedule = keyword;
      rest = after;
    } else {
      std::vector<std::string> fields;
      for (int f = 0; f < 5 && !rest.empty(); ++f) {
        auto [field, after] = split_word(rest);
        fields.emplace_back(field);
        rest = after;
      }
      if (fields.size() < 5 || rest.empty()) {
        flush_description_block();
        problem(number, "not a job (five time fields and a command), nor a NAME=value setting", raw);
        continue;
      }
      job.schedule = fmt::format("{}", fmt::join(fields, " "));
    }
    if (system) {
      auto [user, command] = split_word(rest);
      if (command.empty()) {
        flush_description_block();
        problem(number, "no command after the user column (system crontab format)", raw);
        continue;
      }
      job.user = std::string(user);
      rest = command;
    }
    if (trim(rest).empty()) {
      flush_description_block();
      problem(number, "no command", raw);
      continue;
    }
    // The schedule as QuartzFlow reads it, in the zone the job will have.
    if (job.schedule != "@reboot") {
      qf::error_code ec;
      qf::ValidationError detail;
      auto spec = qf::ScheduleSpec::from_text(job.schedule, ec, &detail);
      const std::string zone = !env.cron_tz.empty() ? env.cron_tz : !env.tz.empty() ? env.tz : options.time_zone;
      if (spec) {
        spec->time_zone = zone.empty() ? "UTC" : zone;
        if (!qf::Schedule::create(*spec, "probe", ec, &detail)) spec.reset();
      }
      if (!spec) {
        flush_description_block();
        // `schedule.cron.minute` -> `minute: 61 is out of range 0-59`
        std::string field = detail.field;
        for (const std::string_view prefix : {"schedule.cron.", "schedule.cron", "schedule."})
          if (field.rfind(prefix, 0) == 0) field.erase(0, prefix.size());
        problem(number,
                fmt::format("schedule \"{}\": {}{}", job.schedule, field.empty() ? "" : field + ": ", detail.reason),
                raw);
        continue;
      }
    }
    auto [command, input] = split_percent(trim(rest));
    if (input) {
      if (!bourne_shell(env.shell)) {
        flush_description_block();
        problem(number,
                fmt::format("%: standard input needs a Bourne-type SHELL to be given by a here-document, not {}",
                            env.shell),
                raw);
        continue;
      }
      std::string delimiter = "QF_CRON_STDIN";
      while (("\n" + *input).find("\n" + delimiter + "\n") != std::string::npos) delimiter += "_";
      job.script = fmt::format("{{\n{}\n}} <<'{}'\n{}{}", command, delimiter, *input, delimiter);
    } else {
      job.script = command;
    }
    // The comment lines right above the job describe it; a longer block is kept as comments.
    if (!description_block.empty() && description_block.size() <= k_max_description_lines) {
      std::vector<std::string> texts;
      for (const auto& c : description_block) texts.emplace_back(trim(std::string_view(c).substr(1)));
      job.description = fmt::format("{}", fmt::join(texts, " "));
      if (job.description.size() > k_max_description) {
        // Cut at a character boundary; the whole text stays as comments.
        std::size_t cut = k_max_description - 3;
        while (cut > 0 && (static_cast<unsigned char>(job.description[cut]) & 0xC0) == 0x80) --cut;
        job.description = job.description.substr(0, cut) + "...";
        for (auto& c : description_block) pending_comments.push_back(std::move(c));
      }
      description_block.clear();
    } else {
      flush_description_block();
    }
    job.comments = std::move(pending_comments);
    pending_comments.clear();
    job.comments.push_back(fmt::format("# line {}: {}", number, line));
    jobs.push_back(std::move(job));
  }
  flush_description_block();
  trailing_comments = std::move(pending_comments);

  // Names: readable, unique, valid task ids.
  std::set<std::string> taken;
  const std::string name_prefix = options.prefix.empty() ? "" : slug(options.prefix, 15) + "-";
  for (auto& job : jobs) {
    std::string stem =
        slug(name_stem(job.script.starts_with("{\n") ? job.script.substr(2) : job.script), k_max_name_stem);
    if (stem.empty()) stem = "crontab-job";
    std::string name = name_prefix + stem;
    for (int n = 2; taken.count(name); ++n) name = fmt::format("{}{}-{}", name_prefix, stem, n);
    taken.insert(name);
    job.name = std::move(name);
  }

  // What every task shares goes to `defaults`.
  auto zone_of = [&](const Job& job) {
    return !job.env.cron_tz.empty() ? job.env.cron_tz : !job.env.tz.empty() ? job.env.tz : options.time_zone;
  };
  auto user_of = [&](const Job& job) { return system ? job.user : options.user; };
  auto interpreter_of = [](const Job& job) { return job.env.shell == "/bin/sh" ? std::string() : job.env.shell; };
  auto mail_label_of = [](const Job& job) {
    return job.env.mailto && !job.env.mailto->empty() ? mail_channel_id(*job.env.mailto) : std::string();
  };
  auto common = [&](auto value_of) -> std::optional<std::string> {
    if (jobs.empty()) return std::nullopt;
    const std::string first = value_of(jobs.front());
    for (const auto& job : jobs)
      if (value_of(job) != first) return std::nullopt;
    return first;
  };
  const auto common_zone = common(zone_of);
  const auto common_user = common(user_of);
  const auto common_interpreter = common(interpreter_of);
  const auto common_mail = common(mail_label_of);
  std::map<std::string, std::string> common_env;
  if (!jobs.empty()) {
    common_env = jobs.front().env.variables;
    for (const auto& job : jobs)
      std::erase_if(common_env, [&](const auto& entry) {
        const auto found = job.env.variables.find(entry.first);
        return found == job.env.variables.end() || found->second != entry.second;
      });
  }

  // The label names the crontab, not where this copy of it lies: /etc/crontab, cron.d/NAME
  // or the file's name; standard input by the user it belongs to.
  std::string source_slug;
  if (options.source_name == "-" || options.source_name.empty()) {
    source_slug = options.user.empty() ? "stdin" : "user-" + options.user;
  } else {
    std::string_view path = options.source_name;
    const auto slash = path.find_last_of('/');
    const std::string_view base = slash == std::string_view::npos ? path : path.substr(slash + 1);
    const std::string_view parent = slash == std::string_view::npos ? std::string_view{} : path.substr(0, slash);
    if (parent.ends_with("cron.d")) {
      source_slug = "cron-d-" + std::string(base);
    } else if (base == "crontab" && parent.ends_with("etc")) {
      source_slug = "etc-crontab";
    } else {
      source_slug = std::string(base);
    }
  }
  source_slug = slug((options.prefix.empty() ? "" : options.prefix + "-") + source_slug, 63);
  if (source_slug.empty()) source_slug = "crontab";

  // --- write ---
  std::string& y = result.yaml;
  y +=
      fmt::format("# Tasks imported from the crontab {} ({}) by `qfctl import crontab`.\n",
                  options.source_name.empty() || options.source_name == "-" ? "on standard input" : options.source_name,
                  system ? "system format: a user column" : "user format");
  y += "# Apply: qfctl task apply -f THIS_FILE [--dry-run]. Importing the crontab again and applying\n";
  y += fmt::format("# with --prune --selector crontab={} removes the tasks it no longer lists.\n", source_slug);
  if (options.group.empty())
    y += "# No --group was given: the tasks belong to no group (add defaults.group_ids to run them on agents).\n";

  std::map<std::string, MailTarget> mail_targets;  // by channel id
  bool mailto_empty_seen = false;
  for (const auto& job : jobs) {
    if (!job.env.mailto) continue;
    if (job.env.mailto->empty()) {
      mailto_empty_seen = true;
      continue;
    }
    const auto id = mail_channel_id(*job.env.mailto);
    mail_targets.emplace(id, MailTarget{*job.env.mailto, job.env.mailto_line, id});
  }
  for (const auto& [id, target] : mail_targets) {
    std::vector<std::string> recipients;
    for (std::string_view rest = target.addresses; !rest.empty();) {
      const auto comma = rest.find(',');
      const auto address = trim(rest.substr(0, comma));
      if (!address.empty()) recipients.emplace_back(address);
      rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
    }
    y += fmt::format(
        "#\n# MAILTO={} (line {}): cron mailed the output of the tasks labelled crontab-mailto={}.\n"
        "# QuartzFlow keeps every run's output and e-mails failures through an alert rule on an EMAIL\n"
        "# channel, which a manifest does not hold: create them once (with your SMTP relay and sender):\n"
        "#   qfctl channel create -f - <<'EOF'\n"
        "#   id: {}\n"
        "#   type: email\n"
        "#   email: {{smtp_host: SMTP_HOST, from: SENDER_ADDRESS, to: {}}}\n"
        "#   EOF\n"
        "#   qfctl alert rule-create -f - <<'EOF'\n"
        "#   id: {}\n"
        "#   condition: run_failed\n"
        "#   scope: {{task_label_selector: \"crontab-mailto={}\"}}\n"
        "#   channel_ids: [{}]\n"
        "#   EOF\n",
        target.addresses, target.line, id, id, yaml_list(recipients), id, id, id);
  }
  if (mailto_empty_seen)
    y += "#\n# MAILTO=\"\": cron mailed nothing for the tasks under it; no alert rule is suggested for them.\n";

  y += "defaults:\n";
  std::map<std::string, std::string> labels{{"imported-from", "crontab"}, {"crontab", source_slug}};
  if (common_mail && !common_mail->empty()) labels["crontab-mailto"] = *common_mail;
  y += fmt::format("  labels: {}\n", yaml_map(labels));
  if (!options.group.empty()) y += fmt::format("  group_ids: [{}]\n", scalar(options.group));
  if (common_zone && !common_zone->empty()) y += fmt::format("  time_zone: {}\n", scalar(*common_zone));
  if (common_interpreter && !common_interpreter->empty())
    y += fmt::format("  interpreter: {}\n", yaml_list({*common_interpreter}));
  if (!common_env.empty()) y += fmt::format("  env: {}\n", yaml_map(common_env));
  if (common_user && !common_user->empty()) y += fmt::format("  run_as_user: {}\n", scalar(*common_user));

  y += jobs.empty() ? "tasks: []\n" : "tasks:\n";
  for (const auto& job : jobs) {
    for (const auto& comment : job.comments) y += "  " + comment + "\n";
    y += fmt::format("  - name: {}\n", job.name);
    if (!job.description.empty()) y += yaml_text_field(4, "description", job.description);
    const std::string zone = zone_of(job);
    const bool own_zone = !common_zone && !zone.empty();
    const std::uint32_t jitter = job.env.random_delay_minutes * 60;
    if (job.schedule == "@reboot") {
      y += "    schedule: \"@reboot\"\n";
    } else if (own_zone || jitter > 0) {
      std::string map = fmt::format("{{cron: {}", quoted(job.schedule));
      if (own_zone) map += fmt::format(", time_zone: {}", quoted(zone));
      if (jitter > 0) map += fmt::format(", jitter_seconds: {}", jitter);
      y += fmt::format("    schedule: {}}}\n", map);
    } else {
      y += fmt::format("    schedule: {}\n", quoted(job.schedule));
    }
    y += "    shell:\n";
    y += yaml_text_field(6, "script", job.script);
    if (!common_interpreter && !interpreter_of(job).empty())
      y += fmt::format("      interpreter: {}\n", yaml_list({interpreter_of(job)}));
    std::map<std::string, std::string> own_env;
    for (const auto& [name, value] : job.env.variables)
      if (!common_env.count(name)) own_env[name] = value;
    if (!own_env.empty()) y += fmt::format("      env: {}\n", yaml_map(own_env));
    if (!common_user && !user_of(job).empty()) y += fmt::format("      run_as_user: {}\n", scalar(user_of(job)));
    if (!common_mail && !mail_label_of(job).empty())
      y += fmt::format("    labels: {}\n", yaml_map({{"crontab-mailto", mail_label_of(job)}}));
  }
  for (const auto& comment : trailing_comments) y += (jobs.empty() ? "" : "  ") + comment + "\n";
  result.task_count = jobs.size();
  return result;
}

}  // namespace qfctl
