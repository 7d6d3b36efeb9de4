// SPDX-License-Identifier: Apache-2.0
// The web console built into qf-coordinator: defined by a source CMake generates from
// src/admin/console/dist (cmake/embed_console.cmake); empty when Node.js was missing.
#pragma once

#include <span>

#include <quartzflow/admin.hpp>

namespace quartzflow::examples {

/// The console's files (static storage); empty when the console was not built.
std::span<const ConsoleFile> embedded_console_files() noexcept;

}  // namespace quartzflow::examples
