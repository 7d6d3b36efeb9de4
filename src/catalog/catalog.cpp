// SPDX-License-Identifier: Apache-2.0
// Catalog operations: validate, change in one transaction, bump the config version, audit.
#include <chrono>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <google/protobuf/util/json_util.h>

#include <quartzflow/catalog.hpp>
#include <quartzflow/task.hpp>

#include "../common/clock.hpp"

namespace quartzflow {
namespace {

std::string json_of(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  return out;
}

/// Fails a result with a code and a field/reason; the transaction then rolls back.
template <typename T>
void fail(CatalogResult<T>& result, errc code, std::string input, std::string field, std::string reason) {
  result.ec = code;
  result.error = {std::move(input), std::move(field), std::move(reason)};
}

void audit(StoreTransaction& tx, const Actor& actor, std::string action, std::string type, std::string id,
           std::string name, const google::protobuf::Message* before, const google::protobuf::Message* after) {
  tx.append_audit(
      make_audit_entry(actor, std::move(action), std::move(type), std::move(id), std::move(name), true, {}, before, after));
}

/// Runs `body` in one transaction; a failure it reports (or a storage error) changes nothing.
template <typename T, typename Body>
void run(Store& store, Body body, std::function<void(CatalogResult<T>)> done) {
  auto result = std::make_shared<CatalogResult<T>>();
  store.transact(
      [result, body = std::move(body)](StoreTransaction& tx, error_code& ec) mutable {
        body(tx, *result);
        ec = result->ec;
      },
      [result, done = std::move(done)](error_code ec) {
        if (ec && !result->ec) {
          result->ec = ec;
          result->error = {"request", "", ec.message()};
        }
        done(std::move(*result));
      });
}

/// Ids for an audit entry's target: all of them, or the first ones and how many (a batch
/// may name 1,000 ids).
std::string ids_text(const std::vector<std::string>& ids) {
  std::string out;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (out.size() > 200) return fmt::format("{}... ({} ids)", out, ids.size());
    out += (i ? "," : "") + ids[i];
  }
  return out;
}

/// Every group a task names must exist.
bool groups_exist(StoreTransaction& tx, const v1::Task& task, CatalogResult<v1::Task>& result) {
  for (int i = 0; i < task.group_ids_size(); ++i) {
    if (!tx.group(task.group_ids(i))) {
      fail(result, errc::invalid_argument, fmt::format("task \"{}\"", task.name()), fmt::format("group_ids[{}]", i),
           fmt::format("no group with id \"{}\"", task.group_ids(i)));
      return false;
    }
  }
  return true;
}

/// PENDING or RUNNING executions of a task (what blocks an update without force).
std::vector<std::string> active_runs(StoreTransaction& tx, const std::string& task_id) {
  v1::ListExecutionsRequest request;
  request.set_task_id(task_id);
  request.add_status(v1::EXECUTION_STATUS_PENDING);
  request.add_status(v1::EXECUTION_STATUS_RUNNING);
  request.set_page_size(20);
  std::vector<std::string> ids;
  for (const auto& e : tx.list_executions(request).items) ids.push_back(e.execution_id());
  return ids;
}

}  // namespace

