// SPDX-License-Identifier: Apache-2.0
// apply_manifest: a TaskManifest turned into catalog operations of a Coordinator (groups by
// name, tasks by id else name), planned in one read so a bad reference changes nothing.
#include <map>
#include <memory>
#include <set>

#include <fmt/format.h>
#include <google/protobuf/util/message_differencer.h>

#include <quartzflow/coordinator.hpp>

namespace quartzflow {
namespace {

/// One catalog operation of the plan, with the manifest field it comes from.
struct Step {
  std::string field;  ///< `groups[1]` or `tasks[0]`
  std::string label;  ///< `group web`
  bool create = false;
  std::optional<v1::Group> group;
  std::optional<v1::Task> task;
};

/// What is stored, read once: lookups by id and by name.
struct Stored {
  std::vector<std::optional<v1::Group>> groups;             ///< per manifest group, by name
  std::vector<std::optional<v1::Task>> tasks;               ///< per manifest task, by id else name
  std::map<std::string, std::string> group_ids_by_reference;  ///< id or name -> id
};

template <typename Message>
bool same_content(Message wanted, Message stored) {
  clear_output_fields(wanted);
  clear_output_fields(stored);
  return google::protobuf::util::MessageDifferencer::Equals(wanted, stored);
}

/// Runs the steps one after the other; the first failure ends the walk.
struct Applier : std::enable_shared_from_this<Applier> {
  Coordinator& coordinator;
  Actor actor;
  bool force;
  std::vector<Step> steps;
  ManifestApplyResult result;
  std::function<void(ManifestApplyResult)> done;

  Applier(Coordinator& c, Actor a, bool f) : coordinator(c), actor(std::move(a)), force(f) {}

  void next(std::size_t index) {
    if (index == steps.size()) return done(std::move(result));
    auto& step = steps[index];
    auto finish = [self = shared_from_this(), index](auto outcome) {
      auto& current = self->steps[index];
      if (!outcome) {
        self->result.ec = outcome.ec;
        self->result.error = outcome.error;
        self->result.error.input = current.label;
        self->result.error.field =
            outcome.error.field.empty() ? current.field : current.field + "." + outcome.error.field;
        return self->done(std::move(self->result));
      }
      (current.create ? self->result.value.created : self->result.value.updated).push_back(current.label);
      self->next(index + 1);
    };
    if (step.group) {
      if (step.create) return coordinator.create_group(*step.group, actor, finish);
      return coordinator.update_group(*step.group, actor, finish);
    }
    if (step.create) return coordinator.create_task(*step.task, actor, finish);
    coordinator.update_task(*step.task, force, actor, finish);
  }
};

}  // namespace

void apply_manifest(Coordinator& coordinator, const v1::TaskManifest& manifest, Actor actor, bool force,
                    std::function<void(ManifestApplyResult)> done) {
  auto applier = std::make_shared<Applier>(coordinator, std::move(actor), force);
  applier->done = std::move(done);

  // Shared by the read and its completion (arguments of one call: no move from one to the other).
  const auto groups =
      std::make_shared<const std::vector<v1::Group>>(manifest.groups().begin(), manifest.groups().end());
  const auto tasks = std::make_shared<const std::vector<v1::Task>>(manifest.tasks().begin(), manifest.tasks().end());

  auto stored = std::make_shared<Stored>();
  coordinator.store().read(
      [stored, groups, tasks](StoreTransaction& tx, error_code&) {
        for (const auto& group : *groups) stored->groups.push_back(tx.group_by_name(group.name()));
        for (const auto& task : *tasks) {
          auto found = task.id().empty() ? std::nullopt : tx.task(task.id());
          stored->tasks.push_back(found ? found : tx.task_by_name(task.name()));
          for (const auto& reference : task.group_ids()) {
            if (stored->group_ids_by_reference.count(reference)) continue;
            if (auto by_id = tx.group(reference)) stored->group_ids_by_reference[reference] = by_id->id();
            else if (auto by_name = tx.group_by_name(reference)) stored->group_ids_by_reference[reference] = by_name->id();
          }
        }
      },
      [applier, stored, groups, tasks](error_code ec) {
        auto& result = applier->result;
        if (ec) {
          result.ec = ec;
          result.error = ValidationError{"manifest", "", fmt::format("reading the catalog failed: {}", ec.message())};
          return applier->done(std::move(result));
        }
        // Manifest groups first: a task may name a group the manifest creates.
        std::map<std::string, std::string> ids = stored->group_ids_by_reference;
        std::set<std::string> group_names;
        for (std::size_t i = 0; i < groups->size(); ++i) {
          auto group = (*groups)[i];
          const auto& existing = stored->groups[i];
          Step step{fmt::format("groups[{}]", i), fmt::format("group {}", group.name()), !existing, {}, {}};
          if (existing) group.set_id(existing->id());
          if (group.id().empty()) group.set_id(group.name());
          std::optional<ValidationError> problem = validate_group(group);
          if (!problem && !group_names.insert(group.name()).second)
            problem = ValidationError{"", "name", fmt::format("\"{}\" appears twice in the manifest", group.name())};
          if (problem) {
            result.ec = errc::invalid_argument;
            result.error = ValidationError{step.label, problem->field.empty() ? step.field : step.field + "." + problem->field,
                                           problem->reason};
            applier->steps.clear();
            return applier->done(std::move(result));
          }
          ids[group.id()] = group.id();
          ids[group.name()] = group.id();
          if (existing && same_content(group, *existing)) {
            result.value.unchanged.push_back(step.label);
            continue;
          }
          step.group = std::move(group);
          applier->steps.push_back(std::move(step));
        }
        for (std::size_t i = 0; i < tasks->size(); ++i) {
          auto task = (*tasks)[i];
          const auto& existing = stored->tasks[i];
          Step step{fmt::format("tasks[{}]", i), fmt::format("task {}", task.name()), !existing, {}, {}};
          for (int g = 0; g < task.group_ids_size(); ++g) {
            const auto found = ids.find(task.group_ids(g));
            if (found == ids.end()) {
              result.ec = errc::invalid_argument;
              result.error = ValidationError{step.label, fmt::format("{}.group_ids[{}]", step.field, g),
                                             fmt::format("no group with id or name \"{}\"", task.group_ids(g))};
              applier->steps.clear();
              return applier->done(std::move(result));
            }
            task.set_group_ids(g, found->second);
          }
          if (existing) {
            task.set_id(existing->id());
            task.set_revision(existing->revision());
            if (same_content(task, *existing)) {
              result.value.unchanged.push_back(step.label);
              continue;
            }
          }
          step.task = std::move(task);
          applier->steps.push_back(std::move(step));
        }
        applier->next(0);
      });
}

}  // namespace quartzflow
