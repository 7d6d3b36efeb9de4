// SPDX-License-Identifier: Apache-2.0
// Admin API: executions (list, detail, logs, cancel, retry), statistics, the audit log and
// schedule previews.
#include <date/tz.h>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <quartzflow/execution_status.hpp>
#include <quartzflow/schedule.hpp>
#include <quartzflow/task.hpp>

#include "../common/daily_stats_merge.hpp"
#include "../common/zone_rules.hpp"
#include "admin_api.hpp"

namespace quartzflow::detail {
namespace {

using CallPtr = std::shared_ptr<ApiCall>;

constexpr int k_viewer = 1;
constexpr int k_operator = 2;
constexpr std::uint32_t k_default_log_bytes = 65536;
constexpr std::uint32_t k_max_log_bytes = 1 << 20;

bool query_into(ApiCall& call, google::protobuf::Message& message) {
  if (auto failure = parse_query(call.request.query, message)) {
    call.fail(*failure);
    return false;
  }
  return true;
}

ApiException not_found(std::string_view what, std::string_view id) {
  return ApiException{{v1::API_ERROR_CODE_NOT_FOUND, fmt::format("no {} with id \"{}\"", what, id), {}}};
}

ApiException invalid(std::string field, std::string reason) {
  return ApiException{{v1::API_ERROR_CODE_INVALID_ARGUMENT,
                       fmt::format("invalid query: {}: {}", field, reason),
                       {field_violation(field, reason)}}};
}

void fill_paging(auto& out, std::uint32_t page, std::uint32_t page_size, std::uint64_t total) {
  out.set_total(total);
  out.set_page(std::max<std::uint32_t>(page, 1));
  out.set_page_size(page_size == 0 ? 20 : std::min<std::uint32_t>(page_size, 500));
}

v1::DstRule rule_of(DstRule rule) {
  switch (rule) {
    case DstRule::gap_shifted: return v1::DST_RULE_GAP_SHIFTED;
    case DstRule::overlap_first: return v1::DST_RULE_OVERLAP_FIRST;
    case DstRule::overlap_second: return v1::DST_RULE_OVERLAP_SECOND;
    case DstRule::none: break;
  }
  return v1::DST_RULE_NONE;
}

std::string offset_text(std::chrono::seconds offset) {
  const auto total = offset.count();
  const auto magnitude = total < 0 ? -total : total;
  return fmt::format("{}{:02}:{:02}", total < 0 ? '-' : '+', magnitude / 3600, magnitude % 3600 / 60);
}

/// The next fires of `schedule` after `from`, with local time, offset and DST rule.
v1::CronParseResponse preview(const Schedule& schedule, Instant from, std::size_t count) {
  v1::CronParseResponse out;
  out.set_description(schedule.describe());
  const std::string zone_name = schedule.spec().time_zone.empty() ? "UTC" : schedule.spec().time_zone;
  out.set_time_zone(zone_name);
  const auto* cron = schedule.cron();
  out.set_fixed_time(cron && cron->is_fixed_time());
  const auto* zone = zone_name == "UTC" ? nullptr : date::locate_zone(zone_name);
  Instant after = from;
  for (std::size_t i = 0; i < count; ++i) {
    std::optional<ExplainedFire> fire;
    if (cron) {
      fire = cron->explain_next(after);
    } else if (auto next = schedule.next(after, {after, after, i})) {
      const auto info = zone ? detail::zone_info(zone, next->scheduled) : date::sys_info{};
      fire = ExplainedFire{next->scheduled, zone ? info.offset : std::chrono::seconds{0}, zone ? info.abbrev : "UTC",
                           DstRule::none, false};
    }
    if (!fire) break;
    auto* f = out.add_next_fires();
    f->set_unix_ms(std::chrono::duration_cast<std::chrono::milliseconds>(fire->at.time_since_epoch()).count());
    const auto local = date::local_seconds{std::chrono::floor<std::chrono::seconds>(fire->at.time_since_epoch()) +
                                           fire->utc_offset};
    f->set_local_time(date::format("%FT%T", local) + offset_text(fire->utc_offset));
    f->set_utc_offset_seconds(static_cast<std::int32_t>(fire->utc_offset.count()));
    f->set_zone_abbreviation(fire->abbreviation);
    f->set_dst_rule(rule_of(fire->rule));
    f->set_near_dst_transition(fire->near_transition);
    if (fire->rule == DstRule::gap_shifted)
      out.add_dst_notes(fmt::format("{}: the local time does not exist in {}; fires at the first instant after the gap",
                                    f->local_time(), zone_name));
    else if (fire->rule == DstRule::overlap_first || fire->rule == DstRule::overlap_second)
      out.add_dst_notes(fmt::format("{}: the local time happens twice in {}; this is the {} occurrence", f->local_time(),
                                    zone_name, fire->rule == DstRule::overlap_first ? "first" : "second"));
    after = fire->at;
  }
  return out;
}

/// `YYYY-MM-DD` naming a real day.
bool is_date(std::string_view text) {
  if (text.size() != 10 || text[4] != '-' || text[7] != '-') return false;
  int y = 0, m = 0, d = 0;
  for (std::size_t i = 0; i < 10; ++i) {
    if (i == 4 || i == 7) continue;
    if (text[i] < '0' || text[i] > '9') return false;
    int& part = i < 4 ? y : i < 7 ? m : d;
    part = part * 10 + (text[i] - '0');
  }
  return date::year_month_day{date::year{y}, date::month{static_cast<unsigned>(m)}, date::day{static_cast<unsigned>(d)}}.ok();
}

Instant from_or_now(std::int64_t from_unix_ms) {
  // Instants are whole seconds: a fire strictly after 12:00:00.500 is after 12:00:00.
  if (from_unix_ms > 0) return std::chrono::floor<std::chrono::seconds>(std::chrono::sys_time<std::chrono::milliseconds>{std::chrono::milliseconds{from_unix_ms}});
  return std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now());
}

}  // namespace

