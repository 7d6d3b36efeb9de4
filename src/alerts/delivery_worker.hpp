// SPDX-License-Identifier: Apache-2.0
// The delivery worker: takes due deliveries from the outbox (notifications and result
// callbacks), sends them, records every attempt, retries with backoff, gives up in the end.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/io_context.hpp>

#include <quartzflow/error.hpp>
#include <quartzflow/store.hpp>
#include <quartzflow/v1/alerts.pb.h>
#include <quartzflow/v1/execution.pb.h>

#include "channels/channel_format.hpp"

namespace quartzflow::alerts {

/// A due delivery and what sending it needs, read in one transaction with it.
struct DueDelivery {
  v1::Delivery delivery;
  /// CALLBACK: the run, and its task's callback at `callback_index`; absent when either no
  /// longer exists (the delivery then fails).
  std::optional<v1::Execution> execution{};
  std::optional<v1::ResultCallback> callback{};
  /// NOTIFICATION: its channel as the outbox read it with the delivery (absent: deleted), used
  /// when the worker has no ChannelLookup.
  std::optional<v1::Channel> channel{};
};

/**
 * Where the worker takes due deliveries and records attempts: the Store's outbox
 * (`make_store_outbox`) or, in tests, a fake. Completions run on the worker's executor.
 */
class DeliveryOutbox {
 public:
  using DueHandler = std::function<void(error_code, std::vector<DueDelivery>)>;
  using RecordHandler = std::function<void(error_code)>;
  virtual ~DeliveryOutbox() = default;
  /// At most `limit` PENDING deliveries due at `now_unix_ms`, oldest first.
  virtual void async_due(std::int64_t now_unix_ms, int limit, DueHandler done) = 0;
  /// Appends `attempt` to delivery `id` and sets its state and next attempt.
  virtual void async_record(const std::string& id, const v1::DeliveryAttempt& attempt, v1::DeliveryState state,
                            std::int64_t next_attempt_unix_ms, RecordHandler done) = 0;
};

/// The Store's outbox: due_deliveries (with each callback's execution and task) in a read
/// transaction, record_delivery_attempt in a write transaction. `store` outlives it.
std::unique_ptr<DeliveryOutbox> make_store_outbox(Store& store);

/// The channel with this id as configured now (inline secrets sealed), or nullopt when none.
/// Called on the executor, so it must not block (a cache kept current, not a store read);
/// without one the worker uses the channel the outbox read with each delivery.
using ChannelLookup = std::function<std::optional<v1::Channel>(const std::string& channel_id)>;
/// The text of a secret (unsealed, read from its file or variable); a failure says why in
/// `Result::error.reason`, never with the value.
using SecretResolver = std::function<Result<std::string>(const v1::Secret& secret)>;

/// Counters since the worker started, by channel type (callbacks apart).
struct DeliveryMetrics {
  struct Counts {
    std::uint64_t delivered = 0;        ///< acknowledged by the receiver
    std::uint64_t failed_attempts = 0;  ///< attempts that did not deliver (retried or not)
    std::uint64_t given_up = 0;         ///< deliveries that ended FAILED
  };
  /// Indexed by the v1::ChannelType value (0 unused).
  std::array<Counts, 8> by_channel_type{};
  Counts callbacks;
  std::uint64_t in_flight = 0;

