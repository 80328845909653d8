// for_each_after(): a persisted shape's messages read back from its files
// after an offset, as a rebuild of its row state needs them.
#include "shapes/log_reader.h"

#include "shapes/log_disk_read.h"

#include <gtest/gtest.h>

#include "support/storage_test_files.h"

#include <filesystem>
#include <fstream>

namespace shapeproxy::shapes {
namespace {

namespace fs = std::filesystem;
using storage::ShapeFiles;
using storage::StoredOperation;

using testing::TempDir;

std::vector<StoredOperation> transaction(std::uint64_t tx, int operations) {
  return testing::stored_transaction(tx, operations);
}

std::vector<std::pair<std::string, std::string>> read_after(const LogSource& source,
                                                            LogOffset after) {
  std::vector<std::pair<std::string, std::string>> seen;
  auto read = for_each_after(source, after, [&](LogOffset offset, std::string_view json) {
    seen.emplace_back(offset.to_string(), std::string(json));
  });
  EXPECT_TRUE(read) << read.error().to_string();
  return seen;
}

std::unique_ptr<ShapeFiles> make_shape(const fs::path& dir) {
  auto files = ShapeFiles::create(dir, nlohmann::json{{"handle", "h-1"}});
  EXPECT_TRUE(files);
  EXPECT_TRUE(files.value()->write_snapshot_chunks({"[{\"row\":1}]", "[{\"row\":2}]"}));
  files.value()->append_transaction(transaction(100, 2));
  files.value()->append_transaction(transaction(200, 1));
  EXPECT_TRUE(files.value()->sync());
  return std::move(files).value();
}

TEST(LogReaderTest, ChunksThenOperationsAfterAnOffset) {
  TempDir temp;
  auto files = make_shape(temp.path() / "shape");
  LogSource source{files->log_files(), std::nullopt};
  using Seen = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(read_after(source, LogOffset::start()), (Seen{{"0_0", "[{\"row\":1}]"},
                                                          {"0_1", "[{\"row\":2}]"},
                                                          {"100_0", "{\"op\":\"100_0\"}"},
                                                          {"100_1", "{\"op\":\"100_1\"}"},
                                                          {"200_0", "{\"op\":\"200_0\"}"}}));
  EXPECT_EQ(read_after(source, LogOffset::snapshot_chunk(0)).size(), 4u);
  EXPECT_EQ(read_after(source, LogOffset::at(100, 0)),
            (Seen{{"100_1", "{\"op\":\"100_1\"}"}, {"200_0", "{\"op\":\"200_0\"}"}}));
  EXPECT_TRUE(read_after(source, LogOffset::at(200, 0)).empty());
}

TEST(LogReaderTest, ReadsOnlyWhatWasWrittenWhenTheSourceWasTaken) {
  TempDir temp;
  auto files = make_shape(temp.path() / "shape");
  LogSource source{files->log_files(), std::nullopt};
  files->append_transaction(transaction(300, 2));
  ASSERT_TRUE(files->write());
  EXPECT_EQ(read_after(source, LogOffset::at(100, 1)).size(), 1u);
  LogSource now{files->log_files(), std::nullopt};
  EXPECT_EQ(read_after(now, LogOffset::at(100, 1)).size(), 3u);
}

TEST(LogReaderTest, AfterACompactionSkipsFoldedOperationsAndNumbersChunksBeforeThePoint) {
  TempDir temp;
  auto files = make_shape(temp.path() / "shape");
  // As a crash right after the meta switch leaves it: the old changes file
  // still holds operations up to the point.
  LogSource source{files->log_files(), LogOffset::at(100, 1)};
  using Seen = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(read_after(source, LogOffset::start()), (Seen{{"99_0", "[{\"row\":1}]"},
                                                          {"99_1", "[{\"row\":2}]"},
                                                          {"200_0", "{\"op\":\"200_0\"}"}}));
}

TEST(LogReaderTest, DamagedRecordOrVanishedFileIsAnErrorNotAShorterLog) {
  TempDir temp;
  auto dir = temp.path() / "shape";
  auto files = make_shape(dir);
  LogSource source{files->log_files(), std::nullopt};
  {
    std::fstream file(dir / "changes.log", std::ios::binary | std::ios::in | std::ios::out);
    file.seekp(30);  // inside the first operation's payload
    file.put('X');
  }
  auto damaged = for_each_after(source, LogOffset::start(), [](LogOffset, std::string_view) {});
  ASSERT_FALSE(damaged);
  EXPECT_EQ(damaged.error().code, "storage_corrupt");
  fs::remove(dir / "changes.log");
  auto vanished = for_each_after(source, LogOffset::start(), [](LogOffset, std::string_view) {});
  EXPECT_FALSE(vanished);
}

TEST(LogReaderTest, StoppedEndsEarly) {
  TempDir temp;
  auto files = make_shape(temp.path() / "shape");
  LogSource source{files->log_files(), std::nullopt};
  int seen = 0;
  auto read = for_each_after(
      source, LogOffset::start(), [&](LogOffset, std::string_view) { ++seen; },
      [&] { return seen == 2; });
  EXPECT_TRUE(read);
  EXPECT_EQ(seen, 2);
}

}  // namespace
}  // namespace shapeproxy::shapes