void Catalog::create_task(v1::Task task, Actor actor, TaskHandler done) {
  run<v1::Task>(
      store_,
      [task = std::move(task), actor](StoreTransaction& tx, CatalogResult<v1::Task>& result) mutable {
        if (task.id().empty()) task.set_id(task.name());
        if (!task.has_enabled()) task.set_enabled(true);  // a new task runs unless it says otherwise
        if (auto problem = validate_task(task)) {
          result.ec = errc::invalid_argument;
          result.error = std::move(*problem);
          return;
        }
        const std::string input = fmt::format("task \"{}\"", task.name());
        if (tx.task(task.id()))
          return fail(result, errc::conflict, input, "id", fmt::format("\"{}\" is already used by another task", task.id()));
        if (auto other = tx.task_by_name(task.name()))
          return fail(result, errc::conflict, input, "name",
                      fmt::format("\"{}\" is already used by task \"{}\"", task.name(), other->id()));
        if (!groups_exist(tx, task, result)) return;
        const auto now = detail::now_unix_ms();
        task.set_revision(1);
        task.set_created_at_unix_ms(now);
        task.set_updated_at_unix_ms(now);
        task.set_created_by(actor.name);
        task.set_updated_by(actor.name);
        task.set_config_version(static_cast<std::int64_t>(tx.bump_config_version("task.create " + task.id())));
        tx.record_config_change(static_cast<std::uint64_t>(task.config_version()), ConfigTarget::task, task.id());
        tx.put_task(task);
        audit(tx, actor, "task.create", "task", task.id(), task.name(), nullptr, &task);
        result.value = std::move(task);
      },
      std::move(done));
}

void Catalog::update_task(v1::Task task, bool force, Actor actor, TaskHandler done) {
  run<v1::Task>(
      store_,
      [task = std::move(task), force, actor](StoreTransaction& tx, CatalogResult<v1::Task>& result) mutable {
        const std::string input = fmt::format("task \"{}\"", task.name());
        auto before = tx.task(task.id());
        if (!before) return fail(result, errc::not_found, input, "id", fmt::format("no task with id \"{}\"", task.id()));
        if (!task.has_enabled()) task.set_enabled(before->enabled());  // an edit that does not say keeps it
        if (auto problem = validate_task(task)) {
          result.ec = errc::invalid_argument;
          result.error = std::move(*problem);
          return;
        }
        if (auto other = tx.task_by_name(task.name()); other && other->id() != task.id())
          return fail(result, errc::conflict, input, "name",
                      fmt::format("\"{}\" is already used by task \"{}\"", task.name(), other->id()));
        if (!groups_exist(tx, task, result)) return;
        if (!force) {
          if (auto running = active_runs(tx, task.id()); !running.empty())
            return fail(result, errc::conflict, input, "id",
                        fmt::format("runs are in progress: {} (update with force to apply anyway)",
                                    fmt::join(running, ", ")));
        }
        task.set_revision(before->revision() + 1);
        task.set_created_at_unix_ms(before->created_at_unix_ms());
        task.set_created_by(before->created_by());
        task.set_updated_at_unix_ms(detail::now_unix_ms());
        task.set_updated_by(actor.name);
        task.set_config_version(static_cast<std::int64_t>(tx.bump_config_version("task.update " + task.id())));
        tx.record_config_change(static_cast<std::uint64_t>(task.config_version()), ConfigTarget::task, task.id());
        tx.put_task(task);
        audit(tx, actor, "task.update", "task", task.id(), task.name(), &*before, &task);
        result.value = std::move(task);
      },
      std::move(done));
}

void Catalog::delete_task(std::string id, Actor actor, DoneHandler done) {
  run<std::uint64_t>(
      store_,
      [id = std::move(id), actor](StoreTransaction& tx, CatalogResult<std::uint64_t>& result) {
        auto before = tx.task(id);
        if (!before) return fail(result, errc::not_found, "task", "id", fmt::format("no task with id \"{}\"", id));
        tx.delete_task(id);
        result.value = tx.bump_config_version("task.delete " + id);
        tx.record_config_change(result.value, ConfigTarget::task, id);
        audit(tx, actor, "task.delete", "task", id, before->name(), &*before, nullptr);
      },
      std::move(done));
}