void AdminApi::add_history_routes() {
  const auto self = [this](auto method) {
    return [this, method](CallPtr call) { (this->*method)(std::move(call)); };
  };
  add("GET", "/api/v1/executions", k_viewer, v1::ListExecutionsRequest::descriptor(),
      v1::ListExecutionsResponse::descriptor(), "List executions (task, agent, group, status, time range)",
      self(&AdminApi::list_executions));
  add("GET", "/api/v1/executions/stats", k_viewer, v1::StatsQuery::descriptor(), v1::StatsResponse::descriptor(),
      "Statistics by task, group, agent, range: counts, success rate, durations, failure reasons",
      self(&AdminApi::stats));
  add("GET", "/api/v1/executions/{id}", k_viewer, nullptr, v1::Execution::descriptor(),
      "An execution with its output (first 10 KB)", self(&AdminApi::get_execution));
  add("GET", "/api/v1/executions/{id}/logs", k_viewer, v1::GetExecutionLogRequest::descriptor(),
      v1::ExecutionLogResponse::descriptor(), "The log of an execution (offset, max_bytes): past the first 10 KB kept here, read from its agent",
      self(&AdminApi::execution_logs));
  add("POST", "/api/v1/executions/{id}/cancel", k_operator, v1::CancelExecutionRequest::descriptor(),
      v1::CancelExecutionResponse::descriptor(), "Cancel a PENDING or RUNNING execution",
      self(&AdminApi::cancel_execution));
  add("POST", "/api/v1/executions/{id}/retry", k_operator, nullptr, v1::TriggerResponse::descriptor(),
      "Run a finished execution again on the agent it ran on (trigger RETRY, retry_of_execution_id links it)",
      self(&AdminApi::retry_execution));
  add("GET", "/api/v1/stats/daily", k_viewer, v1::DailyStatsQuery::descriptor(), v1::DailyStatsResponse::descriptor(),
      "Daily statistics the agents reported (by day, task and agent), with the roll-ups of purged runs no agent "
      "reported",
      self(&AdminApi::daily_stats));
  add("GET", "/api/v1/audit", k_operator, v1::ListAuditRequest::descriptor(), v1::ListAuditResponse::descriptor(),
      "The audit log of every change (who, what, when, from where, before and after)", self(&AdminApi::list_audit));
}

