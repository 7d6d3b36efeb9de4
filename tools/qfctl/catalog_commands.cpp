// SPDX-License-Identifier: Apache-2.0
// `qfctl group ...` and `qfctl agent ...` through the admin API: host groups and the agents
// in them.
#include <iostream>
#include <memory>

#include <fmt/format.h>

#include <quartzflow/v1/admin.pb.h>

#include "api.hpp"
#include "commands.hpp"
#include "enrolment_commands.hpp"
#include "table.hpp"

namespace qfctl {
namespace {

namespace v1 = quartzflow::v1;

struct CatalogArgs {
  std::string id;
  std::string file;
  std::string group;
  std::string state;
  std::string keyword;
  std::vector<std::string> agent_ids;
  std::uint32_t page = 1;
  std::uint32_t page_size = 20;
};

std::string joined(const google::protobuf::RepeatedPtrField<std::string>& words, std::string_view separator = ",") {
  std::string text;
  for (const auto& w : words) text += (text.empty() ? "" : std::string(separator)) + w;
  return text.empty() ? "-" : text;
}

std::string group_path(ApiClient& api, const std::string& reference) { return "/groups/" + url_encode(group_id_of(api, reference)); }

std::string state_text(v1::AgentState state) {
  return state == v1::AGENT_STATE_UNSPECIFIED ? "-" : short_enum_name(v1::AgentState_descriptor(), state);
}

std::string config_text(const v1::Agent& a) {
  const auto push = a.has_push_status() ? a.push_status().state() : v1::CONFIG_PUSH_STATE_UNSPECIFIED;
  return fmt::format("{}/{}{}", a.applied_config_version(), a.desired_config_version(),
                     push == v1::CONFIG_PUSH_STATE_UNSPECIFIED
                         ? ""
                         : " " + short_enum_name(v1::ConfigPushState_descriptor(), push));
}

void print_agents(const ApiFlags& flags, const v1::ListAgentsResponse& listing) {
  if (flags.format() != OutputFormat::table) return print_message(listing, flags.format());
  if (listing.items().empty()) {
    std::cout << "no agents match\n";
    return;
  }
  Table table({"ID", "HOSTNAME", "STATE", "GROUP", "VERSION", "LAST HEARTBEAT", "RUNNING", "CONFIG"});
  for (const auto& a : listing.items())
    table.add({a.id(), a.hostname(), state_text(a.state()), a.group_name().empty() ? (a.group_id().empty() ? "-" : a.group_id()) : a.group_name(),
               a.version(), time_text(a.last_heartbeat_unix_ms()), std::to_string(a.running_executions()), config_text(a)});
  table.print(std::cout);
  print_paging(static_cast<std::size_t>(listing.items_size()), listing.total(), listing.page(), listing.page_size());
}

Query agent_query(ApiClient& api, const CatalogArgs& args, bool with_group) {
  Query query{{"page", std::to_string(args.page)}, {"page_size", std::to_string(args.page_size)}};
  if (with_group && !args.group.empty()) query.emplace_back("group_id", group_id_of(api, args.group));
  if (!args.keyword.empty()) query.emplace_back("keyword", args.keyword);
  if (!args.state.empty()) {
    if (!parse_enum_name(v1::AgentState_descriptor(), args.state))
      throw CommandFailure{k_exit_invalid_input, fmt::format("--state \"{}\": expected one of {}", args.state,
                                                             enum_choices(v1::AgentState_descriptor()))};
    query.emplace_back("state", args.state);
  }
  return query;
}

// --- groups ------------------------------------------------------------------------------

void run_group_ls(const ApiFlags& flags, const CatalogArgs& args) {
  auto api = ApiClient::from_flags(flags);
  Query query{{"page", std::to_string(args.page)}, {"page_size", std::to_string(args.page_size)}};
  if (!args.keyword.empty()) query.emplace_back("keyword", args.keyword);
  const auto listing = api.get<v1::ListGroupsResponse>("/groups", query);
  if (flags.format() != OutputFormat::table) return print_message(listing, flags.format());
  if (listing.items().empty()) {
    std::cout << "no groups\n";
    return;
  }
  Table table({"ID", "NAME", "AGENTS", "ONLINE", "TASKS", "TAGS", "DESCRIPTION"});
  for (const auto& s : listing.items())
    table.add({s.group().id(), s.group().name(), std::to_string(s.agent_count()), std::to_string(s.online_agent_count()),
               std::to_string(s.task_count()), joined(s.group().tags()), s.group().description()});
  table.print(std::cout);
  print_paging(static_cast<std::size_t>(listing.items_size()), listing.total(), listing.page(), listing.page_size());
}

void run_group_get(const ApiFlags& flags, const CatalogArgs& args) {
  auto api = ApiClient::from_flags(flags);
  const auto s = api.get<v1::GroupSummary>(group_path(api, args.id));
  if (flags.format() != OutputFormat::table) return print_message(s, flags.format());
  const auto& g = s.group();
  std::vector<std::pair<std::string, std::string>> fields = {
      {"id", g.id()},
      {"name", g.name()},
      {"description", g.description().empty() ? "-" : g.description()},
      {"tags", joined(g.tags())},
      {"agents", fmt::format("{} ({} online)", s.agent_count(), s.online_agent_count())},
      {"tasks", std::to_string(s.task_count())},
      {"revision", fmt::format("{} (updated {})", g.revision(), time_text(g.updated_at_unix_ms()))},
  };
  if (g.has_membership()) {
    const auto& m = g.membership();
    fields.emplace_back("member cidrs", joined(m.cidrs()));
    fields.emplace_back("member hostnames", joined(m.hostname_globs()));
    fields.emplace_back("rule priority", std::to_string(m.priority()));
  }
  print_fields(fields);
}

void run_group_create(const ApiFlags& flags, const CatalogArgs& args) {
  v1::Group group;
  read_message_file(args.file, group);
  auto api = ApiClient::from_flags(flags);
  const auto created = api.post<v1::Group>("/groups", &group);
  if (flags.format() != OutputFormat::table) return print_message(created, flags.format());
  std::cout << fmt::format("created group {} ({})\n", created.id(), created.name());
}

void run_group_rm(const ApiFlags& flags, const CatalogArgs& args) {
  auto api = ApiClient::from_flags(flags);
  const auto path = group_path(api, args.id);
  api.remove(path);
  if (flags.format() == OutputFormat::table) std::cout << fmt::format("deleted group {}\n", args.id);
}

void run_group_agents(const ApiFlags& flags, const CatalogArgs& args) {
  auto api = ApiClient::from_flags(flags);
  const auto path = group_path(api, args.id) + "/agents";
  print_agents(flags, api.get<v1::ListAgentsResponse>(path, agent_query(api, args, false)));
}

// --- agents ------------------------------------------------------------------------------

void run_agent_ls(const ApiFlags& flags, const CatalogArgs& args) {
  auto api = ApiClient::from_flags(flags);
  print_agents(flags, api.get<v1::ListAgentsResponse>("/agents", agent_query(api, args, true)));
}

void run_agent_get(const ApiFlags& flags, const CatalogArgs& args) {
  auto api = ApiClient::from_flags(flags);
  const auto a = api.get<v1::Agent>("/agents/" + url_encode(args.id));
  if (flags.format() != OutputFormat::table) return print_message(a, flags.format());
  std::vector<std::pair<std::string, std::string>> fields = {
      {"id", a.id()},
      {"hostname", a.hostname()},
      {"ips", joined(a.ips(), ", ")},
      {"state", fmt::format("{} since {}", state_text(a.state()), time_text(a.state_changed_unix_ms()))},
      {"group", fmt::format("{} ({})", a.group_name().empty() ? (a.group_id().empty() ? "-" : a.group_id()) : a.group_name(),
                            short_enum_name(v1::GroupAssignment_descriptor(), a.group_assignment()))},
      {"version", fmt::format("{} on {}", a.version(), a.platform())},
      {"last heartbeat", time_text(a.last_heartbeat_unix_ms())},
      {"clock offset", fmt::format("{} ms", a.clock_offset_ms())},
      {"running", std::to_string(a.running_executions())},
      {"load", fmt::format("{:.2f}", a.load_average_1m())},
      {"config", config_text(a)},
      {"unsynced records", std::to_string(a.pending_sync_records())},
  };
  if (a.has_push_status() && !a.push_status().error().empty()) fields.emplace_back("push error", a.push_status().error());
  for (const auto& e : a.push_status().task_errors())
    fields.emplace_back("task error", fmt::format("{}: {}: {}", e.task_id(), e.field(), e.reason()));
  std::string labels;
  for (const auto& [key, value] : a.labels()) labels += (labels.empty() ? "" : ",") + key + "=" + value;
  fields.emplace_back("labels", labels.empty() ? "-" : labels);
  print_fields(fields);
}

void run_agent_move(const ApiFlags& flags, const CatalogArgs& args) {
  auto api = ApiClient::from_flags(flags);
  v1::MoveAgentsRequest request;
  request.set_group_id(group_id_of(api, args.group));
  for (const auto& id : args.agent_ids) request.add_agent_ids(id);
  const auto response = api.post<v1::MoveAgentsResponse>("/agents/move", &request);
  if (flags.format() != OutputFormat::table) return print_message(response, flags.format());
  bool all_ok = true;
  for (const auto& r : response.results()) {
    if (r.ok()) {
      std::cout << fmt::format("moved agent {} to {}\n", r.id(), args.group.empty() ? "(no group)" : args.group);
    } else {
      all_ok = false;
      std::cerr << fmt::format("qfctl: agent {}: {}\n", r.id(), r.error().message());
    }
  }
  if (!all_ok) throw CommandFailure{k_exit_invalid_input, "some agents were not moved"};
}

void run_agent_delete(const ApiFlags& flags, const CatalogArgs& args) {
  auto api = ApiClient::from_flags(flags);
  api.remove("/agents/" + url_encode(args.id));
  if (flags.format() == OutputFormat::table)
    std::cout << fmt::format("deleted agent {} (its history stays; it registers again if it connects)\n", args.id);
}

}  // namespace

void add_catalog_commands(CLI::App& app) {
  auto* group = app.add_subcommand("group", "host groups (admin API)");
  group->require_subcommand(1);
  auto group_flags = std::make_shared<ApiFlags>();
  add_api_flags(*group, *group_flags);
  group->fallthrough();
  auto args = std::make_shared<CatalogArgs>();

  auto* ls = group->add_subcommand("ls", "list groups with agent, online and task counts");
  ls->add_option("--keyword", args->keyword, "substring of the name or description");
  ls->add_option("--page", args->page, "page number")->check(CLI::Range(1u, 1000000u));
  ls->add_option("--page-size", args->page_size, "groups per page")->check(CLI::Range(1u, 500u))->capture_default_str();
  ls->callback([group_flags, args] { run_group_ls(*group_flags, *args); });
  auto* get = group->add_subcommand("get", "a group with its counts");
  get->add_option("id", args->id, "group id or name")->required();
  get->callback([group_flags, args] { run_group_get(*group_flags, *args); });
  auto* create = group->add_subcommand("create", "create a group from a YAML or JSON file (a Group)");
  create->add_option("-f,--file", args->file, "the group file; - for stdin")->required();
  create->callback([group_flags, args] { run_group_create(*group_flags, *args); });
  auto* rm = group->add_subcommand("rm", "delete a group no task is bound to");
  rm->add_option("id", args->id, "group id or name")->required();
  rm->callback([group_flags, args] { run_group_rm(*group_flags, *args); });
  auto* agents = group->add_subcommand("agents", "the agents of a group");
  agents->add_option("id", args->id, "group id or name")->required();
  agents->add_option("--state", args->state, "online, suspect, draining or offline");
  agents->callback([group_flags, args] { run_group_agents(*group_flags, *args); });

  auto* agent = app.add_subcommand("agent", "agents (admin API)");
  agent->require_subcommand(1);
  auto agent_flags = std::make_shared<ApiFlags>();
  add_api_flags(*agent, *agent_flags);
  agent->fallthrough();

  auto* agent_ls = agent->add_subcommand("ls", "list agents: state, group, heartbeat, config version");
  agent_ls->add_option("--group", args->group, "only agents of this group (id or name)");
  agent_ls->add_option("--state", args->state, "online, suspect, draining or offline");
  agent_ls->add_option("--keyword", args->keyword, "substring of the id, hostname or an IP");
  agent_ls->add_option("--page", args->page, "page number")->check(CLI::Range(1u, 1000000u));
  agent_ls->add_option("--page-size", args->page_size, "agents per page")->check(CLI::Range(1u, 500u))->capture_default_str();
  agent_ls->callback([agent_flags, args] { run_agent_ls(*agent_flags, *args); });
  auto* agent_get = agent->add_subcommand("get", "an agent");
  agent_get->add_option("id", args->id, "agent id")->required();
  agent_get->callback([agent_flags, args] { run_agent_get(*agent_flags, *args); });
  auto* agent_delete = agent->add_subcommand("delete", "delete an agent that is gone (refused while it is online)");
  agent_delete->alias("rm");
  agent_delete->add_option("id", args->id, "agent id")->required();
  agent_delete->callback([agent_flags, args] { run_agent_delete(*agent_flags, *args); });
  auto* agent_revoke = agent->add_subcommand(
      "revoke", "revoke an agent: its certificates are refused from now on and its session is closed");
  agent_revoke->add_option("id", args->id, "agent id")->required();
  agent_revoke->callback([agent_flags, args] { run_agent_revoke(*agent_flags, args->id); });
  auto* move = agent->add_subcommand("move", "place agents in a group by hand");
  move->add_option("--group", args->group, "target group id or name; \"\" takes them out of any group")->required();
  move->add_option("ids", args->agent_ids, "agent ids")->required();
  move->callback([agent_flags, args] { run_agent_move(*agent_flags, *args); });
  mention_api_flags(*group);
  mention_api_flags(*agent);
}

}  // namespace qfctl
