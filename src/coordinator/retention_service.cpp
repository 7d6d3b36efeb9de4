// SPDX-License-Identifier: Apache-2.0
#include "retention_service.hpp"

#include <utility>
#include <filesystem>
#include <map>
#include <vector>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <date/date.h>
#include <fmt/format.h>
#include <google/protobuf/util/json_util.h>
#include <zlib.h>

#include <quartzflow/log.hpp>

#include "../common/clock.hpp"
#include "../common/json_text.hpp"

namespace quartzflow::detail {
namespace {

namespace asio = boost::asio;

std::string utc_day(std::int64_t unix_ms) {
  return date::format("%F", date::floor<date::days>(
                                std::chrono::sys_time<std::chrono::milliseconds>{std::chrono::milliseconds{unix_ms}}));
}

std::string json_line(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  out += '\n';
  return out;
}

/// Archives what a slice deleted: lines grouped by UTC day, one append per file.
void archive(const std::string& dir, const std::vector<v1::Execution>& executions, const std::vector<ArchivedLog>& logs,
             const std::vector<v1::AuditEntry>& audit) {
  std::map<std::pair<std::string, std::string>, std::string> files;  // (prefix, day) -> lines
  for (const auto& e : executions) files[{"executions", utc_day(e.scheduled_unix_ms())}] += json_line(e);
  for (const auto& l : logs) {
    std::string line = "{\"execution_id\":\"";
    append_json_escaped(line, l.execution_id);
    line += "\",\"log\":\"";
    append_json_escaped(line, l.text);
    line += "\"}\n";
    files[{"logs", utc_day(l.at_unix_ms)}] += line;
  }
  for (const auto& a : audit) files[{"audit", utc_day(a.at_unix_ms())}] += json_line(a);
  for (const auto& [key, lines] : files) append_archive(dir, key.first, key.second, lines);
}

}  // namespace

void append_archive(const std::string& dir, std::string_view prefix, std::string_view day, const std::string& lines) {
  std::error_code fs_error;
  std::filesystem::create_directories(dir, fs_error);
  const auto path = (std::filesystem::path(dir) / fmt::format("{}-{}.jsonl.gz", prefix, day)).string();
  // "ab": a new gzip member after the ones already there; zcat and gzip -d read them as one.
  gzFile file = gzopen(path.c_str(), "ab");
  if (!file) throw error(errc::store_failed, fmt::format("retention.archive_dir: cannot open {}", path));
  const bool written = lines.empty() || gzwrite(file, lines.data(), static_cast<unsigned>(lines.size())) ==
                                            static_cast<int>(lines.size());
  const bool closed = gzclose(file) == Z_OK;
  if (!written || !closed)
    throw error(errc::store_failed, fmt::format("retention.archive_dir: cannot write {} (disk full?)", path));
}

struct RetentionService::Impl : std::enable_shared_from_this<Impl> {
  enum class Phase { executions, logs, audit, rollups, done };

  Impl(asio::any_io_executor on, Store& purged, RetentionOptions chosen, std::function<bool()> leads)
      : executor(on), store(purged), options(std::move(chosen)), leading(std::move(leads)), timer(on) {}

  asio::any_io_executor executor;
  Store& store;
  RetentionOptions options;
  std::function<bool()> leading;
  asio::steady_timer timer;
  bool stopped = true;
  bool in_pass = false;
  Phase phase = Phase::done;
  std::int64_t now_ms = 0;
  RetentionCounts pass;
  RetentionCounts total;
  std::vector<std::function<void(error_code, RetentionCounts)>> waiting;

  void arm(std::chrono::milliseconds after) {
    timer.expires_after(after);
    timer.async_wait([weak = weak_from_this()](const error_code& ec) {
      auto self = weak.lock();
      if (!self || ec || self->stopped) return;
      self->begin_pass();
    });
  }

  void begin_pass() {
    if (in_pass) return;
    in_pass = true;
    phase = Phase::executions;
    now_ms = now_unix_ms();
    pass = {};
    slice();
  }

  void finish_pass(error_code ec) {
    in_pass = false;
    phase = Phase::done;
    total += pass;
    if (ec) logger()->warn("retention: pass stopped: {}", ec.message());
    else if (pass.executions + pass.logs + pass.audit + pass.rollups > 0)
      logger()->info("retention: purged {} executions, {} logs, {} audit entries, {} daily roll-ups", pass.executions,
                     pass.logs, pass.audit, pass.rollups);
    auto done = std::move(waiting);
    waiting.clear();
    for (auto& d : done) d(ec, pass);
    if (!stopped) arm(options.interval);
  }

