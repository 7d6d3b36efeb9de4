// SPDX-License-Identifier: Apache-2.0
// TaskEngine: local schedules, run policies and the record of every state change.
#include <algorithm>
#include <cmath>
#include <deque>
#include <list>
#include <map>

#include <signal.h>

#include <utility>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include <quartzflow/execution_status.hpp>
#include <quartzflow/log.hpp>
#include <quartzflow/task.hpp>
#include <quartzflow/task_engine.hpp>
#include <quartzflow/time.hpp>

#include "../common/clock.hpp"
#include "../common/execution_id.hpp"
#include "../common/task_policies.hpp"
#include "../common/utf8.hpp"
#include "../executors/process_environment.hpp"

namespace quartzflow {

// The HTTP executor is the quartzflow::http_executor component (Beast, OpenSSL): a weak
// reference, null unless that component is linked, so an engine from core alone has none.
[[gnu::weak, gnu::visibility("default")]] std::unique_ptr<Executor> make_http_executor(
    boost::asio::any_io_executor executor);

namespace asio = boost::asio;
using std::chrono::milliseconds;
using std::chrono::seconds;

namespace {

/// Room kept in the store's write queue for the final record of each run in progress.
constexpr std::size_t k_final_record_reserve = 1024;
/// SKIPPED records of held backlog fires written per 10 ms tick while the engine stops (at
/// most 100,000/s, above what the store's writer commits).
constexpr std::size_t k_backlog_skips_per_tick = 1000;
/// The same while new runs start: at most 10,000/s, and only while the store's queue is below
/// its low-water mark (`backlog_skip_low_water_bytes`), so that the records of live runs go
/// first and the held skips drain over the following minutes (bounded meanwhile by
/// `max_recorded_backlog_skips`, 32 bytes each).
constexpr std::size_t k_backlog_skips_per_tick_live = 100;

/// Fires later than this after their start time count as owed from downtime (misfires).
constexpr seconds k_misfire_threshold{5};

std::int64_t to_ms(Instant t) { return t.time_since_epoch().count() * 1000; }

using detail::now_unix_ms;

Instant now_instant() { return std::chrono::floor<seconds>(std::chrono::system_clock::now()); }

const char* misfire_name(MisfirePolicy policy) {
  switch (policy) {
    case MisfirePolicy::skip: return "skip";
    case MisfirePolicy::fire_once: return "fire_once";
    case MisfirePolicy::fire_all: return "fire_all";
  }
  return "fire_once";
}

}  // namespace

struct PendingRun {
  std::string execution_id;
  std::string task_id;
  Instant scheduled{};
  v1::TriggerType trigger = v1::TRIGGER_TYPE_SCHEDULED;
  std::map<std::string, std::string> params;
  std::uint32_t attempt = 1;
  std::string root_execution_id;
  // Coordinator-routed runs (RunRequest) only:
  std::uint32_t shard_index = 0;
  std::uint32_t shard_total = 0;
  std::string triggered_by;
  std::string upstream_execution_id;
  std::shared_ptr<const v1::Task> config;  ///< the config sent with the request, if any
  bool retry_here = true;                  ///< false: the coordinator retries elsewhere
};

struct ActiveRun {
  ActiveRun(PendingRun p, std::shared_ptr<const v1::Task> c) : pending(std::move(p)), shared_config(std::move(c)) {}
  const v1::Task& config() const { return *shared_config; }
  PendingRun pending;
  std::shared_ptr<const v1::Task> shared_config;  // the slot's, shared: a run copies no config
  // The RUNNING record and the timers are made by record_start: at once, or for a run started
  // in a burst, once the burst is over (the bodies of the instant start first).
  v1::Execution record;
  bool recorded = false;  // `record` is made and written
  // Its completion came during a burst: over for the policies (the slot's running count, overlap,
  // concurrency), its final record waits for the burst's end.
  bool finished = false;
  std::unique_ptr<RunningTask> handle;
  std::optional<asio::steady_timer> timeout_timer;
  std::optional<asio::steady_timer> progress_timer;
  std::chrono::steady_clock::time_point started_steady;
  std::int64_t started_unix_ms = 0;
  std::string cancelled_by;
  std::string cancel_reason;
};

struct TaskSlot {
  const v1::Task& config() const { return *shared_config; }
  std::shared_ptr<const v1::Task> shared_config;  // shared with the runs that started from it
  std::optional<Schedule> schedule;  // set for locally fired tasks with a timed schedule
  // The slot's entry in the engine's instants (see Impl::instants): an entry whose serial is
  // not the slot's current one is stale (the slot was re-armed or disarmed since).
  std::uint64_t arm_serial = 0;
  bool armed = false;  // an entry with the current serial waits in the instants
  std::optional<Instant> cursor;     // the last nominal fire handled
  std::optional<Fire> next_fire;
  // A list, not a deque: an empty std::deque allocates ~600 bytes, and most tasks never queue.
  std::list<PendingRun> queue;
  std::size_t running = 0;
  std::uint64_t runs = 0;
  std::uint64_t generation = 0;
  bool clock_behind_warned = false;  // the wall clock stepped back behind `cursor`: said once
};

/// A slot waiting for an instant: fired when the instant comes, unless stale (see arm_serial).
struct ArmedSlot {
  std::string task_id;
  std::uint64_t generation = 0;
  std::uint64_t arm_serial = 0;
};

/// How many due slots one handler turn fires before it lets the bodies it started run.
constexpr std::size_t k_fires_per_turn = 8;

/// A final record whose commit failed: written again until it commits, reported only then.
struct UncommittedRecord {
  v1::Execution record;
  std::string full_log;
};

/// A fire that came due while the store could not commit: recorded SKIPPED afterwards.
struct HeldFire {
  PendingRun pending;
  std::shared_ptr<const v1::Task> config;
};

struct TaskEngine::Impl : std::enable_shared_from_this<TaskEngine::Impl> {
  Impl(asio::any_io_executor ex, LocalStore& s, TaskEngineOptions o)
      : executor(ex), store(s), options(std::move(o)), plugin_executor(std::make_shared<PluginExecutor>(ex)),
        instant_timer(ex), probe_timer(ex), backlog_timer(ex) {
    executors[v1::Task::kShell] = make_shell_executor(ex, options.default_kill_grace);
    if (&make_http_executor != nullptr) executors[v1::Task::kHttp] = make_http_executor(ex);
  }

  asio::any_io_executor executor;
  LocalStore& store;
  TaskEngineOptions options;
  ExecutionSink sink;
  OutputSink output_sink;  // live output of running executions (set_output_sink)
  std::shared_ptr<PluginExecutor> plugin_executor;
  std::map<v1::Task::ExecutorCase, std::unique_ptr<Executor>> executors;
  std::map<std::string, std::unique_ptr<TaskSlot>, std::less<>> tasks;
  std::map<std::string, std::string, std::less<>> task_ids_by_name;  // names are unique
  // Timers grouped per instant: one timer for the engine, and the slots due at each instant
  // (1,000 tasks due at the same second were 1,000 timers expiring together). Keyed by the
  // wall clock; the steady timer's wait is computed from the wall clock at each arm and
  // capped by max_timer_wait, so a wall clock stepped back cannot hold it.
  std::map<std::chrono::system_clock::time_point, std::vector<ArmedSlot>> instants;
  asio::steady_timer instant_timer;
  std::optional<std::chrono::system_clock::time_point> instant_timer_for;  // what it waits for
  std::size_t stale_instant_entries = 0;  // entries of slots re-armed or disarmed since: compacted
  std::optional<Instant> latest_fire;     // the latest instant fired: a wall clock behind it stepped back
  bool clock_behind_warned = false;
  // While the slots due at an instant are fired ("a burst"), bodies start first: the RUNNING
  // records and the completions of runs that ended meanwhile wait until the burst is over,
  // so that the last task of the instant does not wait for the bookkeeping of all the others.
  std::size_t bursts_in_progress = 0;
  std::vector<std::shared_ptr<ActiveRun>> burst_started;
  std::vector<std::pair<std::shared_ptr<ActiveRun>, RunOutcome>> burst_finished;
  /// A slot fired in a burst: after it, the fires it owes since (a stall) follow, then it is
  /// armed for its next fire.
  struct FiredSlot {
    ArmedSlot armed;
    Instant fired_at{};           // the wall clock's second when it fired: later fires wait for the timer
    bool previous_taken = false;  // its fire started or queued: an owed fire after it waits for it
  };
  std::vector<FiredSlot> burst_rearm;

  /// The slot's entry (if any) becomes stale: it will not fire.
  void disarm(TaskSlot& slot) {
    ++slot.arm_serial;
    if (!slot.armed) return;
    slot.armed = false;
    // Stale entries are dropped when their instant comes, or all at once when they outnumber
    // the tasks (a full apply re-arms every task): amortized O(1) per re-arm.
    if (++stale_instant_entries > 1024 && stale_instant_entries > tasks.size()) compact_instants();
  }

