// SPDX-License-Identifier: Apache-2.0
// The library version (kept equal to project(VERSION) in CMakeLists.txt by a test).
#pragma once

#define QUARTZFLOW_VERSION_MAJOR 0
#define QUARTZFLOW_VERSION_MINOR 1
#define QUARTZFLOW_VERSION_PATCH 0
#define QUARTZFLOW_VERSION_STRING "0.1.0"

namespace quartzflow {
/// The version of the library the program was compiled against.
inline constexpr const char* version = QUARTZFLOW_VERSION_STRING;
}  // namespace quartzflow
