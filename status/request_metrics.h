// What: RequestMetrics, per-route HTTP request counts (by status code) and
// latency histograms with fixed buckets, for GET /metrics.
// Why: the HTTP layer records one sample per answered request from many
// threads; the metrics endpoint reads a consistent copy. Route labels must
// stay few (Prometheus cardinality): callers pass the routed path (never the
// raw target) and, past `max_routes` distinct routes, samples count as "other".
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace shapeproxy::status {

class RequestMetrics {
 public:
  // Upper bounds (seconds) of the latency buckets; +Inf is implied. Long-polls
  // last up to the long-poll timeout, hence the long tail.
  static constexpr std::array<double, 14> kBucketBounds{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                        0.5,   1,     2.5,  5,     10,   30,  60};

  struct RouteSnapshot {
    std::string route;
    std::map<unsigned, std::uint64_t> responses_by_status;
    // Cumulative counts per kBucketBounds entry (Prometheus `le` semantics).
    std::array<std::uint64_t, kBucketBounds.size()> cumulative_buckets{};
    double seconds_sum = 0;
    std::uint64_t count = 0;  // also the +Inf bucket
  };

  explicit RequestMetrics(std::size_t max_routes = 32);

  // One answered request: its route ("/v1/shape"), HTTP status and the time
  // from request read to response written. Thread-safe.
  void record(std::string_view route, unsigned status, double seconds);

  // A copy of everything recorded, ordered by route. Thread-safe.
  std::vector<RouteSnapshot> snapshot() const;

 private:
  struct RouteStats {
    std::map<unsigned, std::uint64_t> responses_by_status;
    std::array<std::uint64_t, kBucketBounds.size()> bucket_counts{};  // not cumulative
    double seconds_sum = 0;
    std::uint64_t count = 0;
  };

  const std::size_t max_routes_;
  mutable std::mutex mutex_;
  std::map<std::string, RouteStats, std::less<>> routes_;
};

}  // namespace shapeproxy::status