  void compact_instants() {
    for (auto it = instants.begin(); it != instants.end();) {
      std::erase_if(it->second, [&](const ArmedSlot& armed) {
        auto slot = tasks.find(armed.task_id);
        return slot == tasks.end() || slot->second->arm_serial != armed.arm_serial;
      });
      it = it->second.empty() ? instants.erase(it) : std::next(it);
    }
    stale_instant_entries = 0;
  }
  TaskEngineConfigStats config_stats;
  std::map<std::string, std::shared_ptr<ActiveRun>, std::less<>> runs;
  std::map<std::string, std::pair<std::shared_ptr<asio::steady_timer>, PendingRun>, std::less<>> retries;
  std::uint64_t version = 0;
  std::int64_t last_manual_ms = 0;
  /// Started without any configuration (a connected agent's first start): the agent-start
  /// tasks run when the first configuration arrives instead of at `start`.
  bool agent_start_pending = false;
  std::size_t pending_writes = 0;
  bool started = false;
  bool stopping = false;
  std::function<void()> stopped_handler;
  std::unique_ptr<asio::steady_timer> grace_timer;
  // Store outages (see StoreHealth).
  StoreHealth health;
  StoreHealthHandler health_handler;
  std::map<std::string, UncommittedRecord, std::less<>> uncommitted;  // by execution id
  std::vector<HeldFire> held_fires;
  asio::steady_timer probe_timer;
  bool probe_in_flight = false;
  bool outage_is_full_queue = false;  // the outage began with a record the full write queue refused
  // Back-pressure from the store's bounded write queue (see StoreHealth::backlogged).
  std::deque<PendingRun> backlog_fires;  // not started; recorded SKIPPED once the writer catches up
  /// The same for plain scheduled fires, held as what their record needs: an overload of
  /// minutes holds a million of them (32 bytes each, not a PendingRun's ~300).
  struct HeldScheduledFire {
    std::shared_ptr<const v1::Task> config;  // the slot's when it fired
    Instant scheduled{};
    v1::TriggerType trigger = v1::TRIGGER_TYPE_SCHEDULED;
  };
  std::deque<HeldScheduledFire> backlog_scheduled_fires;
  asio::steady_timer backlog_timer;
  std::int64_t backlog_since_ms = 0;
  /// Some slot's queued fire could not start for the backlog: the backlog timer looks at
  /// every slot only then (20,000 slots every 10 ms cost the io thread about a tenth of a core).
  bool queued_waiting_for_store = false;

  // --- records -------------------------------------------------------------------------

  v1::Execution base_record(const PendingRun& p, const v1::Task& config) const {
    v1::Execution r;
    r.set_execution_id(p.execution_id);
    r.set_task_id(p.task_id);
    r.set_task_name(config.name());
    r.set_agent_id(options.agent_id);
    r.set_agent_hostname(options.hostname);
    r.set_trigger(p.trigger);
    r.set_scheduled_unix_ms(to_ms(p.scheduled));
    r.set_attempt(p.attempt);
    r.set_task_revision(config.revision());
    if (p.attempt > 1) r.set_root_execution_id(p.root_execution_id);
    for (const auto& [k, v] : p.params) (*r.mutable_params())[k] = v;
    r.set_shard_index(p.shard_index);
    r.set_shard_total(p.shard_total);
    r.set_triggered_by(p.triggered_by);
    r.set_upstream_execution_id(p.upstream_execution_id);
    return r;
  }

  void emit(const v1::Execution& record) {
    if (!sink) return;
    try {
      sink(record);
    } catch (const std::exception& e) {
      logger()->error("execution sink threw: {}", e.what());
    }
  }

  /// Writes a record; final ones reach the sink once durable (a failed commit holds them
  /// for the next try), others at once.
  void write(v1::Execution record, std::string full_log = {}) {
    record.set_updated_unix_ms(now_unix_ms());
    if (!is_final(record.status())) {
      emit(record);
      write_state(record);
      return;
    }
    commit_final(std::move(record), std::move(full_log));
  }

  /// Stores a PENDING or RUNNING record without reporting it again.
  void write_state(const v1::Execution& record) {
    store.async_record(record, std::string{}, [weak = weak_from_this()](error_code ec) {
      if (!ec) return;
      auto self = weak.lock();
      if (!self) return logger()->error("recording a state change failed: {}", ec.message());
      self->on_commit_failed(ec);
    });
  }

  void commit_final(v1::Execution record, std::string full_log) {
    ++pending_writes;
    // The log is kept until the commit is known: a failed one is written again with it.
    // (Copied before the call: the handler's capture may be made before the arguments.)
    std::string log_to_store = full_log;
    store.async_record(record, std::move(log_to_store),
                       [weak = weak_from_this(), record, log = std::move(full_log)](error_code ec) mutable {
                         auto self = weak.lock();
                         if (!self) return;
                         --self->pending_writes;
                         self->on_final_written(std::move(record), std::move(log), ec);
                         self->maybe_finish_stop();
                       });
  }

  void on_final_written(v1::Execution record, std::string full_log, error_code ec) {
    std::string id = record.execution_id();
    if (!ec) {
      uncommitted.erase(id);
      emit(record);
      return;
    }
    if (ec != errc::store_failed && !queue_full(ec)) {
      // Refused alone (an invalid record): writing it again cannot help, reporting it would
      // report what the store does not hold.
      logger()->error("recording {} failed: {}", id, ec.message());
      uncommitted.erase(id);
      return;
    }
    uncommitted.insert_or_assign(std::move(id), UncommittedRecord{std::move(record), std::move(full_log)});
    on_commit_failed(ec);
  }

  // --- store outages -------------------------------------------------------------------

  /// The store refused a record because its write queue is at its bound.
  static bool queue_full(error_code ec) { return ec == boost::system::errc::resource_unavailable_try_again; }

  StoreHealth health_now() const {
    StoreHealth h = health;
    h.uncommitted_records = uncommitted.size();
    return h;
  }

  void notify_health() {
    if (!health_handler) return;
    try {
      health_handler(health_now());
    } catch (const std::exception& e) {
      logger()->error("store health handler threw: {}", e.what());
    }
  }

  std::string outage_reason() const {
    return fmt::format("local store {}: {}", health.disk_full ? "full" : "unavailable", health.error);
  }

  /// A commit failed: no new run starts until a probe commits (one loud line, not one per fire).
  void on_commit_failed(error_code ec) {
    ++health.failed_commits;
    if (!health.available) return;
    const auto error = store.last_write_error();
    health.available = false;
    outage_is_full_queue = queue_full(ec);
    health.disk_full = !queue_full(ec) && error && error->disk_full;
    health.error = queue_full(ec) ? fmt::format("write queue full ({} bytes waiting)", store.queued_bytes())
                                  : error ? error->message : ec.message();
    health.unavailable_since_unix_ms = now_unix_ms();
    health.fires_not_started = 0;
    ++health.outages;
    logger()->error("{}; no new runs start until the store can commit again (retried every {} ms); {} run(s) in "
                    "progress go on and their results are reported once committed",
                    outage_reason(), outage_is_full_queue ? 50 : options.store_probe_interval.count(), runs.size());
    // A full queue drains by itself within a second or so: probe soon.
    if (!stopping) arm_probe(queue_full(ec) ? milliseconds{50} : options.store_probe_interval);
    notify_health();
  }

  /// A fire that comes due during an outage: not started; counted, and recorded once the
  /// store can write again.
  void hold_fire(TaskSlot& slot, PendingRun p) {
    ++health.fires_not_started;
    ++health.fires_not_started_total;
    if (held_fires.size() >= options.max_recorded_store_skips) return;
    auto config = p.config ? p.config : slot.shared_config;
    held_fires.push_back({std::move(p), std::move(config)});
  }

  void arm_probe(milliseconds interval) {
    probe_timer.expires_after(interval);
    probe_timer.async_wait([weak = weak_from_this()](const error_code& ec) {
      if (auto self = weak.lock(); self && !ec) self->probe();
    });
  }

  /// Writes the held final records again and probes the store; when every write commits,
  /// the outage ends.
  void probe() {
    if (probe_in_flight) return;
    probe_in_flight = true;
    struct Round {
      std::size_t remaining = 0;
      bool failed = false;
    };
    auto round = std::make_shared<Round>();
    round->remaining = uncommitted.size() + 1;
    auto done = [weak = weak_from_this(), round](bool failed) {
      auto self = weak.lock();
      if (!self) return;
      round->failed = round->failed || failed;
      if (--round->remaining > 0) return;
      self->probe_in_flight = false;
      self->on_probe_done(!round->failed);
    };
    for (const auto& [id, held] : uncommitted) {
      ++pending_writes;
      store.async_record(held.record, held.full_log, [weak = weak_from_this(), id = id, done](error_code ec) {
        auto self = weak.lock();
        if (!self) return;
        --self->pending_writes;
        if (auto it = self->uncommitted.find(id);
            it != self->uncommitted.end() && ec != errc::store_failed && !queue_full(ec)) {
          auto held_record = std::move(it->second);
          self->uncommitted.erase(it);
          if (!ec) {
            self->emit(held_record.record);
          } else {
            logger()->error("recording {} failed: {}", id, ec.message());
          }
        }
        if (ec == errc::store_failed || queue_full(ec)) ++self->health.failed_commits;
        done(ec == errc::store_failed || queue_full(ec));
        self->maybe_finish_stop();
      });
    }
    ++pending_writes;
    store.async_probe([weak = weak_from_this(), done](error_code ec) {
      auto self = weak.lock();
      if (!self) return;
      --self->pending_writes;
      done(static_cast<bool>(ec));
      self->maybe_finish_stop();
    });
  }

