// SPDX-License-Identifier: Apache-2.0
// Coordinator: each committed catalog change is handed to the Scheduler (re-plan the task)
// and the Dispatcher (reload, push to agents) before the caller hears of it. Failed routed
// runs come back here from the Dispatcher to be retried per the task's policy.
#include <algorithm>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <quartzflow/coordinator.hpp>
#include <quartzflow/execution_status.hpp>
#include <quartzflow/log.hpp>
#include <quartzflow/task.hpp>

#include "../catalog/catalog_follower.hpp"
#include "../common/clock.hpp"
#include "../common/execution_id.hpp"
#include "../common/task_policies.hpp"
#include "change_feed.hpp"
#include "cluster_role.hpp"
#include "command_relay.hpp"

namespace quartzflow {

namespace asio = boost::asio;

namespace {

/// A fire of the task's schedule (not a manual trigger or a retry).
bool scheduled_trigger(const v1::Execution& e) {
  return e.trigger() == v1::TRIGGER_TYPE_SCHEDULED || e.trigger() == v1::TRIGGER_TYPE_MISFIRE_CATCHUP;
}

}  // namespace

struct Coordinator::Impl : std::enable_shared_from_this<Coordinator::Impl> {
  Impl(asio::any_io_executor ex, Store& s, CoordinatorOptions o)
      : executor(ex),
        store(s),
        options(std::move(o)),
        catalog(s),
        dispatcher(ex, s, options.dispatcher),
        scheduler(ex, s, dispatcher, dispatcher, options.scheduler),
        follower(ex, s, options.catalog_poll_interval,
                 [this](detail::CatalogFollowActions actions) { apply_followed(std::move(actions)); }) {}

  asio::any_io_executor executor;
  Store& store;
  CoordinatorOptions options;
  Catalog catalog;
  CoordinatorDispatcher dispatcher;
  Scheduler scheduler;
  std::vector<CoordinatorObserver> observers;
  /// What this process applied of the catalog, and (catalog_poll_interval) the poll that
  /// follows the changes other coordinators commit.
  detail::CatalogFollower follower;
  /// Leader or standby (several coordinators; a single one leads from its start): the
  /// scheduler fires only while this coordinator holds the lease.
  std::unique_ptr<detail::ClusterRole> role;
  /// A standby's triggers, retries and cancels go to the leader through the store's commands
  /// table; the leader claims and runs the queued ones (ARCHITECTURE.md, "Several coordinators").
  std::unique_ptr<detail::CommandRelay> relay;
  /// A standby's view of the leader's runs (the store's change feed) for its observers.
  std::unique_ptr<detail::ExecutionChangeFeed> feed;
  /// True while a command claimed from the queue is being started here: a standby refuses it
  /// (errc::fenced, and the leader's relay queues it again) instead of queueing it anew.
  bool running_command = false;

  /// On a standby: `command` goes to the leader through the store and `done` gets its answer.
  /// False on the leader (the caller runs it here).
  bool relay_unless_leading(v1::Command command, const Actor& actor, std::function<void(TriggerResult)>& done) {
    if (role->leading()) return false;
    if (running_command) {
      TriggerResult result;
      result.ec = errc::fenced;
      result.error = ValidationError{{}, "", role->not_leader_message()};
      asio::post(executor, [done = std::move(done), result = std::move(result)]() mutable { done(std::move(result)); });
      return true;
    }
    *command.mutable_actor() = actor_record(actor);
    relay->submit(std::move(command), [done = std::move(done)](v1::CommandResult answer) {
      TriggerResult result;
      if (answer.error_code() != 0) {
        result.ec = make_error_code(static_cast<errc>(answer.error_code()));
        result.error = ValidationError{answer.error_input(), answer.error_field(), answer.error_reason()};
      }
      result.value.assign(answer.execution_ids().begin(), answer.execution_ids().end());
      done(std::move(result));
    });
    return true;
  }

  static v1::CommandActor actor_record(const Actor& actor) {
    v1::CommandActor out;
    out.set_name(actor.name);
    out.set_kind(actor.kind);
    out.set_token_name(actor.token_name);
    out.set_address(actor.address);
    out.set_user_agent(actor.user_agent);
    out.set_request_id(actor.request_id);
    return out;
  }
  static Actor actor_of(const v1::CommandActor& actor) {
    return Actor{actor.name(),       actor.address(),    actor.kind(),
                 actor.token_name(), actor.user_agent(), actor.request_id()};
  }

  /// Who leads, for the answer of a command no leader took.
  std::string leader_text() const {
    const auto lease = role->lease();
    if (!lease.held()) return "no coordinator leads right now";
    return fmt::format("the leader is {} at {}", lease.holder_id,
                       lease.holder_addresses.admin.empty() ? std::string("(no admin address advertised)")
                                                            : lease.holder_addresses.admin);
  }

