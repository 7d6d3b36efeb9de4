// SPDX-License-Identifier: Apache-2.0
// Plugin executor: C++ callables registered by name, run on the io_context.
#include <map>

#include <utility>
#include <boost/asio/post.hpp>

#include <quartzflow/executor.hpp>

namespace quartzflow {

struct PluginExecutor::Impl {
  boost::asio::any_io_executor executor;
  std::map<std::string, PluginFunction, std::less<>> functions;
};

namespace {

/// Plugin calls run to completion once started; only a call still queued can be cancelled.
class PluginRun final : public RunningTask {
 public:
  explicit PluginRun(std::shared_ptr<std::optional<StopReason>> stop) : stop_(std::move(stop)) {}
  void stop(StopReason reason) override {
    if (!*stop_) *stop_ = reason;
  }

 private:
  std::shared_ptr<std::optional<StopReason>> stop_;
};

}  // namespace

PluginExecutor::PluginExecutor(boost::asio::any_io_executor executor) : impl_(std::make_unique<Impl>()) {
  impl_->executor = executor;
}
PluginExecutor::~PluginExecutor() = default;

void PluginExecutor::add(std::string name, PluginFunction function) {
  impl_->functions[std::move(name)] = std::move(function);
}

bool PluginExecutor::contains(const std::string& name) const { return impl_->functions.count(name) != 0; }

std::unique_ptr<RunningTask> PluginExecutor::start(RunRequest request, RunCompletion done) {
  auto stop = std::make_shared<std::optional<StopReason>>();
  auto it = impl_->functions.find(request.task->plugin().name());
  const PluginFunction* function = it == impl_->functions.end() ? nullptr : &it->second;
  // The request is moved into the call, not copied: at a burst of fires this is on the path
  // of every task's start.
  boost::asio::post(impl_->executor, [function, request = std::move(request), stop, done = std::move(done)]() mutable {
    RunOutcome outcome;
    if (*stop) {
      outcome.status = **stop == StopReason::timeout ? v1::EXECUTION_STATUS_TIMEOUT : v1::EXECUTION_STATUS_CANCELLED;
      outcome.failure_reason = **stop == StopReason::timeout ? "timeout" : "cancelled";
    } else if (function == nullptr) {
      outcome.status = v1::EXECUTION_STATUS_FAILURE;
      outcome.failure_reason = "unknown plugin";
      outcome.error_message = "no plugin named \"" + request.task->plugin().name() + "\" is registered";
    } else {
      PluginResult result;
      try {
        result = (*function)(PluginCall{&request, &request.task->plugin()});
      } catch (const std::exception& e) {
        result = {false, {}, std::string("plugin threw: ") + e.what()};
      } catch (...) {
        result = {false, {}, "plugin threw a non-standard exception"};
      }
      outcome.status = result.success ? v1::EXECUTION_STATUS_SUCCESS : v1::EXECUTION_STATUS_FAILURE;
      outcome.output_bytes = result.output.size();
      outcome.output = std::move(result.output);
      outcome.error_message = std::move(result.error_message);
      if (!result.success) outcome.failure_reason = "plugin failed";
    }
    done(std::move(outcome));
  });
  return std::make_unique<PluginRun>(std::move(stop));
}

}  // namespace quartzflow
