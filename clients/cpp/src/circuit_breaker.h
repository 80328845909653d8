// A circuit breaker for one endpoint: after `threshold` consecutive failures
// it opens and refuses requests for `open_for`, then lets one trial request
// through (half-open); its success closes the breaker, its failure reopens it.
// Time is passed in, so it is a pure state machine.
#pragma once

#include <chrono>

namespace shapeproxy::client::detail {

class CircuitBreaker {
 public:
  using Clock = std::chrono::steady_clock;
  enum class State { kClosed, kOpen, kHalfOpen };

  CircuitBreaker(int threshold, std::chrono::milliseconds open_for)
      : threshold_(threshold < 1 ? 1 : threshold), open_for_(open_for) {}

  // May a request go to this endpoint now? A half-open breaker lets one through.
  bool allow(Clock::time_point now);
  void record_success();
  void record_failure(Clock::time_point now);
  // The request was abandoned by us (stop, refresh): no verdict, and a
  // half-open breaker may let the next trial through.
  void record_abandoned() { trial_in_flight_ = false; }

  State state(Clock::time_point now) const;
  Clock::time_point reopens_at() const { return opened_at_ + open_for_; }

 private:
  int threshold_;
  std::chrono::milliseconds open_for_;
  int consecutive_failures_ = 0;
  bool open_ = false;
  bool trial_in_flight_ = false;
  Clock::time_point opened_at_{};
};

}  // namespace shapeproxy::client::detail
