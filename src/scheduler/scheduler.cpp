// SPDX-License-Identifier: Apache-2.0
// Scheduler: a min-heap of next fires over one timer; each turn records its fires PENDING
// in one Store transaction, then routes and sends them.
#include <algorithm>
#include <queue>
#include <set>
#include <utility>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/system_timer.hpp>
#include <fmt/format.h>

#include <quartzflow/execution_status.hpp>
#include <quartzflow/log.hpp>
#include <quartzflow/scheduler.hpp>
#include <quartzflow/task.hpp>

#include "../common/clock.hpp"
#include "../common/execution_id.hpp"
#include "../common/task_policies.hpp"

namespace quartzflow {

namespace asio = boost::asio;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

using detail::misfire_policy;
using detail::now_unix_ms;

std::int64_t to_ms(Instant t) { return t.time_since_epoch().count() * 1000; }

/// A planned fire in the heap; stale entries (older generation) are dropped when popped.
struct HeapEntry {
  Instant start_at;
  Instant scheduled;
  std::size_t slot;
  std::uint64_t generation;
  bool operator>(const HeapEntry& other) const { return start_at > other.start_at; }
};

}  // namespace

struct TaskSlotState {
  v1::Task task;
  std::optional<Schedule> schedule;  // coordinator-fired timed tasks only
  std::uint64_t generation = 0;
  std::optional<Instant> next;       // nominal time of the planned fire
  std::uint64_t runs = 0;
  bool removed = false;
};

/// One run to record and send: its record, and the agents to try in order.
struct PlannedRun {
  v1::Execution record;
  v1::RunRequest request;
  std::vector<std::string> agents;
  std::chrono::system_clock::time_point due{};  ///< when to send (recorded ahead of it)
  std::size_t slot = SIZE_MAX;                  ///< the task's slot (scheduled fires only)
};

/// A recorded run waiting for its instant.
struct StagedRun {
  std::chrono::system_clock::time_point due;
  std::shared_ptr<PlannedRun> run;
  bool operator>(const StagedRun& other) const { return due > other.due; }
};

struct Scheduler::Impl : std::enable_shared_from_this<Scheduler::Impl> {
  Impl(asio::any_io_executor ex, Store& s, AgentDirectory& a, RunSink& k, SchedulerOptions o)
      : executor(ex), store(s), directory(a), sink(k), options(o), timer(ex), send_timer(ex) {}

  asio::any_io_executor executor;
  Store& store;
  AgentDirectory& directory;
  RunSink& sink;
  SchedulerOptions options;
  asio::system_timer timer;       // wakes `record_ahead` before the next fire
  asio::system_timer send_timer;  // wakes when the next recorded run is due
  std::priority_queue<StagedRun, std::vector<StagedRun>, std::greater<>> staged;
  std::optional<std::chrono::system_clock::time_point> send_armed_for;
  Router router;
  std::vector<TaskSlotState> slots;
  std::map<std::string, std::size_t, std::less<>> index;
  std::priority_queue<HeapEntry, std::vector<HeapEntry>, std::greater<>> heap;
  std::optional<Instant> armed_for;
  SchedulerStats stats;
  bool started = false;
  bool stopped = false;
  SchedulerFence fence;
  std::uint64_t term = 0;  // +1 at every stop: completions of an earlier term do nothing
  std::int64_t last_manual_ms = 0;
  std::size_t unrecorded = 0;      // runs handed to the store, not committed yet
  bool waiting_for_store = false;  // on_timer returned early: unrecorded was at the bound
  std::set<std::shared_ptr<asio::steady_timer>> retry_timers;
  std::function<void(const v1::Execution&)> final_record_observer;

  /// Whether an upsert made `record` the run's final state (what observers hear of once).
  static bool became_final(const v1::Execution& record, UpsertResult result) {
    return is_final(record.status()) && (result == UpsertResult::inserted || result == UpsertResult::merged);
  }

  void tell_final(const std::vector<v1::Execution>& records) const {
    if (!final_record_observer) return;
    for (const auto& r : records) final_record_observer(r);
  }

  /// Stores final records the scheduler made (one transaction); observers hear of those
  /// the store took as final states once it committed. `what` names them in the log.
  void record_final(std::vector<v1::Execution> records, const char* what) {
    auto shared = std::make_shared<std::vector<v1::Execution>>(std::move(records));
    auto changed = std::make_shared<std::vector<v1::Execution>>();
    fenced_transact(
        [shared, changed](StoreTransaction& tx, error_code&) {
          changed->clear();
          for (const auto& r : *shared)
            if (became_final(r, tx.upsert_execution(r))) changed->push_back(r);
        },
        [weak = weak_from_this(), changed, what](error_code ec) {
          if (ec) return logger()->error("recording {} failed: {}", what, ec.message());
          if (auto self = weak.lock()) self->tell_final(*changed);
        });
  }

  // --- fencing ---------------------------------------------------------------------------

  /// A store transaction of this term's fires: checks the lease epoch first (a coordinator
  /// that lost its lease records nothing).
  void fenced_transact(Store::Work work, Store::Done done) {
    store.transact(
        [epoch = fence.epoch, work = std::move(work)](StoreTransaction& tx, error_code& ec) {
          if (epoch != 0) tx.check_fence(epoch);
          work(tx, ec);
        },
        std::move(done));
  }

  bool current(std::uint64_t of_term) const { return !stopped && of_term == term; }

  // --- planning --------------------------------------------------------------------------

