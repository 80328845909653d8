#include "backoff.h"

#include <algorithm>

namespace shapeproxy::client::detail {

Backoff::Backoff(std::chrono::milliseconds initial, std::chrono::milliseconds max,
                 std::function<double()> uniform)
    : initial_(std::max(initial, std::chrono::milliseconds(1))),
      max_(std::max(max, initial_)),
      uniform_(std::move(uniform)) {}

std::chrono::milliseconds Backoff::ceiling() const {
  std::int64_t ceiling = initial_.count();
  for (int i = 0; i < failures_ && ceiling < max_.count(); ++i) ceiling *= 2;
  return std::chrono::milliseconds(std::min<std::int64_t>(ceiling, max_.count()));
}

std::chrono::milliseconds Backoff::next() {
  auto top = ceiling();
  ++failures_;
  // Full jitter between half the ceiling and the ceiling: never hammer at ~0.
  double u = std::clamp(uniform_(), 0.0, 1.0);
  auto half = top.count() / 2;
  return std::chrono::milliseconds(half + static_cast<std::int64_t>(u * (top.count() - half)));
}

}  // namespace shapeproxy::client::detail
