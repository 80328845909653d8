// What: RequestMetrics, HTTP request counts by route, method and status code,
// and latency histograms by route and method (fixed buckets), for GET /metrics.
// Why: the HTTP layer records one sample per answered request from every I/O
// thread, so recording is lock-free (relaxed atomics in a table fixed at
// construction); the metrics endpoint reads a copy. Labels stay few
// (Prometheus cardinality): routes are the ones given at construction (the
// router's paths) plus "other", methods a fixed list plus "other", status
// codes 100-599 (anything outside counts as 500).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/histogram.h"

namespace shapeproxy::status {

class RequestMetrics {
 public:
  // Upper bounds (seconds) of the latency buckets; +Inf is implied. Long-polls
  // last up to the long-poll timeout, hence the long tail.
  static constexpr std::array<double, 14> kBucketBounds{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                        0.5,   1,     2.5,  5,     10,   30,  60};
  // Method labels; any other method is counted as "other".
  static constexpr std::array<std::string_view, 8> kMethods{"GET",    "HEAD",    "POST",  "PUT",
                                                            "DELETE", "OPTIONS", "PATCH", "other"};
  static constexpr std::string_view kOtherRoute = "other";

  // One (route, method) series that saw at least one request.
  struct SeriesSnapshot {
    std::string route;
    std::string method;
    std::vector<std::pair<unsigned, std::uint64_t>> responses_by_status;  // ascending status
    // Cumulative counts per kBucketBounds entry (Prometheus `le` semantics).
    std::array<std::uint64_t, kBucketBounds.size()> cumulative_buckets{};
    double seconds_sum = 0;
    std::uint64_t count = 0;  // also the +Inf bucket
  };

  // `routes`: the route labels to keep apart (e.g. "/v1/shape"); every other
  // route is recorded as "other".
  explicit RequestMetrics(std::vector<std::string> routes);
  ~RequestMetrics();
  RequestMetrics(const RequestMetrics&) = delete;
  RequestMetrics& operator=(const RequestMetrics&) = delete;

  // One answered request: its route ("/v1/shape"; unknown or empty: "other"),
  // method ("GET"), HTTP status and the time from request read to response
  // written. Thread-safe, lock-free.
  void record(std::string_view route, std::string_view method, unsigned status, double seconds);

  // A response whose body went out with sendfile(2): `bytes` of it.
  void record_sendfile(std::uint64_t bytes) {
    sendfile_responses_.fetch_add(1, std::memory_order_relaxed);
    sendfile_bytes_.fetch_add(bytes, std::memory_order_relaxed);
  }
  std::uint64_t sendfile_responses() const {
    return sendfile_responses_.load(std::memory_order_relaxed);
  }
  std::uint64_t sendfile_bytes() const { return sendfile_bytes_.load(std::memory_order_relaxed); }

  // Request kinds (http::request_kind): durations and body bytes per kind.
  static constexpr std::array<std::string_view, 6> kKinds{"snapshot", "catch-up", "live",
                                                          "sse",      "status",   "other"};
  // One answered request of `kind` (unknown: "other"): its duration and body
  // bytes. Thread-safe, lock-free.
  void record_kind(std::string_view kind, double seconds, std::uint64_t body_bytes);
  struct KindSnapshot {
    std::string_view kind;
    HistogramSnapshot duration;
    std::uint64_t body_bytes = 0;
  };
  // Every kind, in kKinds order.
  std::vector<KindSnapshot> kinds_snapshot() const;

  // A copy of every series with requests, ordered by route ("other" last)
  // then method.
  // Thread-safe; concurrent records may or may not be included.
  std::vector<SeriesSnapshot> snapshot() const;

 private:
  static constexpr unsigned kMinStatus = 100;
  static constexpr unsigned kMaxStatus = 599;
  struct Series {
    std::array<std::atomic<std::uint64_t>, kMaxStatus - kMinStatus + 1> by_status{};
    std::array<std::atomic<std::uint64_t>, kBucketBounds.size() + 1> buckets{};  // + Inf
    std::atomic<std::uint64_t> nanoseconds_sum{0};
  };

  std::size_t route_index(std::string_view route) const;

  std::vector<std::string> routes_;   // sorted; the last one is kOtherRoute
  std::unique_ptr<Series[]> series_;  // routes_.size() x kMethods.size()
  struct Kind {
    AtomicHistogram duration{std::vector<double>(kBucketBounds.begin(), kBucketBounds.end())};
    std::atomic<std::uint64_t> body_bytes{0};
  };
  std::array<Kind, kKinds.size()> kinds_;
  std::atomic<std::uint64_t> sendfile_responses_{0};
  std::atomic<std::uint64_t> sendfile_bytes_{0};
};

}  // namespace shapeproxy::status
