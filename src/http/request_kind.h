// What: what kind of request a routed request was, for metrics and the access
// log, from its route and target alone (no handler involvement):
//   /v1/shape: "sse" (live_sse / experimental_live_sse=true), "live" (live=true),
//              "snapshot" (offset=-1 or none), else "catch-up";
//   /v1/status (and below), /v1/health, /metrics, /dashboard: "status"; else "other".
// And the target without secrets, for logs: the secret and api_secret query
// parameters are removed.
// Why: a 20 s long-poll, an SSE stream and a catch-up read have nothing in
// common in duration; they are measured and logged apart.
#pragma once

#include <string>
#include <string_view>

namespace shapeproxy::http {

std::string_view request_kind(std::string_view route, std::string_view target);

// `target` without its secret / api_secret query parameters.
std::string redact_target(std::string_view target);

}  // namespace shapeproxy::http