namespace shapeproxy::shapes {
namespace {

// The body a read after `after` gives, from the whole log in memory.
std::string memory_body(const ShapeLog& log, LogOffset after, LogOffset* last, bool* end) {
  auto slice = log.read_after(after);
  std::string body = "[";
  for (const auto& entry : slice.entries) {
    if (body.size() > 1) body += ',';
    body.append(entry);
  }
  close_body(body, slice.entries.size(), slice.reached_end ? "{\"up-to-date\":1}" : "");
  *last = slice.last;
  *end = slice.reached_end;
  return body;
}

TEST(LogDiskReadTest, BodiesFromDiskAreByteIdenticalToBodiesFromMemory) {
  TempDir temp;
  auto files = ShapeFiles::create(temp.path() / "shape", nlohmann::json{{"handle", "h-1"}});
  ASSERT_TRUE(files);
  ASSERT_TRUE(files.value()->write_snapshot_chunks({"[]"}));
  ShapeLog whole(700);    // every operation in memory, as before
  ShapeLog trimmed(700);  // a small tail, the rest on disk
  std::vector<LogOffset> offsets{LogOffset::snapshot_chunk(0)};
  for (std::uint64_t tx = 1; tx <= 60; ++tx) {
    auto stored = transaction(tx * 100, static_cast<int>(tx % 7) + 1);
    std::vector<LogEntry> entries;
    for (auto& operation : stored) {
      operation.json += std::string(tx * 3 % 90, ' ');  // sizes vary around the budget
      entries.push_back({LogOffset::at(operation.tx, operation.op), operation.json});
      offsets.push_back(entries.back().offset);
    }
    files.value()->append_transaction(stored);
    if (tx < 55) {
      ASSERT_TRUE(files.value()->write());  // the last ones only queued
    }
    whole.append(entries);
    trimmed.append(entries);
    auto written = files.value()->written_last();
    if (written) trimmed.trim(LogOffset::at(written->first, written->second), 300);
  }
  ASSERT_LT(trimmed.tail_bytes(), whole.tail_bytes() / 4);
  int from_disk = 0;
  for (auto after : offsets) {
    LogOffset last;
    bool end = false;
    auto expected = memory_body(whole, after, &last, &end);
    auto slice = trimmed.read_after(after);
    std::string body;
    if (!slice.on_disk) {
      body = memory_body(trimmed, after, &slice.last, &slice.reached_end);
    } else {
      ++from_disk;
      LogDiskRead plan;
      auto ranges = files.value()->ranges_after(after.tx, after.op);
      ASSERT_TRUE(ranges);
      plan.ranges = ranges.value();
      plan.after = after;
      plan.chunk_bytes = 700;
      plan.end = trimmed.end();
      auto written = files.value()->written_last();
      plan.unwritten = trimmed.tail_after(LogOffset::at(written->first, written->second), 700);
      auto read = plan.run();
      ASSERT_TRUE(read) << read.error().to_string();
      body = std::move(read->body);
      close_body(body, read->count, read->reached_end ? "{\"up-to-date\":1}" : "");
      slice.last = read->last;
      slice.reached_end = read->reached_end;
    }
    EXPECT_EQ(body, expected) << "after " << after.to_string();
    EXPECT_EQ(slice.last, last) << "after " << after.to_string();
    EXPECT_EQ(slice.reached_end, end) << "after " << after.to_string();
  }
  EXPECT_GT(from_disk, 100);
}

}  // namespace
}  // namespace shapeproxy::shapes
