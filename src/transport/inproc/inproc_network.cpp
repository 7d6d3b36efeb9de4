// SPDX-License-Identifier: Apache-2.0
// The in-process network: each link is two message pipes with a timer each, so delayed
// messages keep their order; closing travels through the pipe behind the data sent before.
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <quartzflow/transport.hpp>

namespace quartzflow {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

namespace {

/// A message in flight, or (no data) the close notification that follows the data.
struct InFlight {
  Clock::time_point deliver_at;
  std::optional<std::string> data;
  std::string close_reason;
};

struct LinkState;

/// One direction of a link: what travels to `receiver`.
struct Pipe {
  explicit Pipe(asio::any_io_executor ex) : timer(ex) {}
  std::deque<InFlight> queue;
  asio::steady_timer timer;
  bool draining = false;
};

struct Side {
  explicit Side(asio::any_io_executor ex) : inbound(ex) {}
  Pipe inbound;                 // messages to this side
  Connection::Handlers handlers;
  bool started = false;
  bool closed_notified = false;
};

}  // namespace

struct InprocNetwork::Impl {
  Impl(asio::any_io_executor ex, std::uint64_t seed) : executor(ex), random(seed) {}
  asio::any_io_executor executor;
  std::mt19937_64 random;
  LinkFaults faults;
  std::map<std::string, AcceptHandler> listeners;
  std::set<std::string> isolated;
  std::vector<std::weak_ptr<LinkState>> links;
  InprocNetworkStats stats;

  /// True when the message is lost on the way.
  bool lose(const std::string& message, LinkDirection direction) {
    if (faults.drop_probability > 0 && std::uniform_real_distribution<double>(0, 1)(random) < faults.drop_probability)
      return true;
    if (faults.drop_if) {
      v1::Envelope decoded;
      if (decoded.ParseFromString(message) && faults.drop_if(decoded, direction)) return true;
    }
    return false;
  }
};

namespace {

constexpr int k_messages_per_turn = 64;

struct LinkState : std::enable_shared_from_this<LinkState> {
  LinkState(asio::any_io_executor ex, std::weak_ptr<InprocNetwork::Impl> n, std::string c, std::string a)
      : executor(ex), network(std::move(n)), client(std::move(c)), address(std::move(a)), sides{Side(ex), Side(ex)} {}
  asio::any_io_executor executor;
  std::weak_ptr<InprocNetwork::Impl> network;
  std::string client;
  std::string address;
  Side sides[2];  // 0 = agent end, 1 = coordinator end
  bool open = true;

  void enqueue(int to, InFlight item) {
    auto& pipe = sides[to].inbound;
    if (!pipe.queue.empty()) item.deliver_at = std::max(item.deliver_at, pipe.queue.back().deliver_at);
    pipe.queue.push_back(std::move(item));
    schedule(to);
  }

  void schedule(int to) {
    auto& pipe = sides[to].inbound;
    if (pipe.draining || pipe.queue.empty() || !sides[to].started) return;
    pipe.draining = true;
    pipe.timer.expires_at(pipe.queue.front().deliver_at);
    pipe.timer.async_wait([self = shared_from_this(), to](const error_code&) {
      self->sides[to].inbound.draining = false;
      self->drain(to);
    });
  }

  void drain(int to) {
    auto& side = sides[to];
    auto& pipe = side.inbound;
    const auto now = Clock::now();
    // A bounded number per handler, as a socket read would: timers and other links get turns.
    for (int delivered = 0; delivered < k_messages_per_turn && !pipe.queue.empty() &&
                            pipe.queue.front().deliver_at <= now && side.started;
         ++delivered) {
      InFlight item = std::move(pipe.queue.front());
      pipe.queue.pop_front();
      if (item.data) {
        if (side.closed_notified) continue;
        if (auto net = network.lock()) ++net->stats.messages_delivered;
        if (side.handlers.on_message) side.handlers.on_message(std::move(*item.data));
      } else {
        notify_closed(to, item.close_reason);
      }
    }
    schedule(to);
  }

  void notify_closed(int to, const std::string& reason) {
    auto& side = sides[to];
    if (side.closed_notified) return;
    side.closed_notified = true;
    if (side.handlers.on_closed) side.handlers.on_closed(reason);
  }

