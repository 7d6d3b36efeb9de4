// SPDX-License-Identifier: Apache-2.0
// CommandRelay: the waiting side (queue, poll for the answer, withdraw at the deadline) and
// the leader's side (poll, claim behind the fence, run, answer or requeue; purge old rows).
#include "command_relay.hpp"

#include <map>
#include <vector>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fmt/format.h>

#include <quartzflow/log.hpp>

#include "../common/clock.hpp"

namespace quartzflow::detail {

namespace asio = boost::asio;
using std::chrono::steady_clock;

namespace {

constexpr std::chrono::seconds k_purge_interval{60};

v1::CommandResult fenced_result(std::string reason) {
  v1::CommandResult result;
  result.set_error_code(static_cast<int>(errc::fenced));
  result.set_error_reason(std::move(reason));
  return result;
}

const char* kind_text(v1::CommandKind kind) {
  switch (kind) {
    case v1::COMMAND_KIND_TRIGGER: return "trigger";
    case v1::COMMAND_KIND_RETRY: return "retry";
    case v1::COMMAND_KIND_CANCEL: return "cancel";
    default: return "command";
  }
}

}  // namespace

v1::CommandResult command_failure(error_code ec, const ValidationError& error) {
  v1::CommandResult result;
  // Codes of other categories (none expected) travel as a storage failure with their text.
  const bool ours = ec.category() == quartzflow_category();
  result.set_error_code(ours ? ec.value() : static_cast<int>(errc::store_failed));
  result.set_error_input(error.input);
  result.set_error_field(error.field);
  result.set_error_reason(!ours && error.reason.empty() ? ec.message() : error.reason);
  return result;
}

struct CommandRelay::Impl : std::enable_shared_from_this<CommandRelay::Impl> {
  Impl(asio::any_io_executor ex, Store& s, CommandRelayOptions o, CommandRelayHooks h)
      : executor(ex), store(s), options(std::move(o)), hooks(std::move(h)), leader_timer(ex), answer_timer(ex) {}

  struct Waiter {
    std::function<void(v1::CommandResult)> done;
    v1::CommandKind kind = v1::COMMAND_KIND_UNSPECIFIED;
    steady_clock::time_point deadline;
    bool taken = false;        // past `wait`, a leader had taken it: waiting `claimed_wait` more
    bool withdrawing = false;  // the withdraw transaction is under way
  };

  asio::any_io_executor executor;
  Store& store;
  CommandRelayOptions options;
  CommandRelayHooks hooks;
  asio::steady_timer leader_timer;
  asio::steady_timer answer_timer;
  std::map<std::int64_t, Waiter> waiters;
  bool answer_poll_armed = false;
  bool answer_read_in_flight = false;
  bool claiming = false;  // a poll, claim or run of the leader's side is under way
  bool stopped = false;
  steady_clock::time_point next_purge = steady_clock::now();

  // --- the waiting side ----------------------------------------------------------------

  void finish(std::int64_t id, v1::CommandResult result) {
    auto it = waiters.find(id);
    if (it == waiters.end()) return;
    auto done = std::move(it->second.done);
    waiters.erase(it);
    done(std::move(result));
  }

  void arm_answer_poll() {
    if (answer_poll_armed || waiters.empty() || stopped) return;
    answer_poll_armed = true;
    answer_timer.expires_after(options.answer_poll);
    answer_timer.async_wait([weak = weak_from_this()](const error_code& ec) {
      auto self = weak.lock();
      if (!self || ec) return;
      self->answer_poll_armed = false;
      self->poll_answers();
    });
  }

  void poll_answers() {
    if (stopped || waiters.empty()) return;
    if (answer_read_in_flight) return arm_answer_poll();
    auto ids = std::make_shared<std::vector<std::int64_t>>();
    for (const auto& [id, w] : waiters) ids->push_back(id);
    auto found = std::make_shared<std::vector<v1::Command>>();
    answer_read_in_flight = true;
    store.read([ids, found](StoreTransaction& tx, error_code&) { *found = tx.commands(*ids); },
               [weak = weak_from_this(), found](error_code ec) {
                 auto self = weak.lock();
                 if (!self) return;
                 self->answer_read_in_flight = false;
                 if (!ec) {
                   for (auto& c : *found) {
                     if (c.state() == v1::COMMAND_STATE_ANSWERED) self->finish(c.id(), std::move(*c.mutable_result()));
                     else if (c.state() == v1::COMMAND_STATE_WITHDRAWN) self->finish(c.id(), self->not_taken(c.kind()));
                   }
                 }
                 self->check_deadlines();
                 self->arm_answer_poll();
               });
  }

