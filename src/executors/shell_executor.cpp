// SPDX-License-Identifier: Apache-2.0
// Shell executor: each run is started by the agent's spawner process (see
// process_spawner.hpp) in a new process group tied to the agent; output comes through one
// pipe on the io_context, exit status from the spawner.
#include <array>
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <unistd.h>

#include <utility>
#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include <quartzflow/executor.hpp>
#include <quartzflow/log.hpp>

#include "process_environment.hpp"
#include "process_spawner.hpp"

extern char** environ;

namespace quartzflow {
namespace {

namespace asio = boost::asio;
using std::chrono::seconds;

using detail::ProcessSpawner;
using detail::SpawnPlan;
using detail::UniqueFd;

bool make_pipe(UniqueFd& read_end, UniqueFd& write_end) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return false;
  read_end.reset(fds[0]);
  write_end.reset(fds[1]);
  return true;
}

class ShellRun : public std::enable_shared_from_this<ShellRun> {
 public:
  ShellRun(asio::any_io_executor executor, std::shared_ptr<ProcessSpawner> spawner, seconds grace,
           std::size_t capture_limit, RunCompletion done)
      : executor_(executor), spawner_(std::move(spawner)), output_pipe_(executor), kill_timer_(executor),
        drain_timer_(executor), grace_(grace), capture_limit_(capture_limit), done_(std::move(done)) {}

  std::function<void(std::string_view)> on_output;  ///< live output (RunRequest::on_output)

  /// Hands the run to the spawner; on failure the completion reports it (posted, never inline).
  void spawn(const SpawnPlan& plan) {
    // One pipe for stdout and stderr: their lines stay in the order they were written, and
    // it is the run's only descriptor in the agent (the spawner reaps), so one agent holds
    // as many runs as it has descriptors.
    UniqueFd out_read, out_write;
    if (!make_pipe(out_read, out_write))
      return fail_to_start(fmt::format("cannot create a pipe: {}", std::strerror(errno)));
    if (!plan.working_dir.empty() && ::access(plan.working_dir.c_str(), X_OK) != 0)
      return fail_to_start(fmt::format("working directory {}: {}", plan.working_dir, std::strerror(errno)));
    output_pipe_.assign(out_read.release());
    detail::SpawnEvents events;
    events.started = [self = shared_from_this()](pid_t pid) { self->pid_ = pid; };
    events.failed = [self = shared_from_this(), path = plan.path](int child_errno) {
      const char* what = child_errno == ENOENT ? "not found" : std::strerror(child_errno);
      boost::system::error_code ignored;
      self->output_pipe_.close(ignored);
      self->fail_to_start(fmt::format("cannot start {}: {}", path, what));
    };
    events.exited = [self = shared_from_this()](std::optional<int> exit_code, int signal) {
      self->on_exit(exit_code, signal);
    };
    boost::system::error_code ec;
    run_ = spawner_->spawn(plan, std::move(out_write), std::move(events), ec);
    if (ec) {
      boost::system::error_code ignored;
      output_pipe_.close(ignored);
      return fail_to_start(fmt::format("cannot start the process spawner: {}", ec.message()));
    }
    read_output();
  }

  void stop(StopReason reason) {
    if (finished_ || stopping_) return;
    stopping_ = reason;
    if (run_ == 0 || exited_) return;
    // Through the spawner, which signals the group only while its leader is unreaped (and
    // SIGKILLs the rest of the group when the leader exits).
    spawner_->signal(run_, SIGTERM);
    kill_timer_.expires_after(grace_);
    kill_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (!ec && !self->exited_) self->spawner_->signal(self->run_, SIGKILL);
    });
  }

 /// Reports a run that could not start; the completion is posted, never inline.
  void fail_to_start(std::string message) {
    RunOutcome outcome;
    outcome.status = v1::EXECUTION_STATUS_FAILURE;
    outcome.error_message = std::move(message);
    outcome.failure_reason = "spawn failed";
    finished_ = true;
    asio::post(executor_, [done = std::move(done_), outcome = std::move(outcome)]() mutable { done(std::move(outcome)); });
  }

 private:
  void read_output() {
    output_pipe_.async_read_some(asio::buffer(buffer_), [self = shared_from_this()](boost::system::error_code ec,
                                                                                  std::size_t n) {
      if (n > 0) {
        if (self->on_output) self->on_output(std::string_view(self->buffer_.data(), n));
        self->output_bytes_ += n;
        const std::size_t room = self->capture_limit_ - std::min(self->capture_limit_, self->output_.size());
        self->output_.append(self->buffer_.data(), std::min(room, n));
      }
      if (ec) {
        self->output_open_ = false;
        if (self->exited_) self->finish();
        return;
      }
      self->read_output();
    });
  }

  void on_exit(std::optional<int> exit_code, int signal) {
    exit_code_ = exit_code;
    signal_ = signal;
    exited_ = true;
    pid_ = -1;
    kill_timer_.cancel();
    if (!output_open_) return finish();
    // A background grandchild may hold the pipes open forever: give output a moment, no more.
    drain_timer_.expires_after(std::chrono::milliseconds(500));
    drain_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (!ec) self->finish();
    });
  }

  void finish() {
    if (finished_) return;
    finished_ = true;
    drain_timer_.cancel();
    boost::system::error_code ignored;
    output_pipe_.close(ignored);
    RunOutcome outcome;
    outcome.exit_code = exit_code_;
    outcome.signal = signal_;
    outcome.output = std::move(output_);
    outcome.output_bytes = output_bytes_;
    if (stopping_) {
      const bool timeout = *stopping_ == StopReason::timeout;
      outcome.status = timeout ? v1::EXECUTION_STATUS_TIMEOUT : v1::EXECUTION_STATUS_CANCELLED;
      outcome.failure_reason = timeout ? "timeout" : "cancelled";
      outcome.error_message = timeout ? "killed after the timeout" : "cancelled";
    } else if (exit_code_ && *exit_code_ == 0) {
      outcome.status = v1::EXECUTION_STATUS_SUCCESS;
    } else if (exit_code_) {
      outcome.status = v1::EXECUTION_STATUS_FAILURE;
      outcome.failure_reason = fmt::format("exit code {}", *exit_code_);
      outcome.error_message = outcome.failure_reason;
    } else {
      outcome.status = v1::EXECUTION_STATUS_FAILURE;
      outcome.failure_reason = fmt::format("signal {}", signal_);
      outcome.error_message = fmt::format("terminated by signal {} ({})", signal_, ::strsignal(signal_));
    }
    asio::post(executor_, [done = std::move(done_), outcome = std::move(outcome)]() mutable { done(std::move(outcome)); });
  }

  asio::any_io_executor executor_;
  std::shared_ptr<ProcessSpawner> spawner_;
  asio::posix::stream_descriptor output_pipe_;
  asio::steady_timer kill_timer_;
  asio::steady_timer drain_timer_;
  std::array<char, 16384> buffer_{};
  seconds grace_;
  std::size_t capture_limit_;
  RunCompletion done_;
  std::uint64_t run_ = 0;  ///< the spawner's id of this run, 0 before it was sent
  pid_t pid_ = -1;
  bool output_open_ = true;
  bool exited_ = false;
  bool finished_ = false;
  std::optional<StopReason> stopping_;
  std::optional<int> exit_code_;
  int signal_ = 0;
  std::string output_;
  std::uint64_t output_bytes_ = 0;
};

