// SPDX-License-Identifier: Apache-2.0
// TaskBuilder: a task config in a few readable lines instead of a hand-made protobuf message.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <quartzflow/error.hpp>
#include <quartzflow/schedule.hpp>
#include <quartzflow/v1/task.pb.h>

namespace quartzflow {

/**
 * Builds a `v1::Task`. Setters record what they are given; `build()` validates the whole
 * task (as `validate_task` does) and reports the first problem with its field path:
 *
 *     auto task = qf::TaskBuilder("backup").cron("0 3 * * *").time_zone("Europe/Paris")
 *                     .shell({"/usr/local/bin/backup", "--full"}).timeout(std::chrono::minutes{30})
 *                     .build();  // throws qf::error naming the field
 *
 * Anything the builder has no setter for is reachable through `proto()`.
 * A new task is enabled; the id is the name unless `id()` says otherwise.
 */
class TaskBuilder {
 public:
  explicit TaskBuilder(std::string name);

  TaskBuilder& id(std::string id);
  TaskBuilder& description(std::string text);
  TaskBuilder& enabled(bool enabled);

  /// The whole schedule as a value (kind, zone, policies, window, limits, jitter).
  TaskBuilder& schedule(const ScheduleSpec& spec);
  /// The short text form: a cron expression or macro, `@every 90s`, `@delay 5m`,
  /// `@once 2026-12-01T00:00:00Z`, `@manual`; an invalid text fails `build()` at `schedule`.
  TaskBuilder& schedule(std::string_view text);
  TaskBuilder& cron(std::string expression);
  TaskBuilder& every(std::chrono::seconds period);
  TaskBuilder& time_zone(std::string zone);
  TaskBuilder& misfire(MisfirePolicy policy);

  TaskBuilder& shell(std::vector<std::string> argv);
  TaskBuilder& script(std::string script);
  TaskBuilder& http(std::string method, std::string url);
  /// A C++ body registered under `name` (TaskEngine::plugins()).
  TaskBuilder& plugin(std::string name);

  TaskBuilder& timeout(std::chrono::seconds timeout);
  /// Up to `max_retries` more attempts, the first after `interval`.
  TaskBuilder& retry(std::uint32_t max_retries, std::chrono::seconds interval);
  /// Every agent of the task's groups runs it (the default).
  TaskBuilder& on_every_agent();
  /// The coordinator runs each fire on one agent.
  TaskBuilder& on_one_agent(v1::RoutingStrategy routing = v1::ROUTING_STRATEGY_UNSPECIFIED);
  /// The coordinator splits each fire into `shards` runs over the agents.
  TaskBuilder& sharded(std::uint32_t shards);
  TaskBuilder& delivery(v1::DeliveryGuarantee guarantee);
  TaskBuilder& overlap(v1::OverlapPolicy policy, std::uint32_t max_concurrent_runs = 1);
  /// Binds the task to a group (id or name); `all_agents()` to every agent instead.
  TaskBuilder& group(std::string group);
  TaskBuilder& all_agents();
  TaskBuilder& param(std::string name, std::string default_value = {}, bool required = false);
  TaskBuilder& label(std::string key, std::string value);

  /// The message being built, for fields without a setter.
  v1::Task& proto() noexcept { return task_; }

  /// The validated task; throws quartzflow::error (errc::invalid_argument, field and reason).
  v1::Task build() const;
  /// The same without exceptions: nullopt with `ec` and `detail` on the first problem.
  std::optional<v1::Task> build(error_code& ec, ValidationError* detail = nullptr) const;

 private:
  v1::Task task_;
  std::optional<ValidationError> problem_;  ///< a setter's input that could not be taken
};

}  // namespace quartzflow
