// SPDX-License-Identifier: Apache-2.0
// ClusterRole: leadership decisions applied to the scheduler and the dispatcher; the wait
// for agents before a new leader fires; the cluster status read.
#include "cluster_role.hpp"

#include <algorithm>
#include <set>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include <quartzflow/log.hpp>

#include "../common/clock.hpp"
#include "leadership_driver.hpp"

namespace quartzflow::detail {

namespace asio = boost::asio;

namespace {

/// How often a new leader checks whether the agents it expects have reconnected.
constexpr std::chrono::milliseconds k_takeover_poll{50};

}  // namespace

struct ClusterRole::Impl : std::enable_shared_from_this<ClusterRole::Impl> {
  Impl(asio::any_io_executor ex, Store& s, Scheduler& sc, CoordinatorDispatcher& d, const CoordinatorOptions& o,
       std::function<void()> took, std::function<void(std::int64_t)> begin)
      : executor(ex),
        store(s),
        scheduler(sc),
        dispatcher(d),
        options(o),
        took_lease(std::move(took)),
        begin_term(std::move(begin)),
        wait_timer(ex),
        driver(ex, s, leadership_options(o), self_info(o), addresses(o)) {}

  static std::string id_of(const CoordinatorOptions& o) {
    return o.cluster.coordinator_id.empty() ? o.dispatcher.coordinator_id : o.cluster.coordinator_id;
  }
  static LeadershipOptions leadership_options(const CoordinatorOptions& o) {
    LeadershipOptions l;
    l.coordinator_id = id_of(o);
    l.ttl = o.cluster.lease_ttl;
    return l;
  }
  static v1::CoordinatorInfo self_info(const CoordinatorOptions& o) {
    v1::CoordinatorInfo info;
    info.set_id(id_of(o));
    info.set_admin_address(o.cluster.advertise_admin_address);
    info.set_agent_address(o.cluster.advertise_agent_address);
    info.set_version(o.cluster.version);
    info.set_started_unix_ms(now_unix_ms());
    return info;
  }
  static CoordinatorAddresses addresses(const CoordinatorOptions& o) {
    return {o.cluster.advertise_agent_address, o.cluster.advertise_admin_address};
  }

  asio::any_io_executor executor;
  Store& store;
  Scheduler& scheduler;
  CoordinatorDispatcher& dispatcher;
  const CoordinatorOptions& options;
  std::function<void()> took_lease;
  std::function<void(std::int64_t)> begin_term;
  asio::steady_timer wait_timer;
  LeadershipDriver driver;
  std::uint64_t term = 0;  // +1 at every lead and step down: the waits of an old term do nothing
  /// Commands queued by standbys may run: the term began (a takeover waited for the agents),
  /// or this coordinator led from its start (its own API runs triggers at once too).
  bool commands_ready = false;
  bool stopping = false;

  void lead(std::uint64_t epoch, bool initial) {
    ++term;
    commands_ready = initial;
    dispatcher.lead();
    SchedulerFence fence;
    fence.epoch = epoch;
    fence.may_send = [weak = weak_from_this()] {
      auto self = weak.lock();
      return self && self->driver.may_send();
    };
    scheduler.set_fence(std::move(fence));
    if (took_lease) took_lease();
    const auto started = now_unix_ms();
    if (initial) {
      // The process has just started: agents come back with their reconnect backoff.
      wait_timer.expires_after(options.agent_grace);
      wait_timer.async_wait([weak = weak_from_this(), of_term = term, started](const error_code& ec) {
        auto self = weak.lock();
        if (self && !ec && self->term == of_term) self->begin_term(started);
      });
      return;
    }
    // A takeover: the agents of the old leader are reconnecting now; fire once they are
    // here (or after the wait), so the fires owed find them.
    const auto until =
        std::chrono::steady_clock::now() + std::min(options.cluster.takeover_agent_wait, options.agent_grace);
    auto expected = std::make_shared<std::set<std::string>>();
    store.read(
        [expected](StoreTransaction& tx, error_code&) {
          v1::ListAgentsRequest request;
          request.set_state(v1::AGENT_STATE_ONLINE);
          request.set_page_size(500);
          for (std::uint32_t page = 1; page <= 100; ++page) {
            request.set_page(page);
            auto listing = tx.list_agents(request);
            for (const auto& a : listing.items) expected->insert(a.id());
            if (listing.items.size() < 500) break;
          }
        },
        [weak = weak_from_this(), of_term = term, expected, until, started](error_code ec) {
          auto self = weak.lock();
          if (!self || self->term != of_term) return;
          if (ec) logger()->warn("leadership: reading the agents to wait for failed: {}", ec.message());
          self->await_agents(of_term, expected, until, started);
        });
  }

  void await_agents(std::uint64_t of_term, std::shared_ptr<std::set<std::string>> expected,
                    std::chrono::steady_clock::time_point until, std::int64_t started) {
    for (const auto& id : dispatcher.online_agents()) expected->erase(id);
    if (expected->empty() || std::chrono::steady_clock::now() >= until) {
      if (!expected->empty())
        logger()->info("leadership: firing without {} agent(s) that have not reconnected yet", expected->size());
      commands_ready = true;
      return begin_term(started);
    }
    wait_timer.expires_after(k_takeover_poll);
    wait_timer.async_wait([weak = weak_from_this(), of_term, expected, until, started](const error_code& ec) {
      auto self = weak.lock();
      if (self && !ec && self->term == of_term) self->await_agents(of_term, expected, until, started);
    });
  }

