// LogDurability: group commit and what the slot may confirm. A synced batch
// reports the end LSN of every transaction applied before it (also when no
// shape changed); nothing is acknowledged while a shape holds buffered
// transactions; a write that fails (file size limit: like a full disk) holds
// the acknowledgement and is retried a (manual-clock) second later.
#include "shapes/log_durability.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "shape_fixtures.h"
#include "support/manual_clock.h"
#include "support/storage_test_files.h"

namespace shapeproxy::shapes {
namespace {

using namespace std::chrono_literals;
namespace fs = std::filesystem;

class LogDurabilityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    durability_ = std::make_unique<LogDurability>(
        strand_.executor(), clock_, owner_.lifetime(),
        LogDurabilityHooks{
            .on_durable = [this](replication::Lsn lsn) { durable_.push_back(lsn); },
            .synced = [this](const std::shared_ptr<Shape>& shape) { synced_.push_back(shape); },
            .holds_buffered = [this] { return holds_buffered_; },
            .sealing = {},
            .durable = {},
            .skip_state_commit = {}});
  }
  void TearDown() override {
    strand_.run([this] { durability_->stop(); });
    owner_.alive.reset();
    strand_.run([] {});
    strand_.stop();
  }
  // Applies inserts to the shape and hands the transaction to durability.
  void apply(const std::shared_ptr<Shape>& shape, replication::Lsn lsn, long id) {
    strand_.run([&] {
      auto transaction = fixtures::inserts(static_cast<replication::Xid>(lsn), lsn, id, id);
      EXPECT_TRUE(fixtures::apply(*shape, transaction));
      durability_->mark_dirty(shape);
      durability_->note_applied(transaction.end_lsn);
      durability_->schedule_flush();
    });
  }
  replication::Lsn last_durable() {
    return strand_.run([this] { return durable_.empty() ? 0 : durable_.back(); });
  }

  fixtures::Strand strand_;
  fixtures::Owner owner_;
  std::shared_ptr<testing::ManualClock> clock_ = std::make_shared<testing::ManualClock>();
  testing::TempDir temp_;
  const fs::path dir_ = temp_.path();
  std::unique_ptr<LogDurability> durability_;
  // On the strand:
  std::vector<replication::Lsn> durable_;
  std::vector<std::shared_ptr<Shape>> synced_;
  bool holds_buffered_ = false;
};

TEST_F(LogDurabilityTest, ASyncedBatchAcknowledgesTheLastAppliedTransaction) {
  auto shape = fixtures::ready_shape("h1", dir_);
  apply(shape, 1000, 1);
  apply(shape, 2000, 2);
  ASSERT_TRUE(strand_.eventually([&] { return !durable_.empty() && durable_.back() == 2008; }));
  EXPECT_TRUE(strand_.run([&] { return !synced_.empty() && synced_.back() == shape; }));
  EXPECT_EQ(shape->files()->changes_bytes() > 0, true);
}

TEST_F(LogDurabilityTest, TransactionsThatChangedNoShapeAreAcknowledgedToo) {
  strand_.run([&] {
    durability_->note_applied(5008);
    durability_->schedule_flush();
  });
  ASSERT_TRUE(strand_.eventually([&] { return !durable_.empty(); }));
  EXPECT_EQ(last_durable(), 5008u);
}

TEST_F(LogDurabilityTest, NothingIsAcknowledgedWhileAShapeHoldsBufferedTransactions) {
  strand_.run([&] { holds_buffered_ = true; });
  auto shape = fixtures::ready_shape("h1", dir_);
  apply(shape, 1000, 1);
  ASSERT_TRUE(strand_.eventually([&] { return !synced_.empty(); }));
  EXPECT_EQ(last_durable(), 0u);
  strand_.run([&] {
    holds_buffered_ = false;
    durability_->schedule_flush();
  });
  ASSERT_TRUE(strand_.eventually([&] { return !durable_.empty(); }));
  EXPECT_EQ(last_durable(), 1008u);
}

TEST_F(LogDurabilityTest, AFailedWriteHoldsTheAcknowledgementAndIsRetriedASecondLater) {
  auto shape = fixtures::ready_shape("h1", dir_);
  apply(shape, 1000, 1);
  ASSERT_TRUE(strand_.eventually([&] { return last_durable() == 1008; }));
  {
    testing::FileSizeLimit limit(shape->files()->changes_bytes() + 10);
    apply(shape, 2000, 2);
    ASSERT_TRUE(strand_.eventually([&] { return durability_->write_failing(); }));
    EXPECT_EQ(clock_->pending(), 1u);  // the retry
    clock_->advance(1s);
    // Retried, failed again, armed again.
    ASSERT_TRUE(strand_.eventually([&] { return clock_->pending() == 1; }));
    EXPECT_TRUE(strand_.run([&] { return durability_->write_failing(); }));
    EXPECT_EQ(last_durable(), 1008u);
  }
  clock_->advance(1s);
  ASSERT_TRUE(strand_.eventually([&] { return last_durable() == 2008; }));
  EXPECT_FALSE(strand_.run([&] { return durability_->write_failing(); }));
}

}  // namespace
}  // namespace shapeproxy::shapes
