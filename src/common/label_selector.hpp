// SPDX-License-Identifier: Apache-2.0
// Label selectors (`key=value[,key=value...]`) as every component reads them: the store's
// task and agent filters, the admin API's checks of alert scopes.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace quartzflow::detail {

/// `key=value[,key=value...]` (spaces around parts ignored); throws invalid_argument naming
/// the field `label_selector` of `input` when a part is not `key=value` with a non-empty key.
std::vector<std::pair<std::string, std::string>> parse_label_selector(std::string_view text, std::string_view input);

}  // namespace quartzflow::detail
