// What: GET /v1/status (the serving status as cacheable JSON) and the mapping
// of the serving status onto GET /v1/health.
// Why: fallback-aware clients and operators poll /v1/status; it must be cheap
// and CDN-friendly (Cache-Control max-age, ETag, 304 on If-None-Match) and
// safe to expose (no hosts, SQL or credentials: only the monitor's snapshot,
// whose errors are fixed phrases). /v1/health must agree with it.
//
// Body:
//   {"status": "live"|"fallback"|"starting", "replication_available": bool,
//    "connection": "ok"|"unreachable", "shape": "live"|"fallback"|"starting",
//    "last_transition_at": "2024-05-01T12:00:00.000Z", "cause": "...",
//    "transitions": n,
//    "replication": {"slot", "wal_status", "lag_bytes", "lag_seconds", "last_error"},
//    "fallback": {"queries_in_flight", "queued", "refused", "source"},
//    "shapes": n, "version": "x.y.z",
//    "cluster": {"role": "leader"|"follower", "instance_id": "...",
//                "leader": {"instance_id": "...", "since": "..."}|null}}
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "http/exchange.h"
#include "http/handlers.h"
#include "status/serving_gauges.h"
#include "status/status_monitor.h"

namespace shapeproxy::status {

struct StatusEndpointOptions {
  int max_age_seconds = 5;  // Cache-Control: public, max-age=N
};

// The "cluster" object of the body (rfc/0003).
nlohmann::json cluster_json(const ClusterInfo& cluster);

// The /v1/status body for `snapshot` (no time-of-request fields, so the ETag
// only changes when something reported changes; lag_seconds is rounded to 0.1 s).
nlohmann::json status_body(const StatusSnapshot& snapshot, const ServingGauges& gauges);

// The snapshot as the endpoints report it when shape logs cannot be written
// (`storage.failing`): replication may stream, but nothing past
// storage.durable_lsn is acknowledged, so the lag counts from there (bytes to
// the WAL head, and at least the time since the writes began to fail).
StatusSnapshot with_storage(StatusSnapshot snapshot, const StorageHealth& storage,
                            std::chrono::system_clock::time_point now);

// A strong ETag for `body`: a quoted 64-bit FNV-1a hash in hex.
std::string status_etag(std::string_view body);

// "2024-05-01T12:00:00.123Z".
std::string format_iso8601_utc(std::chrono::system_clock::time_point time);

// 200 with `body`, Cache-Control and ETag, or 304 when the request's
// If-None-Match names that ETag (or is "*").
http::Response status_response(const http::Request& request, std::string body,
                               const StatusEndpointOptions& options);

// GET /v1/status. 200 with the body, Cache-Control and ETag; 304 (same
// headers, no body) when If-None-Match names the current ETag (or is "*").
// No auth: the body is safe to expose. Thread-safe.
http::Handler status_handler(std::shared_ptr<const ReplicationStatusMonitor> monitor,
                             ServingGauges gauges, StatusEndpointOptions options = {});

// /v1/health agrees with /v1/status: "active" while serving (live or
// fallback), "starting" while starting.
http::HealthState health_state(ServingStatus status);

// http::health_handler over the monitor.
http::Handler health_handler(std::shared_ptr<const ReplicationStatusMonitor> monitor);

}  // namespace shapeproxy::status
