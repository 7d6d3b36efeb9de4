// SPDX-License-Identifier: Apache-2.0
#include <quartzflow/task.hpp>
#include <quartzflow/task_builder.hpp>

#include <utility>

namespace quartzflow {

TaskBuilder::TaskBuilder(std::string name) {
  task_.set_id(name);
  task_.set_name(std::move(name));
  task_.set_enabled(true);
}

TaskBuilder& TaskBuilder::id(std::string id) {
  task_.set_id(std::move(id));
  return *this;
}

TaskBuilder& TaskBuilder::description(std::string text) {
  task_.set_description(std::move(text));
  return *this;
}

TaskBuilder& TaskBuilder::enabled(bool enabled) {
  task_.set_enabled(enabled);
  return *this;
}

TaskBuilder& TaskBuilder::schedule(const ScheduleSpec& spec) {
  schedule_spec_to_proto(spec, *task_.mutable_schedule());
  return *this;
}

TaskBuilder& TaskBuilder::schedule(std::string_view text) {
  error_code ec;
  ValidationError detail;
  auto spec = ScheduleSpec::from_text(text, ec, &detail);
  if (!spec) {
    if (!problem_) problem_ = std::move(detail);
    return *this;
  }
  // The text sets the kind; the zone and the rest stay as set before.
  auto zone = task_.schedule().time_zone();
  spec->time_zone = zone.empty() ? "UTC" : std::move(zone);
  return schedule(*spec);
}

TaskBuilder& TaskBuilder::cron(std::string expression) {
  task_.mutable_schedule()->set_cron(std::move(expression));
  return *this;
}

TaskBuilder& TaskBuilder::every(std::chrono::seconds period) {
  task_.mutable_schedule()->set_interval_seconds(static_cast<std::uint32_t>(period.count()));
  return *this;
}

TaskBuilder& TaskBuilder::time_zone(std::string zone) {
  task_.mutable_schedule()->set_time_zone(std::move(zone));
  return *this;
}

TaskBuilder& TaskBuilder::misfire(MisfirePolicy policy) {
  switch (policy) {
    case MisfirePolicy::skip: task_.set_misfire_policy(v1::MISFIRE_POLICY_SKIP); break;
    case MisfirePolicy::fire_once: task_.set_misfire_policy(v1::MISFIRE_POLICY_FIRE_ONCE); break;
    case MisfirePolicy::fire_all: task_.set_misfire_policy(v1::MISFIRE_POLICY_FIRE_ALL); break;
  }
  return *this;
}

TaskBuilder& TaskBuilder::shell(std::vector<std::string> argv) {
  auto* shell = task_.mutable_shell();
  shell->clear_argv();
  for (auto& arg : argv) shell->add_argv(std::move(arg));
  return *this;
}

TaskBuilder& TaskBuilder::script(std::string script) {
  task_.mutable_shell()->set_script(std::move(script));
  return *this;
}

TaskBuilder& TaskBuilder::http(std::string method, std::string url) {
  auto* http = task_.mutable_http();
  http->set_method(std::move(method));
  http->set_url(std::move(url));
  return *this;
}

TaskBuilder& TaskBuilder::plugin(std::string name) {
  task_.mutable_plugin()->set_name(std::move(name));
  return *this;
}

TaskBuilder& TaskBuilder::timeout(std::chrono::seconds timeout) {
  task_.set_timeout_seconds(static_cast<std::uint32_t>(timeout.count()));
  return *this;
}

TaskBuilder& TaskBuilder::retry(std::uint32_t max_retries, std::chrono::seconds interval) {
  task_.mutable_retry()->set_max_retries(max_retries);
  task_.mutable_retry()->set_interval_seconds(static_cast<std::uint32_t>(interval.count()));
  return *this;
}

TaskBuilder& TaskBuilder::on_every_agent() {
  task_.mutable_placement()->set_mode(v1::PLACEMENT_MODE_ALL);
  return *this;
}

TaskBuilder& TaskBuilder::on_one_agent(v1::RoutingStrategy routing) {
  task_.mutable_placement()->set_mode(v1::PLACEMENT_MODE_ONE);
  task_.mutable_placement()->set_routing(routing);
  return *this;
}

TaskBuilder& TaskBuilder::sharded(std::uint32_t shards) {
  task_.mutable_placement()->set_mode(v1::PLACEMENT_MODE_SHARDED);
  task_.mutable_placement()->set_shard_count(shards);
  return *this;
}

TaskBuilder& TaskBuilder::delivery(v1::DeliveryGuarantee guarantee) {
  task_.set_delivery_guarantee(guarantee);
  return *this;
}

TaskBuilder& TaskBuilder::overlap(v1::OverlapPolicy policy, std::uint32_t max_concurrent_runs) {
  task_.set_overlap_policy(policy);
  task_.set_max_concurrent_runs(max_concurrent_runs);
  return *this;
}

TaskBuilder& TaskBuilder::group(std::string group) {
  task_.add_group_ids(std::move(group));
  return *this;
}

TaskBuilder& TaskBuilder::all_agents() {
  task_.set_all_agents(true);
  return *this;
}

TaskBuilder& TaskBuilder::param(std::string name, std::string default_value, bool required) {
  auto* param = task_.add_params();
  param->set_name(std::move(name));
  param->set_default_value(std::move(default_value));
  param->set_required(required);
  return *this;
}

TaskBuilder& TaskBuilder::label(std::string key, std::string value) {
  (*task_.mutable_labels())[std::move(key)] = std::move(value);
  return *this;
}

std::optional<v1::Task> TaskBuilder::build(error_code& ec, ValidationError* detail) const {
  auto problem = problem_ ? problem_ : validate_task(task_);
  if (problem) {
    ec = errc::invalid_argument;
    if (detail) *detail = std::move(*problem);
    return std::nullopt;
  }
  ec = {};
  return task_;
}

v1::Task TaskBuilder::build() const {
  error_code ec;
  ValidationError detail;
  auto task = build(ec, &detail);
  if (!task) throw error(ec, std::move(detail));
  return std::move(*task);
}

}  // namespace quartzflow
