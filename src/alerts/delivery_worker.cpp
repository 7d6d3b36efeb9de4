// SPDX-License-Identifier: Apache-2.0
// The delivery worker's driver: one timer, the outbox reads and writes, the senders.
#include "delivery_worker.hpp"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <random>
#include <set>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include <quartzflow/log.hpp>

#include "../common/clock.hpp"
#include "../common/enum_names.hpp"
#include "senders.hpp"

namespace quartzflow::alerts {

namespace asio = boost::asio;

// ---- the retry rule ---------------------------------------------------------------------

RetryPlan plan_after_attempt(const v1::Delivery& delivery, Verdict verdict, std::uint32_t attempts_made,
                             std::uint32_t callback_max_attempts, std::int64_t now_unix_ms,
                             const DeliveryWorkerOptions& options, double random_unit) {
  RetryPlan plan;
  if (verdict == Verdict::delivered) {
    plan.state = v1::DELIVERY_STATE_DELIVERED;
    return plan;
  }
  if (verdict == Verdict::give_up) {
    plan.state = v1::DELIVERY_STATE_FAILED;
    return plan;
  }
  if (delivery.kind() == v1::DELIVERY_KIND_CALLBACK && attempts_made >= callback_max_attempts) {
    plan.state = v1::DELIVERY_STATE_FAILED;
    plan.gave_up = fmt::format("after {} attempts", attempts_made);
    return plan;
  }
  // A notification's age runs from its creation (from its first attempt when that is unset).
  const std::int64_t born = delivery.created_unix_ms() > 0 ? delivery.created_unix_ms()
                            : delivery.attempts_size() > 0 ? delivery.attempts(0).at_unix_ms()
                                                           : now_unix_ms;
  if (delivery.kind() != v1::DELIVERY_KIND_CALLBACK && now_unix_ms - born >= options.notification_give_up.count()) {
    plan.state = v1::DELIVERY_STATE_FAILED;
    plan.gave_up =
        fmt::format("after {} attempts over {} h", attempts_made, options.notification_give_up.count() / 3'600'000.0);
    return plan;
  }
  const double first = static_cast<double>(options.first_retry.count());
  const double exponent = std::min<double>(attempts_made > 0 ? attempts_made - 1 : 0, 40);
  const double backoff = std::min(first * std::pow(2.0, exponent), static_cast<double>(options.max_retry.count()));
  const double jittered = backoff * (1.0 - std::clamp(options.jitter, 0.0, 1.0) * std::clamp(random_unit, 0.0, 1.0));
  plan.state = v1::DELIVERY_STATE_PENDING;
  plan.next_attempt_unix_ms = now_unix_ms + std::max<std::int64_t>(1, std::llround(jittered));
  return plan;
}

// ---- metrics ----------------------------------------------------------------------------

std::string DeliveryMetrics::prometheus_text() const {
  std::string out =
      "# HELP qf_alert_deliveries_total Alert notifications and result callbacks: deliveries acknowledged "
      "(delivered), attempts that failed (failed_attempt) and deliveries given up (given_up).\n"
      "# TYPE qf_alert_deliveries_total counter\n";
  auto lines = [&](std::string_view kind, std::string_view type, const Counts& counts) {
    out += fmt::format("qf_alert_deliveries_total{{kind=\"{}\",channel_type=\"{}\",result=\"delivered\"}} {}\n", kind,
                       type, counts.delivered);
    out += fmt::format("qf_alert_deliveries_total{{kind=\"{}\",channel_type=\"{}\",result=\"failed_attempt\"}} {}\n",
                       kind, type, counts.failed_attempts);
    out += fmt::format("qf_alert_deliveries_total{{kind=\"{}\",channel_type=\"{}\",result=\"given_up\"}} {}\n", kind,
                       type, counts.given_up);
  };
  const auto& names = detail::EnumNames::of(v1::ChannelType_descriptor());
  for (int type = 1; type < static_cast<int>(by_channel_type.size()); ++type) {
    if (!v1::ChannelType_IsValid(type)) continue;
    lines("notification", names.short_name(type), by_channel_type[static_cast<std::size_t>(type)]);
  }
  lines("callback", "", callbacks);
  out += "# HELP qf_alert_deliveries_in_flight Deliveries being sent now.\n";
  out += "# TYPE qf_alert_deliveries_in_flight gauge\n";
  out += fmt::format("qf_alert_deliveries_in_flight {}\n", in_flight);
  return out;
}

// ---- the Store's outbox -----------------------------------------------------------------

namespace {

class StoreOutbox final : public DeliveryOutbox {
 public:
  explicit StoreOutbox(Store& store) : store_(store) {}