  /// The leader's side of a queued command: the path its own API takes.
  void run_command(Coordinator& coordinator, const v1::Command& c, std::function<void(v1::CommandResult)> done) {
    const Actor actor = actor_of(c.actor());
    auto answer = [done](TriggerResult r) {
      v1::CommandResult out = r.ec ? detail::command_failure(r.ec, r.error) : v1::CommandResult{};
      for (auto& id : r.value) out.add_execution_ids(std::move(id));
      done(std::move(out));
    };
    running_command = true;
    switch (c.kind()) {
      case v1::COMMAND_KIND_TRIGGER:
        coordinator.trigger(c.target_id(), {c.params().begin(), c.params().end()},
                            {c.agent_ids().begin(), c.agent_ids().end()}, actor, std::move(answer));
        break;
      case v1::COMMAND_KIND_CANCEL:
        coordinator.cancel(c.target_id(), c.reason(), actor,
                           [done](error_code ec) { done(ec ? detail::command_failure(ec, {}) : v1::CommandResult{}); });
        break;
      case v1::COMMAND_KIND_RETRY: {
        auto record = std::make_shared<std::optional<v1::Execution>>();
        store.read(
            [record, id = c.target_id()](StoreTransaction& tx, error_code&) { *record = tx.execution(id); },
            [weak = weak_from_this(), &coordinator, record, actor, id = c.target_id(),
             answer = std::move(answer)](error_code ec) mutable {
              auto self = weak.lock();
              if (!self) return;
              const std::string input = fmt::format("retry of execution \"{}\"", id);
              if (ec) return answer(TriggerResult{ec, ValidationError{input, "", ec.message()}, {}});
              if (!*record)
                return answer(TriggerResult{
                    make_error_code(errc::not_found), ValidationError{input, "", "no execution with this id"}, {}});
              self->running_command = true;
              coordinator.retry(**record, actor, std::move(answer));
              self->running_command = false;
            });
        break;
      }
      default:
        answer(TriggerResult{make_error_code(errc::invalid_argument),
                             ValidationError{"command", "kind", "is not a trigger, retry or cancel"},
                             {}});
    }
    running_command = false;
  }

  void notify_task(const v1::Task* task, const std::string& id, v1::TaskChangeAction action, const Actor& actor) {
    for (const auto& o : observers)
      if (o.task_changed) o.task_changed(task, id, action, actor);
  }

  /// After a committed change: the scheduler first (no fire of the old config after this),
  /// then the agents; then the caller.
  /// `apply` hands a task change to the scheduler and the dispatcher; without it (groups,
  /// agent moves) the dispatcher reloads the catalog.
  template <typename Result>
  auto follow(std::function<void(Result)> done, std::function<void(const Result&)> apply) {
    return [weak = weak_from_this(), done = std::move(done), apply = std::move(apply)](Result result) mutable {
      auto self = weak.lock();
      if (!self || !result) {
        if (done) done(std::move(result));
        return;
      }
      if (apply) {
        apply(result);
        if (done) done(std::move(result));
        return;
      }
      self->dispatcher.catalog_changed([done = std::move(done), result = std::move(result)]() mutable {
        if (done) done(std::move(result));
      });
    };
  }

  /// A committed task state to the scheduler and the agents, unless it (or a newer one) is
  /// applied already: false then, and observers must not hear of it again.
  bool task_changed(const v1::Task& task) {
    if (!follower.state().local_task(task)) return false;
    scheduler.upsert_task(task);
    dispatcher.task_changed(task);
    return true;
  }

  /// A committed deletion; true when observers should hear of it (see task_changed).
  bool task_removed(const std::string& id, std::uint64_t version) {
    const auto verdict = follower.state().local_removal(id, version);
    if (verdict == detail::LocalRemoval::outdated) return false;
    scheduler.remove_task(id);
    dispatcher.task_removed(id, static_cast<std::int64_t>(version));
    return verdict == detail::LocalRemoval::remove;
  }

  /// Changes another coordinator committed, through the path of local ones.
  void apply_followed(detail::CatalogFollowActions actions) {
    const Actor actor{"system", {}, v1::ACTOR_KIND_SYSTEM, {}, "catalog-follower", {}};
    for (const auto& removal : actions.removals) {
      scheduler.remove_task(removal.task_id);
      dispatcher.task_removed(removal.task_id, static_cast<std::int64_t>(follower.state().applied_version()));
      if (removal.known) notify_task(nullptr, removal.task_id, v1::TASK_CHANGE_ACTION_DELETED, actor);
    }
    for (const auto& change : actions.upserts) {
      scheduler.upsert_task(change.task);
      dispatcher.task_changed(change.task);
      notify_task(&change.task, change.task.id(), change.action, actor);
    }
    if (actions.reload_dispatcher) dispatcher.catalog_changed();
  }

