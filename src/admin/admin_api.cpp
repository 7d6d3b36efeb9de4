// SPDX-License-Identifier: Apache-2.0
// The admin API's router: match a route, authenticate, check the role, parse the input,
// run the handler; plus the coordinator's events for WebSocket clients and the metrics.
#include "admin_api.hpp"

#include <algorithm>

#include <boost/asio/post.hpp>
#include <fmt/format.h>

#include <quartzflow/execution_status.hpp>
#include <quartzflow/log.hpp>

namespace quartzflow::detail {
namespace {

std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> out;
  std::size_t start = 1;
  while (start <= path.size()) {
    const auto end = path.find('/', start);
    out.emplace_back(path.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) break;
    start = end + 1;
  }
  return out;
}

/// The credential of a request: `Authorization: Bearer X`, else the `qf_session` cookie.
std::string credential_of(const ApiRequest& request) {
  constexpr std::string_view bearer = "Bearer ";
  if (request.authorization.size() > bearer.size() && request.authorization.compare(0, bearer.size(), bearer) == 0)
    return request.authorization.substr(bearer.size());
  std::string_view cookies = request.cookie;
  while (!cookies.empty()) {
    const auto end = cookies.find(';');
    auto item = cookies.substr(0, end);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    if (item.rfind("qf_session=", 0) == 0) return std::string(item.substr(11));
    if (end == std::string_view::npos) break;
    cookies.remove_prefix(end + 1);
  }
  return {};
}

/// What a user who must change its password may still do: read itself, log out, and
/// change its own password.
bool allowed_before_password_change(const ApiCall& call) {
  const auto& pattern = call.route->pattern;
  if (pattern == "/api/v1/auth/me" || pattern == "/api/v1/auth/logout") return true;
  if (pattern != "/api/v1/users/{id}/password") return false;
  const auto id = call.params.find("id");
  return id != call.params.end() && id->second == call.principal->user.id();
}

std::string password_change_message(const v1::User& user) {
  return fmt::format("the password must be changed first: change it (PUT /api/v1/users/{}/password, or qfctl user "
                     "passwd {}) before anything else",
                     user.id(), user.username());
}

}  // namespace

void Histogram::observe(double seconds) {
  for (std::size_t i = 0; i < bounds.size(); ++i)
    if (seconds <= bounds[i]) ++counts[i];
  ++count;
  sum += seconds;
}

void Histogram::print(std::string& out, const std::string& name, const std::string& labels) const {
  const std::string sep = labels.empty() ? "" : ",";
  for (std::size_t i = 0; i < bounds.size(); ++i)
    out += fmt::format("{}_bucket{{{}{}le=\"{}\"}} {}\n", name, labels, sep, bounds[i], counts[i]);
  out += fmt::format("{}_bucket{{{}{}le=\"+Inf\"}} {}\n", name, labels, sep, count);
  const std::string braces = labels.empty() ? "" : "{" + labels + "}";
  out += fmt::format("{}_sum{} {}\n{}_count{} {}\n", name, braces, sum, name, braces, count);
}

void ApiCall::fail(v1::ApiErrorCode code, std::string message, std::string field, std::string reason) {
  ApiFailure f{code, std::move(message), {}};
  if (!field.empty() || !reason.empty()) f.add_violation(std::move(field), std::move(reason));
  fail(f);
}

void ApiCall::fail(const ApiFailure& failure) {
  if (reply) std::exchange(reply, {})(error_response(failure, request.request_id));
}

void ApiCall::ok_json(std::string_view json) {
  if (reply) std::exchange(reply, {})(raw_data_response(json, route ? route->success_status : 200));
}

void ApiCall::ok(const google::protobuf::Message& data, unsigned status) {
  if (reply) std::exchange(reply, {})(data_response(data, status ? status : route ? route->success_status : 200));
}

AdminApi::AdminApi(boost::asio::any_io_executor executor, Coordinator& coordinator, Authenticator& auth,
                   AdminServerOptions options)
    : executor_(std::move(executor)),
      coordinator_(coordinator),
      auth_(auth),
      options_(std::move(options)),
      runs_(RunMetricsOptions{options_.max_task_series, true}) {
  add_catalog_routes();
  add_history_routes();
  add_auth_routes();
  add_cluster_routes();
  add_enrolment_routes();
  add_alert_routes();
  add_backup_routes();
  add("GET", "/api/v1/openapi.json", 0, nullptr, nullptr, "This document (OpenAPI 3.0)",
      [this](std::shared_ptr<ApiCall> call) {
        ApiResponse r;
        r.body = openapi_json();
        std::exchange(call->reply, {})(std::move(r));
      });
}