  void async_due(std::int64_t now_unix_ms, int limit, DueHandler done) override {
    auto due = std::make_shared<std::vector<DueDelivery>>();
    store_.read(
        [due, now_unix_ms, limit](StoreTransaction& tx, error_code&) {
          for (auto& delivery : tx.due_deliveries(now_unix_ms, limit)) {
            DueDelivery item;
            if (delivery.kind() == v1::DELIVERY_KIND_NOTIFICATION) item.channel = tx.channel(delivery.channel_id());
            if (delivery.kind() == v1::DELIVERY_KIND_CALLBACK) {
              item.execution = tx.execution(delivery.execution_id());
              if (item.execution) {
                const auto task = tx.task(item.execution->task_id());
                if (task && delivery.callback_index() < static_cast<std::uint32_t>(task->callbacks_size()))
                  item.callback = task->callbacks(static_cast<int>(delivery.callback_index()));
              }
            }
            item.delivery = std::move(delivery);
            due->push_back(std::move(item));
          }
        },
        [due, done = std::move(done)](error_code ec) { done(ec, std::move(*due)); });
  }

  void async_record(const std::string& id, const v1::DeliveryAttempt& attempt, v1::DeliveryState state,
                    std::int64_t next_attempt_unix_ms, RecordHandler done) override {
    store_.transact(
        [id, attempt, state, next_attempt_unix_ms](StoreTransaction& tx, error_code&) {
          tx.record_delivery_attempt(id, attempt, state, next_attempt_unix_ms);
        },
        std::move(done));
  }

 private:
  Store& store_;
};

bool secret_configured(const v1::Secret& secret) {
  return secret.set() || !secret.value().empty() || !secret.file().empty() || !secret.env().empty();
}

/// The part of a URL after its origin: a token often lives there (Slack, WeCom's `key=`).
std::string url_path_and_query(const std::string& url) {
  const auto scheme = url.find("://");
  if (scheme == std::string::npos) return {};
  const auto path = url.find_first_of("/?#", scheme + 3);
  return path == std::string::npos ? std::string{} : url.substr(path);
}

}  // namespace

std::unique_ptr<DeliveryOutbox> make_store_outbox(Store& store) { return std::make_unique<StoreOutbox>(store); }

// ---- the worker -------------------------------------------------------------------------

struct DeliveryWorker::Impl : std::enable_shared_from_this<Impl> {
  /// One delivery being sent.
  struct Send {
    DueDelivery due;
    std::int64_t at_unix_ms = 0;
    std::chrono::steady_clock::time_point started;
    v1::ChannelType channel_type = v1::CHANNEL_TYPE_UNSPECIFIED;  ///< UNSPECIFIED: a callback
    std::uint32_t callback_max_attempts = 0;
    std::vector<std::string> redactions;
    /// Set for send_now: the attempt goes here instead of the outbox.
    std::function<void(v1::DeliveryAttempt, Verdict)> direct;
  };

  Impl(asio::any_io_executor ex, std::unique_ptr<DeliveryOutbox> box, ChannelLookup lookup, SecretResolver resolver,
       DeliveryWorkerOptions opts)
      : executor(ex),
        timer(ex),
        outbox(std::move(box)),
        channels(std::move(lookup)),
        secrets(std::move(resolver)),
        options(std::move(opts)),
        http(ex),
        random(std::random_device{}()) {
    if (!options.now_unix_ms) options.now_unix_ms = [] { return detail::now_unix_ms(); };
    options.max_in_flight = std::max<std::size_t>(1, options.max_in_flight);
  }

  void arm(std::chrono::milliseconds after) {
    timer.expires_after(after);
    timer.async_wait([self = shared_from_this()](const error_code& ec) {
      if (!ec) self->poll();
    });
  }