void AdminApi::list_executions(CallPtr call) {
  v1::ListExecutionsRequest request;
  if (!query_into(*call, request)) return;
  read(call, [request](StoreTransaction& tx, const ApiCall&) {
    auto listing = tx.list_executions(request);
    auto out = std::make_unique<v1::ListExecutionsResponse>();
    for (auto& e : listing.items) *out->add_items() = std::move(e);
    fill_paging(*out, request.page(), request.page_size(), listing.total);
    return out;
  });
}

void AdminApi::get_execution(CallPtr call) {
  const std::string id = call->params.at("id");
  read(call, [id](StoreTransaction& tx, const ApiCall&) -> std::unique_ptr<google::protobuf::Message> {
    auto record = tx.execution(id);
    if (!record) throw not_found("execution", id);
    return std::make_unique<v1::Execution>(std::move(*record));
  });
}

void AdminApi::execution_logs(CallPtr call) {
  v1::GetExecutionLogRequest request;
  if (!query_into(*call, request)) return;
  if (request.max_bytes() > k_max_log_bytes)
    return call->fail(v1::API_ERROR_CODE_INVALID_ARGUMENT, "invalid query: max_bytes: at most 1048576", "max_bytes",
                      "at most 1048576");
  const std::string id = call->params.at("id");
  struct Kept {
    std::optional<v1::Execution> record;
    std::optional<std::string> stored;  // a full log stored on the coordinator
  };
  auto kept = std::make_shared<Kept>();
  coordinator_.store().read(
      [id, kept](StoreTransaction& tx, error_code&) {
        kept->record = tx.execution(id);
        if (kept->record) kept->stored = tx.log(id);
      },
      [weak = weak_from_this(), call, id, request, kept](error_code ec) {
        auto self = weak.lock();
        if (!self) return;
        if (ec) return call->fail(v1::API_ERROR_CODE_UNAVAILABLE, fmt::format("store unavailable: {}", ec.message()));
        if (!kept->record) return call->fail(v1::API_ERROR_CODE_NOT_FOUND, fmt::format("no execution with id \"{}\"", id));
        self->serve_log(call, std::move(*kept->record), std::move(kept->stored), request);
      });
}

