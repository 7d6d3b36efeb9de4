// SPDX-License-Identifier: Apache-2.0
// Scheduler: the coordinator's timer queue for coordinator-fired work (`one` and `sharded`
// placements, manual triggers). Every fire is recorded PENDING in the Store before it is
// sent to an agent; routing picks the agent and fails over when one refuses.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/any_io_executor.hpp>

#include <quartzflow/error.hpp>
#include <quartzflow/routing.hpp>
#include <quartzflow/store.hpp>
#include <quartzflow/v1/agent_protocol.pb.h>
#include <quartzflow/v1/task.pb.h>

namespace quartzflow {

/// Which agents may run a task now (online, in its groups), with their load.
class AgentDirectory {
 public:
  virtual ~AgentDirectory() = default;
  virtual std::vector<AgentLoad> eligible_agents(const v1::Task& task) = 0;
};

/// Sends runs to agents (the Dispatcher implements it over a transport).
class RunSink {
 public:
  virtual ~RunSink() = default;
  /// Delivers `run` to `agent_id`, attaching the task's config when the agent does not
  /// hold `run.task_revision()`; `done(true)` once the agent accepted it, `done(false)`
  /// when it refused or could not be reached (the Scheduler then fails over).
  virtual void send_run(const std::string& agent_id, const v1::RunRequest& run, std::function<void(bool)> done) = 0;
  /// As `send_run`, with the third outcome: `RunDelivery::lost` when the sink cannot know
  /// whether the agent started the run and the task's guarantee forbids re-routing it (the
  /// sink has then recorded the run's final state). The default maps `send_run`'s answer.
  virtual void deliver_run(const std::string& agent_id, const v1::RunRequest& run,
                           std::function<void(RunDelivery)> done) {
    send_run(agent_id, run, [done = std::move(done)](bool accepted) {
      done(accepted ? RunDelivery::accepted : RunDelivery::refused);
    });
  }
};

struct SchedulerOptions {
  /// Longest timer wait: the wall clock is re-read at least this often.
  std::chrono::seconds max_timer_wait{60};
  /// Fires handled per turn of the io_context (the rest continue in the next turn).
  std::size_t fires_per_turn = 20'000;
  /// Runs handed to the store and not committed yet beyond this: planning waits for the
  /// store, so its queue stays bounded; fires that become late follow the misfire policy.
  std::size_t max_unrecorded_runs = 100'000;
  /// Runs and fire states one store transaction records at most: a turn's fires go to the
  /// store in transactions this size, so that none holds the store's writer (and the lease
  /// renewal queued behind it) for long; on PostgreSQL each is a round trip.
  std::size_t max_records_per_transaction = 1'000;
  /// fire_all bound when the task sets none.
  std::size_t misfire_fire_all_limit = 100;
  /// Late by more than this: the fire counts as owed from downtime (misfire policy).
  std::chrono::seconds misfire_threshold{5};
  /// Fires are recorded PENDING up to this long before their instant, so that the store's
  /// commit latency does not delay the send (agents are chosen then too).
  std::chrono::milliseconds record_ahead{1'000};
};

/// Counters for benchmarks and metrics.
struct SchedulerStats {
  std::uint64_t fires = 0;          ///< nominal fires handled
  std::uint64_t store_waits = 0;    ///< turns that waited for the store (max_unrecorded_runs)
  std::size_t unrecorded_peak = 0;  ///< most runs handed to the store and not committed at once
  std::uint64_t dispatched = 0;     ///< runs accepted by an agent
  std::uint64_t failovers = 0;      ///< refusals that moved a run to the next agent
  std::uint64_t not_dispatched = 0; ///< runs no agent took (recorded SKIPPED or FAILURE)
  std::uint64_t lost = 0;           ///< at_most_once runs whose start could not be known (FAILURE `agent lost`)
};

/**
 * Leadership fencing, for a coordinator among several on one database: the lease epoch it
 * leads under and a check of its local lease deadline.
 */
struct SchedulerFence {
  /// Every transaction that records a fire calls StoreTransaction::check_fence(epoch) first
  /// (a lost lease records nothing), and every RunRequest carries it (`leader_epoch`: agents
  /// refuse a lower epoch than one they saw). 0 = not fenced.
  std::uint64_t epoch = 0;
  /// Asked before each send: false once the local lease deadline has passed (the run stays
  /// PENDING, owed to the next leader). Empty = always true.
  std::function<bool()> may_send;
};

/**
 * Thread safety: not thread-safe; use from its executor. Callbacks of the Store, the
 * directory and the sink must come back on that executor.
 *
 * Terms: `start` after `stop` begins a new term (a coordinator that leads again): the
 * timer queue is planned again from the stored fire states, and nothing of the previous
 * term (its store completions, its sends' answers) sends or records anything more.
 */
class Scheduler {
 public:
  Scheduler(boost::asio::any_io_executor executor, Store& store, AgentDirectory& agents, RunSink& sink,
            SchedulerOptions options = {});
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  /// Adds or replaces a task (validated by the Catalog). Only `one` and `sharded`
  /// placements are fired here; others are kept for manual triggers.
  void upsert_task(const v1::Task& task);
  void remove_task(const std::string& task_id);

