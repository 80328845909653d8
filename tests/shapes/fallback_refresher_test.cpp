// FallbackRefresher: in degraded mode each active shape is re-queried once
// per poll interval (a manual clock: the test moves it) and the difference
// lands in its log; a query refused for the cap makes the shape's readers
// get 503 with retry-after until a later query succeeds; leaving degraded
// mode ends the loop. The direct queries come from an injected source.
#include "shapes/fallback_refresher.h"

#include <gtest/gtest.h>

#include "shape_fixtures.h"
#include "support/manual_clock.h"

namespace shapeproxy::shapes {
namespace {

using namespace std::chrono_literals;

class FallbackRefresherTest : public ::testing::Test {
 protected:
  FallbackRefresherTest() {
    refresher_ = std::make_unique<FallbackRefresher>(
        strand_.executor(), clock_, owner_.lifetime(),
        [this](const ShapeDefinition&, RowsObserver)
            -> boost::asio::awaitable<Result<std::shared_ptr<const SnapshotRows>>> {
          ++queries_;
          if (refuse_) co_return Error{"overloaded", "too many fallback queries", ""};
          auto rows = std::make_shared<SnapshotRows>();
          rows->snapshot = PgSnapshot{100, 100, {}};
          for (long id = 1; id <= rows_; ++id)
            rows->rows.push_back({std::to_string(id), "row " + std::to_string(id)});
          co_return rows;
        },
        1500ms,
        FallbackRefresherHooks{.active_shapes = [this](Clock::time_point) { return active_; },
                               .grew = [this](const std::shared_ptr<Shape>&) { ++grew_; },
                               .floor = {}});
  }
  ~FallbackRefresherTest() override {
    strand_.run([this] { refresher_->set_active(false); });
    owner_.alive.reset();
    strand_.run([] {});
    strand_.stop();
  }

