// ReplicaClient: the sync loop (snapshot, catch-up, live long-poll, resync,
// reconnect), the fallback status poller, and endpoint failover, all as
// coroutines on one private io_context thread. The replica itself is a
// ReplicaStore that readers query from any thread.
#include "shapeproxy/replica_client.h"

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>

#include "backoff.h"
#include "circuit_breaker.h"
#include "endpoint.h"
#include "endpoint_selector.h"
#include "http_connection.h"
#include "listener_registry.h"
#include "replica_store.h"
#include "shape_messages.h"
#include "shape_request.h"
#include "status_poll.h"

namespace shapeproxy::client {

namespace asio = boost::asio;
using namespace detail;

const char* to_string(SyncState state) {
  switch (state) {
    case SyncState::kStopped:
      return "stopped";
    case SyncState::kSyncing:
      return "syncing";
    case SyncState::kLive:
      return "live";
    case SyncState::kFallback:
      return "fallback";
    case SyncState::kReconnecting:
      return "reconnecting";
  }
  return "unknown";
}

const char* to_string(Operation operation) {
  switch (operation) {
    case Operation::kInsert:
      return "insert";
    case Operation::kUpdate:
      return "update";
    case Operation::kDelete:
      return "delete";
    case Operation::kTruncate:
      return "truncate";
  }
  return "unknown";
}

namespace {

std::chrono::milliseconds retry_after(const HttpResponse& response) {
  auto header = response.header("retry-after");
  auto seconds = header ? retry_after_seconds(*header) : std::nullopt;
  return seconds ? std::chrono::milliseconds(*seconds) : std::chrono::milliseconds(0);
}

}  // namespace

class ReplicaClient::Impl : public std::enable_shared_from_this<ReplicaClient::Impl> {
 public:
  explicit Impl(ReplicaClientOptions options)
      : options_(std::move(options)),
        store_(options_.indexed_columns),
        changes_(std::make_shared<ListenerRegistry<Change>>()),
        statuses_(std::make_shared<ListenerRegistry<SyncStatus>>()),
        random_(seed()),
        backoff_(options_.backoff_initial, options_.backoff_max, [this] { return uniform(); }),
        sync_connection_(ioc_.get_executor()),
        status_connection_(ioc_.get_executor()),
        sleep_timer_(ioc_),
        status_timer_(ioc_) {}

  bool start();
  void stop();
  bool await_ready(std::chrono::milliseconds timeout) const {
    std::unique_lock lock(mutex_);
    return ready_cv_.wait_for(lock, timeout, [this] { return ready_; });
  }

  ReplicaStore& store() { return store_; }
  std::shared_ptr<ListenerRegistry<Change>> changes() { return changes_; }
  std::shared_ptr<ListenerRegistry<SyncStatus>> statuses() { return statuses_; }

  SyncStatus status() const {
    std::lock_guard lock(mutex_);
    return status_;
  }
  bool is_up_to_date() const {
    std::lock_guard lock(mutex_);
    return position_.live;
  }
  std::string last_offset() const {
    std::lock_guard lock(mutex_);
    return position_.offset;
  }
  std::string handle() const {
    std::lock_guard lock(mutex_);
    return position_.handle;
  }
  bool is_fallback() const { return fallback_.load(); }

 private:
  struct Attempt {
    bool ok = false;
    bool cancelled = false;
    std::string error;
    std::size_t endpoint = 0;
    std::chrono::milliseconds retry_after{0};  // from a 503/429, if the server said
    HttpResponse response;
  };

  static std::uint64_t seed() {
    std::random_device device;
    return (static_cast<std::uint64_t>(device()) << 32) ^ device();
  }
  double uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(random_); }

  asio::awaitable<void> sync_loop();
  asio::awaitable<Attempt> fetch(const ShapePosition& position);
  asio::awaitable<void> status_poller();
  asio::awaitable<void> sleep(std::chrono::milliseconds delay);

  // Each returns the delay before the next request (0: at once).
  std::chrono::milliseconds on_ok(const HttpResponse& response, std::size_t endpoint);
  std::chrono::milliseconds on_must_refetch(std::optional<std::string> new_handle,
                                            const std::string& why, std::size_t endpoint);
  std::chrono::milliseconds on_failure(const std::string& why, std::size_t endpoint,
                                       std::chrono::milliseconds at_least = {});

  void set_status(SyncState state, std::size_t endpoint, std::string detail);
  void set_fallback(bool on, std::size_t endpoint);
  std::vector<std::pair<std::string, std::string>> request_headers() const;

  ReplicaClientOptions options_;
  std::vector<Endpoint> endpoints_;
  std::vector<CircuitBreaker> breakers_;
  std::optional<EndpointSelector> selector_;
  ReplicaStore store_;
  std::shared_ptr<ListenerRegistry<Change>> changes_;
  std::shared_ptr<ListenerRegistry<SyncStatus>> statuses_;