  /// The link breaks: nothing in flight arrives; both ends hear of it.
  void cut(const std::string& reason) {
    open = false;
    for (int to = 0; to < 2; ++to) {
      sides[to].inbound.queue.clear();
      sides[to].inbound.timer.cancel();
      enqueue(to, InFlight{Clock::now(), std::nullopt, reason});
    }
  }
};

class InprocEnd final : public Connection {
 public:
  InprocEnd(std::shared_ptr<LinkState> link, int side) : link_(std::move(link)), side_(side) {}
  ~InprocEnd() override {
    if (link_->open) close("connection released");
  }

  void start(Handlers handlers) override {
    auto& side = link_->sides[side_];
    side.handlers = std::move(handlers);
    side.started = true;
    link_->schedule(side_);
  }

  bool send(std::string message) override {
    auto net = link_->network.lock();
    if (!link_->open || !net) return false;
    const auto direction = side_ == 0 ? LinkDirection::to_coordinator : LinkDirection::to_agent;
    if (net->lose(message, direction)) {
      ++net->stats.messages_dropped;
      return true;  // lost on the way: the sender cannot tell
    }
    link_->enqueue(1 - side_, InFlight{Clock::now() + net->faults.delay, std::move(message), {}});
    return true;
  }

  void close(std::string reason) override {
    if (!link_->open) return;
    link_->open = false;
    link_->sides[side_].closed_notified = true;  // no on_closed for our own close
    link_->enqueue(1 - side_, InFlight{Clock::now(), std::nullopt, std::move(reason)});
  }

  bool is_open() const noexcept override { return link_->open; }
  std::string remote_address() const override { return side_ == 1 ? "inproc:" + link_->client : "inproc:" + link_->address; }

 private:
  std::shared_ptr<LinkState> link_;
  int side_;
};

class InprocConnector final : public Connector {
 public:
  InprocConnector(std::weak_ptr<InprocNetwork::Impl> net, std::string address, std::string client)
      : network_(std::move(net)), address_(std::move(address)), client_(std::move(client)) {}

  void connect(ConnectHandler handler) override {
    auto network = network_.lock();
    if (!network) return;  // the network is gone: nobody will ever answer
    asio::post(network->executor, [weak = network_, address = address_, client = client_, handler = std::move(handler)] {
      auto net = weak.lock();
      if (!net) return;
      auto listener = net->listeners.find(address);
      if (listener == net->listeners.end() || net->isolated.count(client)) {
        handler(asio::error::connection_refused, nullptr);
        return;
      }
      auto link = std::make_shared<LinkState>(net->executor, weak, client, address);
      net->links.push_back(link);
      ++net->stats.connections;
      auto accept = listener->second;
      accept(std::make_shared<InprocEnd>(link, 1));
      handler({}, std::make_shared<InprocEnd>(link, 0));
    });
  }

 private:
  std::weak_ptr<InprocNetwork::Impl> network_;
  std::string address_;
  std::string client_;
};

}  // namespace

InprocNetwork::InprocNetwork(asio::any_io_executor executor, std::uint64_t seed)
    : impl_(std::make_shared<Impl>(executor, seed)) {}

InprocNetwork::~InprocNetwork() {
  for (auto& weak : impl_->links)
    if (auto link = weak.lock(); link && link->open) link->cut("network destroyed");
}

void InprocNetwork::listen(const std::string& address, AcceptHandler accept) {
  impl_->listeners[address] = std::move(accept);
}

void InprocNetwork::unlisten(const std::string& address) {
  impl_->listeners.erase(address);
  for (auto& weak : impl_->links)
    if (auto link = weak.lock(); link && link->open && link->address == address) link->cut("coordinator gone");
}

std::unique_ptr<Connector> InprocNetwork::connector(std::string address, std::string client_name) {
  return std::make_unique<InprocConnector>(impl_, std::move(address), std::move(client_name));
}

void InprocNetwork::cut(const std::string& client_name) {
  auto& links = impl_->links;
  for (auto& weak : links)
    if (auto link = weak.lock(); link && link->open && link->client == client_name) link->cut("link cut");
  std::erase_if(links, [](const auto& weak) { return weak.expired(); });
}

void InprocNetwork::isolate(const std::string& client_name, bool isolated) {
  if (isolated) {
    impl_->isolated.insert(client_name);
    cut(client_name);
  } else {
    impl_->isolated.erase(client_name);
  }
}

void InprocNetwork::set_faults(LinkFaults faults) { impl_->faults = std::move(faults); }
InprocNetworkStats InprocNetwork::stats() const noexcept { return impl_->stats; }

}  // namespace quartzflow
