// SPDX-License-Identifier: Apache-2.0
// Link anchor of the quartzflow::http_executor component: the target (and the .pc file) ask
// the linker for this symbol, which pulls make_http_executor out of the static library and
// so resolves the TaskEngine's weak reference to it (task_engine.cpp).
#include <utility>
#include <quartzflow/executor.hpp>

extern "C" {
extern const decltype(&quartzflow::make_http_executor) quartzflow_link_http_executor;
const decltype(&quartzflow::make_http_executor) quartzflow_link_http_executor = &quartzflow::make_http_executor;
}