  /// Gives every task to the scheduler, which starts firing once this coordinator leads and
  /// the agents had their grace (ClusterRole).
  void load_tasks(std::function<void(error_code)> ready) {
    auto tasks = std::make_shared<std::vector<v1::Task>>();
    auto version = std::make_shared<std::uint64_t>(0);
    store.read([tasks, version](StoreTransaction& tx,
                                error_code&) { *version = tx.config_version(), *tasks = tx.all_tasks(); },
               [weak = weak_from_this(), tasks, version, ready = std::move(ready)](error_code ec) {
                 auto self = weak.lock();
                 if (!self) return;
                 if (ec) return ready(ec);
                 for (const auto& t : *tasks) self->scheduler.upsert_task(t);
                 self->start_following(*version, *tasks);
                 self->role->start([ready] { ready({}); });
               });
  }

  /// The catalog as loaded is what the follower starts from. The dispatcher loaded its own
  /// copy earlier: another coordinator may have committed in between, so it reloads once.
  void start_following(std::uint64_t version, const std::vector<v1::Task>& tasks) {
    follower.state().loaded(version, tasks);
    if (options.catalog_poll_interval.count() <= 0) return;
    dispatcher.catalog_changed();
    follower.start();
  }

  /**
   * Runs a previous coordinator made (routed fires, manual triggers, retries) left PENDING or
   * RUNNING, that no agent claimed within the grace: RUNNING ones become FAILURE `agent lost`
   * (and are retried per policy); PENDING ones never started anywhere that is known: the
   * scheduler, which starts then, owes them (see Scheduler::start). Those of a task deleted
   * since are closed SKIPPED. Nothing recorded stays open forever. (An `all` task's own fires
   * are the agents' records: each agent reports them.)
   */
  void reconcile(std::int64_t started_ms) {
    auto open = std::make_shared<std::vector<v1::Execution>>();
    store.read(
        [open](StoreTransaction& tx, error_code&) {
          v1::ListExecutionsRequest request;
          request.add_status(v1::EXECUTION_STATUS_PENDING);
          request.add_status(v1::EXECUTION_STATUS_RUNNING);
          request.set_page_size(500);
          for (std::uint32_t page = 1;; ++page) {
            request.set_page(page);
            auto listing = tx.list_executions(request);
            for (auto& e : listing.items) open->push_back(std::move(e));
            if (listing.items.size() < 500) break;
          }
        },
        [weak = weak_from_this(), open, started_ms](error_code ec) {
          auto self = weak.lock();
          if (!self) return;
          if (ec) logger()->error("reading the runs left open by the previous coordinator failed: {}", ec.message());
          std::vector<v1::Execution> orphans;
          std::vector<v1::Execution> unsent;
          for (auto& e : *open) {
            // Triggers accepted since this coordinator started are its own; fires recorded
            // ahead by the previous one may lie after that instant.
            if (e.scheduled_unix_ms() > started_ms && !scheduled_trigger(e)) continue;
            if (self->dispatcher.held_by_online_agent(e.execution_id())) continue;
            auto task = self->dispatcher.task(e.task_id());
            const bool agents_own = scheduled_trigger(e) && (task ? !detail::coordinator_routed(*task)
                                                             : detail::execution_id_names_agent(e.execution_id(), e.agent_id()));
            if (agents_own) continue;
            if (!task || e.status() != v1::EXECUTION_STATUS_PENDING) orphans.push_back(std::move(e));
            else unsent.push_back(std::move(e));
          }
          if (!unsent.empty())
            logger()->warn("{} run(s) left PENDING by the previous coordinator: owed again", unsent.size());
          self->scheduler.start(std::move(unsent), {});
          if (!orphans.empty()) self->close_orphans(std::move(orphans));
        });
  }

