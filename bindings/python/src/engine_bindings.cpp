// SPDX-License-Identifier: Apache-2.0
// The embedded engine for Python: a TaskEngine and its LocalStore on an io_context thread of
// their own, with an executor that hands each run to a Python callable (the package's
// scheduler, which runs it on a worker thread or an asyncio loop) and takes its outcome back
// from any thread.
#include <atomic>
#include <chrono>
#include <cmath>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <google/protobuf/reflection.h>
#include <pybind11/stl.h>

#include <quartzflow/execution_status.hpp>
#include <quartzflow/executor.hpp>
#include <quartzflow/local_store.hpp>
#include <quartzflow/schedule.hpp>
#include <quartzflow/task.hpp>
#include <quartzflow/task_engine.hpp>

#include "common/enum_names.hpp"
#include "native.hpp"

namespace py = pybind11;
namespace asio = boost::asio;
namespace pb = google::protobuf;

namespace quartzflow::python {

namespace {

/// The plugin name of every task the Python scheduler makes; other plugin names go to the
/// engine's own C++ plugins.
constexpr const char* k_python_plugin = "python";

/// True while calls into the interpreter are allowed from a thread that is not Python's.
bool interpreter_usable() { return Py_IsInitialized() != 0 && _Py_IsFinalizing() == 0; }

/// A Python reference that threads without the GIL may hold and drop: it is released under
/// the GIL, or leaked when the interpreter is already gone.
class PyRef {
 public:
  PyRef() = default;
  explicit PyRef(py::object o) : ptr_(o.release().ptr()) {}
  PyRef(const PyRef&) = delete;
  PyRef& operator=(const PyRef&) = delete;
  /// Call with the GIL held (or on an empty reference).
  PyRef& operator=(PyRef&& other) noexcept {
    if (this != &other) {
      reset();
      ptr_ = std::exchange(other.ptr_, nullptr);
    }
    return *this;
  }
  ~PyRef() { reset(); }
  void reset() noexcept {
    PyObject* p = std::exchange(ptr_, nullptr);
    if (p == nullptr || !interpreter_usable()) return;
    py::gil_scoped_acquire gil;
    Py_DECREF(p);
  }
  /// A new reference; call with the GIL held.
  py::object get() const { return ptr_ ? py::reinterpret_borrow<py::object>(ptr_) : py::none(); }
  explicit operator bool() const noexcept { return ptr_ != nullptr; }

