// LogDurability: group commit and what the slot may confirm. A synced batch
// reports the end LSN of every transaction applied before it (also when no
// shape changed); nothing is acknowledged while a shape holds buffered
// transactions; a write that fails (file size limit: like a full disk) holds
// the acknowledgement and is retried a (manual-clock) second later; a row
// store that cannot be written shows, does not hold the acknowledgement (the
// logs are durable) and is retried a second later, not in a loop.
#include "shapes/log_durability.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "shape_fixtures.h"
#include "support/faulty_file_system.h"
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
            .sealing = [this] { return ++flushes_; },
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
  std::uint64_t flushes_ = 0;  // flush() calls (each asks `sealing`)
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
    EXPECT_TRUE(durability_->storage_state().holds_slot);
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

TEST_F(LogDurabilityTest, AStoreThatCannotBeWrittenShowsAndIsRetriedASecondLater) {
  using testing::FaultyFileSystem;
  auto file_system = std::make_shared<FaultyFileSystem>();
  auto opened = StateStore::open(dir_ / "state", StateStoreOptions{.file_system = file_system});
  ASSERT_TRUE(opened) << opened.error().to_string();
  auto store = opened.value();
  auto shape = fixtures::ready_shape("h1", dir_, std::nullopt, store);
  auto stored_through = [&] {
    auto ids = store->ids();
    EXPECT_TRUE(ids && ids.value().size() == 1u);
    auto marker = store->marker(ids.value().at(0));
    return marker && marker.value() ? marker.value()->through : LogOffset::start();
  };
  auto log_end = [&] { return strand_.run([&] { return shape->log_end(); }); };
  apply(shape, 1000, 1);
  ASSERT_TRUE(strand_.eventually([&] { return last_durable() == 1008; }));
  const auto first_end = log_end();
  ASSERT_TRUE(strand_.eventually([&] { return stored_through() == first_end; }));

  // The disk fills up: the store's next memtable flush fails, and RocksDB
  // stops taking writes.
  file_system->fail(FaultyFileSystem::Fault::kNoSpace);
  ASSERT_FALSE(store->flush());
  apply(shape, 2000, 2);
  // The log is durable, so the slot advances; the failure shows.
  ASSERT_TRUE(strand_.eventually([&] { return last_durable() == 2008; }));
  ASSERT_TRUE(strand_.eventually([&] { return durability_->storage_state().failing; }));
  EXPECT_NE(durability_->storage_state().error.find("no space left"), std::string::npos)
      << durability_->storage_state().error;
  EXPECT_FALSE(durability_->storage_state().holds_slot);
  EXPECT_EQ(stored_through(), first_end);
  EXPECT_EQ(clock_->pending(), 1u);  // the retry
  // Retried a second later, not at once again and again.
  const auto flushes = strand_.run([&] { return flushes_; });
  std::this_thread::sleep_for(200ms);
  EXPECT_LE(strand_.run([&] { return flushes_; }), flushes + 1)
      << "the failed store is retried in a loop";

  // Space is back: stored by a retry, with no new transaction.
  file_system->fail(FaultyFileSystem::Fault::kNone);
  ASSERT_TRUE(strand_.eventually([&] {
    if (clock_->pending() > 0) clock_->advance(1s);
    return !durability_->storage_state().failing;
  }));
  EXPECT_EQ(stored_through(), log_end());
  EXPECT_NE(log_end(), first_end);
}

}  // namespace
}  // namespace shapeproxy::shapes