class ShellHandle final : public RunningTask {
 public:
  explicit ShellHandle(std::weak_ptr<ShellRun> run) : run_(std::move(run)) {}
  void stop(StopReason reason) override {
    if (auto run = run_.lock()) run->stop(reason);
  }

 private:
  std::weak_ptr<ShellRun> run_;
};

class ShellExecutor final : public Executor {
 public:
  ShellExecutor(asio::any_io_executor executor, seconds grace)
      : executor_(executor), grace_(grace), spawner_(std::make_shared<ProcessSpawner>(executor)) {
    // Forked from the io_context's thread (the parent-death signal follows the forking
    // thread), ahead of the first run, which would otherwise wait for the fork.
    asio::post(executor_, [spawner = std::weak_ptr<ProcessSpawner>(spawner_)] {
      if (auto alive = spawner.lock()) alive->prepare();
    });
  }

  ~ShellExecutor() override { spawner_->close(); }
  ShellExecutor(const ShellExecutor&) = delete;
  ShellExecutor& operator=(const ShellExecutor&) = delete;

  std::unique_ptr<RunningTask> start(RunRequest request, RunCompletion done) override {
    const auto& spec = request.task->shell();
    const seconds grace = spec.kill_grace_seconds() > 0 ? seconds{spec.kill_grace_seconds()} : grace_;
    auto run = std::make_shared<ShellRun>(executor_, spawner_, grace, request.capture_limit, std::move(done));
    run->on_output = std::move(request.on_output);
    auto handle = std::make_unique<ShellHandle>(run);
    std::string problem;
    auto plan = make_plan(request, problem);
    if (!plan) {
      run->fail_to_start(std::move(problem));  // a FAILURE record with the reason
      return handle;
    }
    run->spawn(*plan);
    return handle;
  }

 private:
  std::optional<SpawnPlan> make_plan(const RunRequest& request, std::string& problem) const {
    const auto& spec = request.task->shell();
    SpawnPlan plan;
    plan.envp = detail::process_environment(request, environ);
    if (spec.argv_size() > 0) {
      plan.argv.assign(spec.argv().begin(), spec.argv().end());
    } else {
      if (spec.interpreter_size() > 0) {
        plan.argv.assign(spec.interpreter().begin(), spec.interpreter().end());
      } else {
        plan.argv = {"/bin/sh", "-c"};
      }
      plan.argv.push_back(spec.script());
    }
    plan.path = detail::resolve_command(plan.argv.front(), plan.envp);
    plan.working_dir = spec.working_dir();
    if (!spec.run_as_user().empty()) {
      const passwd* pw = ::getpwnam(spec.run_as_user().c_str());
      if (pw == nullptr) {
        problem = "unknown user " + spec.run_as_user();
        return std::nullopt;
      }
      if (::geteuid() != 0 && pw->pw_uid != ::geteuid()) {
        problem = "run_as_user needs an agent running as root";
        return std::nullopt;
      }
      plan.uid = pw->pw_uid;
      plan.gid = pw->pw_gid;
      int count = 64;
      plan.groups.resize(static_cast<std::size_t>(count));
      if (::getgrouplist(pw->pw_name, pw->pw_gid, plan.groups.data(), &count) < 0) {
        plan.groups.resize(static_cast<std::size_t>(count));
        ::getgrouplist(pw->pw_name, pw->pw_gid, plan.groups.data(), &count);
      }
      plan.groups.resize(static_cast<std::size_t>(count));
    }
    return plan;
  }

  asio::any_io_executor executor_;
  seconds grace_;
  std::shared_ptr<ProcessSpawner> spawner_;  ///< started at the first run; shared with the runs
};

}  // namespace

std::unique_ptr<Executor> make_shell_executor(asio::any_io_executor executor, seconds default_kill_grace) {
  return std::make_unique<ShellExecutor>(executor, default_kill_grace);
}

}  // namespace quartzflow
