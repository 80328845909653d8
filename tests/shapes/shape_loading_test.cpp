// Loading saved shapes trusts nothing on disk (issue 16, item 7): a shape
// whose files are invalid is quarantined (moved aside, logged with its path
// and the reason), never served and never fatal to the others.
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <filesystem>
#include <fstream>

#include "shapes/shape_meta.h"
#include "shapes/shape_registry.h"
#include "storage/shape_files.h"

namespace shapeproxy::shapes {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

class ShapeLoadingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/shapeproxy-loading-XXXXXX";
    dir_ = ::mkdtemp(pattern);
    shapes_ = dir_ / "shapes";
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A valid saved shape of table public.items (id int8 key, title text).
  json save_shape(const std::string& handle, std::optional<std::string> where = std::nullopt) {
    ShapeMeta meta;
    meta.handle = handle;
    meta.request.table = "items";
    meta.request.where = where;
    meta.table.oid = 1;
    meta.table.schema = "public";
    meta.table.name = "items";
    meta.table.columns = {{"id", 20, "int8", 0, true, 0, -1},
                          {"title", 25, "text", 0, false, {}, -1}};
    meta.table.key_columns = {0};
    meta.snapshot = PgSnapshot{10, 10, {}};
    auto meta_json = to_json(meta);
    auto files = storage::ShapeFiles::create(shapes_ / handle, meta_json);
    EXPECT_TRUE(files);
    EXPECT_TRUE(files.value()->write_snapshot_chunks(
        {R"([{"key":"\"public\".\"items\"/\"1\"","value":{"id":"1","title":"a"},)"
         R"("headers":{"operation":"insert","relation":["public","items"]}}])"}));
    return meta_json;
  }
  void write_meta(const std::string& handle, const json& meta) {
    std::ofstream(shapes_ / handle / "meta.json", std::ios::trunc) << meta.dump();
  }

  // Loads with a registry that never reaches a database.
  std::size_t load() {
    ShapeRegistryOptions options;
    options.shapes_dir = shapes_;
    auto registry = std::make_shared<ShapeRegistry>(io_.get_executor(), nullptr, options);
    auto loaded = on_io([&] { return registry->load(); });
    EXPECT_TRUE(loaded) << loaded.error().to_string();
    on_io([&] {
      registry->stop();
      return 0;
    });
    return loaded ? loaded.value() : 0;
  }
  // Runs `work` as a handler of io_ (where the registry's methods run).
  template <typename Work>
  auto on_io(Work work) -> decltype(work()) {
    std::optional<decltype(work())> result;
    boost::asio::post(io_, [&] { result.emplace(work()); });
    io_.restart();
    while (!result) io_.run_one();
    return std::move(*result);
  }
  bool quarantined(const std::string& handle) {
    return fs::exists(ShapeRegistry::quarantine_dir(shapes_) / handle / "meta.json") &&
           !fs::exists(shapes_ / handle);
  }

  boost::asio::io_context io_;
  fs::path dir_;
  fs::path shapes_;
};

TEST_F(ShapeLoadingTest, AValidShapeLoads) {
  save_shape("good-1");
  EXPECT_EQ(load(), 1u);
  EXPECT_TRUE(fs::exists(shapes_ / "good-1"));
}

// Was: std::stoi threw out of the loader and the proxy did not start.
TEST_F(ShapeLoadingTest, AMetaJsonOfTheWrongShapeIsQuarantinedAndTheOthersLoad) {
  save_shape("good-1");
  auto meta = save_shape("bad-1");
  meta["params"] = {{"x", "1"}};
  write_meta("bad-1", meta);
  save_shape("bad-2");
  write_meta("bad-2", json::array());
  auto wrong_type = save_shape("bad-3");
  wrong_type["snapshot_file"] = 5;
  write_meta("bad-3", wrong_type);
  EXPECT_EQ(load(), 1u);
  EXPECT_TRUE(quarantined("bad-1"));
  EXPECT_TRUE(quarantined("bad-2"));
  EXPECT_TRUE(quarantined("bad-3"));
}

// Was: loaded, then a segfault on the first change (a key column index past the row).
TEST_F(ShapeLoadingTest, AKeyColumnOutOfRangeIsQuarantined) {
  auto meta = save_shape("bad-1");
  meta["table_schema"]["key_columns"] = {7};
  write_meta("bad-1", meta);
  EXPECT_EQ(load(), 0u);
  EXPECT_TRUE(quarantined("bad-1"));
}

// Was: numbers converted whatever their kind or size: key column 0.5 loaded
// as column 0, an oid of -1 as 4294967295, dims past int wrapped, and a
// float too large for its field was undefined behaviour (found by
// shape_files_fuzz: key column 8.9e82).
TEST_F(ShapeLoadingTest, NumbersOfTheWrongKindOrOutOfRangeAreQuarantined) {
  // Distinct shapes (where clauses), so none is dropped as a duplicate.
  save_shape("good-1", "id = 1");
  auto fractional_key = save_shape("bad-1", "id = 2");
  fractional_key["table_schema"]["key_columns"] = {0.5};
  write_meta("bad-1", fractional_key);
  auto negative_oid = save_shape("bad-2", "id = 3");
  negative_oid["table_schema"]["oid"] = -1;
  write_meta("bad-2", negative_oid);
  auto wide_dims = save_shape("bad-3", "id = 4");
  wide_dims["table_schema"]["columns"][0]["dims"] = 4294967296LL;
  write_meta("bad-3", wide_dims);
  auto huge_key = save_shape("bad-4", "id = 5");
  huge_key["table_schema"]["key_columns"] = {8.9e82};
  write_meta("bad-4", huge_key);
  auto fractional_xip = save_shape("bad-5", "id = 6");
  fractional_xip["snapshot"]["xip"] = {10.5};
  write_meta("bad-5", fractional_xip);
  EXPECT_EQ(load(), 1u);
  for (const char* handle : {"bad-1", "bad-2", "bad-3", "bad-4", "bad-5"})
    EXPECT_TRUE(quarantined(handle)) << handle;
}

