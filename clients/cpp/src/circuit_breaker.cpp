#include "circuit_breaker.h"

namespace shapeproxy::client::detail {

CircuitBreaker::State CircuitBreaker::state(Clock::time_point now) const {
  if (!open_) return State::kClosed;
  return now >= reopens_at() ? State::kHalfOpen : State::kOpen;
}

bool CircuitBreaker::allow(Clock::time_point now) {
  switch (state(now)) {
    case State::kClosed:
      return true;
    case State::kOpen:
      return false;
    case State::kHalfOpen:
      if (trial_in_flight_) return false;
      trial_in_flight_ = true;
      return true;
  }
  return false;
}

void CircuitBreaker::record_success() {
  consecutive_failures_ = 0;
  open_ = false;
  trial_in_flight_ = false;
}

void CircuitBreaker::record_failure(Clock::time_point now) {
  ++consecutive_failures_;
  if (trial_in_flight_ || consecutive_failures_ >= threshold_) {
    open_ = true;
    opened_at_ = now;
  }
  trial_in_flight_ = false;
}

}  // namespace shapeproxy::client::detail
