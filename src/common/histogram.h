// What: AtomicHistogram, a fixed-bucket latency histogram that any thread may
// record into without a lock (relaxed atomics), and its snapshot in
// Prometheus form (cumulative `le` buckets, sum, count).
// Why: request and fallback-query durations are recorded on I/O threads and
// read by /metrics; buckets fixed at construction keep recording to a search
// and two atomic adds.
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <memory>
#include <vector>

namespace shapeproxy {

struct HistogramSnapshot {
  std::vector<double> bounds;             // upper bounds (seconds), ascending; +Inf implied
  std::vector<std::uint64_t> cumulative;  // per bound: observations <= it
  double sum = 0;                         // seconds
  std::uint64_t count = 0;                // also the +Inf bucket
};

class AtomicHistogram {
 public:
  explicit AtomicHistogram(std::vector<double> bounds)
      : bounds_(std::move(bounds)),
        buckets_(std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1)) {}

  // Thread-safe, lock-free. Negative or NaN counts as 0.
  void observe(double seconds) {
    if (!(seconds >= 0)) seconds = 0;
    auto bucket = static_cast<std::size_t>(
        std::lower_bound(bounds_.begin(), bounds_.end(), seconds) - bounds_.begin());
    buckets_[bucket].fetch_add(1, std::memory_order_relaxed);
    nanoseconds_sum_.fetch_add(
        static_cast<std::uint64_t>(std::llround(std::min(seconds * 1e9, 1e18))),
        std::memory_order_relaxed);
  }

  // Thread-safe; concurrent observations may or may not be included.
  HistogramSnapshot snapshot() const {
    HistogramSnapshot out;
    out.bounds = bounds_;
    std::uint64_t running = 0;
    for (std::size_t i = 0; i <= bounds_.size(); ++i) {
      running += buckets_[i].load(std::memory_order_relaxed);
      if (i < bounds_.size()) out.cumulative.push_back(running);
    }
    out.count = running;
    out.sum = static_cast<double>(nanoseconds_sum_.load(std::memory_order_relaxed)) / 1e9;
    return out;
  }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;  // bounds_.size() + 1 (+Inf)
  std::atomic<std::uint64_t> nanoseconds_sum_{0};
};

}  // namespace shapeproxy