void AdminApi::start() {
  observe_coordinator();
  load_last_successes();
  start_enrolment();
}

void AdminApi::add(std::string method, std::string pattern, int min_rank, const google::protobuf::Descriptor* input,
                   const google::protobuf::Descriptor* output, std::string summary, ApiHandler handler,
                   unsigned success_status) {
  Route r;
  r.method = std::move(method);
  r.segments = split_path(pattern);
  r.pattern = std::move(pattern);
  r.min_rank = min_rank;
  r.input = input;
  r.output = output;
  r.summary = std::move(summary);
  r.handler = std::move(handler);
  r.success_status = success_status;
  routes_.push_back(std::move(r));
}

void AdminApi::handle(ApiRequest request, ApiReply reply) {
  ++request_counter_;
  auto call = std::make_shared<ApiCall>();
  call->started = std::chrono::steady_clock::now();
  if (request.request_id.empty()) request.request_id = fmt::format("r{}", request_counter_);
  call->request = std::move(request);
  // Every reply passes here: metrics, and the request id on the response.
  call->reply = [weak = weak_from_this(), started = call->started, reply = std::move(reply),
                 id = call->request.request_id](ApiResponse response) {
    if (auto self = weak.lock()) {
      ++self->responses_by_code_[std::to_string(response.status)];
      self->request_latency_.observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    }
    response.headers.emplace_back("X-Request-Id", id);
    reply(std::move(response));
  };

  const auto& req = call->request;
  auto segments = split_path(req.path);
  for (auto& segment : segments) {
    auto decoded = percent_decode(segment, false);
    if (!decoded)
      return call->fail(v1::API_ERROR_CODE_INVALID_ARGUMENT, fmt::format("invalid path: bad percent-encoding in \"{}\"", segment),
                        "path", "bad percent-encoding");
    segment = std::move(*decoded);
  }
  bool path_known = false;
  for (const auto& route : routes_) {
    if (route.segments.size() != segments.size()) continue;
    std::map<std::string, std::string> params;
    bool match = true;
    for (std::size_t i = 0; i < segments.size() && match; ++i) {
      const auto& want = route.segments[i];
      if (want.size() > 2 && want.front() == '{' && want.back() == '}') {
        if (segments[i].empty()) match = false;
        else params[want.substr(1, want.size() - 2)] = segments[i];
      } else {
        match = want == segments[i];
      }
    }
    if (!match) continue;
    path_known = true;
    if (route.method != req.method) continue;
    call->route = &route;
    call->params = std::move(params);
    break;
  }
  if (!call->route) {
    if (path_known)
      return call->fail(v1::API_ERROR_CODE_INVALID_ARGUMENT, fmt::format("method {} is not allowed on {}", req.method, req.path),
                        "method", "not allowed on this path");
    return call->fail(v1::API_ERROR_CODE_NOT_FOUND, fmt::format("no such endpoint: {} {}", req.method, req.path));
  }
  for (const auto& [name, value] : call->params) {
    if (value.size() > 256 || value.find_first_of("/\\") != std::string::npos || value == "." || value == "..")
      return call->fail(v1::API_ERROR_CODE_INVALID_ARGUMENT, fmt::format("invalid path: {}: \"{}\"", name, value), name,
                        "must be an id of at most 256 characters without '/' or '\\'");
  }
  if (call->route->min_rank == 0) return dispatch(call);

  const std::string credential = credential_of(req);
  if (credential.empty())
    return call->fail(v1::API_ERROR_CODE_UNAUTHENTICATED,
                      "authentication required: log in (POST /api/v1/auth/login) or send Authorization: Bearer <token>");
  auth_.authenticate(credential, req.peer_ip, [weak = weak_from_this(), call](ApiResult<Principal> result) {
    auto self = weak.lock();
    if (!self) return;
    if (!result) return call->fail(result.failure());
    call->principal = std::move(result).value();
    const auto& p = *call->principal;
    call->actor = Actor{p.user.username(), call->request.peer_ip, p.kind, p.token_name, call->request.user_agent,
                        call->request.request_id};
    if (p.user.password_change_required() && !allowed_before_password_change(*call))
      return call->fail(v1::API_ERROR_CODE_PERMISSION_DENIED, password_change_message(p.user));
    if (role_rank(p.role) < call->route->min_rank) {
      const auto role_name = [](int rank) { return rank >= 3 ? "admin" : rank == 2 ? "operator" : rank == 1 ? "viewer" : "no"; };
      const char* needed = role_name(call->route->min_rank);
      const char* held = role_name(role_rank(p.role));
      const std::string via = p.kind == v1::ACTOR_KIND_API_TOKEN ? fmt::format("token \"{}\"", p.token_name) : "user";
      if (call->request.method != "GET")
        self->audit(*call, "access.denied", "endpoint", call->route->pattern, call->request.method + " " + call->request.path,
                    false, fmt::format("{} role of {} is not allowed; needs {}", held, via, needed));
      return call->fail(v1::API_ERROR_CODE_PERMISSION_DENIED,
                        fmt::format("permission denied: {} {} needs the {} role; your {} has the {} role{}",
                                    call->request.method, call->route->pattern, needed, via, held,
                                    p.totp_enrollment_required ? " until you enrol TOTP (POST /api/v1/auth/totp/enroll)" : ""));
    }
    self->dispatch(call);
  });
}

