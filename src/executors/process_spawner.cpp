// SPDX-License-Identifier: Apache-2.0
// The spawner process (a fork of the agent with three descriptors) and the
// agent's client of it. Why: clone() copies the caller's descriptor table and
// exec then walks it to close the close-on-exec ones, so spawning from an agent
// holding 20,000 descriptors cost ~3.5 ms.
#include "process_spawner.hpp"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/asio/post.hpp>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace quartzflow::detail {
namespace {

namespace asio = boost::asio;

// Wire format, native byte order (both ends are one binary on one machine).
// Request: u32 total length, u32 kind, u64 run, then the body.
//   spawn:  u32 has_user, u32 uid, u32 gid, u32 group count, u32 groups...,
//   string path,
//           string working_dir, u32 argc, strings..., u32 envc, strings...
//           (string: u32 + bytes); the run's output pipe travels with the first
//           byte (SCM_RIGHTS).
//   signal: i32 signal.
// Reply (fixed size): u32 kind, i32 value, u64 run, i32 si_code, i32 si_status.
enum RequestKind : std::uint32_t { k_request_spawn = 1, k_request_signal = 2 };
enum ReplyKind : std::uint32_t { k_reply_started = 1, k_reply_failed = 2, k_reply_exited = 3 };
constexpr std::size_t k_header_bytes = 16;
constexpr std::size_t k_reply_bytes = 24;
constexpr std::uint32_t k_max_request_bytes = 256u << 20;

void put_u32(std::string& out, std::uint32_t v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}
void put_u64(std::string& out, std::uint64_t v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof v);
}
void put_string(std::string& out, const std::string& s) {
  put_u32(out, static_cast<std::uint32_t>(s.size()));
  out.append(s);
}

std::string request_header(std::uint32_t kind, std::uint64_t run) {
  std::string out;
  put_u32(out, 0);  // length, patched by finish_request
  put_u32(out, kind);
  put_u64(out, run);
  return out;
}
void finish_request(std::string& out) {
  const auto length = static_cast<std::uint32_t>(out.size());
  std::memcpy(out.data(), &length, sizeof length);
}

/// Reads a request body; `ok` turns false at the first field that does not fit.
struct BodyReader {
  const char* at;
  const char* end;
  bool ok = true;
  std::uint32_t u32() {
    std::uint32_t v = 0;
    if (end - at < 4) {
      ok = false;
      return 0;
    }
    std::memcpy(&v, at, 4);
    at += 4;
    return v;
  }
  std::string string() {
    const std::uint32_t n = u32();
    if (!ok || static_cast<std::size_t>(end - at) < n) {
      ok = false;
      return {};
    }
    std::string s(at, n);
    at += n;
    return s;
  }
};

// ---------------------------------------------------------------------------------------
// The spawner process. It is a fork of a multi-threaded agent, so it keeps to
// system calls and glibc's malloc (which glibc makes safe in the child of
// fork); no logging, no locks.

/// What the vfork-like child reads and writes: it shares the spawner's memory
/// until exec.
struct CloneChild {
  const SpawnPlan* plan;
  char** argv;
  char** envp;
  int out;
  int null;
  pid_t parent;
  int child_errno;
};

int clone_child(void* argument) {
  auto& a = *static_cast<CloneChild*>(argument);
  auto die = [&a]() {
    a.child_errno = errno != 0 ? errno : ECHILD;
    ::_exit(127);
  };
  if (::setpgid(0, 0) != 0) die();
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) die();
  if (::getppid() != a.parent) ::_exit(127);  // the spawner died before the line above
  if (::dup2(a.null, 0) < 0 || ::dup2(a.out, 1) < 0 || ::dup2(a.out, 2) < 0) die();
  if (!a.plan->working_dir.empty() && ::chdir(a.plan->working_dir.c_str()) != 0) die();
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::execve(a.plan->path.c_str(), a.argv, a.envp);
  die();
  return 127;
}

/// clone(CLONE_VM | CLONE_VFORK), as posix_spawn does, with a child that can
/// set its parent-death signal; exec errors come back through the shared
/// CloneChild.
pid_t spawn_exec(const SpawnPlan& plan, char** argv, char** envp, int out, int null, void* stack_top,
                 int& child_errno) {
  CloneChild child{&plan, argv, envp, out, null, ::getpid(), 0};
  const pid_t pid = ::clone(&clone_child, stack_top, CLONE_VM | CLONE_VFORK | SIGCHLD, &child);
  if (pid < 0) {
    child_errno = errno;
    return -1;
  }
  if (child.child_errno != 0) {
    child_errno = child.child_errno;
    ::waitpid(pid, nullptr, 0);
    return -1;
  }
  return pid;
}

