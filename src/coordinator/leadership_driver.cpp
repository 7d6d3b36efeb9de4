// SPDX-License-Identifier: Apache-2.0
// LeadershipDriver: a timer armed for the machine's next wake, one store transaction per
// lease attempt, the machine's actions handed to the hooks.
#include "leadership_driver.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <quartzflow/log.hpp>

namespace quartzflow::detail {

namespace asio = boost::asio;

struct LeadershipDriver::Impl : std::enable_shared_from_this<LeadershipDriver::Impl> {
  Impl(asio::any_io_executor ex, Store& s, LeadershipOptions o, v1::CoordinatorInfo info, CoordinatorAddresses a)
      : executor(ex), store(s), machine(std::move(o)), self(std::move(info)), addresses(std::move(a)), timer(ex) {}

  asio::any_io_executor executor;
  Store& store;
  LeadershipMachine machine;
  v1::CoordinatorInfo self;
  CoordinatorAddresses addresses;
  LeadershipHooks hooks;
  asio::steady_timer timer;
  std::function<void()> first_answer;
  std::int64_t armed_for = -1;
  bool last_attempt_ok = true;  ///< the database answered the last lease attempt

  void perform(const LeadershipActions& actions) {
    if (actions.step_down) {
      logger()->warn("leadership: stepping down: {}", actions.reason);
      if (hooks.step_down) hooks.step_down(actions.reason);
    }
    if (actions.lead) {
      logger()->info("leadership: leading under epoch {}", actions.epoch);
      if (hooks.lead) hooks.lead(actions.epoch, actions.initial);
    }
  }

  void arm() {
    if (machine.stopped()) return;
    const auto wake = machine.next_wake_mono_ms();
    if (wake == armed_for || wake == LeadershipMachine::k_never) return;  // the answer re-arms
    armed_for = wake;
    timer.expires_after(std::chrono::milliseconds{std::max<std::int64_t>(0, wake - now_mono_ms())});
    timer.async_wait([weak = weak_from_this()](const error_code& ec) {
      auto again = weak.lock();
      if (!again || ec) return;
      again->armed_for = -1;
      again->on_timer();
    });
  }

  void on_timer() {
    const auto now = now_mono_ms();
    perform(machine.on_wake(now));
    if (now >= machine.next_attempt_mono_ms()) attempt();
    arm();
  }

  void attempt() {
    const auto now = now_mono_ms();
    if (!machine.attempt_started(now)) return;
    auto lease = std::make_shared<LeaderLease>();
    v1::CoordinatorInfo info = self;
    info.set_state(machine.leading() ? v1::COORDINATOR_STATE_LEADER : v1::COORDINATOR_STATE_STANDBY);
    // Ahead of the queued fire writes: a backlog must not delay the renewal past the TTL.
    store.transact_urgent(
        [lease, info, id = machine.options().coordinator_id, ttl = machine.options().ttl, addresses = addresses](
            StoreTransaction& tx, error_code&) mutable {
          *lease = tx.acquire_or_renew_leader(id, addresses, ttl);
          const bool mine = lease->holder_id == id && lease->held();
          info.set_state(mine ? v1::COORDINATOR_STATE_LEADER : v1::COORDINATOR_STATE_STANDBY);
          tx.put_coordinator_heartbeat(info);
        },
        [weak = weak_from_this(), lease](error_code ec) {
          auto again = weak.lock();
          if (!again) return;
          const auto at = now_mono_ms();
          again->last_attempt_ok = !ec;
          if (ec) {
            logger()->warn("leadership: the lease attempt failed: {}", ec.message());
            again->perform(again->machine.on_attempt_failed(at, ec.message()));
          } else {
            again->perform(again->machine.on_lease(*lease, at));
            if (again->hooks.lease_seen) again->hooks.lease_seen(*lease);
          }
          if (auto first = std::exchange(again->first_answer, nullptr)) first();
          again->arm();
        });
  }
};

LeadershipDriver::LeadershipDriver(asio::any_io_executor executor, Store& store, LeadershipOptions options,
                                   v1::CoordinatorInfo self, CoordinatorAddresses addresses)
    : impl_(std::make_shared<Impl>(executor, store, std::move(options), std::move(self), std::move(addresses))) {}

LeadershipDriver::~LeadershipDriver() { impl_->timer.cancel(); }

void LeadershipDriver::set_hooks(LeadershipHooks hooks) { impl_->hooks = std::move(hooks); }

void LeadershipDriver::start(std::function<void()> first_answer) {
  impl_->first_answer = std::move(first_answer);
  impl_->attempt();
  impl_->arm();
}

void LeadershipDriver::stop(std::function<void()> done) {
  auto& impl = *impl_;
  impl.perform(impl.machine.stop());
  impl.timer.cancel();
  v1::CoordinatorInfo info = impl.self;
  info.set_state(v1::COORDINATOR_STATE_STOPPED);
  impl.store.transact(
      [info, id = impl.machine.options().coordinator_id](StoreTransaction& tx, error_code&) {
        // The lease goes at once (when this coordinator holds it): a standby takes it at its
        // next poll, not at the expiry. Queued after this scheduler's last transactions.
        tx.release_leader(id);
        tx.put_coordinator_heartbeat(info);
      },
      [done = std::move(done)](error_code ec) {
        if (ec) logger()->warn("leadership: releasing the lease failed: {}", ec.message());
        if (done) done();
      });
}

const LeadershipMachine& LeadershipDriver::machine() const noexcept { return impl_->machine; }

bool LeadershipDriver::store_reachable() const noexcept { return impl_->last_attempt_ok; }

bool LeadershipDriver::may_send() const noexcept { return impl_->machine.may_send(now_mono_ms()); }

std::int64_t LeadershipDriver::now_mono_ms() noexcept {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace quartzflow::detail
