// SPDX-License-Identifier: Apache-2.0
// Catalog following: a coordinator's in-memory catalog (its Scheduler's tasks, its
// dispatcher's mirror) follows the changes other coordinators commit to the shared Store.
// CatalogFollowState decides (sans-I/O); CatalogFollower polls the Store and feeds it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/any_io_executor.hpp>

#include <quartzflow/store.hpp>
#include <quartzflow/v1/admin.pb.h>
#include <quartzflow/v1/task.pb.h>

namespace quartzflow::detail {

/// What one read of the Store found past a config version (`read_catalog_changes`).
struct CatalogChangesRead {
  std::uint64_t version = 0;          ///< the config version the read saw (its snapshot)
  bool full = false;                  ///< the history could not tell: `tasks` holds every task
  std::vector<std::string> task_ids;  ///< not full: the tasks changed (`tasks` has those still there)
  std::vector<v1::Task> tasks;        ///< the current state of the changed tasks (or of all)
  bool groups_or_agents = false;      ///< groups or agent placements changed (always when full)
};

/**
 * Reads, inside one read transaction, what changed after config version `after`: only the
 * version when nothing did (one cheap query per poll); the changed tasks when the Store
 * recorded what each version changed; else every task (`full`).
 *
 * Relies on the Store making config versions visible in increasing order, with no gaps
 * (`bump_config_version` takes MAX + 1 in the writing transaction: a concurrent bump waits
 * for it or fails). A version committed after a higher one became visible would be skipped.
 */
CatalogChangesRead read_catalog_changes(StoreTransaction& tx, std::uint64_t after);

/// A task the follower hands to the Scheduler and the dispatcher, and how observers hear of it.
struct FollowedTask {
  v1::Task task;
  v1::TaskChangeAction action = v1::TASK_CHANGE_ACTION_UPDATED;
};

/// A task gone from the Store. `known`: this process had it (observers hear of the deletion);
/// else only the dispatcher's mirror may still list it (removed quietly).
struct FollowedRemoval {
  std::string task_id;
  bool known = false;
};

/// What to apply after a read, through the same path as a local change.
struct CatalogFollowActions {
  std::vector<FollowedTask> upserts;
  std::vector<FollowedRemoval> removals;
  bool reload_dispatcher = false;  ///< groups or agents changed: CoordinatorDispatcher::catalog_changed
  bool empty() const noexcept { return upserts.empty() && removals.empty() && !reload_dispatcher; }
};

/// What a local change's commit asks of the process (CatalogFollowState::local_removal).
enum class LocalRemoval {
  remove,    ///< applied here at an older version: remove it, tell observers
  gone,      ///< not held here (already removed by the follower, or never seen): remove
             ///< quietly (idempotent), tell nobody
  outdated,  ///< a newer state of a task with this id is applied already: leave it
};

/**
 * What this process has applied to its Scheduler and dispatcher: per task, the config
 * version of the state it holds. The one guard that makes a change apply exactly once,
 * whichever sees it first: the commit of a local change (Coordinator) or the follower's read
 * of the Store, and that keeps an older state from replacing a newer one when the two race.
 *
 * Thread safety: not thread-safe; use from the coordinator's executor. No I/O, no clock.
 */
class CatalogFollowState {
 public:
  /// The catalog as loaded at start, at config version `version`.
  void loaded(std::uint64_t version, const std::vector<v1::Task>& tasks);
  /// A local change committed `task`: true when it is newer than what is applied (the caller
  /// applies it and tells observers), false when this state (or a newer one) is applied.
  bool local_task(const v1::Task& task);
  /// A local deletion of `task_id` committed at `version`.
  LocalRemoval local_removal(const std::string& task_id, std::uint64_t version);

  /// The config version the follower has applied the catalog up to.
  std::uint64_t applied_version() const noexcept { return applied_version_; }
  /// Turns a read into what to apply (never what is applied already) and moves the
  /// applied version to the read's. A read older than the applied version changes nothing.
  CatalogFollowActions changes_read(const CatalogChangesRead& read);

  /// Tasks held (for tests and metrics).
  std::size_t task_count() const noexcept;

 private:
  /// A task's applied state, or (`removed`) the version it was known deleted at: a
  /// tombstone, so that a local commit older than the deletion cannot bring it back.
  struct Applied {
    std::uint64_t config_version = 0;
    bool enabled = false;
    bool removed = false;
  };
  /// Records `task` when it is newer than the applied state; the change action it is.
  bool take(const v1::Task& task, v1::TaskChangeAction* action);

  std::unordered_map<std::string, Applied> applied_;
  std::uint64_t applied_version_ = 0;
};

/// How CatalogFollower hands over what it decided (on its executor).
using CatalogFollowApply = std::function<void(CatalogFollowActions)>;

/**
 * Polls `config_version()` every `interval` in a read transaction (and at once when the
 * Store's `watch_config_version` says so); when it moved past the state's applied version,
 * reads what changed and hands the actions to `apply`. One read at a time; a wake during a
 * read polls again after it. `interval` 0: no timer (only the Store's watch, if any).
 *
 * Thread safety: not thread-safe; use from `executor` (the Store's completions come back
 * there). Cancellation: `stop` (and destruction) cancels the timer; a read in flight is
 * dropped when it completes.
 */
class CatalogFollower {
 public:
  CatalogFollower(boost::asio::any_io_executor executor, Store& store, std::chrono::milliseconds interval,
                  CatalogFollowApply apply);
  ~CatalogFollower();
  CatalogFollower(const CatalogFollower&) = delete;
  CatalogFollower& operator=(const CatalogFollower&) = delete;

  /// The state the follower feeds; local changes go through it too.
  CatalogFollowState& state() noexcept;
  /// Starts polling (call after `state().loaded(...)`) and registers with the Store's watch;
  /// again after `stop`, polling resumes from the state's applied version.
  void start();
  /// Polls now (coalesced with a read in flight).
  void poll();
  void stop();
  /// Reads that found a new version (for tests and metrics).
  std::uint64_t reads_applied() const noexcept;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace quartzflow::detail