void AdminApi::serve_log(CallPtr call, v1::Execution record, std::optional<std::string> stored,
                         v1::GetExecutionLogRequest request) {
  // The coordinator holds the first 10 KB of the output (the record) unless a full log
  // was stored; past that, the full log is read from the agent that ran it.
  const std::string& text = stored ? *stored : record.output();
  const std::size_t max = request.max_bytes() ? request.max_bytes() : k_default_log_bytes;
  const std::uint64_t offset = request.offset();
  const std::uint64_t full_size = stored ? stored->size() : std::max<std::uint64_t>(record.output_bytes(), text.size());
  const bool partial = !stored && record.output_truncated();
  auto from_record = [&record, &text, max, full_size, partial, offset](std::string agent_error) {
    const std::size_t at = std::min<std::size_t>(offset, text.size());
    v1::ExecutionLogResponse out;
    auto* chunk = out.mutable_chunk();
    chunk->set_execution_id(record.execution_id());
    chunk->set_offset(at);
    chunk->set_data(text.substr(at, max));
    chunk->set_next_offset(at + chunk->data().size());
    chunk->set_total_bytes(full_size);
    chunk->set_eof(at + max >= text.size() && !partial && is_final(record.status()));
    out.set_source(v1::LOG_SOURCE_RECORD);
    out.set_truncated(partial);
    out.set_error_message(record.error_message());
    out.set_agent_log_error(std::move(agent_error));
    return out;
  };
  if (!is_final(record.status())) {
    // Running: what its agent has streamed so far (live logs), when the coordinator heard it.
    // Offsets are raw bytes of the agent's log; a piece whose bytes were replaced as UTF-8
    // cannot be entered in the middle (the next piece is served from its start).
    if (auto live = live_logs_.find(record.execution_id());
        live != live_logs_.end() && !live->second.pieces.empty() && offset >= live->second.pieces.front().offset) {
      const auto& pieces = live->second.pieces;
      std::uint64_t at = pieces.back().next_offset;
      std::uint64_t next = at;
      std::string data;
      for (const auto& piece : pieces) {
        if (piece.next_offset <= offset) continue;
        const bool lossless = piece.next_offset - piece.offset == piece.data.size();
        std::size_t skip = 0;
        if (offset > piece.offset) {
          if (!lossless) continue;
          skip = offset - piece.offset;
          while (skip < piece.data.size() && (static_cast<unsigned char>(piece.data[skip]) & 0xC0U) == 0x80U) ++skip;
        }
        if (data.empty()) at = next = piece.offset + skip;
        const std::string_view rest = std::string_view(piece.data).substr(skip);
        if (data.size() + rest.size() > max) {
          if (!lossless && !data.empty()) break;
          if (!lossless) {
            data.append(rest);
            next = piece.next_offset;
            break;
          }
          std::size_t cut = max - data.size();
          while (cut > 0 && (static_cast<unsigned char>(rest[cut]) & 0xC0U) == 0x80U) --cut;
          data.append(rest.substr(0, cut));
          next = piece.offset + skip + cut;
          break;
        }
        data.append(rest);
        next = piece.next_offset;
      }
      v1::ExecutionLogResponse out;
      auto* chunk = out.mutable_chunk();
      chunk->set_execution_id(record.execution_id());
      chunk->set_offset(at);
      chunk->set_data(std::move(data));
      chunk->set_next_offset(next);
      chunk->set_total_bytes(pieces.back().next_offset);
      out.set_source(v1::LOG_SOURCE_AGENT);
      out.set_error_message(record.error_message());
      return call->ok(out);
    }
  }
  const bool beyond_kept = offset + max > text.size();
  if (!partial || !beyond_kept || !is_final(record.status()) || record.agent_id().empty())
    return call->ok(from_record({}));
  const std::string agent = record.agent_id();
  coordinator_.dispatcher().fetch_log(
      agent, record.execution_id(), offset, static_cast<std::uint32_t>(max),
      [call, record, offset, max, full_size, agent](error_code ec, v1::LogChunk answer) mutable {
        // Only a record without a stored full log gets here: what is kept is its output.
        const std::string& kept_text = record.output();
        const std::size_t text_size = kept_text.size();
        std::string why;
        auto code = v1::API_ERROR_CODE_UNAVAILABLE;
        if (ec == errc::not_found) {
          why = fmt::format("the full log ({} bytes) is on agent \"{}\", which is not online", record.output_bytes(), agent);
        } else if (ec) {
          why = fmt::format("agent \"{}\" did not send the log: {}", agent, ec.message());
        } else if (!answer.error().empty()) {
          why = fmt::format("agent \"{}\" has no full log of this run: {}", agent, answer.error());
          code = v1::API_ERROR_CODE_NOT_FOUND;
        } else {
          v1::ExecutionLogResponse out;
          *out.mutable_chunk() = std::move(*answer.mutable_chunk());
          auto* chunk = out.mutable_chunk();
          chunk->set_execution_id(record.execution_id());
          if (chunk->next_offset() == 0) chunk->set_next_offset(chunk->offset() + chunk->data().size());  // older agents
          out.set_source(v1::LOG_SOURCE_AGENT);
          out.set_truncated(false);
          out.set_error_message(record.error_message());
          return call->ok(out);
        }
        if (offset >= text_size)
          return call->fail(code, fmt::format("log of \"{}\" from byte {}: {}; the coordinator keeps only the first {} bytes",
                                              record.execution_id(), offset, why, text_size));
        // What is kept is still served, with the reason the rest is not.
        v1::ExecutionLogResponse out;
        auto* chunk = out.mutable_chunk();
        chunk->set_execution_id(record.execution_id());
        chunk->set_offset(offset);
        chunk->set_data(kept_text.substr(offset, max));
        chunk->set_next_offset(offset + chunk->data().size());
        chunk->set_total_bytes(full_size);
        chunk->set_eof(false);
        out.set_source(v1::LOG_SOURCE_RECORD);
        out.set_truncated(true);
        out.set_error_message(record.error_message());
        out.set_agent_log_error(fmt::format("{}; showing the first {} bytes the coordinator keeps", why, text_size));
        call->ok(out);
      });
}