/// fork + exec, for run_as_user: the child drops to the user before exec
/// (setuid in a CLONE_VM child would change the spawner's credentials too).
/// Exec errors travel back over a close-on-exec pipe.
pid_t fork_exec(const SpawnPlan& plan, char** argv, char** envp, int out, int null, int& child_errno) {
  int status[2];
  if (::pipe2(status, O_CLOEXEC) != 0) {
    child_errno = errno;
    return -1;
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    child_errno = errno;
    ::close(status[0]);
    ::close(status[1]);
    return -1;
  }
  if (pid == 0) {
    auto die = [&]() {
      const int e = errno;
      [[maybe_unused]] auto ignored = ::write(status[1], &e, sizeof e);
      ::_exit(127);
    };
    ::setpgid(0, 0);
    if (::dup2(null, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(out, 2) < 0) die();
    if (!plan.working_dir.empty() && ::chdir(plan.working_dir.c_str()) != 0) die();
    if (::setgroups(plan.groups.size(), plan.groups.data()) != 0) die();
    if (::setgid(*plan.gid) != 0 || ::setuid(*plan.uid) != 0) die();
    // After the credentials change, which clears it.
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) die();
    if (::getppid() != parent) ::_exit(127);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(plan.path.c_str(), argv, envp);
    die();
  }
  // Both sides set the group, so a kill right after fork reaches it whoever
  // runs first.
  ::setpgid(pid, pid);
  ::close(status[1]);
  ssize_t n;
  do {
    n = ::read(status[0], &child_errno, sizeof child_errno);  // EOF at exec
  } while (n < 0 && errno == EINTR);
  ::close(status[0]);
  if (n == static_cast<ssize_t>(sizeof child_errno)) {
    ::waitpid(pid, nullptr, 0);
    return -1;
  }
  return pid;
}

/// A spawn request decoded, waiting for a worker thread.
struct SpawnJob {
  std::uint64_t run;
  SpawnPlan plan;
  int out;
};

/**
 * The spawner's loop. The main thread reads requests and reaps exits
 * (signalfd); a few worker threads clone and exec, each blocked only while its
 * own child reaches exec, so several children start at once (the runs' own
 * start-up, not the clone, is what takes time). One mutex orders every state
 * change and reply: a run is registered and its `started` sent before its exit
 * can be seen, and a signal that arrives while its run is still being cloned is
 * held until the pid is known.
 */
class SpawnerLoop {
 public:
  SpawnerLoop(int socket, int signals, int null, int room)
      : socket_(socket), signals_(signals), null_(null), room_(room) {}

  [[noreturn]] void run() {
    for (int i = 0; i < k_workers; ++i) workers_.emplace_back([this] { work(); });
    std::array<pollfd, 3> watched{pollfd{socket_, POLLIN, 0}, pollfd{signals_, POLLIN, 0}, pollfd{room_, POLLIN, 0}};
    for (;;) {
      // Requests wait in the agent's socket, not here: each queued job holds
      // its output pipe, and every descriptor the spawner holds is copied by
      // the next clone and walked by exec.
      {
        std::lock_guard lock(mutex_);
        watched[0].events = jobs_.size() < k_max_queued_jobs ? POLLIN : 0;
      }
      if (::poll(watched.data(), watched.size(), -1) < 0) {
        if (errno == EINTR) continue;
        shut_down();
      }
      if (watched[2].revents != 0) {
        std::uint64_t ignored;
        [[maybe_unused]] auto n = ::read(room_, &ignored, sizeof ignored);
      }
      if (watched[1].revents != 0) reap();
      if (watched[0].revents != 0) receive();
    }
  }

 private:
  struct Child {
    pid_t pid;
    bool signalled = false;
  };
  static constexpr int k_workers = 4;
  static constexpr std::size_t k_max_queued_jobs = 16;
  static constexpr std::size_t k_stack_bytes = 64 * 1024;