  v1::CommandResult not_taken(v1::CommandKind kind) const {
    return fenced_result(
        fmt::format("coordinator {} is a standby and no leader took this {} within {} ms: it was not run; {}",
                    options.coordinator_id, kind_text(kind), options.wait.count(),
                    hooks.leader_text ? hooks.leader_text() : std::string("no coordinator leads right now")));
  }

  void check_deadlines() {
    const auto now = steady_clock::now();
    std::vector<std::int64_t> due;
    for (auto& [id, w] : waiters)
      if (!w.withdrawing && now >= w.deadline) due.push_back(id);
    for (const auto id : due) {
      auto& w = waiters.at(id);
      if (w.taken) {
        finish(id, fenced_result(fmt::format(
                       "a leader took this {} but did not answer within {} ms: it may have run once; look for its "
                       "execution before sending it again; {}",
                       kind_text(w.kind), (options.wait + options.claimed_wait).count(),
                       hooks.leader_text ? hooks.leader_text() : std::string())));
        continue;
      }
      withdraw(id);
    }
  }

  void withdraw(std::int64_t id) {
    waiters.at(id).withdrawing = true;
    auto after = std::make_shared<std::optional<v1::Command>>();
    store.transact([id, after](StoreTransaction& tx, error_code&) { *after = tx.withdraw_command(id); },
                   [weak = weak_from_this(), id, after](error_code ec) {
                     auto self = weak.lock();
                     if (!self) return;
                     auto it = self->waiters.find(id);
                     if (it == self->waiters.end()) return;
                     auto& w = it->second;
                     w.withdrawing = false;
                     if (ec) {
                       // The store did not answer: whether a leader took it is unknown.
                       return self->finish(id, fenced_result(fmt::format(
                                                   "this {} could not be withdrawn after {} ms without an answer ({}): "
                                                   "it may run; look for its execution before sending it again",
                                                   kind_text(w.kind), self->options.wait.count(), ec.message())));
                     }
                     if (!*after || (*after)->state() == v1::COMMAND_STATE_WITHDRAWN)
                       return self->finish(id, self->not_taken(w.kind));
                     if ((*after)->state() == v1::COMMAND_STATE_ANSWERED)
                       return self->finish(id, std::move(*(*after)->mutable_result()));
                     // A leader took it: its answer may come yet.
                     w.taken = true;
                     w.deadline = steady_clock::now() + self->options.claimed_wait;
                     self->arm_answer_poll();
                   });
  }

  void submit(v1::Command command, std::function<void(v1::CommandResult)> done) {
    if (stopped) {
      asio::post(executor, [done = std::move(done)] { done(fenced_result("this coordinator is stopping")); });
      return;
    }
    command.set_origin_coordinator_id(options.coordinator_id);
    auto queued = std::make_shared<v1::Command>();
    const auto submitted = steady_clock::now();
    store.transact(
        [command = std::move(command), queued, wait = options.wait](StoreTransaction& tx, error_code&) {
          *queued = tx.queue_command(command, wait);
        },
        [weak = weak_from_this(), queued, submitted, done = std::move(done)](error_code ec) mutable {
          auto self = weak.lock();
          if (!self) return;
          if (ec) {
            v1::CommandResult failed;
            failed.set_error_code(ec.category() == quartzflow_category() ? ec.value()
                                                                         : static_cast<int>(errc::store_failed));
            failed.set_error_reason(fmt::format("the command could not be queued for the leader: {}", ec.message()));
            return done(std::move(failed));
          }
          Waiter w;
          w.done = std::move(done);
          w.kind = queued->kind();
          w.deadline = submitted + self->options.wait;
          self->waiters.emplace(queued->id(), std::move(w));
          self->arm_answer_poll();
        });
  }

  // --- the leader's side -----------------------------------------------------------------

  void arm_leader_poll() {
    if (stopped) return;
    leader_timer.expires_after(options.claim_poll);
    leader_timer.async_wait([weak = weak_from_this()](const error_code& ec) {
      auto self = weak.lock();
      if (!self || ec) return;
      self->leader_tick();
    });
  }

