// SPDX-License-Identifier: Apache-2.0
// The coordinator's delivery of routed runs to one agent session, sans-I/O: it takes events
// (a run offered, a send done, an answer, a refusal, a timer, the session ending) with the
// current time as plain numbers and returns what to do. No socket, clock, timer or store.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include <quartzflow/routing.hpp>
#include <quartzflow/v1/task.pb.h>

namespace quartzflow::detail {

/// The instant of an event, given by the caller (a driver's clocks, or a test's fake clock).
struct DeliveryNow {
  std::int64_t mono_ms = 0;  ///< monotonic: waits and timers
  std::int64_t unix_ms = 0;  ///< the coordinator's wall clock: start deadlines (agents compare theirs)
};

struct RunDeliveryOptions {
  std::int64_t ack_timeout_ms = 5'000;      ///< an answer is awaited this long before asking again
  std::int64_t acceptance_wait_max_ms = 0;  ///< longest wait while the session lives; 0 = 4 x ack_timeout
};

/// Why a run was resolved (the driver logs and counts by it).
enum class DeliveryCause {
  answered,              ///< the session answered with the run's state (update or result): accepted
  refused_by_agent,      ///< the agent refused the request: refused
  never_sent,            ///< the first send failed (connection closed): refused
  unconfirmed,           ///< at_least_once, no answer, start deadline passed: refused (re-route)
  unanswered,            ///< at_most_once, no answer within the bound: lost
  session_ended,         ///< at_most_once: lost; at_least_once: refused once the deadline passed
  coordinator_stopping,  ///< the coordinator stops: refused (the next start reconciles)
};

/// Why a run request is sent.
enum class SendReason {
  first,        ///< the offer
  reask,        ///< no answer yet from a session that lives (or at_most_once): ask for its state
  new_session,  ///< the agent reconnected: its new session asks again
};

namespace delivery_action {
/// Send the run request with this attempt number and start deadline; report the message id
/// (or 0 when it could not be sent) through RunDeliveryMachine::sent.
struct SendRun {
  std::string execution_id;
  std::uint32_t delivery_attempt = 0;
  std::int64_t start_deadline_unix_ms = 0;
  SendReason reason = SendReason::first;
  std::int64_t waited_ms = 0;  ///< since the first send
};
/// Tell the agent to cancel the run: it wins over a request that arrives later.
struct SendCancel {
  std::string execution_id;
  std::string reason;
};
/// The delivery ended: call the offer's completion with `outcome`, at once or, when
/// `not_before_mono_ms` is set, once that instant has come (a deferred re-route).
struct Resolve {
  std::string execution_id;
  RunDelivery outcome = RunDelivery::refused;
  DeliveryCause cause = DeliveryCause::answered;
  v1::DeliveryGuarantee guarantee = v1::DELIVERY_GUARANTEE_AT_LEAST_ONCE;
  bool heard = false;          ///< unconfirmed: the session spoke meanwhile (the bound was reached)
  std::int64_t waited_ms = 0;  ///< since the first send
  std::optional<std::int64_t> not_before_mono_ms;
};
/// Wake the machine (RunDeliveryMachine::timer_fired) at this instant; replaces an earlier
/// request. A wake with nothing due is harmless.
struct SetTimer {
  std::int64_t at_mono_ms = 0;
};
}  // namespace delivery_action

using DeliveryAction = std::variant<delivery_action::SendRun, delivery_action::SendCancel, delivery_action::Resolve,
                                    delivery_action::SetTimer>;
using DeliveryActions = std::vector<DeliveryAction>;

/// Whether `actions` resolve a run (e.g. an update answered the awaited request).
bool resolves(const DeliveryActions& actions);

/**
 * Runs sent to one agent session whose answer is awaited, keyed by execution id.
 *
 * Semantics (README, "Delivery guarantees"): any state of the run from the session accepts
 * it; a refusal refuses it (the agent did not start it and will not); a send that never left
 * refuses it. Without an answer for `ack_timeout` the request is sent again while the
 * session lives (anything heard since the last check), and under at_most_once also while it
 * is silent, up to `acceptance_wait_max`; then at_least_once re-routes (refused, with a
 * cancel) only once the request's start deadline has passed, and at_most_once ends `lost`
 * (with a cancel). When the session ends: at_most_once runs are `lost`, at_least_once runs
 * are refused once their deadline has passed (or at once when the coordinator stops).
 * Every offered run is resolved exactly once; an offer of a pending id joins it.
 *
 * Thread safety: not thread-safe. Cancellation: none (session_ended settles everything).
 */
class RunDeliveryMachine {
 public:
  /// A run awaiting its answer (movable to the agent's next session).
  struct PendingRun {
    std::string execution_id;
    v1::DeliveryGuarantee guarantee = v1::DELIVERY_GUARANTEE_AT_LEAST_ONCE;
    std::int64_t sent_at_mono_ms = 0;
    std::int64_t start_deadline_unix_ms = 0;
    std::uint32_t sends = 0;
    std::uint64_t heard_mark = 0;  ///< messages heard at the last check
    std::vector<std::uint64_t> message_ids;
    std::optional<std::int64_t> timer_at_mono_ms;
    bool first_send = true;  ///< the outcome of its first send is not known yet
  };