  void plan_next(std::size_t slot_index, Instant after) {
    auto& slot = slots[slot_index];
    slot.next.reset();
    if (!slot.schedule || !slot.task.enabled() || slot.removed) return;
    ScheduleState state{after, after, slot.runs};
    if (auto fire = slot.schedule->next(after, state)) {
      slot.next = fire->scheduled;
      heap.push({fire->start_at, fire->scheduled, slot_index, slot.generation});
    }
  }

  void arm() {
    if (!started || stopped) return;
    while (!heap.empty() && (heap.top().generation != slots[heap.top().slot].generation)) heap.pop();
    if (heap.empty()) {
      timer.cancel();
      armed_for.reset();
      return;
    }
    const Instant due = heap.top().start_at;
    if (armed_for && *armed_for == due) return;
    armed_for = due;
    const auto wait = std::min<std::chrono::system_clock::duration>(
        due - options.record_ahead - std::chrono::system_clock::now(), options.max_timer_wait);
    timer.expires_after(std::max<std::chrono::system_clock::duration>(wait, seconds{0}));
    timer.async_wait([weak = weak_from_this()](const error_code& ec) {
      auto self = weak.lock();
      if (!self || ec) return;
      self->armed_for.reset();
      self->on_timer();
    });
  }

  void on_timer() {
    if (stopped) return;
    if (unrecorded >= options.max_unrecorded_runs) {
      // The store is behind: plan nothing more until it catches up (record_and_send resumes).
      if (!waiting_for_store) ++stats.store_waits;
      waiting_for_store = true;
      return;
    }
    const auto now_precise = std::chrono::system_clock::now();
    const Instant now = std::chrono::floor<seconds>(now_precise);
    std::vector<PlannedRun> planned;
    std::vector<std::pair<std::string, FireState>> fire_states;
    std::size_t handled = 0;
    const auto horizon = now_precise + options.record_ahead;
    while (!heap.empty() && heap.top().start_at <= horizon && handled < options.fires_per_turn &&
           unrecorded + planned.size() < options.max_unrecorded_runs) {
      const HeapEntry entry = heap.top();
      heap.pop();
      auto& slot = slots[entry.slot];
      if (entry.generation != slot.generation) continue;
      ++handled;
      if (now - entry.scheduled > options.misfire_threshold) {
        // Far behind (the process stalled): what is owed follows the misfire policy.
        misfire(entry.slot, entry.scheduled - seconds{1}, now, planned);
      } else {
        ++slot.runs;
        const auto first = planned.size();
        plan_fire(slot, entry.scheduled, v1::TRIGGER_TYPE_SCHEDULED, {}, "schedule", planned);
        for (auto i = first; i < planned.size(); ++i) {
          planned[i].due = entry.start_at;
          planned[i].slot = entry.slot;
        }
        plan_next(entry.slot, entry.scheduled);
      }
      fire_states.emplace_back(slot.task.id(), FireState{entry.scheduled, slot.next});
      if (planned.size() + fire_states.size() >= options.max_records_per_transaction) {
        // A fire's runs and its fire state stay in one transaction.
        record_and_send(std::exchange(planned, {}), std::exchange(fire_states, {}));
      }
    }
    stats.fires += handled;
    record_and_send(std::move(planned), std::move(fire_states));
    if (!heap.empty() && heap.top().start_at <= std::chrono::system_clock::now() + options.record_ahead) {
      asio::post(executor, [weak = weak_from_this()] {
        if (auto self = weak.lock()) self->on_timer();
      });
      return;
    }
    arm();
  }

