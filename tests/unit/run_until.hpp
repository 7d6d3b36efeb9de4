// SPDX-License-Identifier: Apache-2.0
// Runs an io_context until a condition holds or a time limit passes: bounded, never a bare
// sleep. The context stops whenever it runs out of work, so it is restarted as needed.
#pragma once

#include <chrono>

#include <utility>
#include <boost/asio/io_context.hpp>

namespace quartzflow::testing {

template <typename Pred>
bool run_until(boost::asio::io_context& io, Pred done, std::chrono::milliseconds limit = std::chrono::seconds{10}) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done() && std::chrono::steady_clock::now() < deadline) {
    if (io.stopped()) io.restart();
    io.run_one_for(std::chrono::milliseconds{10});
  }
  return done();
}

}  // namespace quartzflow::testing
