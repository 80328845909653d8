// What: the operator's status page, GET /dashboard: one self-contained HTML
// page (its CSS and JS inline, embedded in the binary from status/dashboard.html;
// nothing is fetched from elsewhere) that polls /v1/status, /v1/status/history
// and /v1/status/shapes and shows the state and its cause, the replication lag
// of the last 15 minutes as a chart, the last 100 state transitions with their
// causes, the shapes (rows, snapshot bytes, readers), the fallback load and
// instance facts. And the two JSON endpoints it needs beside /v1/status:
//   GET /v1/status/history  {"started_at", "version", "transitions": [{at, from,
//                            to, cause}], "lag": [{at, bytes, seconds, status}]}
//   GET /v1/status/shapes   {"shapes": [{handle, table, where, state, rows,
//                            snapshot_bytes, readers}]}
// Why: during an incident an operator wants state, lag and the outage history
// at a glance. The page itself is static (a CDN may cache it); the data comes
// from the polled endpoints (no-store, except /v1/status's own max-age).
// Like /v1/status, none of it names hosts, users, SQL or secrets.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "http/exchange.h"
#include "status/status_monitor.h"

namespace shapeproxy::status {

// The page (for tests).
std::string_view dashboard_html();

// GET /dashboard: 200 text/html; Cache-Control public, max-age=60.
http::Handler dashboard_handler();

// GET /v1/status/history: the monitor's history; no-store.
http::Handler history_handler(std::shared_ptr<const ReplicationStatusMonitor> monitor);

struct ShapeRow {
  std::string handle;
  std::string table;
  std::string where;
  std::string state;  // "snapshotting" or "ready"
  std::uint64_t rows = 0;
  std::uint64_t snapshot_bytes = 0;
  std::uint64_t readers = 0;
};
// Calls its argument, from any thread, with the shapes held.
using ShapeLister = std::function<void(std::function<void(std::vector<ShapeRow>)>)>;

// GET /v1/status/shapes: the shapes from `lister` (the first 1,000, by
// readers then rows); no-store.
http::Handler shapes_handler(ShapeLister lister);

}  // namespace shapeproxy::status
