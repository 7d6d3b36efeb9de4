// SPDX-License-Identifier: Apache-2.0
// Admin API: several coordinators. GET /api/v1/cluster (who leads, the epoch, every
// coordinator), the 503 not_leader a standby answers, and the cluster metrics.
#include <fmt/format.h>

#include "admin_api.hpp"

namespace quartzflow::detail {
namespace {

using CallPtr = std::shared_ptr<ApiCall>;
constexpr int k_viewer = 1;

/// A Prometheus label value: backslash, quote and newline escaped.
std::string label_value(std::string_view text) {
  std::string out;
  for (const char c : text) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

}  // namespace

void AdminApi::add_cluster_routes() {
  add("GET", "/api/v1/cluster", k_viewer, nullptr, v1::ClusterStatus::descriptor(),
      "The coordinators sharing this database: who leads (lease holder, epoch, expiry), each one's state and "
      "addresses",
      [this](CallPtr call) { cluster_status(std::move(call)); });
}

void AdminApi::cluster_status(CallPtr call) {
  coordinator_.cluster_status([weak = weak_from_this(), call](error_code ec, v1::ClusterStatus status) {
    if (!weak.lock()) return;
    if (ec) return call->fail(failure_of(ec, {}, "the cluster status could not be read from the store"));
    call->ok(status);
  });
}

void AdminApi::fail_not_leader(ApiCall& call) const {
  const auto lease = coordinator_.leader_lease();
  const std::string where =
      lease.held() ? fmt::format("the leader is {} at {}", lease.holder_id,
                                 lease.holder_addresses.admin.empty() ? std::string("(no admin address advertised)")
                                                                      : lease.holder_addresses.admin)
                   : std::string("no coordinator leads right now; retry in a moment");
  call.fail(v1::API_ERROR_CODE_NOT_LEADER, fmt::format("this coordinator is a standby: {}", where));
}

std::string AdminApi::cluster_metrics_text() const {
  const auto lease = coordinator_.leader_lease();
  const bool leading = coordinator_.leading();
  std::string out;
  out +=
      "# HELP qf_cluster_leader 1 while this coordinator holds the leader lease (it fires runs), 0 on a standby.\n"
      "# TYPE qf_cluster_leader gauge\n";
  out += fmt::format("qf_cluster_leader{{leader_id=\"{}\"}} {}\n", label_value(lease.held() ? lease.holder_id : ""),
                     leading ? 1 : 0);
  out +=
      "# HELP qf_cluster_epoch The leader lease's epoch as this coordinator read it last (+1 on every takeover).\n"
      "# TYPE qf_cluster_epoch gauge\n";
  out += fmt::format("qf_cluster_epoch {}\n", lease.epoch);
  return out;
}

}  // namespace quartzflow::detail