void AdminApi::authenticate(const ApiRequest& request, std::function<void(std::optional<Principal>, ApiFailure)> done) {
  const std::string credential = credential_of(request);
  if (credential.empty())
    return boost::asio::post(executor_, [done = std::move(done)] {
      done(std::nullopt, ApiFailure{v1::API_ERROR_CODE_UNAUTHENTICATED, "authentication required", {}});
    });
  auth_.authenticate(credential, request.peer_ip, [done = std::move(done)](ApiResult<Principal> result) {
    if (!result) return done(std::nullopt, result.failure());
    if (result.value().user.password_change_required())
      return done(std::nullopt,
                  ApiFailure{v1::API_ERROR_CODE_PERMISSION_DENIED, password_change_message(result.value().user), {}});
    if (!role_at_least(result.value().role, v1::ROLE_VIEWER))
      return done(std::nullopt, ApiFailure{v1::API_ERROR_CODE_PERMISSION_DENIED, "permission denied", {}});
    done(std::move(result).value(), {});
  });
}

void AdminApi::dispatch(std::shared_ptr<ApiCall> call) {
  // Inputs are parsed by the handlers (each knows its message type); the body must be JSON.
  if (!call->request.body.empty() && !call->request.content_type.empty() &&
      call->request.content_type.find("json") == std::string::npos)
    return call->fail(v1::API_ERROR_CODE_INVALID_ARGUMENT,
                      fmt::format("unsupported Content-Type \"{}\": send application/json", call->request.content_type),
                      "Content-Type", "must be application/json");
  try {
    call->route->handler(call);
  } catch (const std::exception& e) {
    logger()->error("admin API {} {}: {}", call->request.method, call->request.path, e.what());
    call->fail(v1::API_ERROR_CODE_INTERNAL, fmt::format("internal error: {}", e.what()));
  }
}

void AdminApi::read(std::shared_ptr<ApiCall> call, ReadWork work) {
  auto failure = std::make_shared<std::optional<ApiFailure>>();
  auto json = std::make_shared<std::string>();
  auto started = std::chrono::steady_clock::now();
  coordinator_.store().read(
      [call, work = std::move(work), failure, json](StoreTransaction& tx, error_code&) {
        try {
          // The JSON is made here, on the store's reader thread: it is most of a read's CPU,
          // and the io thread also runs the scheduler and the agents' sessions.
          if (auto result = work(tx, *call)) *json = to_json(*result);
        } catch (const ApiException& e) {
          *failure = e.failure;
        } catch (const error& e) {
          *failure = failure_of(e.code(), e.detail(), e.what());
        }
      },
      [weak = weak_from_this(), call, failure, json, started](error_code ec) {
        if (auto self = weak.lock())
          self->store_latency_.observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
        if (*failure) return call->fail(**failure);
        if (ec) return call->fail(v1::API_ERROR_CODE_UNAVAILABLE, fmt::format("store unavailable: {}", ec.message()));
        if (json->empty()) return call->fail(v1::API_ERROR_CODE_INTERNAL, "the request produced no answer");
        call->ok_json(*json);
      });
}

