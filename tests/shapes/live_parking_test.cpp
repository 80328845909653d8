// LiveParking and ShapeReader on ready shapes, with a manual clock: parked
// live reads are answered when their shape's log grows (readers at one
// offset share one body), when the live timeout passes (up-to-date at their
// offset, earliest deadline first), when they are released, or dropped when
// cancelled. No sleeps: the tests move the clock and wait on parked_reads().
#include "shapes/live_parking.h"

#include <gtest/gtest.h>

#include "shape_fixtures.h"
#include "shapes/fallback_refresher.h"
#include "support/manual_clock.h"

namespace shapeproxy::shapes {
namespace {

using namespace std::chrono_literals;
using fixtures::ready_shape;

class LiveParkingTest : public ::testing::Test {
 protected:
  LiveParkingTest()
      : fallback_(strand_.executor(), clock_, owner_.lifetime(), {}, 1s, {}),
        reader_(strand_.executor(), owner_.lifetime(), fallback_),
        parking_(strand_.executor(), clock_, owner_.lifetime(), reader_, 20s) {}
  ~LiveParkingTest() override {
    strand_.run([this] { parking_.release_all(); });
    owner_.alive.reset();  // callbacks still queued find the owner gone
    strand_.run([] {});
    strand_.stop();
  }

  struct Parked {
    std::shared_ptr<ReadTicket> ticket = std::make_shared<ReadTicket>();
    std::shared_ptr<std::optional<ReadOutcome>> outcome =
        std::make_shared<std::optional<ReadOutcome>>();
  };
  // Parks a live read of `shape` after `after` (on the strand).
  Parked park(const std::shared_ptr<Shape>& shape, LogOffset after) {
    Parked parked;
    parked.ticket->done = [outcome = parked.outcome](ReadOutcome got) { *outcome = got; };
    strand_.run([&] { parking_.park(shape, after, parked.ticket); });
    return parked;
  }
  bool answered(const Parked& parked) {
    return strand_.run([&] { return parked.outcome->has_value(); });
  }