  void on_probe_done(bool committed) {
    if (stopping) return;
    if (!committed) {
      if (!health.available) arm_probe(outage_is_full_queue ? milliseconds{50} : options.store_probe_interval);
      return;
    }
    if (!health.available) end_outage();
  }

  void end_outage() {
    const std::string reason = outage_reason();
    const auto lasted_s = (now_unix_ms() - health.unavailable_since_unix_ms) / 1000;
    const auto not_started = health.fires_not_started;
    auto fires = std::exchange(held_fires, {});
    health.available = true;
    health.disk_full = false;
    health.error.clear();
    health.unavailable_since_unix_ms = 0;
    health.fires_not_started = 0;
    logger()->warn("local store can commit again after {} s: new runs start again; {} fire(s) were not started "
                   "meanwhile ({} recorded SKIPPED)",
                   lasted_s, not_started, fires.size());
    if (not_started > fires.size())
      logger()->warn("{} further fires not started during the outage are not recorded one by one",
                     not_started - fires.size());
    for (auto& fire : fires)
      write_not_run(fire.pending, *fire.config, v1::EXECUTION_STATUS_SKIPPED, v1::SKIP_REASON_UNSPECIFIED,
                    reason + "; the fire was not started");
    // A RUNNING record written during the outage may be missing: a crash from here on must
    // still find the run and record it FAILURE. (A final record already stored wins.)
    for (auto& [id, run] : runs)
      if (run->recorded) write_state(run->record);  // (the others are written at their burst's end)
    for (auto& [id, slot] : tasks) start_queued(*slot);
    notify_health();
  }

  void write_not_run(const PendingRun& p, const v1::Task& config, v1::ExecutionStatus status,
                     v1::SkipReason reason, std::string detail) {
    auto r = base_record(p, config);
    r.set_status(status);
    r.set_skip_reason(reason);
    r.set_skip_detail(std::move(detail));
    r.set_ended_unix_ms(now_unix_ms());
    write(std::move(r));
  }

  // --- back-pressure: the store's write queue -------------------------------------------

  /// New runs start only while less than this is queued in the store: the rest of the bound
  /// is room for the records of runs in progress and of the fires held meanwhile.
  std::size_t backlog_start_bytes() const {
    const auto bound = store.options().max_queued_bytes;
    return bound == 0 ? SIZE_MAX : bound / 2;
  }

  /// Whether a fire must not start now because the store cannot record it in time. Each run
  /// in progress still owes its final record: room for it is counted as taken.
  bool store_backlogged() {
    if (store.queued_bytes() + runs.size() * k_final_record_reserve < backlog_start_bytes()) return false;
    if (!health.backlogged) begin_backlog();
    return true;
  }

  void begin_backlog() {
    health.backlogged = true;
    health.backlog_fires_not_started = 0;
    ++health.backlogs;
    backlog_since_ms = now_unix_ms();
    logger()->warn("local store: {} bytes of writes are waiting to commit and {} run(s) in progress owe a final "
                   "record (queue bound {} bytes): fires are not started until it catches up; they are recorded "
                   "SKIPPED then",
                   store.queued_bytes(), runs.size(), store.options().max_queued_bytes);
    arm_backlog_timer();
    notify_health();
  }

  /// A fire not started for the backlog: counted, and recorded SKIPPED once the writer has
  /// caught up (beyond `max_recorded_backlog_skips` held, counted and logged only).
  void hold_backlog_fire(PendingRun p, const TaskSlot& slot) {
    ++health.backlog_fires_not_started;
    ++health.backlog_fires_not_started_total;
    if (backlog_fires.size() + backlog_scheduled_fires.size() >= options.max_recorded_backlog_skips) {
      ++health.backlog_fires_not_recorded_total;
      return;
    }
    if (!p.config && slot.config().id() != p.task_id) return;  // cannot happen: the slot is the task's
    const bool plain_scheduled = (p.trigger == v1::TRIGGER_TYPE_SCHEDULED || p.trigger == v1::TRIGGER_TYPE_MISFIRE_CATCHUP) &&
                                 !p.config && p.attempt == 1 && p.shard_total == 0 && p.triggered_by.empty() &&
                                 p.upstream_execution_id.empty() && p.execution_id == p.root_execution_id;
    if (plain_scheduled) {
      backlog_scheduled_fires.push_back({slot.shared_config, p.scheduled, p.trigger});
      return;
    }
    backlog_fires.push_back(std::move(p));
  }

  void arm_backlog_timer() {
    backlog_timer.expires_after(milliseconds{10});
    backlog_timer.async_wait([weak = weak_from_this()](const error_code& ec) {
      if (auto self = weak.lock(); self && !ec) self->on_backlog_timer();
    });
  }

  /// While new runs start, held SKIPPED records are written only while less than this is
  /// queued (8 MiB of the default 64 MiB bound; 10,000 runs/s keep a few MB queued): when the
  /// writer falls behind, the live runs' records queue and the held ones wait.
  std::size_t backlog_skip_low_water_bytes() const { return backlog_start_bytes() / 4; }

  /// Writes the held fires' SKIPPED records while the queue has room, and ends the backlog
  /// once all are written and the queue is below a quarter of its bound. While new runs start
  /// they go first: a few held records per tick, only below the low-water mark. Once the
  /// engine stops, the rest are written as fast as the queue takes them (below a quarter).
  void on_backlog_timer() {
    const std::size_t resume_bytes =
        backlog_start_bytes() / 2 > runs.size() * k_final_record_reserve
            ? backlog_start_bytes() / 2 - runs.size() * k_final_record_reserve
            : 0;
    const std::size_t skip_bytes = stopping ? resume_bytes : std::min(resume_bytes, backlog_skip_low_water_bytes());
    const std::size_t per_tick = stopping ? k_backlog_skips_per_tick : k_backlog_skips_per_tick_live;
    const std::string detail = "local store backlog: the fire was not started because its records could not be "
                               "written in time";
    // A bounded share per tick: a million held fires written in one handler turn stalled the
    // io thread for hundreds of ms (start skew p99 0.1-0.6 s after a 60 s overload).
    std::size_t written = 0;
    while (!backlog_fires.empty() && store.queued_bytes() < skip_bytes && written++ < per_tick) {
      PendingRun p = std::move(backlog_fires.front());
      backlog_fires.pop_front();
      const v1::Task* config = p.config.get();
      v1::Task bare;
      if (!config) {
        if (auto it = tasks.find(p.task_id); it != tasks.end()) {
          config = &it->second->config();
        } else {
          bare.set_id(p.task_id);
          config = &bare;
        }
      }
      write_not_run(p, *config, v1::EXECUTION_STATUS_SKIPPED, v1::SKIP_REASON_UNSPECIFIED, detail);
    }
    while (backlog_fires.empty() && !backlog_scheduled_fires.empty() && store.queued_bytes() < skip_bytes &&
           written++ < per_tick) {
      const auto fire = std::move(backlog_scheduled_fires.front());
      backlog_scheduled_fires.pop_front();
      write_not_run(scheduled_fire(*fire.config, fire.scheduled, fire.trigger), *fire.config,
                    v1::EXECUTION_STATUS_SKIPPED, v1::SKIP_REASON_UNSPECIFIED, detail);
    }
    if (!stopping && std::exchange(queued_waiting_for_store, false))
      for (auto& [id, slot] : tasks) start_queued(*slot);
    if (!backlog_fires.empty() || !backlog_scheduled_fires.empty() || store.queued_bytes() >= resume_bytes ||
        resume_bytes == 0)
      return arm_backlog_timer();
    health.backlogged = false;
    logger()->warn(
        "local store caught up after {} ms: {} fire(s) were not started meanwhile ({} in all; {} of "
        "those only counted, beyond max_recorded_backlog_skips)",
        now_unix_ms() - backlog_since_ms, health.backlog_fires_not_started, health.backlog_fires_not_started_total,
        health.backlog_fires_not_recorded_total);
    notify_health();
    maybe_finish_stop();
  }

  // --- configuration -------------------------------------------------------------------

  /// A slot for a validated task; it takes over the state of the slot it replaces (cursor,
  /// runs in progress, queued fires), whose timer is cancelled.
  std::unique_ptr<TaskSlot> build_slot(v1::Task task) {
    ++config_stats.slots_built;
    auto slot = std::make_unique<TaskSlot>();
    if (auto old = tasks.find(task.id()); old != tasks.end()) {
      TaskSlot& previous = *old->second;
      disarm(previous);
      const bool same_schedule = previous.config().schedule().SerializeAsString() == task.schedule().SerializeAsString();
      slot->cursor = previous.cursor;
      slot->runs = same_schedule ? previous.runs : 0;
      slot->running = previous.running;
      slot->queue = std::move(previous.queue);
      slot->generation = previous.generation + 1;
      slot->arm_serial = previous.arm_serial;  // the old slot's entries (older serials) stay stale
    }
    if (detail::agent_fired(task) && task.schedule().kind_case() != v1::Schedule::kManual &&
        task.schedule().kind_case() != v1::Schedule::kAgentStart &&
        task.schedule().kind_case() != v1::Schedule::KIND_NOT_SET)
      slot->schedule = task_schedule(task);
    slot->shared_config = std::make_shared<const v1::Task>(std::move(task));
    return slot;
  }

