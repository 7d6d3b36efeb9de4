// SPDX-License-Identifier: Apache-2.0
// Live events for WebSocket clients: each subscriber has a filter and a sink; publishing
// never waits for a client (the sink queues, and drops a client that falls behind).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <quartzflow/v1/admin.pb.h>

#include "../common/clock.hpp"
#include "../common/utf8.hpp"

namespace quartzflow::detail {

class EventHub {
 public:
  /// Takes the event's JSON text (already serialized once for every subscriber).
  using Sink = std::function<void(const std::string& json)>;

  std::uint64_t subscribe(Sink sink) {
    const auto id = ++last_id_;
    subscribers_[id] = Subscriber{std::move(sink), {}};
    return id;
  }
  void unsubscribe(std::uint64_t id) { subscribers_.erase(id); }
  static constexpr int k_max_followed = 10;            ///< follow_execution_ids per subscription
  static constexpr int k_max_filter_ids = 1000;         ///< task_ids, agent_ids, group_ids each
  static constexpr std::size_t k_max_id_bytes = 256;    ///< any id in a subscription

  /// Why a subscription is refused (`field: reason`, at most 120 bytes: it goes into the
  /// WebSocket close reason), or empty when it is valid.
  static std::string validate(const v1::EventSubscription& filter) {
    if (filter.follow_execution_ids_size() > k_max_followed)
      return fmt::format("follow_execution_ids: at most {} executions, got {}", k_max_followed,
                         filter.follow_execution_ids_size());
    auto check = [](const char* field, const auto& ids, int most) -> std::string {
      if (ids.size() > most) return fmt::format("{}: at most {} ids, got {}", field, most, ids.size());
      for (int i = 0; i < ids.size(); ++i) {
        const std::string& id = ids.Get(i);
        if (id.empty()) return fmt::format("{}[{}]: must not be empty", field, i);
        if (id.size() > k_max_id_bytes) return fmt::format("{}[{}]: longer than {} bytes", field, i, k_max_id_bytes);
        if (detail::first_invalid_utf8(id) != std::string::npos) return fmt::format("{}[{}]: not valid UTF-8", field, i);
      }
      return {};
    };
    for (auto why : {check("follow_execution_ids", filter.follow_execution_ids(), k_max_followed),
                     check("task_ids", filter.task_ids(), k_max_filter_ids),
                     check("agent_ids", filter.agent_ids(), k_max_filter_ids),
                     check("group_ids", filter.group_ids(), k_max_filter_ids)})
      if (!why.empty()) return why;
    return {};
  }

  /// Replaces a subscriber's filter (an EventSubscription from the client).
  void set_filter(std::uint64_t id, v1::EventSubscription filter) {
    if (auto it = subscribers_.find(id); it != subscribers_.end()) it->second.filter = std::move(filter);
  }
  std::size_t size() const noexcept { return subscribers_.size(); }

  /// `task_id` / `agent_id` / `group_ids` say what the event is about (empty: not about one).
  void publish(v1::Event event, const std::string& task_id, const std::string& agent_id,
               const std::vector<std::string>& group_ids,
               const std::function<std::string(const v1::Event&)>& to_json) {
    if (subscribers_.empty()) return;
    event.set_at_unix_ms(now_unix_ms());
    std::string json;
    // A sink may unsubscribe (a dropped client) while we iterate: copy the ids first.
    std::vector<std::uint64_t> ids;
    for (const auto& [id, s] : subscribers_) ids.push_back(id);
    for (const auto id : ids) {
      auto it = subscribers_.find(id);
      if (it == subscribers_.end() || !wanted(it->second.filter, event.type(), task_id, agent_id, group_ids)) continue;
      if (json.empty()) json = to_json(event);
      it->second.sink(json);
    }
  }

  /// An EXECUTION_LOG event: only to subscribers that follow its execution
  /// (`follow_execution_ids`) and take that type (or did not name types).
  void publish_log(v1::Event event, const std::string& execution_id,
                   const std::function<std::string(const v1::Event&)>& to_json) {
    std::string json;
    std::vector<std::uint64_t> ids;
    for (const auto& [id, s] : subscribers_) {
      const auto& f = s.filter;
      const bool follows = std::find(f.follow_execution_ids().begin(), f.follow_execution_ids().end(),
                                     execution_id) != f.follow_execution_ids().end();
      const bool typed = f.types_size() == 0 ||
                         std::find(f.types().begin(), f.types().end(), v1::EVENT_TYPE_EXECUTION_LOG) != f.types().end();
      if (follows && typed) ids.push_back(id);
    }
    if (ids.empty()) return;
    event.set_at_unix_ms(now_unix_ms());
    for (const auto id : ids) {
      auto it = subscribers_.find(id);
      if (it == subscribers_.end()) continue;
      if (json.empty()) json = to_json(event);
      it->second.sink(json);
    }
  }

 private:
  struct Subscriber {
    Sink sink;
    v1::EventSubscription filter;
  };
  static bool wanted(const v1::EventSubscription& f, v1::EventType type, const std::string& task_id,
                     const std::string& agent_id, const std::vector<std::string>& group_ids) {
    const auto has = [](const auto& list, const auto& value) {
      return std::find(list.begin(), list.end(), value) != list.end();
    };
    if (f.types_size() > 0 ? !has(f.types(), type) : type == v1::EVENT_TYPE_EXECUTION_LOG) return false;
    if (f.task_ids_size() > 0 && (task_id.empty() || !has(f.task_ids(), task_id))) return false;
    if (f.agent_ids_size() > 0 && (agent_id.empty() || !has(f.agent_ids(), agent_id))) return false;
    if (f.group_ids_size() > 0 &&
        std::none_of(group_ids.begin(), group_ids.end(), [&](const std::string& g) { return has(f.group_ids(), g); }))
      return false;
    return true;
  }
  std::map<std::uint64_t, Subscriber> subscribers_;
  std::uint64_t last_id_ = 0;
};

}  // namespace quartzflow::detail