  void receive() {
    char buffer[65536];
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
    iovec io{buffer, sizeof buffer};
    msghdr message{};
    message.msg_iov = &io;
    message.msg_iovlen = 1;
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(socket_, &message, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    for (cmsghdr* c = CMSG_FIRSTHDR(&message); c != nullptr; c = CMSG_NXTHDR(&message, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (std::size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
        received_fds_.push_back(fd);
      }
    }
    if (n <= 0) shut_down();  // the agent is gone (or closed us): its runs go with it
    inbox_.append(buffer, static_cast<std::size_t>(n));
    std::size_t at = 0;
    while (inbox_.size() - at >= k_header_bytes) {
      std::uint32_t length, kind;
      std::uint64_t run;
      std::memcpy(&length, inbox_.data() + at, 4);
      std::memcpy(&kind, inbox_.data() + at + 4, 4);
      std::memcpy(&run, inbox_.data() + at + 8, 8);
      if (length < k_header_bytes || length > k_max_request_bytes) shut_down();
      if (inbox_.size() - at < length) break;
      BodyReader body{inbox_.data() + at + k_header_bytes, inbox_.data() + at + length};
      if (kind == k_request_spawn) {
        queue_spawn(run, body);
      } else if (kind == k_request_signal) {
        const auto sig = static_cast<int>(body.u32());
        if (body.ok) signal_run(run, sig);
      }
      at += length;
    }
    inbox_.erase(0, at);
    start_batch();
  }

  void queue_spawn(std::uint64_t run, BodyReader& body) {
    // The pipe came with this request's first byte, so it is the oldest one
    // received.
    int out = -1;
    if (!received_fds_.empty()) {
      out = received_fds_.front();
      received_fds_.erase(received_fds_.begin());
    }
    SpawnJob job{run, {}, out};
    SpawnPlan& plan = job.plan;
    const bool has_user = body.u32() != 0;
    const uid_t uid = body.u32();
    const gid_t gid = body.u32();
    const std::uint32_t group_count = body.u32();
    for (std::uint32_t i = 0; i < group_count && body.ok; ++i) plan.groups.push_back(body.u32());
    if (has_user) {
      plan.uid = uid;
      plan.gid = gid;
    }
    plan.path = body.string();
    plan.working_dir = body.string();
    const std::uint32_t argc = body.u32();
    for (std::uint32_t i = 0; i < argc && body.ok; ++i) plan.argv.push_back(body.string());
    const std::uint32_t envc = body.u32();
    for (std::uint32_t i = 0; i < envc && body.ok; ++i) plan.envp.push_back(body.string());
    std::lock_guard lock(mutex_);
    if (!body.ok || out < 0) {
      if (out >= 0) ::close(out);
      return reply(k_reply_failed, run, EPROTO);
    }
    in_flight_.emplace(run, 0);
    batch_.push_back(std::move(job));
  }

  /// Starts what this read brought: a lone request on this thread, which saves the hand-over
  /// to a worker (a wake-up, which on a busy machine can take a scheduler slice), a burst on
  /// the workers, in parallel.
  void start_batch() {
    if (batch_.empty()) return;
    char next;
    const bool more_waiting = ::recv(socket_, &next, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
    std::unique_lock lock(mutex_);
    if (batch_.size() == 1 && jobs_.empty() && busy_workers_ == 0 && !more_waiting) {
      lock.unlock();
      SpawnJob job = std::move(batch_.front());
      batch_.clear();
      run_job(job, reinterpret_cast<char*>(main_stack_.data()) + k_stack_bytes);
      return;
    }
    for (auto& job : batch_) jobs_.push_back(std::move(job));
    batch_.clear();
    lock.unlock();
    work_ready_.notify_all();
  }

  void signal_run(std::uint64_t run, int sig) {
    std::lock_guard lock(mutex_);
    if (auto it = children_.find(run); it != children_.end()) {
      it->second.signalled = true;
      ::kill(-it->second.pid,
             sig);  // not reaped yet: the group id is still this run's
    } else if (auto pending = in_flight_.find(run); pending != in_flight_.end()) {
      pending->second = sig;  // sent once its pid is known
    }
  }

  void work() {
    std::vector<std::max_align_t> stack(k_stack_bytes / sizeof(std::max_align_t));
    for (;;) {
      std::unique_lock lock(mutex_);
      work_ready_.wait(lock, [this] { return !jobs_.empty(); });
      SpawnJob job = std::move(jobs_.front());
      jobs_.pop_front();
      ++busy_workers_;
      const bool make_room = jobs_.size() + 1 == k_max_queued_jobs;
      lock.unlock();
      if (make_room) {
        const std::uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(room_, &one, sizeof one);  // the main thread reads again
      }
      run_job(job, reinterpret_cast<char*>(stack.data()) + k_stack_bytes);
      lock.lock();
      --busy_workers_;
    }
  }

  /// Clones and execs `job`, then registers and reports it; on a worker or the main thread.
  void run_job(SpawnJob& job, void* stack_top) {
    std::vector<char*> argv, envp;
    for (auto& a : job.plan.argv) argv.push_back(a.data());
    argv.push_back(nullptr);
    for (auto& e : job.plan.envp) envp.push_back(e.data());
    envp.push_back(nullptr);
    int child_errno = 0;
    const pid_t pid = job.plan.uid
                          ? fork_exec(job.plan, argv.data(), envp.data(), job.out, null_, child_errno)
                          : spawn_exec(job.plan, argv.data(), envp.data(), job.out, null_, stack_top, child_errno);
    ::close(job.out);
    std::lock_guard lock(mutex_);
    const int pending_signal = in_flight_[job.run];
    in_flight_.erase(job.run);
    if (pid < 0) return reply(k_reply_failed, job.run, child_errno);
    Child child{pid};
    if (pending_signal != 0) {
      child.signalled = true;
      ::kill(-pid, pending_signal);
    }
    children_.emplace(job.run, child);
    runs_by_pid_.emplace(pid, job.run);
    reply(k_reply_started, job.run, pid);
  }

  void reap() {
    signalfd_siginfo received[16];
    for (ssize_t n; (n = ::read(signals_, received, sizeof received)) > 0;) {
      for (std::size_t i = 0; i < static_cast<std::size_t>(n) / sizeof received[0]; ++i)
        if (received[i].ssi_signo == SIGTERM) shut_down();  // the agent died, or we are told to stop
    }
    for (;;) {
      siginfo_t info{};
      // WNOWAIT first: while the leader is a zombie its group id cannot be
      // reused, so a stopped run's group is killed whole (background children
      // too) before the reap.
      if (::waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid == 0) return;
      const pid_t pid = info.si_pid;
      std::unique_lock lock(mutex_);
      const auto run_it = runs_by_pid_.find(pid);
      if (run_it == runs_by_pid_.end()) {
        // A worker's child between clone and its registration, or one whose
        // exec failed (the worker reaps that one): theirs to settle, in a
        // moment.
        lock.unlock();
        ::sched_yield();
        continue;
      }
      const std::uint64_t run = run_it->second;
      const auto child_it = children_.find(run);
      if (child_it != children_.end() && child_it->second.signalled) ::kill(-pid, SIGKILL);
      siginfo_t reaped{};
      ::waitid(P_PID, static_cast<id_t>(pid), &reaped, WEXITED);
      runs_by_pid_.erase(run_it);
      children_.erase(run);
      reply(k_reply_exited, run, pid, info.si_code, info.si_status);
    }
  }

  /// Called with mutex_ held, which also keeps replies whole and in order.
  void reply(std::uint32_t kind, std::uint64_t run, int value, int code = 0, int status = 0) {
    char bytes[k_reply_bytes];
    std::memcpy(bytes, &kind, 4);
    std::memcpy(bytes + 4, &value, 4);
    std::memcpy(bytes + 8, &run, 8);
    std::memcpy(bytes + 16, &code, 4);
    std::memcpy(bytes + 20, &status, 4);
    std::size_t sent = 0;
    while (sent < sizeof bytes) {
      const ssize_t n = ::send(socket_, bytes + sent, sizeof bytes - sent, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) kill_all_and_exit();
      sent += static_cast<std::size_t>(n);
    }
  }

  [[noreturn]] void shut_down() {
    mutex_.lock();
    kill_all_and_exit();
  }

  /// With mutex_ held. Runs being cloned now die too: their parent-death
  /// signal, or the check of their parent right after setting it.
  [[noreturn]] void kill_all_and_exit() {
    for (const auto& [run, child] : children_) ::kill(-child.pid, SIGKILL);
    ::_exit(0);
  }

  int socket_;
  int signals_;
  int null_;
  int room_;                       ///< eventfd: the job queue has room again
  std::vector<int> received_fds_;  ///< main thread only
  std::string inbox_;              ///< main thread only
  std::mutex mutex_;
  std::condition_variable work_ready_;
  std::deque<SpawnJob> jobs_;
  std::vector<SpawnJob> batch_;  ///< decoded by the main thread, not yet started or queued
  std::vector<std::max_align_t> main_stack_ = std::vector<std::max_align_t>(k_stack_bytes / sizeof(std::max_align_t));
  int busy_workers_ = 0;
  std::unordered_map<std::uint64_t, int> in_flight_;  ///< run -> signal asked for before its pid was known
  std::unordered_map<std::uint64_t, Child> children_;
  std::unordered_map<pid_t, std::uint64_t> runs_by_pid_;
  std::vector<std::thread> workers_;
};

/// The spawner's main, in the child of fork. Never returns.
[[noreturn]] void spawner_main(int socket, int agent_end, pid_t agent) {
  // Told when the agent dies, through the signalfd below (all signals are
  // blocked since the fork), so it kills every run's whole group before it
  // exits: SIGKILL would leave the runs' background processes going. Checked
  // against an agent already gone.
  if (::prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || ::getppid() != agent) ::_exit(0);
  ::prctl(PR_SET_NAME, "qf-spawner");
  // Keep stdin/stdout/stderr (the agent's, for nothing in particular) and the
  // socket as 3.
  constexpr int k_socket_fd = 3;
  // The agent's end first: a copy here would hide the agent's close (an agent that closed its
  // stdio may hold either end below 3, out of close_range's reach).
  ::close(agent_end);
  if (socket != k_socket_fd) {
    if (::dup3(socket, k_socket_fd, O_CLOEXEC) < 0) ::_exit(1);
    ::close(socket);
  }
  // Never inherited by the runs (after an exec it came without the flag): a run holding it
  // would hide the spawner's death from the agent.
  if (::fcntl(k_socket_fd, F_SETFD, FD_CLOEXEC) != 0) ::_exit(1);
  if (::syscall(SYS_close_range, k_socket_fd + 1, ~0U, 0) != 0) {
    rlimit files{};
    ::getrlimit(RLIMIT_NOFILE, &files);
    for (rlim_t fd = k_socket_fd + 1; fd < files.rlim_cur; ++fd) ::close(static_cast<int>(fd));
  }
  // The agent's handlers would run here, in a copy of the agent: back to the
  // defaults, which the runs inherit. Ignored signals stay ignored (as across
  // exec), except these.
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
  sigset_t handled;
  sigemptyset(&handled);
  sigaddset(&handled, SIGCHLD);
  sigaddset(&handled, SIGTERM);
  const int signals = ::signalfd(-1, &handled, SFD_CLOEXEC | SFD_NONBLOCK);
  ::sigprocmask(SIG_SETMASK, &handled,
                nullptr);  // the agent's fork blocked them all
  const int null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const int room = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (signals < 0 || null < 0 || room < 0) ::_exit(1);
  try {
    SpawnerLoop(k_socket_fd, signals, null, room).run();
  } catch (...) {
  }
  ::_exit(1);
}

// A sanitizer's allocator is not fork-safe: a lock another agent thread held at the fork
// stays held in the child, whose first allocation then waits forever (seen under ASan).
// Sanitized builds therefore exec a fresh image of the agent's own binary, which becomes the
// spawner in this constructor before main. glibc's malloc is reset in the child, so other
// builds keep the plain fork (no second image, no exec of a host binary we do not know).
// (The tsan preset undefines __SANITIZE_THREAD__ for protobuf's sake: _GLIBCXX_TSAN says TSan.)
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || defined(_GLIBCXX_TSAN)
#define QF_SPAWNER_EXECS 1
constexpr const char* k_spawner_env = "QF_SPAWNER_AGENT";
constexpr int k_exec_socket_fd = 3;

__attribute__((constructor)) void become_spawner_if_asked() {
  const char* agent = ::getenv(k_spawner_env);
  if (agent == nullptr) return;
  spawner_main(k_exec_socket_fd, -1, static_cast<pid_t>(std::strtol(agent, nullptr, 10)));
}
#else
#define QF_SPAWNER_EXECS 0
#endif

}  // namespace

// ---------------------------------------------------------------------------------------
// The agent's side.

ProcessSpawner::ProcessSpawner(asio::any_io_executor executor) : executor_(executor), socket_(executor) {}

ProcessSpawner::~ProcessSpawner() { close(); }

void ProcessSpawner::close() {
  // The runs' handlers hold their runs, which hold this spawner: dropped unheard, or
  // neither would ever be freed.
  runs_.clear();
  queue_.clear();
  queue_head_ = 0;
  if (pid_ <= 0) return;
  boost::system::error_code ignored;
  socket_.close(ignored);  // end of file: the spawner kills what is left and exits
  // Bounded: a spawner that does not exit within 2 s is killed (its runs die with it, by
  // their parent-death signal), so that an agent never hangs at exit.
  for (int waited_ms = 0; ::waitpid(pid_, nullptr, WNOHANG) == 0; waited_ms += 10) {
    if (waited_ms >= 2000) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      break;
    }
    ::usleep(10'000);
  }
  pid_ = -1;
}

bool ProcessSpawner::start(boost::system::error_code& ec) {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    ec.assign(errno, boost::system::system_category());
    return false;
  }
  UniqueFd ours(pair[0]), theirs(pair[1]);
  const pid_t agent = ::getpid();
  // No handler of the agent may run in the child before its dispositions are
  // reset.
  sigset_t all, previous;
  sigfillset(&all);
#if QF_SPAWNER_EXECS
  // Made before the fork: the child only calls async-signal-safe functions until exec.
  std::string marker = std::string{k_spawner_env} + "=" + std::to_string(agent);
  std::vector<char*> envp;
  for (char** e = environ; *e != nullptr; ++e) envp.push_back(*e);
  envp.push_back(marker.data());
  envp.push_back(nullptr);
  char name[] = "qf-spawner";
  char* argv[] = {name, nullptr};
#endif
  ::pthread_sigmask(SIG_SETMASK, &all, &previous);
  const pid_t pid = ::fork();
  if (pid == 0) {
#if QF_SPAWNER_EXECS
    if (::dup2(theirs.get(), k_exec_socket_fd) == k_exec_socket_fd && ::fcntl(k_exec_socket_fd, F_SETFD, 0) == 0)
      ::execve("/proc/self/exe", argv, envp.data());
    ::_exit(127);
#else
    spawner_main(theirs.get(), ours.get(), agent);
#endif
  }
  const int fork_errno = errno;
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  if (pid < 0) {
    ec.assign(fork_errno, boost::system::system_category());
    return false;
  }
  theirs.reset();
  ::fcntl(ours.get(), F_SETFL, ::fcntl(ours.get(), F_GETFL) | O_NONBLOCK);
  pid_ = pid;
  socket_.assign(ours.release());
  read_replies();
  return true;
}

void ProcessSpawner::prepare() {
  boost::system::error_code ignored;
  if (pid_ <= 0) start(ignored);
}

std::uint64_t ProcessSpawner::spawn(const SpawnPlan& plan, UniqueFd output, SpawnEvents events,
                                    boost::system::error_code& ec) {
  if (pid_ <= 0 && !start(ec)) return 0;
  const std::uint64_t run = next_run_++;
  std::string request = request_header(k_request_spawn, run);
  put_u32(request, plan.uid ? 1 : 0);
  put_u32(request, plan.uid.value_or(0));
  put_u32(request, plan.gid.value_or(0));
  put_u32(request, static_cast<std::uint32_t>(plan.groups.size()));
  for (gid_t g : plan.groups) put_u32(request, g);
  put_string(request, plan.path);
  put_string(request, plan.working_dir);
  put_u32(request, static_cast<std::uint32_t>(plan.argv.size()));
  for (const auto& a : plan.argv) put_string(request, a);
  put_u32(request, static_cast<std::uint32_t>(plan.envp.size()));
  for (const auto& e : plan.envp) put_string(request, e);
  finish_request(request);
  runs_.emplace(run, Run{std::move(events)});
  enqueue(std::move(request), std::move(output));
  return run;
}

void ProcessSpawner::signal(std::uint64_t run, int signal) {
  if (pid_ <= 0 || runs_.count(run) == 0) return;
  std::string request = request_header(k_request_signal, run);
  put_u32(request, static_cast<std::uint32_t>(signal));
  finish_request(request);
  enqueue(std::move(request), UniqueFd{});
}

void ProcessSpawner::enqueue(std::string bytes, UniqueFd attached) {
  queue_.push_back(Outgoing{std::move(bytes), 0, std::move(attached)});
  if (!write_waiting_) flush();
}

void ProcessSpawner::flush() {
  while (queue_head_ < queue_.size()) {
    auto& next = queue_[queue_head_];
    iovec io{next.bytes.data() + next.sent, next.bytes.size() - next.sent};
    msghdr message{};
    message.msg_iov = &io;
    message.msg_iovlen = 1;
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
    if (next.sent == 0 && next.attached.get() >= 0) {
      // Only with a request's first byte, so the spawner pairs pipes and
      // requests in order.
      message.msg_control = control;
      message.msg_controllen = sizeof control;
      cmsghdr* c = CMSG_FIRSTHDR(&message);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int));
      const int fd = next.attached.get();
      std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    const ssize_t n = ::sendmsg(socket_.native_handle(), &message, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        write_waiting_ = true;
        socket_.async_wait(asio::posix::descriptor_base::wait_write,
                           [weak = weak_from_this()](boost::system::error_code ec) {
                             auto self = weak.lock();
                             if (!self || ec) return;
                             self->write_waiting_ = false;
                             self->flush();
                           });
      }
      return;  // other errors: the spawner is gone, which the reader sees and
               // reports
    }
    next.attached.reset();  // the spawner holds its own reference now
    next.sent += static_cast<std::size_t>(n);
    if (next.sent == next.bytes.size()) {
      next.bytes = std::string{};
      ++queue_head_;
    }
  }
  queue_.clear();
  queue_head_ = 0;
}