  /// A task no longer held: its timer stops and its queued fires are CANCELLED.
  void retire_slot(TaskSlot& old) {
    disarm(old);
    for (auto& p : old.queue) write_cancelled(p, old.config(), "task removal");
    old.queue.clear();
  }

  /// After a (re)build: arms the timer and starts what may start.
  void settle_slot(TaskSlot& slot) {
    if (!slot.config().enabled()) {
      for (auto& p : slot.queue)
        write_not_run(p, slot.config(), v1::EXECUTION_STATUS_SKIPPED, v1::SKIP_REASON_TASK_DISABLED,
                      "the task was disabled while this run waited");
      slot.queue.clear();
    }
    arm(slot);
    start_queued(slot);
  }

  // --- schedules -----------------------------------------------------------------------

  std::string execution_id(const std::string& task_id, Instant scheduled) const {
    return detail::execution_id(task_id, to_ms(scheduled), options.agent_id);
  }

  void arm(TaskSlot& slot) {
    if (!started || stopping || !slot.schedule || !slot.config().enabled()) return;
    const Instant now = now_instant();
    if (!slot.next_fire) {
      ScheduleState state{slot.cursor, slot.cursor, slot.runs};
      slot.next_fire = slot.schedule->next(slot.cursor.value_or(now), state);
      if (!slot.next_fire) return;  // the schedule has ended
    }
    // A wall clock stepped back behind the last fire handled: the next fire stays after
    // that one (no instant runs twice, execution ids stay unique), so the task waits until
    // the clock catches up. Said once, loudly, rather than a silent pause.
    if (slot.cursor && *slot.cursor > now + k_misfire_threshold) {
      if (!slot.clock_behind_warned)
        logger()->warn("task {}: the wall clock is {} s behind its last fire ({}; a clock step back?): it waits "
                       "for its next fire at {} so that no instant runs twice",
                       slot.config().id(), (*slot.cursor - now).count(), format_rfc3339(*slot.cursor),
                       format_rfc3339(slot.next_fire->scheduled));
      slot.clock_behind_warned = true;
    } else {
      slot.clock_behind_warned = false;
    }
    disarm(slot);
    instants[slot.next_fire->start_at].push_back(ArmedSlot{slot.config().id(), slot.generation, slot.arm_serial});
    slot.armed = true;
    arm_instant_timer();
  }

  /// Sets the engine's one timer for the earliest instant, unless it already waits for it.
  void arm_instant_timer() {
    if (stopping || instants.empty()) return;
    const auto first = instants.begin()->first;
    if (instant_timer_for && *instant_timer_for <= first) return;
    instant_timer_for = first;
    // Measured against the precise clock, not the whole second, so fires start on the second.
    const auto wait = std::min<std::chrono::system_clock::duration>(first - std::chrono::system_clock::now(),
                                                                    options.max_timer_wait);
    instant_timer.expires_after(std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::max<std::chrono::system_clock::duration>(wait, seconds{0})));
    instant_timer.async_wait([weak = weak_from_this()](const error_code& ec) {
      auto self = weak.lock();
      if (!self || ec) return;
      self->on_instant_timer();
    });
  }

  void on_instant_timer() {
    instant_timer_for.reset();
    if (stopping) return;
    warn_if_clock_behind();
    auto due = std::make_shared<std::vector<ArmedSlot>>();
    const auto now = std::chrono::system_clock::now();
    // The slots are looked up (and their entries checked) as they fire, in fire_due: a lookup
    // of every due slot here would delay the instant's first body by all of them.
    while (!instants.empty() && instants.begin()->first <= now) {
      auto& slots = instants.begin()->second;
      if (due->empty()) {
        *due = std::move(slots);
      } else {
        due->insert(due->end(), std::make_move_iterator(slots.begin()), std::make_move_iterator(slots.end()));
      }
      instants.erase(instants.begin());
    }
    if (!due->empty()) {
      ++bursts_in_progress;
      fire_due(std::move(due), 0);
    }
    arm_instant_timer();  // a capped wait, or the next instant
  }

  /// A wall clock stepped back behind the last fire handled: the fires wait until the clock
  /// catches up (no instant runs twice, execution ids stay unique). Said once, loudly, at
  /// the first timer wake after the step, rather than a silent pause.
  void warn_if_clock_behind() {
    const Instant now = now_instant();
    const bool behind = latest_fire && *latest_fire > now + k_misfire_threshold;
    if (behind && !clock_behind_warned)
      logger()->warn("the wall clock is {} s behind its last fire ({}; a clock step back?): tasks wait for their "
                     "next fires so that no instant runs twice",
                     (*latest_fire - now).count(), format_rfc3339(*latest_fire));
    clock_behind_warned = behind;
  }

  /// The records and completions a burst held back, in order: RUNNING before any final.
  void end_burst() {
    if (bursts_in_progress > 0) --bursts_in_progress;
    auto started_runs = std::exchange(burst_started, {});
    auto finished_runs = std::exchange(burst_finished, {});
    auto rearm = std::exchange(burst_rearm, {});
    for (auto& run : started_runs) record_start(run);
    for (auto& [run, outcome] : finished_runs) on_done(run->pending.execution_id, std::move(outcome));
    for (const auto& fired : rearm) {
      auto it = tasks.find(fired.armed.task_id);
      // Not rebuilt or disarmed since it fired (a rebuilt slot armed itself).
      if (it != tasks.end() && it->second->generation == fired.armed.generation &&
          it->second->arm_serial == fired.armed.arm_serial && !it->second->armed) {
        fire_owed(*it->second, fired.fired_at, fired.previous_taken);
        arm(*it->second);
      }
    }
  }

  /// Fires the due slots a few per handler turn: the bodies started (plugin calls are posted)
  /// run between the turns instead of after every other fire of the instant.
  void fire_due(std::shared_ptr<std::vector<ArmedSlot>> due, std::size_t from) {
    const std::size_t end = std::min(due->size(), from + k_fires_per_turn);
    for (std::size_t i = from; i < end && !stopping; ++i) {
      const ArmedSlot& armed = (*due)[i];
      auto it = tasks.find(armed.task_id);
      if (it == tasks.end() || it->second->arm_serial != armed.arm_serial) continue;  // stale
      it->second->armed = false;  // taken out: no longer counted as stale when re-armed
      on_timer(*it->second, armed.generation);
    }
    if (end < due->size() && !stopping) {
      asio::post(executor, [weak = weak_from_this(), due = std::move(due), end]() mutable {
        if (auto self = weak.lock()) self->fire_due(std::move(due), end);
      });
      return;
    }
    // After the bodies this turn posted.
    asio::post(executor, [weak = weak_from_this()] {
      if (auto self = weak.lock()) self->end_burst();
    });
  }

  void on_timer(TaskSlot& slot, std::uint64_t generation) {
    if (stopping || slot.generation != generation || !slot.next_fire) return;
    const Instant now = now_instant();
    if (slot.next_fire->start_at > now) return arm(slot);  // a capped wait: not due yet
    if (now - slot.next_fire->start_at <= k_misfire_threshold) {
      // The usual case: the fire starts now. Whether the agent stalled and owes the fires after
      // it (computing them) waits until the instant's bodies have started (see fire_owed).
      const Instant scheduled = slot.next_fire->scheduled;
      slot.next_fire.reset();
      const bool taken = fire_scheduled(slot, scheduled, v1::TRIGGER_TYPE_SCHEDULED);
      slot.cursor = scheduled;
      latest_fire = std::max(latest_fire.value_or(scheduled), scheduled);
      if (bursts_in_progress > 0) {
        burst_rearm.push_back(FiredSlot{ArmedSlot{slot.config().id(), generation, slot.arm_serial}, now, taken});
      } else {
        fire_owed(slot, now, taken);
        arm(slot);
      }
      return;
    }

    // Collect every fire that is due; more than one means the agent stalled or slept.
    std::vector<Fire> owed{*slot.next_fire};
    std::optional<Fire> following;  // the first fire not yet due, when found
    while (owed.size() < 10000) {
      ScheduleState state{owed.back().scheduled, owed.back().scheduled, slot.runs + owed.size()};
      auto next = slot.schedule->next(owed.back().scheduled, state);
      if (!next) break;
      if (next->start_at > now) {
        following = next;
        break;
      }
      owed.push_back(*next);
    }
    slot.next_fire.reset();
    if (owed.size() == 1 || now - owed.front().start_at <= k_misfire_threshold) {
      // Owed fires of one stall form a chain: each waits for the one before it (see dispatch).
      bool previous_taken = false;
      for (const auto& fire : owed)
        previous_taken = fire_scheduled(slot, fire.scheduled, v1::TRIGGER_TYPE_SCHEDULED, previous_taken);
      slot.cursor = owed.back().scheduled;
      latest_fire = std::max(latest_fire.value_or(*slot.cursor), *slot.cursor);
      // What arm() would compute from this cursor and run count (the schedule is a pure
      // function of them): kept, not computed again.
      slot.next_fire = following;
    } else {
      apply_misfires(slot, owed.front().scheduled - seconds{1}, now, "the agent was not running them on time");
    }
    // The slot is armed for its next fire once the instant's bodies have started (see end_burst).
    if (bursts_in_progress > 0) {
      burst_rearm.push_back(FiredSlot{ArmedSlot{slot.config().id(), generation, slot.arm_serial}, now, false});
    } else {
      arm(slot);
    }
  }

