// SPDX-License-Identifier: Apache-2.0
// Admin API: GET /api/v1/admin/backup, an online consistent copy of the store (SQLite) sent
// as the response body; PostgreSQL answers with the pg_dump command to run instead.
#include <filesystem>
#include <fstream>
#include <sstream>

#include <boost/asio/post.hpp>
#include <fmt/format.h>

#include "../common/clock.hpp"
#include "admin_api.hpp"

namespace quartzflow::detail {
namespace {

using CallPtr = std::shared_ptr<ApiCall>;
constexpr int k_admin = 3;

}  // namespace

void AdminApi::add_backup_routes() {
  add("GET", "/api/v1/admin/backup", k_admin, nullptr, nullptr,
      "A consistent copy of the coordinator's SQLite store, made while it runs (body: the database file, "
      "application/vnd.sqlite3); with PostgreSQL an error naming the pg_dump command to run",
      [this](CallPtr call) { backup(std::move(call)); });
}

void AdminApi::backup(CallPtr call) {
  if (!options_.backup)
    return call->fail(v1::API_ERROR_CODE_FAILED_PRECONDITION, "this server makes no backups of its store");
  options_.backup([weak = weak_from_this(), call, executor = executor_](error_code ec, std::string file,
                                                                        std::string detail) mutable {
    boost::asio::post(executor, [weak, call, ec, file = std::move(file), detail = std::move(detail)]() mutable {
      auto self = weak.lock();
      std::string body;
      if (!ec) {
        std::ifstream in(file, std::ios::binary);
        std::ostringstream bytes;
        bytes << in.rdbuf();
        if (!in) {
          ec = errc::store_failed;
          detail = fmt::format("cannot read the copy {}", file);
        }
        body = std::move(bytes).str();
      }
      std::error_code ignored;
      if (!file.empty()) std::filesystem::remove(file, ignored);
      if (!self) return;
      if (ec) {
        self->audit(*call, "store.backup", "store", "", "", false, detail);
        return call->fail(
            ec == errc::invalid_argument ? v1::API_ERROR_CODE_FAILED_PRECONDITION : v1::API_ERROR_CODE_UNAVAILABLE,
            detail.empty() ? ec.message() : detail);
      }
      self->audit(*call, "store.backup", "store", "", "", true, fmt::format("{} bytes", body.size()));
      ApiResponse r;
      r.content_type = "application/vnd.sqlite3";
      r.body = std::move(body);
      r.headers.emplace_back("Content-Disposition",
                             fmt::format("attachment; filename=\"quartzflow-{}.db\"", now_unix_ms() / 1000));
      if (call->reply) std::exchange(call->reply, {})(std::move(r));
    });
  });
}

}  // namespace quartzflow::detail
