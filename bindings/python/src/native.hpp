// SPDX-License-Identifier: Apache-2.0
// Shared pieces of the quartzflow._native extension: error translation and the parts each
// binding file registers.
#pragma once

#include <pybind11/pybind11.h>

#include <quartzflow/error.hpp>

namespace quartzflow::python {

/// Raises `quartzflow.InvalidSchedule(message, field, reason)` (a ValueError).
[[noreturn]] void raise_invalid(const ValidationError& detail);

void bind_cron(pybind11::module_& m);
void bind_engine(pybind11::module_& m);

}  // namespace quartzflow::python
