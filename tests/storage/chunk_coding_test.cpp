// Snapshot chunks stored as gzip members (storage/chunk_coding.h): every
// decoder gives back exactly the body written, or "storage_corrupt" (never
// other bytes) for a member that is cut, damaged, followed by bytes, or
// decodes to another length than its record says; files of the earlier
// format (bodies as they are) still load, read and fold.
#include "storage/chunk_coding.h"

#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "storage/changes_index.h"
#include "storage/record_file.h"
#include "storage/shape_files.h"
#include "support/storage_test_files.h"

namespace shapeproxy::storage {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

// Rows of the kind a snapshot holds, `bytes` long or a little more.
std::string json_body(std::size_t bytes, unsigned seed = 1) {
  std::mt19937 random(seed);
  std::string body = "[";
  for (int i = 1; body.size() < bytes; ++i) {
    if (body.size() > 1) body += ',';
    body += R"({"key":"\"public\".\"items\"/\")" + std::to_string(i) + R"(\"","value":{"id":")" +
            std::to_string(i) + R"(","n":")" + std::to_string(random()) +
            R"("},"headers":{"operation":"insert"}})";
  }
  return body + "]";
}

// A chunk file of `members` written as ShapeFiles does, read back from disk.
StoredChunk stored_member(const fs::path& path, std::string_view member,
                          std::uint64_t decoded_length) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << "pad:" << member;
  }
  auto file = ReadOnlyFile::open(path);
  EXPECT_TRUE(file);
  return StoredChunk{file.value(), 4, member.size(), ChunkCoding::kGzip, decoded_length};
}

// Everything a ChunkInflater gives, `piece` bytes per call.
Result<std::string> inflate_all(const StoredChunk& chunk, std::size_t piece) {
  ChunkInflater inflater(chunk);
  std::string out;
  std::string buffer(piece, '\0');
  while (true) {
    auto got = inflater.read(buffer.data(), buffer.size());
    if (!got) return got.error();
    if (got.value() == 0) return out;
    out.append(buffer.data(), got.value());
  }
}

