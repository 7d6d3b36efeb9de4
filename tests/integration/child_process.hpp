// SPDX-License-Identifier: Apache-2.0
// Real processes for integration tests: temp dirs, spawning with output to files, waiting,
// and killing a process with everything it started, whatever the test's outcome.
#pragma once

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

namespace quartzflow::testing {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

/// A fresh directory under the system temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "qf-agent-process-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

inline std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

/// Writes through a temporary file and a rename, so a reload never reads half a file.
inline void write_text(const fs::path& file, const std::string& text) {
  const fs::path temporary = file.string() + ".tmp";
  std::ofstream(temporary, std::ios::binary | std::ios::trunc) << text;
  fs::rename(temporary, file);
}

/// Polls `condition` until it holds or `timeout` passes; true when it held.
inline bool wait_until(const std::function<bool()>& condition, milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    if (condition()) return true;
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(milliseconds{20});
  }
}

/// Parent pid of `pid` per /proc, or -1.
inline pid_t parent_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  std::getline(in, stat);
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::istringstream fields(stat.substr(close + 1));
  char state = 0;
  pid_t parent = -1;
  fields >> state >> parent;
  return fields ? parent : -1;
}

/// Every live descendant of `root` (children, grandchildren, ...), from /proc.
inline std::vector<pid_t> descendants_of(pid_t root) {
  std::multimap<pid_t, pid_t> children;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; }))
      continue;
    const pid_t pid = std::stoi(name);
    if (const pid_t parent = parent_of(pid); parent > 0) children.emplace(parent, pid);
  }
  std::vector<pid_t> found;
  std::vector<pid_t> frontier{root};
  while (!frontier.empty()) {
    const pid_t next = frontier.back();
    frontier.pop_back();
    const auto [first, last] = children.equal_range(next);
    for (auto it = first; it != last; ++it) {
      found.push_back(it->second);
      frontier.push_back(it->second);
    }
  }
  return found;
}

inline bool process_alive(pid_t pid) {
  if (::kill(pid, 0) != 0) return false;
  // A zombie still answers kill(0); it is gone for our purposes.
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat;
  std::getline(in, stat);
  const auto close = stat.rfind(')');
  return close != std::string::npos && close + 2 < stat.size() && stat[close + 2] != 'Z';
}

/**
 * A process started with posix_spawn, stdout and stderr to files. The destructor kills it
 * and every process it started (tasks run in their own process groups, so they are found
 * through /proc while the process is stopped), whatever the test's outcome.
 */
class ChildProcess {
 public:
  ChildProcess(const std::vector<std::string>& args, const fs::path& stdout_file, const fs::path& stderr_file) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, stdout_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, stderr_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const int spawned = ::posix_spawn(&pid_, args.front().c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (spawned != 0) throw std::runtime_error("posix_spawn " + args.front() + " failed: " + std::to_string(spawned));
  }
  ~ChildProcess() { kill_tree(); }
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  bool exited() const { return status_.has_value(); }

  void signal(int number) {
    if (!status_) ::kill(pid_, number);
  }

  /// The wait status once the process ended within `timeout`.
  std::optional<int> wait_for_exit(milliseconds timeout) {
    wait_until([this] { return poll(); }, timeout);
    return status_;
  }

  /// kill -9 of the process, and of whatever it started (stopped first so it spawns nothing).
  void kill_tree() {
    if (status_) return;
    ::kill(pid_, SIGSTOP);
    int status = 0;
    const auto deadline = Clock::now() + seconds{2};
    while (Clock::now() < deadline) {
      const pid_t r = ::waitpid(pid_, &status, WNOHANG | WUNTRACED);
      if (r == pid_ && !WIFSTOPPED(status)) {
        status_ = status;  // it ended on its own meanwhile
        break;
      }
      if (r == pid_ || r < 0) break;
      std::this_thread::sleep_for(milliseconds{1});
    }
    const auto descendants = descendants_of(pid_);
    if (!status_) {
      ::kill(pid_, SIGKILL);
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
      status_ = status;
    }
    for (const pid_t d : descendants) {
      ::killpg(d, SIGKILL);
      ::kill(d, SIGKILL);
    }
  }

 private:
  bool poll() {
    if (status_) return true;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) status_ = status;
    return status_.has_value();
  }

  pid_t pid_ = -1;
  std::optional<int> status_;
};

struct CommandResult {
  int exit_status = -1;  ///< -1 when it did not exit normally within the deadline
  std::string out;
  std::string err;
};

/// Runs a short command to its end (at most `timeout`).
inline CommandResult run_command(const std::vector<std::string>& args, const fs::path& dir,
                          milliseconds timeout = milliseconds{15'000}) {
  static int serial = 0;
  const auto stem = dir / ("command-" + std::to_string(++serial));
  const fs::path out_file = stem.string() + ".out";
  const fs::path err_file = stem.string() + ".err";
  CommandResult result;
  {
    ChildProcess command(args, out_file, err_file);
    const auto status = command.wait_for_exit(timeout);
    if (status && WIFEXITED(*status)) result.exit_status = WEXITSTATUS(*status);
  }
  result.out = read_text(out_file);
  result.err = read_text(err_file);
  return result;
}

}  // namespace quartzflow::testing
