// ShapeLog reads: snapshot chunks, operations after an offset, and what a
// compaction keeps readable.
#include "shapes/shape_log.h"

#include <gtest/gtest.h>

namespace shapeproxy::shapes {
namespace {

std::vector<LogEntry> transaction(std::uint64_t tx, int operations) {
  std::vector<LogEntry> out;
  for (int op = 0; op < operations; ++op) {
    out.push_back({LogOffset::at(tx, static_cast<std::uint64_t>(op)),
                   "{\"op\":\"" + std::to_string(tx) + "_" + std::to_string(op) + "\"}"});
  }
  return out;
}

TEST(LogOffsetTest, ParsesAndOrdersLikeTheProtocol) {
  EXPECT_EQ(LogOffset::parse("-1"), LogOffset::start());
  EXPECT_EQ(LogOffset::parse("0_0"), LogOffset::snapshot_chunk(0));
  EXPECT_EQ(LogOffset::parse("123_inf")->op, LogOffset::kInfinity);
  EXPECT_EQ(LogOffset::parse("123_4")->to_string(), "123_4");
  for (const char* bad :
       {"", "_", "1_", "_1", "a_1", "1_b", "-2", "1_2_3", "99999999999999999999999_1"}) {
    EXPECT_FALSE(LogOffset::parse(bad).has_value()) << bad;
  }
  EXPECT_LT(LogOffset::start(), LogOffset::snapshot_chunk(0));
  EXPECT_LT(LogOffset::snapshot_chunk(5), LogOffset::at(1, 0));
  EXPECT_LT(LogOffset::at(10, 9), LogOffset::at(11, 0));
}

TEST(ShapeLogTest, ChunksThenOperationsAfterAnOffset) {
  ShapeLog log(64);
  log.set_snapshot({std::string(40, 'a'), std::string(40, 'b'), std::string(40, 'c')});
  ASSERT_EQ(log.snapshot_chunk_count(), 3u);
  log.append(transaction(100, 2));
  log.append(transaction(200, 1));
  auto first = log.read_after(LogOffset::start());
  ASSERT_TRUE(first.chunk);
  EXPECT_EQ(first.last, LogOffset::snapshot_chunk(0));
  auto last_chunk = log.read_after(LogOffset::snapshot_chunk(1));
  EXPECT_EQ(last_chunk.last, LogOffset::snapshot_chunk(2));
  auto operations = log.read_after(LogOffset::snapshot_chunk(2));
  EXPECT_FALSE(operations.chunk);
  EXPECT_EQ(operations.entries.size(), 3u);
  EXPECT_TRUE(operations.reached_end);
  auto rest = log.read_after(LogOffset::at(100, 0));
  ASSERT_EQ(rest.entries.size(), 2u);
  EXPECT_EQ(rest.last, LogOffset::at(200, 0));
  EXPECT_TRUE(rest.reached_end);
  EXPECT_EQ(log.end(), LogOffset::at(200, 0));
  EXPECT_FALSE(log.contains(LogOffset::snapshot_chunk(3)));
}

TEST(ShapeLogTest, CompactionKeepsReadersAtOrAfterThePointAndNewReaders) {
  ShapeLog log(1 << 20);
  log.set_snapshot({"{\"row\":1}"});
  log.append(transaction(100, 2));
  log.append(transaction(200, 2));
  LogOffset point = log.end();  // 200_1
  log.compact({"{\"row\":\"now\"}"}, point);
  log.append(transaction(300, 1));
  // Readers behind the point can no longer continue.
  EXPECT_FALSE(log.contains(LogOffset::snapshot_chunk(0)));
  EXPECT_FALSE(log.contains(LogOffset::at(100, 1)));
  // A reader at the point continues with what came after.
  EXPECT_TRUE(log.contains(point));
  auto after_point = log.read_after(point);
  ASSERT_EQ(after_point.entries.size(), 1u);
  EXPECT_EQ(after_point.last, LogOffset::at(300, 0));
  // A new reader gets the compacted rows, at an offset it can continue from.
  auto fresh = log.read_after(LogOffset::start());
  ASSERT_TRUE(fresh.chunk);
  EXPECT_EQ(*fresh.chunk, "[{\"row\":\"now\"}]");
  EXPECT_LT(fresh.last, point);
  EXPECT_TRUE(log.contains(fresh.last));
  auto continued = log.read_after(fresh.last);
  ASSERT_EQ(continued.entries.size(), 1u);
  EXPECT_EQ(continued.last, LogOffset::at(300, 0));
}

}  // namespace
}  // namespace shapeproxy::shapes
