// SPDX-License-Identifier: Apache-2.0
// Catalog following: what to apply when the Store's config version moved (CatalogFollowState)
// and the poll that finds out (CatalogFollower).
#include "catalog_follower.hpp"

#include <algorithm>
#include <unordered_set>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <quartzflow/log.hpp>

namespace quartzflow::detail {

namespace asio = boost::asio;

CatalogChangesRead read_catalog_changes(StoreTransaction& tx, std::uint64_t after) {
  CatalogChangesRead read;
  read.version = tx.config_version();
  if (read.version <= after) return read;
  auto changes = tx.config_changes_since(after, read.version);
  if (!changes) {
    read.full = true;
    read.tasks = tx.all_tasks();
    read.groups_or_agents = true;
    return read;
  }
  for (auto& change : *changes) {
    if (change.target != ConfigTarget::task) {
      read.groups_or_agents = true;
      continue;
    }
    if (auto task = tx.task(change.id)) read.tasks.push_back(std::move(*task));
    read.task_ids.push_back(std::move(change.id));
  }
  return read;
}

namespace {

std::uint64_t version_of(const v1::Task& task) {
  return static_cast<std::uint64_t>(std::max<std::int64_t>(task.config_version(), 0));
}

}  // namespace

void CatalogFollowState::loaded(std::uint64_t version, const std::vector<v1::Task>& tasks) {
  v1::TaskChangeAction action{};
  for (const auto& task : tasks) take(task, &action);
  applied_version_ = std::max(applied_version_, version);
}

bool CatalogFollowState::take(const v1::Task& task, v1::TaskChangeAction* action) {
  const auto version = version_of(task);
  auto [it, inserted] = applied_.try_emplace(task.id(), Applied{version, task.enabled(), false});
  if (inserted) {
    *action = v1::TASK_CHANGE_ACTION_CREATED;
    return true;
  }
  auto& applied = it->second;
  // An equal version is this very state, applied by whichever of the local commit and the
  // follower's read came first; a lower one is older than what is held (a race of the two).
  if (applied.config_version >= version) return false;
  if (applied.removed) *action = v1::TASK_CHANGE_ACTION_CREATED;
  else if (applied.enabled != task.enabled())
    *action = task.enabled() ? v1::TASK_CHANGE_ACTION_ENABLED : v1::TASK_CHANGE_ACTION_DISABLED;
  else *action = v1::TASK_CHANGE_ACTION_UPDATED;
  applied = Applied{version, task.enabled(), false};
  return true;
}

bool CatalogFollowState::local_task(const v1::Task& task) {
  v1::TaskChangeAction action{};
  return take(task, &action);
}

LocalRemoval CatalogFollowState::local_removal(const std::string& task_id, std::uint64_t version) {
  auto [it, inserted] = applied_.try_emplace(task_id, Applied{version, false, true});
  if (inserted) return LocalRemoval::gone;
  auto& applied = it->second;
  if (applied.config_version > version) return LocalRemoval::outdated;
  const bool was_held = !applied.removed;
  applied = Applied{version, false, true};
  return was_held ? LocalRemoval::remove : LocalRemoval::gone;
}

CatalogFollowActions CatalogFollowState::changes_read(const CatalogChangesRead& read) {
  CatalogFollowActions actions;
  if (read.version <= applied_version_) return actions;
  for (const auto& task : read.tasks) {
    v1::TaskChangeAction action{};
    if (take(task, &action)) actions.upserts.push_back(FollowedTask{task, action});
  }
  // A task absent from the read was deleted at or before its version. Held at a newer
  // version, it was created again by a local change the read does not see yet: kept. The
  // tombstone keeps a local commit older than the deletion, completing late, from bringing
  // the task back.
  const auto gone = [&](const std::string& id) {
    auto [it, inserted] = applied_.try_emplace(id, Applied{read.version, false, true});
    auto& applied = it->second;
    if (!inserted && applied.config_version > read.version) return;
    const bool was_held = !inserted && !applied.removed;
    applied = Applied{read.version, false, true};
    actions.removals.push_back(FollowedRemoval{id, was_held});
  };
  std::unordered_set<std::string_view> present;
  for (const auto& task : read.tasks) present.insert(task.id());
  if (read.full) {
    std::vector<std::string> missing;
    for (const auto& [id, applied] : applied_)
      if (!applied.removed && !present.count(id)) missing.push_back(id);
    for (const auto& id : missing) gone(id);
  } else {
    for (const auto& id : read.task_ids)
      if (!present.count(id)) gone(id);
  }
  actions.reload_dispatcher = read.groups_or_agents;
  applied_version_ = read.version;
  return actions;
}

std::size_t CatalogFollowState::task_count() const noexcept {
  return static_cast<std::size_t>(
      std::count_if(applied_.begin(), applied_.end(), [](const auto& entry) { return !entry.second.removed; }));
}

/// Thread safety: as CatalogFollower. Handlers hold it weakly: a read completing after the
/// follower is gone does nothing.
struct CatalogFollower::Impl : std::enable_shared_from_this<CatalogFollower::Impl> {
  Impl(asio::any_io_executor ex, Store& s, std::chrono::milliseconds i, CatalogFollowApply a)
      : executor(ex), store(s), interval(i), apply(std::move(a)), timer(ex) {}

