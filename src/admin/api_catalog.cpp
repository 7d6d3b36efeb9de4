// SPDX-License-Identifier: Apache-2.0
// Admin API: tasks, groups and agents (the catalog), through the Coordinator so that every
// change reaches the scheduler and the agents at once and is audited by the catalog.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <quartzflow/schedule.hpp>
#include <quartzflow/task.hpp>

#include "admin_api.hpp"

namespace quartzflow::detail {
namespace {

using CallPtr = std::shared_ptr<ApiCall>;

constexpr int k_viewer = 1;
constexpr int k_operator = 2;

Instant now_instant() { return std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now()); }

std::int64_t unix_ms(Instant t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

/// Parses the query (GET) into `message`; false after failing the call.
bool query_into(ApiCall& call, google::protobuf::Message& message) {
  if (auto failure = parse_query(call.request.query, message)) {
    call.fail(*failure);
    return false;
  }
  return true;
}

bool body_into(ApiCall& call, google::protobuf::Message& message) {
  if (auto failure = parse_body(call.request.body, message)) {
    call.fail(*failure);
    return false;
  }
  return true;
}

/// `force=true` (or 1) on the query of PUT /tasks/{id}; any other parameter is refused.
std::optional<bool> force_flag(ApiCall& call) {
  bool force = false;
  for (const auto& [name, value] : call.request.query) {
    if (name != "force" || (value != "true" && value != "false" && value != "1" && value != "0")) {
      call.fail(v1::API_ERROR_CODE_INVALID_ARGUMENT, fmt::format("invalid query: {}: not understood", name), name,
                name == "force" ? "must be true or false" : "unknown query parameter");
      return std::nullopt;
    }
    force = value == "true" || value == "1";
  }
  return force;
}

/// Next fire and description from the stored task (pure functions of it: this runs on the
/// store's reader thread, like the coordinator's own `next_fires` it agrees with).
void describe_schedule(v1::TaskSummary& summary, Instant now) {
  const auto schedule = task_schedule(summary.task());
  summary.set_schedule_description(schedule.describe());
  const auto kind = summary.task().schedule().kind_case();
  if (!summary.task().enabled() || kind == v1::Schedule::kManual || kind == v1::Schedule::KIND_NOT_SET) return;
  if (auto fire = schedule.next(now, ScheduleState{now, now, 0})) summary.set_next_fire_unix_ms(unix_ms(fire->scheduled));
}

/// A list of ids in a body: at most `max`, none empty, none twice. Every bad element is
/// named (`task_ids[2]: is empty`); nullopt when the list is fine (also when empty).
std::optional<ApiFailure> check_id_list(const google::protobuf::RepeatedPtrField<std::string>& ids,
                                        std::string_view field, std::string_view what, int max) {
  ApiFailure failure{v1::API_ERROR_CODE_INVALID_ARGUMENT, {}, {}};
  if (ids.size() > max) {
    failure.add_violation(std::string(field), fmt::format("at most {} ids; {} given", max, ids.size()));
  } else {
    std::map<std::string_view, int> seen;
    for (int i = 0; i < ids.size(); ++i) {
      const auto path = fmt::format("{}[{}]", field, i);
      if (ids[i].empty()) failure.add_violation(path, "is empty");
      else if (auto [at, fresh] = seen.emplace(ids[i], i); !fresh)
        failure.add_violation(path, fmt::format("\"{}\" is already given as {}[{}]", ids[i], field, at->second));
    }
  }
  if (failure.violations.empty()) return std::nullopt;
  std::vector<std::string> parts;
  for (const auto& v : failure.violations) parts.push_back(v.field() + ": " + v.reason());
  failure.message = fmt::format("invalid {}: {}", what, fmt::join(parts, "; "));
  return failure;
}

/// Ids for an audit entry's target: all of them, or the first ones and how many.
template <typename Ids>
std::string ids_text(const Ids& ids) {
  std::string out;
  for (const auto& id : ids) {
    if (out.size() > 200) return fmt::format("{}... ({} ids)", out, ids.size());
    out += (out.empty() ? "" : ",") + id;
  }
  return out;
}

template <typename T>
void reply_catalog(const CallPtr& call, const CatalogResult<T>& result) {
  if (!result) return call->fail(failure_of(result.ec, result.error));
  call->ok(result.value);
}

/// A task as answers show it: its callbacks' secrets redacted.
void reply_task(const CallPtr& call, CatalogResult<v1::Task> result) {
  if (result) redact_task_callbacks(result.value);
  reply_catalog(call, result);
}

}  // namespace

void AdminApi::add_catalog_routes() {
  const auto self = [this](auto method) {
    return [this, method](CallPtr call) { (this->*method)(std::move(call)); };
  };
  add("GET", "/api/v1/tasks", k_viewer, v1::ListTasksRequest::descriptor(), v1::ListTasksResponse::descriptor(),
      "List tasks (paging, filters, sorting)", self(&AdminApi::list_tasks));
  add("POST", "/api/v1/tasks", k_operator, v1::Task::descriptor(), v1::Task::descriptor(), "Create a task",
      self(&AdminApi::create_task), 201);
  add("GET", "/api/v1/tasks/cron/parse", k_viewer, v1::CronParseRequest::descriptor(),
      v1::CronParseResponse::descriptor(), "Preview a schedule: next fires and description", self(&AdminApi::cron_parse));
  add("GET", "/api/v1/tasks/{id}", k_viewer, nullptr, v1::TaskSummary::descriptor(), "A task with its live figures",
      self(&AdminApi::get_task));
  add("PUT", "/api/v1/tasks/{id}", k_operator, v1::Task::descriptor(), v1::Task::descriptor(),
      "Replace a task (?force=true while runs are in progress)", self(&AdminApi::update_task));
  add("DELETE", "/api/v1/tasks/{id}", k_operator, nullptr, nullptr, "Delete a task (its history stays)",
      self(&AdminApi::delete_task));
  add("POST", "/api/v1/tasks/{id}/enable", k_operator, nullptr, v1::Task::descriptor(), "Enable a task",
      [this](CallPtr call) { set_task_enabled(std::move(call), true); });
  add("POST", "/api/v1/tasks/{id}/disable", k_operator, nullptr, v1::Task::descriptor(), "Disable a task",
      [this](CallPtr call) { set_task_enabled(std::move(call), false); });
  add("POST", "/api/v1/tasks/{id}/trigger", k_operator, v1::TriggerRequest::descriptor(),
      v1::TriggerResponse::descriptor(), "Run a task now with parameters (agent_ids: on those agents only)", self(&AdminApi::trigger_task));
  add("POST", "/api/v1/tasks/batch", k_operator, v1::BatchTaskRequest::descriptor(),
      v1::BatchTaskResponse::descriptor(),
      "Enable, disable or delete many tasks (1-1000): all or nothing, every bad id named",
      self(&AdminApi::batch_tasks));
  add("GET", "/api/v1/tasks/{id}/next", k_viewer, v1::CronParseRequest::descriptor(),
      v1::CronParseResponse::descriptor(), "The next fires of a task (count, from_unix_ms)", self(&AdminApi::next_fires));

  add("GET", "/api/v1/groups", k_viewer, v1::ListGroupsRequest::descriptor(), v1::ListGroupsResponse::descriptor(),
      "List groups with agent, online-agent and task counts", self(&AdminApi::list_groups));
  add("POST", "/api/v1/groups", k_operator, v1::Group::descriptor(), v1::Group::descriptor(), "Create a group",
      self(&AdminApi::create_group), 201);
  add("GET", "/api/v1/groups/{id}", k_viewer, nullptr, v1::GroupSummary::descriptor(), "A group with its counts",
      self(&AdminApi::get_group));
  add("PUT", "/api/v1/groups/{id}", k_operator, v1::Group::descriptor(), v1::Group::descriptor(),
      "Replace a group's name, description, tags and membership rules", self(&AdminApi::update_group));
  add("DELETE", "/api/v1/groups/{id}", k_operator, nullptr, nullptr, "Delete a group no task is bound to",
      self(&AdminApi::delete_group));
  add("GET", "/api/v1/groups/{id}/agents", k_viewer, v1::ListAgentsRequest::descriptor(),
      v1::ListAgentsResponse::descriptor(), "The agents of a group", [this](CallPtr call) { list_agents(std::move(call), true); });
  add("GET", "/api/v1/groups/{id}/clients", k_viewer, v1::ListAgentsRequest::descriptor(),
      v1::ListAgentsResponse::descriptor(), "The agents of a group (the requirements' name for /agents)",
      [this](CallPtr call) { list_agents(std::move(call), true); });

  add("GET", "/api/v1/agents", k_viewer, v1::ListAgentsRequest::descriptor(), v1::ListAgentsResponse::descriptor(),
      "List agents: online, last heartbeat, version, config version, clock offset",
      [this](CallPtr call) { list_agents(std::move(call), false); });
  add("GET", "/api/v1/agents/{id}", k_viewer, nullptr, v1::Agent::descriptor(), "An agent", self(&AdminApi::get_agent));
  add("DELETE", "/api/v1/agents/{id}", k_operator, nullptr, nullptr,
      "Delete an agent that is gone (refused while it is ONLINE); its history stays", self(&AdminApi::delete_agent));
  add("POST", "/api/v1/agents/move", k_operator, v1::MoveAgentsRequest::descriptor(),
      v1::MoveAgentsResponse::descriptor(), "Place agents in a group by hand", self(&AdminApi::move_agents));
}

// --- tasks -------------------------------------------------------------------------------

void AdminApi::list_tasks(CallPtr call) {
  v1::ListTasksRequest request;
  if (!query_into(*call, request)) return;
  read(call, [request](StoreTransaction& tx, const ApiCall&) {
    auto listing = tx.list_tasks(request);
    auto out = std::make_unique<v1::ListTasksResponse>();
    const auto now = now_instant();
    std::vector<std::string> ids;
    ids.reserve(listing.items.size());
    for (const auto& task : listing.items) ids.push_back(task.id());
    const auto counts = tx.task_counts(ids);  // the page's counts in one grouped query
    for (std::size_t i = 0; i < listing.items.size(); ++i) {
      auto& task = listing.items[i];
      auto* summary = out->add_items();
      summary->MergeFrom(counts[i]);
      if (auto last = tx.latest_execution(task.id())) {
        summary->set_last_execution_id(last->execution_id());
        summary->set_last_status(last->status());
        summary->set_last_scheduled_unix_ms(last->scheduled_unix_ms());
      }
      redact_task_callbacks(task);
      *summary->mutable_task() = std::move(task);
      describe_schedule(*summary, now);
    }
    out->set_total(listing.total);
    out->set_page(std::max<std::uint32_t>(request.page(), 1));
    out->set_page_size(request.page_size() == 0 ? 20 : std::min<std::uint32_t>(request.page_size(), 500));
    return out;
  });
}

void AdminApi::get_task(CallPtr call) {
  const std::string id = call->params.at("id");
  read(
      call,
      [id](StoreTransaction& tx, const ApiCall&) -> std::unique_ptr<google::protobuf::Message> {
        auto task = tx.task(id);
        if (!task) throw ApiException{{v1::API_ERROR_CODE_NOT_FOUND, fmt::format("no task with id \"{}\"", id), {}}};
        auto out = std::make_unique<v1::TaskSummary>();
        redact_task_callbacks(*task);
        *out->mutable_task() = std::move(*task);
        if (auto last = tx.latest_execution(id)) {
          out->set_last_execution_id(last->execution_id());
          out->set_last_status(last->status());
          out->set_last_scheduled_unix_ms(last->scheduled_unix_ms());
        }
        // The same counts as the list's, from the same query.
        out->MergeFrom(tx.task_counts(std::span(&id, 1)).front());
        describe_schedule(*out, now_instant());
        return out;
      });
}

void AdminApi::create_task(CallPtr call) {
  v1::Task task;
  if (!body_into(*call, task)) return;
  if (auto failure = prepare_task_callbacks(task, nullptr, options_.alert_secret_key)) return call->fail(*failure);
  coordinator_.create_task(std::move(task), call->actor,
                           [call](CatalogResult<v1::Task> r) { reply_task(call, std::move(r)); });
}

void AdminApi::update_task(CallPtr call) {
  const auto force = force_flag(*call);
  if (!force) return;
  v1::Task task;
  if (!body_into(*call, task)) return;
  const std::string& id = call->params.at("id");
  if (!task.id().empty() && task.id() != id)
    return call->fail(v1::API_ERROR_CODE_INVALID_ARGUMENT,
                      fmt::format("invalid task: id: \"{}\" differs from the path's \"{}\"", task.id(), id), "id",
                      "differs from the id in the path");
  task.set_id(id);
  const auto stored = coordinator_.dispatcher().task(id);
  if (auto failure = prepare_task_callbacks(task, stored ? &*stored : nullptr, options_.alert_secret_key))
    return call->fail(*failure);
  coordinator_.update_task(std::move(task), *force, call->actor,
                           [call](CatalogResult<v1::Task> r) { reply_task(call, std::move(r)); });
}

void AdminApi::delete_task(CallPtr call) {
  coordinator_.delete_task(call->params.at("id"), call->actor, [call](CatalogResult<std::uint64_t> r) {
    if (!r) return call->fail(failure_of(r.ec, r.error));
    call->ok(v1::ApiError{}, 200);  // an empty object: nothing to return
  });
}

void AdminApi::set_task_enabled(CallPtr call, bool enabled) {
  coordinator_.set_task_enabled(call->params.at("id"), enabled, call->actor,
                                [call](CatalogResult<v1::Task> r) { reply_task(call, std::move(r)); });
}

void AdminApi::trigger_task(CallPtr call) {
  v1::TriggerRequest request;
  if (!call->request.body.empty() && !body_into(*call, request)) return;
  std::vector<std::string> agent_ids;
  if (auto failure = check_id_list(request.agent_ids(), "agent_ids", "trigger", 1000)) return call->fail(*failure);
  agent_ids.assign(request.agent_ids().begin(), request.agent_ids().end());
  const std::string id = call->params.at("id");
  std::map<std::string, std::string> params(request.params().begin(), request.params().end());
  coordinator_.trigger(id, std::move(params), std::move(agent_ids), call->actor,
                       [weak = weak_from_this(), call, id, reason = request.reason()](TriggerResult r) {
                         auto self = weak.lock();
                         if (!self) return;
                         if (r.ec) {
                           auto failure = failure_of(r.ec, r.error);
                           self->audit(*call, "task.trigger", "task", id, id, false, failure.message);
                           return call->fail(failure);
                         }
                         self->audit(*call, "task.trigger", "task", id, id, true,
                                     fmt::format("{}executions: {}", reason.empty() ? "" : reason + "; ",
                                                 fmt::join(r.value, ", ")));
                         v1::TriggerResponse out;
                         for (auto& e : r.value) out.add_execution_ids(std::move(e));
                         call->ok(out);
                       });
}

void AdminApi::batch_tasks(CallPtr call) {
  v1::BatchTaskRequest request;
  if (!body_into(*call, request)) return;
  ApiFailure failure{v1::API_ERROR_CODE_INVALID_ARGUMENT, {}, {}};
  if (request.action() == v1::BATCH_TASK_ACTION_UNSPECIFIED)
    failure.add_violation("action", "is required: ENABLE, DISABLE or DELETE");
  else if (request.action() == v1::BATCH_TASK_ACTION_TRIGGER)
    failure.add_violation("action",
                          "TRIGGER is not a batch action: trigger each task (POST /api/v1/tasks/{id}/trigger)");
  if (request.task_ids_size() == 0) failure.add_violation("task_ids", "give 1-1000 task ids");
  if (auto bad = check_id_list(request.task_ids(), "task_ids", "batch", 1000))
    failure.violations.insert(failure.violations.end(), bad->violations.begin(), bad->violations.end());
  if (failure.violations.empty()) {
    // Unknown ids are named here, every one; the catalog checks them again in its
    // transaction (a task deleted meanwhile fails the whole batch there).
    for (int i = 0; i < request.task_ids_size(); ++i)
      if (!coordinator_.dispatcher().task(request.task_ids(i)))
        failure.add_violation(fmt::format("task_ids[{}]", i),
                              fmt::format("no task with id \"{}\"", request.task_ids(i)));
  }
  const auto verb = v1::BatchTaskAction_Name(request.action()).substr(std::string_view("BATCH_TASK_ACTION_").size());
  if (!failure.violations.empty()) {
    std::vector<std::string> parts;
    for (const auto& v : failure.violations) parts.push_back(v.field() + ": " + v.reason());
    failure.message = fmt::format("invalid batch: {} (nothing was changed)", fmt::join(parts, "; "));
    audit(*call, "task.batch", "task", ids_text(request.task_ids()), verb, false, failure.message);
    return call->fail(failure);
  }
  std::vector<std::string> ids(request.task_ids().begin(), request.task_ids().end());
  coordinator_.batch_tasks(ids, request.action(), call->actor,
                           [weak = weak_from_this(), call, ids, verb](CatalogResult<BatchTaskOutcome> r) {
                             auto self = weak.lock();
                             if (!self) return;
                             if (!r) {
                               auto f = failure_of(r.ec, r.error);
                               f.message += " (nothing was changed)";
                               self->audit(*call, "task.batch", "task", ids_text(ids), verb, false, f.message);
                               return call->fail(f);
                             }
                             v1::BatchTaskResponse out;
                             for (const auto& id : ids) {
                               auto* item = out.add_results();
                               item->set_id(id);
                               item->set_ok(true);
                             }
                             call->ok(out);
                           });
}

// --- groups ------------------------------------------------------------------------------

void AdminApi::list_groups(CallPtr call) {
  v1::ListGroupsRequest request;
  if (!query_into(*call, request)) return;
  read(call, [request](StoreTransaction& tx, const ApiCall&) {
    auto listing = tx.list_groups(request);
    auto out = std::make_unique<v1::ListGroupsResponse>();
    for (auto& g : listing.items) *out->add_items() = std::move(g);
    out->set_total(listing.total);
    out->set_page(std::max<std::uint32_t>(request.page(), 1));
    out->set_page_size(request.page_size() == 0 ? 20 : std::min<std::uint32_t>(request.page_size(), 500));
    return out;
  });
}

void AdminApi::get_group(CallPtr call) {
  const std::string id = call->params.at("id");
  read(call, [id](StoreTransaction& tx, const ApiCall&) -> std::unique_ptr<google::protobuf::Message> {
    auto group = tx.group(id);
    if (!group) throw ApiException{{v1::API_ERROR_CODE_NOT_FOUND, fmt::format("no group with id \"{}\"", id), {}}};
    auto out = std::make_unique<v1::GroupSummary>();
    const auto agents = tx.agents_in_group(id);
    out->set_agent_count(static_cast<std::uint32_t>(agents.size()));
    out->set_online_agent_count(static_cast<std::uint32_t>(std::count_if(
        agents.begin(), agents.end(), [](const v1::Agent& a) { return a.state() == v1::AGENT_STATE_ONLINE; })));
    out->set_task_count(static_cast<std::uint32_t>(tx.tasks_bound_to(id).size()));
    *out->mutable_group() = std::move(*group);
    return out;
  });
}

void AdminApi::create_group(CallPtr call) {
  v1::Group group;
  if (!body_into(*call, group)) return;
  coordinator_.create_group(std::move(group), call->actor, [call](CatalogResult<v1::Group> r) { reply_catalog(call, r); });
}

void AdminApi::update_group(CallPtr call) {
  v1::Group group;
  if (!body_into(*call, group)) return;
  const std::string& id = call->params.at("id");
  if (!group.id().empty() && group.id() != id)
    return call->fail(v1::API_ERROR_CODE_INVALID_ARGUMENT,
                      fmt::format("invalid group: id: \"{}\" differs from the path's \"{}\"", group.id(), id), "id",
                      "differs from the id in the path");
  group.set_id(id);
  coordinator_.update_group(std::move(group), call->actor, [call](CatalogResult<v1::Group> r) { reply_catalog(call, r); });
}

void AdminApi::delete_group(CallPtr call) {
  coordinator_.delete_group(call->params.at("id"), call->actor, [call](CatalogResult<std::uint64_t> r) {
    if (!r) return call->fail(failure_of(r.ec, r.error));
    call->ok(v1::ApiError{}, 200);
  });
}

// --- agents ------------------------------------------------------------------------------

void AdminApi::list_agents(CallPtr call, bool of_group) {
  v1::ListAgentsRequest request;
  if (!query_into(*call, request)) return;
  if (of_group) request.set_group_id(call->params.at("id"));
  read(call, [request, of_group](StoreTransaction& tx, const ApiCall&) -> std::unique_ptr<google::protobuf::Message> {
    if (of_group && !tx.group(request.group_id()))
      throw ApiException{
          {v1::API_ERROR_CODE_NOT_FOUND, fmt::format("no group with id \"{}\"", request.group_id()), {}}};
    auto listing = tx.list_agents(request);
    auto out = std::make_unique<v1::ListAgentsResponse>();
    for (auto& a : listing.items) *out->add_items() = std::move(a);
    out->set_total(listing.total);
    out->set_page(std::max<std::uint32_t>(request.page(), 1));
    out->set_page_size(request.page_size() == 0 ? 20 : std::min<std::uint32_t>(request.page_size(), 500));
    return out;
  });
}

void AdminApi::get_agent(CallPtr call) {
  const std::string id = call->params.at("id");
  read(call, [id](StoreTransaction& tx, const ApiCall&) -> std::unique_ptr<google::protobuf::Message> {
    auto agent = tx.agent(id);
    if (!agent) throw ApiException{{v1::API_ERROR_CODE_NOT_FOUND, fmt::format("no agent with id \"{}\"", id), {}}};
    return std::make_unique<v1::Agent>(std::move(*agent));
  });
}

void AdminApi::move_agents(CallPtr call) {
  v1::MoveAgentsRequest request;
  if (!body_into(*call, request)) return;
  if (request.agent_ids_size() == 0 || request.agent_ids_size() > 1000)
    return call->fail(v1::API_ERROR_CODE_INVALID_ARGUMENT, "invalid move: agent_ids: give 1-1000 agent ids", "agent_ids",
                      "give 1-1000 agent ids");
  std::vector<std::string> ids(request.agent_ids().begin(), request.agent_ids().end());
  coordinator_.move_agents(ids, request.group_id(), call->actor, [call, ids](CatalogResult<std::uint64_t> r) {
    if (!r) return call->fail(failure_of(r.ec, r.error));
    v1::MoveAgentsResponse out;
    for (const auto& id : ids) {
      auto* item = out.add_results();
      item->set_id(id);
      item->set_ok(true);
    }
    call->ok(out);
  });
}

void AdminApi::delete_agent(CallPtr call) {
  const std::string id = call->params.at("id");
  coordinator_.delete_agent(id, call->actor, [weak = weak_from_this(), call, id](CatalogResult<std::uint64_t> r) {
    auto self = weak.lock();
    if (!self) return;
    if (!r) {
      auto failure = failure_of(r.ec, r.error);
      if (r.ec == errc::conflict) {
        failure.code = v1::API_ERROR_CODE_FAILED_PRECONDITION;
        failure.message = fmt::format("cannot delete agent \"{}\": {}", id, r.error.reason);
      } else if (r.ec == errc::not_found) {
        failure.message = fmt::format("no agent with id \"{}\"", id);
      }
      if (r.ec != errc::not_found) self->audit(*call, "agent.delete", "agent", id, id, false, failure.message);
      return call->fail(failure);
    }
    call->ok(v1::ApiError{}, 200);
  });
}

}  // namespace quartzflow::detail