  void poll() {
    if (stopped || !started) return;
    if (polling) {
      repoll = true;
      return;
    }
    if (claimed.size() >= options.max_in_flight) {
      repoll = true;  // the next completion polls
      return;
    }
    polling = true;
    repoll = false;
    // Claimed deliveries are still PENDING in the outbox and come back first: ask for them too.
    const int limit = static_cast<int>(options.max_in_flight + claimed.size());
    outbox->async_due(options.now_unix_ms(), limit,
                      [self = shared_from_this(), limit](error_code ec, std::vector<DueDelivery> due) {
                        self->on_due(ec, std::move(due), limit);
                      });
  }

  void on_due(error_code ec, std::vector<DueDelivery> due, int limit) {
    polling = false;
    if (stopped) return;
    if (ec) {
      logger()->warn("alert deliveries: reading the outbox failed: {}", ec.message());
      arm(options.poll_interval);
      return;
    }
    bool more = static_cast<int>(due.size()) >= limit;
    for (auto& item : due) {
      if (claimed.contains(item.delivery.id())) continue;
      if (claimed.size() >= options.max_in_flight) {
        more = true;
        break;
      }
      start_send(std::move(item));
    }
    if (repoll || (more && claimed.size() < options.max_in_flight)) {
      repoll = false;
      asio::post(executor, [self = shared_from_this()] { self->poll(); });
    } else {
      repoll = more;  // at capacity: the next completion polls
      arm(options.poll_interval);
    }
  }

  Result<std::string> resolve(const v1::Secret& secret, std::string_view field) {
    if (!secret_configured(secret)) return {};
    auto resolved = secrets ? secrets(secret) : Result<std::string>{};
    if (!resolved) {
      Result<std::string> failed;
      failed.ec = resolved.ec;
      failed.error.field = std::string(field);
      failed.error.reason = resolved.error.reason.empty() ? resolved.message() : resolved.error.reason;
      return failed;
    }
    return resolved;
  }

  void start_send(DueDelivery due) {
    auto send = std::make_shared<Send>();
    send->due = std::move(due);
    send->at_unix_ms = options.now_unix_ms();
    send->started = std::chrono::steady_clock::now();
    claimed.insert(send->due.delivery.id());
    {
      const std::lock_guard lock(metrics_mutex);
      counters.in_flight = claimed.size();
    }
    const auto& delivery = send->due.delivery;
    if (delivery.kind() == v1::DELIVERY_KIND_CALLBACK) return send_callback(send);
    const auto channel = channels ? channels(delivery.channel_id()) : send->due.channel;
    if (!channel)
      return complete(send, Verdict::give_up, 0, fmt::format("channel {} no longer exists", delivery.channel_id()));
    send->channel_type = channel->type();
    if (channel->disabled())
      return postpone(send, fmt::format("channel {} is disabled: the delivery waits", channel->id()));
    send_notification(send, *channel);
  }

  /// A direct send (send_now): not claimed, recorded nor retried; `done` gets the attempt.
  void start_direct(v1::Notification notification, const v1::Channel& channel,
                    std::function<void(v1::DeliveryAttempt, Verdict)> done) {
    auto send = std::make_shared<Send>();
    send->due.delivery.set_kind(v1::DELIVERY_KIND_NOTIFICATION);
    send->due.delivery.set_channel_id(channel.id());
    *send->due.delivery.mutable_notification() = std::move(notification);
    send->at_unix_ms = options.now_unix_ms();
    send->started = std::chrono::steady_clock::now();
    send->channel_type = channel.type();
    send->direct = std::move(done);
    send_notification(send, channel);
  }

  void send_notification(const std::shared_ptr<Send>& send, const v1::Channel& channel_config) {
    const auto* channel = &channel_config;
    const auto& delivery = send->due.delivery;
    auto secret = resolve(channel->secret(), "channel.secret");
    if (!secret) return complete(send, Verdict::retry, 0, secret.message());
    auto password = resolve(channel->email().password(), "channel.email.password");
    if (!password) return complete(send, Verdict::retry, 0, password.message());
    send->redactions = {secret.value, password.value, channel->url(), url_path_and_query(channel->url())};
    auto formatted = format_notification(delivery.notification(), *channel, secret.value, send->at_unix_ms);
    if (!formatted) return complete(send, Verdict::retry, 0, formatted.message());
    const auto timeout = std::chrono::seconds(channel->timeout_seconds() > 0 ? channel->timeout_seconds() : 10);
    if (formatted.value.email) {
      SmtpOptions smtp_options;
      const auto& email = channel->email();
      smtp_options.host = email.smtp_host();
      smtp_options.port = email.smtp_port();
      smtp_options.security = email.security();
      smtp_options.username = email.username();
      smtp_options.password = password.value;
      smtp_options.ca_file = email.ca_file();
      smtp_options.timeout = timeout;
      if (!smtp) smtp = std::make_unique<SmtpSender>(executor);
      smtp->async_send(std::move(*formatted.value.email), std::move(smtp_options),
                       [self = shared_from_this(), send](SmtpResult result) {
                         self->complete(send, result.verdict, 0, std::move(result.error));
                       });
      return;
    }
    HttpSendOptions http_options;
    http_options.timeout = timeout;
    http_options.ca_file = channel->ca_file();
    http_options.execution_id = delivery.notification().id();
    send_http(send, *formatted.value.http, http_options);
  }

