// SPDX-License-Identifier: Apache-2.0
// Group membership (configured group, manual moves, CIDR / hostname / label rules), the
// tasks an agent must hold, and the per-agent change to push.
#include <algorithm>
#include <array>
#include <cstring>
#include <map>

#include <arpa/inet.h>
#include <fnmatch.h>

#include <fmt/format.h>

#include <quartzflow/catalog.hpp>

namespace quartzflow {
namespace {

/// An address as bytes (4 for IPv4, 16 for IPv6); empty when unparsable.
std::vector<unsigned char> address_bytes(const std::string& text) {
  std::array<unsigned char, 16> buffer{};
  if (::inet_pton(AF_INET, text.c_str(), buffer.data()) == 1) return {buffer.begin(), buffer.begin() + 4};
  if (::inet_pton(AF_INET6, text.c_str(), buffer.data()) == 1) return {buffer.begin(), buffer.end()};
  return {};
}

struct Cidr {
  std::vector<unsigned char> network;
  int prefix = 0;
};

std::optional<Cidr> parse_cidr(const std::string& text) {
  const auto slash = text.find('/');
  Cidr cidr;
  cidr.network = address_bytes(text.substr(0, slash));
  if (cidr.network.empty()) return std::nullopt;
  const int bits = static_cast<int>(cidr.network.size() * 8);
  cidr.prefix = bits;
  if (slash != std::string::npos) {
    const std::string prefix = text.substr(slash + 1);
    if (prefix.empty() || prefix.size() > 3 || !std::all_of(prefix.begin(), prefix.end(), ::isdigit)) return std::nullopt;
    cidr.prefix = std::stoi(prefix);
    if (cidr.prefix > bits) return std::nullopt;
  }
  return cidr;
}

bool in_cidr(const std::vector<unsigned char>& address, const Cidr& cidr) {
  if (address.size() != cidr.network.size()) return false;
  int bits = cidr.prefix;
  for (std::size_t i = 0; i < address.size() && bits > 0; ++i, bits -= 8) {
    const unsigned char mask = bits >= 8 ? 0xff : static_cast<unsigned char>(0xff << (8 - bits));
    if ((address[i] & mask) != (cidr.network[i] & mask)) return false;
  }
  return true;
}

bool rule_matches(const v1::Agent& agent, const v1::GroupMembership& rules) {
  for (const auto& text : rules.cidrs()) {
    const auto cidr = parse_cidr(text);
    if (!cidr) continue;
    for (const auto& ip : agent.ips())
      if (in_cidr(address_bytes(ip), *cidr)) return true;
  }
  for (const auto& glob : rules.hostname_globs())
    if (::fnmatch(glob.c_str(), agent.hostname().c_str(), FNM_CASEFOLD) == 0) return true;
  for (const auto& selector : rules.label_selectors()) {
    if (selector.match_labels().empty()) continue;
    const bool all = std::all_of(selector.match_labels().begin(), selector.match_labels().end(), [&](const auto& kv) {
      auto it = agent.labels().find(kv.first);
      return it != agent.labels().end() && it->second == kv.second;
    });
    if (all) return true;
  }
  return false;
}

bool valid_name(const std::string& s) {
  return !s.empty() && s.size() <= 64 && std::all_of(s.begin(), s.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '.' || c == '_' || c == '-';
  });
}

}  // namespace

std::string resolve_group(const v1::Agent& agent, std::string_view configured_group,
                          const std::vector<v1::Group>& groups) {
  auto exists = [&](std::string_view id) {
    return std::any_of(groups.begin(), groups.end(), [&](const v1::Group& g) { return g.id() == id; });
  };
  if (agent.group_assignment() == v1::GROUP_ASSIGNMENT_MANUAL && exists(agent.group_id())) return agent.group_id();
  if (!configured_group.empty()) {
    for (const auto& g : groups)
      if (g.id() == configured_group || g.name() == configured_group) return g.id();
  }
  std::vector<const v1::Group*> ordered;
  for (const auto& g : groups) ordered.push_back(&g);
  std::sort(ordered.begin(), ordered.end(), [](const v1::Group* a, const v1::Group* b) {
    if (a->membership().priority() != b->membership().priority())
      return a->membership().priority() > b->membership().priority();
    return a->name() < b->name();
  });
  for (const auto* g : ordered)
    if (rule_matches(agent, g->membership())) return g->id();
  return {};
}