  void step_down() {
    ++term;
    commands_ready = false;
    wait_timer.cancel();
    scheduler.stop();  // at once: nothing more is planned, recorded or sent by this term
    // Agents stay until another coordinator is known to lead (this one may lead again at
    // its next attempt); registrations are refused meanwhile.
    const auto& lease = driver.machine().last_lease();
    dispatcher.stand_by(redirect_address(lease), other_leads(lease) || stopping);
  }

  bool other_leads(const LeaderLease& lease) const {
    return lease.held() && lease.holder_id != driver.machine().options().coordinator_id;
  }
  std::string redirect_address(const LeaderLease& lease) const {
    return other_leads(lease) ? lease.holder_addresses.agent : std::string{};
  }

  void lease_seen(const LeaderLease& lease) {
    if (driver.machine().leading()) return;
    dispatcher.stand_by(redirect_address(lease), other_leads(lease));
  }
};

ClusterRole::ClusterRole(asio::any_io_executor executor, Store& store, Scheduler& scheduler,
                         CoordinatorDispatcher& dispatcher, const CoordinatorOptions& options,
                         std::function<void()> took_lease, std::function<void(std::int64_t)> begin_term)
    : impl_(std::make_shared<Impl>(executor, store, scheduler, dispatcher, options, std::move(took_lease),
                                   std::move(begin_term))) {
  LeadershipHooks hooks;
  hooks.lead = [weak = impl_->weak_from_this()](std::uint64_t epoch, bool initial) {
    if (auto self = weak.lock()) self->lead(epoch, initial);
  };
  hooks.step_down = [weak = impl_->weak_from_this()](const std::string&) {
    if (auto self = weak.lock()) self->step_down();
  };
  hooks.lease_seen = [weak = impl_->weak_from_this()](const LeaderLease& lease) {
    if (auto self = weak.lock()) self->lease_seen(lease);
  };
  impl_->driver.set_hooks(std::move(hooks));
}

ClusterRole::~ClusterRole() { impl_->wait_timer.cancel(); }

void ClusterRole::start(std::function<void()> ready) {
  // Until the lease answers, agents that connect are told to come back.
  impl_->dispatcher.stand_by({}, false);
  impl_->driver.start(std::move(ready));
}

void ClusterRole::stop() {
  impl_->stopping = true;
  impl_->driver.stop({});
}

bool ClusterRole::store_reachable() const noexcept { return impl_->driver.store_reachable(); }

bool ClusterRole::leading() const noexcept { return impl_->driver.may_send(); }

bool ClusterRole::runs_commands() const noexcept { return leading() && impl_->commands_ready; }

std::uint64_t ClusterRole::epoch() const noexcept { return impl_->driver.machine().epoch(); }

LeaderLease ClusterRole::lease() const { return impl_->driver.machine().last_lease(); }

std::string ClusterRole::not_leader_message() const {
  const auto& lease = impl_->driver.machine().last_lease();
  if (!lease.held())
    return fmt::format(
        "coordinator {} is a standby and no coordinator leads right now (the lease is being taken "
        "over); retry in a moment",
        impl_->driver.machine().options().coordinator_id);
  return fmt::format("coordinator {} is a standby: send this to the leader {} at {}",
                     impl_->driver.machine().options().coordinator_id, lease.holder_id,
                     lease.holder_addresses.admin.empty() ? std::string("(no admin address advertised)")
                                                          : lease.holder_addresses.admin);
}

void ClusterRole::cluster_status(std::function<void(error_code, v1::ClusterStatus)> done) {
  auto status = std::make_shared<v1::ClusterStatus>();
  auto& impl = *impl_;
  status->set_coordinator_id(impl.driver.machine().options().coordinator_id);
  status->set_state(impl.stopping                     ? v1::COORDINATOR_STATE_STOPPED
                    : impl.driver.machine().leading() ? v1::COORDINATOR_STATE_LEADER
                                                      : v1::COORDINATOR_STATE_STANDBY);
  status->set_lease_ttl_ms(impl.driver.machine().options().ttl.count());
  const auto ttl_ms = impl.driver.machine().options().ttl.count();
  impl.store.read(
      [status, ttl_ms](StoreTransaction& tx, error_code&) {
        const auto lease = tx.leader_lease();
        if (lease.held()) {
          status->set_leader_id(lease.holder_id);
          status->set_leader_admin_address(lease.holder_addresses.admin);
          status->set_leader_agent_address(lease.holder_addresses.agent);
        }
        status->set_epoch(lease.epoch);
        status->set_lease_expires_unix_ms(lease.expires_at_unix_ms);
        for (auto& c : tx.list_coordinators()) {
          c.set_alive(c.state() != v1::COORDINATOR_STATE_STOPPED &&
                      lease.now_unix_ms - c.last_seen_unix_ms() <= 3 * ttl_ms);
          *status->add_coordinators() = std::move(c);
        }
      },
      [status, done = std::move(done)](error_code ec) { done(ec, std::move(*status)); });
}

}  // namespace quartzflow::detail
