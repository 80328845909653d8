// ReplicationStatusMonitor with fake clocks: the grace period, no flapping on
// short blips, the catch-up condition, stall detection while the WAL
// advances, slot missing / lost, the unreserved warning, starting ->
// fallback, lag and what the snapshot may expose.
#include "status/status_monitor.h"

#include "status/dashboard.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <memory>

namespace shapeproxy::status {
namespace {

using namespace std::chrono_literals;
using Link = StreamLinkState;

class StatusMonitorTest : public ::testing::Test {
 protected:
  StatusMonitorTest() {
    log_sink_ = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(256);
    previous_logger_ = spdlog::default_logger();
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("status_test", log_sink_));
  }
  ~StatusMonitorTest() override { spdlog::set_default_logger(previous_logger_); }

  ReplicationStatusMonitor& monitor() {
    if (!monitor_) {
      monitor_ = std::make_unique<ReplicationStatusMonitor>(
          options_, [this] { return now_; }, [this] { return wall_start_ + (now_ - start_); });
    }
    return *monitor_;
  }

  // Advances fake time in small ticks, as the proxy's timer would.
  void advance(std::chrono::milliseconds duration) {
    const auto end = now_ + duration;
    while (now_ < end) {
      now_ = std::min(end, now_ + 100ms);
      monitor().tick();
    }
  }

  void probe(std::uint64_t head, std::string wal_status = "reserved") {
    ProbeResult result;
    result.reachable = true;
    result.slot_wal_status = std::move(wal_status);
    result.current_wal_lsn = head;
    result.slot_confirmed_lsn = std::min<std::uint64_t>(head, 16);
    monitor().on_health_probe(result);
  }

  // Streaming, probed at `head`, received up to `head`: live.
  void go_live(std::uint64_t head = 100) {
    monitor().on_stream_state(Link::kStreaming, nullptr);
    probe(head);
    monitor().on_progress(head);
    ASSERT_EQ(monitor().status(), ServingStatus::kLive);
  }

  std::size_t log_lines_containing(const std::string& needle) {
    auto lines = log_sink_->last_formatted();
    return static_cast<std::size_t>(std::count_if(lines.begin(), lines.end(), [&](auto& line) {
      return line.find(needle) != std::string::npos;
    }));
  }

