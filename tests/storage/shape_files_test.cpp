// Record files and shape directories: what survives, and what is cut, when a
// crash tears a write.
#include "storage/shape_files.h"

#include <gtest/gtest.h>

#include "storage/chunk_coding.h"

#include "support/file_limits.h"
#include "support/storage_test_files.h"

#include <boost/crc.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace shapeproxy::storage {
namespace {

namespace fs = std::filesystem;

// Files written before (boost::crc_32_type) must still read: the same CRC.
TEST(RecordFileTest, Crc32IsTheStandardCrc32) {
  EXPECT_EQ(crc32("123456789"), 0xCBF43926u);  // the CRC-32 check value
  EXPECT_EQ(crc32(""), 0u);
  std::string bytes;
  for (int i = 0; i < 100'000; ++i) bytes.push_back(static_cast<char>((i * 7919) % 251));
  boost::crc_32_type reference;
  reference.process_bytes(bytes.data(), bytes.size());
  EXPECT_EQ(crc32(bytes), reference.checksum());
}

using testing::TempDir;

std::vector<StoredOperation> transaction(std::uint64_t tx, int operations) {
  return testing::stored_transaction(tx, operations);
}

// The operations the files hold (read back as a rebuild would).
std::vector<StoredOperation> operations_of(const ShapeFiles& files) {
  std::vector<StoredOperation> out;
  auto read = ShapeFiles::read_log(files.log_files(), [&](const ShapeFiles::LoggedRecord& record) {
    if (!record.snapshot) out.push_back({record.tx, record.op, std::string(record.payload)});
  });
  EXPECT_TRUE(read) << read.error().to_string();
  return out;
}

std::unique_ptr<ShapeFiles> make_shape(const fs::path& dir) {
  auto files = ShapeFiles::create(dir, nlohmann::json{{"handle", "h-1"}});
  EXPECT_TRUE(files) << files.error().to_string();
  EXPECT_TRUE(files.value()->write_snapshot({"{\"row\":1}", "{\"row\":2}"}));
  return std::move(files).value();
}

TEST(ShapeFilesTest, RoundTripsMetaSnapshotAndTransactions) {
  TempDir temp;
  auto dir = temp.path() / "shape";
  {
    auto files = make_shape(dir);
    files->append_transaction(transaction(100, 3));
    files->append_transaction(transaction(200, 1));
    ASSERT_TRUE(files->sync());
  }
  auto opened = ShapeFiles::open(dir);
  ASSERT_TRUE(opened) << opened.error().to_string();
  auto& [files, stored] = opened.value();
  EXPECT_EQ(stored.meta["handle"], "h-1");
  EXPECT_EQ(stored.snapshot, (std::vector<std::string>{"{\"row\":1}", "{\"row\":2}"}));
  auto operations = operations_of(*files);
  ASSERT_EQ(operations.size(), 4u);
  EXPECT_EQ(operations[2].tx, 100u);
  EXPECT_EQ(operations[2].op, 2u);
  EXPECT_EQ(operations[3].json, "{\"op\":\"200_0\"}");
  EXPECT_EQ(stored.last_operation, std::make_pair(std::uint64_t{200}, std::uint64_t{0}));
  // Appending after a reopen continues the file.
  files->append_transaction(transaction(300, 2));
  ASSERT_TRUE(files->sync());
  auto again = ShapeFiles::open(dir);
  ASSERT_TRUE(again);
  EXPECT_EQ(operations_of(*again.value().first).size(), 6u);
}

TEST(ShapeFilesTest, EveryTornTailIsCutBackToTheLastWholeTransaction) {
  TempDir temp;
  auto dir = temp.path() / "shape";
  std::uintmax_t whole_size = 0;
  std::uintmax_t full_size = 0;
  {
    auto files = make_shape(dir);
    files->append_transaction(transaction(100, 2));
    ASSERT_TRUE(files->sync());
    whole_size = fs::file_size(dir / "changes.log");
    files->append_transaction(transaction(200, 3));
    ASSERT_TRUE(files->sync());
    full_size = fs::file_size(dir / "changes.log");
  }
  std::ifstream in(dir / "changes.log", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // A crash may leave any prefix of the second transaction's write.
  for (std::uintmax_t length = whole_size; length < full_size; ++length) {
    {
      std::ofstream out(dir / "changes.log", std::ios::binary | std::ios::trunc);
      out.write(bytes.data(), static_cast<std::streamsize>(length));
    }
    auto opened = ShapeFiles::open(dir);
    ASSERT_TRUE(opened) << "length " << length;
    EXPECT_EQ(operations_of(*opened.value().first).size(), 2u) << "length " << length;
    EXPECT_EQ(fs::file_size(dir / "changes.log"), whole_size) << "tail not cut at " << length;
  }
}

TEST(ShapeFilesTest, CorruptedRecordEndsTheLogThere) {
  TempDir temp;
  auto dir = temp.path() / "shape";
  {
    auto files = make_shape(dir);
    files->append_transaction(transaction(100, 1));
    files->append_transaction(transaction(200, 1));
    files->append_transaction(transaction(300, 1));
    ASSERT_TRUE(files->sync());
  }
  auto size = fs::file_size(dir / "changes.log");
  {
    // Flip one payload byte of the second record.
    std::fstream file(dir / "changes.log", std::ios::binary | std::ios::in | std::ios::out);
    file.seekp(static_cast<std::streamoff>(size / 3 + size / 6));
    file.put('X');
  }
  auto opened = ShapeFiles::open(dir);
  ASSERT_TRUE(opened);
  auto operations = operations_of(*opened.value().first);
  ASSERT_EQ(operations.size(), 1u);
  EXPECT_EQ(operations[0].tx, 100u);
}

TEST(ShapeFilesTest, UnsyncedAppendsAreNotOnDisk) {
  TempDir temp;
  auto dir = temp.path() / "shape";
  auto files = make_shape(dir);
  files->append_transaction(transaction(100, 1));
  EXPECT_EQ(fs::file_size(dir / "changes.log"), 0u);
  ASSERT_TRUE(files->sync());
  EXPECT_GT(fs::file_size(dir / "changes.log"), 0u);
}

TEST(ShapeFilesTest, RemoveDeletesTheDirectoryAndBadMetaIsAnError) {
  TempDir temp;
  auto dir = temp.path() / "shape";
  auto files = make_shape(dir);
  ASSERT_TRUE(files->remove());
  EXPECT_FALSE(fs::exists(dir));
  fs::create_directories(dir);
  std::ofstream(dir / "meta.json") << "{not json";
  auto opened = ShapeFiles::open(dir);
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().code, "storage_corrupt");
}

std::vector<std::uint64_t> transaction_ids(const ShapeFiles& files) {
  std::vector<std::uint64_t> out;
  for (const auto& operation : operations_of(files)) out.push_back(operation.tx);
  return out;
}

TEST(ShapeFilesTest, CompactionFoldsFrozenFilesWhileAppendsContinueAndSurvivesACrashMidway) {
  TempDir temp;
  auto dir = temp.path() / "shape";
  auto files = make_shape(dir);
  files->append_transaction(transaction(100, 2));
  ASSERT_TRUE(files->write());
  // Written but not yet synced: a compaction must wait (the slot could be
  // acknowledged past data no longer in the file being synced).
  auto early = files->begin_compaction();
  ASSERT_TRUE(early);
  EXPECT_FALSE(early.value());
  ASSERT_TRUE(files->sync());
  files->append_transaction(transaction(200, 1));  // queued, not written: goes to the new file
  auto begun = files->begin_compaction();
  ASSERT_TRUE(begun) << begun.error().to_string();
  ASSERT_TRUE(begun.value());
  auto source = *begun.value();
  EXPECT_EQ(source.last_tx, 100u);
  EXPECT_EQ(source.last_op, 1u);
  EXPECT_EQ(source.changes_files, (std::vector<std::string>{"changes.log"}));
  files->append_transaction(transaction(300, 1));
  ASSERT_TRUE(files->sync());

  // The frozen files hold the snapshot and exactly the operations up to the point.
  std::vector<std::string> snapshot;
  std::vector<std::uint64_t> folded;
  ASSERT_TRUE(ShapeFiles::read_compaction_source(
      source, [&](std::string_view message) { snapshot.emplace_back(message); },
      [&](const StoredOperation& operation) { folded.push_back(operation.tx); }));
  EXPECT_EQ(snapshot.size(), 2u);
  EXPECT_EQ(folded, (std::vector<std::uint64_t>{100, 100}));

  // A crash before the compaction finishes: every file is read, in order.
  {
    auto crashed = ShapeFiles::open(dir);
    ASSERT_TRUE(crashed) << crashed.error().to_string();
    EXPECT_EQ(transaction_ids(*crashed.value().first),
              (std::vector<std::uint64_t>{100, 100, 200, 300}));
  }
  ASSERT_TRUE(
      ShapeFiles::write_snapshot_file(dir / "snapshot-100_1.log", {"{\"row\":\"folded\"}"}));
  ASSERT_TRUE(files->finish_compaction(
      source, "snapshot-100_1.log",
      nlohmann::json{{"handle", "h-1"}, {"snapshot_file", "snapshot-100_1.log"}}));
  files->append_transaction(transaction(400, 1));
  ASSERT_TRUE(files->sync());
  EXPECT_FALSE(fs::exists(dir / "changes.log"));
  EXPECT_FALSE(fs::exists(dir / "snapshot.log"));
  auto reopened = ShapeFiles::open(dir);
  ASSERT_TRUE(reopened) << reopened.error().to_string();
  EXPECT_EQ(reopened.value().second.snapshot, (std::vector<std::string>{"{\"row\":\"folded\"}"}));
  EXPECT_EQ(transaction_ids(*reopened.value().first), (std::vector<std::uint64_t>{200, 300, 400}));
  EXPECT_FALSE(fs::exists(dir / "changes.log.idx")) << "a sidecar goes with its file";
  // The next compaction continues from the reopened files.
  auto& again = reopened.value().first;
  auto next = again->begin_compaction();
  ASSERT_TRUE(next && next.value());
  EXPECT_EQ(next.value()->changes_files, (std::vector<std::string>{"changes-1.log"}));
  EXPECT_EQ(next.value()->last_tx, 400u);
}

TEST(ShapeFilesTest, SnapshotChunksStayOnDiskAndReadBackWholeEvenAfterAnUnlink) {
  TempDir temp;
  auto dir = temp.path() / "shape";
  std::vector<StoredChunk> written;
  {
    auto files = ShapeFiles::create(dir, nlohmann::json{{"handle", "h-1"}});
    ASSERT_TRUE(files);
    auto stored =
        files.value()->write_snapshot_chunks({"[{\"row\":1}]", "[{\"row\":2},{\"row\":3}]"});
    ASSERT_TRUE(stored) << stored.error().to_string();
    written = stored.value();
  }
  ASSERT_EQ(written.size(), 2u);
  EXPECT_EQ(written[1].coding, ChunkCoding::kGzip);
  auto second = read_chunk(written[1]);
  ASSERT_TRUE(second);
  EXPECT_EQ(second.value(), "[{\"row\":2},{\"row\":3}]");
  // After a restart: the same places (found from the record headers).
  auto opened = ShapeFiles::open(dir);
  ASSERT_TRUE(opened) << opened.error().to_string();
  auto& stored = opened.value().second;
  ASSERT_EQ(stored.snapshot_chunks.size(), 2u);
  EXPECT_EQ(stored.snapshot_chunks[1].offset, written[1].offset);
  // A compaction unlinks the file; chunks still referenced stay readable.
  fs::remove(dir / "snapshot.log");
  EXPECT_EQ(stored.snapshot_chunks[1].coding, ChunkCoding::kGzip);
  EXPECT_EQ(stored.snapshot_chunks[1].decoded_length, written[1].decoded_length);
  auto first = read_chunk(stored.snapshot_chunks[0]);
  ASSERT_TRUE(first);
  EXPECT_EQ(first.value(), "[{\"row\":1}]");
  EXPECT_FALSE(stored.snapshot_chunks[0].file->read(stored.snapshot_chunks[0].offset, 1 << 20));
}

std::string file_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

TEST(ShapeFilesTest, AFailedPartialWriteIsCutOffAndTheSameRecordsAreWrittenWholeLater) {
  TempDir temp;
  auto dir = temp.path() / "shape";
  auto files = make_shape(dir);
  files->append_transaction(transaction(100, 2));
  ASSERT_TRUE(files->sync());
  const auto good_size = fs::file_size(dir / "changes.log");
  std::vector<StoredOperation> big{{200, 0, std::string(4000, 'x')}};
  {
    testing::FileSizeLimit limit(good_size + 100);  // room for 100 bytes of the next write only
    files->append_transaction(big);
    auto written = files->write();
    ASSERT_FALSE(written) << "the write past the limit must fail";
    EXPECT_EQ(fs::file_size(dir / "changes.log"), good_size) << "torn bytes left in the file";
    // Still failing: still nothing torn, nothing acknowledged.
    EXPECT_FALSE(files->sync());
    EXPECT_EQ(fs::file_size(dir / "changes.log"), good_size);
  }
  // Space again: the queued records go out whole, and later ones follow them.
  files->append_transaction(transaction(300, 1));
  ASSERT_TRUE(files->sync());
  auto reopened = ShapeFiles::open(dir);
  ASSERT_TRUE(reopened) << reopened.error().to_string();
  EXPECT_EQ(transaction_ids(*reopened.value().first),
            (std::vector<std::uint64_t>{100, 100, 200, 300}));
}

TEST(ShapeFilesTest, ACompactionSourceWithATearFailsLoudlyInsteadOfDroppingWhatFollowsIt) {
  TempDir temp;
  // Whole records of a later transaction, written elsewhere.
  std::string later;
  {
    auto other = make_shape(temp.path() / "other");
    other->append_transaction(transaction(200, 2));
    ASSERT_TRUE(other->sync());
    later = file_bytes(temp.path() / "other" / "changes.log");
  }
  auto dir = temp.path() / "shape";
  {
    auto files = make_shape(dir);
    files->append_transaction(transaction(100, 1));
    ASSERT_TRUE(files->sync());
  }
  // changes.log: a transaction, torn bytes, then whole records after them
  // (what an uncut failed write used to leave); changes-1.log follows it.
  {
    std::ofstream out(dir / "changes.log", std::ios::binary | std::ios::app);
    out << "torn!" << later;
  }
  { std::ofstream touch(dir / "changes-1.log", std::ios::binary); }
  auto opened = ShapeFiles::open(dir);
  ASSERT_TRUE(opened) << opened.error().to_string();
  auto& files = opened.value().first;
  auto begun = files->begin_compaction();
  ASSERT_TRUE(begun && begun.value());
  auto source = *begun.value();
  std::size_t folded = 0;
  auto read = ShapeFiles::read_compaction_source(
      source, [](std::string_view) {}, [&](const StoredOperation&) { ++folded; });
  ASSERT_FALSE(read) << "folded " << folded << " operations and silently dropped the rest";
  EXPECT_EQ(read.error().code, "storage_corrupt");
  EXPECT_NE(read.error().message.find("changes.log"), std::string::npos) << read.error().message;
  EXPECT_TRUE(fs::exists(dir / "changes.log")) << "the files are kept";
}

TEST(ShapeFilesTest, ADamagedSnapshotChunkFailsVerificationAndACutOneFailsTheLoad) {
  TempDir temp;
  auto dir = temp.path() / "shape";
  std::vector<StoredChunk> written;
  {
    auto files = ShapeFiles::create(dir, nlohmann::json{{"handle", "h-1"}});
    ASSERT_TRUE(files);
    auto stored =
        files.value()->write_snapshot_chunks({"[{\"row\":1}]", "[{\"row\":2},{\"row\":3}]"});
    ASSERT_TRUE(stored) << stored.error().to_string();
    written = stored.value();
  }
  // One flipped byte inside the first chunk's body: its checksum fails, so
  // neither it nor the chunk after it may be served.
  {
    std::fstream file(dir / "snapshot.log", std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(static_cast<std::streamoff>(written[0].offset + 3));
    file.put('X');
  }
  // The load reads no chunk body; the verification pass after it does.
  ASSERT_TRUE(ShapeFiles::open(dir));
  auto verified = ShapeFiles::verify_snapshot(dir / "snapshot.log");
  ASSERT_FALSE(verified);
  EXPECT_EQ(verified.error().code, "storage_corrupt");
  // A snapshot cut short (a record past the end) is refused at load.
  fs::resize_file(dir / "snapshot.log", written[1].offset + 2);
  auto cut = ShapeFiles::open(dir);
  ASSERT_FALSE(cut);
  EXPECT_EQ(cut.error().code, "storage_corrupt");
}

}  // namespace
}  // namespace shapeproxy::storage

namespace shapeproxy::storage {
namespace {

// ~100 transactions of 10 operations of ~100 bytes: several sidecar marks.
std::unique_ptr<ShapeFiles> make_long_log(const fs::path& dir, std::uint64_t transactions = 400) {
  auto files = make_shape(dir);
  for (std::uint64_t tx = 1; tx <= transactions; ++tx) {
    auto operations = transaction(tx * 10, 10);
    for (auto& operation : operations) operation.json += std::string(80, ' ');
    files->append_transaction(operations);
    EXPECT_TRUE(files->sync());
  }
  return files;
}

TEST(ShapeFilesIndexTest, LoadReadsOnlyTheRecordsAfterTheLastMarkNotTheWholeLog) {
  TempDir temp;
  auto dir = temp.path() / "shape";
  make_long_log(dir);
  const auto size = fs::file_size(dir / "changes.log");
  ASSERT_GT(size, 4 * kMarkSpacing);
  ASSERT_TRUE(fs::exists(dir / "changes.log.idx"));
  // Damage an old operation's payload (its checksum now fails). A load that
  // read every record would stop there and cut the log back to it; this one
  // never reads it (a read of that range reports it, see below).
  {
    std::fstream file(dir / "changes.log", std::ios::binary | std::ios::in | std::ios::out);
    file.seekp(static_cast<std::streamoff>(kMarkSpacing + 500));
    file.put('X');
  }
  auto opened = ShapeFiles::open(dir);
  ASSERT_TRUE(opened) << opened.error().to_string();
  auto& [files, stored] = opened.value();
  EXPECT_EQ(fs::file_size(dir / "changes.log"), size) << "the log was cut at the damaged record";
  EXPECT_EQ(stored.last_operation, std::make_pair(std::uint64_t{4000}, std::uint64_t{9}));
  EXPECT_LT(stored.changes_bytes_scanned, 2 * kMarkSpacing) << "of " << size;
  auto all = ShapeFiles::read_log(files->log_files(), [](const ShapeFiles::LoggedRecord&) {});
  ASSERT_FALSE(all);
  EXPECT_EQ(all.error().code, "storage_corrupt");
}

TEST(ShapeFilesIndexTest, ALostOrDamagedSidecarCostsAScanNeverAWrongLog) {
  TempDir temp;
  auto dir = temp.path() / "shape";
  make_long_log(dir);
  const auto size = fs::file_size(dir / "changes.log");
  const auto expected = std::make_pair(std::uint64_t{4000}, std::uint64_t{9});
  fs::remove(dir / "changes.log.idx");
  {
    auto opened = ShapeFiles::open(dir);
    ASSERT_TRUE(opened);
    EXPECT_EQ(opened.value().second.last_operation, expected);
    EXPECT_EQ(opened.value().second.changes_bytes_scanned, size);
  }
  // Rebuilt by that scan: the next load reads little again.
  ASSERT_TRUE(fs::exists(dir / "changes.log.idx"));
  const auto sidecar_size = fs::file_size(dir / "changes.log.idx");
  EXPECT_GT(sidecar_size, 2 * kSidecarEntryBytes);
  // Garbage in the sidecar, three marks from its end: its valid prefix is kept.
  {
    std::fstream file(dir / "changes.log.idx", std::ios::binary | std::ios::in | std::ios::out);
    file.seekp(static_cast<std::streamoff>(sidecar_size - 3 * kSidecarEntryBytes + 3));
    file.put('X');
  }
  {
    auto opened = ShapeFiles::open(dir);
    ASSERT_TRUE(opened);
    EXPECT_EQ(opened.value().second.last_operation, expected);
    EXPECT_LT(opened.value().second.changes_bytes_scanned, 4 * kMarkSpacing);
    EXPECT_GT(opened.value().second.changes_bytes_scanned, 2 * kMarkSpacing);
  }
  // A sidecar naming records the file no longer has (the machine lost the
  // log's unsynced tail but kept the sidecar, or the file was replaced):
  // those marks are dropped, the rest checked.
  fs::resize_file(dir / "changes.log", size / 2);
  auto opened = ShapeFiles::open(dir);
  ASSERT_TRUE(opened);
  ASSERT_TRUE(opened.value().second.last_operation);
  EXPECT_LT(opened.value().second.last_operation->first, 4000u);
  EXPECT_LT(fs::file_size(dir / "changes.log"), size / 2) << "the torn tail is cut";
  auto operations = operations_of(*opened.value().first);
  ASSERT_FALSE(operations.empty());
  EXPECT_EQ(std::make_pair(operations.back().tx, operations.back().op),
            *opened.value().second.last_operation);
  EXPECT_EQ(operations.size() % 10, 0u) << "whole transactions only";
}

TEST(ShapeFilesIndexTest, OperationsAfterAnOffsetAreReadFromNearTheirMark) {
  TempDir temp;
  auto dir = temp.path() / "shape";
  auto files = make_long_log(dir);
  // Some written to another file (a compaction began), some only queued.
  ASSERT_TRUE(files->begin_compaction());
  files->append_transaction(transaction(5000, 2));
  ASSERT_TRUE(files->write());
  files->append_transaction(transaction(6000, 2));
  std::vector<std::pair<std::uint64_t, std::uint64_t>> written;  // queued ones are not on disk
  for (std::uint64_t tx = 10; tx <= 4000; tx += 10) {
    for (std::uint64_t op = 0; op < 10; ++op) written.emplace_back(tx, op);
  }
  written.emplace_back(5000, 0);
  written.emplace_back(5000, 1);
  for (auto [tx, op] : std::vector<std::pair<std::uint64_t, std::uint64_t>>{
           {0, 0}, {10, 3}, {2000, 9}, {3990, 5}, {4000, 9}, {5000, 0}}) {
    auto ranges = files->ranges_after(tx, op);
    ASSERT_TRUE(ranges) << ranges.error().to_string();
    std::vector<std::pair<std::uint64_t, std::uint64_t>> read;
    ASSERT_TRUE(ShapeFiles::read_operations(ranges.value(), tx, op, [&](const Record& record) {
      read.emplace_back(record.tx, record.op);
      return read.size() < 3;
    }));
    std::vector<std::pair<std::uint64_t, std::uint64_t>> expected;
    for (const auto& each : written) {
      if (each > std::make_pair(tx, op) && expected.size() < 3) expected.push_back(each);
    }
    EXPECT_EQ(read, expected) << tx << "_" << op;
    if (tx >= 10 && tx < 5000) {
      // From the last mark at or before the offset, not the log's start
      // (transactions take the same bytes each, so the offset's position is
      // known).
      const auto position = (tx / 10 - 1) * (fs::file_size(dir / "changes.log") / 400);
      EXPECT_LE(ranges->ranges.front().begin, position) << tx << "_" << op;
      EXPECT_GT(ranges->ranges.front().begin + 2 * kMarkSpacing, position) << tx << "_" << op;
    }
  }
}

}  // namespace
}  // namespace shapeproxy::storage
