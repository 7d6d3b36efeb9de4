// SPDX-License-Identifier: Apache-2.0
// The alert service: the AlertEngine's driver on the leader (facts, one timer, the outbox
// transaction), the DeliveryWorker's owner, channel tests and the alerting metrics.
#include "alert_service.hpp"

#include <algorithm>
#include <deque>
#include <map>
#include <optional>
#include <random>
#include <set>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include <quartzflow/execution_status.hpp>
#include <quartzflow/log.hpp>
#include <quartzflow/store.hpp>

#include "../common/clock.hpp"
#include "alert_engine.hpp"
#include "monitor_schedule.hpp"
#include "secrets.hpp"

namespace quartzflow::alerts {

namespace asio = boost::asio;
using detail::AlertEffects;
using detail::AlertEngine;

namespace {

/// Runs of a task read back at a term's start to count its failure streak; a streak longer
/// than this is taken as this long (rules ask for 2-1000 in a row; 3 by default).
constexpr std::uint32_t k_streak_scan = 100;
/// Alerts owing a recovery notice read back at a term's start (the newest resolved ones).
constexpr std::uint32_t k_recovery_scan = 500;

std::string severity_label(v1::AlertSeverity severity) {
  std::string name = v1::AlertSeverity_Name(severity);
  if (name.rfind("ALERT_SEVERITY_", 0) == 0) name = name.substr(15);
  std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
  return name;
}

template <typename T>
std::string fingerprint(const std::vector<T>& items) {
  std::string out;
  for (const auto& item : items) {
    std::string bytes;
    item.SerializeToString(&bytes);
    out += fmt::format("{}:{};", bytes.size(), bytes);
  }
  return out;
}

std::vector<v1::Silence> current_silences(StoreTransaction& tx, std::int64_t now) {
  std::vector<v1::Silence> out;
  for (std::uint32_t page = 1;; ++page) {
    auto listing = tx.list_silences(now, page, 500);
    for (auto& silence : listing.items) out.push_back(std::move(silence));
    if (listing.items.size() < 500) break;
  }
  return out;
}

detail::AlertTaskInfo task_info(const v1::Task& task) {
  detail::AlertTaskInfo info;
  info.task_id = task.id();
  info.name = task.name();
  info.group_ids.assign(task.group_ids().begin(), task.group_ids().end());
  info.labels.insert(task.labels().begin(), task.labels().end());
  return info;
}

void add_counts(DeliveryMetrics::Counts& into, const DeliveryMetrics::Counts& from) {
  into.delivered += from.delivered;
  into.failed_attempts += from.failed_attempts;
  into.given_up += from.given_up;
}

/// The outbox of one channel test: hands the worker its one delivery, keeps the attempt.
class OneShotOutbox final : public DeliveryOutbox {
 public:
  using Recorded = std::function<void(v1::DeliveryAttempt, v1::DeliveryState)>;
  OneShotOutbox(asio::any_io_executor executor, v1::Delivery delivery, Recorded recorded)
      : executor_(std::move(executor)), delivery_(std::move(delivery)), recorded_(std::move(recorded)) {}
  void async_due(std::int64_t, int, DueHandler done) override {
    std::vector<DueDelivery> due;
    if (!handed_out_) {
      handed_out_ = true;
      DueDelivery item;
      item.delivery = delivery_;
      due.push_back(std::move(item));
    }
    asio::post(executor_, [done = std::move(done), due = std::move(due)]() mutable { done({}, std::move(due)); });
  }
  void async_record(const std::string&, const v1::DeliveryAttempt& attempt, v1::DeliveryState state, std::int64_t,
                    RecordHandler done) override {
    if (recorded_) std::exchange(recorded_, {})(attempt, state);
    asio::post(executor_, [done = std::move(done)] { done({}); });
  }

 private:
  asio::any_io_executor executor_;
  v1::Delivery delivery_;
  Recorded recorded_;
  bool handed_out_ = false;
};

/// The Store's outbox for the leader's worker: hands out nothing once this coordinator stops
/// leading, even if the worker's timer runs before the service has stopped it (a deposed
/// leader resumed after a pause).
class LeaderOnlyOutbox final : public DeliveryOutbox {
 public:
  LeaderOnlyOutbox(asio::any_io_executor executor, std::unique_ptr<DeliveryOutbox> inner, std::function<bool()> leading)
      : executor_(std::move(executor)), inner_(std::move(inner)), leading_(std::move(leading)) {}
  void async_due(std::int64_t now_unix_ms, int limit, DueHandler done) override {
    if (leading_()) return inner_->async_due(now_unix_ms, limit, std::move(done));
    asio::post(executor_, [done = std::move(done)] { done({}, {}); });
  }
  void async_record(const std::string& id, const v1::DeliveryAttempt& attempt, v1::DeliveryState state,
                    std::int64_t next_attempt_unix_ms, RecordHandler done) override {
    inner_->async_record(id, attempt, state, next_attempt_unix_ms, std::move(done));
  }

