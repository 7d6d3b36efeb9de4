// SPDX-License-Identifier: Apache-2.0
// What the process benchmarks share: progress lines, a temporary directory, and running an
// io_context until a condition holds (bounded).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>

#include <utility>
#include <boost/asio/io_context.hpp>

namespace quartzflow::bench {

/// Progress on stderr (--verbose or QF_BENCH_VERBOSE=1).
inline bool verbose = false;

inline void progress(const char* format, ...) __attribute__((format(printf, 1, 2)));
inline void progress(const char* format, ...) {
  if (!verbose) return;
  va_list args;
  va_start(args, format);
  std::vfprintf(stderr, format, args);
  va_end(args);
  std::fputc('\n', stderr);
}

/// A new directory under the system's temp dir, named `<prefix>-XXXXXX`.
inline std::filesystem::path make_temp_dir(const std::string& prefix) {
  std::string pattern = (std::filesystem::temp_directory_path() / (prefix + "-XXXXXX")).string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("cannot create a temp dir");
  return pattern;
}

/// Runs `io` in slices of at most `step` until `done()` or `timeout`; false on timeout.
inline bool run_io_until(boost::asio::io_context& io, const std::function<bool()>& done,
                         std::chrono::milliseconds timeout,
                         std::chrono::milliseconds step = std::chrono::milliseconds{5}) {
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + timeout;
  while (!done()) {
    const auto now = Clock::now();
    if (now >= deadline) return false;
    if (io.stopped()) io.restart();
    io.run_for(std::min<Clock::duration>(deadline - now, step));
  }
  return true;
}

}  // namespace quartzflow::bench