void Catalog::set_task_enabled(std::string id, bool enabled, Actor actor, TaskHandler done) {
  run<v1::Task>(
      store_,
      [id = std::move(id), enabled, actor](StoreTransaction& tx, CatalogResult<v1::Task>& result) {
        auto task = tx.task(id);
        if (!task) return fail(result, errc::not_found, "task", "id", fmt::format("no task with id \"{}\"", id));
        if (task->enabled() == enabled) {  // nothing to change: no new version, no push
          result.value = std::move(*task);
          return;
        }
        const v1::Task before = *task;
        task->set_enabled(enabled);
        task->set_revision(task->revision() + 1);
        task->set_updated_at_unix_ms(detail::now_unix_ms());
        task->set_updated_by(actor.name);
        task->set_config_version(static_cast<std::int64_t>(
            tx.bump_config_version(fmt::format("task.{} {}", enabled ? "enable" : "disable", id))));
        tx.record_config_change(static_cast<std::uint64_t>(task->config_version()), ConfigTarget::task, id);
        tx.put_task(*task);
        audit(tx, actor, enabled ? "task.enable" : "task.disable", "task", id, task->name(), &before, &*task);
        result.value = std::move(*task);
      },
      std::move(done));
}

void Catalog::batch_tasks(std::vector<std::string> ids, v1::BatchTaskAction action, Actor actor,
                          std::function<void(CatalogResult<BatchTaskOutcome>)> done) {
  run<BatchTaskOutcome>(
      store_,
      [ids = std::move(ids), action, actor](StoreTransaction& tx, CatalogResult<BatchTaskOutcome>& result) {
        const bool deleting = action == v1::BATCH_TASK_ACTION_DELETE;
        if (!deleting && action != v1::BATCH_TASK_ACTION_ENABLE && action != v1::BATCH_TASK_ACTION_DISABLE)
          return fail(result, errc::invalid_argument, "batch", "action",
                      fmt::format("{} is not a batch action: use ENABLE, DISABLE or DELETE",
                                  v1::BatchTaskAction_Name(action)));
        // Every id is checked before anything changes, and every unknown one is named.
        std::vector<v1::Task> tasks;
        std::vector<std::string> unknown;
        for (std::size_t i = 0; i < ids.size(); ++i) {
          auto task = tx.task(ids[i]);
          if (!task) unknown.push_back(fmt::format("task_ids[{}]: no task with id \"{}\"", i, ids[i]));
          else tasks.push_back(std::move(*task));
        }
        if (!unknown.empty())
          return fail(result, errc::not_found, "batch", "task_ids", fmt::format("{}", fmt::join(unknown, "; ")));
        const bool enable = action == v1::BATCH_TASK_ACTION_ENABLE;
        const char* verb = deleting ? "delete" : enable ? "enable" : "disable";
        std::vector<std::string> changed;
        std::uint64_t version = 0;
        const auto bump = [&] {
          if (version == 0)
            version = tx.bump_config_version(fmt::format("task.batch {} {} task(s)", verb, tasks.size()));
          return version;
        };
        for (auto& task : tasks) {
          if (deleting) {
            tx.delete_task(task.id());
            tx.record_config_change(bump(), ConfigTarget::task, task.id());
            audit(tx, actor, "task.delete", "task", task.id(), task.name(), &task, nullptr);
            changed.push_back(task.id());
            result.value.deleted.push_back(task.id());
            continue;
          }
          if (task.enabled() != enable) {  // already so: no new revision, no push
            const v1::Task before = task;
            task.set_enabled(enable);
            task.set_revision(task.revision() + 1);
            task.set_updated_at_unix_ms(detail::now_unix_ms());
            task.set_updated_by(actor.name);
            task.set_config_version(static_cast<std::int64_t>(bump()));
            tx.record_config_change(bump(), ConfigTarget::task, task.id());
            tx.put_task(task);
            audit(tx, actor, enable ? "task.enable" : "task.disable", "task", task.id(), task.name(), &before, &task);
            changed.push_back(task.id());
          }
          result.value.tasks.push_back(std::move(task));
        }
        result.value.config_version = version ? version : tx.config_version();
        tx.append_audit(make_audit_entry(
            actor, "task.batch", "task", ids_text(ids), verb, true,
            fmt::format("{} {} task(s); changed: {}", verb, ids.size(),
                        changed.empty() ? std::string("none") : ids_text(changed))));
      },
      std::move(done));
}

