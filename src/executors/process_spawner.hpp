// SPDX-License-Identifier: Apache-2.0
// A small spawner process, forked once by the agent, that starts and reaps
// shell runs: its descriptor table stays tiny, so a spawn costs the same with
// 10 runs going or 10,000.
#pragma once
#include <sys/types.h>
#include <unistd.h>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/system/error_code.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace quartzflow::detail {

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

/// Everything a run's process needs, resolved by the agent before it is sent.
struct SpawnPlan {
  std::string path;
  std::vector<std::string> argv;
  std::vector<std::string> envp;
  std::string working_dir;
  std::optional<uid_t> uid;
  std::optional<gid_t> gid;
  std::vector<gid_t> groups;
};

/// What becomes of one spawned run; each called on the spawner's executor,
/// never inline.
struct SpawnEvents {
  std::function<void(pid_t pid)> started;                                ///< exec succeeded; `pid` leads its group
  std::function<void(int child_errno)> failed;                           ///< it never ran (exec or spawner error)
  std::function<void(std::optional<int> exit_code, int signal)> exited;  ///< reaped
};

/**
 * The agent's side of the spawner process.
 *
 * The spawner is forked from the agent at the first `spawn` (so from the thread
 * that runs the io_context, as the parent-death signal follows the thread that
 * forks), closes every descriptor but its socket, and then runs one loop: spawn
 * requests arrive over a unix socket with the run's output pipe attached
 * (SCM_RIGHTS); it clones and execs each run in a new process group with a
 * parent-death signal, reaps exits through a signalfd, and reports pid, exec
 * errors and exit status back. A lone request is cloned on its main thread (no
 * hand-over, so no extra wake-up before the run starts); a burst goes to 4 worker
 * threads, so several runs start at once. It dies with the agent: its parent-death signal (or an end of file on
 * the socket) makes it SIGKILL every run's whole process group and exit; a
 * run's leader also has a parent-death SIGKILL of its own. Signals to a run go
 * through the spawner, which has not yet reaped the group leader when it sends
 * them, so a group id is never one reused.
 *
 * Thread safety: use from its executor only. Cancellation: destroying the last
 * reference closes the socket; the spawner then kills every run's group and
 * exits.
 */
class ProcessSpawner : public std::enable_shared_from_this<ProcessSpawner> {
 public:
  explicit ProcessSpawner(boost::asio::any_io_executor executor);
  ~ProcessSpawner();
  ProcessSpawner(const ProcessSpawner&) = delete;
  ProcessSpawner& operator=(const ProcessSpawner&) = delete;

  /// Sends `plan` to the spawner (starting it first if needed); stdout and
  /// stderr of the run go to `output`. Returns the run's id for `signal`, or 0
  /// with `ec` set when the spawner cannot be started (then no event follows).
  std::uint64_t spawn(const SpawnPlan& plan, UniqueFd output, SpawnEvents events, boost::system::error_code& ec);

  /// Starts the spawner now if it is not running, so the first run does not wait for the
  /// fork; a failure is left for the next `spawn` to report.
  void prepare();

  /// Sends `signal` to the run's whole process group, unless it was already
  /// reaped. After a signal, the group is also SIGKILLed when its leader exits
  /// (background children go too).
  void signal(std::uint64_t run, int signal);

  /// Ends the spawner (its runs' process groups are killed) and drops the runs' handlers
  /// without calling them: for an executor that goes away with runs in progress.
  void close();

  /// The spawner's pid while it runs, else -1 (for tests).
  pid_t pid() const noexcept { return pid_; }

 private:
  struct Outgoing {
    std::string bytes;
    std::size_t sent = 0;
    UniqueFd attached;
  };

  bool start(boost::system::error_code& ec);
  void enqueue(std::string bytes, UniqueFd attached);
  void flush();
  void read_replies();
  void handle_reply(const char* reply);
  void spawner_lost();

  boost::asio::any_io_executor executor_;
  boost::asio::posix::stream_descriptor socket_;
  pid_t pid_ = -1;
  std::uint64_t next_run_ = 1;
  struct Run {
    SpawnEvents events;
    pid_t pid = -1;  ///< once started
  };
  std::unordered_map<std::uint64_t, Run> runs_;
  std::vector<Outgoing> queue_;  ///< front is queue_[queue_head_]
  std::size_t queue_head_ = 0;
  bool write_waiting_ = false;
  std::string inbox_;
};

}  // namespace quartzflow::detail