  static std::int64_t hours_ms(std::chrono::hours h) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(h).count();
  }

  void slice() {
    if (phase == Phase::done) return finish_pass({});
    if (!leading()) return finish_pass({});  // a standby: the leader purges
    struct Result {
      std::size_t deleted = 0;
    };
    auto result = std::make_shared<Result>();
    const auto current = phase;
    const auto rows = options.batch_rows;
    const bool archiving = !options.archive_dir.empty();
    const auto dir = options.archive_dir;
    const std::int64_t cut_executions = now_ms - hours_ms(options.executions);
    const std::int64_t cut_logs = now_ms - hours_ms(options.logs);
    const std::int64_t cut_audit = now_ms - hours_ms(options.audit);
    const std::string cut_rollups = utc_day(now_ms - hours_ms(options.rollups));
    store.transact(
        [=](StoreTransaction& tx, error_code&) {
          std::vector<v1::Execution> executions;
          std::vector<ArchivedLog> logs;
          std::vector<v1::AuditEntry> audit;
          switch (current) {
            case Phase::executions:
              result->deleted = tx.purge_executions(cut_executions, rows, archiving ? &executions : nullptr,
                                                    archiving ? &logs : nullptr);
              break;
            case Phase::logs: result->deleted = tx.purge_logs(cut_logs, rows, archiving ? &logs : nullptr); break;
            case Phase::audit: result->deleted = tx.purge_audit(cut_audit, rows, archiving ? &audit : nullptr); break;
            case Phase::rollups: result->deleted = tx.purge_execution_rollups(cut_rollups); break;
            case Phase::done: break;
          }
          // Written before the commit: a failed write rolls the slice back, nothing is lost.
          if (archiving) archive(dir, executions, logs, audit);
        },
        [weak = weak_from_this(), result, current](error_code ec) {
          auto self = weak.lock();
          if (!self) return;
          if (ec) return self->finish_pass(ec);
          switch (current) {
            case Phase::executions: self->pass.executions += result->deleted; break;
            case Phase::logs: self->pass.logs += result->deleted; break;
            case Phase::audit: self->pass.audit += result->deleted; break;
            case Phase::rollups: self->pass.rollups += result->deleted; break;
            case Phase::done: break;
          }
          // A full slice: more are waiting; otherwise on to the next kind.
          if (current == Phase::rollups || result->deleted < self->options.batch_rows)
            self->phase = static_cast<Phase>(static_cast<int>(current) + 1);
          if (self->stopped && self->waiting.empty()) return self->finish_pass({});
          if (self->phase == Phase::done) return self->finish_pass({});
          // The pause lets fires and API writes through between slices.
          self->timer.expires_after(self->options.pause);
          self->timer.async_wait([weak = self->weak_from_this()](const error_code& wait_ec) {
            auto again = weak.lock();
            if (!again) return;
            if (wait_ec && again->stopped) return again->finish_pass({});
            again->slice();
          });
        });
  }
};

RetentionService::RetentionService(asio::any_io_executor executor, Store& store, RetentionOptions options,
                                   std::function<bool()> leading)
    : impl_(std::make_shared<Impl>(executor, store, std::move(options), std::move(leading))) {}

RetentionService::~RetentionService() {
  impl_->stopped = true;
  impl_->timer.cancel();
}

void RetentionService::start() {
  if (!impl_->stopped) return;
  impl_->stopped = false;
  if (!impl_->in_pass) impl_->arm(impl_->options.first_pass);
}

void RetentionService::stop() {
  impl_->stopped = true;
  impl_->timer.cancel();
}

void RetentionService::run_pass(std::function<void(error_code, RetentionCounts)> done) {
  asio::post(impl_->executor, [impl = impl_, done = std::move(done)]() mutable {
    impl->waiting.push_back(std::move(done));
    if (!impl->in_pass) {
      impl->timer.cancel();
      impl->begin_pass();
    }
  });
}

RetentionCounts RetentionService::totals() const noexcept { return impl_->total; }

}  // namespace quartzflow::detail