  void leader_tick() {
    const std::uint64_t epoch = hooks.runnable_epoch ? hooks.runnable_epoch() : 0;
    if (epoch == 0 || claiming) return arm_leader_poll();
    claiming = true;
    if (steady_clock::now() >= next_purge) {
      next_purge = steady_clock::now() + k_purge_interval;
      purge();
    }
    auto waiting = std::make_shared<bool>(false);
    store.read([waiting, epoch](StoreTransaction& tx, error_code&) { *waiting = tx.commands_waiting(epoch); },
               [weak = weak_from_this(), waiting, epoch](error_code ec) {
                 auto self = weak.lock();
                 if (!self) return;
                 if (ec || !*waiting) {
                   self->claiming = false;
                   return self->arm_leader_poll();
                 }
                 self->claim(epoch);
               });
  }

  void claim(std::uint64_t epoch) {
    auto claimed = std::make_shared<std::vector<v1::Command>>();
    store.transact(
        [claimed, epoch, id = options.coordinator_id, limit = options.claim_batch,
         abandon_after = options.abandon_after](StoreTransaction& tx, error_code&) {
          // The fence first: a deposed leader claims nothing.
          tx.check_fence(epoch);
          *claimed = tx.claim_commands(epoch, id, limit, abandon_after);
        },
        [weak = weak_from_this(), claimed, epoch](error_code ec) {
          auto self = weak.lock();
          if (!self) return;
          if (ec || claimed->empty()) {
            if (ec && ec != errc::fenced) logger()->warn("commands: claiming queued commands failed: {}", ec.message());
            self->claiming = false;
            return self->arm_leader_poll();
          }
          for (const auto& c : *claimed) {
            logger()->info("commands: running {} {} of {} queued by {} (command {})", kind_text(c.kind()),
                           c.target_id(), c.actor().name(), c.origin_coordinator_id(), c.id());
            self->hooks.run(c, [weak, id = c.id(), epoch](v1::CommandResult result) {
              if (auto again = weak.lock()) again->record(id, epoch, std::move(result));
            });
          }
          // The runs answer on their own: a slow one (a cancel waiting for its agent) holds
          // up no other command. A full batch: more may be queued, look again at once.
          self->claiming = false;
          if (claimed->size() < self->options.claim_batch) return self->arm_leader_poll();
          asio::post(self->executor, [weak] {
            if (auto next = weak.lock()) next->leader_tick();
          });
        });
  }

  void record(std::int64_t id, std::uint64_t epoch, v1::CommandResult result) {
    // Fenced: the run recorded nothing (its transaction failed the fence, or this coordinator
    // no longer led when it started): the next leader runs it.
    const bool requeue = result.error_code() == static_cast<int>(errc::fenced);
    store.transact(
        [id, epoch, result = std::move(result), requeue](StoreTransaction& tx, error_code&) {
          if (requeue) tx.requeue_command(id, epoch);
          else tx.answer_command(id, epoch, result);
        },
        [id, requeue](error_code ec) {
          if (ec)
            logger()->error("commands: recording the {} of command {} failed: {}", requeue ? "requeue" : "answer", id,
                            ec.message());
        });
  }

  void purge() {
    const std::int64_t before = now_unix_ms() - options.keep.count();
    store.transact([before](StoreTransaction& tx, error_code&) { tx.purge_commands(before); },
                   [](error_code ec) {
                     if (ec) logger()->warn("commands: purging old commands failed: {}", ec.message());
                   });
  }
};

CommandRelay::CommandRelay(asio::any_io_executor executor, Store& store, CommandRelayOptions options,
                           CommandRelayHooks hooks)
    : impl_(std::make_shared<Impl>(executor, store, std::move(options), std::move(hooks))) {}

CommandRelay::~CommandRelay() {
  impl_->stopped = true;
  impl_->leader_timer.cancel();
  impl_->answer_timer.cancel();
}

void CommandRelay::start() {
  impl_->stopped = false;
  impl_->arm_leader_poll();
}

void CommandRelay::stop() {
  impl_->stopped = true;
  impl_->leader_timer.cancel();
  impl_->answer_timer.cancel();
  auto waiters = std::move(impl_->waiters);
  impl_->waiters.clear();
  for (auto& [id, w] : waiters) {
    asio::post(impl_->executor, [done = std::move(w.done)] {
      done(fenced_result("this coordinator stopped before the leader answered"));
    });
  }
}

void CommandRelay::submit(v1::Command command, std::function<void(v1::CommandResult)> done) {
  impl_->submit(std::move(command), std::move(done));
}

std::size_t CommandRelay::waiting() const noexcept { return impl_->waiters.size(); }

}  // namespace quartzflow::detail
