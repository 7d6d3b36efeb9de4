// SPDX-License-Identifier: Apache-2.0
// The quartzflow error category and the text of validation errors.
#include <quartzflow/error.hpp>

namespace quartzflow {
namespace {

class Category final : public boost::system::error_category {
 public:
  const char* name() const noexcept override { return "quartzflow"; }
  std::string message(int value) const override {
    switch (static_cast<errc>(value)) {
      case errc::invalid_argument: return "invalid argument";
      case errc::never_fires: return "schedule never fires";
      case errc::unknown_time_zone: return "unknown time zone";
      case errc::no_more_fires: return "no more fires";
      case errc::store_failed: return "local store failed";
      case errc::store_not_found: return "no local store";
      case errc::store_read_only: return "local store is read-only";
      case errc::store_version: return "unsupported local store schema version";
      case errc::not_found: return "not found";
      case errc::conflict: return "conflict";
      case errc::store_unavailable: return "store database unavailable";
      case errc::fenced: return "leader lease lost";
    }
    return "unknown quartzflow error";
  }
};

}  // namespace

const boost::system::error_category& quartzflow_category() noexcept {
  static const Category category;
  return category;
}

std::string ValidationError::message() const {
  std::string text = input.empty() ? std::string("invalid input") : "invalid " + input;
  if (!field.empty()) text += ": " + field;
  if (!reason.empty()) text += ": " + reason;
  return text;
}

}  // namespace quartzflow