  StatusMonitorOptions options_;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::time_point{} + 1h;
  std::chrono::steady_clock::time_point now_ = start_;
  const std::chrono::system_clock::time_point wall_start_ =
      std::chrono::system_clock::time_point{} + std::chrono::seconds(1'700'000'000);
  std::unique_ptr<ReplicationStatusMonitor> monitor_;
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> log_sink_;
  std::shared_ptr<spdlog::logger> previous_logger_;
};

TEST_F(StatusMonitorTest, StartsInStartingAndGoesLiveOnceCaughtUp) {
  EXPECT_EQ(monitor().status(), ServingStatus::kStarting);
  EXPECT_EQ(monitor().snapshot().transitions, 0u);

  monitor().on_stream_state(Link::kConnecting, nullptr);
  monitor().on_stream_state(Link::kStreaming, nullptr);
  advance(300ms);
  probe(1000);  // the head to catch up with
  monitor().on_progress(500);
  EXPECT_EQ(monitor().status(), ServingStatus::kStarting);
  probe(1500);  // a later head does not move the target
  monitor().on_progress(999);
  EXPECT_EQ(monitor().status(), ServingStatus::kStarting);
  monitor().on_progress(1000);
  EXPECT_EQ(monitor().status(), ServingStatus::kLive);

  auto snapshot = monitor().snapshot();
  EXPECT_EQ(snapshot.transitions, 1u);
  EXPECT_TRUE(snapshot.replication_available);
  EXPECT_NE(snapshot.cause.find("caught up"), std::string::npos) << snapshot.cause;
  EXPECT_EQ(snapshot.last_transition_at, wall_start_ + 300ms);
  EXPECT_EQ(log_lines_containing("starting -> live"), 1u);
}

TEST_F(StatusMonitorTest, StreamingWithoutAProbeStaysStarting) {
  monitor().on_stream_state(Link::kStreaming, nullptr);
  monitor().on_progress(5000);
  advance(10s);
  EXPECT_EQ(monitor().status(), ServingStatus::kStarting);
}

TEST_F(StatusMonitorTest, StartingGoesToFallbackWhenReplicationCannotBeReached) {
  Error refused{"connection_failed", "connection to server at \"db.internal\" failed", ""};
  monitor().on_stream_state(Link::kConnecting, nullptr);
  monitor().on_stream_state(Link::kDisconnected, &refused);
  advance(1900ms);
  EXPECT_EQ(monitor().status(), ServingStatus::kStarting);
  advance(200ms);
  EXPECT_EQ(monitor().status(), ServingStatus::kFallback);
  auto snapshot = monitor().snapshot();
  EXPECT_NE(snapshot.cause.find("could not connect"), std::string::npos) << snapshot.cause;
  EXPECT_EQ(snapshot.cause.find("db.internal"), std::string::npos) << snapshot.cause;
  EXPECT_EQ(log_lines_containing("starting -> fallback"), 1u);
}

TEST_F(StatusMonitorTest, StartingStillConnectingAfterGraceGoesToFallback) {
  monitor().on_stream_state(Link::kConnecting, nullptr);
  advance(2100ms);
  EXPECT_EQ(monitor().status(), ServingStatus::kFallback);
}

TEST_F(StatusMonitorTest, ShortBlipDoesNotFlap) {
  go_live();
  Error lost{"connection_lost", "server closed the connection unexpectedly", ""};
  for (int blip = 0; blip < 3; ++blip) {
    monitor().on_stream_state(Link::kDisconnected, &lost);
    advance(1500ms);
    monitor().on_stream_state(Link::kConnecting, nullptr);
    advance(400ms);
    monitor().on_stream_state(Link::kStreaming, nullptr);
    advance(3s);
    EXPECT_EQ(monitor().status(), ServingStatus::kLive) << "blip " << blip;
  }
  auto snapshot = monitor().snapshot();
  EXPECT_EQ(snapshot.transitions, 1u);
  EXPECT_EQ(snapshot.last_error, "replication connection lost");
}

TEST_F(StatusMonitorTest, OutageLongerThanGraceGoesToFallbackAndReturnsOnlyWhenCaughtUp) {
  go_live(100);
  Error lost{"connection_lost", "terminating connection due to administrator command", ""};
  monitor().on_stream_state(Link::kDisconnected, &lost);
  advance(1900ms);
  EXPECT_EQ(monitor().status(), ServingStatus::kLive);
  advance(200ms);
  ASSERT_EQ(monitor().status(), ServingStatus::kFallback);
  EXPECT_FALSE(monitor().snapshot().replication_available);
  EXPECT_NE(monitor().snapshot().cause.find("replication connection lost"), std::string::npos);

  // The database moves on while replication is down.
  probe(5000);
  advance(10s);
  monitor().on_stream_state(Link::kConnecting, nullptr);
  monitor().on_stream_state(Link::kStreaming, nullptr);
  monitor().on_progress(4000);
  EXPECT_EQ(monitor().status(), ServingStatus::kFallback) << "no target until a probe";
  probe(6000);  // the head when replication came back
  monitor().on_progress(5999);
  EXPECT_EQ(monitor().status(), ServingStatus::kFallback);
  probe(7000);
  monitor().on_progress(6000);
  EXPECT_EQ(monitor().status(), ServingStatus::kLive);
  auto snapshot = monitor().snapshot();
  EXPECT_EQ(snapshot.transitions, 3u);
  EXPECT_NE(snapshot.cause.find("0/1770"), std::string::npos) << snapshot.cause;  // 6000
  EXPECT_EQ(log_lines_containing("live -> fallback"), 1u);
  EXPECT_EQ(log_lines_containing("fallback -> live"), 1u);
}

TEST_F(StatusMonitorTest, ReconnectThatDropsAgainBeforeCatchingUpStaysInFallback) {
  go_live(100);
  monitor().on_stream_state(Link::kDisconnected, nullptr);
  advance(3s);
  ASSERT_EQ(monitor().status(), ServingStatus::kFallback);
  monitor().on_stream_state(Link::kStreaming, nullptr);
  probe(1000);
  monitor().on_stream_state(Link::kDisconnected, nullptr);
  monitor().on_progress(1000);
  advance(500ms);
  EXPECT_EQ(monitor().status(), ServingStatus::kFallback);
  monitor().on_stream_state(Link::kStreaming, nullptr);
  monitor().on_progress(1000);
  EXPECT_EQ(monitor().status(), ServingStatus::kFallback) << "needs a new target";
  probe(1200);
  monitor().on_progress(1200);
  EXPECT_EQ(monitor().status(), ServingStatus::kLive);
}

TEST_F(StatusMonitorTest, SilentStreamWhileWalAdvancesIsAStall) {
  go_live(100);
  // The WAL moves every second; the stream says nothing.
  std::uint64_t head = 100;
  int seconds_live = 0;
  for (int i = 0; i < 10 && monitor().status() == ServingStatus::kLive; ++i) {
    head += 100;
    probe(head);
    advance(1s);
    if (monitor().status() == ServingStatus::kLive) ++seconds_live;
  }
  ASSERT_EQ(monitor().status(), ServingStatus::kFallback);
  EXPECT_GE(seconds_live, 4);  // not before the stall timeout
  EXPECT_LE(seconds_live, 6);  // bounded: stall timeout + one probe interval
  auto snapshot = monitor().snapshot();
  EXPECT_NE(snapshot.cause.find("stalled"), std::string::npos) << snapshot.cause;
  EXPECT_FALSE(snapshot.replication_available);
  EXPECT_EQ(*snapshot.lag_bytes, head - 100);

  // The stream wakes up: live again once it reaches the head probed after.
  monitor().on_progress(head);
  probe(head + 50);
  EXPECT_EQ(monitor().status(), ServingStatus::kFallback);
  monitor().on_progress(head + 50);
  EXPECT_EQ(monitor().status(), ServingStatus::kLive);
}

TEST_F(StatusMonitorTest, IdleDatabaseIsNotAStall) {
  go_live(100);
  for (int i = 0; i < 30; ++i) {
    probe(100);
    advance(1s);
  }
  EXPECT_EQ(monitor().status(), ServingStatus::kLive);
  EXPECT_EQ(*monitor().snapshot().lag_seconds, 0.0);
}

TEST_F(StatusMonitorTest, StreamThatKeepsProgressingIsNotAStallEvenWhenBehind) {
  go_live(100);
  std::uint64_t head = 100;
  for (int i = 0; i < 30; ++i) {
    head += 1000;
    probe(head);
    advance(500ms);
    monitor().on_progress(head - 500);  // always behind, never silent
    advance(500ms);
  }
  EXPECT_EQ(monitor().status(), ServingStatus::kLive);
}

TEST_F(StatusMonitorTest, StallTimeoutIsConfigurable) {
  options_.stall_timeout = 1500ms;
  go_live(100);
  probe(200);
  advance(1400ms);
  EXPECT_EQ(monitor().status(), ServingStatus::kLive);
  advance(200ms);
  EXPECT_EQ(monitor().status(), ServingStatus::kFallback);
}

TEST_F(StatusMonitorTest, LostSlotGoesToFallbackAfterGrace) {
  go_live(100);
  probe(100, "lost");
  advance(1900ms);
  EXPECT_EQ(monitor().status(), ServingStatus::kLive);
  advance(200ms);
  ASSERT_EQ(monitor().status(), ServingStatus::kFallback);
  auto snapshot = monitor().snapshot();
  EXPECT_NE(snapshot.cause.find("invalidated"), std::string::npos) << snapshot.cause;
  EXPECT_EQ(snapshot.slot_wal_status, "lost");
}

TEST_F(StatusMonitorTest, MissingSlotGoesToFallbackAndBackOnceRecreatedAndCaughtUp) {
  go_live(100);
  probe(150, "");
  advance(2100ms);
  ASSERT_EQ(monitor().status(), ServingStatus::kFallback);
  EXPECT_EQ(monitor().snapshot().slot_wal_status, "missing");
  EXPECT_NE(monitor().snapshot().cause.find("missing"), std::string::npos);

  // The proxy recreates the slot; the stream reconnects from it.
  monitor().on_stream_state(Link::kDisconnected, nullptr);
  monitor().on_stream_state(Link::kStreaming, nullptr);
  probe(400, "reserved");
  monitor().on_progress(400);
  EXPECT_EQ(monitor().status(), ServingStatus::kLive);
}

TEST_F(StatusMonitorTest, MissingSlotProbedBeforeTheStreamCreatedItDoesNotCauseFallback) {
  // A fresh start: the first probe runs before the stream has created the slot.
  monitor().on_stream_state(Link::kConnecting, nullptr);
  probe(100, "");
  advance(300ms);
  monitor().on_stream_state(Link::kStreaming, nullptr);
  advance(2s);
  EXPECT_EQ(monitor().status(), ServingStatus::kStarting);
  probe(120, "reserved");
  monitor().on_progress(120);
  EXPECT_EQ(monitor().status(), ServingStatus::kLive);
  EXPECT_EQ(monitor().snapshot().transitions, 1u);
  EXPECT_EQ(log_lines_containing("-> fallback"), 0u);
}

TEST_F(StatusMonitorTest, SlotMissingBlipShorterThanGraceDoesNotFlap) {
  go_live(100);
  probe(100, "");
  advance(1s);
  probe(100, "reserved");
  advance(5s);
  EXPECT_EQ(monitor().status(), ServingStatus::kLive);
  EXPECT_EQ(monitor().snapshot().transitions, 1u);
}

TEST_F(StatusMonitorTest, UnreservedWarnsOncePerEpisodeWithoutLeavingLive) {
  go_live(100);
  for (int i = 0; i < 5; ++i) {
    probe(100, "unreserved");
    advance(1s);
  }
  EXPECT_EQ(monitor().status(), ServingStatus::kLive);
  EXPECT_EQ(monitor().snapshot().slot_wal_status, "unreserved");
  EXPECT_EQ(log_lines_containing("unreserved"), 1u);
  probe(100, "extended");
  probe(100, "unreserved");
  EXPECT_EQ(log_lines_containing("unreserved"), 2u);
  EXPECT_EQ(monitor().snapshot().transitions, 1u);
}

TEST_F(StatusMonitorTest, GracePeriodIsConfigurable) {
  options_.grace_period = 500ms;
  go_live();
  monitor().on_stream_state(Link::kDisconnected, nullptr);
  advance(400ms);
  EXPECT_EQ(monitor().status(), ServingStatus::kLive);
  advance(200ms);
  EXPECT_EQ(monitor().status(), ServingStatus::kFallback);
}

TEST_F(StatusMonitorTest, UnreachableProbeIsReportedWithoutTransition) {
  go_live();
  ProbeResult down;
  down.reachable = false;
  down.error = "could not connect to server at \"10.1.2.3\"";
  monitor().on_health_probe(down);
  advance(10s);
  auto snapshot = monitor().snapshot();
  EXPECT_EQ(snapshot.status, ServingStatus::kLive);
  EXPECT_FALSE(snapshot.database_reachable);
  EXPECT_EQ(snapshot.last_error.find("10.1.2.3"), std::string::npos);
  probe(100);
  EXPECT_TRUE(monitor().snapshot().database_reachable);
}

TEST_F(StatusMonitorTest, LagInBytesAndSeconds) {
  go_live(1000);
  auto snapshot = monitor().snapshot();
  EXPECT_EQ(snapshot.lag_bytes, 0u);
  EXPECT_EQ(snapshot.lag_seconds, 0.0);

  advance(1s);
  probe(3000);  // WAL the stream has not received, from now on
  advance(2s);
  monitor().on_progress(2000);
  snapshot = monitor().snapshot();
  EXPECT_EQ(snapshot.lag_bytes, 1000u);
  EXPECT_NEAR(*snapshot.lag_seconds, 2.0, 1e-6);
  monitor().on_progress(3000);
  snapshot = monitor().snapshot();
  EXPECT_EQ(snapshot.lag_bytes, 0u);
  EXPECT_EQ(snapshot.lag_seconds, 0.0);
  probe(4000);
  advance(1s);
  EXPECT_NEAR(*monitor().snapshot().lag_seconds, 1.0, 1e-6);
}

TEST_F(StatusMonitorTest, SnapshotBeforeAnyProbe) {
  auto snapshot = monitor().snapshot();
  EXPECT_EQ(snapshot.status, ServingStatus::kStarting);
  EXPECT_FALSE(snapshot.slot_wal_status);
  EXPECT_FALSE(snapshot.lag_bytes);
  EXPECT_FALSE(snapshot.lag_seconds);
  EXPECT_EQ(snapshot.slot_name, "shapeproxy");
  EXPECT_EQ(snapshot.last_transition_at, wall_start_);
}

TEST(PublicErrorMessage, NeverRepeatsTheRawMessage) {
  Error error{"connection_failed",
              "connection to server at \"db.internal\" (10.0.0.5), port 5432 failed: password "
              "authentication failed for user \"alice\"",
              "check host=db.internal password=hunter2"};
  std::string text = public_error_message(error);
  EXPECT_EQ(text, "could not connect to PostgreSQL");
  EXPECT_EQ(public_error_message(Error{"42501", "permission denied for table t", ""}),
            "replication error (42501)");
  EXPECT_EQ(public_error_message(Error{"weird code; DROP TABLE", "x", ""}), "replication error");
  EXPECT_EQ(public_error_message(Error{"slot_invalidated", "slot \"x\" on host y", ""}),
            "the replication slot was invalidated");
}

TEST_F(StatusMonitorTest, HistoryKeepsTheLast100TransitionsAndFifteenMinutesOfLag) {
  go_live(100);
  Error lost{"connection_lost", "server closed the connection unexpectedly", ""};
  // 60 outages: 1 + 120 transitions; the oldest go beyond 100.
  for (int i = 0; i < 60; ++i) {
    monitor().on_stream_state(Link::kDisconnected, &lost);
    advance(3s);
    ASSERT_EQ(monitor().status(), ServingStatus::kFallback);
    monitor().on_stream_state(Link::kStreaming, nullptr);
    const std::uint64_t head = 200 + static_cast<std::uint64_t>(i);
    probe(head);
    monitor().on_progress(head);
    advance(200ms);
    ASSERT_EQ(monitor().status(), ServingStatus::kLive);
  }
  StatusHistory history = monitor().history();
  ASSERT_EQ(history.transitions.size(), StatusHistory::kMaxTransitions);
  EXPECT_EQ(history.transitions.back().from, ServingStatus::kFallback);
  EXPECT_EQ(history.transitions.back().to, ServingStatus::kLive);
  const TransitionRecord& fallback = history.transitions[history.transitions.size() - 2];
  EXPECT_EQ(fallback.to, ServingStatus::kFallback);
  EXPECT_FALSE(fallback.cause.empty());
  for (std::size_t i = 1; i < history.transitions.size(); ++i)
    EXPECT_LE(history.transitions[i - 1].at, history.transitions[i].at);

  // A lag sample per probe; none older than 15 minutes.
  ASSERT_FALSE(history.lag.empty());
  // (The last probe saw head 259 with 258 received.)
  EXPECT_EQ(history.lag.back().lag_bytes, std::optional<std::uint64_t>(1));
  advance(16min);
  probe(300);
  history = monitor().history();
  ASSERT_EQ(history.lag.size(), 1u) << "samples older than the window are dropped";
  EXPECT_EQ(history.lag.back().lag_bytes, std::optional<std::uint64_t>(300 - 259));
  ProbeResult unreachable;
  unreachable.reachable = false;
  monitor().on_health_probe(unreachable);
  history = monitor().history();
  ASSERT_EQ(history.lag.size(), 2u);
  EXPECT_FALSE(history.lag.back().lag_bytes.has_value())
      << "no lag while the database is unreachable";
}

TEST(DashboardPageTest, IsSelfContained) {
  const std::string_view html = dashboard_html();
  EXPECT_NE(html.find("<!doctype html>"), std::string_view::npos);
  EXPECT_NE(html.find("id=\"state\""), std::string_view::npos);
  EXPECT_NE(html.find("/v1/status/history"), std::string_view::npos);
  // Nothing from elsewhere: no absolute URLs, no external scripts, styles or images.
  for (std::string_view banned :
       {"http://", "https://", "//cdn", "<script src", "<link ", "@import"})
    EXPECT_EQ(html.find(banned), std::string_view::npos) << banned;
}

}  // namespace
}  // namespace shapeproxy::status
