// What: the knobs of the HTTP shape API (auth, DELETE, live timings, cache
// lifetimes, clock).
// Why: shared by the handler, the response-header policy and the SSE session
// without making them depend on each other.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "api/live_cursor.h"
#include "http/exchange.h"
#include "shapes/shape_service.h"

namespace shapeproxy::api {

struct ShapeApiOptions {
  // When set, /v1/shape needs ?secret= (or ?api_secret=); 401 otherwise.
  std::optional<std::string> secret;
  // DELETE /v1/shape: 202 when enabled; 405 (not routed) when disabled.
  bool allow_delete = false;
  // The service enforces the long-poll wait; this sets the cursor interval.
  std::chrono::milliseconds long_poll_timeout{std::chrono::seconds(20)};
  // SSE: a `: keep-alive` comment after this long without a frame.
  std::chrono::milliseconds sse_keepalive{std::chrono::seconds(20)};
  // SSE: the stream ends after this long (the client reconnects).
  std::chrono::milliseconds sse_max_duration{std::chrono::seconds(60)};
  // cache-control of non-live 200s at offsets other than -1.
  int max_age_seconds = 60;
  int stale_while_revalidate_seconds = 300;
  // Wall clock for electric-cursor; injectable for tests.
  Clock clock = [] { return std::chrono::system_clock::now(); };
  std::string path = "/v1/shape";
  // A follower's relay to its leader (rfc/0003): a read the service answers
  // Unavailable{elsewhere} goes there instead of a 503, when nothing of the
  // response was sent yet. Unset: the 503.
  std::function<void(std::shared_ptr<http::Exchange>)> elsewhere;
};

// Hands `exchange` to options.elsewhere when `outcome` asks for it and a
// relay is set; false otherwise (the caller answers).
inline bool relay_elsewhere(const ShapeApiOptions& options, const shapes::ReadOutcome& outcome,
                            const std::shared_ptr<http::Exchange>& exchange) {
  const auto* unavailable = std::get_if<shapes::Unavailable>(&outcome);
  if (!unavailable || !unavailable->elsewhere || !options.elsewhere) return false;
  options.elsewhere(exchange);
  return true;
}

}  // namespace shapeproxy::api
