// Compactor: a shape whose synced changes outgrew compact_bytes is folded
// into a new snapshot on the worker (readers behind it refetch); a failed
// compaction keeps the log as it was and is not retried before its back-off
// passes (a manual clock: no waiting 30 s).
#include "shapes/compactor.h"

#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>

#include "shape_fixtures.h"
#include "support/manual_clock.h"
#include "support/storage_test_files.h"

namespace shapeproxy::shapes {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

class CompactorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CompactorOptions options;
    options.compact_bytes = 1;
    options.step = [this] {
      ++steps_;
      if (fail_) throw std::runtime_error("step failed on purpose");
    };
    compactor_ = std::make_unique<Compactor>(
        strand_.executor(), clock_, owner_.lifetime(), options,
        [this](const std::shared_ptr<Shape>& shape, const char*) { rotated_.push_back(shape); });
  }
  void TearDown() override {
    strand_.run([this] { compactor_->stop(); });
    owner_.alive.reset();
    strand_.run([] {});
    strand_.stop();
  }
  // Applies inserts, makes them durable, commits the rows to the state
  // store, and offers the shape for compaction (what LogDurability does).
  void apply_and_sync(const std::shared_ptr<Shape>& shape, replication::Lsn lsn) {
    strand_.run([&] {
      ASSERT_TRUE(fixtures::apply(*shape, fixtures::inserts(lsn, lsn, lsn, lsn + 9)));
      ASSERT_TRUE(shape->files()->write());
      shape->seal_state();
      auto pending = shape->files()->pending_sync();
      ASSERT_TRUE(storage::ShapeFiles::sync_written(pending));
      shape->files()->mark_synced(pending);
      // The rows reach the state store once their records are durable.
      auto committed = shape->commit_state();
      ASSERT_TRUE(committed) << committed.error().to_string();
      compactor_->maybe_compact(shape);
    });
  }
  bool compacted(const std::shared_ptr<Shape>& shape) {
    return strand_.run([&] { return shape->meta().compacted_at.has_value(); });
  }

  fixtures::Strand strand_;
  fixtures::Owner owner_;
  std::shared_ptr<testing::ManualClock> clock_ = std::make_shared<testing::ManualClock>();
  testing::TempDir temp_;
  const fs::path dir_ = temp_.path();
  std::atomic<int> steps_{0};
  std::atomic<bool> fail_{false};
  std::unique_ptr<Compactor> compactor_;
  std::vector<std::shared_ptr<Shape>> rotated_;  // on the strand
};

TEST_F(CompactorTest, AShapePastTheThresholdIsFoldedIntoANewSnapshot) {
  auto shape = fixtures::ready_shape("h1", dir_);
  const auto before = shape->log().end();
  apply_and_sync(shape, 1000);
  ASSERT_TRUE(strand_.eventually([&] { return shape->meta().compacted_at.has_value(); }));
  EXPECT_GT(steps_.load(), 0);
  strand_.run([&] {
    EXPECT_EQ(shape->row_count(), 10u);
    EXPECT_FALSE(shape->log().contains(before));  // readers behind the compaction refetch
    EXPECT_EQ(compactor_->backing_off(), 0u);
  });
}

TEST_F(CompactorTest, AFailedCompactionIsRetriedOnlyAfterItsBackOff) {
  fail_ = true;
  auto shape = fixtures::ready_shape("h1", dir_);
  apply_and_sync(shape, 1000);
  ASSERT_TRUE(strand_.eventually([&] { return compactor_->backing_off() == 1; }));
  EXPECT_FALSE(compacted(shape));
  fail_ = false;
  const int steps = steps_.load();
  clock_->advance(29s);
  apply_and_sync(shape, 2000);
  strand_.run([] {});
  EXPECT_EQ(steps_.load(), steps);  // not tried again within the back-off
  EXPECT_FALSE(compacted(shape));
  clock_->advance(2s);
  apply_and_sync(shape, 3000);
  ASSERT_TRUE(strand_.eventually([&] { return shape->meta().compacted_at.has_value(); }));
  EXPECT_EQ(strand_.run([&] { return shape->row_count(); }), 30u);
  EXPECT_EQ(strand_.run([&] { return compactor_->backing_off(); }), 0u);
}

TEST_F(CompactorTest, AGoneShapeIsForgottenWithItsBackOff) {
  fail_ = true;
  auto shape = fixtures::ready_shape("h1", dir_);
  apply_and_sync(shape, 1000);
  ASSERT_TRUE(strand_.eventually([&] { return compactor_->backing_off() == 1; }));
  strand_.run([&] { compactor_->forget(shape); });
  EXPECT_EQ(strand_.run([&] { return compactor_->backing_off(); }), 0u);
}

}  // namespace
}  // namespace shapeproxy::shapes
