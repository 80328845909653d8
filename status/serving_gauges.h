// What: the figures /v1/status and /metrics report about other modules
// (fallback query activity, parked long-polls, shape count), as providers the
// proxy injects.
// Why: the status module must not depend on the fallback or shapes modules;
// they expose numbers, the proxy wires them here. Every provider is called on
// an HTTP connection's strand, so it must be thread-safe (atomics, a mutex, or
// a value the owner publishes). An unset provider reports zero.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/histogram.h"

namespace shapeproxy::status {

// Fallback-mode query activity (from the fallback module).
struct FallbackActivity {
  std::uint64_t queries_in_flight = 0;  // direct queries running now
  std::uint64_t queued = 0;             // requests waiting for a query slot
  std::uint64_t refused_total = 0;      // requests answered 503 because the cap was reached
  std::string source = "primary";       // where fallback queries go: "primary" or "standby"
  // Durations of the database queries run, by outcome ("ok", "query_timeout",
  // "database_unavailable"); a histogram's count is that outcome's total.
  std::vector<std::pair<std::string, HistogramSnapshot>> query_durations;
};

// Shapes held, by phase (from the shapes module).
struct ShapesByState {
  std::uint64_t snapshotting = 0;  // first snapshot under way
  std::uint64_t ready = 0;         // serving
};

// Whether shape logs can be written (from the shapes module). While they
// cannot (e.g. disk full), transactions are served from memory but not
// acknowledged to the slot: the proxy is not healthy though the stream is.
struct StorageHealth {
  bool failing = false;
  std::string error;                            // the last write/sync error ("" when fine)
  std::chrono::system_clock::time_point since;  // when the writes began to fail
  std::uint64_t durable_lsn = 0;                // what the slot may confirm (0: not known)
  // Whether the failure holds the slot back: shape logs that cannot be
  // written or synced (true), or only the row store that cannot be written
  // (false: the logs are durable and acknowledged, rows wait in memory).
  bool holds_slot = true;
};

// This instance's place among several sharing a data directory (from the
// cluster module, rfc/0003). A lone instance leads.
struct ClusterInfo {
  std::string role = "leader";  // "leader" or "follower"
  std::string instance_id;
  std::optional<std::string> leader_id;  // the leader's instance id, when known
  std::optional<std::int64_t> leader_since_ms;
  // A follower answering reads from the shared files itself (rfc/0003),
  // and how many it answered so.
  bool follower_serving = false;
  std::uint64_t follower_reads = 0;
  std::uint64_t follower_parked = 0;  // its live reads waiting for changes
};

struct ServingGauges {
  std::function<FallbackActivity()> fallback;
  std::function<std::uint64_t()> shape_count;             // shapes held by the registry
  std::function<std::uint64_t()> parked_requests;         // long-polls / SSE waiting for changes
  std::function<std::uint64_t()> replication_reconnects;  // stream connection attempts after a loss
  std::function<ShapesByState()> shapes_by_state;
  std::function<StorageHealth()> storage;
  std::function<ClusterInfo()> cluster;

  FallbackActivity fallback_activity() const { return fallback ? fallback() : FallbackActivity{}; }
  StorageHealth storage_health() const { return storage ? storage() : StorageHealth{}; }
  std::uint64_t shapes() const { return shape_count ? shape_count() : 0; }
  std::uint64_t parked() const { return parked_requests ? parked_requests() : 0; }
  std::uint64_t reconnects() const { return replication_reconnects ? replication_reconnects() : 0; }
  ClusterInfo cluster_info() const { return cluster ? cluster() : ClusterInfo{}; }
  ShapesByState shape_states() const {
    return shapes_by_state ? shapes_by_state() : ShapesByState{};
  }
};

}  // namespace shapeproxy::status