 private:
  asio::any_io_executor executor_;
  std::unique_ptr<DeliveryOutbox> inner_;
  std::function<bool()> leading_;
};

/// A send's longest wait: its timeout (10 s when unset).
std::int64_t send_timeout_ms(std::uint32_t timeout_seconds) {
  return std::int64_t{timeout_seconds > 0 ? timeout_seconds : 10} * 1000;
}

}  // namespace

struct AlertService::Impl : std::enable_shared_from_this<Impl> {
  struct TaskEntry {
    detail::AlertTaskInfo info;
    int callbacks = 0;
  };
  /// What a term starts from, read in one transaction.
  struct Snapshot {
    detail::AlertSnapshot engine;
    std::vector<v1::AlertRule> rules;
    std::vector<v1::Silence> silences;
    std::map<std::string, TaskEntry> tasks;
    std::vector<v1::Monitor> monitors;
    std::vector<v1::Channel> channels;
    std::map<std::string, std::string> agent_groups;
    /// Another coordinator reported within the last 10 s: it may be a deposed leader whose
    /// sends are still in flight, so the worker waits this long (the longest send timeout).
    std::int64_t worker_delay_ms = 0;
  };
  /// What a refresh reads.
  struct Config {
    std::vector<v1::AlertRule> rules;
    std::vector<v1::Silence> silences;
    std::vector<v1::Monitor> monitors;
    std::vector<v1::Channel> channels;
    std::vector<v1::Alert> acknowledged;  ///< firing alerts with an acknowledgement
    bool p95_read = false;                ///< `p95` was read (a rule needs it and it was due)
    std::map<std::string, std::int64_t> p95;
  };

  Impl(asio::io_context& context, Coordinator& coord, AlertServiceOptions opts)
      : io(context),
        coordinator(coord),
        store(coord.store()),
        options(std::move(opts)),
        leader_timer(context),
        engine_timer(context),
        worker_timer(context) {}

  // ---- leadership -------------------------------------------------------------------------

  void watch() {
    if (stopped) return;
    const bool leads = coordinator.leading();
    if (leads && !engine && !restoring) begin_term();
    else if (!leads && (engine || restoring)) end_term("this coordinator no longer leads");
    if (engine && (refresh_wanted || std::chrono::steady_clock::now() - last_refresh >= options.config_refresh))
      start_refresh();
    leader_timer.expires_after(options.leadership_check);
    leader_timer.async_wait([weak = weak_from_this()](const error_code& ec) {
      if (auto self = weak.lock(); self && !ec) self->watch();
    });
  }

  void begin_term() {
    const auto my_term = ++term;
    restoring = true;
    ++counters.restores;
    auto snapshot = std::make_shared<Snapshot>();
    const auto now = detail::now_unix_ms();
    store.read([snapshot, now, self_id = coordinator.leader_lease().holder_id](
                   StoreTransaction& tx, error_code&) { read_snapshot(tx, *snapshot, now, self_id); },
               [weak = weak_from_this(), snapshot, my_term](error_code ec) {
                 auto self = weak.lock();
                 if (!self || self->term != my_term || self->stopped) return;
                 if (ec) {
                   logger()->warn("alerts: reading the store at the start of leadership failed ({}); trying again",
                                  ec.message());
                   self->restoring = false;  // the next watch() begins again
                   self->pending.clear();
                   return;
                 }
                 self->restored(std::move(*snapshot));
               });
  }

