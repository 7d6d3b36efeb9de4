// SPDX-License-Identifier: Apache-2.0
// `qfctl task apply -f FILE_OR_DIR [--dry-run] [--prune --selector S | --prune-group G]`: task
// manifests (the coordinator's manifest_file format) made true through the admin API,
// declaratively: groups by name, tasks by id else name; what already matches is left alone;
// --prune deletes the tasks of its scope the manifests no longer list; --dry-run shows the plan.
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include <fmt/format.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/util/message_differencer.h>

#include <quartzflow/catalog.hpp>
#include <quartzflow/v1/admin.pb.h>
#include <quartzflow/v1/config.pb.h>
#include <quartzflow/yaml_config.hpp>

#include "api.hpp"
#include "commands.hpp"

namespace qfctl {
namespace {

namespace fs = std::filesystem;
namespace pb = google::protobuf;
namespace qf = quartzflow;
namespace v1 = quartzflow::v1;

struct ApplyArgs {
  std::string path;
  bool dry_run = false;
  bool force = false;
  bool prune = false;
  std::string prune_selector;  ///< label selector of the tasks --prune may delete
  std::string prune_group;     ///< group (id or name) of the tasks --prune may delete
};

/// The manifest files `path` names: itself, or the *.yaml and *.yml files of a directory, sorted.
std::vector<std::string> manifest_files(const std::string& path) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return {path};
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(path, ec)) {
    const auto extension = entry.path().extension().string();
    if (entry.is_regular_file(ec) && (extension == ".yaml" || extension == ".yml")) files.push_back(entry.path().string());
  }
  if (ec) throw CommandFailure{k_exit_invalid_input, fmt::format("{}: {}", path, ec.message())};
  std::sort(files.begin(), files.end());
  if (files.empty()) throw CommandFailure{k_exit_invalid_input, fmt::format("{}: no .yaml or .yml files in it", path)};
  return files;
}

/// One object of the manifests, where it was written, and what is stored under its name.
template <typename Message>
struct Entry {
  Message wanted;
  std::string origin;  ///< `file.yaml: tasks[2]`
  std::optional<Message> stored;
};

/// What apply does to one object.
struct Change {
  enum class Kind { create, update, unchanged, remove } kind;
  std::string label;                  ///< `task report`
  std::vector<std::string> details;   ///< changed fields, for updates
};

std::string marker(Change::Kind kind) {
  switch (kind) {
    case Change::Kind::create: return "+";
    case Change::Kind::update: return "~";
    case Change::Kind::unchanged: return "=";
    case Change::Kind::remove: return "-";
  }
  return "?";
}

/// Fetches every page of a list endpoint.
template <typename Response>
std::vector<typename std::decay_t<decltype(std::declval<Response>().items(0))>> list_all(ApiClient& api,
                                                                                        std::string_view path) {
  std::vector<typename std::decay_t<decltype(std::declval<Response>().items(0))>> all;
  for (std::uint32_t page = 1;; ++page) {
    const auto listing = api.get<Response>(path, {{"page", std::to_string(page)}, {"page_size", "500"}});
    for (const auto& item : listing.items()) all.push_back(item);
    if (listing.items().empty() || all.size() >= listing.total()) break;
  }
  return all;
}

/// The differences of `wanted` from `stored`, one line each: `timeout_seconds: 10 -> 20`,
/// `added: labels[...]`. Empty when they are equivalent.
std::vector<std::string> describe_changes(const pb::Message& stored, const pb::Message& wanted) {
  std::string report;
  {
    pb::io::StringOutputStream stream(&report);
    pb::util::MessageDifferencer::StreamReporter reporter(&stream);
    reporter.SetMessages(stored, wanted);
    pb::util::MessageDifferencer differ;
    // An absent sub-message and one with only default values say the same thing.
    differ.set_message_field_comparison(pb::util::MessageDifferencer::EQUIVALENT);
    differ.ReportDifferencesTo(&reporter);
    differ.Compare(stored, wanted);
  }
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < report.size()) {
    auto end = report.find('\n', start);
    if (end == std::string::npos) end = report.size();
    std::string line = report.substr(start, end - start);
    // `modified: timeout_seconds: 10 -> 20` reads as `timeout_seconds: 10 -> 20`.
    if (line.rfind("modified: ", 0) == 0) line.erase(0, 10);
    if (!line.empty()) lines.push_back(std::move(line));
    start = end + 1;
  }
  return lines;
}

template <typename Message>
Change plan_change(Entry<Message>& entry, const std::string& label) {
  if (!entry.stored) return {Change::Kind::create, label, {}};
  auto wanted = entry.wanted;
  auto stored = *entry.stored;
  qf::clear_output_fields(wanted);
  qf::clear_output_fields(stored);
  auto details = describe_changes(stored, wanted);
  if (details.empty()) return {Change::Kind::unchanged, label, {}};
  return {Change::Kind::update, label, std::move(details)};
}