 private:
  PyObject* ptr_ = nullptr;
};

// --- protobuf messages as dicts -------------------------------------------------------

py::object field_value(const pb::Message& msg, const pb::FieldDescriptor* f, int index);

py::dict message_dict(const pb::Message& msg) {
  py::dict out;
  const pb::Descriptor* d = msg.GetDescriptor();
  const pb::Reflection* r = msg.GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    if (f->is_map()) {
      py::dict m;
      const auto* entry = f->message_type();
      for (int k = 0; k < r->FieldSize(msg, f); ++k) {
        const pb::Message& e = r->GetRepeatedMessage(msg, f, k);
        m[field_value(e, entry->field(0), -1)] = field_value(e, entry->field(1), -1);
      }
      out[f->name().c_str()] = m;
    } else if (f->is_repeated()) {
      py::list l;
      for (int k = 0; k < r->FieldSize(msg, f); ++k) l.append(field_value(msg, f, k));
      out[f->name().c_str()] = l;
    } else if (f->has_presence() && !r->HasField(msg, f)) {
      out[f->name().c_str()] = py::none();
    } else {
      out[f->name().c_str()] = field_value(msg, f, -1);
    }
  }
  return out;
}

py::object field_value(const pb::Message& msg, const pb::FieldDescriptor* f, int index) {
  const pb::Reflection* r = msg.GetReflection();
  const bool rep = index >= 0;
  switch (f->cpp_type()) {
    case pb::FieldDescriptor::CPPTYPE_INT32:
      return py::int_(rep ? r->GetRepeatedInt32(msg, f, index) : r->GetInt32(msg, f));
    case pb::FieldDescriptor::CPPTYPE_INT64:
      return py::int_(rep ? r->GetRepeatedInt64(msg, f, index) : r->GetInt64(msg, f));
    case pb::FieldDescriptor::CPPTYPE_UINT32:
      return py::int_(rep ? r->GetRepeatedUInt32(msg, f, index) : r->GetUInt32(msg, f));
    case pb::FieldDescriptor::CPPTYPE_UINT64:
      return py::int_(rep ? r->GetRepeatedUInt64(msg, f, index) : r->GetUInt64(msg, f));
    case pb::FieldDescriptor::CPPTYPE_DOUBLE:
      return py::float_(rep ? r->GetRepeatedDouble(msg, f, index) : r->GetDouble(msg, f));
    case pb::FieldDescriptor::CPPTYPE_FLOAT:
      return py::float_(rep ? r->GetRepeatedFloat(msg, f, index) : r->GetFloat(msg, f));
    case pb::FieldDescriptor::CPPTYPE_BOOL:
      return py::bool_(rep ? r->GetRepeatedBool(msg, f, index) : r->GetBool(msg, f));
    case pb::FieldDescriptor::CPPTYPE_ENUM: {
      const int number = rep ? r->GetRepeatedEnumValue(msg, f, index) : r->GetEnumValue(msg, f);
      return py::str(detail::EnumNames::of(f->enum_type()).short_name(number));
    }
    case pb::FieldDescriptor::CPPTYPE_STRING: {
      const std::string s = rep ? r->GetRepeatedString(msg, f, index) : r->GetString(msg, f);
      // Records hold valid UTF-8 (the engine checks); a log may not, so decode leniently.
      return py::reinterpret_steal<py::object>(
          PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace"));
    }
    case pb::FieldDescriptor::CPPTYPE_MESSAGE:
      return message_dict(rep ? r->GetRepeatedMessage(msg, f, index) : r->GetMessage(msg, f));
  }
  return py::none();
}

/// The enum value of `type` named `text` (short or full name), or InvalidSchedule on `field`.
int enum_value(const pb::EnumDescriptor* type, const std::string& text, const std::string& field) {
  const auto& names = detail::EnumNames::of(type);
  const auto* value = names.find(text);
  if (value == nullptr || value->number() == 0)
    raise_invalid({field + " \"" + text + "\"", field, "must be one of " + names.choices()});
  return value->number();
}

// --- jobs as tasks ---------------------------------------------------------------------

template <typename T>
T item(const py::dict& d, const char* key, T fallback) {
  if (!d.contains(key) || d[key].is_none()) return fallback;
  return d[key].cast<T>();
}

Instant to_instant(std::int64_t s) { return Instant{std::chrono::seconds{s}}; }

ScheduleSpec spec_from(const py::dict& s) {
  ScheduleSpec spec;
  const auto kind = item<std::string>(s, "kind", "manual");
  if (kind == "cron") {
    spec.kind = ScheduleKind::cron;
  } else if (kind == "interval") {
    spec.kind = ScheduleKind::interval;
  } else if (kind == "fixed_delay") {
    spec.kind = ScheduleKind::fixed_delay;
  } else if (kind == "once") {
    spec.kind = ScheduleKind::once;
  } else if (kind == "manual") {
    spec.kind = ScheduleKind::manual;
  } else {
    raise_invalid({"schedule kind \"" + kind + "\"", "schedule.kind",
                   "must be one of cron, interval, fixed_delay, once, manual"});
  }
  spec.cron = item<std::string>(s, "cron", "");
  spec.period = std::chrono::seconds{item<std::int64_t>(s, "period", 0)};
  if (auto at = item<std::optional<std::int64_t>>(s, "at", std::nullopt)) spec.at = to_instant(*at);
  spec.time_zone = item<std::string>(s, "time_zone", "UTC");
  const auto gap = item<std::string>(s, "gap", "shift");
  if (gap != "shift" && gap != "skip")
    raise_invalid({"DST gap policy \"" + gap + "\"", "schedule.gap", "must be one of shift, skip"});
  spec.gap = gap == "skip" ? DstGapPolicy::skip : DstGapPolicy::shift;
  const auto overlap = item<std::string>(s, "overlap", "first");
  if (overlap == "first") {
    spec.overlap = DstOverlapPolicy::first;
  } else if (overlap == "last") {
    spec.overlap = DstOverlapPolicy::last;
  } else if (overlap == "both") {
    spec.overlap = DstOverlapPolicy::both;
  } else {
    raise_invalid({"DST overlap policy \"" + overlap + "\"", "schedule.overlap", "must be one of first, last, both"});
  }
  if (auto w = item<std::optional<std::int64_t>>(s, "window_start", std::nullopt)) spec.window_start = to_instant(*w);
  if (auto w = item<std::optional<std::int64_t>>(s, "window_end", std::nullopt)) spec.window_end = to_instant(*w);
  spec.max_runs = item<std::uint64_t>(s, "max_runs", 0);
  spec.jitter = std::chrono::seconds{item<std::int64_t>(s, "jitter", 0)};
  return spec;
}

/// The task of a job: a `python` plugin task named after the job id, `all` placement.
v1::Task task_from(const py::dict& job) {
  v1::Task task;
  task.set_id(item<std::string>(job, "id", ""));
  task.set_name(task.id());
  task.set_description(item<std::string>(job, "description", ""));
  task.set_enabled(item<bool>(job, "enabled", true));
  task.mutable_plugin()->set_name(k_python_plugin);
  if (job.contains("schedule") && !job["schedule"].is_none())
    schedule_spec_to_proto(spec_from(job["schedule"].cast<py::dict>()), *task.mutable_schedule());
  task.set_timeout_seconds(item<std::uint32_t>(job, "timeout", 0));
  task.set_max_concurrent_runs(item<std::uint32_t>(job, "max_concurrent", 0));
  if (auto o = item<std::string>(job, "overlap", ""); !o.empty())
    task.set_overlap_policy(
        static_cast<v1::OverlapPolicy>(enum_value(v1::OverlapPolicy_descriptor(), o, "overlap_policy")));
  task.set_max_queued_runs(item<std::uint32_t>(job, "max_queued", 0));
  if (auto m = item<std::string>(job, "misfire", ""); !m.empty())
    task.set_misfire_policy(
        static_cast<v1::MisfirePolicy>(enum_value(v1::MisfirePolicy_descriptor(), m, "misfire_policy")));
  task.set_misfire_fire_all_limit(item<std::uint32_t>(job, "misfire_fire_all_limit", 0));
  if (job.contains("retry") && !job["retry"].is_none()) {
    auto r = job["retry"].cast<py::dict>();
    auto* retry = task.mutable_retry();
    retry->set_max_retries(item<std::uint32_t>(r, "max_retries", 0));
    retry->set_interval_seconds(item<std::uint32_t>(r, "interval", 0));
    retry->set_backoff_multiplier(item<double>(r, "backoff", 0.0));
    retry->set_max_interval_seconds(item<std::uint32_t>(r, "max_interval", 0));
    retry->set_jitter_seconds(item<std::uint32_t>(r, "jitter", 0));
    retry->set_retry_on_timeout(item<bool>(r, "on_timeout", false));
  }
  return task;
}

// --- the engine and its thread ---------------------------------------------------------

struct Core;

/**
 * One run handed to Python. `finish` may be called from any thread, once (later calls return
 * false); `stop` (the engine's timeout or cancel, on the io thread) ends the run at once and
 * calls the stop callback so that a coroutine is cancelled. A thread cannot be stopped: its
 * function goes on, and its late outcome is ignored.
 */
class RunHandle {
 public:
  RunHandle(std::shared_ptr<Core> core, std::string job_id, std::string execution_id, RunCompletion done)
      : core_(std::move(core)),
        job_id_(std::move(job_id)),
        execution_id_(std::move(execution_id)),
        done_(std::move(done)) {}

  bool finish(RunOutcome outcome);
  bool finish_py(const std::string& status, std::string output, std::string error_message, std::string reason) {
    RunOutcome o;
    o.status = static_cast<v1::ExecutionStatus>(enum_value(v1::ExecutionStatus_descriptor(), status, "status"));
    if (!is_final(o.status)) raise_invalid({"status \"" + status + "\"", "status", "must be a final state"});
    o.output_bytes = output.size();
    o.output = std::move(output);
    o.error_message = std::move(error_message);
    o.failure_reason = std::move(reason);
    py::gil_scoped_release unlocked;
    return finish(std::move(o));
  }

  /// Stores the callback; false (and not stored) when the run is already stopped or over.
  bool set_stop_callback(py::object callback) {
    auto ref = std::make_unique<PyRef>(std::move(callback));
    std::unique_ptr<PyRef> old;
    {
      std::lock_guard lock(mutex_);
      if (stopped_ || finished_) return false;
      old = std::move(stop_callback_);
      stop_callback_ = std::move(ref);
    }
    return true;
  }

  /// Engine side (io thread, no GIL). The outcome is settled before the callback runs, so
  /// that the coroutine's own end (CancelledError) cannot record CANCELLED for a timeout.
  void stop(StopReason reason) {
    std::unique_ptr<PyRef> callback;
    {
      std::lock_guard lock(mutex_);
      if (finished_) return;
      stopped_ = reason;
      callback = std::move(stop_callback_);
    }
    RunOutcome o;
    if (reason == StopReason::timeout) {
      o.status = v1::EXECUTION_STATUS_TIMEOUT;
      o.failure_reason = "timeout";
      o.error_message = "the job ran longer than its timeout";
    } else {
      o.status = v1::EXECUTION_STATUS_CANCELLED;
      o.failure_reason = "cancelled";
    }
    finish(std::move(o));
    if (callback && *callback && interpreter_usable()) {
      py::gil_scoped_acquire gil;
      try {
        callback->get()(reason == StopReason::timeout ? "timeout" : "cancel");
      } catch (py::error_already_set& e) {
        e.discard_as_unraisable("quartzflow: stop callback");
      }
      callback.reset();  // under the GIL
    }
  }

  std::optional<std::string> stopped() const {
    std::lock_guard lock(mutex_);
    if (!stopped_) return std::nullopt;
    return *stopped_ == StopReason::timeout ? "timeout" : "cancel";
  }
  bool finished() const {
    std::lock_guard lock(mutex_);
    return finished_;
  }
  const std::string& job_id() const { return job_id_; }
  const std::string& execution_id() const { return execution_id_; }

 private:
  std::shared_ptr<Core> core_;
  std::string job_id_;
  std::string execution_id_;
  mutable std::mutex mutex_;
  RunCompletion done_;
  bool finished_ = false;
  std::optional<StopReason> stopped_;
  std::unique_ptr<PyRef> stop_callback_;
};

struct Core : std::enable_shared_from_this<Core> {
  asio::io_context io;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work{io.get_executor()};
  std::unique_ptr<LocalStore> store;
  std::unique_ptr<TaskEngine> engine;
  std::thread thread;
  std::thread::id io_thread_id;
  std::atomic<bool> python_calls{true};  // false once stopping: the io thread calls no Python
  std::mutex state_mutex;
  bool started = false;
  bool closing = false;  // close() has begun
  bool closed = false;   // the loop is stopped: call() refuses
  PyRef runner;          // runner(job_id, execution_id, attempt, scheduled, params, handle)
  PyRef listener;        // listener(execution: dict) on final states; read and written under the GIL
  std::atomic<bool> has_listener{false};

  bool on_io_thread() const { return std::this_thread::get_id() == io_thread_id; }

  /// Runs `fn` on the io thread and waits for it without the GIL.
  template <typename Fn>
  auto call(Fn fn) -> decltype(fn()) {
    using R = decltype(fn());
    if (on_io_thread()) return fn();
    std::packaged_task<R()> task(std::move(fn));
    auto result = task.get_future();
    {
      // Posted under the lock that close() sets `closed` with: the work is either refused or
      // queued before the loop stops (close runs what is left).
      std::lock_guard lock(state_mutex);
      if (closed) throw std::runtime_error("the scheduler is shut down");
      asio::post(io, [&task] { task(); });
    }
    py::gil_scoped_release unlocked;
    return result.get();
  }
};

bool RunHandle::finish(RunOutcome outcome) {
  RunCompletion done;
  {
    std::lock_guard lock(mutex_);
    if (finished_) return false;
    finished_ = true;
    done = std::move(done_);
  }
  // The engine wants its completion on its own executor, never inline.
  asio::post(core_->io, [done = std::move(done), outcome = std::move(outcome)]() mutable { done(std::move(outcome)); });
  return true;
}

class PythonRun final : public RunningTask {
 public:
  explicit PythonRun(std::shared_ptr<RunHandle> handle) : handle_(std::move(handle)) {}
  void stop(StopReason reason) override { handle_->stop(reason); }

 private:
  std::shared_ptr<RunHandle> handle_;
};

/// Runs `python` plugin tasks through the scheduler's runner; other plugins as the engine would.
class PythonExecutor final : public Executor {
 public:
  PythonExecutor(std::weak_ptr<Core> core, PluginExecutor& cpp_plugins)
      : core_(std::move(core)), plugins_(cpp_plugins) {}

  std::unique_ptr<RunningTask> start(RunRequest request, RunCompletion done) override {
    if (request.task->plugin().name() != k_python_plugin) return plugins_.start(std::move(request), std::move(done));
    auto core = core_.lock();
    auto handle = std::make_shared<RunHandle>(core, request.task->id(), request.execution_id, std::move(done));
    if (!core || !core->python_calls.load() || !interpreter_usable()) {
      fail(*handle, "scheduler stopping", "the scheduler is shutting down");
      return std::make_unique<PythonRun>(handle);
    }
    {
      py::gil_scoped_acquire gil;
      try {
        py::dict params;
        for (const auto& [k, v] : request.params) params[py::str(k)] = v;
        core->runner.get()(request.task->id(), request.execution_id, request.attempt,
                           request.scheduled.time_since_epoch().count(), params, py::cast(handle));
      } catch (py::error_already_set& e) {
        const std::string what = e.what();
        fail(*handle, "runner failed", what);
      }
    }
    return std::make_unique<PythonRun>(handle);
  }

 private:
  static void fail(RunHandle& handle, std::string reason, std::string message) {
    RunOutcome o;
    o.status = v1::EXECUTION_STATUS_FAILURE;
    o.failure_reason = std::move(reason);
    o.error_message = std::move(message);
    handle.finish(std::move(o));
  }

  std::weak_ptr<Core> core_;
  PluginExecutor& plugins_;
};

/// The Python object: owns the Core and shuts it down.
class Engine {
 public:
  Engine(const std::string& path, const std::string& stats_time_zone, const std::string& agent_id,
         std::uint32_t full_logs_per_task, std::int64_t retention_hours, std::size_t output_head_bytes,
         py::object runner)
      : core_(std::make_shared<Core>()) {
    core_->runner = PyRef(std::move(runner));
    LocalStoreOptions so;
    so.path = path;
    so.stats_time_zone = stats_time_zone;
    so.full_logs_per_task = full_logs_per_task;
    so.retention = std::chrono::hours{retention_hours};
    so.purge_unsynced = true;  // no coordinator will ever acknowledge these records
    so.output_head_bytes = output_head_bytes;
    error_code ec;
    std::string detail;
    {
      py::gil_scoped_release unlocked;
      core_->store = LocalStore::open(core_->io.get_executor(), so, ec, &detail);
    }
    if (!core_->store)
      throw std::runtime_error("cannot open the local store: " + (detail.empty() ? ec.message() : detail));
    TaskEngineOptions eo;
    eo.agent_id = agent_id;
    core_->engine = std::make_unique<TaskEngine>(core_->io.get_executor(), *core_->store, eo);
    core_->engine->set_executor(v1::Task::kPlugin, std::make_unique<PythonExecutor>(core_, core_->engine->plugins()));
    core_->engine->set_sink([weak = std::weak_ptr<Core>(core_)](const v1::Execution& e) {
      auto core = weak.lock();
      if (!core || !is_final(e.status()) || !core->has_listener || !core->python_calls.load() || !interpreter_usable())
        return;
      py::gil_scoped_acquire gil;
      if (!core->listener) return;
      try {
        core->listener.get()(message_dict(e));
      } catch (py::error_already_set& err) {
        err.discard_as_unraisable("quartzflow: execution listener");
      }
    });
    std::promise<void> running;
    auto ready = running.get_future();
    core_->thread = std::thread([core = core_.get(), &running] {
      core->io_thread_id = std::this_thread::get_id();
      running.set_value();
      core->io.run();
    });
    ready.wait();
  }

  ~Engine() {
    try {
      close(0.0);
    } catch (...) {}
  }

  void validate(const py::dict& job) {
    auto task = task_from(job);
    if (auto problem = validate_task(task)) raise_invalid(*problem);
  }

  /// Adds or replaces jobs and removes others; returns (id, field, reason, message) per refusal.
  std::vector<std::tuple<std::string, std::string, std::string, std::string>> update(const py::list& upserts,
                                                                                     std::vector<std::string> removed) {
    std::vector<v1::Task> tasks;
    for (auto j : upserts) tasks.push_back(task_from(j.cast<py::dict>()));
    const auto version = ++version_;
    auto problems = core_->call([&] { return core_->engine->apply_delta(std::move(tasks), removed, version); });
    std::vector<std::tuple<std::string, std::string, std::string, std::string>> out;
    for (auto& p : problems) out.emplace_back(p.task_id, p.error.field, p.error.reason, p.error.message());
    return out;
  }

  void start() {
    {
      std::lock_guard lock(core_->state_mutex);
      if (core_->started) return;
      core_->started = true;
    }
    core_->call([&] { core_->engine->start(); });
  }

  std::string trigger(const std::string& job_id, std::map<std::string, std::string> params) {
    error_code ec;
    std::string detail;
    auto id = core_->call([&] { return core_->engine->trigger(job_id, std::move(params), ec, &detail); });
    if (!id) {
      if (ec == make_error_code(errc::invalid_argument)) throw py::key_error(detail.empty() ? job_id : detail);
      throw std::runtime_error(detail.empty() ? ec.message() : detail);
    }
    return *id;
  }

  bool cancel(const std::string& execution_id, const std::string& by, const std::string& reason) {
    return core_->call([&] { return core_->engine->cancel(execution_id, by, reason); });
  }

  std::size_t running_count() {
    return core_->call([&] { return core_->engine->running_count(); });
  }
  std::vector<std::string> active_executions() {
    return core_->call([&] { return core_->engine->active_executions(); });
  }

  /// The sink reads the listener under the GIL, which the caller holds here.
  void set_listener(py::object listener) {
    core_->has_listener = false;
    core_->listener.reset();
    if (listener.is_none()) return;
    core_->listener = PyRef(std::move(listener));
    core_->has_listener = true;
  }

  py::list executions(std::optional<std::string> task_id, std::optional<std::string> status, std::size_t limit,
                      std::size_t offset, bool newest_first, std::optional<std::int64_t> scheduled_from,
                      std::optional<std::int64_t> scheduled_to) {
    ExecutionQuery q;
    q.task_id = std::move(task_id);
    if (status)
      q.status = static_cast<v1::ExecutionStatus>(enum_value(v1::ExecutionStatus_descriptor(), *status, "status"));
    q.limit = limit;
    q.offset = offset;
    q.newest_first = newest_first;
    if (scheduled_from) q.scheduled_from = to_instant(*scheduled_from);
    if (scheduled_to) q.scheduled_to = to_instant(*scheduled_to);
    error_code ec;
    std::vector<v1::Execution> rows;
    {
      py::gil_scoped_release unlocked;
      rows = store().executions(q, ec);
    }
    check(ec);
    py::list out;
    for (const auto& r : rows) out.append(message_dict(r));
    return out;
  }

  py::object execution(const std::string& id) {
    error_code ec;
    std::optional<v1::Execution> row;
    {
      py::gil_scoped_release unlocked;
      row = store().execution(id, ec);
    }
    check(ec);
    return row ? py::object(message_dict(*row)) : py::none();
  }

  py::object full_log(const std::string& id) {
    error_code ec;
    std::optional<std::string> log;
    {
      py::gil_scoped_release unlocked;
      log = store().full_log(id, ec);
    }
    check(ec);
    if (!log) return py::none();
    return py::reinterpret_steal<py::object>(
        PyUnicode_DecodeUTF8(log->data(), static_cast<Py_ssize_t>(log->size()), "replace"));
  }

  py::list daily_stats(const std::string& from, const std::string& to, std::optional<std::string> task_id) {
    error_code ec;
    std::vector<v1::DailyStats> rows;
    {
      py::gil_scoped_release unlocked;
      rows = store().daily_stats(from, to, std::move(task_id), ec);
    }
    check(ec);
    py::list out;
    for (const auto& r : rows) out.append(message_dict(r));
    return out;
  }

  std::optional<std::int64_t> last_scheduled(const std::string& task_id) {
    error_code ec;
    std::optional<Instant> t;
    {
      py::gil_scoped_release unlocked;
      t = store().last_scheduled(task_id, ec);
    }
    check(ec);
    if (!t) return std::nullopt;
    return t->time_since_epoch().count();
  }

  void flush() {
    py::gil_scoped_release unlocked;
    store().flush();
  }

  /**
   * Stops firing, gives running jobs `grace` seconds, cancels the rest, waits until every
   * record is durable, then ends the io thread. Idempotent; the GIL is released throughout.
   */
  void close(double grace) {
    if (core_->on_io_thread())
      throw std::runtime_error("shut the scheduler down from another thread than its listener");
    {
      std::lock_guard lock(core_->state_mutex);
      if (core_->closing || !core_->thread.joinable()) return;  // closed, or closing on another thread
      core_->closing = true;
    }
    const auto grace_s = std::chrono::seconds{static_cast<std::int64_t>(std::ceil(std::max(0.0, grace)))};
    {
      py::gil_scoped_release unlocked;
      std::promise<void> stopped;
      auto done = stopped.get_future();
      asio::post(core_->io, [&] { core_->engine->stop(grace_s, [&] { stopped.set_value(); }); });
      done.wait();
      core_->python_calls = false;
      {
        std::lock_guard lock(core_->state_mutex);
        core_->closed = true;
      }
      core_->work.reset();
      core_->io.stop();
      core_->thread.join();
      // Work a call() queued while the loop was stopping: run it here, so that its caller
      // does not wait forever.
      core_->io.restart();
      core_->io.poll();
      // The store stays open for reads (history after shutdown); it closes with the Core.
      core_->engine.reset();
    }
    core_->runner.reset();
    core_->listener.reset();
  }

  bool closed() {
    std::lock_guard lock(core_->state_mutex);
    return core_->closed;
  }

 private:
  LocalStore& store() {
    if (!core_->store) throw std::runtime_error("the scheduler is shut down");
    return *core_->store;
  }
  static void check(const error_code& ec) {
    if (ec) throw std::runtime_error("local store: " + ec.message());
  }

  std::shared_ptr<Core> core_;
  std::uint64_t version_ = 0;
};

}  // namespace

void bind_engine(py::module_& m) {
  py::class_<RunHandle, std::shared_ptr<RunHandle>>(m, "RunHandle", "One run of a job, handed to the runner.")
      .def("finish", &RunHandle::finish_py, py::arg("status"), py::arg("output") = "", py::arg("error_message") = "",
           py::arg("failure_reason") = "",
           "Reports the outcome (SUCCESS, FAILURE, ...); False when the run was already over.")
      .def("set_stop_callback", &RunHandle::set_stop_callback, py::arg("callback"),
           "callback(reason) is called (on the engine thread) when the engine stops the run.")
      .def_property_readonly("stopped", &RunHandle::stopped)
      .def_property_readonly("finished", &RunHandle::finished)
      .def_property_readonly("job_id", &RunHandle::job_id)
      .def_property_readonly("execution_id", &RunHandle::execution_id);

  py::class_<Engine>(m, "Engine", "A TaskEngine with its LocalStore on an io_context thread of its own.")
      .def(py::init<const std::string&, const std::string&, const std::string&, std::uint32_t, std::int64_t,
                    std::size_t, py::object>(),
           py::arg("path"), py::arg("stats_time_zone"), py::arg("agent_id"), py::arg("full_logs_per_task"),
           py::arg("retention_hours"), py::arg("output_head_bytes"), py::arg("runner"))
      .def("validate", &Engine::validate, py::arg("job"))
      .def("update", &Engine::update, py::arg("upserts"), py::arg("removed"))
      .def("start", &Engine::start)
      .def("trigger", &Engine::trigger, py::arg("job_id"), py::arg("params"))
      .def("cancel", &Engine::cancel, py::arg("execution_id"), py::arg("by") = "user", py::arg("reason") = "")
      .def("running_count", &Engine::running_count)
      .def("active_executions", &Engine::active_executions)
      .def("set_listener", &Engine::set_listener, py::arg("listener"))
      .def("executions", &Engine::executions, py::arg("task_id") = py::none(), py::arg("status") = py::none(),
           py::arg("limit") = 100, py::arg("offset") = 0, py::arg("newest_first") = true,
           py::arg("scheduled_from") = py::none(), py::arg("scheduled_to") = py::none())
      .def("execution", &Engine::execution, py::arg("execution_id"))
      .def("full_log", &Engine::full_log, py::arg("execution_id"))
      .def("daily_stats", &Engine::daily_stats, py::arg("from_date"), py::arg("to_date"),
           py::arg("task_id") = py::none())
      .def("last_scheduled", &Engine::last_scheduled, py::arg("task_id"))
      .def("flush", &Engine::flush)
      .def("close", &Engine::close, py::arg("grace") = 0.0)
      .def_property_readonly("closed", &Engine::closed);
}

}  // namespace quartzflow::python
