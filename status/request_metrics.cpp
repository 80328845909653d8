#include "status/request_metrics.h"

#include <algorithm>

namespace shapeproxy::status {

RequestMetrics::RequestMetrics(std::size_t max_routes)
    : max_routes_(std::max<std::size_t>(1, max_routes)) {}

void RequestMetrics::record(std::string_view route, unsigned status, double seconds) {
  if (!(seconds >= 0)) seconds = 0;  // negative or NaN
  const auto bucket = static_cast<std::size_t>(
      std::lower_bound(kBucketBounds.begin(), kBucketBounds.end(), seconds) -
      kBucketBounds.begin());
  std::lock_guard lock(mutex_);
  auto it = routes_.find(route);
  if (it == routes_.end()) {
    // Bounded label cardinality: one slot is kept for "other".
    const bool full = routes_.size() + 1 >= max_routes_ && route != "other";
    it = routes_.try_emplace(std::string(full ? "other" : route)).first;
  }
  RouteStats& stats = it->second;
  ++stats.responses_by_status[status];
  if (bucket < stats.bucket_counts.size()) ++stats.bucket_counts[bucket];
  stats.seconds_sum += seconds;
  ++stats.count;
}

std::vector<RequestMetrics::RouteSnapshot> RequestMetrics::snapshot() const {
  std::lock_guard lock(mutex_);
  std::vector<RouteSnapshot> out;
  out.reserve(routes_.size());
  for (const auto& [route, stats] : routes_) {
    RouteSnapshot s;
    s.route = route;
    s.responses_by_status = stats.responses_by_status;
    std::uint64_t running = 0;
    for (std::size_t i = 0; i < stats.bucket_counts.size(); ++i) {
      running += stats.bucket_counts[i];
      s.cumulative_buckets[i] = running;
    }
    s.seconds_sum = stats.seconds_sum;
    s.count = stats.count;
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace shapeproxy::status