  /// Prometheus text exposition: `qf_alert_deliveries_total{kind,channel_type,result}` (result
  /// delivered, failed_attempt, given_up) and `qf_alert_deliveries_in_flight`.
  std::string prometheus_text() const;
};

struct DeliveryWorkerOptions {
  /// How often the outbox is read for due deliveries (besides `poke`).
  std::chrono::milliseconds poll_interval{1000};
  /// Deliveries sent at once, over all channels.
  std::size_t max_in_flight = 16;
  /// Backoff after a failed attempt: `first_retry` doubling per attempt up to `max_retry`,
  /// minus up to `jitter` of it at random (so retries of many deliveries spread out).
  std::chrono::milliseconds first_retry{5'000};
  std::chrono::milliseconds max_retry{3'600'000};
  double jitter = 0.2;
  /// Notifications still failing this long after they were created end FAILED.
  std::chrono::milliseconds notification_give_up{24 * 3'600'000};
  /// Attempts of a result callback whose `max_attempts` is 0.
  std::uint32_t default_callback_max_attempts = 10;
  /// A disabled channel's deliveries wait; they are looked at again after this long.
  std::chrono::milliseconds disabled_channel_recheck{300'000};
  /// The clock in unix ms (tests); default: the system clock.
  std::function<std::int64_t()> now_unix_ms;
};

/// What becomes of a delivery after an attempt.
struct RetryPlan {
  v1::DeliveryState state = v1::DELIVERY_STATE_PENDING;
  std::int64_t next_attempt_unix_ms = 0;  ///< PENDING: when to try again
  std::string gave_up;                    ///< FAILED by the limits: why ("after 10 attempts")
};

/**
 * The retry rule, pure: DELIVERED when delivered; FAILED on give_up, when a callback has made
 * its `max_attempts` attempts (`attempts_made` counts this one) or a notification is older than
 * `notification_give_up`; else PENDING after the backoff, `random_unit` in [0, 1) drawing the
 * jitter.
 */
RetryPlan plan_after_attempt(const v1::Delivery& delivery, Verdict verdict, std::uint32_t attempts_made,
                             std::uint32_t callback_max_attempts, std::int64_t now_unix_ms,
                             const DeliveryWorkerOptions& options, double random_unit);

/**
 * Sends the outbox's deliveries: every `poll_interval` (and at once on `poke`) it reads the
 * due ones, sends up to `max_in_flight` at a time (no order between channels), and records
 * each attempt (its time, HTTP status, error text with the secrets and URL taken out, duration)
 * with the delivery's new state (plan_after_attempt). Notifications go to their channel
 * (looked up when sent: a deleted channel fails them, a disabled one makes them wait); result
 * callbacks POST the run's record (format_callback). HTTP goes through HttpSender, e-mail
 * through SmtpSender's thread: the executor never blocks on the network.
 *
 * At least once: a delivery stays PENDING until its attempt is recorded, so one in flight when
 * the process dies is sent again by the next worker (receivers deduplicate on the
 * notification or execution id header). Within one worker a delivery is never sent twice at
 * once: it stays claimed until its record is committed.
 *
 * Thread safety: use from the executor (the io_context's); `metrics` from any thread.
 * Cancellation: `stop` (and the destructor) stop polling; sends in flight finish and are
 * recorded, without the worker object.
 */
class DeliveryWorker {
 public:
  /// On `io`'s executor over the Store's outbox.
  DeliveryWorker(boost::asio::io_context& io, Store& store, ChannelLookup channels, SecretResolver secrets,
                 DeliveryWorkerOptions options = {});
  /// Over any outbox (tests use an in-memory one).
  DeliveryWorker(boost::asio::any_io_executor executor, std::unique_ptr<DeliveryOutbox> outbox, ChannelLookup channels,
                 SecretResolver secrets, DeliveryWorkerOptions options = {});
  ~DeliveryWorker();
  DeliveryWorker(const DeliveryWorker&) = delete;
  DeliveryWorker& operator=(const DeliveryWorker&) = delete;

  /// Starts polling (the first read at once).
  void start();
  /// Reads the outbox now (call after enqueueing): never inline, coalesced while a read runs.
  void poke();
  /// Stops polling; what is in flight completes and is recorded.
  void stop();
  /**
   * Sends `notification` to `channel` now, outside the outbox (`qfctl channel test`, with
   * test_notification): secrets resolved and the message formatted and sent as for a
   * delivery, also when the channel is disabled; nothing is recorded, retried or counted.
   * `done` gets the attempt (error text redacted) and how the receiver answered, on the
   * executor, never inline. Works whether or not the worker was started.
   */
  void send_now(v1::Notification notification, const v1::Channel& channel,
                std::function<void(v1::DeliveryAttempt, Verdict)> done);
  DeliveryMetrics metrics() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace quartzflow::alerts
