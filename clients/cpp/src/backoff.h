// Reconnect delays: exponential (initial, doubled per consecutive failure,
// capped) with full jitter, so many clients reconnecting after one outage
// spread out. The random source is injected for tests.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

namespace shapeproxy::client::detail {

class Backoff {
 public:
  // `uniform` returns a value in [0, 1).
  Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max,
          std::function<double()> uniform);

  // The delay before the next attempt; each call counts one more failure.
  std::chrono::milliseconds next();
  // The ceiling next() would jitter under, without counting a failure.
  std::chrono::milliseconds ceiling() const;
  void reset() { failures_ = 0; }
  int failures() const { return failures_; }

 private:
  std::chrono::milliseconds initial_;
  std::chrono::milliseconds max_;
  std::function<double()> uniform_;
  int failures_ = 0;
};

}  // namespace shapeproxy::client::detail