void ProcessSpawner::read_replies() {
  socket_.async_wait(asio::posix::descriptor_base::wait_read, [weak = weak_from_this()](boost::system::error_code ec) {
    auto self = weak.lock();
    if (!self || ec) return;
    char buffer[k_reply_bytes * 512];
    for (;;) {
      const ssize_t n = ::recv(self->socket_.native_handle(), buffer, sizeof buffer, MSG_DONTWAIT);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n <= 0) return self->spawner_lost();
      self->inbox_.append(buffer, static_cast<std::size_t>(n));
      std::size_t at = 0;
      // Events may drop the last reference to this object's owners, not to
      // this object.
      for (; self->inbox_.size() - at >= k_reply_bytes; at += k_reply_bytes)
        self->handle_reply(self->inbox_.data() + at);
      self->inbox_.erase(0, at);
      if (self->pid_ <= 0) return;
    }
    self->read_replies();
  });
}

void ProcessSpawner::handle_reply(const char* reply) {
  std::uint32_t kind;
  int value, code, status;
  std::uint64_t run;
  std::memcpy(&kind, reply, 4);
  std::memcpy(&value, reply + 4, 4);
  std::memcpy(&run, reply + 8, 8);
  std::memcpy(&code, reply + 16, 4);
  std::memcpy(&status, reply + 20, 4);
  const auto it = runs_.find(run);
  if (it == runs_.end()) return;
  if (kind == k_reply_started) {
    it->second.pid = value;
    if (it->second.events.started) it->second.events.started(value);
    return;
  }
  auto events = std::move(it->second.events);
  runs_.erase(it);
  if (kind == k_reply_failed) {
    if (events.failed) events.failed(value);
  } else if (events.exited) {
    if (code == CLD_EXITED) {
      events.exited(status, 0);
    } else {
      events.exited(std::nullopt, status);
    }
  }
}

void ProcessSpawner::spawner_lost() {
  boost::system::error_code ignored;
  socket_.close(ignored);
  if (pid_ > 0) ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
  queue_.clear();
  queue_head_ = 0;
  write_waiting_ = false;
  inbox_.clear();
  // Killed itself (it kills its runs' groups when it can): the leaders died of
  // their parent-death signal, and what they started in their group goes now.
  // The next spawn starts a new spawner.
  auto lost = std::move(runs_);
  runs_.clear();
  for (auto& [run, state] : lost) {
    if (state.pid > 0) ::kill(-state.pid, SIGKILL);
    if (state.events.exited) state.events.exited(std::nullopt, SIGKILL);
  }
}

}  // namespace quartzflow::detail
