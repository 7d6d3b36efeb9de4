// SPDX-License-Identifier: Apache-2.0
// Coordinator: the coordinator's parts wired together over one Store: the Catalog, the
// Scheduler and the CoordinatorDispatcher. Catalog operations made through it take effect
// at once: the scheduler re-plans the task and agents receive the change.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/any_io_executor.hpp>

#include <quartzflow/async.hpp>
#include <quartzflow/catalog.hpp>
#include <quartzflow/coordinator_dispatcher.hpp>
#include <quartzflow/scheduler.hpp>
#include <quartzflow/store.hpp>
#include <quartzflow/transport.hpp>
#include <quartzflow/v1/admin.pb.h>
#include <quartzflow/v1/config.pb.h>

namespace quartzflow {

/**
 * Several coordinators on one database (ARCHITECTURE.md, "Several coordinators"): one
 * leader holds a lease row in the Store and fires; the others are hot standbys. A single
 * coordinator takes the lease at start and behaves as the only one.
 */
struct ClusterOptions {
  /// The lease holder id and the agents' `coordinator_id`; empty = `dispatcher.coordinator_id`
  /// (hosts default it to `<hostname>:<agent port>`). Unique in the cluster, stable across
  /// restarts.
  std::string coordinator_id;
  /// The lease's time to live (database clock); renewed every third of it. A leader that
  /// has not renewed within `lease_ttl` - `lease_ttl`/10 of its last renewal's start (its
  /// own monotonic clock) stops firing; a standby takes an expired lease at once.
  std::chrono::milliseconds lease_ttl{1'500};
  /// Told to agents that a standby redirects (`host:port`) and shown in GET /api/v1/cluster.
  std::string advertise_agent_address;
  /// Shown to the other coordinators' API clients (503 not_leader names it).
  std::string advertise_admin_address;
  /// This coordinator's software version, for the registry.
  std::string version;
  /// A takeover (this coordinator was a standby): the scheduler starts firing once every
  /// agent the store lists ONLINE is connected here, or after this long (capped by
  /// `agent_grace`). A coordinator that takes the lease at its start waits `agent_grace`.
  std::chrono::milliseconds takeover_agent_wait{3'000};
  /// A trigger, retry or cancel made on a standby is queued in the store for the leader; the
  /// standby waits this long for a leader to take it (then it is withdrawn, never run, and
  /// the caller gets errc::fenced naming the leader), and 5 s more for the answer of a
  /// leader that took it.
  std::chrono::milliseconds command_wait{10'000};
  /// How often a standby with listeners (`CoordinatorObserver::cluster_execution`) reads the
  /// store's execution change feed.
  std::chrono::milliseconds event_poll_interval{250};
};

struct CoordinatorOptions {
  SchedulerOptions scheduler{};
  CoordinatorDispatcherOptions dispatcher{};
  /// After start the scheduler waits this long before firing, so agents reconnect first and
  /// the fires owed from the downtime find them (instead of being SKIPPED for no agent).
  /// Longer than the agents' reconnect backoff cap (8 s by default).
  std::chrono::milliseconds agent_grace{10'000};
  /// Several coordinators on one database: how often the catalog's config version is read
  /// to follow changes the others commit (their tasks reach this scheduler, their group and
  /// agent changes this dispatcher's agents, their events this process's observers); the
  /// Store's `watch_config_version` may wake it sooner. 0 = off: the one coordinator is the
  /// only writer (the library's default; the YAML default is 500 ms with PostgreSQL).
  std::chrono::milliseconds catalog_poll_interval{0};
  /// Leadership among several coordinators (a single one leads from its start).
  ClusterOptions cluster{};
};

/// What a host (the admin API's events and metrics) hears from a Coordinator; any member
/// may be empty.
struct CoordinatorObserver {
  /// An execution record stored from an agent, or a `agent lost` verdict.
  std::function<void(const v1::Execution&)> execution;
  /// An agent came online or went offline (the stored record).
  std::function<void(const v1::Agent&)> agent_state;
  /// The config push status of an agent changed.
  std::function<void(const std::string& agent_id, const v1::ConfigPushStatus&)> push_status;
  /// A task was created, updated, enabled, disabled (`task` set) or deleted (`task` null).
  std::function<void(const v1::Task* task, const std::string& task_id, v1::TaskChangeAction, const Actor&)>
      task_changed;
  /// Output of a running execution as its agent streams it (live logs; not stored).
  std::function<void(const v1::Execution&, std::uint64_t offset, const std::string& delta)> output;
  /// On a standby: every execution change the leader (or anyone) stored, read from the
  /// store's change feed every `event_poll_interval` while `wants_cluster_executions` says
  /// someone listens (empty: always). Never called on the leader, whose own records reach
  /// `execution`.
  std::function<void(const v1::Execution&)> cluster_execution;
  std::function<bool()> wants_cluster_executions;
};

/// The outcome of a manual trigger or a retry: `value` holds the execution ids, or `ec`
/// with the field and reason.
using TriggerResult = Result<std::vector<std::string>>;

/**
 * Thread safety: not thread-safe; use from its executor (the Store's completions must come
 * back there too). Cancellation: `stop` ends the agent sessions; the scheduler stops with
 * the object.
 */
class Coordinator {
 public:
  Coordinator(boost::asio::any_io_executor executor, Store& store, CoordinatorOptions options = {});
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  /// Loads the catalog; `ready` once agents may connect. After `agent_grace` the scheduler
  /// applies misfire policies to what is owed since the last run and starts firing.
  void start(std::function<void(error_code)> ready);
  /// Takes an agent connection (from a transport listener).
  void accept(std::shared_ptr<Connection> connection);
  /// No more fires (those recorded ahead of their instant become SKIPPED, reason SHUTDOWN);
  /// Goodbye to every agent. Runs in progress stay open: the next start reconciles them.
  void stop();

  // Catalog operations (see Catalog), effective at once. `done` runs after the scheduler
  // and the dispatcher have the change.
  void create_task(v1::Task task, Actor actor, Catalog::TaskHandler done);
  void update_task(v1::Task task, bool force, Actor actor, Catalog::TaskHandler done);
  void delete_task(std::string id, Actor actor, Catalog::DoneHandler done);
  void set_task_enabled(std::string id, bool enabled, Actor actor, Catalog::TaskHandler done);
  void create_group(v1::Group group, Actor actor, Catalog::GroupHandler done);
  void update_group(v1::Group group, Actor actor, Catalog::GroupHandler done);
  void delete_group(std::string id, Actor actor, Catalog::DoneHandler done);
  void move_agents(std::vector<std::string> agent_ids, std::string group_id, Actor actor, Catalog::DoneHandler done);
  /// Catalog::batch_tasks, then each change reaches the scheduler and the agents.
  void batch_tasks(std::vector<std::string> task_ids, v1::BatchTaskAction action, Actor actor,
                   std::function<void(CatalogResult<BatchTaskOutcome>)> done);
  /// Agent revocation: connections presenting one of these certificates (SHA-256 of the
  /// DER, hex) are refused from now on, and open sessions on one end now.
  void set_revoked_certificates(std::set<std::string> sha256);
  /// SHA-256 (hex) of an online agent's session certificate; empty when not online here.
  std::string session_certificate_sha256(const std::string& agent_id) const;
  /// Catalog::delete_agent; also refused (errc::conflict) while the agent has a session here.
  void delete_agent(std::string agent_id, Actor actor, Catalog::DoneHandler done);

  /**
   * Runs a task now with `params` (declared defaults filled in; required ones and unknown
   * names are refused naming `params.<name>`): one agent (`one`), every shard (`sharded`)
   * or every agent of its groups (`all`). The ids are those of the recorded PENDING runs.
   */
  void trigger(const std::string& task_id, std::map<std::string, std::string> params, Actor actor,
               std::function<void(TriggerResult)> done);
  /**
   * The same on chosen agents: each must be online and bound to the task (of its groups,
   * or every agent for a task with `all_agents`), else errc::invalid_argument naming it
   * (`agent_ids[1]`); one run per agent (`sharded`: the shards split over them). Empty
   * `agent_ids`: the placement decides.
   */
  void trigger(const std::string& task_id, std::map<std::string, std::string> params,
               std::vector<std::string> agent_ids, Actor actor, std::function<void(TriggerResult)> done);
  /**
   * Runs a finished execution again on the agent it ran on (trigger RETRY, linked by
   * `retry_of_execution_id`, same params and shard); one with no agent (never dispatched)
   * goes to the least busy eligible agent. errc::conflict when it is not final or its agent
   * is not online, errc::not_found when its task is gone.
   */
  void retry(const v1::Execution& execution, Actor actor, std::function<void(TriggerResult)> done);
  /// Cancels a PENDING or RUNNING execution: on its agent, or (never dispatched) in the store.
  void cancel(const std::string& execution_id, std::string reason, Actor actor, std::function<void(error_code)> done);
  /**
   * The next `count` (1-1000) nominal fire instants of a task after `after`, from its
   * schedule (whatever the placement). errc::not_found for an unknown task, an empty list
   * for a manual or ended schedule.
   */
  std::vector<Instant> next_fires(const std::string& task_id, std::size_t count, Instant after, error_code& ec) const;

  // The same operations as `async_` initiating functions: the token may be a callback,
  // `boost::asio::use_awaitable` (`co_await` gives the Result) or any Asio completion token.
  // Completions run on the token's associated executor (else the coordinator's).
  template <typename Token>
  auto async_start(Token&& token) {
    return detail::async_invoke<void(error_code)>(get_executor(), std::forward<Token>(token), &Coordinator::start,
                                                  this);
  }
  template <typename Token>
  auto async_create_task(v1::Task task, Actor actor, Token&& token) {
    return detail::async_invoke<void(Result<v1::Task>)>(
        get_executor(), std::forward<Token>(token), &Coordinator::create_task, this, std::move(task), std::move(actor));
  }
  template <typename Token>
  auto async_update_task(v1::Task task, bool force, Actor actor, Token&& token) {
    return detail::async_invoke<void(Result<v1::Task>)>(get_executor(), std::forward<Token>(token),
                                                        &Coordinator::update_task, this, std::move(task), force,
                                                        std::move(actor));
  }
  template <typename Token>
  auto async_delete_task(std::string id, Actor actor, Token&& token) {
    return detail::async_invoke<void(Result<std::uint64_t>)>(
        get_executor(), std::forward<Token>(token), &Coordinator::delete_task, this, std::move(id), std::move(actor));
  }
  template <typename Token>
  auto async_set_task_enabled(std::string id, bool enabled, Actor actor, Token&& token) {
    return detail::async_invoke<void(Result<v1::Task>)>(get_executor(), std::forward<Token>(token),
                                                        &Coordinator::set_task_enabled, this, std::move(id), enabled,
                                                        std::move(actor));
  }
  template <typename Token>
  auto async_create_group(v1::Group group, Actor actor, Token&& token) {
    return detail::async_invoke<void(Result<v1::Group>)>(get_executor(), std::forward<Token>(token),
                                                         &Coordinator::create_group, this, std::move(group),
                                                         std::move(actor));
  }
  template <typename Token>
  auto async_trigger(std::string task_id, std::map<std::string, std::string> params, Actor actor, Token&& token) {
    // trigger is overloaded (with chosen agents): the lambda picks the one without them.
    return detail::async_invoke<void(TriggerResult)>(
        get_executor(), std::forward<Token>(token),
        [this](auto&&... args) { trigger(std::forward<decltype(args)>(args)...); }, std::move(task_id),
        std::move(params), std::move(actor));
  }
  template <typename Token>
  auto async_retry(v1::Execution execution, Actor actor, Token&& token) {
    return detail::async_invoke<void(TriggerResult)>(get_executor(), std::forward<Token>(token), &Coordinator::retry,
                                                     this, std::move(execution), std::move(actor));
  }
  template <typename Token>
  auto async_cancel(std::string execution_id, std::string reason, Actor actor, Token&& token) {
    return detail::async_invoke<void(error_code)>(get_executor(), std::forward<Token>(token), &Coordinator::cancel,
                                                  this, std::move(execution_id), std::move(reason), std::move(actor));
  }

  /// The executor the coordinator and its completions run on.
  boost::asio::any_io_executor get_executor() const noexcept;

  // Several coordinators (see ClusterOptions).
  /// True while this coordinator holds the leader lease and its local deadline has not
  /// passed. A standby queues triggers, retries and cancels in the store for the leader and
  /// answers with the leader's answer (ClusterOptions::command_wait).
  bool leading() const noexcept;
  /// False while the database did not answer this coordinator's last lease attempt (every
  /// third of `lease_ttl`): it fires nothing then, and its /readyz answers 503.
  bool store_reachable() const noexcept;
  /// The lease as this coordinator read it last (who leads, the epoch, the expiry).
  LeaderLease leader_lease() const;
  /// GET /api/v1/cluster: the lease and the coordinators registry, read from the store
  /// (`alive`: reported within 3 lease TTLs). On the executor, never inline.
  void cluster_status(std::function<void(error_code, v1::ClusterStatus)> done);

  /// Every execution record stored from an agent or a `agent lost` verdict (for hosts that
  /// print or stream them).
  void on_execution(std::function<void(const v1::Execution&)> observer);
  /// Adds an observer (they are called in the order they were added).
  void observe(CoordinatorObserver observer);

  Store& store() noexcept;
  Catalog& catalog() noexcept;
  Scheduler& scheduler() noexcept;
  CoordinatorDispatcher& dispatcher() noexcept;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

/// What `apply_manifest` did, or where it stopped: `error.field` is the manifest's field
/// path (`tasks[2].group_ids[0]`) and `error.reason` why.
struct ManifestChanges {
  std::vector<std::string> created;    ///< `group web`, `task backup`
  std::vector<std::string> updated;
  std::vector<std::string> unchanged;
};
using ManifestApplyResult = Result<ManifestChanges>;

/**
 * Applies a TaskManifest (as `load_task_manifest` returns it) through the coordinator's
 * catalog operations, so agents receive the changes: groups are created or updated by
 * name, then tasks by id, else by name. A task's `group_ids` may name groups by id or by
 * name. Entries equal to what is stored are left alone (no new revision, no push). Stops at
 * the first failure; what was applied before it stays. `force`: update tasks with runs in
 * progress. `done` runs on the coordinator's executor.
 */
void apply_manifest(Coordinator& coordinator, const v1::TaskManifest& manifest, Actor actor, bool force,
                    std::function<void(ManifestApplyResult)> done);

/// `apply_manifest` with an Asio completion token (callback, `use_awaitable`, ...).
template <typename Token>
auto async_apply_manifest(Coordinator& coordinator, v1::TaskManifest manifest, Actor actor, bool force,
                          Token&& token) {
  return detail::async_from_callback<void(ManifestApplyResult)>(
      coordinator.get_executor(), std::forward<Token>(token),
      [&coordinator, manifest = std::move(manifest), actor = std::move(actor), force](auto done) mutable {
        apply_manifest(coordinator, manifest, std::move(actor), force, std::move(done));
      });
}

}  // namespace quartzflow