  asio::any_io_executor executor;
  Store& store;
  std::chrono::milliseconds interval;
  CatalogFollowApply apply;
  asio::steady_timer timer;
  CatalogFollowState state;
  bool stopped = false;
  bool reading = false;
  bool poll_again = false;  // a wake during a read: read once more after it
  std::uint64_t reads_applied = 0;

  void arm() {
    if (stopped || interval.count() <= 0) return;
    timer.expires_after(interval);
    timer.async_wait([weak = weak_from_this()](const error_code& ec) {
      auto self = weak.lock();
      if (!self || ec || self->stopped) return;
      self->poll();
      self->arm();
    });
  }

  void poll() {
    if (stopped) return;
    if (reading) {
      poll_again = true;
      return;
    }
    reading = true;
    poll_again = false;
    auto read = std::make_shared<CatalogChangesRead>();
    store.read([read, after = state.applied_version()](StoreTransaction& tx,
                                                       error_code&) { *read = read_catalog_changes(tx, after); },
               [weak = weak_from_this(), read](error_code ec) {
                 auto self = weak.lock();
                 if (!self) return;
                 self->reading = false;
                 if (self->stopped) return;
                 if (ec) {
                   logger()->warn("catalog follower: reading the store's config version failed: {}", ec.message());
                 } else if (auto actions = self->state.changes_read(*read); !actions.empty()) {
                   ++self->reads_applied;
                   self->apply(std::move(actions));
                 }
                 if (self->poll_again) self->poll();
               });
  }
};

CatalogFollower::CatalogFollower(asio::any_io_executor executor, Store& store, std::chrono::milliseconds interval,
                                 CatalogFollowApply apply)
    : impl_(std::make_shared<Impl>(executor, store, interval, std::move(apply))) {}

CatalogFollower::~CatalogFollower() { stop(); }

CatalogFollowState& CatalogFollower::state() noexcept { return impl_->state; }

void CatalogFollower::start() {
  auto& impl = *impl_;
  impl.stopped = false;  // a coordinator may start again after a stop
  impl.timer.cancel();
  impl.store.watch_config_version([weak = std::weak_ptr<Impl>(impl_), executor = impl.executor] {
    asio::post(executor, [weak] {
      if (auto self = weak.lock()) self->poll();
    });
  });
  impl.arm();
}

void CatalogFollower::poll() { impl_->poll(); }

void CatalogFollower::stop() {
  impl_->stopped = true;
  impl_->timer.cancel();
}

std::uint64_t CatalogFollower::reads_applied() const noexcept { return impl_->reads_applied; }

}  // namespace quartzflow::detail
