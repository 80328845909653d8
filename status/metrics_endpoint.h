// What: GET /metrics in the Prometheus text exposition format (0.0.4): the
// serving status (one-hot), transitions, replication lag, fallback query
// activity, parked requests, shapes, and per-route request counts and
// latency histograms.
// Why: operators alert on fallback episodes and lag; one scrape endpoint,
// rendered from the same snapshot /v1/status uses, so both always agree.
//
// Families (all prefixed shapeproxy_):
//   status{state}                       gauge, 1 for the current state, 0 otherwise
//   status_transitions_total            counter
//   replication_available               gauge 0/1
//   replication_lag_bytes               gauge (absent until the first probe)
//   replication_lag_seconds             gauge (absent until the first probe)
//   fallback_queries_running            gauge
//   fallback_queries_queued             gauge
//   fallback_queries_refused_total      counter
//   parked_requests                     gauge
//   shapes                              gauge
//   http_requests_total{route,method,code}       counter
//   http_request_duration_seconds{route,method}  histogram (_bucket{le}, _sum, _count)
//   http_sendfile_responses_total       counter: bodies sent from disk with sendfile
//   http_sendfile_bytes_total           counter: their bytes
//   request_duration_seconds{kind}      histogram: snapshot, catch-up, live, sse, status, other
//   response_body_bytes_total{kind}     counter: bytes served
//   fallback_queries_total{outcome}     counter: ok, query_timeout, database_unavailable
//   fallback_query_duration_seconds{outcome}  histogram
//   replication_reconnects_total        counter
//   shapes_by_state{state}              gauge: snapshotting, ready
//   build_info{version,compiler}        gauge 1
// and the standard process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_open_fds, process_max_fds,
// process_start_time_seconds (from /proc).
// Routes are the routed paths ("/v1/shape", "/v1/status", ...) or "other"
// (unrouted paths, requests refused before routing: 400/414/431/503).
#pragma once

#include <memory>
#include <string>

#include "http/exchange.h"
#include "http/server.h"
#include "status/request_metrics.h"
#include "status/serving_gauges.h"
#include "status/status_monitor.h"

namespace shapeproxy::status {

// The exposition text. `requests` may be null (no request families).
std::string render_metrics(const StatusSnapshot& snapshot, const ServingGauges& gauges,
                           const RequestMetrics* requests);

// GET /metrics: 200 `text/plain; version=0.0.4; charset=utf-8`, no-store.
// `requests` may be null. Thread-safe.
http::Handler metrics_handler(std::shared_ptr<const ReplicationStatusMonitor> monitor,
                              ServingGauges gauges, std::shared_ptr<const RequestMetrics> requests);

// The HTTP server's request observer (ServerOptions::on_request_done) that
// records every answered request into `requests`. Lock-free, thread-safe.
http::RequestObserver request_metrics_observer(std::shared_ptr<RequestMetrics> requests);

}  // namespace shapeproxy::status