std::vector<v1::Task> tasks_for_agent(const v1::Agent& agent, const std::vector<v1::Task>& tasks) {
  std::vector<v1::Task> out;
  for (const auto& task : tasks)
    if (task_bound_to_agent(task, agent)) out.push_back(task);
  return out;
}

ConfigChange config_change(const std::vector<std::pair<std::string, std::int64_t>>& held,
                           const std::vector<v1::Task>& wanted) {
  std::map<std::string, std::int64_t, std::less<>> held_revisions(held.begin(), held.end());
  ConfigChange change;
  for (const auto& task : wanted) {
    auto it = held_revisions.find(task.id());
    if (it == held_revisions.end() || it->second != task.revision()) change.upserts.push_back(task);
    if (it != held_revisions.end()) held_revisions.erase(it);
  }
  for (const auto& [id, revision] : held_revisions) change.removals.push_back(id);
  return change;
}

std::optional<ValidationError> validate_group(const v1::Group& group) {
  const std::string input = fmt::format("group \"{}\"", group.name().substr(0, 64));
  auto fail = [&](std::string field, std::string reason) {
    return std::optional<ValidationError>(ValidationError{input, std::move(field), std::move(reason)});
  };
  if (!valid_name(group.name())) return fail("name", "must be 1-64 characters of A-Z a-z 0-9 . _ -");
  if (!group.id().empty() && !valid_name(group.id())) return fail("id", "must be 1-64 characters of A-Z a-z 0-9 . _ -");
  if (group.description().size() > 512) return fail("description", "is longer than 512 characters");
  // Lists are bounded and free of repeats: each costs memory on every push and membership check.
  const auto list_problem = [&](std::string_view field, const auto& values,
                                std::size_t max) -> std::optional<ValidationError> {
    if (static_cast<std::size_t>(values.size()) > max)
      return fail(std::string(field), fmt::format("has {} elements; at most {} are allowed", values.size(), max));
    for (int i = 0; i < values.size(); ++i)
      for (int j = 0; j < i; ++j)
        if (values[i] == values[j]) return fail(fmt::format("{}[{}]", field, i), fmt::format("repeats {}[{}]", field, j));
    return std::nullopt;
  };
  const auto& m = group.membership();
  if (auto e = list_problem("tags", group.tags(), 64)) return e;
  if (auto e = list_problem("membership.cidrs", m.cidrs(), 256)) return e;
  if (auto e = list_problem("membership.hostname_globs", m.hostname_globs(), 256)) return e;
  if (m.label_selectors_size() > 64)
    return fail("membership.label_selectors",
                fmt::format("has {} elements; at most 64 are allowed", m.label_selectors_size()));
  for (int i = 0; i < group.tags_size(); ++i)
    if (group.tags(i).empty() || group.tags(i).size() > 64)
      return fail(fmt::format("tags[{}]", i), "must be 1-64 characters");
  for (int i = 0; i < m.cidrs_size(); ++i)
    if (!parse_cidr(m.cidrs(i)))
      return fail(fmt::format("membership.cidrs[{}]", i),
                  fmt::format("\"{}\" is not a CIDR such as 10.0.0.0/8 or fd00::/8", m.cidrs(i)));
  for (int i = 0; i < m.hostname_globs_size(); ++i)
    if (m.hostname_globs(i).empty() || m.hostname_globs(i).size() > 253)
      return fail(fmt::format("membership.hostname_globs[{}]", i), "must be 1-253 characters");
  for (int i = 0; i < m.label_selectors_size(); ++i) {
    if (m.label_selectors(i).match_labels().empty())
      return fail(fmt::format("membership.label_selectors[{}].match_labels", i), "must name at least one label");
    if (m.label_selectors(i).match_labels_size() > 64)
      return fail(fmt::format("membership.label_selectors[{}].match_labels", i), "has more than 64 labels");
    for (const auto& [k, v] : m.label_selectors(i).match_labels())
      if (k.empty() || k.size() > 63)
        return fail(fmt::format("membership.label_selectors[{}].match_labels", i),
                    fmt::format("label key \"{}\" must be 1-63 characters", k));
  }
  return std::nullopt;
}

}  // namespace quartzflow
