// SPDX-License-Identifier: Apache-2.0
// The coordinator's side of one agent session, sans-I/O: registration, config sync (push,
// ACK, re-push, pull), liveness, the goodbye, routed runs and log requests. It takes decoded
// messages and the time as plain numbers and returns what to send; no socket, clock or store.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <quartzflow/v1/agent_protocol.pb.h>
#include <quartzflow/v1/task.pb.h>

#include "run_delivery.hpp"

namespace quartzflow::detail {

/// Task id -> revision an agent holds.
using HeldTasks = std::map<std::string, std::int64_t, std::less<>>;
/// The coordinator's tasks by id.
using TaskCatalog = std::map<std::string, v1::Task, std::less<>>;

/// What the sessions are synchronised with: the tasks and the catalog's version.
struct CatalogView {
  const TaskCatalog& tasks;
  std::int64_t version = 0;
};

/// 1-253 printable ASCII characters without spaces.
bool valid_agent_id(const std::string& id);

struct SessionOptions {
  std::int64_t ack_timeout_ms = 5'000;          ///< config ACK; an unregistered peer gets twice this
  std::uint32_t max_repushes = 3;               ///< then the push is marked FAILED
  std::int64_t heartbeat_interval_ms = 15'000;  ///< as advertised to the agent (whole seconds)
  std::uint32_t missed_heartbeats = 3;          ///< silent this long: the session is ended
  RunDeliveryOptions delivery;
  std::string coordinator_version{};  ///< judges Register.agent_version (version_policy.hpp); empty = any
};

/// Why a session must end (the driver sends the error and goodbye, closes, then calls ended()).
struct SessionClose {
  std::optional<v1::ProtocolErrorCode> error;  ///< a fatal ProtocolError to send first
  v1::GoodbyeReason goodbye = v1::GOODBYE_REASON_PROTOCOL_ERROR;
  std::string why;
};

/// An envelope to send on the session.
struct OutgoingEnvelope {
  enum class Purpose { reply, push, repush } purpose = Purpose::reply;
  v1::Envelope envelope;
  std::uint64_t in_reply_to = 0;
};

/// The agent's push status changed: the driver stores the agent record as it was then and
/// reports it.
struct PushStatusChange {
  v1::ConfigPushState state = v1::CONFIG_PUSH_STATE_UNSPECIFIED;
  std::string error;
  v1::Agent agent;  ///< the agent's record with this status
};

/// What the driver does after an event, in this order: sends, the push status, the run
/// deliveries' actions (SetTimer ones may be ignored: next_wake() covers them), the log
/// requests that timed out, then the close.
struct SessionActions {
  std::vector<OutgoingEnvelope> sends;
  std::vector<PushStatusChange> push_statuses;  ///< in order (an ACK may be followed by the next push)
  bool push_failed = false;                     ///< the push was never acknowledged (push_status says FAILED)
  DeliveryActions delivery;
  std::vector<std::uint64_t> logs_timed_out;
  std::optional<SessionClose> close;
};

/**
 * One agent session on the coordinator.
 *
 * Registration: the first message must be Register (validated here; the driver stores the
 * agent and calls registered()). Config: what the agent acknowledged (`held`), what differs
 * (`dirty`), one push in flight re-sent every `ack_timeout` up to `max_repushes` times then
 * FAILED; a delta is built on the acknowledged version, a snapshot when what the agent holds
 * is not known; an ACK applies the offer of its version and forgets older offers (an older
 * ACK after a newer one changes nothing); a heartbeat naming a version whose ACK was lost
 * acknowledges it. Liveness: a registered session silent for `missed_heartbeats` heartbeat
 * intervals, or a peer not registered within 2 x `ack_timeout`, is closed. Goodbye DRAINING:
 * no new runs, the runs in progress report here; only what is still open when the session
 * ends is lost. Runs: the RunDeliveryMachine decides the offers; accepted runs not final yet
 * are `routed` here until their final record is stored.
 *
 * Thread safety: not thread-safe. Cancellation: ended() settles everything.
 */
class CoordinatorSession {
 public:
  /// What the agent's previous session hands to its replacement.
  struct Handover {
    std::map<std::string, v1::Execution> routed;
    std::vector<RunDeliveryMachine::PendingRun> pending;
  };