  mutable std::mutex mutex_;  // guards position_, status_, ready_
  mutable std::condition_variable ready_cv_;
  ShapePosition position_;
  SyncStatus status_;
  bool ready_ = false;
  std::atomic<bool> fallback_{false};

  // I/O thread only:
  std::mt19937_64 random_;
  Backoff backoff_;
  asio::io_context ioc_;
  HttpConnection sync_connection_;
  HttpConnection status_connection_;
  asio::steady_timer sleep_timer_;
  asio::steady_timer status_timer_;
  std::size_t current_endpoint_ = 0;
  bool stopping_ = false;
  bool refresh_requested_ = false;
  bool poller_running_ = false;
  std::thread thread_;
};

bool ReplicaClient::Impl::start() {
  if (thread_.joinable()) return true;
  endpoints_.clear();
  breakers_.clear();
  std::string problem;
  for (const auto& url : options_.endpoints) {
    auto endpoint = parse_endpoint(url);
    if (!endpoint) {
      problem = "invalid endpoint '" + url + "' (expected http://host[:port][/prefix])";
      break;
    }
    endpoints_.push_back(*endpoint);
    breakers_.emplace_back(options_.breaker_failure_threshold, options_.breaker_open_for);
  }
  if (problem.empty() && endpoints_.empty()) problem = "no endpoints";
  if (problem.empty() && options_.table.empty()) problem = "no table";
  if (!problem.empty()) {
    set_status(SyncState::kStopped, 0, problem);
    return false;
  }
  if (options_.selection == EndpointSelection::kConsistentHash)
    selector_ = EndpointSelector::consistent_hash(options_.endpoints, shape_identity(options_));
  else
    selector_ = EndpointSelector::round_robin(endpoints_.size(), random_() % endpoints_.size());
  stopping_ = false;
  ioc_.restart();
  set_status(SyncState::kSyncing, selector_->order().front(), "starting");
  asio::co_spawn(ioc_, sync_loop(), [](std::exception_ptr) {});
  thread_ = std::thread([this] { ioc_.run(); });
  return true;
}

void ReplicaClient::Impl::stop() {
  if (!thread_.joinable()) return;
  const bool from_io_thread = std::this_thread::get_id() == thread_.get_id();
  asio::post(ioc_, [this] {
    stopping_ = true;
    sync_connection_.cancel();
    status_connection_.cancel();
    sleep_timer_.cancel();
    status_timer_.cancel();
  });
  if (from_io_thread) return;  // from a listener: stops when it returns; joined later
  thread_.join();
  fallback_ = false;
  set_status(SyncState::kStopped, current_endpoint_, "stopped");
}

asio::awaitable<void> ReplicaClient::Impl::sleep(std::chrono::milliseconds delay) {
  if (delay.count() <= 0 || stopping_) co_return;
  boost::system::error_code ec;
  auto token = asio::redirect_error(asio::use_awaitable, ec);
  sleep_timer_.expires_after(delay);
  co_await sleep_timer_.async_wait(token);
}

std::vector<std::pair<std::string, std::string>> ReplicaClient::Impl::request_headers() const {
  std::vector<std::pair<std::string, std::string>> headers;
  std::string agent = "shapeproxy-cpp-client/0.1";
  if (!options_.client_id.empty()) {
    agent += " (" + options_.client_id + ")";
    headers.emplace_back("x-client-id", options_.client_id);
  }
  headers.emplace_back("user-agent", agent);
  return headers;
}

asio::awaitable<ReplicaClient::Impl::Attempt> ReplicaClient::Impl::fetch(
    const ShapePosition& position) {
  Attempt attempt;
  attempt.error = "every endpoint's circuit breaker is open";
  const auto headers = request_headers();
  const RequestTimeouts timeouts{options_.connect_timeout,
                                 position.live ? options_.live_timeout : options_.request_timeout};
  std::size_t budget = endpoints_.size();
  if (options_.attempt_budget > 0)
    budget = std::min<std::size_t>(budget, static_cast<std::size_t>(options_.attempt_budget));
  std::size_t tried = 0;
  for (std::size_t index : selector_->order()) {
    if (tried == budget || stopping_) break;
    if (!breakers_[index].allow(CircuitBreaker::Clock::now())) continue;
    ++tried;
    attempt.endpoint = index;
    const std::string target = shape_target(endpoints_[index], options_, position);
    HttpOutcome outcome =
        co_await sync_connection_.get(endpoints_[index], target, headers, timeouts);
    if (outcome.cancelled || stopping_) {
      breakers_[index].record_abandoned();
      attempt.cancelled = true;
      co_return attempt;
    }
    bool server_trouble =
        outcome.ok && (outcome.response.status >= 500 || outcome.response.status == 429);
    if (!outcome.ok || server_trouble) {
      breakers_[index].record_failure(CircuitBreaker::Clock::now());
      if (server_trouble) attempt.retry_after = retry_after(outcome.response);
      attempt.error = outcome.ok ? endpoints_[index].url + " answered HTTP " +
                                       std::to_string(outcome.response.status)
                                 : outcome.error;
      continue;
    }
    breakers_[index].record_success();
    selector_->on_success(index);
    attempt.ok = true;
    attempt.response = std::move(outcome.response);
    co_return attempt;
  }
  co_return attempt;
}

