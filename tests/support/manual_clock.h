// ManualClock: a Clock whose time moves only when a test calls advance().
// Timers due by then have their callbacks posted to their executors; the
// test then waits for the effect (a parked read answered, a shape removed)
// instead of sleeping through real timeouts. Thread-safe.
#pragma once

#include <boost/asio/post.hpp>
#include <memory>
#include <mutex>
#include <vector>

#include "common/clock.h"

namespace shapeproxy::testing {

// Make it with std::make_shared (its timers keep it alive).
class ManualClock final : public Clock, public std::enable_shared_from_this<ManualClock> {
 public:
  time_point now() const override {
    std::lock_guard lock(mutex_);
    return now_;
  }

  // Moves time forward; every wait due by then fires (once).
  void advance(std::chrono::steady_clock::duration by) {
    std::vector<std::shared_ptr<Wait>> due;
    {
      std::lock_guard lock(mutex_);
      now_ += by;
      std::erase_if(waits_, [](const auto& weak) { return weak.expired(); });
      for (const auto& weak : waits_) {
        auto wait = weak.lock();
        if (wait && wait->fire && wait->at <= now_) due.push_back(wait);
      }
    }
    for (const auto& wait : due) {
      std::function<void()> fire;
      std::uint64_t generation = 0;
      {
        std::lock_guard lock(mutex_);
        fire = std::exchange(wait->fire, nullptr);
        generation = wait->generation;
      }
      if (!fire) continue;
      boost::asio::post(wait->executor, [weak = std::weak_ptr<Wait>(wait), generation,
                                         self = shared_from_this(), fire = std::move(fire)] {
        auto alive = weak.lock();
        if (!alive) return;
        {
          std::lock_guard lock(self->mutex_);
          if (alive->generation != generation) return;  // replaced or cancelled meanwhile
        }
        fire();
      });
    }
  }

  // How many waits are pending (armed, not yet due).
  std::size_t pending() const {
    std::lock_guard lock(mutex_);
    std::size_t count = 0;
    for (const auto& weak : waits_) {
      if (auto wait = weak.lock(); wait && wait->fire) ++count;
    }
    return count;
  }

  std::unique_ptr<ClockTimer> timer(boost::asio::any_io_executor executor) override {
    auto wait = std::make_shared<Wait>();
    wait->executor = std::move(executor);
    {
      std::lock_guard lock(mutex_);
      waits_.push_back(wait);
    }
    return std::make_unique<Timer>(shared_from_this(), std::move(wait));
  }

 private:
  struct Wait {
    boost::asio::any_io_executor executor;
    time_point at;
    std::function<void()> fire;
    std::uint64_t generation = 0;
  };

  class Timer final : public ClockTimer {
   public:
    Timer(std::shared_ptr<ManualClock> clock, std::shared_ptr<Wait> wait)
        : clock_(std::move(clock)), wait_(std::move(wait)) {}
    ~Timer() override { cancel(); }
    void wait_until(time_point at, std::function<void()> fire) override {
      bool due = false;
      {
        std::lock_guard lock(clock_->mutex_);
        ++wait_->generation;
        wait_->at = at;
        wait_->fire = std::move(fire);
        due = at <= clock_->now_;
      }
      if (due) clock_->advance({});
    }
    void cancel() override {
      std::lock_guard lock(clock_->mutex_);
      ++wait_->generation;
      wait_->fire = nullptr;
    }

   private:
    std::shared_ptr<ManualClock> clock_;
    std::shared_ptr<Wait> wait_;
  };

  mutable std::mutex mutex_;
  time_point now_ = std::chrono::steady_clock::now();
  std::vector<std::weak_ptr<Wait>> waits_;
};

}  // namespace shapeproxy::testing