  void close_orphans(std::vector<v1::Execution> orphans) {
    logger()->warn("{} run(s) left open by the previous coordinator: closing them", orphans.size());
    auto closed = std::make_shared<std::vector<v1::Execution>>();
    store.transact(
        [orphans = std::move(orphans), closed, epoch = role->epoch()](StoreTransaction& tx, error_code&) {
          if (epoch != 0) tx.check_fence(epoch);
          for (const auto& orphan : orphans) {
            auto record = tx.execution(orphan.execution_id());
            if (!record || is_final(record->status())) continue;
            if (record->status() == v1::EXECUTION_STATUS_PENDING) {  // its task was deleted since
              record->set_status(v1::EXECUTION_STATUS_SKIPPED);
              record->set_skip_reason(v1::SKIP_REASON_TASK_DISABLED);
              record->set_skip_detail("its task was deleted before the run was sent");
            } else {
              record->set_status(v1::EXECUTION_STATUS_FAILURE);
              record->set_failure_reason("agent lost");
              record->set_error_message("its agent did not come back after the coordinator restarted");
            }
            record->set_ended_unix_ms(detail::now_unix_ms());
            record->set_updated_unix_ms(detail::now_unix_ms());
            tx.upsert_execution(*record);
            closed->push_back(std::move(*record));
          }
        },
        [weak = weak_from_this(), closed](error_code ec) {
          auto self = weak.lock();
          if (!self || ec) return;
          for (const auto& r : *closed) {
            for (const auto& o : self->observers)
              if (o.execution) o.execution(r);
            self->maybe_retry(r);
          }
        });
  }

