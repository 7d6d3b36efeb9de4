// SPDX-License-Identifier: Apache-2.0
// Shell executor: fork/exec into a new process group tied to the agent (parent-death
// signal), output and exit observed through pipes and a pidfd on the io_context.
#include <array>
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include <fcntl.h>
#include <sched.h>
#include <sys/prctl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <utility>
#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include <quartzflow/executor.hpp>
#include <quartzflow/log.hpp>

#include "process_environment.hpp"

extern char** environ;

namespace quartzflow {
namespace {

namespace asio = boost::asio;
using std::chrono::seconds;

/// A file descriptor closed on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  ~UniqueFd() { reset(); }
  int get() const noexcept { return fd_; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

bool make_pipe(UniqueFd& read_end, UniqueFd& write_end) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return false;
  read_end.reset(fds[0]);
  write_end.reset(fds[1]);
  return true;
}

/// Everything the child needs, prepared before fork: the child only makes async-signal-safe calls.
struct SpawnPlan {
  std::string path;
  std::vector<std::string> argv;
  std::vector<std::string> envp;
  std::string working_dir;
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  std::vector<gid_t> groups;
};

class ShellRun : public std::enable_shared_from_this<ShellRun> {
 public:
  ShellRun(asio::any_io_executor executor, seconds grace, std::size_t capture_limit, RunCompletion done)
      : executor_(executor), output_pipe_(executor), pidfd_(executor), kill_timer_(executor),
        drain_timer_(executor), grace_(grace), capture_limit_(capture_limit), done_(std::move(done)) {}

  std::function<void(std::string_view)> on_output;  ///< live output (RunRequest::on_output)

  /// Forks and execs; on failure the completion reports it (posted, never inline).
  void spawn(const SpawnPlan& plan) {
    // One pipe for stdout and stderr: their lines stay in the order they were written, and
    // a run holds two descriptors (this pipe and its pidfd), so one agent holds more runs.
    UniqueFd out_read, out_write;
    if (!make_pipe(out_read, out_write))
      return fail_to_start(fmt::format("cannot create a pipe: {}", std::strerror(errno)));
    if (!plan.working_dir.empty() && ::access(plan.working_dir.c_str(), X_OK) != 0)
      return fail_to_start(fmt::format("working directory {}: {}", plan.working_dir, std::strerror(errno)));
    std::vector<char*> argv;
    for (const auto& a : plan.argv) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    std::vector<char*> envp;
    for (const auto& e : plan.envp) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);

    int child_errno = 0;
    const pid_t pid = plan.uid ? fork_exec(plan, argv, envp, out_write.get(), out_write.get(), child_errno)
                               : spawn_exec(plan, argv, envp, out_write.get(), out_write.get(), child_errno);
    if (pid < 0) {
      const char* what = child_errno == ENOENT ? "not found" : std::strerror(child_errno);
      return fail_to_start(fmt::format("cannot start {}: {}", plan.path, what));
    }
    pid_ = pid;
    out_write.reset();
    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (pidfd < 0) {
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      pid_ = -1;
      return fail_to_start(fmt::format("pidfd_open failed: {}", std::strerror(errno)));
    }
    pidfd_.assign(pidfd);
    output_pipe_.assign(out_read.release());
    read_output();
    pidfd_.async_wait(asio::posix::descriptor_base::wait_read,
                      [self = shared_from_this()](boost::system::error_code) { self->on_exit(); });
  }