void AdminApi::cancel_execution(CallPtr call) {
  v1::CancelExecutionRequest request;
  if (!call->request.body.empty()) {
    if (auto failure = parse_body(call->request.body, request)) return call->fail(*failure);
  }
  const std::string id = call->params.at("id");
  const std::string reason = request.reason();
  coordinator_.cancel(id, reason, call->actor, [weak = weak_from_this(), call, id, reason](error_code ec) {
    auto self = weak.lock();
    if (!self) return;
    if (ec == errc::not_found) return call->fail(v1::API_ERROR_CODE_NOT_FOUND, fmt::format("no execution with id \"{}\"", id));
    if (ec == errc::conflict) {
      self->audit(*call, "execution.cancel", "execution", id, id, false, "already finished");
      return call->fail(v1::API_ERROR_CODE_CONFLICT, fmt::format("execution \"{}\" has already finished", id));
    }
    if (ec == errc::fenced) return self->fail_not_leader(*call);
    if (ec) return call->fail(v1::API_ERROR_CODE_UNAVAILABLE, fmt::format("cancel failed: {}", ec.message()));
    self->audit(*call, "execution.cancel", "execution", id, id, true, reason);
    self->read(call, [id](StoreTransaction& tx, const ApiCall&) -> std::unique_ptr<google::protobuf::Message> {
      auto out = std::make_unique<v1::CancelExecutionResponse>();
      if (auto record = tx.execution(id)) {
        record->clear_output();
        *out->mutable_execution() = std::move(*record);
      }
      return out;
    });
  });
}

void AdminApi::retry_execution(CallPtr call) {
  if (!call->request.body.empty() && call->request.body != "{}")
    return call->fail(v1::API_ERROR_CODE_INVALID_ARGUMENT, "invalid retry: the request takes no body", "body",
                      "must be empty");
  const std::string id = call->params.at("id");
  auto record = std::make_shared<std::optional<v1::Execution>>();
  coordinator_.store().read(
      [id, record](StoreTransaction& tx, error_code&) { *record = tx.execution(id); },
      [weak = weak_from_this(), call, id, record](error_code ec) {
        auto self = weak.lock();
        if (!self) return;
        if (ec) return call->fail(v1::API_ERROR_CODE_UNAVAILABLE, "store unavailable");
        if (!*record) return call->fail(v1::API_ERROR_CODE_NOT_FOUND, fmt::format("no execution with id \"{}\"", id));
        // Re-run on the agent it ran on, as a RETRY linked to this execution.
        self->coordinator_.retry(**record, call->actor, [self, call, id, agent = (*record)->agent_id()](TriggerResult t) {
          if (t.ec) {
            auto failure = failure_of(t.ec, t.error);
            self->audit(*call, "execution.retry", "execution", id, id, false, failure.message);
            return call->fail(failure);
          }
          self->audit(*call, "execution.retry", "execution", id, id, true,
                      fmt::format("new execution: {}{}", fmt::join(t.value, ", "),
                                  agent.empty() ? std::string() : fmt::format(" on agent {}", agent)));
          v1::TriggerResponse out;
          for (auto& e : t.value) out.add_execution_ids(std::move(e));
          call->ok(out);
        });
      });
}

void AdminApi::stats(CallPtr call) {
  v1::StatsQuery query;
  if (!query_into(*call, query)) return;
  read(call, [query](StoreTransaction& tx, const ApiCall&) {
    return std::make_unique<v1::StatsResponse>(tx.stats(query));
  });
}

