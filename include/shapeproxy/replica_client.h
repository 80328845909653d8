// ReplicaClient: a live, queryable, in-memory copy of one shapeproxy shape.
//
// It speaks the Electric shape protocol to one or more shapeproxy endpoints
// (snapshot, catch-up, live long-poll, 409 resync, reconnect with backoff),
// rides through the proxy's fallback mode by itself (it notices
// `electric-fallback-mode`, polls `GET /v1/status`, and goes back to live
// when the proxy does), and fails over between endpoints. All network I/O
// runs on one internal Asio thread; queries are thread-safe and never block
// on the network.
//
//   shapeproxy::client::ReplicaClientOptions options;
//   options.endpoints = {"http://127.0.0.1:3000"};
//   options.table = "items";
//   shapeproxy::client::ReplicaClient replica(options);
//   replica.start();
//   replica.await_ready(std::chrono::seconds(10));
//   auto row = replica.get("\"public\".\"items\"/\"1\"");
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace shapeproxy::client {

enum class ReplicaMode { kDefault, kFull };

// How an endpoint is chosen among several. Both stay on a working endpoint
// (a shape handle belongs to one proxy) and move on when it fails.
enum class EndpointSelection {
  kRoundRobin,      // start at a random endpoint, then the next one on failure
  kConsistentHash,  // every client of a shape prefers the same endpoint
};

struct ReplicaClientOptions {
  // Base URLs, e.g. "http://10.0.0.5:3000" (http only; an optional path
  // prefix is kept, e.g. "http://cdn.local/shapes").
  std::vector<std::string> endpoints;
  std::string table;                 // "items" or "schema.items"
  std::string where;                 // optional SQL boolean expression with $1..$n
  std::vector<std::string> params;   // values for $1..$n
  std::vector<std::string> columns;  // empty: all columns (must include the primary key)
  ReplicaMode replica = ReplicaMode::kDefault;
  std::string client_id;  // sent as `x-client-id` and in the user agent
  std::string secret;     // sent as ?secret= when set

  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds request_timeout{30000};  // catch-up and status requests
  std::chrono::milliseconds live_timeout{45000};     // one long-poll (the proxy answers by 20 s)

  std::chrono::milliseconds backoff_initial{1000};  // reconnect delay, doubled per failure,
  std::chrono::milliseconds backoff_max{30000};     // capped, with full jitter

  // While the proxy is in fallback mode, GET /v1/status is polled at this
  // interval, never more often than the status response's max-age.
  std::chrono::milliseconds status_poll_interval{10000};

  EndpointSelection selection = EndpointSelection::kRoundRobin;
  int attempt_budget = 0;  // endpoints tried per attempt before backing off; 0: all of them
  int breaker_failure_threshold = 3;                  // consecutive failures that open a breaker
  std::chrono::milliseconds breaker_open_for{10000};  // then one trial request is let through

  std::vector<std::string> indexed_columns;  // secondary indexes for lookup()
};

// One row of the replica: its shape key and its value, a JSON object of
// column -> value as the proxy sent it (PostgreSQL text output as strings, or null).
struct Row {
  std::string key;
  nlohmann::json value;
};

enum class Operation { kInsert, kUpdate, kDelete, kTruncate };

// What a listener sees. Insert: new_row only. Update: both. Delete: old_row
// only. Truncate (the replica was cleared for a resync): neither; the rows
// of the fresh snapshot follow as inserts.
struct Change {
  Operation operation;
  std::optional<Row> old_row;
  std::optional<Row> new_row;
};

enum class SyncState {
  kStopped,
  kSyncing,       // snapshot or catch-up in progress
  kLive,          // up to date, long-polling
  kFallback,      // up to date as far as the proxy's fallback re-queries go
  kReconnecting,  // the last attempt failed, waiting before the next
};

struct SyncStatus {
  SyncState state = SyncState::kStopped;
  std::string endpoint;  // the endpoint in use (or last tried)
  std::string detail;    // why, for logs: an error, "must-refetch", ...
};

using ChangeListener = std::function<void(const Change&)>;
using StatusListener = std::function<void(const SyncStatus&)>;

// Keeps a listener registered; unsubscribes when destroyed or on unsubscribe().
// After unsubscribe() returns, the listener is not called again.
class [[nodiscard]] Subscription {
 public:
  Subscription() = default;
  explicit Subscription(std::function<void()> cancel) : cancel_(std::move(cancel)) {}
  Subscription(Subscription&& other) noexcept : cancel_(std::move(other.cancel_)) {
    other.cancel_ = nullptr;
  }
  Subscription& operator=(Subscription&& other) noexcept {
    if (this != &other) {
      unsubscribe();
      cancel_ = std::move(other.cancel_);
      other.cancel_ = nullptr;
    }
    return *this;
  }
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;
  ~Subscription() { unsubscribe(); }

  void unsubscribe() {
    if (cancel_) {
      auto cancel = std::move(cancel_);
      cancel_ = nullptr;
      cancel();
    }
  }

 private:
  std::function<void()> cancel_;
};

class ReplicaClient {
 public:
  explicit ReplicaClient(ReplicaClientOptions options);
  ~ReplicaClient();  // stop()s
  ReplicaClient(const ReplicaClient&) = delete;
  ReplicaClient& operator=(const ReplicaClient&) = delete;

  // Starts syncing on an internal I/O thread and returns at once. Options
  // are checked here: false (and status detail) when they are unusable.
  bool start();
  // Waits until the replica has been up to date at least once since the last
  // (re)sync. True when ready.
  bool await_ready(std::chrono::milliseconds timeout) const;
  // Cancels in-flight requests and joins the I/O thread. Idempotent. Called
  // from a listener it only asks the thread to stop (the next stop() or the
  // destructor joins). start() and stop() are not meant to race each other.
  void stop();

  // Queries on the local replica (thread-safe, no network).
  std::optional<Row> get(std::string_view key) const;
  // Rows whose `column` equals `value` (JSON equality: values are strings as
  // the proxy sent them, so lookup("id", "42") not lookup("id", 42)).
  std::vector<Row> lookup(std::string_view column, const nlohmann::json& value) const;
  std::vector<Row> all() const;  // ordered by key
  std::size_t count() const;

  // Listeners run on the client's I/O thread, after the replica has the change.
  Subscription listen(ChangeListener listener);
  Subscription on_status(StatusListener listener);

  SyncStatus status() const;
  bool is_fallback() const;
  bool is_up_to_date() const;
  std::string last_offset() const;  // "-1" before the first response
  std::string handle() const;       // "" before the first response

 private:
  class Impl;
  std::shared_ptr<Impl> impl_;
};

const char* to_string(SyncState state);
const char* to_string(Operation operation);

}  // namespace shapeproxy::client
