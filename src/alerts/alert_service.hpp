// SPDX-License-Identifier: Apache-2.0
// The alert service: drives the sans-I/O AlertEngine on the coordinator's io_context while
// this coordinator leads (facts from the Coordinator's observers, one timer, every effect
// written to the store's outbox in one transaction) and runs the DeliveryWorker beside it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/io_context.hpp>

#include <quartzflow/coordinator.hpp>
#include <quartzflow/v1/alerts.pb.h>

#include "delivery_worker.hpp"

namespace quartzflow::alerts {

struct AlertServiceOptions {
  /// How often leadership is looked at (gained: the engine is restored from the store; lost:
  /// it is dropped and the worker stops).
  std::chrono::milliseconds leadership_check{250};
  /// How often rules, silences, monitors, channels and acknowledgements are read again (the
  /// API of any coordinator writes them to the store); `refresh` reads them at once.
  std::chrono::milliseconds config_refresh{2'000};
  /// How often the tasks' p95 durations (the last 7 days, tasks with at least 20 finished
  /// runs) are read again for rules with `duration_p95_factor`: one grouped statistics query
  /// over 7 days of history, so not at every refresh.
  std::chrono::milliseconds p95_refresh{600'000};
  /// The key that seals inline secrets (AdminServerOptions::alert_secret_key).
  std::string secret_key;
  /// The console's base URL for links in notifications ("" = none).
  std::string console_url;
  DeliveryWorkerOptions worker;
};

/// Counters since start (every leadership term added up).
struct AlertServiceCounters {
  std::uint64_t facts = 0;                   ///< facts given to the engine
  std::uint64_t notifications_enqueued = 0;  ///< notifications the engine composed and the outbox took
  std::uint64_t callbacks_enqueued = 0;      ///< result callbacks enqueued
  std::uint64_t persist_failures = 0;        ///< effects the store refused (the engine is then restored)
  std::uint64_t restores = 0;                ///< leadership terms started
};

/**
 * Alerting in a coordinator process. Only the leader runs the engine and the delivery
 * worker, so two coordinators never compose or send the same notification at once; a
 * standby's API writes (rules, silences, monitors, pings, acknowledgements) reach the
 * leader through the store within `config_refresh`.
 *
 * While leading: at the start of a term the engine is restored from the store (rules,
 * silences, firing alerts and those owing a recovery notice, tasks with their last success
 * and failure streak, offline agents, monitors' deadlines); then every final run (with the
 * task's name, groups and labels), agent state, config push and task change is a fact.
 * Each call's AlertEffects are written in one transaction (alerts upserted, keeping an
 * acknowledgement the API stored meanwhile; notifications enqueued, idempotent by id),
 * then the worker is poked. A final run of a task with result callbacks enqueues one
 * CALLBACK delivery per callback (`<execution id>:callback:<index>`: a repeated record
 * enqueues nothing twice). A write that fails drops the engine; it is restored from the
 * store at once (the outbox keeps what was committed, ids are deterministic).
 *
 * Thread safety: use from the io_context's thread; `counters` and `metrics_text` too.
 * Cancellation: `stop` (and the destructor) end the term, the timers and the worker.
 */
class AlertService {
 public:
  AlertService(boost::asio::io_context& io, Coordinator& coordinator, AlertServiceOptions options = {});
  ~AlertService();
  AlertService(const AlertService&) = delete;
  AlertService& operator=(const AlertService&) = delete;

  /// Observes the coordinator and starts watching leadership. Call before Coordinator::start.
  void start();
  void stop();
  /// Rules, channels, silences, monitors (pings too) or acknowledgements changed through this
  /// process's API: read them again now (coalesced).
  void refresh();
  /**
   * Sends a TEST notification through `channel` (as stored: inline secrets sealed) now, from
   * this process whether it leads or not, and records it in the outbox as a delivery already
   * DELIVERED or FAILED (never retried). `done` gets the recorded delivery, with its attempt.
   */
  void test_channel(const v1::Channel& channel, std::function<void(error_code, v1::Delivery)> done);
  /// True while this coordinator leads and the engine is restored.
  bool active() const noexcept;
  AlertServiceCounters counters() const noexcept;
  /// Prometheus text: qf_alerts_firing{rule,severity}, qf_alert_notifications_enqueued_total,
  /// qf_alert_callbacks_enqueued_total, qf_alert_engine_active and the worker's
  /// DeliveryMetrics (every term added up).
  std::string metrics_text() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace quartzflow::alerts