asio::awaitable<void> ReplicaClient::Impl::sync_loop() {
  while (!stopping_) {
    ShapePosition position;
    {
      std::lock_guard lock(mutex_);
      position = position_;
    }
    Attempt attempt = co_await fetch(position);
    if (stopping_) break;
    std::chrono::milliseconds delay{0};
    if (attempt.cancelled) {
      refresh_requested_ = false;  // cut short on purpose: ask again at once
    } else if (!attempt.ok) {
      delay = on_failure(attempt.error, attempt.endpoint, attempt.retry_after);
    } else if (attempt.response.status == 409) {
      delay = on_must_refetch(attempt.response.header("electric-handle"), "409 must-refetch",
                              attempt.endpoint);
    } else if (attempt.response.status == 200) {
      delay = on_ok(attempt.response, attempt.endpoint);
    } else {
      std::string body = attempt.response.body.substr(0, 300);
      delay = on_failure(endpoints_[attempt.endpoint].url + " answered HTTP " +
                             std::to_string(attempt.response.status) + ": " + body,
                         attempt.endpoint);
    }
    co_await sleep(delay);
  }
}

std::chrono::milliseconds ReplicaClient::Impl::on_failure(const std::string& why,
                                                          std::size_t endpoint,
                                                          std::chrono::milliseconds at_least) {
  sync_connection_.close();
  // The server's retry-after is honoured, within the configured ceiling.
  auto delay = std::max(backoff_.next(), std::min(at_least, options_.backoff_max));
  set_status(SyncState::kReconnecting, endpoint,
             why + " (retry in " + std::to_string(delay.count()) + " ms)");
  return delay;
}

std::chrono::milliseconds ReplicaClient::Impl::on_must_refetch(
    std::optional<std::string> new_handle, const std::string& why, std::size_t endpoint) {
  backoff_.reset();
  {
    std::lock_guard lock(mutex_);
    position_ = ShapePosition{};
    if (new_handle) position_.handle = *new_handle;
    ready_ = false;
  }
  store_.clear();
  std::vector<Change> events{Change{Operation::kTruncate, std::nullopt, std::nullopt}};
  changes_->dispatch(events);
  set_status(SyncState::kSyncing, endpoint, why + ": resyncing from the start");
  return std::chrono::milliseconds(0);
}

std::chrono::milliseconds ReplicaClient::Impl::on_ok(const HttpResponse& response,
                                                     std::size_t endpoint) {
  auto handle = response.header("electric-handle");
  auto offset = response.header("electric-offset");
  if (!handle || !offset || handle->empty() || offset->empty())
    return on_failure("response without electric-handle/electric-offset", endpoint);
  auto parsed_or_error = parse_shape_body(response.body);
  if (auto* error = std::get_if<std::string>(&parsed_or_error))
    return on_failure("unreadable shape response: " + *error, endpoint);
  auto& parsed = std::get<ParsedBody>(parsed_or_error);
  if (parsed.must_refetch) return on_must_refetch(std::nullopt, "must-refetch", endpoint);
  backoff_.reset();

  std::vector<Change> events;
  events.reserve(parsed.messages.size());
  for (const auto& message : parsed.messages) {
    if (const auto* change = std::get_if<ChangeMessage>(&message)) {
      if (auto event = store_.apply(*change)) events.push_back(std::move(*event));
    }
  }
  bool up_to_date = parsed.ends_up_to_date || response.header("electric-up-to-date").has_value();
  bool newly_ready = false;
  {
    std::lock_guard lock(mutex_);
    position_.handle = *handle;
    position_.offset = *offset;
    if (auto cursor = response.header("electric-cursor")) position_.cursor = *cursor;
    if (up_to_date) {
      position_.live = true;
      newly_ready = !ready_;
      ready_ = true;
    }
  }
  if (newly_ready) ready_cv_.notify_all();
  changes_->dispatch(events);

  auto flag = response.header("electric-fallback-mode");
  set_fallback(flag && *flag == "true", endpoint);
  bool live;
  {
    std::lock_guard lock(mutex_);
    live = position_.live;
  }
  if (live)
    set_status(fallback_ ? SyncState::kFallback : SyncState::kLive, endpoint, "");
  else
    set_status(SyncState::kSyncing, endpoint, "catching up");
  return std::chrono::milliseconds(0);
}