void AdminApi::audit(const ApiCall& call, std::string action, std::string target_type, std::string target_id,
                     std::string target_name, bool success, std::string detail) {
  auto entry = make_audit_entry(call.actor, std::move(action), std::move(target_type), std::move(target_id),
                                std::move(target_name), success, std::move(detail));
  coordinator_.store().transact([entry](StoreTransaction& tx, error_code&) { tx.append_audit(entry); },
                                [](error_code ec) {
                                  if (ec) logger()->error("audit entry not recorded: {}", ec.message());
                                });
}

void AdminApi::observe_coordinator() {
  const auto to_json_fn = [](const v1::Event& e) { return to_json(e); };
  CoordinatorObserver o;
  o.execution = [weak = weak_from_this(), to_json_fn](const v1::Execution& record) {
    auto self = weak.lock();
    if (!self) return;
    self->count_run(record);
    if (record.status() == v1::EXECUTION_STATUS_RUNNING && record.started_unix_ms() > 0 && record.scheduled_unix_ms() > 0)
      self->dispatch_latency_.observe(
          std::max<double>(0, static_cast<double>(record.started_unix_ms() - record.scheduled_unix_ms()) / 1000.0));
    v1::Event e;
    e.set_type(v1::EVENT_TYPE_EXECUTION_UPDATED);
    *e.mutable_execution() = record;
    e.mutable_execution()->clear_output();
    if (is_final(record.status())) self->drop_live_output(record.execution_id());
    self->events_.publish(std::move(e), record.task_id(), record.agent_id(), {record.group_id()}, to_json_fn);
  };
  // On a standby: the leader's runs, read from the store's change feed while a WebSocket
  // client listens. Events only: this coordinator's metrics count what it handled itself.
  o.cluster_execution = [weak = weak_from_this(), to_json_fn](const v1::Execution& record) {
    auto self = weak.lock();
    if (!self) return;
    v1::Event e;
    e.set_type(v1::EVENT_TYPE_EXECUTION_UPDATED);
    *e.mutable_execution() = record;
    e.mutable_execution()->clear_output();
    self->events_.publish(std::move(e), record.task_id(), record.agent_id(), {record.group_id()}, to_json_fn);
  };
  o.wants_cluster_executions = [weak = weak_from_this()] {
    auto self = weak.lock();
    return self && self->events_.size() > 0;
  };
  o.agent_state = [weak = weak_from_this(), to_json_fn](const v1::Agent& agent) {
    auto self = weak.lock();
    if (!self) return;
    v1::Event e;
    e.set_type(v1::EVENT_TYPE_AGENT_STATE_CHANGED);
    auto* s = e.mutable_agent_state();
    s->set_agent_id(agent.id());
    s->set_hostname(agent.hostname());
    s->set_group_id(agent.group_id());
    s->set_state(agent.state());
    // Its session ended: the output of its runs not final yet is no longer followed (their
    // final state, or `agent lost`, follows; the agent keeps the full log).
    if (agent.state() == v1::AGENT_STATE_OFFLINE) self->drop_live_output_of_agent(agent.id());
    self->events_.publish(std::move(e), {}, agent.id(), {agent.group_id()}, to_json_fn);
  };
  o.push_status = [weak = weak_from_this(), to_json_fn](const std::string& agent_id, const v1::ConfigPushStatus& status) {
    auto self = weak.lock();
    if (!self) return;
    v1::Event e;
    e.set_type(v1::EVENT_TYPE_CONFIG_PUSH_CHANGED);
    e.mutable_config_push()->set_agent_id(agent_id);
    *e.mutable_config_push()->mutable_push_status() = status;
    self->events_.publish(std::move(e), {}, agent_id, {}, to_json_fn);
  };
  o.task_changed = [weak = weak_from_this(), to_json_fn](const v1::Task* task, const std::string& id,
                                                          v1::TaskChangeAction action, const Actor& actor) {
    auto self = weak.lock();
    if (!self) return;
    v1::Event e;
    e.set_type(v1::EVENT_TYPE_TASK_CHANGED);
    auto* c = e.mutable_task_change();
    c->set_task_id(id);
    if (task) {
      c->set_task_name(task->name());
      c->set_revision(task->revision());
    }
    c->set_action(action);
    c->set_actor(actor.token_name.empty() ? actor.name : actor.token_name);
    std::vector<std::string> groups;
    if (task) groups.assign(task->group_ids().begin(), task->group_ids().end());
    self->events_.publish(std::move(e), id, {}, groups, to_json_fn);
  };
  o.output = [weak = weak_from_this(), to_json_fn](const v1::Execution& record, std::uint64_t offset,
                                                  const std::string& delta) {
    auto self = weak.lock();
    if (!self) return;
    // The delta's raw end in the agent's log: output_bytes when the agent says it (bytes that
    // are not UTF-8 were replaced, so the delta's size may differ), else its size.
    const std::uint64_t next_offset =
        record.output_bytes() > offset ? record.output_bytes() : offset + delta.size();
    v1::Event e;
    e.set_type(v1::EVENT_TYPE_EXECUTION_LOG);
    auto* chunk = e.mutable_log();
    chunk->set_execution_id(record.execution_id());
    chunk->set_offset(offset);
    chunk->set_data(delta);
    chunk->set_next_offset(next_offset);
    chunk->set_total_bytes(next_offset);
    self->keep_live_output(record.execution_id(), record.agent_id(), offset, next_offset, delta);
    self->events_.publish_log(std::move(e), record.execution_id(), to_json_fn);
  };
  coordinator_.observe(std::move(o));
}