void Catalog::create_group(v1::Group group, Actor actor, GroupHandler done) {
  run<v1::Group>(
      store_,
      [group = std::move(group), actor](StoreTransaction& tx, CatalogResult<v1::Group>& result) mutable {
        if (group.id().empty()) group.set_id(group.name());
        if (auto problem = validate_group(group)) {
          result.ec = errc::invalid_argument;
          result.error = std::move(*problem);
          return;
        }
        const std::string input = fmt::format("group \"{}\"", group.name());
        if (tx.group(group.id()))
          return fail(result, errc::conflict, input, "id", fmt::format("\"{}\" is already used by another group", group.id()));
        if (auto other = tx.group_by_name(group.name()))
          return fail(result, errc::conflict, input, "name",
                      fmt::format("\"{}\" is already used by group \"{}\"", group.name(), other->id()));
        const auto now = detail::now_unix_ms();
        group.set_revision(1);
        group.set_created_at_unix_ms(now);
        group.set_updated_at_unix_ms(now);
        group.set_created_by(actor.name);
        tx.record_config_change(tx.bump_config_version("group.create " + group.id()), ConfigTarget::group, group.id());
        tx.put_group(group);
        audit(tx, actor, "group.create", "group", group.id(), group.name(), nullptr, &group);
        result.value = std::move(group);
      },
      std::move(done));
}

void Catalog::update_group(v1::Group group, Actor actor, GroupHandler done) {
  run<v1::Group>(
      store_,
      [group = std::move(group), actor](StoreTransaction& tx, CatalogResult<v1::Group>& result) mutable {
        const std::string input = fmt::format("group \"{}\"", group.name());
        auto before = tx.group(group.id());
        if (!before) return fail(result, errc::not_found, input, "id", fmt::format("no group with id \"{}\"", group.id()));
        if (auto problem = validate_group(group)) {
          result.ec = errc::invalid_argument;
          result.error = std::move(*problem);
          return;
        }
        if (auto other = tx.group_by_name(group.name()); other && other->id() != group.id())
          return fail(result, errc::conflict, input, "name",
                      fmt::format("\"{}\" is already used by group \"{}\"", group.name(), other->id()));
        group.set_revision(before->revision() + 1);
        group.set_created_at_unix_ms(before->created_at_unix_ms());
        group.set_created_by(before->created_by());
        group.set_updated_at_unix_ms(detail::now_unix_ms());
        tx.record_config_change(tx.bump_config_version("group.update " + group.id()), ConfigTarget::group, group.id());
        tx.put_group(group);
        audit(tx, actor, "group.update", "group", group.id(), group.name(), &*before, &group);
        result.value = std::move(group);
      },
      std::move(done));
}

void Catalog::delete_group(std::string id, Actor actor, DoneHandler done) {
  run<std::uint64_t>(
      store_,
      [id = std::move(id), actor](StoreTransaction& tx, CatalogResult<std::uint64_t>& result) {
        auto before = tx.group(id);
        if (!before) return fail(result, errc::not_found, "group", "id", fmt::format("no group with id \"{}\"", id));
        if (auto bound = tx.tasks_bound_to(id); !bound.empty())
          return fail(result, errc::conflict, fmt::format("group \"{}\"", before->name()), "id",
                      fmt::format("tasks are bound to it: {}", fmt::join(bound, ", ")));
        tx.delete_group(id);
        result.value = tx.bump_config_version("group.delete " + id);
        tx.record_config_change(result.value, ConfigTarget::group, id);
        audit(tx, actor, "group.delete", "group", id, before->name(), &*before, nullptr);
      },
      std::move(done));
}