  void maybe_retry(const v1::Execution& record) {
    if (!is_final(record.status())) return;
    auto task = dispatcher.task(record.task_id());
    if (!task || !detail::coordinator_routed(*task)) return;
    const auto& retry = task->retry();
    if (record.attempt() > retry.max_retries()) return;
    const bool lost = record.failure_reason() == "agent lost";
    if (lost && task->placement().no_failover()) return;
    // It may have run on the lost agent: at_most_once never runs it a second time.
    if (lost && task->delivery_guarantee() == v1::DELIVERY_GUARANTEE_AT_MOST_ONCE) return;
    if (!lost && !retry.retry_on_another_agent()) return;  // the agent retried it locally
    std::optional<int> exit_code;
    if (record.has_exit_code()) exit_code = record.exit_code();
    if (!retryable(record.status(), record.failure_reason(), exit_code, record.http_status(), retry)) return;
    logger()->info("retrying {} (attempt {} of {}) on another agent", record.execution_id(), record.attempt() + 1,
                   retry.max_retries() + 1);
    scheduler.retry(record, true, retry_delay(retry, record.attempt(), record.execution_id()));
  }
};

Coordinator::Coordinator(asio::any_io_executor executor, Store& store, CoordinatorOptions options)
    : impl_(std::make_shared<Impl>(executor, store, [&] {
        // One id: the lease holder's is the one agents see.
        if (!options.cluster.coordinator_id.empty()) options.dispatcher.coordinator_id = options.cluster.coordinator_id;
        return std::move(options);
      }())) {
  impl_->role = std::make_unique<detail::ClusterRole>(
      executor, store, impl_->scheduler, impl_->dispatcher, impl_->options,
      [weak = impl_->weak_from_this()] {
        // A standby's catalog is at most a poll behind: read what changed last now.
        auto self = weak.lock();
        if (self && self->options.catalog_poll_interval.count() > 0) self->follower.poll();
      },
      [weak = impl_->weak_from_this()](std::int64_t started_ms) {
        if (auto self = weak.lock()) self->reconcile(started_ms);
      });
  CoordinatorDispatcherEvents events;
  events.execution = [weak = impl_->weak_from_this()](const v1::Execution& record) {
    auto self = weak.lock();
    if (!self) return;
    for (const auto& o : self->observers)
      if (o.execution) o.execution(record);
    self->maybe_retry(record);
  };
  events.run_lost = events.execution;
  // The scheduler's own final records (MISSED, SKIPPED, `not dispatched`): observers hear of
  // every final state once, whoever made it. They are not retried here (as before).
  impl_->scheduler.set_final_record_observer([weak = impl_->weak_from_this()](const v1::Execution& record) {
    if (auto self = weak.lock())
      for (const auto& o : self->observers)
        if (o.execution) o.execution(record);
  });
  events.agent_state = [weak = impl_->weak_from_this()](const v1::Agent& agent) {
    if (auto self = weak.lock())
      for (const auto& o : self->observers)
        if (o.agent_state) o.agent_state(agent);
  };
  events.output = [weak = impl_->weak_from_this()](const v1::Execution& record, std::uint64_t offset,
                                                   const std::string& delta) {
    if (auto self = weak.lock())
      for (const auto& o : self->observers)
        if (o.output) o.output(record, offset, delta);
  };
  events.push_status = [weak = impl_->weak_from_this()](const std::string& agent_id, const v1::ConfigPushStatus& s) {
    if (auto self = weak.lock())
      for (const auto& o : self->observers)
        if (o.push_status) o.push_status(agent_id, s);
  };
  impl_->dispatcher.set_events(std::move(events));

  detail::CommandRelayOptions relay_options;
  relay_options.coordinator_id = impl_->options.dispatcher.coordinator_id;
  relay_options.wait = impl_->options.cluster.command_wait;
  detail::CommandRelayHooks relay_hooks;
  relay_hooks.runnable_epoch = [weak = impl_->weak_from_this()]() -> std::uint64_t {
    auto self = weak.lock();
    // After a takeover, once the term began: a trigger before that would be recorded, not sent.
    return self && self->role->runs_commands() ? self->role->epoch() : 0;
  };
  relay_hooks.run = [weak = impl_->weak_from_this(), this](const v1::Command& c,
                                                           std::function<void(v1::CommandResult)> done) {
    if (auto self = weak.lock()) self->run_command(*this, c, std::move(done));
  };
  relay_hooks.leader_text = [weak = impl_->weak_from_this()] {
    auto self = weak.lock();
    return self ? self->leader_text() : std::string();
  };
  impl_->relay =
      std::make_unique<detail::CommandRelay>(executor, store, std::move(relay_options), std::move(relay_hooks));

  detail::ChangeFeedOptions feed_options;
  feed_options.poll = impl_->options.cluster.event_poll_interval;
  detail::ChangeFeedHooks feed_hooks;
  feed_hooks.leading = [weak = impl_->weak_from_this()] {
    auto self = weak.lock();
    return self && self->role->leading();
  };
  feed_hooks.wanted = [weak = impl_->weak_from_this()] {
    auto self = weak.lock();
    if (!self) return false;
    return std::any_of(self->observers.begin(), self->observers.end(), [](const CoordinatorObserver& o) {
      return o.cluster_execution && (!o.wants_cluster_executions || o.wants_cluster_executions());
    });
  };
  feed_hooks.publish = [weak = impl_->weak_from_this()](const v1::Execution& record) {
    if (auto self = weak.lock())
      for (const auto& o : self->observers)
        if (o.cluster_execution) o.cluster_execution(record);
  };
  impl_->feed = std::make_unique<detail::ExecutionChangeFeed>(executor, store, feed_options, std::move(feed_hooks));
}

Coordinator::~Coordinator() = default;

void Coordinator::start(std::function<void(error_code)> ready) {
  impl_->relay->start();
  impl_->feed->start();
  impl_->dispatcher.start([weak = impl_->weak_from_this(), ready = std::move(ready)](error_code ec) mutable {
    if (auto self = weak.lock()) ec ? ready(ec) : self->load_tasks(std::move(ready));
  });
}

void Coordinator::accept(std::shared_ptr<Connection> connection) { impl_->dispatcher.accept(std::move(connection)); }

void Coordinator::set_revoked_certificates(std::set<std::string> sha256) {
  impl_->dispatcher.set_revoked_certificates(std::move(sha256));
}

std::string Coordinator::session_certificate_sha256(const std::string& agent_id) const {
  return impl_->dispatcher.session_certificate_sha256(agent_id);
}
void Coordinator::stop() {
  impl_->follower.stop();
  impl_->relay->stop();
  impl_->feed->stop();
  impl_->scheduler.stop();
  impl_->dispatcher.stop();
  impl_->role->stop();  // after the scheduler's last transactions: the lease goes at once
}

void Coordinator::create_task(v1::Task task, Actor actor, Catalog::TaskHandler done) {
  impl_->catalog.create_task(std::move(task), actor,
                             impl_->follow<CatalogResult<v1::Task>>(std::move(done), [weak = impl_->weak_from_this(),
                                                                                      actor](const auto& r) {
                               auto self = weak.lock();
                               if (!self) return;
                               if (self->task_changed(r.value))
                                 self->notify_task(&r.value, r.value.id(), v1::TASK_CHANGE_ACTION_CREATED, actor);
                             }));
}

void Coordinator::update_task(v1::Task task, bool force, Actor actor, Catalog::TaskHandler done) {
  impl_->catalog.update_task(std::move(task), force, actor,
                             impl_->follow<CatalogResult<v1::Task>>(std::move(done), [weak = impl_->weak_from_this(),
                                                                                      actor](const auto& r) {
                               auto self = weak.lock();
                               if (!self) return;
                               if (self->task_changed(r.value))
                                 self->notify_task(&r.value, r.value.id(), v1::TASK_CHANGE_ACTION_UPDATED, actor);
                             }));
}

void Coordinator::delete_task(std::string id, Actor actor, Catalog::DoneHandler done) {
  impl_->catalog.delete_task(id, actor,
                             impl_->follow<CatalogResult<std::uint64_t>>(
                                 std::move(done), [weak = impl_->weak_from_this(), id, actor](const auto& r) {
                                   auto self = weak.lock();
                                   if (!self) return;
                                   if (self->task_removed(id, r.value))
                                     self->notify_task(nullptr, id, v1::TASK_CHANGE_ACTION_DELETED, actor);
                                 }));
}

void Coordinator::set_task_enabled(std::string id, bool enabled, Actor actor, Catalog::TaskHandler done) {
  impl_->catalog.set_task_enabled(std::move(id), enabled, actor,
                                  impl_->follow<CatalogResult<v1::Task>>(
                                      std::move(done), [weak = impl_->weak_from_this(), actor, enabled](const auto& r) {
                                        auto self = weak.lock();
                                        if (!self) return;
                                        if (self->task_changed(r.value))
                                          self->notify_task(&r.value, r.value.id(),
                                                            enabled ? v1::TASK_CHANGE_ACTION_ENABLED
                                                                    : v1::TASK_CHANGE_ACTION_DISABLED,
                                                            actor);
                                      }));
}

void Coordinator::create_group(v1::Group group, Actor actor, Catalog::GroupHandler done) {
  impl_->catalog.create_group(std::move(group), std::move(actor), impl_->follow<CatalogResult<v1::Group>>(std::move(done), {}));
}

void Coordinator::update_group(v1::Group group, Actor actor, Catalog::GroupHandler done) {
  impl_->catalog.update_group(std::move(group), std::move(actor), impl_->follow<CatalogResult<v1::Group>>(std::move(done), {}));
}

void Coordinator::delete_group(std::string id, Actor actor, Catalog::DoneHandler done) {
  impl_->catalog.delete_group(std::move(id), std::move(actor),
                              impl_->follow<CatalogResult<std::uint64_t>>(std::move(done), {}));
}

void Coordinator::move_agents(std::vector<std::string> agent_ids, std::string group_id, Actor actor,
                              Catalog::DoneHandler done) {
  impl_->catalog.move_agents(std::move(agent_ids), std::move(group_id), std::move(actor),
                             impl_->follow<CatalogResult<std::uint64_t>>(std::move(done), {}));
}

void Coordinator::batch_tasks(std::vector<std::string> task_ids, v1::BatchTaskAction action, Actor actor,
                              std::function<void(CatalogResult<BatchTaskOutcome>)> done) {
  impl_->catalog.batch_tasks(
      std::move(task_ids), action, actor,
      impl_->follow<CatalogResult<BatchTaskOutcome>>(
          std::move(done), [weak = impl_->weak_from_this(), actor, action](const auto& r) {
            auto self = weak.lock();
            if (!self) return;
            for (const auto& id : r.value.deleted) {
              if (self->task_removed(id, r.value.config_version))
                self->notify_task(nullptr, id, v1::TASK_CHANGE_ACTION_DELETED, actor);
            }
            for (const auto& task : r.value.tasks) {
              if (self->task_changed(task))
                self->notify_task(&task, task.id(),
                                  action == v1::BATCH_TASK_ACTION_ENABLE ? v1::TASK_CHANGE_ACTION_ENABLED
                                                                         : v1::TASK_CHANGE_ACTION_DISABLED,
                                  actor);
            }
          }));
}

void Coordinator::delete_agent(std::string agent_id, Actor actor, Catalog::DoneHandler done) {
  const auto online = impl_->dispatcher.online_agents();
  if (std::find(online.begin(), online.end(), agent_id) != online.end()) {
    CatalogResult<std::uint64_t> result;
    result.ec = errc::conflict;
    result.error = ValidationError{fmt::format("delete of agent \"{}\"", agent_id), "state",
                                   "the agent is ONLINE (connected now): only an agent that is gone can be deleted; "
                                   "stop it first, then delete it"};
    asio::post(impl_->executor, [done = std::move(done), result = std::move(result)]() mutable { done(std::move(result)); });
    return;
  }
  impl_->catalog.delete_agent(std::move(agent_id), std::move(actor),
                              impl_->follow<CatalogResult<std::uint64_t>>(std::move(done), {}));
}

void Coordinator::trigger(const std::string& task_id, std::map<std::string, std::string> params, Actor actor,
                          std::function<void(TriggerResult)> done) {
  trigger(task_id, std::move(params), {}, std::move(actor), std::move(done));
}

void Coordinator::retry(const v1::Execution& execution, Actor actor, std::function<void(TriggerResult)> done) {
  v1::Command command;
  command.set_kind(v1::COMMAND_KIND_RETRY);
  command.set_target_id(execution.execution_id());
  if (impl_->relay_unless_leading(std::move(command), actor, done)) return;
  auto fail = [&](errc code, std::string field, std::string reason) {
    TriggerResult result;
    result.ec = code;
    result.error = ValidationError{fmt::format("retry of execution \"{}\"", execution.execution_id()),
                                   std::move(field), std::move(reason)};
    asio::post(impl_->executor, [done = std::move(done), result = std::move(result)]() mutable { done(std::move(result)); });
  };
  if (!is_final(execution.status()))
    return fail(errc::conflict, "status",
                fmt::format("is still {}: cancel it or wait for it to end", v1::ExecutionStatus_Name(execution.status())));
  auto task = impl_->dispatcher.task(execution.task_id());
  if (!task) return fail(errc::not_found, "task_id", fmt::format("its task \"{}\" no longer exists", execution.task_id()));
  std::string agent = execution.agent_id();
  if (agent.empty()) {
    // Never dispatched (no agent then): the least busy agent that may run it now.
    auto eligible = impl_->dispatcher.eligible_agents(*task);
    if (eligible.empty())
      return fail(errc::conflict, "agent_id", "it never reached an agent and no agent of the task's groups is online");
    agent = std::min_element(eligible.begin(), eligible.end(), [](const AgentLoad& a, const AgentLoad& b) {
              return a.running < b.running;
            })->agent_id;
  } else {
    const auto online = impl_->dispatcher.online_agents();
    if (std::find(online.begin(), online.end(), agent) == online.end())
      return fail(errc::conflict, "agent_id",
                  fmt::format("its agent \"{}\" is not online: a retry runs on the agent the run failed on; "
                              "wait until it reconnects, or trigger the task instead",
                              agent));
  }
  impl_->scheduler.retry_on(execution, std::move(agent), actor.name, [done = std::move(done)](error_code ec, std::string id) {
    TriggerResult result;
    result.ec = ec;
    if (ec) result.error = ValidationError{"retry", "", ec.message()};
    else result.value.push_back(std::move(id));
    done(std::move(result));
  });
}

void Coordinator::trigger(const std::string& task_id, std::map<std::string, std::string> params,
                          std::vector<std::string> agent_ids, Actor actor, std::function<void(TriggerResult)> done) {
  v1::Command command;
  command.set_kind(v1::COMMAND_KIND_TRIGGER);
  command.set_target_id(task_id);
  command.mutable_params()->insert(params.begin(), params.end());
  for (const auto& agent : agent_ids) command.add_agent_ids(agent);
  if (impl_->relay_unless_leading(std::move(command), actor, done)) return;
  auto fail = [&](errc code, std::string field, std::string reason) {
    TriggerResult result;
    result.ec = code;
    result.error = ValidationError{fmt::format("trigger of task \"{}\"", task_id), std::move(field), std::move(reason)};
    asio::post(impl_->executor, [done = std::move(done), result = std::move(result)]() mutable { done(std::move(result)); });
  };
  auto task = impl_->dispatcher.task(task_id);
  if (!task) return fail(errc::not_found, "task_id", fmt::format("no task with id \"{}\"", task_id));
  for (const auto& spec : task->params()) {
    if (params.count(spec.name())) continue;
    if (spec.required()) return fail(errc::invalid_argument, "params." + spec.name(), "is required");
    if (!spec.default_value().empty()) params[spec.name()] = spec.default_value();
  }
  for (const auto& [name, value] : params) {
    const bool declared = std::any_of(task->params().begin(), task->params().end(),
                                      [&](const auto& s) { return s.name() == name; });
    if (!declared) return fail(errc::invalid_argument, "params." + name, "is not a parameter of this task");
  }
  if (!agent_ids.empty()) {
    const auto eligible = impl_->dispatcher.eligible_agents(*task);
    const auto online = impl_->dispatcher.online_agents();
    std::string first_field;
    std::vector<std::string> problems;
    for (std::size_t i = 0; i < agent_ids.size(); ++i) {
      const auto& id = agent_ids[i];
      if (std::any_of(eligible.begin(), eligible.end(), [&](const AgentLoad& a) { return a.agent_id == id; })) continue;
      const bool is_online = std::find(online.begin(), online.end(), id) != online.end();
      const std::string groups =
          task->all_agents() ? std::string("every agent") : fmt::format("groups {}", fmt::join(task->group_ids(), ", "));
      auto why = is_online ? fmt::format("agent \"{}\" is not bound to the task (the task runs on {}), or it is "
                                         "stopping",
                                         id, groups)
                           : fmt::format("agent \"{}\" is not online (offline or unknown)", id);
      if (first_field.empty()) first_field = fmt::format("agent_ids[{}]", i);
      problems.push_back(problems.empty() ? std::move(why) : fmt::format("agent_ids[{}]: {}", i, why));
    }
    if (!problems.empty()) return fail(errc::invalid_argument, first_field, fmt::format("{}", fmt::join(problems, "; ")));
  }
  impl_->scheduler.trigger(task_id, std::move(params), std::move(agent_ids), actor.name,
                           [done = std::move(done)](error_code ec, std::vector<std::string> ids) {
                             TriggerResult result;
                             result.ec = ec;
                             if (ec) result.error = ValidationError{"trigger", "", ec.message()};
                             result.value = std::move(ids);
                             done(std::move(result));
                           });
}

void Coordinator::cancel(const std::string& execution_id, std::string reason, Actor actor,
                         std::function<void(error_code)> done) {
  if (!impl_->role->leading()) {  // a standby: the leader holds the agents, it cancels
    v1::Command command;
    command.set_kind(v1::COMMAND_KIND_CANCEL);
    command.set_target_id(execution_id);
    command.set_reason(reason);
    std::function<void(TriggerResult)> answered = [done = std::move(done)](TriggerResult r) { done(r.ec); };
    if (impl_->relay_unless_leading(std::move(command), actor, answered)) return;
  }
  impl_->dispatcher.cancel(
      execution_id, reason, actor.name,
      [weak = impl_->weak_from_this(), execution_id, reason, actor, done = std::move(done)](
          error_code cancel_ec, v1::ExecutionStatus) mutable {
        auto self = weak.lock();
        if (!self) return;
        if (!cancel_ec) return done({});
        // No online agent holds it: a run never dispatched is cancelled in the store.
        auto cancelled = std::make_shared<std::optional<v1::Execution>>();
        self->store.transact(
            [execution_id, reason, actor, cancelled](StoreTransaction& tx, error_code& ec) {
              cancelled->reset();
              auto record = tx.execution(execution_id);
              if (!record) {
                ec = errc::not_found;
                return;
              }
              if (is_final(record->status())) {
                ec = errc::conflict;
                return;
              }
              record->set_status(v1::EXECUTION_STATUS_CANCELLED);
              record->set_cancelled_by(actor.name);
              record->set_error_message("cancelled by " + actor.name + (reason.empty() ? "" : ": " + reason));
              record->set_ended_unix_ms(detail::now_unix_ms());
              record->set_updated_unix_ms(detail::now_unix_ms());
              tx.upsert_execution(*record);
              *cancelled = std::move(*record);
            },
            [weak, cancelled, done = std::move(done)](error_code ec) {
              if (auto again = weak.lock(); again && !ec && *cancelled)
                for (const auto& o : again->observers)
                  if (o.execution) o.execution(**cancelled);
              done(ec);
            });
      });
}

std::vector<Instant> Coordinator::next_fires(const std::string& task_id, std::size_t count, Instant after,
                                             error_code& ec) const {
  auto task = impl_->dispatcher.task(task_id);
  if (!task) {
    ec = errc::not_found;
    return {};
  }
  ec = {};
  std::vector<Instant> fires;
  const auto kind = task->schedule().kind_case();
  if (kind == v1::Schedule::kManual || kind == v1::Schedule::KIND_NOT_SET) return fires;
  const auto schedule = task_schedule(*task);
  ScheduleState state{after, after, 0};
  count = std::clamp<std::size_t>(count, 1, 1000);
  Instant cursor = after;
  while (fires.size() < count) {
    auto fire = schedule.next(cursor, state);
    if (!fire) break;
    fires.push_back(fire->scheduled);
    cursor = fire->scheduled;
    state = ScheduleState{cursor, cursor, state.runs + 1};
  }
  return fires;
}

void Coordinator::on_execution(std::function<void(const v1::Execution&)> observer) {
  CoordinatorObserver o;
  o.execution = std::move(observer);
  impl_->observers.push_back(std::move(o));
}

void Coordinator::observe(CoordinatorObserver observer) { impl_->observers.push_back(std::move(observer)); }

asio::any_io_executor Coordinator::get_executor() const noexcept { return impl_->executor; }
bool Coordinator::leading() const noexcept { return impl_->role->leading(); }

bool Coordinator::store_reachable() const noexcept { return impl_->role->store_reachable(); }
LeaderLease Coordinator::leader_lease() const { return impl_->role->lease(); }
void Coordinator::cluster_status(std::function<void(error_code, v1::ClusterStatus)> done) {
  impl_->role->cluster_status(std::move(done));
}
Store& Coordinator::store() noexcept { return impl_->store; }
Catalog& Coordinator::catalog() noexcept { return impl_->catalog; }
Scheduler& Coordinator::scheduler() noexcept { return impl_->scheduler; }
CoordinatorDispatcher& Coordinator::dispatcher() noexcept { return impl_->dispatcher; }

}  // namespace quartzflow