void ReplicaClient::Impl::set_fallback(bool on, std::size_t endpoint) {
  current_endpoint_ = endpoint;
  if (fallback_.exchange(on) == on) return;
  if (on && !poller_running_) {
    poller_running_ = true;
    asio::co_spawn(ioc_, status_poller(), [](std::exception_ptr) {});
  }
  if (!on) status_timer_.cancel();  // the poller sees fallback_ off and ends
}

asio::awaitable<void> ReplicaClient::Impl::status_poller() {
  std::optional<std::chrono::seconds> age;
  boost::system::error_code ec;
  auto token = asio::redirect_error(asio::use_awaitable, ec);
  const auto headers = request_headers();
  while (!stopping_ && fallback_) {
    status_timer_.expires_after(next_status_poll(options_.status_poll_interval, age));
    co_await status_timer_.async_wait(token);
    if (stopping_ || !fallback_) break;
    const Endpoint& endpoint = endpoints_[current_endpoint_];
    const std::string target = status_target(endpoint);
    const RequestTimeouts timeouts{options_.connect_timeout, options_.request_timeout};
    HttpOutcome outcome = co_await status_connection_.get(endpoint, target, headers, timeouts);
    if (stopping_ || !fallback_) break;
    if (!outcome.ok || outcome.response.status != 200) continue;
    if (auto cache_control = outcome.response.header("cache-control"))
      age = max_age(*cache_control);
    auto state = status_from_body(outcome.response.body);
    if (state && *state == "live") {
      // The proxy is live again: leave fallback and cut the parked long-poll
      // short so the next request is answered from the live log.
      fallback_ = false;
      set_status(SyncState::kLive, current_endpoint_, "proxy reports live");
      refresh_requested_ = true;
      sync_connection_.cancel();
      break;
    }
  }
  status_connection_.close();
  poller_running_ = false;
}

void ReplicaClient::Impl::set_status(SyncState state, std::size_t endpoint, std::string detail) {
  SyncStatus next{state, endpoints_.empty() ? std::string() : endpoints_[endpoint].url,
                  std::move(detail)};
  {
    std::lock_guard lock(mutex_);
    bool same = status_.state == next.state && status_.endpoint == next.endpoint;
    status_ = next;
    if (same && state != SyncState::kReconnecting) return;
  }
  std::vector<SyncStatus> events{std::move(next)};
  statuses_->dispatch(events);
}

// ---------------------------------------------------------------------------

ReplicaClient::ReplicaClient(ReplicaClientOptions options)
    : impl_(std::make_shared<Impl>(std::move(options))) {}

ReplicaClient::~ReplicaClient() { stop(); }

bool ReplicaClient::start() { return impl_->start(); }
bool ReplicaClient::await_ready(std::chrono::milliseconds timeout) const {
  return impl_->await_ready(timeout);
}
void ReplicaClient::stop() { impl_->stop(); }

std::optional<Row> ReplicaClient::get(std::string_view key) const {
  return impl_->store().get(key);
}
std::vector<Row> ReplicaClient::lookup(std::string_view column, const nlohmann::json& value) const {
  return impl_->store().lookup(column, value);
}
std::vector<Row> ReplicaClient::all() const { return impl_->store().all(); }
std::size_t ReplicaClient::count() const { return impl_->store().count(); }

Subscription ReplicaClient::listen(ChangeListener listener) {
  auto registry = impl_->changes();
  auto id = registry->add(std::move(listener));
  std::weak_ptr<ListenerRegistry<Change>> weak = registry;
  return Subscription([weak, id] {
    if (auto alive = weak.lock()) alive->remove(id);
  });
}

Subscription ReplicaClient::on_status(StatusListener listener) {
  auto registry = impl_->statuses();
  auto id = registry->add(std::move(listener));
  std::weak_ptr<ListenerRegistry<SyncStatus>> weak = registry;
  return Subscription([weak, id] {
    if (auto alive = weak.lock()) alive->remove(id);
  });
}

SyncStatus ReplicaClient::status() const { return impl_->status(); }
bool ReplicaClient::is_fallback() const { return impl_->is_fallback(); }
bool ReplicaClient::is_up_to_date() const { return impl_->is_up_to_date(); }
std::string ReplicaClient::last_offset() const { return impl_->last_offset(); }
std::string ReplicaClient::handle() const { return impl_->handle(); }

}  // namespace shapeproxy::client