  void send_callback(const std::shared_ptr<Send>& send) {
    const auto& delivery = send->due.delivery;
    if (!send->due.execution)
      return complete(send, Verdict::give_up, 0, fmt::format("the run {} no longer exists", delivery.execution_id()));
    if (!send->due.callback) {
      return complete(send, Verdict::give_up, 0,
                      fmt::format("the run's task no longer has callback {}", delivery.callback_index()));
    }
    const auto& callback = *send->due.callback;
    send->callback_max_attempts =
        callback.max_attempts() > 0 ? callback.max_attempts() : options.default_callback_max_attempts;
    auto secret = resolve(callback.secret(), "callbacks.secret");
    if (!secret) return complete(send, Verdict::retry, 0, secret.message());
    send->redactions = {secret.value, callback.url(), url_path_and_query(callback.url())};
    auto formatted = format_callback(*send->due.execution, callback, delivery.id(), secret.value, send->at_unix_ms);
    if (!formatted) return complete(send, Verdict::retry, 0, formatted.message());
    HttpSendOptions http_options;
    http_options.timeout = std::chrono::seconds(callback.timeout_seconds() > 0 ? callback.timeout_seconds() : 10);
    http_options.execution_id = delivery.execution_id();
    send_http(send, *formatted.value.http, http_options);
  }

  void send_http(const std::shared_ptr<Send>& send, const HttpMessage& message, const HttpSendOptions& http_options) {
    http.async_send(message, http_options, [self = shared_from_this(), send](HttpAnswer answer) {
      if (answer.status == 0) {
        std::string error = answer.timed_out ? "timeout: " + answer.error : answer.error;
        return self->complete(send, Verdict::retry, 0, std::move(error));
      }
      const auto reading = read_http_response(send->channel_type, answer.status, answer.body);
      self->complete(send, reading.verdict, answer.status, reading.error);
    });
  }

  /// A disabled channel: recorded, not counted, looked at again later.
  void postpone(const std::shared_ptr<Send>& send, std::string why) {
    v1::DeliveryAttempt attempt;
    attempt.set_at_unix_ms(send->at_unix_ms);
    attempt.set_error(std::move(why));
    record(send, attempt, v1::DELIVERY_STATE_PENDING, send->at_unix_ms + options.disabled_channel_recheck.count());
  }

