// SPDX-License-Identifier: Apache-2.0
// The admin API's routes and handlers over the Coordinator and the Authenticator, without
// a socket: the HTTP server feeds it ApiRequests; tests and the OpenAPI document read the
// same route table.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <utility>
#include <boost/asio/any_io_executor.hpp>

#include <quartzflow/admin.hpp>
#include <quartzflow/auth.hpp>
#include <quartzflow/coordinator.hpp>
#include <quartzflow/metrics.hpp>
#include <quartzflow/v1/alerts.pb.h>

#include "api.hpp"
#include "event_hub.hpp"

namespace quartzflow::detail {

struct ApiCall;
using ApiHandler = std::function<void(std::shared_ptr<ApiCall>)>;

struct Route {
  std::string method;
  std::string pattern;                 ///< `/api/v1/tasks/{id}`
  int min_rank = 1;                    ///< 0: no authentication
  const google::protobuf::Descriptor* input = nullptr;   ///< query (GET/DELETE) or body
  const google::protobuf::Descriptor* output = nullptr;  ///< the `data` of a success
  std::string summary;
  unsigned success_status = 200;
  ApiHandler handler;
  std::vector<std::string> segments;   ///< pattern split at '/'
};

/// One request on its way through a handler.
struct ApiCall {
  ApiRequest request;
  std::map<std::string, std::string> params;   ///< `{id}` and friends
  std::optional<Principal> principal;
  Actor actor;                                 ///< for the catalog's audit entries
  const Route* route = nullptr;
  ApiReply reply;
  std::chrono::steady_clock::time_point started;

  void fail(v1::ApiErrorCode code, std::string message, std::string field = {}, std::string reason = {});
  void fail(const ApiFailure& failure);
  void ok(const google::protobuf::Message& data, unsigned status = 0);
  /// Success with `data` already as JSON.
  void ok_json(std::string_view json);
};

/// A task's result callbacks checked (each bad field named, `callbacks[0].url`) and their
/// inline secrets sealed with `key`; a callback whose secret is left empty keeps the one
/// `stored` has at the same place for the same URL. nullopt when fine (api_alerts.cpp).
std::optional<ApiFailure> prepare_task_callbacks(v1::Task& task, const v1::Task* stored, std::string_view key);
/// The callbacks' secrets of a task as answers show them: `set` and `hint` only.
void redact_task_callbacks(v1::Task& task);

/// Thrown by work on the store's thread to fail the call with this body.
struct ApiException {
  ApiFailure failure;
};

/// Prometheus histogram with fixed buckets (seconds).
struct Histogram {
  static constexpr std::array<double, 12> bounds{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                 0.1,   0.25,   0.5,   1,    2.5,   10};
  std::array<std::uint64_t, bounds.size()> counts{};
  std::uint64_t count = 0;
  double sum = 0;
  void observe(double seconds);
  void print(std::string& out, const std::string& name, const std::string& labels) const;
};

class AdminApi : public std::enable_shared_from_this<AdminApi> {
 public:
  AdminApi(boost::asio::any_io_executor executor, Coordinator& coordinator, Authenticator& auth,
           AdminServerOptions options);
  /// Starts following the coordinator's events (after construction: it needs weak_from_this).
  void start();
  void handle(ApiRequest request, ApiReply reply);
  const std::vector<Route>& routes() const noexcept { return routes_; }
  EventHub& events() noexcept { return events_; }
  /// Authenticates a WebSocket upgrade (same credentials as the API); viewer or better.
  void authenticate(const ApiRequest& request, std::function<void(std::optional<Principal>, ApiFailure)> done);
  void set_ready(bool ready) noexcept { ready_ = ready; }
  /// The coordinator's database answers (its /readyz depends on it).
  bool store_reachable() const noexcept { return coordinator_.store_reachable(); }
  void set_server_stats(std::function<AdminServerStats()> stats) { server_stats_ = std::move(stats); }
  std::string openapi_json() const;
  std::string metrics_text() const;

