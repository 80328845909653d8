// What: the figures /v1/status and /metrics report about other modules
// (fallback query activity, parked long-polls, shape count), as providers the
// proxy injects.
// Why: the status module must not depend on the fallback or shapes modules;
// they expose numbers, the proxy wires them here. Every provider is called on
// an HTTP connection's strand, so it must be thread-safe (atomics, a mutex, or
// a value the owner publishes). An unset provider reports zero.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace shapeproxy::status {

// Fallback-mode query activity (from the fallback module).
struct FallbackActivity {
  std::uint64_t queries_in_flight = 0;  // direct queries running now
  std::uint64_t queued = 0;             // requests waiting for a query slot
  std::uint64_t refused_total = 0;      // requests answered 503 because the cap was reached
  std::string source = "primary";       // where fallback queries go: "primary" or "standby"
};

struct ServingGauges {
  std::function<FallbackActivity()> fallback;
  std::function<std::uint64_t()> shape_count;      // shapes held by the registry
  std::function<std::uint64_t()> parked_requests;  // long-polls / SSE waiting for changes

  FallbackActivity fallback_activity() const { return fallback ? fallback() : FallbackActivity{}; }
  std::uint64_t shapes() const { return shape_count ? shape_count() : 0; }
  std::uint64_t parked() const { return parked_requests ? parked_requests() : 0; }
};

}  // namespace shapeproxy::status
