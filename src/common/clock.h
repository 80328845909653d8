// Clock: what time-based behaviour reads the time and waits on, so tests can
// move time instead of sleeping (tests/support/manual_clock.h). Production
// uses steady_clock() (std::chrono::steady_clock and asio steady timers).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <functional>
#include <memory>

namespace shapeproxy {

// One pending wait at a time. wait_until() replaces the pending wait (its
// callback is dropped, never called); cancel() and destruction drop it too.
// The callback runs on the timer's executor. A callback already queued when
// the wait is replaced may still run: callbacks re-check what they act on.
class ClockTimer {
 public:
  virtual ~ClockTimer() = default;
  virtual void wait_until(std::chrono::steady_clock::time_point at, std::function<void()> fire) = 0;
  virtual void cancel() = 0;
};

class Clock {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  virtual ~Clock() = default;
  virtual time_point now() const = 0;
  virtual std::unique_ptr<ClockTimer> timer(boost::asio::any_io_executor executor) = 0;
};

class SteadyClock final : public Clock {
 public:
  time_point now() const override { return std::chrono::steady_clock::now(); }
  std::unique_ptr<ClockTimer> timer(boost::asio::any_io_executor executor) override {
    return std::make_unique<Timer>(std::move(executor));
  }

 private:
  class Timer final : public ClockTimer {
   public:
    explicit Timer(boost::asio::any_io_executor executor) : timer_(std::move(executor)) {}
    void wait_until(time_point at, std::function<void()> fire) override {
      timer_.expires_at(at);  // a pending wait completes as aborted
      timer_.async_wait([fire = std::move(fire)](boost::system::error_code ec) {
        if (!ec) fire();
      });
    }
    void cancel() override { timer_.cancel(); }

   private:
    boost::asio::steady_timer timer_;
  };
};

inline std::shared_ptr<Clock> steady_clock() {
  static const auto clock = std::make_shared<SteadyClock>();
  return clock;
}

}  // namespace shapeproxy