void run_apply(const ApiFlags& flags, const ApplyArgs& args) {
  // --prune deletes: only within a scope the user names, so other teams' tasks are never touched.
  if (args.prune && args.prune_selector.empty() && args.prune_group.empty())
    throw CommandFailure{k_exit_invalid_input,
                         "--prune: needs --selector KEY=VALUE[,...] or --prune-group GROUP: the tasks it may delete"};
  if (!args.prune && (!args.prune_selector.empty() || !args.prune_group.empty()))
    throw CommandFailure{k_exit_invalid_input, "--selector and --prune-group only scope --prune"};
  // Read and validate every file before asking the server anything.
  std::vector<Entry<v1::Group>> groups;
  std::vector<Entry<v1::Task>> tasks;
  for (const auto& file : manifest_files(args.path)) {
    v1::TaskManifest manifest;
    qf::YamlError error;
    if (!qf::load_task_manifest(file, manifest, error)) throw CommandFailure{k_exit_invalid_input, error.message()};
    for (int i = 0; i < manifest.groups_size(); ++i)
      groups.push_back({manifest.groups(i), fmt::format("{}: groups[{}]", file, i), std::nullopt});
    for (int i = 0; i < manifest.tasks_size(); ++i)
      tasks.push_back({manifest.tasks(i), fmt::format("{}: tasks[{}]", file, i), std::nullopt});
  }
  {
    std::map<std::string, std::string> seen;
    for (const auto& g : groups)
      if (auto [at, fresh] = seen.emplace("group " + g.wanted.name(), g.origin); !fresh)
        throw CommandFailure{k_exit_invalid_input,
                             fmt::format("{}: name: group \"{}\" is also defined at {}", g.origin, g.wanted.name(), at->second)};
    for (const auto& t : tasks)
      if (auto [at, fresh] = seen.emplace("task " + t.wanted.id(), t.origin); !fresh)
        throw CommandFailure{k_exit_invalid_input,
                             fmt::format("{}: id: task \"{}\" is also defined at {}", t.origin, t.wanted.id(), at->second)};
  }

  auto api = ApiClient::from_flags(flags);
  // Groups by name; references in tasks by id or name.
  std::map<std::string, std::string> group_ids;  // id or name -> id
  std::map<std::string, v1::Group> stored_by_name;
  for (const auto& summary : list_all<v1::ListGroupsResponse>(api, "/groups")) {
    group_ids[summary.group().name()] = summary.group().id();
    group_ids[summary.group().id()] = summary.group().id();
    stored_by_name[summary.group().name()] = summary.group();
  }
  for (auto& g : groups) {
    if (const auto found = stored_by_name.find(g.wanted.name()); found != stored_by_name.end()) {
      g.stored = found->second;
      g.wanted.set_id(found->second.id());
      g.wanted.set_revision(found->second.revision());
    } else if (g.wanted.id().empty()) {
      g.wanted.set_id(g.wanted.name());  // as the coordinator does
    }
    group_ids[g.wanted.name()] = g.wanted.id();
    group_ids[g.wanted.id()] = g.wanted.id();
  }
  for (auto& t : tasks) {
    for (int i = 0; i < t.wanted.group_ids_size(); ++i) {
      const auto found = group_ids.find(t.wanted.group_ids(i));
      if (found == group_ids.end())
        throw CommandFailure{k_exit_invalid_input, fmt::format("{}.group_ids[{}]: no group with id or name \"{}\"",
                                                               t.origin, i, t.wanted.group_ids(i))};
      t.wanted.set_group_ids(i, found->second);
    }
    // By id (a manifest task without one has its name as id), else by name.
    try {
      t.stored = api.get<v1::TaskSummary>("/tasks/" + url_encode(t.wanted.id())).task();
    } catch (const ApiCallFailure& failure) {
      if (failure.http_status != 404) throw;
      const auto listing = api.get<v1::ListTasksResponse>("/tasks", {{"keyword", t.wanted.name()}, {"page_size", "500"}});
      for (const auto& s : listing.items())
        if (s.task().name() == t.wanted.name()) t.stored = s.task();
    }
    if (t.stored) {
      t.wanted.set_id(t.stored->id());
      t.wanted.set_revision(t.stored->revision());
    }
  }

  // The tasks of the prune scope that no manifest lists (by id, once resolved).
  std::vector<v1::Task> to_delete;
  if (args.prune) {
    Query query{{"page_size", "500"}};
    if (!args.prune_selector.empty()) query.push_back({"label_selector", args.prune_selector});
    if (!args.prune_group.empty()) {
      const auto found = group_ids.find(args.prune_group);
      if (found == group_ids.end())
        throw CommandFailure{k_exit_invalid_input,
                             fmt::format("--prune-group: no group with id or name \"{}\"", args.prune_group)};
      query.push_back({"group_id", found->second});
    }
    std::set<std::string> listed;
    for (const auto& t : tasks) listed.insert(t.wanted.id());
    for (std::uint32_t page = 1;; ++page) {
      Query paged = query;
      paged.push_back({"page", std::to_string(page)});
      const auto listing = api.get<v1::ListTasksResponse>("/tasks", paged);
      for (const auto& s : listing.items())
        if (!listed.count(s.task().id())) to_delete.push_back(s.task());
      if (listing.items().empty() || static_cast<std::uint64_t>(page) * 500 >= listing.total()) break;
    }
  }

  std::vector<Change> plan;
  for (auto& g : groups) plan.push_back(plan_change(g, "group " + g.wanted.name()));
  for (auto& t : tasks) plan.push_back(plan_change(t, "task " + t.wanted.name()));
  for (const auto& t : to_delete) plan.push_back({Change::Kind::remove, "task " + t.name(), {}});
  const auto count = [&](Change::Kind kind) {
    return std::count_if(plan.begin(), plan.end(), [kind](const Change& c) { return c.kind == kind; });
  };
  const auto print_change = [](const Change& change, std::string_view note) {
    std::string text = fmt::format("{} {}{}\n", marker(change.kind), change.label, note);
    for (const auto& line : change.details) text += "    " + line + "\n";
    std::cout << text << std::flush;
  };

  if (args.dry_run) {
    for (const auto& change : plan) print_change(change, change.kind == Change::Kind::unchanged ? " unchanged" : "");
    std::cout << fmt::format("dry run: {} to create, {} to change, {} unchanged{}; nothing was changed\n",
                             count(Change::Kind::create), count(Change::Kind::update), count(Change::Kind::unchanged),
                             args.prune ? fmt::format(", {} to delete", count(Change::Kind::remove)) : "");
    return;
  }

  const Query force = args.force ? Query{{"force", "true"}} : Query{};
  std::size_t index = 0;
  const auto apply_one = [&](auto& entry, std::string_view collection) {
    const auto& change = plan[index++];
    try {
      using Message = std::decay_t<decltype(entry.wanted)>;
      const std::string path = fmt::format("/{}", collection);
      if (change.kind == Change::Kind::create) {
        api.post<Message>(path, &entry.wanted);
        print_change(change, " created");
      } else if (change.kind == Change::Kind::update) {
        api.put<Message>(path + "/" + url_encode(entry.wanted.id()), entry.wanted,
                         collection == "tasks" ? force : Query{});
        print_change(change, " updated");
      } else {
        print_change(change, " unchanged");
      }
    } catch (CommandFailure& failure) {
      failure.message = fmt::format("{} ({}): {}\nstopped: the objects above were applied, the rest were not",
                                    change.label, entry.origin, failure.message);
      throw;
    }
  };
  for (auto& g : groups) apply_one(g, "groups");
  for (auto& t : tasks) apply_one(t, "tasks");
  // Deletions last: a failed create or update above leaves every task in place.
  for (const auto& t : to_delete) {
    const auto& change = plan[index++];
    try {
      api.remove("/tasks/" + url_encode(t.id()));
    } catch (CommandFailure& failure) {
      failure.message = fmt::format("{}: {}\nstopped: the objects above were applied, the rest were not", change.label,
                                    failure.message);
      throw;
    }
    print_change(change, " deleted");
  }
  std::cout << fmt::format("applied: {} created, {} changed, {} unchanged{}\n", count(Change::Kind::create),
                           count(Change::Kind::update), count(Change::Kind::unchanged),
                           args.prune ? fmt::format(", {} deleted", count(Change::Kind::remove)) : "");
}

}  // namespace

void add_task_apply_command(CLI::App& task, std::shared_ptr<ApiFlags> flags) {
  auto args = std::make_shared<ApplyArgs>();
  auto* apply = task.add_subcommand(
      "apply", "create or update groups and tasks from task manifests (groups: and tasks:, as manifest_file); "
               "objects that already match are left alone");
  apply->add_option("-f,--file", args->path, "a manifest file, or a directory of *.yaml / *.yml manifests")->required();
  apply->add_flag("--dry-run", args->dry_run, "print what would change (+ create, ~ change, = unchanged) and change nothing");
  apply->add_flag("--force", args->force, "update tasks even while runs of them are in progress");
  apply->add_flag("--prune", args->prune,
                  "delete the tasks of the scope (--selector and/or --prune-group, one is required) that the "
                  "manifests do not list; --dry-run shows them as - lines");
  apply->add_option("--selector", args->prune_selector, "--prune: only tasks whose labels match KEY=VALUE[,KEY=VALUE]");
  apply->add_option("--prune-group", args->prune_group, "--prune: only tasks of this group (id or name)");
  apply->callback([flags, args] { run_apply(*flags, *args); });
}

}  // namespace qfctl