  /// After a fire at `fired_at` (within the misfire threshold of its instant): the fires due by
  /// then that came after it (the agent stalled or slept) form a chain, each waiting for the one
  /// before it (see dispatch); the first fire not due then is kept as the slot's next.
  void fire_owed(TaskSlot& slot, Instant fired_at, bool previous_taken) {
    if (!slot.schedule || !slot.cursor || slot.next_fire) return;
    for (std::size_t owed = 0; owed < 10000; ++owed) {
      ScheduleState state{slot.cursor, slot.cursor, slot.runs};
      auto next = slot.schedule->next(*slot.cursor, state);
      if (!next) return;
      if (next->start_at > fired_at) {
        // What arm() would compute from this cursor and run count (the schedule is a pure
        // function of them): kept, not computed again.
        slot.next_fire = next;
        return;
      }
      previous_taken = fire_scheduled(slot, next->scheduled, v1::TRIGGER_TYPE_SCHEDULED, previous_taken);
      slot.cursor = next->scheduled;
      latest_fire = std::max(latest_fire.value_or(next->scheduled), next->scheduled);
    }
  }

  void apply_misfires(TaskSlot& slot, Instant last, Instant now, const char* why) {
    const auto policy = detail::misfire_policy(slot.config());
    const std::size_t limit = detail::misfire_fire_all_limit(slot.config(), options.misfire_fire_all_limit);
    const auto plan = slot.schedule->misfires(last, now, policy, limit, 100'000);
    for (const auto& fire : plan.missed) {
      PendingRun p;
      p.execution_id = execution_id(slot.config().id(), fire.scheduled);
      p.task_id = slot.config().id();
      p.scheduled = fire.scheduled;
      write_not_run(p, slot.config(), v1::EXECUTION_STATUS_MISSED, v1::SKIP_REASON_MISFIRE,
                    fmt::format("owed while {}; misfire policy {}", why, misfire_name(policy)));
    }
    if (plan.missed_total > plan.missed.size())
      logger()->warn("task {}: {}{} further missed fires are not listed one by one", slot.config().id(),
                     plan.missed_total_capped ? "at least " : "", plan.missed_total - plan.missed.size());
    bool previous_taken = false;
    for (const auto& fire : plan.run)
      previous_taken = fire_scheduled(slot, fire.scheduled, v1::TRIGGER_TYPE_MISFIRE_CATCHUP, previous_taken);
    slot.cursor = now;
    latest_fire = std::max(latest_fire.value_or(now), now);
  }

  /// Fires one instant; true when the run started or waits in the queue. `behind_previous`:
  /// the fire before it in the same catch-up was started or queued.
  bool fire_scheduled(TaskSlot& slot, Instant scheduled, v1::TriggerType trigger, bool behind_previous = false) {
    ++slot.runs;
    return dispatch(slot, scheduled_fire(slot.config(), scheduled, trigger), /*scheduled=*/true, behind_previous) !=
           Dispatched::not_run;
  }

  PendingRun scheduled_fire(const v1::Task& config, Instant scheduled, v1::TriggerType trigger) const {
    PendingRun p;
    p.execution_id = execution_id(config.id(), scheduled);
    p.task_id = config.id();
    p.scheduled = scheduled;
    p.trigger = trigger;
    for (const auto& param : config.params())
      if (!param.default_value().empty()) p.params[param.name()] = param.default_value();
    p.root_execution_id = p.execution_id;
    return p;
  }

  /// Runs each enabled agent-start task (cron's `@reboot`) once: called at `start`, or with
  /// the first configuration when the engine started with none; never again in this process.
  void fire_agent_start_tasks() {
    agent_start_pending = false;
    for (auto& [id, slot] : tasks) {
      const v1::Task& config = slot->config();
      if (config.schedule().kind_case() != v1::Schedule::kAgentStart || !detail::agent_fired(config) ||
          !config.enabled())
        continue;
      // The id carries the start's millisecond (as manual triggers do): each start of the
      // agent is a run of its own, also two starts within one second.
      last_manual_ms = std::max(now_unix_ms(), last_manual_ms + 1);
      PendingRun p;
      p.execution_id = detail::execution_id(config.id(), last_manual_ms, options.agent_id);
      p.task_id = config.id();
      p.scheduled = Instant{seconds{last_manual_ms / 1000}};
      p.trigger = v1::TRIGGER_TYPE_SCHEDULED;
      for (const auto& param : config.params())
        if (!param.default_value().empty()) p.params[param.name()] = param.default_value();
      p.root_execution_id = p.execution_id;
      ++slot->runs;
      dispatch(*slot, std::move(p), /*scheduled=*/true);
    }
  }

  // --- policies ------------------------------------------------------------------------

  /// Runs of one task at once: max_concurrent_runs, else 1 (unbounded for `allow`).
  static std::size_t concurrency_limit(const v1::Task& config) {
    if (config.max_concurrent_runs() > 0) return config.max_concurrent_runs();
    return config.overlap_policy() == v1::OVERLAP_POLICY_ALLOW ? SIZE_MAX : 1;
  }

  /// Shards of one fire sent to the same agent run side by side: they are one run split,
  /// not overlapping runs (one agent holding both shards of a 2-shard task skipped one).
  bool only_sibling_shards_running(const TaskSlot& slot, const PendingRun& p) const {
    if (p.shard_total <= 1) return false;
    for (const auto& [id, run] : runs)
      if (run->pending.task_id == slot.config().id() && !run->finished &&
          (run->pending.scheduled != p.scheduled || run->pending.shard_total != p.shard_total))
        return false;
    return true;
  }

  /// Records a queued run that will never start as CANCELLED.
  void write_cancelled(const PendingRun& p, const v1::Task& config, const std::string& by,
                       std::string_view reason = {}) {
    auto r = base_record(p, config);
    r.set_status(v1::EXECUTION_STATUS_CANCELLED);
    r.set_cancelled_by(by);
    r.set_error_message("cancelled by " + by + " while pending" + (reason.empty() ? "" : ": " + std::string(reason)));
    r.set_ended_unix_ms(now_unix_ms());
    write(std::move(r));
  }

  enum class Dispatched { started, queued, not_run };

  /**
   * Starts, queues or records as not run one fire or request under the task's policies.
   * `behind_previous`: a catch-up fire (several instants owed at once, after a stall or a
   * restart with `fire_all`) whose predecessor in the same catch-up was started or queued.
   * It waits for that run (PENDING) instead of meeting the overlap policy: the policy is
   * for a run still going from an earlier instant, not for the fires owed together, which
   * run once each, in order, within the task's concurrency limit. (The catch-up is bounded
   * by the misfire threshold and `misfire_fire_all_limit`, so it may pass `max_queued_runs`.)
   */
  Dispatched dispatch(TaskSlot& slot, PendingRun p, bool scheduled, bool behind_previous = false) {
    if (!health.available) {
      hold_fire(slot, std::move(p));
      return Dispatched::not_run;
    }
    if (scheduled && !slot.config().enabled()) {
      write_not_run(p, slot.config(), v1::EXECUTION_STATUS_SKIPPED, v1::SKIP_REASON_TASK_DISABLED,
                    "the task is disabled");
      return Dispatched::not_run;
    }
    if (store_backlogged()) {
      hold_backlog_fire(std::move(p), slot);
      return Dispatched::not_run;
    }
    const auto overlap = slot.config().overlap_policy();
    if ((slot.running < concurrency_limit(slot.config()) || only_sibling_shards_running(slot, p)) && slot.queue.empty()) {
      start_run(slot, std::move(p));
      return Dispatched::started;
    }
    if (behind_previous) {
      queue(slot, std::move(p), false);
      return Dispatched::queued;
    }
    switch (overlap) {
      case v1::OVERLAP_POLICY_QUEUE:
      case v1::OVERLAP_POLICY_ALLOW: {
        const std::size_t max_queued =
            slot.config().max_queued_runs() > 0 ? slot.config().max_queued_runs() : options.default_max_queued;
        if (slot.queue.size() >= max_queued) {
          write_not_run(p, slot.config(), v1::EXECUTION_STATUS_SKIPPED, v1::SKIP_REASON_QUEUE_FULL,
                        fmt::format("{} runs are already queued", slot.queue.size()));
          return Dispatched::not_run;
        }
        queue(slot, std::move(p), false);
        return Dispatched::queued;
      }
      case v1::OVERLAP_POLICY_REPLACE: {
        std::shared_ptr<ActiveRun> oldest;
        for (auto& [id, run] : runs)
          if (run->pending.task_id == slot.config().id() && run->cancelled_by.empty() && !run->finished &&
              (!oldest || run->started_steady < oldest->started_steady))
            oldest = run;
        if (oldest) {
          oldest->cancelled_by = "replaced by " + p.execution_id;
          oldest->handle->stop(StopReason::cancel);
        }
        queue(slot, std::move(p), true);
        return Dispatched::queued;
      }
      default: {
        std::vector<std::string> ids;
        for (auto& [id, run] : runs)
          if (run->pending.task_id == slot.config().id() && !run->finished) ids.push_back(id);
        write_not_run(p, slot.config(), v1::EXECUTION_STATUS_SKIPPED, v1::SKIP_REASON_OVERLAP,
                      fmt::format("still running: {}", fmt::join(ids, ", ")));
        return Dispatched::not_run;
      }
    }
    return Dispatched::not_run;
  }

  void queue(TaskSlot& slot, PendingRun p, bool front) {
    auto r = base_record(p, slot.config());
    r.set_status(v1::EXECUTION_STATUS_PENDING);
    write(std::move(r));
    if (front) {
      slot.queue.push_front(std::move(p));
    } else {
      slot.queue.push_back(std::move(p));
    }
  }

  void start_queued(TaskSlot& slot) {
    while (!stopping && health.available && !slot.queue.empty() && slot.running < concurrency_limit(slot.config())) {
      if (store_backlogged()) {
        queued_waiting_for_store = true;  // the backlog timer starts them once the queue has room
        return;
      }
      PendingRun p = std::move(slot.queue.front());
      slot.queue.pop_front();
      start_run(slot, std::move(p));
    }
  }

  /// Starts the body first; its RUNNING record and timers follow at once, or after the burst
  /// for a run started in one (see record_start).
  void start_run(TaskSlot& slot, PendingRun p) {
    auto config = p.config ? p.config : slot.shared_config;
    auto run = std::make_shared<ActiveRun>(std::move(p), std::move(config));
    const std::string& id = run->pending.execution_id;  // the run outlives this call
    run->started_unix_ms = now_unix_ms();
    run->started_steady = std::chrono::steady_clock::now();
    runs[id] = run;
    ++slot.running;

    RunRequest request;
    request.execution_id = id;
    request.task = run->shared_config;  // shared, not copied
    request.params = run->pending.params;
    request.scheduled = run->pending.scheduled;
    request.attempt = run->pending.attempt;
    request.shard_index = run->pending.shard_index;
    request.shard_total = run->pending.shard_total;
    request.agent_id = options.agent_id;
    request.hostname = options.hostname;
    request.capture_limit = options.capture_limit;
    // Plugin calls produce no output as they go: no live-output hook to make for them.
    if (run->config().executor_case() != v1::Task::kPlugin)
      request.on_output = [weak = weak_from_this(), id, written = std::uint64_t{0}](std::string_view data) mutable {
        auto self = weak.lock();
        if (self && self->output_sink) self->output_sink(id, written, data);
        written += data.size();
      };
    // The run, not its id: no copy of the id per run. (The engine holds the run until on_done.)
    auto done = [weak = weak_from_this(), run_weak = std::weak_ptr<ActiveRun>(run)](RunOutcome outcome) {
      auto self = weak.lock();
      auto finished = run_weak.lock();
      if (!self || !finished) return;
      if (self->bursts_in_progress > 0) {
        self->finish_in_burst(finished->pending.execution_id, std::move(outcome));
      } else {
        self->on_done(finished->pending.execution_id, std::move(outcome));
      }
    };
    // An executor set for the kind wins (set_executor replaces it, plugins too: the Python
    // module runs its callables through one); plugins otherwise go to the C++ registry.
    Executor* chosen = nullptr;
    if (auto it = executors.find(run->config().executor_case()); it != executors.end()) {
      chosen = it->second.get();
    } else if (run->config().executor_case() == v1::Task::kPlugin) {
      chosen = plugin_executor.get();
    }
    if (chosen == nullptr) {
      RunOutcome outcome;
      outcome.failure_reason = "spawn failed";
      outcome.error_message = "this agent has no executor for the task's kind";
      asio::post(executor,
                 [done = std::move(done), outcome = std::move(outcome)]() mutable { done(std::move(outcome)); });
    } else {
      run->handle = chosen->start(std::move(request), std::move(done));
    }
    if (bursts_in_progress > 0) {
      burst_started.push_back(std::move(run));
    } else {
      record_start(run);
    }
  }

  /// The RUNNING record of a started run, its timeout and its progress events.
  void record_start(const std::shared_ptr<ActiveRun>& run) {
    run->record = base_record(run->pending, run->config());
    run->record.set_status(v1::EXECUTION_STATUS_RUNNING);
    run->record.set_started_unix_ms(run->started_unix_ms);
    run->recorded = true;
    write(run->record);
    if (!run->handle || run->finished) return;  // no executor (it fails at once), or over already
    run->timeout_timer.emplace(executor);
    run->timeout_timer->expires_at(run->started_steady + effective_timeout(run->config()));
    run->timeout_timer->async_wait([weak = std::weak_ptr<ActiveRun>(run)](const error_code& ec) {
      if (auto r = weak.lock(); r && !ec && r->handle) r->handle->stop(StopReason::timeout);
    });
    run->progress_timer.emplace(executor);
    schedule_progress(run);
  }

  /// A completion during a burst: the run is over for the policies at once (the slot's running
  /// count, overlap, concurrency limits), so a run dispatched meanwhile (a routed run, a
  /// trigger, a retry) does not meet a stale count; its final record waits for the burst's end,
  /// after its RUNNING record.
  void finish_in_burst(const std::string& id, RunOutcome outcome) {
    auto it = runs.find(id);
    if (it == runs.end() || it->second->finished) return;
    it->second->finished = true;
    if (auto slot = tasks.find(it->second->pending.task_id); slot != tasks.end()) --slot->second->running;
    burst_finished.emplace_back(it->second, std::move(outcome));
  }

  void schedule_progress(const std::shared_ptr<ActiveRun>& run) {
    run->progress_timer->expires_after(options.progress_interval);
    run->progress_timer->async_wait([weak = weak_from_this(),
                                     run_weak = std::weak_ptr<ActiveRun>(run)](const error_code& ec) {
      auto self = weak.lock();
      auto r = run_weak.lock();
      if (!self || !r || ec) return;
      auto progress = r->record;
      progress.set_duration_ms(std::chrono::duration_cast<milliseconds>(
                                   std::chrono::steady_clock::now() - r->started_steady).count());
      progress.set_updated_unix_ms(now_unix_ms());
      self->emit(progress);
      self->schedule_progress(r);
    });
  }

  void on_done(const std::string& id, RunOutcome outcome) {
    auto it = runs.find(id);
    if (it == runs.end()) return;
    auto run = it->second;
    runs.erase(it);
    if (run->timeout_timer) run->timeout_timer->cancel();
    if (run->progress_timer) run->progress_timer->cancel();
    auto r = run->record;
    r.set_status(outcome.status);
    r.set_ended_unix_ms(now_unix_ms());
    r.set_duration_ms(std::chrono::duration_cast<milliseconds>(std::chrono::steady_clock::now() - run->started_steady).count());
    if (outcome.exit_code) r.set_exit_code(*outcome.exit_code);
    r.set_signal(outcome.signal);
    r.set_http_status(outcome.http_status);
    // The record's text must be UTF-8 (it travels in protobuf strings); the full log keeps the bytes.
    r.set_output(detail::valid_utf8(outcome.output));
    r.set_output_bytes(outcome.output_bytes);
    r.set_error_message(detail::valid_utf8(outcome.error_message));
    r.set_failure_reason(outcome.failure_reason);
    if (outcome.status == v1::EXECUTION_STATUS_CANCELLED) {
      r.set_cancelled_by(run->cancelled_by.empty() ? "user" : run->cancelled_by);
      r.set_error_message("cancelled by " + r.cancelled_by() +
                          (run->cancel_reason.empty() ? "" : ": " + detail::valid_utf8(run->cancel_reason)));
    }
    write(r, std::move(outcome.output));

    auto slot_it = tasks.find(run->pending.task_id);
    if (slot_it == tasks.end()) return maybe_finish_stop();
    TaskSlot& slot = *slot_it->second;
    if (!run->finished) --slot.running;  // (a run that finished in a burst was counted out then)
    const auto& retry = run->config().retry();
    if (!stopping && run->pending.retry_here && run->cancelled_by.empty() && run->pending.attempt <= retry.max_retries() &&
        retryable(outcome.status, outcome.failure_reason, outcome.exit_code, outcome.http_status, retry))
      schedule_retry(run->pending, retry);
    start_queued(slot);
    maybe_finish_stop();
  }

  void schedule_retry(const PendingRun& failed, const v1::RetryPolicy& retry) {
    PendingRun next = failed;
    next.attempt = failed.attempt + 1;
    next.trigger = v1::TRIGGER_TYPE_RETRY;
    next.root_execution_id = failed.root_execution_id.empty() ? failed.execution_id : failed.root_execution_id;
    next.execution_id = detail::retry_execution_id(next.root_execution_id, next.attempt);
    auto timer = std::make_shared<asio::steady_timer>(executor, retry_delay(retry, failed.attempt, next.execution_id));
    retries[next.execution_id] = {timer, next};
    timer->async_wait([weak = weak_from_this(), id = next.execution_id](const error_code& ec) {
      auto self = weak.lock();
      if (!self || ec) return;
      auto it = self->retries.find(id);
      if (it == self->retries.end()) return;
      PendingRun p = std::move(it->second.second);
      self->retries.erase(it);
      auto slot = self->tasks.find(p.task_id);
      if (slot == self->tasks.end() || self->stopping) return;
      self->dispatch(*slot->second, std::move(p), false);
    });
  }

  // --- stop ----------------------------------------------------------------------------

  void maybe_finish_stop() {
    if (!stopping || !stopped_handler || !runs.empty() || pending_writes > 0 || !backlog_fires.empty() ||
        !backlog_scheduled_fires.empty())
      return;
    if (grace_timer) grace_timer->cancel();
    backlog_timer.cancel();
    probe_timer.cancel();
    if (!uncommitted.empty()) {
      std::vector<std::string> ids;
      for (const auto& [id, held] : uncommitted) ids.push_back(id);
      logger()->error("stopping with {} final record(s) the {} could not take: {}; they were not reported, and the "
                      "next start records them FAILURE (agent restarted)",
                      ids.size(), outage_reason(), fmt::join(ids, ", "));
    }
    if (!held_fires.empty() || health.fires_not_started > 0)
      logger()->error("stopping with {} fire(s) not started during the store outage and not recorded",
                      health.fires_not_started);
    asio::post(executor, std::exchange(stopped_handler, nullptr));
  }
};

TaskEngine::TaskEngine(asio::any_io_executor executor, LocalStore& store, TaskEngineOptions options)
    : impl_(std::make_shared<Impl>(executor, store, std::move(options))) {}

TaskEngine::~TaskEngine() {
  // Timers hold only weak references; cancel them so nothing waits on a dead engine.
  impl_->instant_timer.cancel();
  for (auto& [id, retry] : impl_->retries) retry.first->cancel();
  impl_->probe_timer.cancel();
  impl_->backlog_timer.cancel();
}

void TaskEngine::set_sink(ExecutionSink sink) { impl_->sink = std::move(sink); }
void TaskEngine::set_output_sink(OutputSink sink) { impl_->output_sink = std::move(sink); }
void TaskEngine::set_store_health_handler(StoreHealthHandler handler) { impl_->health_handler = std::move(handler); }
StoreHealth TaskEngine::store_health() const { return impl_->health_now(); }
PluginExecutor& TaskEngine::plugins() { return *impl_->plugin_executor; }
void TaskEngine::set_executor(v1::Task::ExecutorCase kind, std::unique_ptr<Executor> executor) {
  impl_->executors[kind] = std::move(executor);
}
std::uint64_t TaskEngine::config_version() const noexcept { return impl_->version; }

namespace {

/// Declarative: a task that does not say is enabled (a pushed or cached one always says).
void default_enabled(v1::Task& task) {
  if (!task.has_enabled()) task.set_enabled(true);
}

}  // namespace

bool TaskEngine::apply(std::vector<v1::Task> tasks, std::uint64_t version, ValidationError* error) {
  for (auto& task : tasks) default_enabled(task);
  auto& impl = *impl_;
  impl.config_stats.tasks_validated += tasks.size();
  if (auto problem = validate_tasks(tasks)) {
    if (error) *error = std::move(*problem);
    return false;
  }
  std::map<std::string, std::unique_ptr<TaskSlot>, std::less<>> next;
  for (auto& task : tasks) {
    auto slot = impl.build_slot(std::move(task));
    next[slot->config().id()] = std::move(slot);
  }
  for (auto& [id, old] : impl.tasks)
    if (!next.count(id)) impl.retire_slot(*old);
  impl.tasks = std::move(next);
  impl.task_ids_by_name.clear();
  for (const auto& [id, slot] : impl.tasks) impl.task_ids_by_name.emplace(slot->config().name(), id);
  impl.version = version;
  for (auto& [id, slot] : impl.tasks) impl.settle_slot(*slot);
  if (impl.agent_start_pending && !impl.stopping) impl.fire_agent_start_tasks();
  return true;
}

std::vector<TaskConfigProblem> TaskEngine::apply_delta(std::vector<v1::Task> upserts,
                                                       const std::vector<std::string>& removed_task_ids,
                                                       std::uint64_t version) {
  auto& impl = *impl_;
  ++impl.config_stats.deltas_applied;
  std::vector<TaskConfigProblem> problems;
  // The last upsert of an id wins.
  std::map<std::string, std::size_t, std::less<>> last_of_id;
  for (std::size_t i = 0; i < upserts.size(); ++i) last_of_id[upserts[i].id()] = i;

  // Every id the delta names gives up its name first: a rename or a swap of names within
  // one delta is not a conflict.
  auto release_name = [&](std::string_view id) {
    auto held = impl.tasks.find(id);
    if (held == impl.tasks.end()) return;
    if (auto it = impl.task_ids_by_name.find(held->second->config().name());
        it != impl.task_ids_by_name.end() && it->second == id)
      impl.task_ids_by_name.erase(it);
  };
  for (const auto& id : removed_task_ids) release_name(id);
  for (const auto& [id, index] : last_of_id) release_name(id);

  std::vector<std::string> to_remove(removed_task_ids.begin(), removed_task_ids.end());
  std::vector<v1::Task> accepted;
  accepted.reserve(last_of_id.size());
  for (std::size_t i = 0; i < upserts.size(); ++i) {
    v1::Task& task = upserts[i];
    if (last_of_id.find(task.id())->second != i) continue;
    default_enabled(task);
    ++impl.config_stats.tasks_validated;
    std::optional<ValidationError> problem = validate_task(task);
    if (!problem) {
      if (const auto [it, inserted] = impl.task_ids_by_name.emplace(task.name(), task.id()); !inserted)
        problem = ValidationError{{}, "name", fmt::format("\"{}\" is already the name of task \"{}\"", task.name(),
                                                          it->second)};
    }
    if (problem) {
      problems.push_back(TaskConfigProblem{task.id(), std::move(*problem)});
      to_remove.push_back(task.id());
      continue;
    }
    accepted.push_back(std::move(task));
  }
  for (const auto& id : to_remove) {
    auto it = impl.tasks.find(id);
    if (it == impl.tasks.end()) continue;
    impl.retire_slot(*it->second);
    impl.tasks.erase(it);
  }
  std::vector<TaskSlot*> changed;
  changed.reserve(accepted.size());
  for (auto& task : accepted) {
    auto slot = impl.build_slot(std::move(task));
    auto& place = impl.tasks[slot->config().id()];
    place = std::move(slot);
    changed.push_back(place.get());
  }
  impl.version = version;
  for (auto* slot : changed) impl.settle_slot(*slot);
  if (impl.agent_start_pending && !impl.stopping) impl.fire_agent_start_tasks();
  return problems;
}

std::size_t TaskEngine::task_count() const noexcept { return impl_->tasks.size(); }
const TaskEngineConfigStats& TaskEngine::config_stats() const noexcept { return impl_->config_stats; }

void TaskEngine::start() {
  auto& impl = *impl_;
  if (impl.started) return;
  impl.started = true;
  error_code ec;
  auto unfinished = impl.store.unfinished(ec);
  // Shell processes die with their agent (parent-death signal), but what they started in the
  // background may still run: found by their QF_EXECUTION_ID and killed, so that a run the
  // record calls failed does not go on (and a retry does not run it twice).
  std::vector<std::string> running_ids;
  for (const auto& record : unfinished)
    if (record.status() == v1::EXECUTION_STATUS_RUNNING) running_ids.push_back(record.execution_id());
  auto leftovers = detail::processes_of_executions(running_ids);
  for (auto record : unfinished) {
    std::string message = "the agent stopped while this run was pending or running";
    if (auto it = leftovers.find(record.execution_id()); it != leftovers.end()) {
      std::vector<std::string> killed;
      for (const auto& process : it->second)
        if (::kill(process.pid, SIGKILL) == 0) killed.push_back(fmt::format("{} ({})", process.pid, process.command));
      message += fmt::format("; agent restarted: {} process(es) it left running were killed: {}", killed.size(),
                             fmt::join(killed, ", "));
      logger()->warn("{}: {} process(es) left running by the previous agent were killed: {}", record.execution_id(),
                     killed.size(), fmt::join(killed, ", "));
    } else if (record.status() == v1::EXECUTION_STATUS_RUNNING) {
      message += "; agent restarted: no process of it was left running (its processes die with the agent)";
    }
    record.set_status(v1::EXECUTION_STATUS_FAILURE);
    record.set_failure_reason("agent restarted");
    record.set_error_message(message);
    record.set_ended_unix_ms(now_unix_ms());
    impl.write(std::move(record));
  }
  if (ec) logger()->error("reading unfinished executions failed: {}", ec.message());
  const Instant now = now_instant();
  for (auto& [id, slot] : impl.tasks) {
    if (!slot->schedule) continue;
    const auto last = impl.store.last_scheduled(id, ec);
    if (last && *last < now && slot->config().enabled()) {
      impl.apply_misfires(*slot, *last, now, "the agent was down");
    } else {
      slot->cursor = last && *last > now ? *last : now;
    }
    impl.arm(*slot);
  }
  // Agent-start tasks run once per start of the engine, from the configuration it starts
  // with; an engine that starts with none runs them from the first one it is given.
  if (impl.version == 0 && impl.tasks.empty()) {
    impl.agent_start_pending = true;
  } else {
    impl.fire_agent_start_tasks();
  }
}

std::optional<std::string> TaskEngine::trigger(std::string_view task_id, std::map<std::string, std::string> params,
                                               error_code& ec, std::string* detail) {
  auto& impl = *impl_;
  auto it = impl.tasks.find(task_id);
  auto fail = [&](std::string why) -> std::optional<std::string> {
    ec = errc::invalid_argument;
    if (detail) *detail = std::move(why);
    return std::nullopt;
  };
  if (it == impl.tasks.end()) return fail(fmt::format("no task with id \"{}\"", task_id));
  if (impl.stopping) return fail("the agent is stopping");
  if (!impl.health.available) {
    ec = errc::conflict;
    if (detail) *detail = impl.outage_reason() + "; no new runs start until it can record them";
    return std::nullopt;
  }
  if (impl.store_backlogged()) {
    ec = errc::conflict;
    if (detail)
      *detail = fmt::format("the local store is behind ({} bytes of writes waiting); no new runs start until it "
                            "catches up",
                            impl.store.queued_bytes());
    return std::nullopt;
  }
  TaskSlot& slot = *it->second;
  for (const auto& spec : slot.config().params()) {
    if (params.count(spec.name())) continue;
    if (spec.required()) return fail(fmt::format("params.{}: is required", spec.name()));
    if (!spec.default_value().empty()) params[spec.name()] = spec.default_value();
  }
  if (slot.config().params_size() > 0) {
    for (const auto& [name, value] : params) {
      const bool declared = std::any_of(slot.config().params().begin(), slot.config().params().end(),
                                        [&](const auto& s) { return s.name() == name; });
      if (!declared) return fail(fmt::format("params.{}: is not a parameter of task \"{}\"", name, task_id));
    }
  }
  // Manual ids use the accept time; two triggers in one millisecond still get distinct ids.
  impl.last_manual_ms = std::max(now_unix_ms(), impl.last_manual_ms + 1);
  const Instant scheduled{seconds{impl.last_manual_ms / 1000}};
  PendingRun p;
  p.execution_id = detail::execution_id(task_id, impl.last_manual_ms, impl.options.agent_id);
  p.task_id = std::string(task_id);
  p.scheduled = scheduled;
  p.trigger = v1::TRIGGER_TYPE_MANUAL;
  p.params = std::move(params);
  p.root_execution_id = p.execution_id;
  auto id = p.execution_id;
  impl.dispatch(slot, std::move(p), false);
  ec = {};
  return id;
}

bool TaskEngine::run(const v1::RunRequest& request, error_code& ec, std::string* detail) {
  auto& impl = *impl_;
  auto fail = [&](errc code, std::string why) {
    ec = code;
    if (detail) *detail = std::move(why);
    return false;
  };
  ec = {};
  if (request.execution_id().empty()) return fail(errc::invalid_argument, "execution_id: must not be empty");
  if (impl.stopping) return fail(errc::conflict, "the agent is stopping");
  auto it = impl.tasks.find(request.task_id());
  // Re-sent: already running, queued (in its task's queue) or waiting for a retry.
  if (impl.runs.count(request.execution_id()) || impl.retries.count(request.execution_id())) return true;
  if (it != impl.tasks.end()) {
    const auto& queue = it->second->queue;
    if (std::any_of(queue.begin(), queue.end(),
                    [&](const PendingRun& p) { return p.execution_id == request.execution_id(); }))
      return true;
  }
  // Fencing: after its start deadline the coordinator may have sent the run to another agent.
  if (request.start_deadline_unix_ms() != 0 && now_unix_ms() > request.start_deadline_unix_ms())
    return fail(errc::conflict, fmt::format("start deadline passed {} ms ago; not started (the coordinator may have "
                                            "sent the run to another agent)",
                                            now_unix_ms() - request.start_deadline_unix_ms()));
  if (!impl.health.available)
    return fail(errc::conflict, impl.outage_reason() + "; no new runs start until it can record them");
  if (!request.has_task() && it == impl.tasks.end())
    return fail(errc::not_found, fmt::format("task_id: no task with id \"{}\" on this agent", request.task_id()));
  if (request.has_task()) {
    if (request.task().id() != request.task_id())
      return fail(errc::invalid_argument, "task.id: differs from task_id");
    if (auto problem = validate_task(request.task()))
      return fail(errc::invalid_argument, fmt::format("task.{}: {}", problem->field, problem->reason));
  }
  if (it == impl.tasks.end()) {
    // A task routed here without being part of this agent's configuration: it gets a slot
    // for its policies; the next configuration applied drops it.
    auto slot = std::make_unique<TaskSlot>();
    slot->shared_config = std::make_shared<const v1::Task>(request.task());
    it = impl.tasks.emplace(request.task_id(), std::move(slot)).first;
  }
  TaskSlot& slot = *it->second;
  PendingRun p;
  p.execution_id = request.execution_id();
  p.task_id = request.task_id();
  p.scheduled = Instant{seconds{request.scheduled_unix_ms() / 1000}};
  p.trigger = request.trigger() == v1::TRIGGER_TYPE_UNSPECIFIED ? v1::TRIGGER_TYPE_MANUAL : request.trigger();
  p.params = {request.params().begin(), request.params().end()};
  p.attempt = std::max<std::uint32_t>(1, request.attempt());
  p.root_execution_id = request.root_execution_id().empty() ? request.execution_id() : request.root_execution_id();
  p.shard_index = request.shard_index();
  p.shard_total = request.shard_total();
  p.triggered_by = request.triggered_by();
  p.upstream_execution_id = request.upstream_execution_id();
  if (request.has_task()) p.config = std::make_shared<const v1::Task>(request.task());
  const auto& config = p.config ? *p.config : slot.config();
  p.retry_here = !config.retry().retry_on_another_agent();
  // A disabled task is not run on schedule; manual runs go through (as locally).
  impl.dispatch(slot, std::move(p), request.trigger() == v1::TRIGGER_TYPE_SCHEDULED);
  return true;
}

bool TaskEngine::cancel(std::string_view execution_id, std::string_view by, std::string_view reason) {
  auto& impl = *impl_;
  // (A run that finished in a burst and waits for its final record is over: not cancelled.)
  if (auto it = impl.runs.find(execution_id); it != impl.runs.end() && !it->second->finished) {
    auto& run = *it->second;
    if (run.cancelled_by.empty()) {
      run.cancelled_by = std::string(by);
      run.cancel_reason = std::string(reason);
    }
    if (run.handle) run.handle->stop(StopReason::cancel);
    return true;
  }
  for (auto& [id, slot] : impl.tasks) {
    auto& q = slot->queue;
    auto found = std::find_if(q.begin(), q.end(), [&](const PendingRun& p) { return p.execution_id == execution_id; });
    if (found == q.end()) continue;
    const PendingRun p = std::move(*found);
    q.erase(found);
    impl.write_cancelled(p, slot->config(), std::string(by), reason);
    return true;
  }
  if (auto it = impl.retries.find(execution_id); it != impl.retries.end()) {
    it->second.first->cancel();
    impl.retries.erase(it);
    return true;
  }
  return false;
}

void TaskEngine::stop(std::chrono::seconds grace, std::function<void()> done) {
  auto& impl = *impl_;
  impl.stopping = true;
  impl.stopped_handler = std::move(done);
  impl.instant_timer.cancel();
  impl.instants.clear();
  while (impl.bursts_in_progress > 0) impl.end_burst();
  impl.stale_instant_entries = 0;
  for (auto& [id, slot] : impl.tasks) {
    ++slot->arm_serial;
    slot->armed = false;
    for (auto& p : slot->queue) impl.write_cancelled(p, slot->config(), "agent shutdown");
    slot->queue.clear();
  }
  for (auto& [id, retry] : impl.retries) retry.first->cancel();
  impl.retries.clear();
  impl.probe_timer.cancel();
  if (!impl.uncommitted.empty()) impl.probe();  // one more try for the held final records
  if (!impl.runs.empty()) {
    impl.grace_timer = std::make_unique<asio::steady_timer>(impl.executor, grace);
    impl.grace_timer->async_wait([weak = impl_->weak_from_this()](const error_code& ec) {
      auto self = weak.lock();
      if (!self || ec) return;
      for (auto& [id, run] : self->runs) {
        if (run->cancelled_by.empty()) run->cancelled_by = "agent shutdown";
        if (run->handle) run->handle->stop(StopReason::cancel);
      }
    });
  }
  impl.maybe_finish_stop();
}

std::size_t TaskEngine::running_count() const noexcept { return impl_->runs.size(); }
std::size_t TaskEngine::queued_count() const noexcept {
  std::size_t n = 0;
  for (auto& [id, slot] : impl_->tasks) n += slot->queue.size();
  return n;
}
std::vector<std::string> TaskEngine::active_executions() const {
  std::vector<std::string> ids;
  for (auto& [id, run] : impl_->runs) ids.push_back(id);
  for (auto& [id, slot] : impl_->tasks)
    for (auto& p : slot->queue) ids.push_back(p.execution_id);
  return ids;
}

}  // namespace quartzflow
