// SPDX-License-Identifier: Apache-2.0
// Error codes of libquartzflow and the exception that carries a field path and a reason.
#pragma once

#include <string>
#include <system_error>
#include <type_traits>

#include <boost/system/error_code.hpp>
#include <boost/system/system_error.hpp>

namespace quartzflow {

using error_code = boost::system::error_code;

/// Error conditions reported by the library.
enum class errc {
  invalid_argument = 1,  ///< an input failed validation; the detail names the field
  never_fires,           ///< a schedule that can never produce a fire
  unknown_time_zone,     ///< an IANA zone name the OS database does not know
  no_more_fires,         ///< the schedule has no fire in the requested direction
  store_failed,          ///< the local store could not read or write (SQLite error, logged)
  store_not_found,       ///< no local store at the given path (read-only open)
  store_read_only,       ///< a write was asked of a store opened read-only
  store_version,         ///< the store's schema version is not the one this build uses
  not_found,             ///< the task, group, agent or execution does not exist
  conflict,              ///< the change conflicts with the current state (name taken, runs in progress)
};

/// The category of `errc` values.
const boost::system::error_category& quartzflow_category() noexcept;

inline error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), quartzflow_category()};
}

/// A validation failure: which field, and why. `message()` is the text users see.
struct ValidationError {
  std::string input;   ///< what was being validated, e.g. `cron expression "61 * * * *"`
  std::string field;   ///< path of the offending field, e.g. `minute` or `schedule.time_zone`
  std::string reason;  ///< why it is wrong, e.g. `61 is out of range 0-59`

  /// `invalid <input>: <field>: <reason>`, leaving out the parts that are empty.
  std::string message() const;
};

/// Exception thrown by the throwing overloads; `what()` is the full user-facing text.
class error : public boost::system::system_error {
 public:
  error(error_code ec, ValidationError detail)
      : boost::system::system_error(ec), detail_(std::move(detail)), what_(detail_.message()) {}
  error(error_code ec, std::string what) : boost::system::system_error(ec), what_(std::move(what)) {}

  /// Field and reason when the error is a validation failure; empty otherwise.
  const ValidationError& detail() const noexcept { return detail_; }

  /// what() without Boost's appended ": <category message>" suffix.
  const char* what() const noexcept override { return what_.c_str(); }

 private:
  ValidationError detail_;
  std::string what_;
};

}  // namespace quartzflow

namespace boost::system {
template <>
struct is_error_code_enum<quartzflow::errc> : std::true_type {};
}  // namespace boost::system