  fixtures::Strand strand_;
  fixtures::Owner owner_;
  std::shared_ptr<testing::ManualClock> clock_ = std::make_shared<testing::ManualClock>();
  FallbackRefresher fallback_;
  ShapeReader reader_;
  LiveParking parking_;
};

TEST_F(LiveParkingTest, AReadIsAnsweredUpToDateAtItsOffsetWhenTheLiveTimeoutPasses) {
  auto shape = ready_shape("h1");
  const auto end = shape->log().end();
  auto parked = park(shape, end);
  EXPECT_EQ(parking_.parked_reads(), 1u);
  clock_->advance(19s);
  // A strand round-trip after the advance: nothing was due.
  EXPECT_FALSE(answered(parked));
  clock_->advance(1s);
  ASSERT_TRUE(strand_.eventually([&] { return parked.outcome->has_value(); }));
  auto* result = std::get_if<ReadResult>(&**parked.outcome);
  ASSERT_NE(result, nullptr);
  EXPECT_TRUE(result->up_to_date);
  EXPECT_EQ(result->offset, end);
  EXPECT_EQ(result->handle, "h1");
  EXPECT_EQ(parking_.parked_reads(), 0u);
}

TEST_F(LiveParkingTest, DeadlinesExpireEarliestFirst) {
  auto shape = ready_shape("h1");
  auto first = park(shape, shape->log().end());
  clock_->advance(5s);
  auto second = park(shape, shape->log().end());
  clock_->advance(15s);
  ASSERT_TRUE(strand_.eventually([&] { return first.outcome->has_value(); }));
  EXPECT_FALSE(answered(second));
  EXPECT_EQ(parking_.parked_reads(), 1u);
  clock_->advance(5s);
  ASSERT_TRUE(strand_.eventually([&] { return second.outcome->has_value(); }));
  EXPECT_EQ(parking_.parked_reads(), 0u);
}

TEST_F(LiveParkingTest, AGrowingLogWakesItsReadersWithOneSharedBody) {
  auto shape = ready_shape("h1");
  auto other = ready_shape("h2");
  const auto end = shape->log().end();
  auto a = park(shape, end);
  auto b = park(shape, end);
  auto elsewhere = park(other, other->log().end());
  strand_.run([&] {
    EXPECT_TRUE(fixtures::apply(*shape, fixtures::inserts(10, 1000, 1, 2)));
    parking_.wake(shape);
  });
  ASSERT_TRUE(answered(a));
  ASSERT_TRUE(answered(b));
  auto* ra = std::get_if<ReadResult>(&**a.outcome);
  auto* rb = std::get_if<ReadResult>(&**b.outcome);
  ASSERT_TRUE(ra && rb);
  EXPECT_EQ(ra->body, rb->body);  // the same rendered body, not a copy
  EXPECT_NE(ra->body->find("\"insert\""), std::string::npos);
  EXPECT_GT(ra->offset, end);
  EXPECT_FALSE(answered(elsewhere));
  EXPECT_EQ(parking_.parked_reads(), 1u);
}

// wake() is called when a log grew; a reader with nothing new gets
// up-to-date at its own offset (it comes back and parks again).
TEST_F(LiveParkingTest, AWakeWithNothingNewForAnOffsetAnswersUpToDateThere) {
  auto shape = ready_shape("h1");
  strand_.run([&] { fixtures::apply(*shape, fixtures::inserts(10, 1000, 1, 1)); });
  const auto end = shape->log().end();
  auto parked = park(shape, end);
  strand_.run([&] { parking_.wake(shape); });
  ASSERT_TRUE(answered(parked));
  auto* result = std::get_if<ReadResult>(&**parked.outcome);
  ASSERT_NE(result, nullptr);
  EXPECT_TRUE(result->up_to_date);
  EXPECT_EQ(result->offset, end);
  EXPECT_EQ(parking_.parked_reads(), 0u);
}

TEST_F(LiveParkingTest, ReadersOfAGoneShapeMustRefetch) {
  auto shape = ready_shape("h1");
  auto parked = park(shape, shape->log().end());
  strand_.run([&] {
    shape->mark_gone();
    parking_.wake(shape);
  });
  ASSERT_TRUE(answered(parked));
  EXPECT_TRUE(std::holds_alternative<MustRefetch>(**parked.outcome));
}

TEST_F(LiveParkingTest, ACancelledReadIsDroppedAndNeverAnswered) {
  auto shape = ready_shape("h1");
  auto parked = park(shape, shape->log().end());
  strand_.run([&] {
    parked.ticket->cancelled = true;
    std::exchange(parked.ticket->unpark, nullptr)();
  });
  EXPECT_EQ(parking_.parked_reads(), 0u);
  clock_->advance(30s);
  strand_.run([] {});
  EXPECT_FALSE(answered(parked));
}

TEST_F(LiveParkingTest, ReleaseAnswersEveryReaderAtOnce) {
  auto shape = ready_shape("h1");
  auto a = park(shape, shape->log().end());
  auto b = park(ready_shape("h2"), LogOffset::start());
  strand_.run([&] { parking_.release_all(); });
  EXPECT_TRUE(answered(a));
  EXPECT_TRUE(answered(b));
  EXPECT_EQ(parking_.parked_reads(), 0u);
}

TEST_F(LiveParkingTest, NoCallbackRunsOnceTheOwnerIsGone) {
  auto shape = ready_shape("h1");
  auto parked = park(shape, shape->log().end());
  owner_.alive.reset();
  clock_->advance(30s);
  strand_.run([] {});
  EXPECT_FALSE(answered(parked));
  owner_.alive = std::make_shared<int>(0);
}

// A proxy restarted after a crash: a client's offset from before it lies
// past what the stream has replayed so far. Its live read waits (it is
// not refused) and gets what follows once the stream gets there.
TEST_F(LiveParkingTest, AReadPastEverythingSeenWaitsForTheStreamAndGetsWhatFollows) {
  auto shape = ready_shape("h1");
  const auto before_crash = LogOffset::at(5000, 0);
  Parked parked;
  parked.ticket->done = [outcome = parked.outcome](ReadOutcome got) { *outcome = got; };
  strand_.run([&] {
    reader_.note_commit(1000);  // replayed, below the client's offset
    ReadRequest request;
    request.start = ReadRequest::Start::kAt;
    request.offset = before_crash;
    request.live = true;
    EXPECT_TRUE(reader_.beyond_seen(*shape, request));
    parking_.park_ahead(shape, before_crash, parked.ticket);
  });
  EXPECT_EQ(parking_.parked_reads(), 1u);
  clock_->advance(9s);
  EXPECT_FALSE(answered(parked));
  strand_.run([&] {
    fixtures::apply(*shape, fixtures::inserts(11, 6000, 7, 7));
    reader_.note_commit(6000);
    parking_.wake(shape);
  });
  ASSERT_TRUE(answered(parked));
  auto* result = std::get_if<ReadResult>(&**parked.outcome);
  ASSERT_NE(result, nullptr);
  EXPECT_GT(result->offset, before_crash);
  EXPECT_NE(result->body->find("\"insert\""), std::string::npos);
}

// Past everything seen, still at its deadline (half the live timeout): an
// offset this proxy never handed out is a 400, not a read parked where it
// would miss what others receive. One the stream has passed is an ordinary
// parked read: a wake answers it up-to-date at its own offset.
TEST_F(LiveParkingTest, AReadStillPastEverythingSeenAtHalfTheLiveTimeoutIs400) {
  auto shape = ready_shape("h1");
  Parked far;
  far.ticket->done = [outcome = far.outcome](ReadOutcome got) { *outcome = got; };
  Parked passed;
  passed.ticket->done = [outcome = passed.outcome](ReadOutcome got) { *outcome = got; };
  strand_.run([&] {
    reader_.note_commit(1000);
    parking_.park_ahead(shape, LogOffset::at(1'000'000'000, 0), far.ticket);
    parking_.park_ahead(shape, LogOffset::at(1500, 0), passed.ticket);
    parking_.wake(shape);  // neither passed yet: both stay
  });
  EXPECT_FALSE(answered(far));
  EXPECT_FALSE(answered(passed));
  strand_.run([&] {
    reader_.note_progress(2000);  // the stream is idle past 1500
    parking_.wake(shape);
  });
  ASSERT_TRUE(answered(passed));
  auto* result = std::get_if<ReadResult>(&**passed.outcome);
  ASSERT_NE(result, nullptr);
  EXPECT_TRUE(result->up_to_date);
  EXPECT_EQ(result->offset, LogOffset::at(1500, 0));
  clock_->advance(9s);
  EXPECT_FALSE(answered(far));
  clock_->advance(1s);
  ASSERT_TRUE(strand_.eventually([&] { return far.outcome->has_value(); }));
  auto* invalid = std::get_if<InvalidRequest>(&**far.outcome);
  ASSERT_NE(invalid, nullptr);
  EXPECT_EQ(invalid->field, "offset");
  EXPECT_EQ(parking_.parked_reads(), 0u);
}

// ShapeReader: what a read gets right away.
TEST_F(LiveParkingTest, ReaderAnswersFromTheLogOrSaysToParkOrRefetch) {
  auto shape = ready_shape("h1");
  strand_.run([&] {
    fixtures::apply(*shape, fixtures::inserts(10, 1000, 1, 1));
    reader_.note_commit(1000);
    std::shared_ptr<LogDiskRead> disk;  // a shape in memory only: never set
    ReadRequest now;
    now.start = ReadRequest::Start::kNow;
    auto at_now = reader_.read_now(*shape, now, &disk);
    ASSERT_TRUE(at_now && std::holds_alternative<ReadResult>(*at_now));
    EXPECT_EQ(std::get<ReadResult>(*at_now).offset, shape->log().end());
    EXPECT_NE(std::get<ReadResult>(*at_now).body->find("\"global_last_seen_lsn\":\"1001\""),
              std::string::npos);
    ReadRequest live;
    live.start = ReadRequest::Start::kAt;
    live.offset = shape->log().end();
    live.live = true;
    EXPECT_FALSE(reader_.read_now(*shape, live, &disk));  // park
    live.live = false;
    auto caught_up = reader_.read_now(*shape, live, &disk);
    ASSERT_TRUE(caught_up && std::holds_alternative<ReadResult>(*caught_up));
    EXPECT_TRUE(std::get<ReadResult>(*caught_up).up_to_date);
    reader_.note_progress(2000);
    EXPECT_NE(reader_.up_to_date_body()->find("\"1999\""), std::string::npos);
    EXPECT_EQ(disk, nullptr);
  });
}

// The thread rule is enforced: a strand-only method called from another
// thread aborts, naming itself.
TEST_F(LiveParkingTest, AStrandOnlyMethodCalledOffTheStrandAborts) {
#ifdef SHAPEPROXY_NO_THREAD_CHECKS
  GTEST_SKIP() << "built with SHAPEPROXY_THREAD_CHECKS=OFF";
#endif
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto shape = ready_shape("h1");
  EXPECT_DEATH(parking_.has_parked(shape), "has_parked must run on its strand");
}

}  // namespace
}  // namespace shapeproxy::shapes