// Was: served as an empty shape under its old handle (silent data loss).
TEST_F(ShapeLoadingTest, AMissingSnapshotFileIsQuarantinedNotServedEmpty) {
  save_shape("bad-1");
  fs::remove(shapes_ / "bad-1" / "snapshot.log");
  EXPECT_EQ(load(), 0u);
  EXPECT_TRUE(quarantined("bad-1"));
}

// Was: the file named was opened and served, wherever it was.
TEST_F(ShapeLoadingTest, ASnapshotFileOutsideTheShapeDirectoryIsNeverOpened) {
  auto meta = save_shape("bad-1");
  fs::copy_file(shapes_ / "bad-1" / "snapshot.log", dir_ / "elsewhere.log");
  meta["snapshot_file"] = "../../elsewhere.log";
  write_meta("bad-1", meta);
  EXPECT_EQ(load(), 0u);
  EXPECT_TRUE(quarantined("bad-1"));
}

// Was: the loader asked the file system about a name longer than a file name
// may be, which threw ENAMETOOLONG out of the load: the proxy did not start
// (found by shape_files_fuzz).
TEST_F(ShapeLoadingTest, ASnapshotFileNameTooLongForAFileIsQuarantined) {
  save_shape("good-1", "id = 1");
  auto long_name = save_shape("bad-1", "id = 2");
  long_name.erase("snapshot");  // asked about only when meta.json names no snapshot
  long_name["snapshot_file"] = "snapshot-" + std::string(300, '1') + ".log";
  write_meta("bad-1", long_name);
  EXPECT_EQ(load(), 1u);
  EXPECT_TRUE(quarantined("bad-1"));
}

// A file the loader cannot even ask about (stat fails: here a symlink loop,
// as EACCES or EIO would) is that shape's error, not an exception that
// stops the proxy from starting.
TEST_F(ShapeLoadingTest, AChangesFileThatCannotBeStatedIsQuarantined) {
  save_shape("good-1", "id = 1");
  save_shape("bad-1", "id = 2");
  save_shape("bad-2", "id = 3");
  std::filesystem::remove(shapes_ / "bad-1" / "changes.log");
  std::filesystem::create_symlink("changes.log", shapes_ / "bad-1" / "changes.log");
  // A sidecar index whose changes file is a loop.
  std::filesystem::remove(shapes_ / "bad-2" / "changes.log");
  std::filesystem::create_symlink("changes-7.log", shapes_ / "bad-2" / "changes-7.log");
  std::ofstream(shapes_ / "bad-2" / "changes-7.log.idx") << "x";
  // Beside the shapes: an entry that is a loop itself (skipped, not a shape).
  std::filesystem::create_symlink("loop-1", shapes_ / "loop-1");
  EXPECT_EQ(load(), 1u);
  EXPECT_TRUE(quarantined("bad-1"));
  EXPECT_TRUE(quarantined("bad-2"));
}

TEST_F(ShapeLoadingTest, UnknownModesAndABadCompactionPointAreQuarantined) {
  auto replica = save_shape("bad-1");
  replica["replica"] = "everything";
  write_meta("bad-1", replica);
  auto compacted = save_shape("bad-2");
  compacted["compacted_at"] = "0_3";  // chunks would sit before offset 0
  write_meta("bad-2", compacted);
  auto handle = save_shape("bad-3");
  handle["handle"] = "a\r\nset-cookie: x";
  write_meta("bad-3", handle);
  EXPECT_EQ(load(), 0u);
  EXPECT_TRUE(quarantined("bad-1"));
  EXPECT_TRUE(quarantined("bad-2"));
  EXPECT_TRUE(quarantined("bad-3"));
}

// The load reads no chunk body; the verification after it does, and drops
// the shape (its clients get 409) rather than serve a damaged chunk. (While
// a shape's rows are rebuilt from its log at load, that read finds it first.)
TEST_F(ShapeLoadingTest, ADamagedSnapshotChunkIsFoundAfterTheLoadAndItsShapeDropped) {
  save_shape("good-1");
  save_shape("bad-1", "id > 0");
  {
    std::fstream file(shapes_ / "bad-1" / "snapshot.log",
                      std::ios::binary | std::ios::in | std::ios::out);
    file.seekp(40);  // inside the chunk's body
    file.put('X');
  }
  ShapeRegistryOptions options;
  options.shapes_dir = shapes_;
  auto registry = std::make_shared<ShapeRegistry>(io_.get_executor(), nullptr, options);
  auto loaded = on_io([&] { return registry->load(); });
  ASSERT_TRUE(loaded);
  EXPECT_GE(loaded.value(), 1u);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (fs::exists(shapes_ / "bad-1") && std::chrono::steady_clock::now() < deadline) {
    io_.run_for(std::chrono::milliseconds(20));
    io_.restart();
  }
  EXPECT_FALSE(fs::exists(shapes_ / "bad-1"));
  EXPECT_TRUE(fs::exists(shapes_ / "good-1"));
  EXPECT_EQ(registry->shapes_held(), 1u);
  on_io([&] {
    registry->stop();
    return 0;
  });
}

}  // namespace
}  // namespace shapeproxy::shapes