void Catalog::move_agents(std::vector<std::string> agent_ids, std::string group_id, Actor actor, DoneHandler done) {
  run<std::uint64_t>(
      store_,
      [agent_ids = std::move(agent_ids), group_id = std::move(group_id), actor](StoreTransaction& tx,
                                                                                CatalogResult<std::uint64_t>& result) {
        auto group = tx.group(group_id);
        if (!group) return fail(result, errc::not_found, "move", "group_id", fmt::format("no group with id \"{}\"", group_id));
        std::vector<v1::Agent> agents;
        for (std::size_t i = 0; i < agent_ids.size(); ++i) {
          auto agent = tx.agent(agent_ids[i]);
          if (!agent)
            return fail(result, errc::not_found, "move", fmt::format("agent_ids[{}]", i),
                        fmt::format("no agent with id \"{}\"", agent_ids[i]));
          agents.push_back(std::move(*agent));
        }
        for (auto& agent : agents) {
          const v1::Agent before = agent;
          agent.set_group_id(group->id());
          agent.set_group_name(group->name());
          agent.set_group_assignment(v1::GROUP_ASSIGNMENT_MANUAL);
          tx.put_agent(agent);
          audit(tx, actor, "agent.move", "agent", agent.id(), agent.hostname(), &before, &agent);
        }
        result.value = tx.bump_config_version(fmt::format("agent.move {} agent(s) to {}", agents.size(), group_id));
        tx.record_config_change(result.value, ConfigTarget::group, group_id);
        for (const auto& agent : agents) tx.record_config_change(result.value, ConfigTarget::agent, agent.id());
      },
      std::move(done));
}

void Catalog::delete_agent(std::string id, Actor actor, DoneHandler done) {
  run<std::uint64_t>(
      store_,
      [id = std::move(id), actor](StoreTransaction& tx, CatalogResult<std::uint64_t>& result) {
        auto before = tx.agent(id);
        if (!before) return fail(result, errc::not_found, "agent", "id", fmt::format("no agent with id \"{}\"", id));
        if (before->state() == v1::AGENT_STATE_ONLINE)
          return fail(result, errc::conflict, fmt::format("delete of agent \"{}\"", id), "state",
                      "the agent is ONLINE: only an agent that is gone can be deleted; stop it (or wait until it "
                      "is OFFLINE) first");
        tx.delete_agent(id);
        result.value = tx.bump_config_version("agent.delete " + id);
        tx.record_config_change(result.value, ConfigTarget::agent, id);
        audit(tx, actor, "agent.delete", "agent", id, before->hostname(), &*before, nullptr);
      },
      std::move(done));
}

void clear_output_fields(v1::Group& group) {
  group.clear_revision();
  group.clear_created_at_unix_ms();
  group.clear_updated_at_unix_ms();
  group.clear_created_by();
}

void clear_output_fields(v1::Task& task) {
  task.clear_group_names();
  task.clear_upstream_task_ids();
  task.clear_revision();
  task.clear_config_version();
  task.clear_created_at_unix_ms();
  task.clear_updated_at_unix_ms();
  task.clear_created_by();
  task.clear_updated_by();
}

v1::AuditEntry make_audit_entry(const Actor& actor, std::string action, std::string target_type,
                                std::string target_id, std::string target_name, bool success, std::string detail,
                                const google::protobuf::Message* before, const google::protobuf::Message* after) {
  v1::AuditEntry entry;
  entry.set_at_unix_ms(detail::now_unix_ms());
  entry.set_actor(actor.name);
  entry.set_source_ip(actor.address);
  entry.set_actor_kind(actor.kind);
  entry.set_token_name(actor.token_name);
  entry.set_user_agent(actor.user_agent);
  entry.set_request_id(actor.request_id);
  entry.set_action(std::move(action));
  entry.set_target_type(std::move(target_type));
  entry.set_target_id(std::move(target_id));
  entry.set_target_name(std::move(target_name));
  entry.set_success(success);
  entry.set_detail(std::move(detail));
  if (before) entry.set_before_json(json_of(*before));
  if (after) entry.set_after_json(json_of(*after));
  return entry;
}

}  // namespace quartzflow