  void complete(const std::shared_ptr<Send>& send, Verdict verdict, unsigned http_status, std::string error) {
    if (send->direct) {
      v1::DeliveryAttempt attempt;
      attempt.set_at_unix_ms(send->at_unix_ms);
      attempt.set_http_status(http_status);
      attempt.set_error(redact(std::move(error), send->redactions));
      attempt.set_duration_ms(
          std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - send->started)
              .count());
      // Posted: a setting that fails before any I/O must not complete inside send_now.
      asio::post(executor, [done = std::move(send->direct), attempt = std::move(attempt), verdict]() mutable {
        done(std::move(attempt), verdict);
      });
      return;
    }
    const auto& delivery = send->due.delivery;
    const std::uint32_t attempts_made =
        std::max<std::uint32_t>(delivery.attempt_count(), static_cast<std::uint32_t>(delivery.attempts_size())) + 1;
    const std::int64_t now = options.now_unix_ms();
    const auto plan = plan_after_attempt(delivery, verdict, attempts_made, send->callback_max_attempts, now, options,
                                         std::uniform_real_distribution<double>(0.0, 1.0)(random));
    if (!plan.gave_up.empty()) error += (error.empty() ? "gave up " : "; gave up ") + plan.gave_up;
    v1::DeliveryAttempt attempt;
    attempt.set_at_unix_ms(send->at_unix_ms);
    attempt.set_http_status(http_status);
    attempt.set_error(redact(std::move(error), send->redactions));
    attempt.set_duration_ms(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - send->started)
            .count());
    {
      const std::lock_guard lock(metrics_mutex);
      auto& counts =
          send->channel_type == v1::CHANNEL_TYPE_UNSPECIFIED
              ? counters.callbacks
              : counters
                    .by_channel_type[static_cast<std::size_t>(send->channel_type) % counters.by_channel_type.size()];
      if (plan.state == v1::DELIVERY_STATE_DELIVERED) ++counts.delivered;
      else ++counts.failed_attempts;
      if (plan.state == v1::DELIVERY_STATE_FAILED) ++counts.given_up;
    }
    if (plan.state != v1::DELIVERY_STATE_DELIVERED) {
      logger()->info("alert delivery {} attempt {}: {}{}", delivery.id(), attempts_made, attempt.error(),
                     plan.state == v1::DELIVERY_STATE_FAILED ? " (failed)" : "");
    }
    record(send, attempt, plan.state, plan.next_attempt_unix_ms);
  }

  void record(const std::shared_ptr<Send>& send, const v1::DeliveryAttempt& attempt, v1::DeliveryState state,
              std::int64_t next_attempt_unix_ms) {
    const std::string id = send->due.delivery.id();
    outbox->async_record(id, attempt, state, next_attempt_unix_ms, [self = shared_from_this(), id](error_code ec) {
      // Released only now: a poll before the commit would find it still due and send it twice.
      self->claimed.erase(id);
      {
        const std::lock_guard lock(self->metrics_mutex);
        self->counters.in_flight = self->claimed.size();
      }
      if (ec)
        logger()->warn("alert delivery {}: recording the attempt failed ({}): it will be sent again", id, ec.message());
      if (self->repoll) self->poll();
    });
  }

  void stop() {
    stopped = true;
    timer.cancel();
  }

  asio::any_io_executor executor;
  asio::steady_timer timer;
  std::unique_ptr<DeliveryOutbox> outbox;
  ChannelLookup channels;
  SecretResolver secrets;
  DeliveryWorkerOptions options;
  HttpSender http;
  std::unique_ptr<SmtpSender> smtp;  // made at the first e-mail: no thread without one
  std::mt19937_64 random;
  std::set<std::string> claimed;  // being sent, or their attempt being recorded
  bool started = false;
  bool stopped = false;
  bool polling = false;
  bool repoll = false;
  mutable std::mutex metrics_mutex;
  DeliveryMetrics counters;
};

DeliveryWorker::DeliveryWorker(asio::io_context& io, Store& store, ChannelLookup channels, SecretResolver secrets,
                               DeliveryWorkerOptions options)
    : DeliveryWorker(io.get_executor(), make_store_outbox(store), std::move(channels), std::move(secrets),
                     std::move(options)) {}

DeliveryWorker::DeliveryWorker(asio::any_io_executor executor, std::unique_ptr<DeliveryOutbox> outbox,
                               ChannelLookup channels, SecretResolver secrets, DeliveryWorkerOptions options)
    : impl_(std::make_shared<Impl>(std::move(executor), std::move(outbox), std::move(channels), std::move(secrets),
                                   std::move(options))) {}

DeliveryWorker::~DeliveryWorker() { impl_->stop(); }

void DeliveryWorker::start() {
  if (impl_->started) return;
  impl_->started = true;
  impl_->stopped = false;
  asio::post(impl_->executor, [self = impl_] { self->poll(); });
}

void DeliveryWorker::poke() {
  asio::post(impl_->executor, [self = impl_] { self->poll(); });
}

void DeliveryWorker::stop() { impl_->stop(); }

void DeliveryWorker::send_now(v1::Notification notification, const v1::Channel& channel,
                              std::function<void(v1::DeliveryAttempt, Verdict)> done) {
  impl_->start_direct(std::move(notification), channel, std::move(done));
}

DeliveryMetrics DeliveryWorker::metrics() const {
  const std::lock_guard lock(impl_->metrics_mutex);
  return impl_->counters;
}

}  // namespace quartzflow::alerts