 private:
  void add(std::string method, std::string pattern, int min_rank, const google::protobuf::Descriptor* input,
           const google::protobuf::Descriptor* output, std::string summary, ApiHandler handler,
           unsigned success_status = 200);
  void add_catalog_routes();
  void add_history_routes();
  void add_auth_routes();
  void add_cluster_routes();
  void add_backup_routes();  // api_backup.cpp
  void observe_coordinator();
  void dispatch(std::shared_ptr<ApiCall> call);
  /// Records an audited action the catalog does not record itself (trigger, cancel, retry).
  void audit(const ApiCall& call, std::string action, std::string target_type, std::string target_id,
             std::string target_name, bool success, std::string detail);
  /// A read transaction for a handler: `work` (on the store's thread) returns the `data`
  /// of the response, or throws ApiException / quartzflow::error.
  using ReadWork = std::function<std::unique_ptr<google::protobuf::Message>(StoreTransaction&, const ApiCall&)>;
  void read(std::shared_ptr<ApiCall> call, ReadWork work);

  // handlers (api_catalog.cpp, api_history.cpp, api_users.cpp)
  void list_tasks(std::shared_ptr<ApiCall> call);
  void get_task(std::shared_ptr<ApiCall> call);
  void create_task(std::shared_ptr<ApiCall> call);
  void update_task(std::shared_ptr<ApiCall> call);
  void delete_task(std::shared_ptr<ApiCall> call);
  void set_task_enabled(std::shared_ptr<ApiCall> call, bool enabled);
  void trigger_task(std::shared_ptr<ApiCall> call);
  void batch_tasks(std::shared_ptr<ApiCall> call);
  void next_fires(std::shared_ptr<ApiCall> call);
  void cron_parse(std::shared_ptr<ApiCall> call);
  void list_groups(std::shared_ptr<ApiCall> call);
  void get_group(std::shared_ptr<ApiCall> call);
  void create_group(std::shared_ptr<ApiCall> call);
  void update_group(std::shared_ptr<ApiCall> call);
  void delete_group(std::shared_ptr<ApiCall> call);
  void list_agents(std::shared_ptr<ApiCall> call, bool of_group);
  void backup(std::shared_ptr<ApiCall> call);
  void get_agent(std::shared_ptr<ApiCall> call);
  void move_agents(std::shared_ptr<ApiCall> call);
  void delete_agent(std::shared_ptr<ApiCall> call);
  void list_executions(std::shared_ptr<ApiCall> call);
  void get_execution(std::shared_ptr<ApiCall> call);
  void execution_logs(std::shared_ptr<ApiCall> call);
  void serve_log(std::shared_ptr<ApiCall> call, v1::Execution record, std::optional<std::string> stored,
                 v1::GetExecutionLogRequest request);
  void cancel_execution(std::shared_ptr<ApiCall> call);
  void retry_execution(std::shared_ptr<ApiCall> call);
  void stats(std::shared_ptr<ApiCall> call);
  void daily_stats(std::shared_ptr<ApiCall> call);
  void list_audit(std::shared_ptr<ApiCall> call);
  // api_alerts.cpp: alert rules, channels, silences, monitors, alerts and deliveries
  void add_alert_routes();
  /// A write transaction for an alerts handler: `work` (on the store's thread) checks its
  /// input, writes with its audit entries and returns the `data` of the response, or throws
  /// ApiException / quartzflow::error (rolled back; refusals but "not found" audited as
  /// failed `action` on `target_type` `target_id`).
  using WriteWork = std::function<std::unique_ptr<google::protobuf::Message>(StoreTransaction&, const ApiCall&)>;
  void write_alerts(std::shared_ptr<ApiCall> call, std::string action, std::string target_type, std::string target_id,
                    WriteWork work);
  // api_enrolment.cpp: join tokens, POST /enrol and /enrol/renew, agent revocation
  void add_enrolment_routes();
  /// Reads the revoked certificates now and every few seconds into the coordinator.
  void start_enrolment();
  /// A write transaction of an enrolment handler (as write_alerts); every refusal is
  /// audited as failed `action` on agent `target_id`; `after` gets the revoked certificates.
  void write_enrolment(std::shared_ptr<ApiCall> call, std::string action, std::string target_id, WriteWork work,
                       std::function<void(const std::vector<std::string>&)> after = {});
  std::shared_ptr<std::function<void()>> revocation_refresh_;
  // api_alert_actions.cpp: monitor pings (no authentication: the token is the credential)
  // and channel tests, through options_.alerts
  void add_alert_action_routes();
  /// Sends the channel's TEST notification through options_.alerts and answers with it.
  void test_channel(std::shared_ptr<ApiCall> call, v1::Channel channel);
  // api_cluster.cpp: several coordinators
  void cluster_status(std::shared_ptr<ApiCall> call);
  /// 503 not_leader naming the leader's admin address (a standby refusing what needs the
  /// scheduler).
  void fail_not_leader(ApiCall& call) const;
  std::string cluster_metrics_text() const;
  // metrics_text.cpp
  /// Counts a final record in `runs_` (every final state reaches the observers once).
  void count_run(const v1::Execution& record);
  /// Reads each task's latest SUCCESS from the store (the first max_task_series tasks of the
  /// catalog), so that qf_task_last_success_timestamp_seconds survives a restart.
  void load_last_successes();

