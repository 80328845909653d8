// What: small stock handlers and helpers: the API-secret check and /v1/health.
// Why: both are protocol-defined (status codes, bodies, cache headers) and are
// shared by every deployment, independent of shape logic.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "http/exchange.h"
#include "http/request.h"
#include "http/response.h"

namespace shapeproxy::http {

// True when no secret is configured, or `?secret=` (or the older
// `?api_secret=`) equals it. Constant-time comparison.
bool authorized(const Request& request, const std::optional<std::string>& secret);

// 401 {"message":"Unauthorized - Invalid API secret"}.
Response unauthorized_response();

// Wraps `inner`: answers 401 unless authorized(request, secret).
Handler require_secret(std::optional<std::string> secret, Handler inner);

// Wraps `inner` for an operator endpoint (/metrics): when `token` is set,
// answers 401 unless the request carries `Authorization: Bearer <token>`
// (what Prometheus sends with `authorization: {credentials: ...}`) or
// `?secret=<token>`. Constant-time comparison.
Handler require_token(std::optional<std::string> token, Handler inner);

enum class HealthState { kActive, kStarting, kWaiting };

// GET /v1/health: 200 {"status":"active"}, 202 {"status":"starting"} or
// {"status":"waiting"}; cache-control: no-cache, no-store, must-revalidate.
// No auth. `state` is called on the connection's strand (must be thread-safe).
Handler health_handler(std::function<HealthState()> state);

}  // namespace shapeproxy::http