  struct Offered {
    bool joined = false;  ///< already pending here: the same answer settles both offers
    DeliveryActions actions;
  };

  /// What a refusal (a ProtocolError in reply to a message) concerned.
  struct Refusal {
    /// stale: it was resolved before; superseded: a refusal of an earlier request of a run asked
    /// again (the later request may still start it: its answer, or the timer, decides).
    enum class Kind { not_a_run, refused, stale, superseded } kind = Kind::not_a_run;
    std::string execution_id;
    DeliveryActions actions;
  };

  explicit RunDeliveryMachine(RunDeliveryOptions options = {});

  /// The run's start deadline for a request sent at `now` (the acceptance timeout less a
  /// clock margin: the agent does not start it after this instant).
  std::int64_t start_deadline(DeliveryNow now) const;

  /// A run to send to this session with its task's guarantee.
  Offered offer(const std::string& execution_id, v1::DeliveryGuarantee guarantee, DeliveryNow now);
  /// The outcome of a SendRun: the message id it went out with, or 0 when it could not be sent.
  DeliveryActions sent(const std::string& execution_id, std::uint64_t message_id);
  /// Any message from the session (it lives).
  void heard() noexcept { ++heard_count_; }
  /// A state of the run from this session (an update, a result, a synced record).
  DeliveryActions answered(const std::string& execution_id);
  /// An ExecutionUpdate: it answers the request it replies to, else the run it carries.
  DeliveryActions update(std::uint64_t in_reply_to, const std::string& execution_id);
  /// A ProtocolError in reply to `in_reply_to`.
  Refusal refused(std::uint64_t in_reply_to);
  /// The timer asked for by SetTimer (or any wake): handles every run whose wait is over.
  DeliveryActions timer_fired(DeliveryNow now);
  /// The session ended: resolves every pending run; the machine is empty afterwards.
  DeliveryActions session_ended(DeliveryNow now, bool coordinator_stopping);

  /// Takes the pending runs out (the agent's new session replaces this one).
  std::vector<PendingRun> release();
  /// Runs taken from the agent's previous session: sent again here.
  DeliveryActions adopt(std::vector<PendingRun> runs, DeliveryNow now);

  bool pending(const std::string& execution_id) const { return runs_.count(execution_id) != 0; }
  std::size_t pending_count() const noexcept { return runs_.size(); }
  const PendingRun* find(const std::string& execution_id) const;
  /// The earliest instant a pending run needs the timer.
  std::optional<std::int64_t> next_wake() const;

 private:
  std::int64_t wait_bound_ms() const;
  void arm(PendingRun& run, std::optional<std::int64_t> at);
  DeliveryActions resolve(const std::string& execution_id, RunDelivery outcome, DeliveryCause cause,
                          DeliveryActions actions = {});
  DeliveryActions& finish(DeliveryActions& actions);

  RunDeliveryOptions options_;
  std::map<std::string, PendingRun, std::less<>> runs_;
  std::map<std::uint64_t, std::string> run_messages_;      ///< RunRequest message id -> execution id
  std::set<std::pair<std::int64_t, std::string>> timers_;  ///< (instant, execution id)
  std::optional<std::int64_t> armed_;                      ///< the wake last asked for
  std::uint64_t heard_count_ = 0;
};

}  // namespace quartzflow::detail
