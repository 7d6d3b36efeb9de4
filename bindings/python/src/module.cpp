// SPDX-License-Identifier: Apache-2.0
// quartzflow._native: the C++ library behind `import quartzflow` (schedules and the
// embedded TaskEngine). The Python package wraps it; nothing here is meant to be used directly.
#include "native.hpp"

#include <quartzflow/version.hpp>

namespace py = pybind11;

namespace quartzflow::python {

void raise_invalid(const ValidationError& detail) {
  // The exception class is Python's (quartzflow/_errors.py) so that it pickles, prints and
  // documents like any other; the module holds it from import on.
  py::object cls = py::module_::import("quartzflow._errors").attr("InvalidSchedule");
  py::object exc = cls(detail.message(), detail.field, detail.reason);
  PyErr_SetObject(cls.ptr(), exc.ptr());
  throw py::error_already_set();
}

}  // namespace quartzflow::python

PYBIND11_MODULE(_native, m) {
  m.doc() = "QuartzFlow's C++ library (cron, schedules, the TaskEngine with its LocalStore).";
  m.attr("__version__") = quartzflow::version;
  quartzflow::python::bind_cron(m);
  quartzflow::python::bind_engine(m);
}