  boost::asio::any_io_executor executor_;
  Coordinator& coordinator_;
  Authenticator& auth_;
  AdminServerOptions options_;
  std::vector<Route> routes_;
  EventHub events_;
  std::atomic<bool> ready_{false};
  std::function<AdminServerStats()> server_stats_;

  // metrics
  std::map<std::string, std::uint64_t> responses_by_code_;     ///< "200" -> n
  Histogram request_latency_;
  Histogram dispatch_latency_;                                 ///< scheduled -> started
  Histogram store_latency_;                                    ///< the API's store reads
  RunMetrics runs_;                                            ///< final records seen (metrics_text.cpp)
  std::uint64_t request_counter_ = 0;

  /// Output of running executions as their agents stream it (live logs), so that a log
  /// asked for while the run goes on has what was printed so far; dropped at the final state
  /// (the agent then has the whole log) and when the agent's session ends. At most the last
  /// k_live_log_bytes per run and k_live_logs_total_bytes over all runs (the least recently
  /// updated run is dropped first). Offsets are the agent's: raw bytes of the run's log.
  struct LivePiece {
    std::uint64_t offset = 0;       ///< raw start in the run's log
    std::uint64_t next_offset = 0;  ///< raw end (differs from offset + data.size() when replaced as UTF-8)
    std::string data;               ///< as streamed (valid UTF-8)
  };
  struct LiveLog {
    std::string agent_id;
    std::deque<LivePiece> pieces;
    std::size_t bytes = 0;
    std::list<std::string>::iterator recency;  ///< in live_log_recency_
  };
  static constexpr std::size_t k_live_log_bytes = 1 << 20;
  static constexpr std::size_t k_live_piece_bytes = 64 * 1024;  ///< small lossless deltas are joined up to this
  static constexpr std::size_t k_live_logs_total_bytes = std::size_t{64} << 20;
  std::map<std::string, LiveLog> live_logs_;
  std::list<std::string> live_log_recency_;  ///< least recently updated first
  std::size_t live_logs_bytes_ = 0;
  void keep_live_output(const std::string& execution_id, const std::string& agent_id, std::uint64_t offset,
                        std::uint64_t next_offset, const std::string& delta);
  void drop_live_output(const std::string& execution_id);
  void drop_live_output_of_agent(const std::string& agent_id);

  /// Failed logins by source address: each answer after a failure waits longer (250 ms,
  /// doubling, at most 8 s), on top of the per-account lockout; a success clears it.
  struct LoginFailures {
    std::uint32_t count = 0;
    std::chrono::steady_clock::time_point last;
  };
  std::map<std::string, LoginFailures> login_failures_;
  std::chrono::milliseconds login_delay(const std::string& address);
  void login_failed(const std::string& address);
};

}  // namespace quartzflow::detail