TEST(ChunkCodingTest, EveryDecoderGivesBackTheBodyByteForByte) {
  TempDir temp;
  for (std::size_t size :
       {std::size_t{2}, std::size_t{1000}, std::size_t{300'000}, std::size_t{3'000'000}}) {
    const std::string body = json_body(size, static_cast<unsigned>(size));
    std::string member;
    gzip_chunk(body, member);
    if (size >= 1000) {
      EXPECT_LT(member.size(), body.size() / 3) << "JSON rows should shrink";
    }
    auto whole = gunzip_chunk(member, body.size());
    ASSERT_TRUE(whole) << whole.error().to_string();
    EXPECT_TRUE(whole.value() == body);
    auto chunk = stored_member(temp.path() / "chunk", member, body.size());
    auto read = read_chunk(chunk);
    ASSERT_TRUE(read) << read.error().to_string();
    EXPECT_TRUE(read.value() == body);
    for (std::size_t piece : {std::size_t{1}, std::size_t{7}, std::size_t{128 * 1024}}) {
      if (piece == 1 && size > 300'000) continue;  // slow, and nothing new
      auto streamed = inflate_all(chunk, piece);
      ASSERT_TRUE(streamed) << streamed.error().to_string();
      EXPECT_TRUE(streamed.value() == body) << size << " bytes in pieces of " << piece;
    }
  }
}

// Each way a member can be wrong, through each decoder.
TEST(ChunkCodingTest, CutDamagedPaddedOrMislabelledMembersAreCorruptNeverOtherBytes) {
  TempDir temp;
  const std::string body = json_body(200'000);
  std::string member;
  gzip_chunk(body, member);
  struct Case {
    std::string name;
    std::string member;
    std::uint64_t decoded_length;
  };
  std::vector<Case> cases{
      {"cut in the middle", member.substr(0, member.size() / 2), body.size()},
      {"cut in the trailer", member.substr(0, member.size() - 3), body.size()},
      {"bytes after the member", member + "xx", body.size()},
      {"a second member after it", member + member, body.size()},
      {"longer than stored", member, body.size() - 1},
      {"shorter than stored", member, body.size() + 1},
      {"an impossible length", member, std::uint64_t{1} << 50},
      {"empty", "", 0},
  };
  std::string flipped = member;
  flipped[flipped.size() / 2] = static_cast<char>(flipped[flipped.size() / 2] ^ 0x55);
  cases.push_back({"a flipped byte", flipped, body.size()});
  std::string crc = member;
  crc[crc.size() - 6] = static_cast<char>(crc[crc.size() - 6] ^ 1);  // the CRC-32 in the trailer
  cases.push_back({"a wrong CRC", crc, body.size()});
  for (const auto& each : cases) {
    SCOPED_TRACE(each.name);
    auto whole = gunzip_chunk(each.member, each.decoded_length);
    ASSERT_FALSE(whole);
    EXPECT_EQ(whole.error().code, "storage_corrupt");
    auto chunk = stored_member(temp.path() / "chunk", each.member, each.decoded_length);
    auto read = read_chunk(chunk);
    ASSERT_FALSE(read);
    EXPECT_EQ(read.error().code, "storage_corrupt");
    EXPECT_NE(read.error().message.find("chunk"), std::string::npos) << read.error().message;
    auto streamed = inflate_all(chunk, 4096);
    ASSERT_FALSE(streamed);
    EXPECT_EQ(streamed.error().code, "storage_corrupt") << streamed.error().to_string();
  }
}

// A member whose data decodes but whose trailer is wrong (a flipped CRC-32
// bit, a cut trailer): the last bytes are never handed out, whatever the
// piece size, so nobody holds a whole body made of other bytes.
TEST(ChunkCodingTest, TheLastBytesAreHandedOutOnlyOnceTheTrailerChecks) {
  TempDir temp;
  const std::string body = json_body(300'000);
  std::string member;
  gzip_chunk(body, member);
  std::string wrong_crc = member;
  wrong_crc[wrong_crc.size() - 8] = static_cast<char>(wrong_crc[wrong_crc.size() - 8] ^ 1);
  for (const auto& bad : {wrong_crc, member.substr(0, member.size() - 1)}) {
    for (std::size_t piece : {std::size_t{1000}, body.size(), body.size() + 10}) {
      auto chunk = stored_member(temp.path() / "chunk", bad, body.size());
      ChunkInflater inflater(chunk);
      std::string buffer(piece, '\0');
      std::uint64_t handed = 0;
      Result<std::size_t> got = std::size_t{0};
      while ((got = inflater.read(buffer.data(), buffer.size())) && got.value() > 0) {
        handed += got.value();
      }
      ASSERT_FALSE(got) << "piece " << piece;
      EXPECT_LT(handed, body.size()) << "piece " << piece;
    }
  }
}

TEST(ChunkCodingTest, AnInflaterHandsOutNoMoreThanTheStoredLengthBeforeFailing) {
  TempDir temp;
  const std::string body = json_body(500'000);
  std::string member;
  gzip_chunk(body, member);
  auto chunk = stored_member(temp.path() / "chunk", member, 1000);
  ChunkInflater inflater(chunk);
  std::string buffer(64 * 1024, '\0');
  std::uint64_t handed = 0;
  Result<std::size_t> got = std::size_t{0};
  while ((got = inflater.read(buffer.data(), buffer.size())) && got.value() > 0) {
    handed += got.value();
  }
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code, "storage_corrupt");
  EXPECT_LE(handed, 1000u + buffer.size());
  EXPECT_FALSE(inflater.read(buffer.data(), buffer.size())) << "stays failed";
}

TEST(ChunkCodingTest, ChunkFilesAreWrittenAsGzipAndEveryReaderSeesTheBodies) {
  TempDir temp;
  auto dir = temp.path() / "shape";
  const std::vector<std::string> bodies{json_body(100'000, 1), json_body(50, 2), "[]"};
  auto files = ShapeFiles::create(dir, nlohmann::json{{"handle", "h-1"}});
  ASSERT_TRUE(files);
  auto written = files.value()->write_snapshot_chunks({bodies[0], bodies[1], bodies[2]});
  ASSERT_TRUE(written) << written.error().to_string();
  ASSERT_EQ(written->size(), 3u);
  EXPECT_LT(fs::file_size(dir / "snapshot.log"), bodies[0].size() / 3);
  auto opened = ShapeFiles::open(dir);
  ASSERT_TRUE(opened) << opened.error().to_string();
  const auto& loaded = opened.value().second.snapshot_chunks;
  ASSERT_EQ(loaded.size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(loaded[i].coding, ChunkCoding::kGzip);
    EXPECT_EQ(loaded[i].body_length(), bodies[i].size());
    EXPECT_EQ(loaded[i].offset, (*written)[i].offset);
    auto read = read_chunk(loaded[i]);
    ASSERT_TRUE(read);
    EXPECT_EQ(read.value(), bodies[i]);
  }
  std::vector<std::string> logged;
  ASSERT_TRUE(ShapeFiles::read_log(opened.value().first->log_files(),
                                   [&](const ShapeFiles::LoggedRecord& record) {
                                     EXPECT_TRUE(record.chunk);
                                     logged.emplace_back(record.payload);
                                   }));
  EXPECT_EQ(logged, bodies);
  EXPECT_TRUE(ShapeFiles::verify_snapshot(dir / "snapshot.log"));
}

// A record whose checksum is right but whose member does not decode (what a
// bug in the writer would leave): verification, the log reader and the
// compaction source all refuse it.
TEST(ChunkCodingTest, AMemberThatDoesNotDecodeUnderAGoodChecksumIsCorrupt) {
  TempDir temp;
  auto dir = temp.path() / "shape";
  ASSERT_TRUE(ShapeFiles::create(dir, nlohmann::json{{"handle", "h-1"}}));
  std::string member;
  gzip_chunk(json_body(10'000), member);
  {
    auto file = RecordFile::open_for_append(dir / "snapshot.log", 0);
    ASSERT_TRUE(file);
    file->add(Record{record_kind::kSnapshotChunkGzip, 10'000, 0, member});  // not its length
    ASSERT_TRUE(file->sync());
  }
  auto verified = ShapeFiles::verify_snapshot(dir / "snapshot.log");
  ASSERT_FALSE(verified);
  EXPECT_EQ(verified.error().code, "storage_corrupt");
  EXPECT_NE(verified.error().message.find("snapshot.log"), std::string::npos);
  auto opened = ShapeFiles::open(dir);
  ASSERT_TRUE(opened) << "the load reads headers only";
  auto read = ShapeFiles::read_log(opened.value().first->log_files(),
                                   [](const ShapeFiles::LoggedRecord&) {});
  ASSERT_FALSE(read);
  EXPECT_EQ(read.error().code, "storage_corrupt");
  ShapeFiles::CompactionSource source{dir, "snapshot.log", {}, 0, 0};
  auto folded = ShapeFiles::read_compaction_source(
      source, [](std::string_view) { ADD_FAILURE() << "a message from a corrupt chunk"; },
      [](const StoredOperation&) {});
  ASSERT_FALSE(folded);
  EXPECT_EQ(folded.error().code, "storage_corrupt");
  // A header whose length no member could decode to fails the load itself.
  {
    auto file = RecordFile::open_for_append(dir / "snapshot.log", 0);
    ASSERT_TRUE(file);
    file->add(Record{record_kind::kSnapshotChunkGzip, std::uint64_t{1} << 50, 0, member});
    ASSERT_TRUE(file->sync());
  }
  auto impossible = ShapeFiles::open(dir);
  ASSERT_FALSE(impossible);
  EXPECT_EQ(impossible.error().code, "storage_corrupt");
}

// Data directories written before chunks were compressed: bodies as they
// are (kSnapshotChunk) load as identity chunks and read unchanged.
TEST(ChunkCodingTest, UncompressedChunkFilesOfEarlierVersionsStillLoadReadAndFold) {
  TempDir temp;
  auto dir = temp.path() / "shape";
  ASSERT_TRUE(ShapeFiles::create(dir, nlohmann::json{{"handle", "h-1"}}));
  const std::vector<std::string> bodies{R"([{"row":1}])", R"([{"row":2},{"row":3}])"};
  {
    auto file = RecordFile::open_for_append(dir / "snapshot.log", 0);
    ASSERT_TRUE(file);
    for (const auto& body : bodies) file->add(Record{record_kind::kSnapshotChunk, 0, 0, body});
    ASSERT_TRUE(file->sync());
  }
  auto opened = ShapeFiles::open(dir);
  ASSERT_TRUE(opened) << opened.error().to_string();
  const auto& loaded = opened.value().second.snapshot_chunks;
  ASSERT_EQ(loaded.size(), 2u);
  for (std::size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(loaded[i].coding, ChunkCoding::kIdentity);
    EXPECT_EQ(loaded[i].body_length(), bodies[i].size());
    auto read = read_chunk(loaded[i]);
    ASSERT_TRUE(read);
    EXPECT_EQ(read.value(), bodies[i]);
  }
  EXPECT_TRUE(ShapeFiles::verify_snapshot(dir / "snapshot.log"));
  std::vector<std::string> folded;
  ShapeFiles::CompactionSource source{dir, "snapshot.log", {}, 0, 0};
  ASSERT_TRUE(ShapeFiles::read_compaction_source(
      source, [&](std::string_view body) { folded.emplace_back(body); },
      [](const StoredOperation&) {}));
  EXPECT_EQ(folded, bodies);
}

}  // namespace
}  // namespace shapeproxy::storage