  fixtures::Strand strand_;
  fixtures::Owner owner_;
  std::shared_ptr<testing::ManualClock> clock_ = std::make_shared<testing::ManualClock>();
  std::unique_ptr<FallbackRefresher> refresher_;
  // On the strand:
  std::vector<std::shared_ptr<Shape>> active_;
  int queries_ = 0;
  int grew_ = 0;
  long rows_ = 0;
  bool refuse_ = false;
};

TEST_F(FallbackRefresherTest, ActiveShapesAreRefreshedOncePerPollInterval) {
  auto shape = fixtures::ready_shape("h1");
  strand_.run([&] {
    active_ = {shape};
    rows_ = 2;
    refresher_->set_active(true);
    EXPECT_TRUE(refresher_->active());
  });
  ASSERT_TRUE(strand_.eventually([&] { return grew_ == 1; }));
  EXPECT_EQ(strand_.run([&] { return shape->row_count(); }), 2u);
  ASSERT_TRUE(strand_.eventually([&] { return clock_->pending() == 1; }));  // the pause
  clock_->advance(1s);
  strand_.run([] {});
  EXPECT_EQ(strand_.run([&] { return queries_; }), 1);
  strand_.run([&] { rows_ = 3; });
  clock_->advance(500ms);
  ASSERT_TRUE(strand_.eventually([&] { return grew_ == 2; }));
  EXPECT_EQ(strand_.run([&] { return queries_; }), 2);
  EXPECT_EQ(strand_.run([&] { return shape->row_count(); }), 3u);
  // Nothing new: queried, nothing appended.
  ASSERT_TRUE(strand_.eventually([&] { return clock_->pending() == 1; }));
  clock_->advance(1500ms);
  ASSERT_TRUE(strand_.eventually([&] { return queries_ == 3; }));
  EXPECT_EQ(strand_.run([&] { return grew_; }), 2);
}

TEST_F(FallbackRefresherTest, LeavingDegradedModeEndsTheLoop) {
  auto shape = fixtures::ready_shape("h1");
  strand_.run([&] {
    active_ = {shape};
    refresher_->set_active(true);
  });
  ASSERT_TRUE(strand_.eventually([&] { return queries_ == 1 && clock_->pending() == 1; }));
  strand_.run([&] { refresher_->set_active(false); });
  clock_->advance(10s);
  strand_.run([] {});
  EXPECT_EQ(strand_.run([&] { return queries_; }), 1);
  EXPECT_EQ(clock_->pending(), 0u);
}

TEST_F(FallbackRefresherTest, ARefusedQueryAnswers503UntilALaterOneSucceeds) {
  auto shape = fixtures::ready_shape("h1");
  strand_.run([&] {
    active_ = {shape};
    refuse_ = true;
    refresher_->set_active(true);
  });
  ASSERT_TRUE(strand_.eventually([&] { return refresher_->refusal(shape).has_value(); }));
  auto refused = strand_.run([&] { return refresher_->refusal(shape); });
  EXPECT_EQ(refused->retry_after, 2s);  // the poll interval, rounded up
  EXPECT_NE(refused->message.find("overloaded"), std::string::npos);
  strand_.run([&] { refuse_ = false; });
  clock_->advance(1500ms);
  ASSERT_TRUE(strand_.eventually([&] { return !refresher_->refusal(shape).has_value(); }));
}

TEST_F(FallbackRefresherTest, RefreshAllQueriesEveryShapeOnce) {
  auto a = fixtures::ready_shape("h1");
  auto b = fixtures::ready_shape("h2");
  strand_.run([&] {
    rows_ = 1;
    refresher_->refresh_all({a, b});
  });
  ASSERT_TRUE(strand_.eventually([&] { return grew_ == 2; }));
  EXPECT_EQ(strand_.run([&] { return queries_; }), 2);
  EXPECT_FALSE(strand_.run([&] { return refresher_->active(); }));
}

// A new shape from a fallback result is answered before its rows reach the
// state store (Shape::store_deferred_state(), run by the snapshot taker once
// the waiting readers are answered). A refresh or a change arriving first
// still sees every row: the diff is against the snapshot, not an empty shape.
TEST_F(FallbackRefresherTest, AFallbackSnapshotServedBeforeItsRowsAreStoredDiffsAgainstThem) {
  auto rows_of = [](std::vector<std::pair<long, std::string>> rows) {
    auto made = std::make_shared<SnapshotRows>();
    made->snapshot = PgSnapshot{100, 100, {}};
    for (auto& [id, title] : rows) made->rows.push_back({std::to_string(id), title});
    return std::shared_ptr<const SnapshotRows>(made);
  };
  auto shape = std::make_shared<Shape>(fixtures::items_definition(), "h1", 4096);
  auto gone = std::make_shared<Shape>(fixtures::items_definition(), "h2", 4096);
  strand_.run([&] {
    auto snapshot = rows_of({{1, "row 1"}, {2, "row 2"}, {3, "row 3"}});
    ASSERT_TRUE(shape->apply_snapshot(snapshot, Shape::SnapshotStorage::kAfterServing));
    EXPECT_EQ(shape->phase(), Shape::Phase::kReady);
    EXPECT_EQ(shape->log().snapshot_chunk_count(), 1u);  // servable now
    EXPECT_TRUE(shape->has_deferred_state());            // not stored yet
    EXPECT_EQ(shape->row_count(), 3u);

    // Refreshed before the store write: 3 deleted, 2 updated, 4 inserted.
    auto fresh = rows_of({{1, "row 1"}, {2, "changed"}, {4, "row 4"}});
    const auto mark = shape->begin_refresh();
    auto refreshed = shape->apply_refresh(*fresh, mark);
    shape->end_refresh();
    ASSERT_TRUE(refreshed) << refreshed.error().to_string();
    EXPECT_TRUE(refreshed.value());
    EXPECT_FALSE(shape->has_deferred_state());
    EXPECT_TRUE(shape->store_deferred_state());  // done already: nothing to do
    // The logged operations, as "<operation> <id>".
    std::vector<std::string> operations;
    for (const auto& entry : shape->log().tail_after(LogOffset::start(), 1 << 20)) {
      for (const char* kind : {"insert", "update", "delete"}) {
        if (entry.json.find(std::string(R"("operation":")") + kind + '"') == std::string::npos)
          continue;
        for (const char* id : {"1", "2", "3", "4"}) {
          if (entry.json.find(std::string(R"("key":"\"public\".\"items\"/\")") + id + R"(\"")") !=
              std::string::npos)
            operations.push_back(std::string(kind) + " " + id);
        }
      }
    }
    EXPECT_EQ(operations, (std::vector<std::string>{"delete 3", "update 2", "insert 4"}));
    EXPECT_EQ(shape->row_count(), 3u);
    EXPECT_TRUE(shape->holds(shape->row_key({"4", "row 4"})));
    EXPECT_FALSE(shape->holds(shape->row_key({"3", "row 3"})));

    // A shape removed before its rows are stored never stores them.
    ASSERT_TRUE(
        gone->apply_snapshot(rows_of({{7, "row 7"}}), Shape::SnapshotStorage::kAfterServing));
    gone->mark_gone();
    EXPECT_FALSE(gone->has_deferred_state());
    EXPECT_TRUE(gone->store_deferred_state());
  });
}

// A fallback result can be older than the refresh that applies it: the
// query is shared with callers that started it earlier, and a fresh result
// is reused for a short while. One that does not see a transaction the
// stream applied before the refresh began (replication back, fallback not
// over yet) must not be diffed in: that would log the transaction's rows
// as deleted, and they stay lost once the proxy is live again. Nor may a
// result older than the last one applied. Before: both were applied.
TEST_F(FallbackRefresherTest, AResultOlderThanWhatTheShapeHoldsIsRefused) {
  auto rows_of = [](PgSnapshot snapshot, std::vector<long> ids) {
    auto made = std::make_shared<SnapshotRows>();
    made->snapshot = std::move(snapshot);
    for (long id : ids) made->rows.push_back({std::to_string(id), "row " + std::to_string(id)});
    return std::shared_ptr<const SnapshotRows>(made);
  };
  auto shape = std::make_shared<Shape>(fixtures::items_definition(), "h1", 4096);
  strand_.run([&] {
    ASSERT_TRUE(shape->apply_snapshot(rows_of(PgSnapshot{100, 100, {}}, {1, 2})));
    // Taken before transaction 101 committed (101 is not below its xmax).
    auto before_101 = rows_of(PgSnapshot{101, 101, {}}, {1, 2});
    EXPECT_TRUE(fixtures::apply(*shape, fixtures::inserts(101, 5000, 3, 3)));
    const auto end = shape->log().end();
    const auto mark = shape->begin_refresh();  // after 101 was applied
    auto stale = shape->apply_refresh(*before_101, mark);
    shape->end_refresh();
    ASSERT_TRUE(stale) << stale.error().to_string();
    EXPECT_FALSE(stale.value()) << "a result that does not see 101 was diffed in";
    EXPECT_EQ(shape->log().end(), end);
    EXPECT_TRUE(shape->holds(shape->row_key({"3", "row 3"})));

    // A newer result (row 4 from a transaction the stream has not sent yet)
    // is applied; an older one after it is refused.
    auto newer = rows_of(PgSnapshot{103, 103, {}}, {1, 2, 3, 4});
    auto applied = shape->apply_refresh(*newer, shape->begin_refresh());
    shape->end_refresh();
    ASSERT_TRUE(applied && applied.value());
    auto older = rows_of(PgSnapshot{102, 102, {}}, {1, 2, 3});
    auto refused = shape->apply_refresh(*older, shape->begin_refresh());
    shape->end_refresh();
    ASSERT_TRUE(refused);
    EXPECT_FALSE(refused.value()) << "a result older than the last applied one was diffed in";
    EXPECT_TRUE(shape->holds(shape->row_key({"4", "row 4"})));
    EXPECT_EQ(shape->row_count(), 4u);
  });
}

}  // namespace
}  // namespace shapeproxy::shapes
