// Record files and shape directories: what survives, and what is cut, when a
// crash tears a write.
#include "storage/shape_files.h"

#include <gtest/gtest.h>

#include <signal.h>
#include <sys/resource.h>

#include <filesystem>
#include <fstream>
#include <iterator>

namespace shapeproxy::storage {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/shapeproxy-storage-XXXXXX";
    path_ = ::mkdtemp(pattern);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::vector<StoredOperation> transaction(std::uint64_t tx, int operations) {
  std::vector<StoredOperation> out;
  for (int op = 0; op < operations; ++op) {
    out.push_back({tx, static_cast<std::uint64_t>(op),
                   "{\"tx\":" + std::to_string(tx) + ",\"op\":" + std::to_string(op) + "}"});
  }
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
  ASSERT_EQ(stored.operations.size(), 4u);
  EXPECT_EQ(stored.operations[2].tx, 100u);
  EXPECT_EQ(stored.operations[2].op, 2u);
  EXPECT_EQ(stored.operations[3].json, "{\"tx\":200,\"op\":0}");
  // Appending after a reopen continues the file.
  files->append_transaction(transaction(300, 2));
  ASSERT_TRUE(files->sync());
  auto again = ShapeFiles::open(dir);
  ASSERT_TRUE(again);
  EXPECT_EQ(again.value().second.operations.size(), 6u);
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
    EXPECT_EQ(opened.value().second.operations.size(), 2u) << "length " << length;
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
  ASSERT_EQ(opened.value().second.operations.size(), 1u);
  EXPECT_EQ(opened.value().second.operations[0].tx, 100u);
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

std::vector<std::uint64_t> transaction_ids(const StoredShape& stored) {
  std::vector<std::uint64_t> out;
  for (const auto& operation : stored.operations) out.push_back(operation.tx);
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
    EXPECT_EQ(transaction_ids(crashed.value().second),
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
  EXPECT_EQ(transaction_ids(reopened.value().second), (std::vector<std::uint64_t>{200, 300, 400}));
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
  auto second = written[1].file->read(written[1].offset, written[1].length);
  ASSERT_TRUE(second);
  EXPECT_EQ(second.value(), "[{\"row\":2},{\"row\":3}]");
  // After a restart: the same places, and the bytes as read at load.
  auto opened = ShapeFiles::open(dir);
  ASSERT_TRUE(opened) << opened.error().to_string();
  auto& stored = opened.value().second;
  ASSERT_EQ(stored.snapshot_chunks.size(), 2u);
  EXPECT_EQ(stored.chunk_bodies[0], "[{\"row\":1}]");
  EXPECT_EQ(stored.snapshot_chunks[1].offset, written[1].offset);
  // A compaction unlinks the file; chunks still referenced stay readable.
  fs::remove(dir / "snapshot.log");
  auto first = stored.snapshot_chunks[0].file->read(stored.snapshot_chunks[0].offset,
                                                    stored.snapshot_chunks[0].length);
  ASSERT_TRUE(first);
  EXPECT_EQ(first.value(), "[{\"row\":1}]");
  EXPECT_FALSE(stored.snapshot_chunks[0].file->read(stored.snapshot_chunks[0].offset, 1 << 20));
}

// The process's file size limit (RLIMIT_FSIZE) lowered for a scope: writes
// past it fail with EFBIG after writing what fits (a partial write, like a
// disk filling up). Works as root and non-root; SIGXFSZ is ignored.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &saved_);
    previous_signal_ = ::signal(SIGXFSZ, SIG_IGN);
    rlimit lowered = saved_;
    lowered.rlim_cur = bytes;
    EXPECT_EQ(::setrlimit(RLIMIT_FSIZE, &lowered), 0);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    ::signal(SIGXFSZ, previous_signal_);
  }

 private:
  rlimit saved_{};
  sighandler_t previous_signal_ = SIG_DFL;
};

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
    FileSizeLimit limit(good_size + 100);  // room for 100 bytes of the next write only
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
  EXPECT_EQ(transaction_ids(reopened.value().second),
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

TEST(ShapeFilesTest, ADamagedSnapshotChunkRefusesTheShapeInsteadOfServingPartOfIt) {
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
  auto opened = ShapeFiles::open(dir);
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().code, "storage_corrupt");
}

}  // namespace
}  // namespace shapeproxy::storage