  static void read_snapshot(StoreTransaction& tx, Snapshot& s, std::int64_t now, const std::string& self_id) {
    std::int64_t longest_send_ms = send_timeout_ms(0);
    s.rules = tx.all_alert_rules();
    s.silences = current_silences(tx, now);
    s.engine.alerts = tx.firing_alerts();
    AlertFilter resolved;
    resolved.state = v1::ALERT_STATE_RESOLVED;
    resolved.page_size = k_recovery_scan;
    for (auto& alert : tx.list_alerts(resolved).items)
      if (alert.recovery_pending()) s.engine.alerts.push_back(std::move(alert));
    for (const auto& task : tx.all_tasks()) {
      detail::AlertSnapshot::Task entry;
      entry.info = task_info(task);
      entry.created_unix_ms = task.created_at_unix_ms();
      v1::ListExecutionsRequest last_success;
      last_success.set_task_id(task.id());
      last_success.add_status(v1::EXECUTION_STATUS_SUCCESS);
      last_success.set_sort("-started_unix_ms");
      last_success.set_page_size(1);
      if (auto listing = tx.list_executions(last_success); !listing.items.empty()) {
        const auto& run = listing.items.front();
        entry.last_success_unix_ms = run.ended_unix_ms() > 0 ? run.ended_unix_ms() : run.updated_unix_ms();
      }
      v1::ListExecutionsRequest latest;
      latest.set_task_id(task.id());
      latest.set_sort("-scheduled_unix_ms");
      latest.set_page_size(k_streak_scan);
      for (const auto& run : tx.list_executions(latest).items) {
        if (run.status() == v1::EXECUTION_STATUS_SUCCESS) break;
        if (run.status() == v1::EXECUTION_STATUS_FAILURE || run.status() == v1::EXECUTION_STATUS_TIMEOUT)
          ++entry.consecutive_failures;
      }
      for (const auto& callback : task.callbacks())
        longest_send_ms = std::max(longest_send_ms, send_timeout_ms(callback.timeout_seconds()));
      s.tasks[task.id()] = TaskEntry{entry.info, task.callbacks_size()};
      s.engine.tasks.push_back(std::move(entry));
    }
    for (std::uint32_t page = 1;; ++page) {
      v1::ListAgentsRequest request;
      request.set_page(page);
      request.set_page_size(500);
      auto listing = tx.list_agents(request);
      for (const auto& agent : listing.items) {
        s.agent_groups[agent.id()] = agent.group_id();
        if (agent.state() != v1::AGENT_STATE_OFFLINE) continue;
        detail::AlertSnapshot::OfflineAgent offline;
        offline.agent_id = agent.id();
        if (!agent.group_id().empty()) offline.group_ids.push_back(agent.group_id());
        offline.offline_since_unix_ms = agent.last_heartbeat_unix_ms();
        s.engine.offline_agents.push_back(std::move(offline));
      }
      if (listing.items.size() < 500) break;
    }
    s.monitors = tx.all_monitors();
    for (const auto& monitor : s.monitors) s.engine.monitors.push_back({monitor.id(), monitor_next_deadline(monitor)});
    s.channels = tx.all_channels();
    for (const auto& channel : s.channels)
      longest_send_ms = std::max(longest_send_ms, send_timeout_ms(channel.timeout_seconds()));
    for (const auto& other : tx.list_coordinators()) {
      if (other.id() != self_id && now - other.last_seen_unix_ms() < 10'000)
        s.worker_delay_ms = longest_send_ms + 1'000;
    }
  }

  void restored(Snapshot snapshot) {
    if (!coordinator.leading()) {
      restoring = false;
      pending.clear();
      return;
    }
    detail::AlertEngineOptions engine_options;
    engine_options.console_url = options.console_url;
    engine.emplace(engine_options);
    restoring = false;
    tasks = std::move(snapshot.tasks);
    agent_groups = std::move(snapshot.agent_groups);
    channels.clear();
    for (auto& channel : snapshot.channels) channels[channel.id()] = std::move(channel);
    monitors.clear();
    for (auto& monitor : snapshot.monitors) monitors[monitor.id()] = std::move(monitor);
    rules_fingerprint = fingerprint(snapshot.rules);
    silences_fingerprint = fingerprint(snapshot.silences);
    firing.clear();
    for (const auto& alert : snapshot.engine.alerts)
      if (alert.state() == v1::ALERT_STATE_FIRING) firing[alert.id()] = {alert.rule_id(), alert.severity()};
    last_refresh = std::chrono::steady_clock::now();
    logger()->info("alerts: leading: engine restored ({} rules, {} firing alerts, {} tasks, {} monitors)",
                   snapshot.rules.size(), firing.size(), tasks.size(), monitors.size());
    handle(engine->restore(snapshot.engine, std::move(snapshot.rules), std::move(snapshot.silences),
                           detail::now_unix_ms()));
    if (snapshot.worker_delay_ms == 0) {
      start_worker();
    } else {
      logger()->info(
          "alerts: another coordinator reported lately: deliveries start in {} ms (what a deposed "
          "leader has in flight finishes first)",
          snapshot.worker_delay_ms);
      worker_timer.expires_after(std::chrono::milliseconds{snapshot.worker_delay_ms});
      worker_timer.async_wait([weak = weak_from_this(), my_term = term](const error_code& ec) {
        auto self = weak.lock();
        if (!ec && self && self->term == my_term && self->engine) self->start_worker();
      });
    }
    auto queued = std::move(pending);
    pending.clear();
    for (auto& fact : queued) fact();
  }

  void end_term(std::string_view why) {
    ++term;
    if (engine) logger()->info("alerts: {}: the engine and the delivery worker stop", why);
    engine.reset();
    restoring = false;
    pending.clear();
    firing.clear();
    engine_timer.cancel();
    worker_timer.cancel();
    stop_worker();
  }

  void start_worker() {
    if (worker) return;
    auto lookup = [weak = weak_from_this()](const std::string& id) -> std::optional<v1::Channel> {
      auto self = weak.lock();
      if (!self) return std::nullopt;
      auto it = self->channels.find(id);
      if (it == self->channels.end()) return std::nullopt;
      return it->second;
    };
    auto outbox =
        std::make_unique<LeaderOnlyOutbox>(io.get_executor(), make_store_outbox(store), [weak = weak_from_this()] {
          auto self = weak.lock();
          return self && self->coordinator.leading();
        });
    worker = std::make_unique<DeliveryWorker>(io.get_executor(), std::move(outbox), std::move(lookup),
                                              secret_resolver(), options.worker);
    worker->start();
  }

  void stop_worker() {
    if (!worker) return;
    add_metrics(past_deliveries, worker->metrics());
    worker->stop();
    worker.reset();  // sends in flight finish and are recorded without it
  }

  SecretResolver secret_resolver() const {
    return [key = options.secret_key](const v1::Secret& secret) {
      Result<std::string> result;
      std::string error;
      if (auto value = detail::resolve_secret(secret, key, error)) {
        result.value = std::move(*value);
      } else {
        result.ec = errc::invalid_argument;
        result.error.reason = error;
      }
      return result;
    };
  }

  static void add_metrics(DeliveryMetrics& into, const DeliveryMetrics& from) {
    for (std::size_t i = 0; i < into.by_channel_type.size(); ++i)
      add_counts(into.by_channel_type[i], from.by_channel_type[i]);
    add_counts(into.callbacks, from.callbacks);
  }

  // ---- facts ------------------------------------------------------------------------------

  /// Runs `fact` now when the engine is there, after the restore while it is being made.
  void apply(std::function<void()> fact) {
    if (stopped) return;
    if (restoring) return pending.push_back(std::move(fact));
    if (engine) fact();
  }

  void on_execution(const v1::Execution& record) {
    if (!is_final(record.status())) return;
    apply([this, record] {
      detail::AlertRunFact fact;
      fact.execution = record;
      std::vector<v1::Delivery> callbacks;
      if (auto p95 = p95_ms.find(record.task_id()); p95 != p95_ms.end()) fact.p95_duration_ms = p95->second;
      if (auto it = tasks.find(record.task_id()); it != tasks.end()) {
        fact.task = it->second.info;
        const auto now = detail::now_unix_ms();
        for (int i = 0; i < it->second.callbacks; ++i) {
          v1::Delivery delivery;
          delivery.set_id(fmt::format("{}:callback:{}", record.execution_id(), i));
          delivery.set_kind(v1::DELIVERY_KIND_CALLBACK);
          delivery.set_state(v1::DELIVERY_STATE_PENDING);
          delivery.set_execution_id(record.execution_id());
          delivery.set_callback_index(static_cast<std::uint32_t>(i));
          delivery.set_created_unix_ms(now);
          delivery.set_next_attempt_unix_ms(now);
          callbacks.push_back(std::move(delivery));
        }
      } else {
        fact.task.task_id = record.task_id();
        fact.task.name = record.task_name();
      }
      ++counters.facts;
      handle(engine->on_run(fact, detail::now_unix_ms()), std::move(callbacks));
    });
  }

  void on_agent(const v1::Agent& agent) {
    apply([this, agent] {
      agent_groups[agent.id()] = agent.group_id();
      detail::AlertAgentFact fact;
      fact.agent_id = agent.id();
      if (!agent.group_id().empty()) fact.group_ids.push_back(agent.group_id());
      fact.online = agent.state() != v1::AGENT_STATE_OFFLINE && agent.state() != v1::AGENT_STATE_UNSPECIFIED;
      ++counters.facts;
      handle(engine->on_agent(fact, detail::now_unix_ms()));
    });
  }

  void on_push(const std::string& agent_id, const v1::ConfigPushStatus& status) {
    const bool ok = status.state() == v1::CONFIG_PUSH_STATE_IN_SYNC;
    const bool failed =
        status.state() == v1::CONFIG_PUSH_STATE_FAILED || status.state() == v1::CONFIG_PUSH_STATE_PARTIAL;
    if (!ok && !failed) return;
    apply([this, agent_id, ok, detail_text = status.error()] {
      detail::AlertPushFact fact;
      fact.agent_id = agent_id;
      if (auto it = agent_groups.find(agent_id); it != agent_groups.end() && !it->second.empty())
        fact.group_ids.push_back(it->second);
      fact.ok = ok;
      fact.detail = detail_text;
      ++counters.facts;
      handle(engine->on_config_push(fact, detail::now_unix_ms()));
    });
  }

  void on_task(const v1::Task* task, const std::string& task_id) {
    std::optional<v1::Task> copy;
    if (task) copy = *task;
    apply([this, copy = std::move(copy), task_id] {
      ++counters.facts;
      if (!copy) {
        tasks.erase(task_id);
        return handle(engine->remove_task(task_id, detail::now_unix_ms()));
      }
      tasks[task_id] = TaskEntry{task_info(*copy), copy->callbacks_size()};
      handle(engine->upsert_task(tasks[task_id].info, detail::now_unix_ms()));
    });
  }

  // ---- refresh: what the API of any coordinator wrote --------------------------------------

  void start_refresh() {
    if (refreshing) {
      refresh_wanted = true;
      return;
    }
    refreshing = true;
    refresh_wanted = false;
    last_refresh = std::chrono::steady_clock::now();
    const auto my_term = term;
    auto config = std::make_shared<Config>();
    const auto now = detail::now_unix_ms();
    const bool p95_due = !p95_read_once || last_refresh - p95_read_at >= options.p95_refresh;
    store.read(
        [config, now, p95_due](StoreTransaction& tx, error_code&) {
          config->rules = tx.all_alert_rules();
          const bool wanted = std::any_of(config->rules.begin(), config->rules.end(), [](const v1::AlertRule& r) {
            return !r.disabled() && r.duration_p95_factor() > 0;
          });
          if (p95_due && wanted) {
            config->p95_read = true;
            read_p95(tx, config->p95);
          }
          config->silences = current_silences(tx, now);
          config->monitors = tx.all_monitors();
          config->channels = tx.all_channels();
          for (auto& alert : tx.firing_alerts())
            if (!alert.acknowledged_by().empty()) config->acknowledged.push_back(std::move(alert));
        },
        [weak = weak_from_this(), config, my_term](error_code ec) {
          auto self = weak.lock();
          if (!self) return;
          self->refreshing = false;
          if (self->term != my_term || !self->engine) return;
          if (ec) return logger()->warn("alerts: reading the alert configuration failed: {}", ec.message());
          self->refreshed(std::move(*config));
          if (self->refresh_wanted) self->start_refresh();
        });
  }

  /// The tasks' p95 durations over the last 7 days, of those with at least 20 finished runs
  /// (fewer say little): one statistics query grouped by task (the 1,000 busiest tasks).
  static void read_p95(StoreTransaction& tx, std::map<std::string, std::int64_t>& out) {
    v1::StatsQuery query;
    query.set_range("7d");
    query.set_group_by(v1::STATS_GROUP_BY_TASK);
    const auto stats = tx.stats(query);
    for (const auto& group : stats.groups()) {
      const auto& s = group.stats();
      if (s.success() + s.failure() + s.timeout() >= 20 && s.p95_duration_ms() > 0)
        out[group.key()] = s.p95_duration_ms();
    }
  }

  void refreshed(Config config) {
    const auto now = detail::now_unix_ms();
    if (config.p95_read) {
      p95_ms = std::move(config.p95);
      p95_read_at = last_refresh;
      p95_read_once = true;
    }
    channels.clear();
    for (auto& channel : config.channels) channels[channel.id()] = std::move(channel);
    if (auto fp = fingerprint(config.rules); fp != rules_fingerprint) {
      rules_fingerprint = std::move(fp);
      handle(engine->set_rules(std::move(config.rules), now));
    }
    if (auto fp = fingerprint(config.silences); fp != silences_fingerprint) {
      silences_fingerprint = std::move(fp);
      handle(engine->set_silences(std::move(config.silences), now));
    }
    std::set<std::string> seen;
    for (auto& monitor : config.monitors) {
      seen.insert(monitor.id());
      monitor_changed(monitor, now);
      monitors[monitor.id()] = std::move(monitor);
    }
    for (auto it = monitors.begin(); it != monitors.end();) {
      if (seen.contains(it->first)) {
        ++it;
        continue;
      }
      handle(engine->remove_monitor(it->first, now));
      it = monitors.erase(it);
    }
    for (const auto& stored : config.acknowledged) learn_acknowledgement(stored);
  }

  /// Feeds the engine what changed in a monitor since it was last read: its pings (in the
  /// order they came) or its schedule.
  void monitor_changed(const v1::Monitor& now_stored, std::int64_t now) {
    auto it = monitors.find(now_stored.id());
    if (it == monitors.end())
      return handle(engine->set_monitor_deadline(now_stored.id(), monitor_next_deadline(now_stored), now));
    const auto& before = it->second;
    struct Ping {
      std::int64_t at;
      detail::MonitorPingKind kind;
    };
    std::vector<Ping> pings;
    if (now_stored.last_start_unix_ms() > before.last_start_unix_ms())
      pings.push_back({now_stored.last_start_unix_ms(), detail::MonitorPingKind::start});
    if (now_stored.last_fail_unix_ms() > before.last_fail_unix_ms())
      pings.push_back({now_stored.last_fail_unix_ms(), detail::MonitorPingKind::fail});
    if (now_stored.last_ping_unix_ms() > before.last_ping_unix_ms())
      pings.push_back({now_stored.last_ping_unix_ms(), detail::MonitorPingKind::success});
    std::sort(pings.begin(), pings.end(), [](const Ping& a, const Ping& b) { return a.at < b.at; });
    for (const auto& ping : pings) {
      detail::AlertPingFact fact;
      fact.monitor_id = now_stored.id();
      fact.kind = ping.kind;
      fact.next_deadline_unix_ms =
          ping.kind == detail::MonitorPingKind::start ? 0 : monitor_deadline_after(now_stored, ping.at);
      ++counters.facts;
      handle(engine->on_monitor_ping(fact, now));
    }
    const bool schedule_changed = now_stored.cron() != before.cron() || now_stored.time_zone() != before.time_zone() ||
                                  now_stored.period_seconds() != before.period_seconds() ||
                                  now_stored.grace_seconds() != before.grace_seconds() ||
                                  now_stored.paused() != before.paused();
    if (pings.empty() && schedule_changed)
      handle(engine->set_monitor_deadline(now_stored.id(), monitor_next_deadline(now_stored), now));
  }

  /// The API stored an acknowledgement the engine does not have yet: repeats and escalation stop.
  void learn_acknowledgement(const v1::Alert& stored) {
    if (!engine) return;
    const auto* held = engine->find_alert(stored.id());
    if (!held || !held->acknowledged_by().empty()) return;
    error_code ec;
    auto effects = engine->acknowledge(stored.id(), stored.acknowledged_by(), stored.acknowledge_comment(),
                                       detail::now_unix_ms(), ec);
    if (!ec) handle(std::move(effects));
  }

  // ---- effects: the outbox transaction -------------------------------------------------------

  void handle(AlertEffects effects, std::vector<v1::Delivery> callbacks = {}) {
    arm_engine_timer();
    if (effects.alerts.empty() && effects.deliveries.empty() && callbacks.empty()) return;
    for (const auto& alert : effects.alerts) {
      if (alert.state() == v1::ALERT_STATE_FIRING) firing[alert.id()] = {alert.rule_id(), alert.severity()};
      else firing.erase(alert.id());
    }
    const auto my_term = term;
    auto work =
        std::make_shared<std::pair<AlertEffects, std::vector<v1::Delivery>>>(std::move(effects), std::move(callbacks));
    auto acknowledged = std::make_shared<std::vector<v1::Alert>>();
    store.transact(
        [work, acknowledged](StoreTransaction& tx, error_code&) {
          for (auto& alert : work->first.alerts) {
            // An acknowledgement the API stored since the engine last heard: kept, and told.
            if (alert.acknowledged_by().empty()) {
              if (auto stored = tx.alert(alert.id()); stored && !stored->acknowledged_by().empty()) {
                alert.set_acknowledged_by(stored->acknowledged_by());
                alert.set_acknowledged_unix_ms(stored->acknowledged_unix_ms());
                alert.set_acknowledge_comment(stored->acknowledge_comment());
                if (alert.state() == v1::ALERT_STATE_FIRING) acknowledged->push_back(alert);
              }
            }
            tx.upsert_alert(alert);
            // A monitor past its deadline shows DOWN (its pings set UP and DOWN themselves); not
            // when a ping stored since is newer than the alert (the engine will hear of it).
            if (!alert.monitor_id().empty() && alert.state() == v1::ALERT_STATE_FIRING) {
              if (auto monitor = tx.monitor(alert.monitor_id());
                  monitor && monitor->monitor.status() != "DOWN" &&
                  monitor->monitor.last_ping_unix_ms() < alert.started_unix_ms()) {
                monitor->monitor.set_status("DOWN");
                tx.put_monitor(*monitor);
              }
            }
          }
          for (const auto& delivery : work->first.deliveries) tx.enqueue_delivery(delivery);
          for (const auto& delivery : work->second) tx.enqueue_delivery(delivery);
        },
        [weak = weak_from_this(), work, acknowledged, my_term](error_code ec) {
          auto self = weak.lock();
          if (!self || self->term != my_term) return;
          if (ec) {
            ++self->counters.persist_failures;
            logger()->error(
                "alerts: writing {} alerts and {} notifications to the outbox failed ({}): the engine "
                "is restored from the store",
                work->first.alerts.size(), work->first.deliveries.size() + work->second.size(), ec.message());
            self->end_term("the outbox write failed");
            return;  // the next watch() begins a term again while leading
          }
          self->counters.notifications_enqueued += work->first.deliveries.size();
          self->counters.callbacks_enqueued += work->second.size();
          if (self->worker) self->worker->poke();
          for (const auto& alert : *acknowledged) self->learn_acknowledgement(alert);
        });
  }

  void arm_engine_timer() {
    if (!engine) return;
    const auto deadline = engine->next_deadline();
    if (deadline == AlertEngine::k_never) {
      engine_timer.cancel();
      return;
    }
    const auto wait = std::max<std::int64_t>(0, deadline - detail::now_unix_ms());
    engine_timer.expires_after(std::chrono::milliseconds{wait});
    engine_timer.async_wait([weak = weak_from_this(), my_term = term](const error_code& ec) {
      auto self = weak.lock();
      if (ec || !self || self->term != my_term || !self->engine) return;
      self->handle(self->engine->tick(detail::now_unix_ms()));
    });
  }

  // ---- channel test -----------------------------------------------------------------------

  void test_channel(const v1::Channel& channel, std::function<void(error_code, v1::Delivery)> done) {
    const auto now = detail::now_unix_ms();
    std::random_device random;
    v1::Delivery delivery;
    delivery.set_id(fmt::format("{}:test:{}:{:08x}", channel.id(), now, random()));
    delivery.set_kind(v1::DELIVERY_KIND_NOTIFICATION);
    delivery.set_state(v1::DELIVERY_STATE_PENDING);
    delivery.set_channel_id(channel.id());
    delivery.set_created_unix_ms(now);
    delivery.set_next_attempt_unix_ms(now);
    auto& notification = *delivery.mutable_notification();
    notification.set_id(delivery.id());
    notification.set_kind(v1::NOTIFICATION_KIND_TEST);
    notification.set_rule_description(fmt::format("Test notification of channel {} from QuartzFlow", channel.id()));
    notification.set_severity(v1::ALERT_SEVERITY_INFO);
    notification.set_created_unix_ms(now);
    notification.set_console_url(options.console_url);

    struct Test {
      std::unique_ptr<DeliveryWorker> worker;
    };
    auto test = std::make_shared<Test>();
    auto recorded = [this, weak = weak_from_this(), test, delivery, done = std::move(done)](
                        v1::DeliveryAttempt attempt, v1::DeliveryState state) mutable {
      // The worker is inside its own completion here: let it go afterwards.
      asio::post(io, [test] { test->worker.reset(); });
      auto self = weak.lock();
      if (!self) return;
      const auto final_state =
          state == v1::DELIVERY_STATE_DELIVERED ? v1::DELIVERY_STATE_DELIVERED : v1::DELIVERY_STATE_FAILED;
      auto stored = std::make_shared<v1::Delivery>();
      store.transact(
          [delivery, attempt, final_state, stored](StoreTransaction& tx, error_code&) {
            tx.enqueue_delivery(delivery);
            tx.record_delivery_attempt(delivery.id(), attempt, final_state, 0);
            if (auto read = tx.delivery(delivery.id())) *stored = std::move(*read);
          },
          [stored, done = std::move(done)](error_code ec) { done(ec, std::move(*stored)); });
    };
    auto outbox = std::make_unique<OneShotOutbox>(io.get_executor(), delivery, std::move(recorded));
    auto lookup = [channel](const std::string&) -> std::optional<v1::Channel> {
      auto copy = channel;
      copy.set_disabled(false);  // a test of a disabled channel still sends
      return copy;
    };
    DeliveryWorkerOptions worker_options;
    worker_options.poll_interval = std::chrono::hours{1};
    worker_options.max_in_flight = 1;
    test->worker = std::make_unique<DeliveryWorker>(io.get_executor(), std::move(outbox), std::move(lookup),
                                                    secret_resolver(), worker_options);
    test->worker->start();
  }

  // ---- metrics -------------------------------------------------------------------------------

  std::string metrics_text() const {
    std::string out;
    out +=
        "# HELP qf_alert_engine_active 1 while this coordinator leads and runs the alert engine.\n"
        "# TYPE qf_alert_engine_active gauge\n";
    out += fmt::format("qf_alert_engine_active {}\n", engine ? 1 : 0);
    std::map<std::pair<std::string, std::string>, std::uint64_t> by_rule;
    for (const auto& [id, what] : firing) ++by_rule[{what.first, severity_label(what.second)}];
    out +=
        "# HELP qf_alerts_firing Firing alerts held by the leader's alert engine, by rule and severity.\n"
        "# TYPE qf_alerts_firing gauge\n";
    for (const auto& [key, count] : by_rule)
      out += fmt::format("qf_alerts_firing{{rule=\"{}\",severity=\"{}\"}} {}\n", key.first, key.second, count);
    const auto counter = [&out](std::string_view name, std::string_view help, std::uint64_t value) {
      out += fmt::format("# HELP {0} {1}\n# TYPE {0} counter\n{0} {2}\n", name, help, value);
    };
    counter("qf_alert_notifications_enqueued_total", "Notifications the alert engine composed into the outbox.",
            counters.notifications_enqueued);
    counter("qf_alert_callbacks_enqueued_total", "Result callbacks enqueued into the outbox.",
            counters.callbacks_enqueued);
    counter("qf_alert_facts_total", "Facts (runs, agents, pushes, pings, task changes) given to the alert engine.",
            counters.facts);
    counter("qf_alert_outbox_write_failures_total", "Alert effects the store refused (the engine was restored).",
            counters.persist_failures);
    DeliveryMetrics deliveries = past_deliveries;
    if (worker) {
      const auto current = worker->metrics();
      add_metrics(deliveries, current);
      deliveries.in_flight = current.in_flight;
    }
    out += deliveries.prometheus_text();
    return out;
  }

  asio::io_context& io;
  Coordinator& coordinator;
  Store& store;
  AlertServiceOptions options;
  asio::steady_timer leader_timer;
  asio::steady_timer engine_timer;
  asio::steady_timer worker_timer;  // a term's worker start, delayed after a takeover
  bool stopped = false;
  std::uint64_t term = 0;  // a leadership term's completions check it
  bool restoring = false;
  std::optional<AlertEngine> engine;
  std::deque<std::function<void()>> pending;  // facts that came while restoring
  std::map<std::string, TaskEntry> tasks;
  std::map<std::string, std::string> agent_groups;
  std::map<std::string, v1::Monitor> monitors;  // as last read: pings show as changed times
  std::map<std::string, v1::Channel> channels;  // the worker's lookup
  std::string rules_fingerprint;
  std::string silences_fingerprint;
  std::map<std::string, std::pair<std::string, v1::AlertSeverity>> firing;  // id -> rule, severity
  bool refreshing = false;
  bool refresh_wanted = false;
  std::chrono::steady_clock::time_point last_refresh{};
  // The tasks' p95 durations (read_p95) and when they were read.
  std::map<std::string, std::int64_t> p95_ms;
  std::chrono::steady_clock::time_point p95_read_at{};
  bool p95_read_once = false;
  std::unique_ptr<DeliveryWorker> worker;
  DeliveryMetrics past_deliveries;  // of the terms that ended
  AlertServiceCounters counters;
};

AlertService::AlertService(asio::io_context& io, Coordinator& coordinator, AlertServiceOptions options)
    : impl_(std::make_shared<Impl>(io, coordinator, std::move(options))) {}

AlertService::~AlertService() { stop(); }

void AlertService::start() {
  CoordinatorObserver observer;
  std::weak_ptr<Impl> weak = impl_;
  observer.execution = [weak](const v1::Execution& record) {
    if (auto self = weak.lock()) self->on_execution(record);
  };
  observer.agent_state = [weak](const v1::Agent& agent) {
    if (auto self = weak.lock()) self->on_agent(agent);
  };
  observer.push_status = [weak](const std::string& agent_id, const v1::ConfigPushStatus& status) {
    if (auto self = weak.lock()) self->on_push(agent_id, status);
  };
  observer.task_changed = [weak](const v1::Task* task, const std::string& task_id, v1::TaskChangeAction, const Actor&) {
    if (auto self = weak.lock()) self->on_task(task, task_id);
  };
  impl_->coordinator.observe(std::move(observer));
  asio::post(impl_->io, [weak] {
    if (auto self = weak.lock()) self->watch();
  });
}

void AlertService::stop() {
  if (impl_->stopped) return;
  impl_->end_term("stopping");
  impl_->stopped = true;
  impl_->leader_timer.cancel();
}

void AlertService::refresh() {
  asio::post(impl_->io, [weak = std::weak_ptr<Impl>(impl_)] {
    auto self = weak.lock();
    if (!self || !self->engine) return;
    self->start_refresh();
  });
}

void AlertService::test_channel(const v1::Channel& channel, std::function<void(error_code, v1::Delivery)> done) {
  impl_->test_channel(channel, std::move(done));
}

bool AlertService::active() const noexcept { return impl_->engine.has_value(); }

AlertServiceCounters AlertService::counters() const noexcept { return impl_->counters; }

std::string AlertService::metrics_text() const { return impl_->metrics_text(); }

}  // namespace quartzflow::alerts