  void stop(StopReason reason) {
    if (finished_ || stopping_) return;
    stopping_ = reason;
    if (pid_ <= 0) return;
    ::kill(-pid_, SIGTERM);
    kill_timer_.expires_after(grace_);
    kill_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (!ec && self->pid_ > 0) ::kill(-self->pid_, SIGKILL);
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
  /// What the vfork-like child reads and writes: it shares the parent's memory until exec.
  struct CloneChild {
    const SpawnPlan* plan;
    char** argv;
    char** envp;
    int out;
    int err;
    pid_t agent;
    int child_errno;
  };

  /**
   * The child of `spawn_exec`, on its own stack in the parent's memory (the parent thread is
   * suspended until exec). Only system calls: no allocation, no locks. It dies with the
   * agent: PR_SET_PDEATHSIG(SIGKILL), checked against a parent already gone. (The signal
   * follows the thread that spawned: the io_context thread, which lives as long as the
   * engine's runs; see `make_shell_executor`.)
   */
  static int clone_child(void* argument) {
    auto& a = *static_cast<CloneChild*>(argument);
    // Handlers are the agent's (and would run here, in its memory): back to the defaults.
    struct sigaction defaults {};
    defaults.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; ++sig) {
      if (sig == SIGKILL || sig == SIGSTOP) continue;
      struct sigaction current {};
      if (::sigaction(sig, nullptr, &current) != 0) continue;
      const bool reset_even_if_ignored =
          sig == SIGPIPE || sig == SIGTERM || sig == SIGINT || sig == SIGHUP || sig == SIGQUIT || sig == SIGCHLD;
      if ((current.sa_flags & SA_SIGINFO) == 0 && current.sa_handler == SIG_DFL) continue;
      if ((current.sa_flags & SA_SIGINFO) == 0 && current.sa_handler == SIG_IGN && !reset_even_if_ignored) continue;
      ::sigaction(sig, &defaults, nullptr);
    }
    auto die = [&a]() {
      a.child_errno = errno != 0 ? errno : ECHILD;
      ::_exit(127);
    };
    if (::setpgid(0, 0) != 0) die();
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) die();
    if (::getppid() != a.agent) ::_exit(127);  // the agent died before the line above
    const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null < 0 || ::dup2(null, 0) < 0 || ::dup2(a.out, 1) < 0 || ::dup2(a.err, 2) < 0) die();
    if (!a.plan->working_dir.empty() && ::chdir(a.plan->working_dir.c_str()) != 0) die();
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(a.plan->path.c_str(), a.argv, a.envp);
    die();
    return 127;
  }

  /// clone(CLONE_VM | CLONE_VFORK), as posix_spawn does (no page-table copy, so a large agent
  /// spawns fast), but with a child that can set its parent-death signal. Exec errors come
  /// back through the shared CloneChild. Not for run_as_user (see fork_exec).
  static pid_t spawn_exec(const SpawnPlan& plan, std::vector<char*>& argv, std::vector<char*>& envp, int out,
                          int err, int& child_errno) {
    constexpr std::size_t k_stack_bytes = 64 * 1024;
    auto stack = std::make_unique<std::max_align_t[]>(k_stack_bytes / sizeof(std::max_align_t));
    CloneChild child{&plan, argv.data(), envp.data(), out, err, ::getpid(), 0};
    // No handler of the agent may run in the child before its dispositions are reset.
    sigset_t all, previous;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &previous);
    const int saved_errno = errno;
    const pid_t pid = ::clone(&clone_child, reinterpret_cast<char*>(stack.get()) + k_stack_bytes,
                              CLONE_VM | CLONE_VFORK | SIGCHLD, &child);
    const int clone_errno = errno;
    errno = saved_errno;  // the child shared this thread's errno
    ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    if (pid < 0) {
      child_errno = clone_errno;
      return -1;
    }
    if (child.child_errno != 0) {
      child_errno = child.child_errno;
      ::waitpid(pid, nullptr, 0);
      return -1;
    }
    child_errno = 0;
    return pid;
  }

  /// fork + exec, for run_as_user: the child drops to the user before exec. Exec errors
  /// travel back over a close-on-exec pipe.
  static pid_t fork_exec(const SpawnPlan& plan, std::vector<char*>& argv, std::vector<char*>& envp, int out,
                         int err, int& child_errno) {
    UniqueFd status_read, status_write;
    if (!make_pipe(status_read, status_write)) {
      child_errno = errno;
      return -1;
    }
    const pid_t agent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
      child_errno = errno;
      return -1;
    }
    if (pid == 0) exec_child(plan, argv, envp, out, err, status_write.get(), agent);
    // Both sides set the group, so a kill right after fork reaches it whoever runs first.
    ::setpgid(pid, pid);
    status_write.reset();
    ssize_t n;
    do {
      n = ::read(status_read.get(), &child_errno, sizeof child_errno);  // EOF at exec
    } while (n < 0 && errno == EINTR);
    if (n == static_cast<ssize_t>(sizeof child_errno)) {
      ::waitpid(pid, nullptr, 0);
      return -1;
    }
    child_errno = 0;
    return pid;
  }

  [[noreturn]] static void exec_child(const SpawnPlan& plan, std::vector<char*>& argv,
                                      std::vector<char*>& envp, int out, int err, int status, pid_t agent) {
    auto die = [status]() {
      const int e = errno;
      [[maybe_unused]] auto ignored = ::write(status, &e, sizeof e);
      ::_exit(127);
    };
    ::setpgid(0, 0);
    sigset_t all;
    sigemptyset(&all);
    ::sigprocmask(SIG_SETMASK, &all, nullptr);
    for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGCHLD}) ::signal(sig, SIG_DFL);
    const int null = ::open("/dev/null", O_RDONLY);
    if (null < 0 || ::dup2(null, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(err, 2) < 0) die();
    if (!plan.working_dir.empty() && ::chdir(plan.working_dir.c_str()) != 0) die();
    if (plan.uid) {
      if (::setgroups(plan.groups.size(), plan.groups.data()) != 0) die();
      if (::setgid(*plan.gid) != 0 || ::setuid(*plan.uid) != 0) die();
    }
    // After the credentials change, which clears it; dies with the agent.
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) die();
    if (::getppid() != agent) ::_exit(127);
    ::execve(plan.path.c_str(), argv.data(), envp.data());
    die();
    ::_exit(127);
  }

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

  void on_exit() {
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED) == 0) {
      if (info.si_code == CLD_EXITED) {
        exit_code_ = info.si_status;
      } else {
        signal_ = info.si_status;
      }
    }
    exited_ = true;
    if (stopping_) ::kill(-pid_, SIGKILL);  // the rest of the group goes with the leader
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
    pidfd_.close(ignored);
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
  asio::posix::stream_descriptor output_pipe_;
  asio::posix::stream_descriptor pidfd_;
  asio::steady_timer kill_timer_;
  asio::steady_timer drain_timer_;
  std::array<char, 16384> buffer_{};
  seconds grace_;
  std::size_t capture_limit_;
  RunCompletion done_;
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
  ShellExecutor(asio::any_io_executor executor, seconds grace) : executor_(executor), grace_(grace) {}

  std::unique_ptr<RunningTask> start(const RunRequest& request, RunCompletion done) override {
    const auto& spec = request.task.shell();
    const seconds grace = spec.kill_grace_seconds() > 0 ? seconds{spec.kill_grace_seconds()} : grace_;
    auto run = std::make_shared<ShellRun>(executor_, grace, request.capture_limit, std::move(done));
    run->on_output = request.on_output;
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
    const auto& spec = request.task.shell();
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
};

}  // namespace

std::unique_ptr<Executor> make_shell_executor(asio::any_io_executor executor, seconds default_kill_grace) {
  return std::make_unique<ShellExecutor>(executor, default_kill_grace);
}

}  // namespace quartzflow
