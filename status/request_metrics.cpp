#include "status/request_metrics.h"

#include <algorithm>
#include <cmath>

namespace shapeproxy::status {

RequestMetrics::RequestMetrics(std::vector<std::string> routes) : routes_(std::move(routes)) {
  std::erase_if(routes_, [](const std::string& r) { return r.empty() || r == kOtherRoute; });
  std::sort(routes_.begin(), routes_.end());
  routes_.erase(std::unique(routes_.begin(), routes_.end()), routes_.end());
  routes_.emplace_back(kOtherRoute);
  series_ = std::make_unique<Series[]>(routes_.size() * kMethods.size());
}

RequestMetrics::~RequestMetrics() = default;

std::size_t RequestMetrics::route_index(std::string_view route) const {
  const auto known = routes_.end() - 1;  // without "other"
  auto it = std::lower_bound(routes_.begin(), known, route,
                             [](const std::string& a, std::string_view b) { return a < b; });
  if (it != known && *it == route) return static_cast<std::size_t>(it - routes_.begin());
  return routes_.size() - 1;
}

void RequestMetrics::record(std::string_view route, std::string_view method, unsigned status,
                            double seconds) {
  if (!(seconds >= 0)) seconds = 0;  // negative or NaN
  const auto bucket = static_cast<std::size_t>(
      std::lower_bound(kBucketBounds.begin(), kBucketBounds.end(), seconds) -
      kBucketBounds.begin());
  std::size_t method_index = kMethods.size() - 1;
  for (std::size_t i = 0; i + 1 < kMethods.size(); ++i) {
    if (kMethods[i] == method) {
      method_index = i;
      break;
    }
  }
  if (status < kMinStatus || status > kMaxStatus) status = 500;
  Series& series = series_[route_index(route) * kMethods.size() + method_index];
  constexpr auto relaxed = std::memory_order_relaxed;
  series.by_status[status - kMinStatus].fetch_add(1, relaxed);
  series.buckets[bucket].fetch_add(1, relaxed);
  const double nanos = std::min(seconds * 1e9, 1e18);
  series.nanoseconds_sum.fetch_add(static_cast<std::uint64_t>(std::llround(nanos)), relaxed);
}

void RequestMetrics::record_kind(std::string_view kind, double seconds, std::uint64_t body_bytes) {
  std::size_t index = kKinds.size() - 1;
  for (std::size_t i = 0; i < kKinds.size(); ++i) {
    if (kKinds[i] == kind) index = i;
  }
  kinds_[index].duration.observe(seconds);
  kinds_[index].body_bytes.fetch_add(body_bytes, std::memory_order_relaxed);
}

std::vector<RequestMetrics::KindSnapshot> RequestMetrics::kinds_snapshot() const {
  std::vector<KindSnapshot> out;
  for (std::size_t i = 0; i < kKinds.size(); ++i) {
    out.push_back({kKinds[i], kinds_[i].duration.snapshot(),
                   kinds_[i].body_bytes.load(std::memory_order_relaxed)});
  }
  return out;
}

std::vector<RequestMetrics::SeriesSnapshot> RequestMetrics::snapshot() const {
  constexpr auto relaxed = std::memory_order_relaxed;
  std::vector<SeriesSnapshot> out;
  for (std::size_t r = 0; r < routes_.size(); ++r) {
    for (std::size_t m = 0; m < kMethods.size(); ++m) {
      const Series& series = series_[r * kMethods.size() + m];
      SeriesSnapshot s;
      std::uint64_t running = 0;
      for (std::size_t i = 0; i < series.buckets.size(); ++i) {
        running += series.buckets[i].load(relaxed);
        if (i < s.cumulative_buckets.size()) s.cumulative_buckets[i] = running;
      }
      if (running == 0) continue;
      s.count = running;
      s.route = routes_[r];
      s.method = std::string(kMethods[m]);
      for (unsigned code = kMinStatus; code <= kMaxStatus; ++code) {
        auto n = series.by_status[code - kMinStatus].load(relaxed);
        if (n > 0) s.responses_by_status.emplace_back(code, n);
      }
      s.seconds_sum = static_cast<double>(series.nanoseconds_sum.load(relaxed)) / 1e9;
      out.push_back(std::move(s));
    }
  }
  return out;
}

}  // namespace shapeproxy::status
