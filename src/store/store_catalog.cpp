// SPDX-License-Identifier: Apache-2.0
// The catalog half of the StoreTransaction: config versions, tasks (with their group
// bindings and labels as relations), groups, agents, scheduler fire state and the audit log.
#include <array>
#include <map>

#include <fmt/format.h>

#include "sql_transaction.hpp"

namespace quartzflow::detail {
namespace {

std::int64_t to_unix_ms(Instant t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

Instant instant_of(std::int64_t unix_ms) {
  return std::chrono::floor<std::chrono::seconds>(
      std::chrono::sys_time<std::chrono::milliseconds>{std::chrono::milliseconds{unix_ms}});
}

void require_name_free(BorrowedStatement& other, std::string_view input, std::string_view name,
                       std::string_view owner) {
  if (other.next()) throw_taken(input, "name", name, fmt::format("{} {}", owner, other.text(0)));
}

constexpr std::array k_task_sort_keys{
    SortKey{"name", "t.name"},
    SortKey{"created_at_unix_ms", "t.created_at_unix_ms"},
    SortKey{"created", "t.created_at_unix_ms"},
    SortKey{"updated_at_unix_ms", "t.updated_at_unix_ms"},
    SortKey{"updated", "t.updated_at_unix_ms"},
    SortKey{"next_fire_unix_ms", "(SELECT f.next_fire_unix_ms FROM fire_state f WHERE f.task_id = t.id)", true},
    SortKey{"last_scheduled_unix_ms", "(SELECT MAX(e.scheduled_unix_ms) FROM executions e WHERE e.task_id = t.id)",
            true},
};

constexpr std::array k_group_sort_keys{
    SortKey{"name", "g.name"},
    SortKey{"created_at_unix_ms", "g.created_at_unix_ms"},
    SortKey{"agent_count", "agent_count"},
    SortKey{"online_agent_count", "online_agent_count"},
    SortKey{"task_count", "task_count"},
};

constexpr std::array k_agent_sort_keys{
    SortKey{"hostname", "a.hostname"},
    SortKey{"last_heartbeat_unix_ms", "a.last_heartbeat_unix_ms"},
    SortKey{"state", "a.state"},
    SortKey{"running_executions", "a.running_executions"},
};

constexpr std::array k_audit_sort_keys{SortKey{"at_unix_ms", "a.at_unix_ms"}};

constexpr std::array<std::string_view, 3> k_task_keyword_columns{"t.id", "t.name", "t.description"};
constexpr std::array<std::string_view, 2> k_group_keyword_columns{"g.name", "g.description"};
constexpr std::array<std::string_view, 3> k_agent_keyword_columns{
    "a.id", "a.hostname",
    "EXISTS (SELECT 1 FROM agent_ips i WHERE i.agent_id = a.id AND lower(i.ip) LIKE {} ESCAPE '\\')"};
constexpr std::array<std::string_view, 2> k_audit_keyword_columns{"a.target_name", "a.detail"};

void add_label_conditions(SqlConditions& where, std::string_view selector, std::string_view input, const char* exists) {
  for (auto& [key, value] : parse_label_selector(selector, input)) where.add(exists, {key, value});
}

}  // namespace

// ---- config versions ----

std::uint64_t SqlStoreTransaction::config_version() {
  auto rows = statement("SELECT COALESCE(MAX(version), 0) FROM config_versions");
  return rows.next() ? static_cast<std::uint64_t>(rows.int64(0)) : 0;
}

std::uint64_t SqlStoreTransaction::bump_config_version(std::string_view summary) {
  require_writable("bump_config_version");
  // Several coordinators on one PostgreSQL: one lock for every bump (held to the commit), so
  // a concurrent bump waits for the other's commit, then numbers after it (its next statement
  // sees the new version): no unique violation, and versions commit in order, which
  // CatalogFollower relies on. Locking the latest version's row was not enough: a third bump
  // that came after the first's commit locked the new latest row and took the same number as
  // the second, still waiting on the old one. SQLite has one writer.
  if (const char* serialize = db_.dialect().serialize_config_versions_sql; *serialize != '\0') {
    auto lock = statement(serialize);
    while (lock.next()) {}
  }
  const auto version = config_version() + 1;
  statement("INSERT INTO config_versions (version, at_unix_ms, summary) VALUES (?1, ?2, ?3)")
      .bind(1, static_cast<std::int64_t>(version))
      .bind(2, now_unix_ms())
      .bind(3, summary)
      .run();
  return version;
}

// ---- tasks ----

void SqlStoreTransaction::fill_group_names(v1::Task& task, std::unordered_map<std::string, std::string>& names_seen) {
  task.clear_group_names();
  for (const auto& group_id : task.group_ids()) {
    auto seen = names_seen.find(group_id);
    if (seen == names_seen.end()) {
      auto rows = statement("SELECT name FROM groups WHERE id = ?1");
      rows.bind(1, group_id);
      seen = names_seen.emplace(group_id, rows.next() ? rows.text(0) : std::string()).first;
    }
    task.add_group_names(seen->second);
  }
}

std::vector<v1::Task> SqlStoreTransaction::read_tasks(BorrowedStatement& rows) {
  std::vector<v1::Task> out;
  while (rows.next()) parse_record(rows.blob(0), out.emplace_back());
  std::unordered_map<std::string, std::string> names_seen;
  for (auto& task : out) {
    // Records written before `enabled` had presence omit it when false: say so explicitly,
    // so that nothing downstream reads "absent" as "enabled by default".
    task.set_enabled(task.enabled());
    fill_group_names(task, names_seen);
  }
  return out;
}

std::optional<v1::Task> SqlStoreTransaction::task(std::string_view id) {
  auto rows = statement("SELECT record FROM tasks WHERE id = ?1");
  rows.bind(1, id);
  auto tasks = read_tasks(rows);
  if (tasks.empty()) return std::nullopt;
  return std::move(tasks.front());
}

std::optional<v1::Task> SqlStoreTransaction::task_by_name(std::string_view name) {
  auto rows = statement("SELECT record FROM tasks WHERE name = ?1");
  rows.bind(1, name);
  auto tasks = read_tasks(rows);
  if (tasks.empty()) return std::nullopt;
  return std::move(tasks.front());
}

void SqlStoreTransaction::put_task(const v1::Task& task) {
  require_writable("put_task");
  if (task.id().empty()) throw_invalid("task", "id", "is empty");
  if (task.name().empty()) throw_invalid("task", "name", "is empty");
  {
    auto other = statement("SELECT id FROM tasks WHERE name = ?1 AND id <> ?2");
    other.bind(1, task.name()).bind(2, task.id());
    require_name_free(other, "task", task.name(), "task");
  }
  v1::Task stored = task;
  stored.clear_group_names();  // output only: filled from the groups on every read
  statement(
      "INSERT INTO tasks (id, name, description, enabled, all_agents, created_at_unix_ms, updated_at_unix_ms, "
      "record) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (id) DO UPDATE SET name = excluded.name, "
      "description = excluded.description, enabled = excluded.enabled, all_agents = excluded.all_agents, "
      "created_at_unix_ms = excluded.created_at_unix_ms, updated_at_unix_ms = excluded.updated_at_unix_ms, "
      "record = excluded.record")
      .bind(1, task.id())
      .bind(2, task.name())
      .bind(3, task.description())
      .bind(4, task.enabled() ? 1 : 0)
      .bind(5, task.all_agents() ? 1 : 0)
      .bind(6, task.created_at_unix_ms())
      .bind(7, task.updated_at_unix_ms())
      .bind_blob(8, serialize_deterministic(stored))
      .run();
  statement("DELETE FROM task_groups WHERE task_id = ?1").bind(1, task.id()).run();
  for (const auto& group_id : task.group_ids())
    statement("INSERT INTO task_groups (task_id, group_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING")
        .bind(1, task.id())
        .bind(2, group_id)
        .run();
  statement("DELETE FROM task_labels WHERE task_id = ?1").bind(1, task.id()).run();
  for (const auto& [key, value] : task.labels())
    statement("INSERT INTO task_labels (task_id, key, value) VALUES (?1, ?2, ?3)")
        .bind(1, task.id())
        .bind(2, key)
        .bind(3, value)
        .run();
}

bool SqlStoreTransaction::delete_task(std::string_view id) {
  require_writable("delete_task");
  const bool deleted = statement("DELETE FROM tasks WHERE id = ?1").bind(1, id).run() > 0;
  statement("DELETE FROM task_groups WHERE task_id = ?1").bind(1, id).run();
  statement("DELETE FROM task_labels WHERE task_id = ?1").bind(1, id).run();
  statement("DELETE FROM fire_state WHERE task_id = ?1").bind(1, id).run();
  return deleted;
}

Listing<v1::Task> SqlStoreTransaction::list_tasks(const v1::ListTasksRequest& request) {
  constexpr std::string_view input = "task list request";
  SqlConditions where;
  if (!request.keyword().empty()) add_keyword_condition(where, request.keyword(), k_task_keyword_columns);
  switch (request.enabled()) {
    case v1::ENABLED_FILTER_UNSPECIFIED: break;
    case v1::ENABLED_FILTER_ENABLED: where.add("t.enabled = 1"); break;
    case v1::ENABLED_FILTER_DISABLED: where.add("t.enabled = 0"); break;
    default: throw_invalid(input, "enabled", fmt::format("{} is not an EnabledFilter", request.enabled()));
  }
  if (!request.group_id().empty())
    where.add("t.id IN (SELECT tg.task_id FROM task_groups tg WHERE tg.group_id = ?)", {request.group_id()});
  if (request.last_status() != v1::EXECUTION_STATUS_UNSPECIFIED)
    where.add(
        "(SELECT e.status FROM executions e WHERE e.task_id = t.id ORDER BY e.scheduled_unix_ms DESC, e.rowid DESC "
        "LIMIT 1) = ?",
        {static_cast<std::int64_t>(request.last_status())});
  add_label_conditions(where, request.label_selector(), input,
                       "EXISTS (SELECT 1 FROM task_labels l WHERE l.task_id = t.id AND l.key = ? AND l.value = ?)");
  const auto order = order_by(request.sort(), "name", k_task_sort_keys, "t.id", input, db_.dialect().nulls_sort_high);
  const auto paging = paging_of(request.page(), request.page_size());

  Listing<v1::Task> out;
  out.total = count("SELECT COUNT(*) FROM tasks t" + where.where(), where.values());
  auto rows = statement("SELECT t.record FROM tasks t" + where.where() + order + " LIMIT ? OFFSET ?");
  const int next = rows.bind_all(where.values());
  rows.bind(next, paging.limit).bind(next + 1, paging.offset);
  out.items = read_tasks(rows);
  return out;
}

std::vector<v1::TaskSummary> SqlStoreTransaction::task_counts(std::span<const std::string> task_ids) {
  std::vector<v1::TaskSummary> out(task_ids.size());
  std::map<std::string_view, std::vector<std::size_t>, std::less<>> positions;  // an id may be given twice
  for (std::size_t i = 0; i < task_ids.size(); ++i) positions[task_ids[i]].push_back(i);
  if (positions.empty()) return out;
  // `IN (?, ...)` over the distinct ids: at most a page (500), far below the databases' limits
  // of bound parameters; the statement cache is trimmed between transactions.
  std::string placeholders;
  for (std::size_t i = 0; i < positions.size(); ++i) placeholders += i == 0 ? "?" : ", ?";
  const auto bind_ids = [&](BorrowedStatement& rows) {
    int index = 1;
    for (const auto& [id, at] : positions) rows.bind(index++, id);
  };
  const auto each_position = [&](const std::string& id, auto&& fill) {
    if (auto it = positions.find(id); it != positions.end())
      for (const auto i : it->second) fill(out[i]);
  };
  {
    // Answered from the (task_id, status, scheduled_unix_ms) index alone.
    auto rows = statement(
        fmt::format("SELECT task_id, status, COUNT(*) FROM executions WHERE task_id IN ({}) GROUP BY task_id, status",
                    placeholders));
    bind_ids(rows);
    while (rows.next()) {
      const auto status = rows.int64(1);
      const auto n = static_cast<std::uint64_t>(rows.int64(2));
      each_position(rows.text(0), [&](v1::TaskSummary& summary) {
        switch (status) {
          case v1::EXECUTION_STATUS_SUCCESS:
            summary.set_success_count(summary.success_count() + n);
            summary.set_run_count(summary.run_count() + n);
            break;
          case v1::EXECUTION_STATUS_FAILURE:
          case v1::EXECUTION_STATUS_TIMEOUT:
            summary.set_failure_count(summary.failure_count() + n);
            summary.set_run_count(summary.run_count() + n);
            break;
          case v1::EXECUTION_STATUS_CANCELLED: summary.set_run_count(summary.run_count() + n); break;
          case v1::EXECUTION_STATUS_RUNNING:
            summary.set_running_count(summary.running_count() + static_cast<std::uint32_t>(n));
            break;
          default: break;  // PENDING, SKIPPED, MISSED: not runs
        }
      });
    }
  }
  {
    // An agent has one group, so joining the task's bindings counts each agent once.
    auto rows = statement(fmt::format(
        "SELECT t.id, t.all_agents, COUNT(a.id), COALESCE(SUM(CASE WHEN a.state = {} THEN 1 ELSE 0 END), 0) "
        "FROM tasks t "
        "LEFT JOIN task_groups tg ON tg.task_id = t.id LEFT JOIN agents a ON a.group_id = tg.group_id "
        "WHERE t.id IN ({}) GROUP BY t.id",
        static_cast<int>(v1::AGENT_STATE_ONLINE), placeholders));
    bind_ids(rows);
    std::vector<std::string> global_tasks;
    while (rows.next()) {
      if (rows.int64(1) != 0) {
        global_tasks.push_back(rows.text(0));
        continue;
      }
      const auto target = static_cast<std::uint32_t>(rows.int64(2));
      const auto online = static_cast<std::uint32_t>(rows.int64(3));
      each_position(rows.text(0), [&](v1::TaskSummary& summary) {
        summary.set_target_agent_count(target);
        summary.set_online_agent_count(online);
      });
    }
    if (!global_tasks.empty()) {
      auto all =
          statement(fmt::format("SELECT COUNT(*), COALESCE(SUM(CASE WHEN state = {} THEN 1 ELSE 0 END), 0) FROM agents",
                                static_cast<int>(v1::AGENT_STATE_ONLINE)));
      const bool counted = all.next();  // an aggregate always has its row
      const auto target = counted ? static_cast<std::uint32_t>(all.int64(0)) : 0U;
      const auto online = counted ? static_cast<std::uint32_t>(all.int64(1)) : 0U;
      for (const auto& id : global_tasks)
        each_position(id, [&](v1::TaskSummary& summary) {
          summary.set_target_agent_count(target);
          summary.set_online_agent_count(online);
        });
    }
  }
  return out;
}

std::vector<v1::Task> SqlStoreTransaction::tasks_for_group(std::string_view group_id) {
  auto rows = statement(
      "SELECT record FROM tasks WHERE all_agents = 1 OR id IN (SELECT task_id FROM task_groups WHERE group_id = ?1) "
      "ORDER BY name");
  rows.bind(1, group_id);
  return read_tasks(rows);
}

std::vector<v1::Task> SqlStoreTransaction::all_tasks() {
  auto rows = statement("SELECT record FROM tasks ORDER BY id");
  return read_tasks(rows);
}

// ---- groups ----

std::optional<v1::Group> SqlStoreTransaction::group(std::string_view id) {
  auto rows = statement("SELECT record FROM groups WHERE id = ?1");
  rows.bind(1, id);
  if (!rows.next()) return std::nullopt;
  v1::Group out;
  parse_record(rows.blob(0), out);
  return out;
}

std::optional<v1::Group> SqlStoreTransaction::group_by_name(std::string_view name) {
  auto rows = statement("SELECT record FROM groups WHERE name = ?1");
  rows.bind(1, name);
  if (!rows.next()) return std::nullopt;
  v1::Group out;
  parse_record(rows.blob(0), out);
  return out;
}

void SqlStoreTransaction::put_group(const v1::Group& group) {
  require_writable("put_group");
  if (group.id().empty()) throw_invalid("group", "id", "is empty");
  if (group.name().empty()) throw_invalid("group", "name", "is empty");
  {
    auto other = statement("SELECT id FROM groups WHERE name = ?1 AND id <> ?2");
    other.bind(1, group.name()).bind(2, group.id());
    require_name_free(other, "group", group.name(), "group");
  }
  statement(
      "INSERT INTO groups (id, name, description, created_at_unix_ms, record) VALUES (?1, ?2, ?3, ?4, ?5) "
      "ON CONFLICT (id) DO UPDATE SET name = excluded.name, description = excluded.description, "
      "created_at_unix_ms = excluded.created_at_unix_ms, record = excluded.record")
      .bind(1, group.id())
      .bind(2, group.name())
      .bind(3, group.description())
      .bind(4, group.created_at_unix_ms())
      .bind_blob(5, serialize_deterministic(group))
      .run();
  statement("DELETE FROM group_tags WHERE group_id = ?1").bind(1, group.id()).run();
  for (const auto& tag : group.tags())
    statement("INSERT INTO group_tags (group_id, tag) VALUES (?1, ?2) ON CONFLICT DO NOTHING")
        .bind(1, group.id())
        .bind(2, tag)
        .run();
}

bool SqlStoreTransaction::delete_group(std::string_view id) {
  require_writable("delete_group");
  // Task bindings and agents' group ids are the catalog's to settle (it refuses to delete a
  // group that tasks are bound to); the store removes only the group itself.
  const bool deleted = statement("DELETE FROM groups WHERE id = ?1").bind(1, id).run() > 0;
  statement("DELETE FROM group_tags WHERE group_id = ?1").bind(1, id).run();
  return deleted;
}

Listing<v1::GroupSummary> SqlStoreTransaction::list_groups(const v1::ListGroupsRequest& request) {
  constexpr std::string_view input = "group list request";
  SqlConditions where;
  if (!request.keyword().empty()) add_keyword_condition(where, request.keyword(), k_group_keyword_columns);
  if (!request.tag().empty())
    where.add("EXISTS (SELECT 1 FROM group_tags gt WHERE gt.group_id = g.id AND gt.tag = ?)", {request.tag()});
  const auto order = order_by(request.sort(), "name", k_group_sort_keys, "g.id", input, db_.dialect().nulls_sort_high);
  const auto paging = paging_of(request.page(), request.page_size());

  Listing<v1::GroupSummary> out;
  out.total = count("SELECT COUNT(*) FROM groups g" + where.where(), where.values());
  auto rows = statement(fmt::format(
      "SELECT g.record, (SELECT COUNT(*) FROM agents a WHERE a.group_id = g.id) AS agent_count, "
      "(SELECT COUNT(*) FROM agents a WHERE a.group_id = g.id AND a.state = {}) AS online_agent_count, "
      "(SELECT COUNT(*) FROM task_groups tg WHERE tg.group_id = g.id) AS task_count FROM groups g{}{} LIMIT ? OFFSET ?",
      static_cast<int>(v1::AGENT_STATE_ONLINE), where.where(), order));
  const int next = rows.bind_all(where.values());
  rows.bind(next, paging.limit).bind(next + 1, paging.offset);
  while (rows.next()) {
    auto& summary = out.items.emplace_back();
    parse_record(rows.blob(0), *summary.mutable_group());
    summary.set_agent_count(static_cast<std::uint32_t>(rows.int64(1)));
    summary.set_online_agent_count(static_cast<std::uint32_t>(rows.int64(2)));
    summary.set_task_count(static_cast<std::uint32_t>(rows.int64(3)));
  }
  return out;
}

std::vector<std::string> SqlStoreTransaction::tasks_bound_to(std::string_view group_id) {
  auto rows = statement("SELECT task_id FROM task_groups WHERE group_id = ?1 ORDER BY task_id");
  rows.bind(1, group_id);
  std::vector<std::string> out;
  while (rows.next()) out.push_back(rows.text(0));
  return out;
}

// ---- agents ----

std::vector<v1::Agent> SqlStoreTransaction::read_agents(BorrowedStatement& rows) {
  std::vector<v1::Agent> out;
  while (rows.next()) {
    auto& agent = out.emplace_back();
    parse_record(rows.blob(0), agent);
    agent.set_group_name(rows.text(1));  // output only: the group's current name
  }
  return out;
}

std::optional<v1::Agent> SqlStoreTransaction::agent(std::string_view id) {
  auto rows =
      statement("SELECT a.record, g.name FROM agents a LEFT JOIN groups g ON g.id = a.group_id WHERE a.id = ?1");
  rows.bind(1, id);
  auto agents = read_agents(rows);
  if (agents.empty()) return std::nullopt;
  return std::move(agents.front());
}

bool SqlStoreTransaction::delete_agent(std::string_view id) {
  require_writable("delete_agent");
  statement("DELETE FROM agent_labels WHERE agent_id = ?1").bind(1, id).run();
  statement("DELETE FROM agent_ips WHERE agent_id = ?1").bind(1, id).run();
  return statement("DELETE FROM agents WHERE id = ?1").bind(1, id).run() > 0;
}

void SqlStoreTransaction::put_agent(const v1::Agent& agent) {
  require_writable("put_agent");
  if (agent.id().empty()) throw_invalid("agent", "id", "is empty");
  v1::Agent stored = agent;
  stored.clear_group_name();
  statement(
      "INSERT INTO agents (id, hostname, group_id, state, push_state, last_heartbeat_unix_ms, running_executions, "
      "record) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (id) DO UPDATE SET hostname = excluded.hostname, "
      "group_id = excluded.group_id, state = excluded.state, push_state = excluded.push_state, "
      "last_heartbeat_unix_ms = excluded.last_heartbeat_unix_ms, running_executions = excluded.running_executions, "
      "record = excluded.record")
      .bind(1, agent.id())
      .bind(2, agent.hostname())
      .bind(3, agent.group_id())
      .bind(4, static_cast<std::int64_t>(agent.state()))
      .bind(5, static_cast<std::int64_t>(agent.push_status().state()))
      .bind(6, agent.last_heartbeat_unix_ms())
      .bind(7, static_cast<std::int64_t>(agent.running_executions()))
      .bind_blob(8, serialize_deterministic(stored))
      .run();
  statement("DELETE FROM agent_labels WHERE agent_id = ?1").bind(1, agent.id()).run();
  for (const auto& [key, value] : agent.labels())
    statement("INSERT INTO agent_labels (agent_id, key, value) VALUES (?1, ?2, ?3)")
        .bind(1, agent.id())
        .bind(2, key)
        .bind(3, value)
        .run();
  statement("DELETE FROM agent_ips WHERE agent_id = ?1").bind(1, agent.id()).run();
  for (const auto& ip : agent.ips())
    statement("INSERT INTO agent_ips (agent_id, ip) VALUES (?1, ?2) ON CONFLICT DO NOTHING")
        .bind(1, agent.id())
        .bind(2, ip)
        .run();
}

Listing<v1::Agent> SqlStoreTransaction::list_agents(const v1::ListAgentsRequest& request) {
  constexpr std::string_view input = "agent list request";
  SqlConditions where;
  if (!request.keyword().empty()) add_keyword_condition(where, request.keyword(), k_agent_keyword_columns);
  if (!request.group_id().empty()) where.add("a.group_id = ?", {request.group_id()});
  if (request.state() != v1::AGENT_STATE_UNSPECIFIED)
    where.add("a.state = ?", {static_cast<std::int64_t>(request.state())});
  if (request.push_state() != v1::CONFIG_PUSH_STATE_UNSPECIFIED)
    where.add("a.push_state = ?", {static_cast<std::int64_t>(request.push_state())});
  add_label_conditions(where, request.label_selector(), input,
                       "EXISTS (SELECT 1 FROM agent_labels l WHERE l.agent_id = a.id AND l.key = ? AND l.value = ?)");
  const auto order =
      order_by(request.sort(), "hostname", k_agent_sort_keys, "a.id", input, db_.dialect().nulls_sort_high);
  const auto paging = paging_of(request.page(), request.page_size());

  Listing<v1::Agent> out;
  out.total = count("SELECT COUNT(*) FROM agents a" + where.where(), where.values());
  auto rows = statement("SELECT a.record, g.name FROM agents a LEFT JOIN groups g ON g.id = a.group_id" +
                        where.where() + order + " LIMIT ? OFFSET ?");
  const int next = rows.bind_all(where.values());
  rows.bind(next, paging.limit).bind(next + 1, paging.offset);
  out.items = read_agents(rows);
  return out;
}

std::vector<v1::Agent> SqlStoreTransaction::agents_in_group(std::string_view group_id) {
  auto rows = statement(
      "SELECT a.record, g.name FROM agents a LEFT JOIN groups g ON g.id = a.group_id WHERE a.group_id = ?1 "
      "ORDER BY a.id");
  rows.bind(1, group_id);
  return read_agents(rows);
}

// ---- scheduler fire state ----

FireState SqlStoreTransaction::fire_state(std::string_view task_id) {
  auto rows = statement("SELECT last_fire_unix_ms, next_fire_unix_ms FROM fire_state WHERE task_id = ?1");
  rows.bind(1, task_id);
  FireState out;
  if (!rows.next()) return out;
  if (!rows.is_null(0)) out.last_fire = instant_of(rows.int64(0));
  if (!rows.is_null(1)) out.next_fire = instant_of(rows.int64(1));
  return out;
}

void SqlStoreTransaction::put_fire_state(std::string_view task_id, const FireState& state) {
  require_writable("put_fire_state");
  auto as_ms = [](const std::optional<Instant>& t) -> std::optional<std::int64_t> {
    if (!t) return std::nullopt;
    return to_unix_ms(*t);
  };
  statement(
      "INSERT INTO fire_state (task_id, last_fire_unix_ms, next_fire_unix_ms) VALUES (?1, ?2, ?3) ON CONFLICT "
      "(task_id) DO UPDATE SET last_fire_unix_ms = excluded.last_fire_unix_ms, next_fire_unix_ms = "
      "excluded.next_fire_unix_ms")
      .bind(1, task_id)
      .bind_optional(2, as_ms(state.last_fire))
      .bind_optional(3, as_ms(state.next_fire))
      .run();
}

// ---- audit ----

void SqlStoreTransaction::append_audit(const v1::AuditEntry& entry) {
  require_writable("append_audit");
  v1::AuditEntry stored = entry;
  stored.set_id(0);  // the sequence number is the row's, set on every read
  if (stored.at_unix_ms() == 0) stored.set_at_unix_ms(now_unix_ms());
  statement(
      "INSERT INTO audit (at_unix_ms, actor, action, target_type, target_id, target_name, detail, record) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)")
      .bind(1, stored.at_unix_ms())
      .bind(2, stored.actor())
      .bind(3, stored.action())
      .bind(4, stored.target_type())
      .bind(5, stored.target_id())
      .bind(6, stored.target_name())
      .bind(7, stored.detail())
      .bind_blob(8, serialize_deterministic(stored))
      .run();
}

Listing<v1::AuditEntry> SqlStoreTransaction::list_audit(const v1::ListAuditRequest& request) {
  constexpr std::string_view input = "audit list request";
  SqlConditions where;
  if (!request.actor().empty()) where.add("a.actor = ?", {request.actor()});
  if (!request.action().empty()) {
    if (request.action().back() == '.')
      where.add("substr(a.action, 1, ?) = ?", {static_cast<std::int64_t>(request.action().size()), request.action()});
    else where.add("a.action = ?", {request.action()});
  }
  if (!request.target_type().empty()) where.add("a.target_type = ?", {request.target_type()});
  if (!request.target_id().empty()) where.add("a.target_id = ?", {request.target_id()});
  if (request.from_unix_ms() != 0) where.add("a.at_unix_ms >= ?", {request.from_unix_ms()});
  if (request.to_unix_ms() != 0) where.add("a.at_unix_ms < ?", {request.to_unix_ms()});
  if (!request.keyword().empty()) add_keyword_condition(where, request.keyword(), k_audit_keyword_columns);
  const auto order =
      order_by(request.sort(), "-at_unix_ms", k_audit_sort_keys, "a.id", input, db_.dialect().nulls_sort_high);
  const auto paging = paging_of(request.page(), request.page_size());

  Listing<v1::AuditEntry> out;
  out.total = count("SELECT COUNT(*) FROM audit a" + where.where(), where.values());
  auto rows = statement("SELECT a.id, a.record FROM audit a" + where.where() + order + " LIMIT ? OFFSET ?");
  const int next = rows.bind_all(where.values());
  rows.bind(next, paging.limit).bind(next + 1, paging.offset);
  while (rows.next()) {
    auto& entry = out.items.emplace_back();
    parse_record(rows.blob(1), entry);
    entry.set_id(rows.int64(0));
  }
  return out;
}

}  // namespace quartzflow::detail
