// SPDX-License-Identifier: Apache-2.0
// Catalog: the operations an operator performs on tasks, groups and agents. Each one is
// validated, runs in one Store transaction, bumps the config version and leaves an audit
// entry; nothing changes when it fails.
#pragma once

#include <algorithm>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <quartzflow/error.hpp>
#include <quartzflow/store.hpp>
#include <quartzflow/v1/admin.pb.h>
#include <quartzflow/v1/agent.pb.h>
#include <quartzflow/v1/group.pb.h>
#include <quartzflow/v1/task.pb.h>

namespace quartzflow {

/// Who performs an operation, for the audit log.
struct Actor {
  std::string name = "system";  ///< username or `system`
  std::string address{};        ///< where the request came from (IP), if any
  v1::ActorKind kind = v1::ACTOR_KIND_SYSTEM;
  std::string token_name{};     ///< the API token used, if any
  std::string user_agent{};
  std::string request_id{};
};

/// The outcome of a catalog operation (the library's one result type, see `Result`).
template <typename T>
using CatalogResult = Result<T>;

/// Whether `agent` must hold `task`: a task for all agents, or one bound to the agent's
/// group. The one rule for the catalog, the dispatcher's config sync and its routing.
inline bool task_bound_to_agent(const v1::Task& task, const v1::Agent& agent) {
  return task.all_agents() || (!agent.group_id().empty() && std::find(task.group_ids().begin(), task.group_ids().end(),
                                                                      agent.group_id()) != task.group_ids().end());
}

/// The tasks an agent must hold: global tasks and those bound to its group.
std::vector<v1::Task> tasks_for_agent(const v1::Agent& agent, const std::vector<v1::Task>& tasks);

/**
 * The group an agent belongs to at registration: the group it was manually moved to, else
 * the group named in its own configuration (`configured_group`, id or name), else the
 * first membership rule that matches (highest priority first, then group name): any of the
 * agent's IPs in a CIDR, its hostname matching a glob, or all labels of a selector.
 * Empty when nothing matches.
 */
std::string resolve_group(const v1::Agent& agent, std::string_view configured_group,
                          const std::vector<v1::Group>& groups);

/// What an agent must change to go from `held` (task id -> revision) to `wanted`.
struct ConfigChange {
  std::vector<v1::Task> upserts;       ///< new tasks and tasks with a new revision
  std::vector<std::string> removals;   ///< ids the agent holds that it must drop
  bool empty() const noexcept { return upserts.empty() && removals.empty(); }
};
ConfigChange config_change(const std::vector<std::pair<std::string, std::int64_t>>& held,
                           const std::vector<v1::Task>& wanted);

/// What a batch task operation did (Catalog::batch_tasks).
struct BatchTaskOutcome {
  std::vector<v1::Task> tasks;         ///< ENABLE/DISABLE: each task after the change, in request order
  std::vector<std::string> deleted;    ///< DELETE: the ids removed, in request order
  std::uint64_t config_version = 0;    ///< after the change (unchanged when nothing changed)
};

/**
 * Catalog operations over a Store. Completions run on the Store's executor.
 * Thread safety: may be used from any thread (the Store serializes the transactions).
 */
class Catalog {
 public:
  explicit Catalog(Store& store) : store_(store) {}

  using TaskHandler = std::function<void(CatalogResult<v1::Task>)>;
  using GroupHandler = std::function<void(CatalogResult<v1::Group>)>;
  using DoneHandler = std::function<void(CatalogResult<std::uint64_t>)>;  ///< the new config version

  /// Validates every field; the name must be unique and the groups must exist. An empty id
  /// becomes the name. Sets revision 1, timestamps and created_by.
  void create_task(v1::Task task, Actor actor, TaskHandler done);
  /// Replaces a task (by id). Refused while a run is PENDING or RUNNING unless `force`;
  /// the error names the running executions. Increments the revision.
  void update_task(v1::Task task, bool force, Actor actor, TaskHandler done);
  void delete_task(std::string id, Actor actor, DoneHandler done);
  void set_task_enabled(std::string id, bool enabled, Actor actor, TaskHandler done);
  /**
   * Enables, disables or deletes several tasks in one transaction: all or nothing. Unknown
   * ids fail it with errc::not_found naming every one (`task_ids[2]: no task with id "x"`,
   * joined by `; `); the other actions (TRIGGER) fail with errc::invalid_argument. Each task
   * changed gets its own audit entry (`task.enable`...) and the batch one `task.batch`.
   */
  void batch_tasks(std::vector<std::string> ids, v1::BatchTaskAction action, Actor actor,
                   std::function<void(CatalogResult<BatchTaskOutcome>)> done);

  /// Groups: unique names; membership rules validated (CIDRs, globs, labels).
  void create_group(v1::Group group, Actor actor, GroupHandler done);
  /// Replaces name, description, tags and membership; bindings follow (they are by id).
  void update_group(v1::Group group, Actor actor, GroupHandler done);
  /// Refused while tasks are bound to the group; the error names them.
  void delete_group(std::string id, Actor actor, DoneHandler done);
  /// Moves agents to a group by hand (the assignment then sticks over rules).
  void move_agents(std::vector<std::string> agent_ids, std::string group_id, Actor actor, DoneHandler done);
  /// Removes the record of an agent that is gone (its executions and daily stats stay);
  /// errc::conflict while the store has it ONLINE. An agent that connects again registers
  /// anew. Audited as `agent.delete`.
  void delete_agent(std::string id, Actor actor, DoneHandler done);

 private:
  Store& store_;
};

/// An audit entry of `actor` doing `action` (`task.update`...) on a target, at the current
/// time, with the object before and after as protobuf JSON (secrets must not be in them);
/// the caller appends it (StoreTransaction::append_audit).
v1::AuditEntry make_audit_entry(const Actor& actor, std::string action, std::string target_type,
                                std::string target_id, std::string target_name, bool success = true,
                                std::string detail = {}, const google::protobuf::Message* before = nullptr,
                                const google::protobuf::Message* after = nullptr);

/// Clears the fields the coordinator sets (revisions, timestamps, authors, derived names),
/// so a stored object compares equal to the manifest entry it came from.
void clear_output_fields(v1::Group& group);
void clear_output_fields(v1::Task& task);

/// Checks a group: id/name syntax, CIDRs, globs, label selectors. nullopt when valid.
std::optional<ValidationError> validate_group(const v1::Group& group);

}  // namespace quartzflow