  /// What the end of a session leaves to decide.
  struct Ended {
    DeliveryActions delivery;           ///< each pending offer's Resolve
    std::vector<v1::Execution> routed;  ///< accepted runs not final: lost unless their result came
  };

  CoordinatorSession(SessionOptions options, DeliveryNow now);

  // --- registration ------------------------------------------------------------------
  /// The first message must be Register, and only once.
  std::optional<SessionClose> admit(v1::Envelope::BodyCase body) const;
  /// Checks a Register (`peer_identity`: the certificate's name, empty without one).
  std::optional<SessionClose> check_register(const v1::Register& reg, std::string_view peer_identity) const;
  /// The registration is stored: the session is the agent's (runs it reported in progress are routed here).
  void registered(v1::Agent agent, std::vector<v1::Execution> running, const CatalogView& catalog);
  /// Takes the runs out (a newer session of the agent replaces this one).
  Handover hand_over();
  /// Runs of the agent's previous session: awaited runs are asked for again here.
  DeliveryActions adopt(Handover handover, DeliveryNow now);

  // --- messages ----------------------------------------------------------------------
  /// Any message (it lives).
  void heard(DeliveryNow now);
  SessionActions pull(const v1::ConfigPull& pull, std::uint64_t message_id, const CatalogView& catalog,
                      DeliveryNow now);
  SessionActions config_ack(const v1::ConfigAck& ack, const CatalogView& catalog, DeliveryNow now);
  /// Updates the agent's record, acknowledges a version whose ACK was lost, answers.
  SessionActions heartbeat(const v1::Heartbeat& beat, std::uint64_t message_id, const CatalogView& catalog,
                           DeliveryNow now);
  /// A Goodbye: DRAINING keeps the session (no new runs), anything else closes it.
  std::optional<SessionClose> goodbye(const v1::Goodbye& bye);
  /// An ExecutionUpdate with a state: the answer it is (the request it replies to, else its run).
  DeliveryActions update(std::uint64_t in_reply_to, const v1::Execution& record);
  /// A record from a result or sync batch (validated): it answers an awaited run.
  DeliveryActions record(const v1::Execution& record);
  /// The record is stored: a final one leaves the session.
  void stored(const v1::Execution& record);
  /// A ProtocolError in reply to `in_reply_to`: a refusal of a run, or not about a run.
  RunDeliveryMachine::Refusal refused(std::uint64_t in_reply_to) { return delivery_.refused(in_reply_to); }

  // --- config changes ----------------------------------------------------------------
  /// A task changed or was removed: whether the session has something to push.
  bool task_changed(const std::string& task_id, const CatalogView& catalog);
  /// Groups or the agent's group changed: recomputes what differs; whether to push.
  bool catalog_reloaded(const CatalogView& catalog);
  /// Pushes what differs when nothing is in flight.
  SessionActions push(const CatalogView& catalog, DeliveryNow now);

  // --- runs and log requests ---------------------------------------------------------
  RunDeliveryMachine::Offered offer(const std::string& execution_id, v1::DeliveryGuarantee guarantee, DeliveryNow now);
  DeliveryActions sent(const std::string& execution_id, std::uint64_t message_id) {
    return delivery_.sent(execution_id, message_id);
  }
  /// A LogRequest went out: it fails with a timeout unless answered within 2 x `ack_timeout`.
  void log_requested(std::uint64_t request_id, DeliveryNow now);
  /// A LogChunk: whether its request is still awaited.
  bool log_answered(std::uint64_t request_id);