void AdminApi::daily_stats(CallPtr call) {
  v1::DailyStatsQuery query;
  if (!query_into(*call, query)) return;
  read(call, [query](StoreTransaction& tx, const ApiCall&) {
    const auto today = date::format("%F", std::chrono::floor<date::days>(std::chrono::system_clock::now()));
    const std::string from = query.from_date().empty() ? today : query.from_date();
    const std::string to = query.to_date().empty() ? from : query.to_date();
    for (const auto& [field, value] : {std::pair{"from_date", from}, std::pair{"to_date", to}})
      if (!is_date(value)) throw invalid(field, fmt::format("\"{}\" is not a YYYY-MM-DD date", value));
    if (to < from) throw invalid("to_date", "is before from_date");
    auto out = std::make_unique<v1::DailyStatsResponse>();
    for (auto& entry : detail::merge_daily_stats(tx.agent_daily_stats(query.agent_id(), from, to),
                                                 tx.execution_rollups(from, to), query.agent_id(), query.task_id()))
      *out->add_items() = std::move(entry);
    return out;
  });
}

void AdminApi::list_audit(CallPtr call) {
  v1::ListAuditRequest request;
  if (!query_into(*call, request)) return;
  read(call, [request](StoreTransaction& tx, const ApiCall&) {
    auto listing = tx.list_audit(request);
    auto out = std::make_unique<v1::ListAuditResponse>();
    for (auto& e : listing.items) *out->add_items() = std::move(e);
    fill_paging(*out, request.page(), request.page_size(), listing.total);
    return out;
  });
}

void AdminApi::cron_parse(CallPtr call) {
  v1::CronParseRequest request;
  if (!query_into(*call, request)) return;
  if (request.expr().empty())
    return call->fail(v1::API_ERROR_CODE_INVALID_ARGUMENT, "invalid query: expr: is required", "expr", "is required");
  if (request.count() > 100)
    return call->fail(v1::API_ERROR_CODE_INVALID_ARGUMENT, "invalid query: count: at most 100", "count", "at most 100");
  error_code ec;
  ValidationError detail;
  auto spec = ScheduleSpec::from_text(request.expr(), ec, &detail);
  if (!spec) {
    return call->fail(v1::API_ERROR_CODE_INVALID_ARGUMENT, detail.message(), "expr",
                      detail.field.empty() ? detail.reason : detail.field + ": " + detail.reason);
  }
  spec->time_zone = request.time_zone().empty() ? "UTC" : request.time_zone();
  spec->gap = request.dst_gap_policy() == v1::DST_GAP_POLICY_SKIP ? DstGapPolicy::skip : DstGapPolicy::shift;
  spec->overlap = request.dst_overlap_policy() == v1::DST_OVERLAP_POLICY_LAST   ? DstOverlapPolicy::last
                  : request.dst_overlap_policy() == v1::DST_OVERLAP_POLICY_BOTH ? DstOverlapPolicy::both
                                                                                : DstOverlapPolicy::first;
  auto schedule = Schedule::create(*spec, request.task_name(), ec, &detail);
  if (!schedule) {
    const bool zone = ec == errc::unknown_time_zone;
    return call->fail(v1::API_ERROR_CODE_INVALID_ARGUMENT, detail.message(), zone ? "time_zone" : "expr",
                      detail.field.empty() || zone ? detail.reason : detail.field + ": " + detail.reason);
  }
  call->ok(preview(*schedule, from_or_now(request.from_unix_ms()), request.count() ? request.count() : 5));
}

void AdminApi::next_fires(CallPtr call) {
  v1::CronParseRequest request;
  if (!query_into(*call, request)) return;
  if (request.count() > 100)
    return call->fail(v1::API_ERROR_CODE_INVALID_ARGUMENT, "invalid query: count: at most 100", "count", "at most 100");
  const std::string id = call->params.at("id");
  auto task = coordinator_.dispatcher().task(id);
  if (!task) return call->fail(v1::API_ERROR_CODE_NOT_FOUND, fmt::format("no task with id \"{}\"", id));
  call->ok(preview(task_schedule(*task), from_or_now(request.from_unix_ms()), request.count() ? request.count() : 5));
}

}  // namespace quartzflow::detail