  /// Fires owed since `last` (and `unclaimed` runs recorded before it, older than those)
  /// follow the task's misfire policy: the newest run, the others are MISSED.
  void misfire(std::size_t slot_index, Instant last, Instant now, std::vector<PlannedRun>& planned,
               std::vector<v1::Execution> unclaimed = {}) {
    auto& slot = slots[slot_index];
    const auto policy = misfire_policy(slot.task);
    const std::size_t limit = detail::misfire_fire_all_limit(slot.task, options.misfire_fire_all_limit);
    const auto plan = slot.schedule->misfires(last, now, policy, limit, 100'000);
    const std::size_t keep = runs_kept(slot.task);
    settle_unclaimed(slot, std::move(unclaimed), now, keep - std::min(keep, plan.run.size()), planned);
    for (const auto& fire : plan.missed) {
      PlannedRun run;
      run.record = base_record(slot.task, fire_id(slot.task.id(), fire.scheduled), fire.scheduled,
                               v1::TRIGGER_TYPE_SCHEDULED, "schedule");
      run.record.set_status(v1::EXECUTION_STATUS_MISSED);
      run.record.set_skip_reason(v1::SKIP_REASON_MISFIRE);
      run.record.set_skip_detail("owed while the coordinator was not firing; misfire policy");
      run.record.set_ended_unix_ms(now_unix_ms());
      planned.push_back(std::move(run));
    }
    for (const auto& fire : plan.run) {
      ++slot.runs;
      plan_fire(slot, fire.scheduled, v1::TRIGGER_TYPE_MISFIRE_CATCHUP, {}, "misfire policy", planned);
    }
    plan_next(slot_index, now);
  }

  static std::string fire_id(const std::string& task_id, Instant scheduled) {
    return detail::execution_id(task_id, to_ms(scheduled));
  }

  v1::Execution base_record(const v1::Task& task, std::string id, Instant scheduled, v1::TriggerType trigger,
                            const std::string& by) const {
    v1::Execution r;
    r.set_execution_id(std::move(id));
    r.set_task_id(task.id());
    r.set_task_name(task.name());
    r.set_trigger(trigger);
    r.set_scheduled_unix_ms(to_ms(scheduled));
    r.set_attempt(1);
    r.set_task_revision(task.revision());
    r.set_triggered_by(by);
    r.set_status(v1::EXECUTION_STATUS_PENDING);
    r.set_updated_unix_ms(now_unix_ms());
    return r;
  }

  static v1::RunRequest run_request(const v1::Task& task, const v1::Execution& record) {
    v1::RunRequest request;
    request.set_execution_id(record.execution_id());
    request.set_task_id(task.id());
    request.set_task_revision(task.revision());
    request.set_trigger(record.trigger());
    request.set_scheduled_unix_ms(record.scheduled_unix_ms());
    request.set_attempt(record.attempt());
    request.set_shard_index(record.shard_index());
    request.set_shard_total(record.shard_total());
    request.set_triggered_by(record.triggered_by());
    request.set_root_execution_id(record.root_execution_id());
    *request.mutable_params() = record.params();
    return request;  // the sink attaches the task's config when the agent does not hold it
  }

  /// The next attempt of a failed routed run, on another agent when there is one.
  void plan_retry(const v1::Execution& failed, bool avoid_agent) {
    auto it = index.find(failed.task_id());
    if (it == index.end() || slots[it->second].removed) return;
    const auto& task = slots[it->second].task;
    const std::string root = failed.root_execution_id().empty() ? failed.execution_id() : failed.root_execution_id();
    PlannedRun run;
    run.record = base_record(task, detail::retry_execution_id(root, failed.attempt() + 1),
                             Instant{seconds{failed.scheduled_unix_ms() / 1000}}, v1::TRIGGER_TYPE_RETRY, "retry");
    run.record.set_scheduled_unix_ms(failed.scheduled_unix_ms());
    run.record.set_attempt(failed.attempt() + 1);
    run.record.set_root_execution_id(root);
    run.record.set_shard_index(failed.shard_index());
    run.record.set_shard_total(failed.shard_total());
    *run.record.mutable_params() = failed.params();
    auto eligible = directory.eligible_agents(task);
    if (avoid_agent && eligible.size() > 1)
      std::erase_if(eligible, [&](const AgentLoad& a) { return a.agent_id == failed.agent_id(); });
    run.agents = router.route(task, std::move(eligible), task.placement().hash_key());
    if (run.agents.empty()) {
      run.record.set_status(v1::EXECUTION_STATUS_SKIPPED);
      run.record.set_skip_reason(v1::SKIP_REASON_NO_AGENT);
      run.record.set_skip_detail("no online agent in the task's groups for the retry");
      run.record.set_ended_unix_ms(now_unix_ms());
    } else {
      run.record.set_agent_id(run.agents.front());
    }
    run.request = run_request(task, run.record);
    std::vector<PlannedRun> planned;
    planned.push_back(std::move(run));
    record_and_send(std::move(planned), {});
  }

  /// The runs of one fire: one agent (`one`), the shards (`sharded`) or every agent (`all`).
  /// `chosen`: only these agents (in this order; each must be eligible), each with its own
  /// run (`sharded`: the shards are split over them).
  void plan_fire(const TaskSlotState& slot, Instant scheduled, v1::TriggerType trigger,
                 const std::map<std::string, std::string>& params, const std::string& by,
                 std::vector<PlannedRun>& planned, const std::vector<std::string>* chosen = nullptr) {
    const auto& task = slot.task;
    const std::string base_id = fire_id(task.id(), scheduled);
    // Declared defaults fill the params a fire does not set (scheduled fires set none).
    std::map<std::string, std::string> with_defaults;
    for (const auto& spec : task.params())
      if (!spec.default_value().empty() && !params.count(spec.name()))
        with_defaults.emplace(spec.name(), spec.default_value());
    if (!with_defaults.empty()) {
      with_defaults.insert(params.begin(), params.end());
      return plan_fire_with(slot, scheduled, trigger, with_defaults, by, planned, base_id, chosen);
    }
    plan_fire_with(slot, scheduled, trigger, params, by, planned, base_id, chosen);
  }

  void plan_fire_with(const TaskSlotState& slot, Instant scheduled, v1::TriggerType trigger,
                      const std::map<std::string, std::string>& params, const std::string& by,
                      std::vector<PlannedRun>& planned, const std::string& base_id,
                      const std::vector<std::string>* chosen = nullptr) {
    const auto& task = slot.task;
    auto eligible = directory.eligible_agents(task);
    if (chosen) {
      std::vector<AgentLoad> picked;
      for (const auto& id : *chosen) {
        auto it = std::find_if(eligible.begin(), eligible.end(), [&](const AgentLoad& a) { return a.agent_id == id; });
        if (it != eligible.end()) picked.push_back(*it);
      }
      eligible = std::move(picked);
    }
    auto make = [&](std::string id, std::vector<std::string> agents, std::uint32_t shard, std::uint32_t total) {
      PlannedRun run;
      run.record = base_record(task, id, scheduled, trigger, by);
      run.record.set_shard_index(shard);
      run.record.set_shard_total(total);
      for (const auto& [k, v] : params) (*run.record.mutable_params())[k] = v;
      if (agents.empty()) {
        run.record.set_status(v1::EXECUTION_STATUS_SKIPPED);
        run.record.set_skip_reason(v1::SKIP_REASON_NO_AGENT);
        run.record.set_skip_detail("no online agent in the task's groups");
        run.record.set_ended_unix_ms(now_unix_ms());
      } else {
        run.record.set_agent_id(agents.front());
      }
      run.request = run_request(task, run.record);
      run.agents = std::move(agents);
      planned.push_back(std::move(run));
    };
    switch (task.placement().mode()) {
      case v1::PLACEMENT_MODE_SHARDED: {
        std::vector<std::string> ids;
        for (const auto& a : eligible) ids.push_back(a.agent_id);
        const auto shards = assign_shards(task.placement().shard_count(), ids);
        if (shards.empty()) make(base_id, {}, 0, 0);
        for (const auto& s : shards)
          make(detail::shard_execution_id(base_id, s.index), shard_candidates(task, ids, s.agent_id), s.index, s.total);
        break;
      }
      case v1::PLACEMENT_MODE_ONE: {
        if (chosen) {  // the operator chose: each chosen agent runs it once
          if (eligible.empty()) make(base_id, {}, 0, 0);
          for (const auto& a : eligible) make(detail::execution_id(task.id(), to_ms(scheduled), a.agent_id), {a.agent_id}, 0, 0);
          break;
        }
        std::string key = task.placement().hash_key();
        if (auto it = params.find(key); it != params.end()) key = it->second;  // a param names the key
        make(base_id, router.route(task, std::move(eligible), key), 0, 0);
        break;
      }
      default:  // `all`: every eligible agent, each with its own id
        if (eligible.empty()) make(base_id, {}, 0, 0);
        for (const auto& a : eligible) make(detail::execution_id(task.id(), to_ms(scheduled), a.agent_id), {a.agent_id}, 0, 0);
        break;
    }
  }

  /// The agents to try for a shard: its own, then (unless `no_failover`) the other eligible
  /// agents after it in id order, so that the shards of a lost agent spread over the rest.
  static std::vector<std::string> shard_candidates(const v1::Task& task, std::vector<std::string> ids,
                                                   const std::string& own) {
    if (task.placement().no_failover()) return {own};
    std::sort(ids.begin(), ids.end());
    auto at = std::find(ids.begin(), ids.end(), own);
    if (at == ids.end()) return {own};
    std::rotate(ids.begin(), at, ids.end());
    return ids;
  }

  /// The agents to try for a recorded run, chosen again now (its first agent may be gone).
  std::vector<std::string> candidates_for(const v1::Task& task, const v1::Execution& record) {
    auto eligible = directory.eligible_agents(task);
    if (task.placement().mode() == v1::PLACEMENT_MODE_SHARDED) {
      std::vector<std::string> ids;
      for (const auto& a : eligible) ids.push_back(a.agent_id);
      for (const auto& s : assign_shards(record.shard_total(), ids))
        if (s.index == record.shard_index()) return shard_candidates(task, ids, s.agent_id);
      return {};
    }
    std::string key = task.placement().hash_key();
    if (auto it = record.params().find(key); it != record.params().end()) key = it->second;
    return router.route(task, std::move(eligible), key);
  }

  // --- runs a previous coordinator left unsent ---------------------------------------------

  bool is_online(const v1::Task& task, const std::string& agent_id) {
    for (const auto& a : directory.eligible_agents(task))
      if (a.agent_id == agent_id) return true;
    return false;
  }

  static bool scheduled_fire(const v1::Execution& r) {
    return r.trigger() == v1::TRIGGER_TYPE_SCHEDULED || r.trigger() == v1::TRIGGER_TYPE_MISFIRE_CATCHUP;
  }

  /// A run whose agent an operator chose (a trigger on chosen agents, a retry on the run's
  /// agent): it runs there or not at all.
  static bool pinned(const v1::Execution& r) {
    if (r.trigger() == v1::TRIGGER_TYPE_RETRY) return !r.retry_of_execution_id().empty();
    return r.trigger() == v1::TRIGGER_TYPE_MANUAL && !r.agent_id().empty() &&
           detail::execution_id_names_agent(r.execution_id(), r.agent_id());
  }

  /// How many of the newest owed fires the task's misfire policy runs.
  std::size_t runs_kept(const v1::Task& task) const {
    switch (misfire_policy(task)) {
      case MisfirePolicy::fire_all:
        return detail::misfire_fire_all_limit(task, options.misfire_fire_all_limit);
      case MisfirePolicy::fire_once: return 1;
      default: return 0;
    }
  }

  /**
   * Runs recorded PENDING by a previous coordinator that no agent claimed after the grace:
   * sent or not, nobody runs them. They are owed like any fire (their ids are kept):
   * - a fire whose instant has not come yet (recorded ahead of a stop) is sent at its instant;
   * - past fires follow the misfire policy with the fires owed since the last recorded one:
   *   `free_runs` instants of the newest may still run (all records of an instant, e.g. its
   *   shards, share one decision), the others are MISSED;
   * - manual triggers and retries run unless the policy is `skip` and they are late; one
   *   pinned to its agent runs there only;
   * - an `at_most_once` run that may have reached an agent that did not come back (its
   *   instant has passed, its agent is not online) ends FAILURE `agent lost`.
   */
  void settle_unclaimed(const TaskSlotState& slot, std::vector<v1::Execution> records, Instant now,
                        std::size_t free_runs, std::vector<PlannedRun>& planned) {
    const auto& task = slot.task;
    std::sort(records.begin(), records.end(),
              [](const auto& a, const auto& b) { return a.scheduled_unix_ms() > b.scheduled_unix_ms(); });
    const bool skip_late = misfire_policy(task) == MisfirePolicy::skip;
    const std::int64_t now_precise_ms = now_unix_ms();
    std::optional<std::int64_t> decided_instant;  // the past instant decided last, and whether it runs
    bool instant_runs = false;
    for (auto& record : records) {
      PlannedRun run;
      run.record = std::move(record);
      run.record.set_updated_unix_ms(now_unix_ms());
      auto end = [&](v1::ExecutionStatus status, v1::SkipReason reason, std::string detail) {
        run.record.set_status(status);
        run.record.set_skip_reason(reason);
        run.record.set_skip_detail(std::move(detail));
        run.record.set_ended_unix_ms(now_unix_ms());
      };
      const auto scheduled_ms = run.record.scheduled_unix_ms();
      const bool ahead = scheduled_fire(run.record) && scheduled_ms > now_precise_ms;  // certainly not sent
      const bool late = now - Instant{seconds{scheduled_ms / 1000}} > options.misfire_threshold;
      if (scheduled_fire(run.record) && !ahead && decided_instant != scheduled_ms) {
        decided_instant = scheduled_ms;
        instant_runs = free_runs > 0;
        if (instant_runs) --free_runs;
      }
      const std::string own_agent = run.record.agent_id();
      if (slot.removed || !task.enabled()) {
        end(v1::EXECUTION_STATUS_SKIPPED, v1::SKIP_REASON_TASK_DISABLED,
            "the task was disabled or deleted while the coordinator was down");
      } else if (!ahead && task.delivery_guarantee() == v1::DELIVERY_GUARANTEE_AT_MOST_ONCE &&
                 !is_online(task, own_agent)) {
        run.record.set_status(v1::EXECUTION_STATUS_FAILURE);
        run.record.set_failure_reason("agent lost");
        run.record.set_error_message(fmt::format(
            "the coordinator stopped after it may have sent this run to {}, which did not come back "
            "(delivery guarantee at_most_once: not re-routed)",
            own_agent));
        run.record.set_ended_unix_ms(now_unix_ms());
      } else if (scheduled_fire(run.record) ? !ahead && !instant_runs : (skip_late && late)) {
        end(v1::EXECUTION_STATUS_MISSED, v1::SKIP_REASON_MISFIRE,
            "owed while the coordinator was not firing; misfire policy");
      } else if (pinned(run.record) && !is_online(task, own_agent)) {
        end(v1::EXECUTION_STATUS_SKIPPED, v1::SKIP_REASON_NO_AGENT,
            fmt::format("its chosen agent {} was not online after the coordinator restarted", own_agent));
      } else {
        if (scheduled_fire(run.record) && !ahead) {
          run.record.set_trigger(v1::TRIGGER_TYPE_MISFIRE_CATCHUP);
          run.record.set_triggered_by("misfire policy");
        }
        if (ahead) run.due = std::chrono::system_clock::time_point{std::chrono::milliseconds{scheduled_ms}};
        run.agents = pinned(run.record) ? std::vector<std::string>{own_agent} : candidates_for(task, run.record);
        if (run.agents.empty()) {
          end(v1::EXECUTION_STATUS_SKIPPED, v1::SKIP_REASON_NO_AGENT, "no online agent in the task's groups");
        } else {
          run.record.set_agent_id(run.agents.front());
          run.request = run_request(task, run.record);
          run.slot = index.at(task.id());
        }
      }
      planned.push_back(std::move(run));
    }
  }

  // --- recording and sending -------------------------------------------------------------

  /// Records the runs (and fire states) in one transaction, then sends the PENDING ones.
  void record_and_send(std::vector<PlannedRun> planned, std::vector<std::pair<std::string, FireState>> fire_states,
                       std::function<void(error_code)> recorded = {}) {
    if (planned.empty() && fire_states.empty()) {
      if (recorded) asio::post(executor, [recorded] { recorded({}); });
      return;
    }
    auto runs = std::make_shared<std::vector<PlannedRun>>(std::move(planned));
    auto finals = std::make_shared<std::vector<v1::Execution>>();  // recorded as the runs' final states
    unrecorded += runs->size();
    stats.unrecorded_peak = std::max(stats.unrecorded_peak, unrecorded);
    fenced_transact(
        [runs, finals, fire_states = std::move(fire_states)](StoreTransaction& tx, error_code&) {
          finals->clear();
          for (const auto& run : *runs)
            if (became_final(run.record, tx.upsert_execution(run.record))) finals->push_back(run.record);
          for (const auto& [id, state] : fire_states) tx.put_fire_state(id, state);
        },
        [weak = weak_from_this(), runs, finals, recorded = std::move(recorded), of_term = term](error_code ec) {
          auto self = weak.lock();
          if (recorded) recorded(ec);
          if (!self) return;
          if (!ec) self->tell_final(*finals);  // committed: stored whatever this term became
          self->unrecorded -= runs->size();
          if (self->waiting_for_store && self->unrecorded < self->options.max_unrecorded_runs) {
            self->waiting_for_store = false;
            asio::post(self->executor, [weak] {
              if (auto again = weak.lock()) again->on_timer();
            });
          }
          if (ec) {
            logger()->error("recording {} fire(s) failed, they are not sent: {}", runs->size(), ec.message());
            return;
          }
          // Stopped or stepped down since: the recorded runs are owed to the next start.
          if (!self->current(of_term)) return;
          const auto now = std::chrono::system_clock::now();
          for (auto& run : *runs) {
            if (run.record.status() != v1::EXECUTION_STATUS_PENDING) {
              ++self->stats.not_dispatched;
              continue;
            }
            auto shared = std::make_shared<PlannedRun>(std::move(run));
            if (shared->due <= now) {
              self->send_due(std::move(shared));
            } else {
              self->staged.push(StagedRun{shared->due, std::move(shared)});
            }
          }
          self->arm_send();
        });
  }

  void arm_send() {
    if (staged.empty() || stopped) return;
    const auto due = staged.top().due;
    if (send_armed_for && *send_armed_for <= due) return;
    send_armed_for = due;
    send_timer.expires_at(due);
    send_timer.async_wait([weak = weak_from_this()](const error_code& ec) {
      auto self = weak.lock();
      if (!self || ec) return;
      self->send_armed_for.reset();
      const auto now = std::chrono::system_clock::now();
      while (!self->staged.empty() && self->staged.top().due <= now) {
        auto run = self->staged.top().run;
        self->staged.pop();
        self->send_due(std::move(run));
      }
      self->arm_send();
    });
  }

  /// Sends a recorded run at its instant, unless its task was removed or disabled since it
  /// was recorded (then it is recorded SKIPPED); it goes with the task's current config.
  void send_due(std::shared_ptr<PlannedRun> run) {
    if (run->slot < slots.size()) {
      const auto& slot = slots[run->slot];
      if (slot.removed || !slot.task.enabled()) {
        ++stats.not_dispatched;
        run->record.set_status(v1::EXECUTION_STATUS_SKIPPED);
        run->record.set_skip_reason(v1::SKIP_REASON_TASK_DISABLED);
        run->record.set_skip_detail("the task was disabled or deleted before this fire");
        run->record.set_ended_unix_ms(now_unix_ms());
        record_final({run->record}, "a fire of a disabled task as SKIPPED");
        return;
      }
      run->request.set_task_revision(slot.task.revision());  // it may have changed since
    }
    send(std::move(run), 0);
  }

  /// Sends to agents[attempt]; on refusal fails over to the next one.
  void send(std::shared_ptr<PlannedRun> run, std::size_t position) {
    if (stopped) return;  // the run stays PENDING: the next start (or leader) owes it
    if (fence.may_send && !fence.may_send()) {
      // Past the local lease deadline: another coordinator may lead now. Nothing is sent;
      // the run stays PENDING for the leader to come.
      logger()->warn("run {} not sent: the leader lease may have expired", run->record.execution_id());
      return;
    }
    run->request.set_leader_epoch(fence.epoch);
    if (position >= run->agents.size()) {
      ++stats.not_dispatched;
      run->record.set_status(v1::EXECUTION_STATUS_FAILURE);
      run->record.set_failure_reason("not dispatched");
      run->record.set_error_message(fmt::format("no agent accepted the run (tried: {})", fmt::join(run->agents, ", ")));
      run->record.set_ended_unix_ms(now_unix_ms());
      run->record.set_updated_unix_ms(now_unix_ms());
      record_final({run->record}, "a run no agent took as FAILURE");
      return;
    }
    const std::string agent = run->agents[position];
    sink.deliver_run(agent, run->request,
                     [weak = weak_from_this(), run, position, agent, of_term = term](RunDelivery outcome) {
                       auto self = weak.lock();
                       if (!self) return;
                       if (outcome == RunDelivery::accepted) {
                         ++self->stats.dispatched;
                         return;
                       }
                       if (outcome == RunDelivery::lost) {
                         // The agent may have started it: under at_most_once it is never sent elsewhere (the
                         // sink recorded it FAILURE `agent lost`).
                         ++self->stats.lost;
                         return;
                       }
                       if (!self->current(of_term)) return;  // stopped or stepped down: the next start owes it
                       ++self->stats.failovers;
                       if (position + 1 < run->agents.size()) {
                         // The record follows the run to its new agent before it is sent there.
                         run->record.set_agent_id(run->agents[position + 1]);
                         run->record.set_updated_unix_ms(now_unix_ms());
                         self->fenced_transact(
                             [record = run->record](StoreTransaction& tx, error_code&) { tx.upsert_execution(record); },
                             [weak, run, position, of_term](error_code ec) {
                               auto again = weak.lock();
                               if (again && !ec && again->current(of_term)) again->send(run, position + 1);
                             });
                         return;
                       }
                       self->send(run, position + 1);
                     });
  }
};

Scheduler::Scheduler(asio::any_io_executor executor, Store& store, AgentDirectory& agents, RunSink& sink,
                     SchedulerOptions options)
    : impl_(std::make_shared<Impl>(executor, store, agents, sink, options)) {}

Scheduler::~Scheduler() {
  impl_->stopped = true;
  impl_->timer.cancel();
  impl_->send_timer.cancel();
  for (const auto& t : impl_->retry_timers) t->cancel();
}

void Scheduler::upsert_task(const v1::Task& task) {
  auto& impl = *impl_;
  auto it = impl.index.find(task.id());
  std::size_t slot_index;
  if (it == impl.index.end()) {
    slot_index = impl.slots.size();
    impl.slots.emplace_back();
    impl.index.emplace(task.id(), slot_index);
  } else {
    slot_index = it->second;
  }
  auto& slot = impl.slots[slot_index];
  const bool same_schedule = slot.task.schedule().SerializeAsString() == task.schedule().SerializeAsString() &&
                             slot.task.enabled() == task.enabled() && !slot.removed;
  slot.task = task;
  slot.removed = false;
  slot.schedule.reset();
  const auto kind = task.schedule().kind_case();
  if (detail::coordinator_routed(task) && kind != v1::Schedule::kManual && kind != v1::Schedule::KIND_NOT_SET)
    slot.schedule = task_schedule(task);
  if (!impl.started) return;
  if (same_schedule && slot.next) return;  // the planned fire stands
  ++slot.generation;
  impl.plan_next(slot_index, std::chrono::floor<seconds>(std::chrono::system_clock::now()));
  impl.arm();
}

void Scheduler::remove_task(const std::string& task_id) {
  auto& impl = *impl_;
  auto it = impl.index.find(task_id);
  if (it == impl.index.end()) return;
  auto& slot = impl.slots[it->second];
  slot.removed = true;
  ++slot.generation;
  slot.next.reset();
}

void Scheduler::start(std::function<void()> ready) { start({}, std::move(ready)); }

void Scheduler::start(std::vector<v1::Execution> unclaimed_runs, std::function<void()> ready) {
  auto& impl = *impl_;
  if (impl.stopped) {
    // A new term after a stop (stop() moved the term on): nothing planned in the previous
    // one counts; the stored fire states decide. (Before the first start the term is the
    // one of the triggers accepted meanwhile: they are sent.)
    impl.stopped = false;
    impl.started = false;
    impl.heap = {};
    impl.staged = {};
    impl.armed_for.reset();
    impl.send_armed_for.reset();
    impl.waiting_for_store = false;
    for (auto& slot : impl.slots) {
      ++slot.generation;
      slot.next.reset();
    }
  }
  const auto of_term = impl.term;
  auto unclaimed = std::make_shared<std::vector<v1::Execution>>(std::move(unclaimed_runs));
  // Read every fire state in one transaction, then decide what is owed.
  auto states = std::make_shared<std::map<std::string, FireState>>();
  std::vector<std::string> ids;
  for (const auto& slot : impl.slots)
    if (slot.schedule) ids.push_back(slot.task.id());
  impl.store.read(
      [states, ids](StoreTransaction& tx, error_code&) {
        for (const auto& id : ids) (*states)[id] = tx.fire_state(id);
      },
      [weak = impl_->weak_from_this(), states, unclaimed, ready = std::move(ready), of_term](error_code ec) {
        auto self = weak.lock();
        if (!self || !self->current(of_term)) return;
        if (ec) logger()->error("reading fire states failed: {}", ec.message());
        self->started = true;
        const Instant now = std::chrono::floor<seconds>(std::chrono::system_clock::now());
        std::vector<PlannedRun> planned;
        std::vector<std::pair<std::string, FireState>> fire_states;
        std::map<std::string, std::vector<v1::Execution>, std::less<>> owed;
        for (auto& r : *unclaimed) owed[r.task_id()].push_back(std::move(r));
        for (std::size_t i = 0; i < self->slots.size(); ++i) {
          auto& slot = self->slots[i];
          std::vector<v1::Execution> mine;
          if (auto it = owed.find(slot.task.id()); it != owed.end()) mine = std::move(it->second);
          if (!slot.schedule || !slot.task.enabled() || slot.removed) {
            self->settle_unclaimed(slot, std::move(mine), now, self->runs_kept(slot.task), planned);
            continue;
          }
          const auto state = states->count(slot.task.id()) ? (*states)[slot.task.id()] : FireState{};
          if (state.last_fire && *state.last_fire < now) {
            self->misfire(i, *state.last_fire, now, planned, std::move(mine));
            fire_states.emplace_back(slot.task.id(), FireState{now, slot.next});
          } else {
            self->settle_unclaimed(slot, std::move(mine), now, self->runs_kept(slot.task), planned);
            self->plan_next(i, state.last_fire.value_or(now));
          }
        }
        self->record_and_send(std::move(planned), std::move(fire_states));
        self->arm();
        if (ready) ready();
      });
}

void Scheduler::trigger(const std::string& task_id, std::map<std::string, std::string> params,
                        std::string triggered_by, std::function<void(error_code, std::vector<std::string>)> done) {
  trigger(task_id, std::move(params), {}, std::move(triggered_by), std::move(done));
}

void Scheduler::trigger(const std::string& task_id, std::map<std::string, std::string> params,
                        std::vector<std::string> agent_ids, std::string triggered_by,
                        std::function<void(error_code, std::vector<std::string>)> done) {
  auto& impl = *impl_;
  auto it = impl.index.find(task_id);
  if (it == impl.index.end() || impl.slots[it->second].removed) {
    asio::post(impl.executor, [done] { done(make_error_code(errc::not_found), {}); });
    return;
  }
  // Manual ids use the accept time; two triggers in one millisecond still differ.
  impl.last_manual_ms = std::max(now_unix_ms(), impl.last_manual_ms + 1);
  std::vector<PlannedRun> planned;
  auto& slot = impl.slots[it->second];
  const Instant scheduled{seconds{impl.last_manual_ms / 1000}};
  impl.plan_fire(slot, scheduled, v1::TRIGGER_TYPE_MANUAL, params, triggered_by, planned,
                 agent_ids.empty() ? nullptr : &agent_ids);
  std::vector<std::string> ids;
  for (auto& run : planned) {
    // Manual ids carry the millisecond, so they never collide with the scheduled ones.
    const std::string suffix = run.record.execution_id().substr(Impl::fire_id(task_id, scheduled).size());
    run.record.set_execution_id(detail::execution_id(task_id, impl.last_manual_ms) + suffix);
    run.record.set_scheduled_unix_ms(impl.last_manual_ms);
    run.request.set_execution_id(run.record.execution_id());
    run.request.set_scheduled_unix_ms(impl.last_manual_ms);
    ids.push_back(run.record.execution_id());
  }
  impl.record_and_send(std::move(planned), {}, [done, ids](error_code ec) { done(ec, ec ? std::vector<std::string>{} : ids); });
}

void Scheduler::stop() {
  auto& impl = *impl_;
  if (impl.stopped) return;
  impl.stopped = true;
  ++impl.term;
  impl.timer.cancel();
  impl.send_timer.cancel();
  for (const auto& t : impl.retry_timers) t->cancel();
  // Fires recorded ahead of an instant this scheduler will not reach stay PENDING: the next
  // start sends them at their instant, or applies the misfire policy once it has passed
  // (Scheduler::start). Those of a task removed or disabled since are closed now.
  std::vector<v1::Execution> skipped;
  for (; !impl.staged.empty(); impl.staged.pop()) {
    const auto& run = *impl.staged.top().run;
    if (run.slot >= impl.slots.size()) continue;
    const auto& slot = impl.slots[run.slot];
    if (!slot.removed && slot.task.enabled()) continue;
    auto record = run.record;
    record.set_status(v1::EXECUTION_STATUS_SKIPPED);
    record.set_skip_reason(v1::SKIP_REASON_TASK_DISABLED);
    record.set_skip_detail("the task was disabled or deleted before this fire");
    record.set_ended_unix_ms(now_unix_ms());
    record.set_updated_unix_ms(now_unix_ms());
    skipped.push_back(std::move(record));
  }
  if (skipped.empty()) return;
  impl.record_final(std::move(skipped), "fires skipped at shutdown");
}

void Scheduler::retry(const v1::Execution& failed, bool avoid_agent, std::chrono::milliseconds delay) {
  auto& impl = *impl_;
  auto timer = std::make_shared<asio::steady_timer>(impl.executor, delay);
  impl.retry_timers.insert(timer);
  timer->async_wait([weak = impl_->weak_from_this(), timer, failed, avoid_agent](const error_code& ec) {
    auto self = weak.lock();
    if (!self) return;
    self->retry_timers.erase(timer);
    if (!ec && !self->stopped) self->plan_retry(failed, avoid_agent);
  });
}

void Scheduler::retry_on(const v1::Execution& failed, std::string agent_id, std::string triggered_by,
                         std::function<void(error_code, std::string)> done) {
  auto& impl = *impl_;
  auto it = impl.index.find(failed.task_id());
  if (it == impl.index.end() || impl.slots[it->second].removed) {
    asio::post(impl.executor, [done] { done(make_error_code(errc::not_found), {}); });
    return;
  }
  const auto& task = impl.slots[it->second].task;
  impl.last_manual_ms = std::max(now_unix_ms(), impl.last_manual_ms + 1);
  const std::string root = failed.root_execution_id().empty() ? failed.execution_id() : failed.root_execution_id();
  PlannedRun run;
  run.record = impl.base_record(task, detail::retry_execution_id(detail::execution_id(task.id(), impl.last_manual_ms), failed.attempt() + 1),
                                Instant{seconds{impl.last_manual_ms / 1000}}, v1::TRIGGER_TYPE_RETRY, triggered_by);
  run.record.set_scheduled_unix_ms(impl.last_manual_ms);
  run.record.set_attempt(failed.attempt() + 1);
  run.record.set_root_execution_id(root);
  run.record.set_retry_of_execution_id(failed.execution_id());
  run.record.set_shard_index(failed.shard_index());
  run.record.set_shard_total(failed.shard_total());
  *run.record.mutable_params() = failed.params();
  run.record.set_agent_id(agent_id);
  run.agents = {std::move(agent_id)};
  run.request = Impl::run_request(task, run.record);
  const std::string id = run.record.execution_id();
  std::vector<PlannedRun> planned;
  planned.push_back(std::move(run));
  impl.record_and_send(std::move(planned), {}, [done, id](error_code ec) { done(ec, ec ? std::string{} : id); });
}

void Scheduler::set_fence(SchedulerFence fence) { impl_->fence = std::move(fence); }

void Scheduler::set_final_record_observer(std::function<void(const v1::Execution&)> observer) {
  impl_->final_record_observer = std::move(observer);
}

bool Scheduler::running() const noexcept { return impl_->started && !impl_->stopped; }

std::optional<Instant> Scheduler::next_fire(const std::string& task_id) const {
  auto it = impl_->index.find(task_id);
  if (it == impl_->index.end()) return std::nullopt;
  return impl_->slots[it->second].next;
}

const SchedulerStats& Scheduler::stats() const noexcept { return impl_->stats; }

std::size_t Scheduler::scheduled_count() const noexcept {
  std::size_t n = 0;
  for (const auto& slot : impl_->slots) n += slot.next ? 1 : 0;
  return n;
}

}  // namespace quartzflow