  // --- time and end ------------------------------------------------------------------
  /// The wake asked for by next_wake() (or any wake): re-pushes, timeouts, liveness.
  SessionActions wake(DeliveryNow now);
  /// The earliest instant something is due (monotonic ms); none once the session is closing.
  std::optional<std::int64_t> next_wake() const;
  /// The session ended (the coordinator stops when `coordinator_stopping`).
  Ended ended(DeliveryNow now, bool coordinator_stopping);

  // --- state -------------------------------------------------------------------------
  bool is_registered() const noexcept { return registered_; }
  bool draining() const noexcept { return draining_; }
  /// Whether the run is routed here or awaited from here (a cancel goes to this session).
  bool holds(const std::string& execution_id) const {
    return routed_.count(execution_id) != 0 || delivery_.pending(execution_id);
  }
  bool awaiting(const std::string& execution_id) const { return delivery_.pending(execution_id); }
  std::size_t load() const noexcept { return routed_.size() + delivery_.pending_count(); }
  std::size_t routed_count() const noexcept { return routed_.size(); }
  const v1::Agent& agent() const noexcept { return agent_; }
  v1::Agent& agent() noexcept { return agent_; }
  bool held_known() const noexcept { return held_known_; }
  const HeldTasks& held() const noexcept { return held_; }
  std::int64_t acked_version() const noexcept { return acked_version_; }
  std::int64_t desired_version() const noexcept { return desired_version_; }
  bool push_in_flight() const noexcept { return push_.has_value(); }
  std::uint32_t push_sends() const noexcept { return push_sends_; }
  std::int64_t last_seen_mono_ms() const noexcept { return last_seen_ms_; }

 private:
  /// A config send waiting for its ConfigAck: what the agent holds once it applied it.
  struct ConfigOffer {
    bool snapshot = false;
    std::int64_t base = 0;                                      ///< delta: the acknowledged version it applies to
    HeldTasks held;                                             ///< snapshot: the whole set
    std::vector<std::pair<std::string, std::int64_t>> changes;  ///< delta: revision, or -1 removed
  };

  bool in_sync(const std::string& id, const CatalogView& catalog) const;
  void recompute_dirty(const CatalogView& catalog);
  void send_config(SessionActions& out, bool pushed, std::uint64_t in_reply_to, bool full, const CatalogView& catalog,
                   DeliveryNow now);
  void push_dirty(SessionActions& out, const CatalogView& catalog, DeliveryNow now);
  void accept_offer(ConfigOffer& offer, const CatalogView& catalog);
  void resend_push(SessionActions& out, DeliveryNow now);
  void set_push_state(SessionActions& out, v1::ConfigPushState state, std::string error, DeliveryNow now,
                      const std::vector<v1::TaskConfigError>& task_errors = {});
  std::int64_t silence_ms() const;

  SessionOptions options_;
  bool registered_ = false;
  bool draining_ = false;
  bool closed_ = false;  ///< decided or told to end: nothing more to wake for
  v1::Agent agent_;
  std::int64_t opened_ms_ = 0;
  std::int64_t last_seen_ms_ = 0;
  // Configuration.
  bool held_known_ = false;
  HeldTasks held_;                            ///< acknowledged
  std::set<std::string, std::less<>> dirty_;  ///< ids that may differ from what the agent should hold
  std::int64_t acked_version_ = 0;
  std::int64_t desired_version_ = 0;
  std::map<std::int64_t, ConfigOffer> offers_;  ///< sent, not yet acknowledged, by version
  std::optional<v1::Envelope> push_;            ///< the push being re-sent until acknowledged
  std::uint32_t push_sends_ = 0;
  std::optional<std::int64_t> push_due_ms_;  ///< when the push is re-sent (or failed)
  // Runs and log requests.
  RunDeliveryMachine delivery_;
  std::map<std::string, v1::Execution> routed_;                     ///< accepted, not final yet
  std::set<std::pair<std::int64_t, std::uint64_t>> log_deadlines_;  ///< (instant, request id)
};

}  // namespace quartzflow::detail
