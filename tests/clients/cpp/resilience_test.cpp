// Backoff, circuit breaker and endpoint selection: the pure pieces that
// decide when and where the client retries.
#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>

#include "backoff.h"
#include "circuit_breaker.h"
#include "endpoint_selector.h"

namespace shapeproxy::client::detail {
namespace {

using namespace std::chrono_literals;

TEST(Backoff, DoublesFromOneSecondToThirtyWithJitter) {
  double u = 1.0;
  Backoff backoff(1000ms, 30000ms, [&] { return u; });
  std::vector<long> ceilings;
  for (int i = 0; i < 8; ++i) ceilings.push_back(backoff.next().count());
  EXPECT_EQ(ceilings, (std::vector<long>{1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000}));
  u = 0.0;
  EXPECT_EQ(backoff.next(), 15000ms);  // jitter floor is half the ceiling
  backoff.reset();
  EXPECT_EQ(backoff.next(), 500ms);
  EXPECT_EQ(backoff.failures(), 1);
}

TEST(Backoff, JitterSpreadsDelays) {
  std::mt19937 random(7);
  Backoff backoff(1000ms, 30000ms,
                  [&] { return std::uniform_real_distribution<double>(0, 1)(random); });
  std::set<long> delays;
  for (int i = 0; i < 20; ++i) {
    backoff.reset();
    for (int j = 0; j < 3; ++j) (void)backoff.next();
    auto delay = backoff.next();  // ceiling 8 s
    EXPECT_GE(delay, 4000ms);
    EXPECT_LE(delay, 8000ms);
    delays.insert(delay.count());
  }
  EXPECT_GT(delays.size(), 10u);
}

TEST(CircuitBreaker, OpensAfterThresholdThenLetsOneTrialThrough) {
  CircuitBreaker breaker(3, 10s);
  auto t0 = CircuitBreaker::Clock::now();
  EXPECT_TRUE(breaker.allow(t0));
  breaker.record_failure(t0);
  breaker.record_failure(t0);
  EXPECT_EQ(breaker.state(t0), CircuitBreaker::State::kClosed);
  breaker.record_failure(t0);
  EXPECT_EQ(breaker.state(t0), CircuitBreaker::State::kOpen);
  EXPECT_FALSE(breaker.allow(t0 + 9s));
  EXPECT_TRUE(breaker.allow(t0 + 10s));   // the trial
  EXPECT_FALSE(breaker.allow(t0 + 10s));  // only one at a time
  breaker.record_failure(t0 + 11s);       // trial failed: open again, for the full period
  EXPECT_FALSE(breaker.allow(t0 + 20s));
  EXPECT_TRUE(breaker.allow(t0 + 21s));
  breaker.record_success();
  EXPECT_EQ(breaker.state(t0 + 21s), CircuitBreaker::State::kClosed);
  breaker.record_failure(t0 + 22s);  // failures count again from zero
  EXPECT_TRUE(breaker.allow(t0 + 22s));
}

TEST(CircuitBreaker, AnAbandonedTrialDoesNotWedgeIt) {
  CircuitBreaker breaker(1, 1s);
  auto t0 = CircuitBreaker::Clock::now();
  breaker.record_failure(t0);
  EXPECT_TRUE(breaker.allow(t0 + 1s));
  breaker.record_abandoned();  // e.g. stop() while the trial ran
  EXPECT_TRUE(breaker.allow(t0 + 1s));
}

TEST(EndpointSelector, RoundRobinStaysOnTheWorkingEndpoint) {
  auto selector = EndpointSelector::round_robin(3, 1);
  EXPECT_EQ(selector.order(), (std::vector<std::size_t>{1, 2, 0}));
  selector.on_success(2);
  EXPECT_EQ(selector.order(), (std::vector<std::size_t>{2, 0, 1}));
}

TEST(EndpointSelector, ConsistentHashIsStableAndSpreadsShapes) {
  std::vector<std::string> urls = {"http://a:3000", "http://b:3000", "http://c:3000"};
  std::map<std::size_t, int> first_choice;
  for (int i = 0; i < 300; ++i) {
    std::string shape = "table=t" + std::to_string(i);
    auto order = EndpointSelector::consistent_hash(urls, shape).order();
    ASSERT_EQ(order.size(), 3u);
    EXPECT_EQ(std::set<std::size_t>(order.begin(), order.end()).size(), 3u);
    EXPECT_EQ(order, EndpointSelector::consistent_hash(urls, shape).order());
    ++first_choice[order[0]];
  }
  for (std::size_t i = 0; i < 3; ++i) EXPECT_GT(first_choice[i], 50) << i;

  // Removing an endpoint moves only the shapes that preferred it.
  std::vector<std::string> without_c = {"http://a:3000", "http://b:3000"};
  for (int i = 0; i < 300; ++i) {
    std::string shape = "table=t" + std::to_string(i);
    auto before = EndpointSelector::consistent_hash(urls, shape).order()[0];
    auto after = EndpointSelector::consistent_hash(without_c, shape).order()[0];
    if (before != 2) {
      EXPECT_EQ(before, after) << shape;
    }
  }
}

}  // namespace
}  // namespace shapeproxy::client::detail