void AdminApi::keep_live_output(const std::string& execution_id, const std::string& agent_id, std::uint64_t offset,
                                std::uint64_t next_offset, const std::string& delta) {
  if (delta.size() > k_live_log_bytes) return;
  auto it = live_logs_.find(execution_id);
  if (it == live_logs_.end()) {
    it = live_logs_.emplace(execution_id, LiveLog{}).first;
    it->second.recency = live_log_recency_.insert(live_log_recency_.end(), execution_id);
  } else {
    live_log_recency_.splice(live_log_recency_.end(), live_log_recency_, it->second.recency);
  }
  auto& live = it->second;
  live.agent_id = agent_id;
  if (!live.pieces.empty() && live.pieces.back().next_offset != offset) {  // a gap: keep what follows it
    live_logs_bytes_ -= live.bytes;
    live.bytes = 0;
    live.pieces.clear();
  }
  // Small deltas (a line every 200 ms) join the piece before them when neither had bytes
  // replaced, so that a long run holds a few pieces, not one per delta.
  const bool lossless = next_offset - offset == delta.size();
  LivePiece* last = live.pieces.empty() ? nullptr : &live.pieces.back();
  if (last && lossless && last->next_offset - last->offset == last->data.size() &&
      last->data.size() + delta.size() <= k_live_piece_bytes) {
    last->data += delta;
    last->next_offset = next_offset;
  } else {
    live.pieces.push_back(LivePiece{offset, next_offset, delta});
  }
  live.bytes += delta.size();
  live_logs_bytes_ += delta.size();
  while (live.bytes > k_live_log_bytes) {  // the run's latest output is kept
    live.bytes -= live.pieces.front().data.size();
    live_logs_bytes_ -= live.pieces.front().data.size();
    live.pieces.pop_front();
  }
  while (live_logs_bytes_ > k_live_logs_total_bytes && live_log_recency_.front() != execution_id)
    drop_live_output(live_log_recency_.front());
}

void AdminApi::drop_live_output(const std::string& execution_id) {
  auto it = live_logs_.find(execution_id);
  if (it == live_logs_.end()) return;
  live_logs_bytes_ -= it->second.bytes;
  live_log_recency_.erase(it->second.recency);
  live_logs_.erase(it);
}

void AdminApi::drop_live_output_of_agent(const std::string& agent_id) {
  for (auto it = live_logs_.begin(); it != live_logs_.end();) {
    auto next = std::next(it);
    if (it->second.agent_id == agent_id) drop_live_output(it->first);
    it = next;
  }
}

}  // namespace quartzflow::detail
