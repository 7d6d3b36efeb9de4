// SPDX-License-Identifier: Apache-2.0
// Error codes of libquartzflow and the exception that carries a field path and a reason.
#pragma once

#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

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
  store_unavailable,     ///< the store's database server cannot be reached (connection lost or refused);
                         ///< the store reconnects on its next transaction
  fenced,                ///< this coordinator's leader lease is lost (another one took over):
                         ///< it must not record or send fires
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

/// Throws `quartzflow::error` for a failure reported as `ec` and a detail text (the text, or
/// the code's message when there is none). Used by the throwing overloads.
[[noreturn]] inline void throw_error(error_code ec, const std::string& detail) {
  throw error(ec, detail.empty() ? ec.message() : detail);
}

/// Calls `attempt(ec, detail)` and returns what it returns, throwing (as `throw_error`) when
/// that is empty: the throwing overload of an `(…, error_code&, std::string* detail)` call.
template <typename Attempt>
auto value_or_throw(Attempt attempt) {
  error_code ec;
  std::string detail;
  auto value = attempt(ec, detail);
  if (!value) throw_error(ec, detail);
  return value;
}

/**
 * The outcome of a fallible operation that completes later (catalog changes, triggers, the
 * `async_` functions): `ec` and, for validation failures, `error` (field path and reason);
 * `value` on success. Test it with `if (result)`; `value_or_throw()` turns a failure into a
 * `quartzflow::error`, for hosts that prefer exceptions (e.g. after `co_await`).
 */
template <typename T>
struct Result {
  error_code ec;
  ValidationError error;
  T value{};

  explicit operator bool() const noexcept { return !ec; }
  /// The user-facing text of the failure: the validation message, else the code's message.
  std::string message() const {
    if (!error.field.empty() || !error.reason.empty()) return error.message();
    return ec ? ec.message() : std::string{};
  }
  T& value_or_throw() & {
    throw_if_failed();
    return value;
  }
  T value_or_throw() && {
    throw_if_failed();
    return std::move(value);
  }

 private:
  void throw_if_failed() const {
    if (!ec) return;
    if (!error.field.empty() || !error.reason.empty()) throw quartzflow::error(ec, error);
    throw quartzflow::error(ec, ec.message());
  }
};

}  // namespace quartzflow

namespace boost::system {
template <>
struct is_error_code_enum<quartzflow::errc> : std::true_type {};
}  // namespace boost::system