  /// Loads each task's fire state, applies the misfire policy to what is owed since the
  /// last fire, then arms the timer queue.
  void start(std::function<void()> ready = {});
  /**
   * As `start`, with the routed runs a previous coordinator recorded PENDING that no agent
   * claimed: they are owed (same ids) and follow the misfire policy with the fires owed
   * since; an `at_most_once` run that may have reached an agent not online now ends
   * FAILURE `agent lost`.
   */
  void start(std::vector<v1::Execution> unclaimed, std::function<void()> ready);

  /// The fence of the next `start`'s term (and of every transaction made after this call).
  void set_fence(SchedulerFence fence);
  /// True between `start` and `stop`.
  bool running() const noexcept;

  /// Stops firing. Runs recorded ahead of an instant not reached yet stay PENDING and owed:
  /// the next start, given them as unclaimed, sends them at their instant (or applies the
  /// misfire policy once it has passed); those of a task removed or disabled are SKIPPED.
  void stop();

  /// Runs a task now with `params` (trigger MANUAL): one agent, the shards, or every
  /// eligible agent for `all`. `done` gets the execution ids (empty + ec when refused).
  void trigger(const std::string& task_id, std::map<std::string, std::string> params, std::string triggered_by,
               std::function<void(error_code, std::vector<std::string>)> done);
  /// The same on the chosen agents only (each must be eligible: online, of the task's
  /// groups, not draining; the caller checks): one run per agent, id `<task>:<ms>:<agent>`
  /// (`sharded`: the shards split over them). Empty `agent_ids`: the placement decides.
  void trigger(const std::string& task_id, std::map<std::string, std::string> params,
               std::vector<std::string> agent_ids, std::string triggered_by,
               std::function<void(error_code, std::vector<std::string>)> done);
  /**
   * Runs a finished execution again on `agent_id` now (an operator's retry): trigger RETRY,
   * attempt + 1, same params and shard, `root_execution_id` kept and `retry_of_execution_id`
   * naming `failed`; id `<task_id>:<accepted_ms>:r<attempt>`. `done` gets the new id once it
   * is recorded (errc::not_found when the task is gone).
   */
  void retry_on(const v1::Execution& failed, std::string agent_id, std::string triggered_by,
                std::function<void(error_code, std::string)> done);

  /**
   * After `delay`, runs the next attempt of a failed routed run: trigger RETRY, attempt + 1,
   * id `<root>:r<attempt>`, same scheduled instant, shard and params. With `avoid_agent`
   * another agent is preferred (the failed one is used only when it is the only one).
   */
  void retry(const v1::Execution& failed, bool avoid_agent, std::chrono::milliseconds delay);

  /**
   * Told of every final record the scheduler itself stores (MISSED and SKIPPED fires, FAILURE
   * `not dispatched`, FAILURE `agent lost` of an unclaimed `at_most_once` run), once, after
   * its commit, and only when the store took it as the run's final state (a run another path
   * ended first is not news). Records agents report reach the dispatcher's events instead.
   */
  void set_final_record_observer(std::function<void(const v1::Execution&)> observer);

  /// The next nominal fire of a task, if it is scheduled here.
  std::optional<Instant> next_fire(const std::string& task_id) const;
  const SchedulerStats& stats() const noexcept;
  std::size_t scheduled_count() const noexcept;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace quartzflow
