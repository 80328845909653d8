// ShapeState over a real StateStore (RocksDB on disk in a temp dir, and in
// memory): reads through the layers, ordered iteration, the marker written
// only with commit(), bulk loads, drops, and what survives a reopen.
#include "shapes/shape_state.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <rocksdb/convenience.h>
#include <rocksdb/write_batch.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <thread>

#include "shapes/shape_messages.h"
#include "support/faulty_file_system.h"

namespace shapeproxy::shapes {
namespace {

using Row = where::RowValues;

Row row(std::initializer_list<const char*> values) {
  Row out;
  for (const char* value : values) {
    out.push_back(value ? std::optional<std::string>(value) : std::nullopt);
  }
  return out;
}

std::map<std::string, Row> all(const ShapeState& state) {
  std::map<std::string, Row> out;
  std::string previous;
  state.for_each([&](const std::string& key, const Row& values) {
    EXPECT_TRUE(out.empty() || previous < key) << "not in key order: " << previous << ", " << key;
    previous = key;
    out.emplace(key, values);
    return true;
  });
  return out;
}

class ShapeStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/shapeproxy-state-XXXXXX";
    dir_ = ::mkdtemp(pattern);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::shared_ptr<StateStore> open() {
    auto store = StateStore::open(dir_ / "state", StateStoreOptions{});
    EXPECT_TRUE(store) << store.error().to_string();
    return store ? store.value() : nullptr;
  }
  std::filesystem::path dir_;
};

TEST(RowEncodingTest, RoundTripsNullsEmptyAndBinaryValues) {
  Row values{std::nullopt, std::string(), std::string("a\0b", 3), std::string(300, 'x')};
  auto decoded = decode_row(encode_row(values));
  ASSERT_TRUE(decoded);
  EXPECT_EQ(*decoded, values);
  EXPECT_EQ(*decode_row(encode_row(Row{})), Row{});
  EXPECT_FALSE(decode_row(encode_row(values).substr(0, 5)));
  EXPECT_FALSE(decode_row(encode_row(values) + "x"));
}

TEST_F(ShapeStateTest, ReadsSeeTheLayersOverTheStoreInKeyOrder) {
  auto store = open();
  ShapeState state(store, store->allocate_id());
  state.put("b", row({"2", "bee"}));
  state.put("a", row({"1", nullptr}));
  state.seal(LogOffset::at(10, 0));
  ASSERT_TRUE(state.commit());
  state.put("c", row({"3", "sea"}));
  state.erase("a");
  state.put("b", row({"2", "bee!"}));
  state.erase("zzz");  // not held: nothing
  EXPECT_EQ(state.size(), 2u);
  EXPECT_FALSE(state.holds("a"));
  EXPECT_TRUE(state.holds("c"));
  EXPECT_EQ(*state.get("b"), row({"2", "bee!"}));
  auto rows = all(state);
  EXPECT_EQ(rows,
            (std::map<std::string, Row>{{"b", row({"2", "bee!"})}, {"c", row({"3", "sea"})}}));
  // The store itself is as of the commit.
  auto marker = store->marker(state.id());
  ASSERT_TRUE(marker && marker.value());
  EXPECT_EQ(marker.value()->through, LogOffset::at(10, 0));
  EXPECT_EQ(marker.value()->rows, 2u);
  EXPECT_TRUE(store->get(StateStore::row_key(state.id(), "a")).value().has_value());
}

TEST_F(ShapeStateTest, CommitWritesOnlySealedLayersWithTheirMarker) {
  auto store = open();
  ShapeState state(store, store->allocate_id());
  state.put("a", row({"1"}));
  state.seal(LogOffset::at(5, 0));
  state.put("b", row({"2"}));  // after the seal: not durable in the log yet
  ASSERT_TRUE(state.commit());
  EXPECT_TRUE(state.pending());
  EXPECT_EQ(state.committed_through(), LogOffset::at(5, 0));
  EXPECT_FALSE(store->get(StateStore::row_key(state.id(), "b")).value().has_value());
  auto marker = store->marker(state.id()).value();
  EXPECT_EQ(marker->rows, 1u);
  // Two seals before one commit (a failed sync retried): one batch, newest wins.
  state.seal(LogOffset::at(6, 0));
  state.erase("b");
  state.put("c", row({"3"}));
  state.seal(LogOffset::at(7, 1));
  ASSERT_TRUE(state.commit());
  EXPECT_FALSE(state.pending());
  marker = store->marker(state.id()).value();
  EXPECT_EQ(marker->through, LogOffset::at(7, 1));
  EXPECT_EQ(marker->rows, 2u);
  EXPECT_FALSE(store->get(StateStore::row_key(state.id(), "b")).value().has_value());
}

TEST_F(ShapeStateTest, BulkLoadsWriteTheMarkerLastAndDropsForgetTheShape) {
  auto store = open();
  std::uint64_t id = store->allocate_id();
  {
    ShapeState state(store, id);
    ASSERT_TRUE(state.begin_bulk());
    for (int i = 0; i < 40'000; ++i) state.put("k" + std::to_string(100'000 + i), row({"v"}));
    // Batches are written as they fill, without a marker.
    EXPECT_FALSE(store->marker(id).value().has_value());
    ASSERT_TRUE(state.end_bulk(LogOffset::start()));
    EXPECT_EQ(store->marker(id).value()->rows, 40'000u);
    EXPECT_EQ(all(state).size(), 40'000u);
  }
  ShapeState other(store, store->allocate_id());
  other.put("x", row({"1"}));
  other.seal(LogOffset::at(1, 0));
  ASSERT_TRUE(other.commit());
  auto ids = store->ids().value();
  EXPECT_EQ(ids.size(), 2u);
  ShapeState again(store, id);
  ASSERT_TRUE(again.drop());
  EXPECT_FALSE(store->marker(id).value().has_value());
  EXPECT_TRUE(all(again).empty());
  EXPECT_EQ(all(other).size(), 1u);
  EXPECT_EQ(store->ids().value(), std::vector<std::uint64_t>{other.id()});
}

// A snapshot by primary key: rows go straight into write batches (written as
// they fill, the rest at end_bulk) and read back like put() rows.
TEST_F(ShapeStateTest, BulkInsertsAreReadBackAfterTheBulkEnds) {
  auto store = open();
  std::uint64_t id = store->allocate_id();
  ShapeState state(store, id);
  state.put("stale", row({"old"}));
  state.seal(LogOffset::at(1, 0));
  ASSERT_TRUE(state.commit());
  ASSERT_TRUE(state.begin_bulk());
  for (int i = 0; i < 40'000; ++i) {
    ASSERT_TRUE(state.bulk_insert("k" + std::to_string(100'000 + i), row({"v", nullptr})));
  }
  EXPECT_FALSE(store->marker(id).value().has_value());  // no marker before the end
  ASSERT_TRUE(state.end_bulk(LogOffset::start()));
  EXPECT_EQ(store->marker(id).value()->rows, 40'000u);
  EXPECT_EQ(state.size(), 40'000u);
  EXPECT_FALSE(state.holds("stale"));  // begin_bulk emptied the shape
  EXPECT_TRUE(state.holds("k100000"));
  EXPECT_TRUE(state.holds("k139999"));
  EXPECT_EQ(state.get("k120000"), row({"v", nullptr}));
  auto rows = all(state);
  EXPECT_EQ(rows.size(), 40'000u);
  // Later changes layer over them as usual.
  state.put("k100000", row({"w", "1"}));
  state.erase("k100001");
  EXPECT_EQ(state.size(), 39'999u);
  EXPECT_EQ(state.get("k100000"), row({"w", "1"}));
  EXPECT_FALSE(state.holds("k100001"));
}

// Disk use (issue 11): a big bulk load does not stay in RocksDB's WAL,
// where rows are uncompressed; the bottommost level is ZSTD when this
// librocksdb has it.
TEST_F(ShapeStateTest, ABigBulkLoadGoesToCompressedFilesAndNothingIsWrittenTwice) {
  auto store = open();
  ShapeState state(store, store->allocate_id());
  ASSERT_TRUE(state.begin_bulk());
  const std::string title(40, 't');
  for (int i = 0; i < 40'000; ++i)
    state.put("k" + std::to_string(100'000 + i), row({"v", title.c_str()}));
  ASSERT_TRUE(state.end_bulk(LogOffset::start()));
  // ~2.4 MB of rows in a memtable; the flush was asked, not awaited.
  // RocksDB deletes obsolete files while we list them: a file gone
  // between the listing and its size counts as empty.
  auto bytes_of = [&](const char* extension) {
    std::uintmax_t bytes = 0;
    for (const auto& entry : std::filesystem::directory_iterator(dir_ / "state")) {
      if (entry.path().extension() != extension) continue;
      std::error_code gone;
      const auto size = std::filesystem::file_size(entry.path(), gone);
      if (!gone) bytes += size;
    }
    return bytes;
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (bytes_of(".sst") == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_GT(bytes_of(".sst"), 0u) << "the bulk load was not flushed";
  EXPECT_EQ(bytes_of(".log"), 0u) << "rows went through a WAL (written twice)";
  EXPECT_EQ(all(state).size(), 40'000u);

  auto supported = rocksdb::GetSupportedCompressions();
  if (std::find(supported.begin(), supported.end(), rocksdb::kZSTD) != supported.end()) {
    std::string options;
    for (const auto& entry : std::filesystem::directory_iterator(dir_ / "state")) {
      if (entry.path().filename().string().starts_with("OPTIONS-")) {
        std::ifstream in(entry.path());
        options.assign(std::istreambuf_iterator<char>(in), {});
      }
    }
    EXPECT_NE(options.find("bottommost_compression=kZSTD"), std::string::npos) << options;
  }
}

// The store has no WAL: a process that dies keeps only what reached table
// files. Writes start a flush once the last is older than flush_every, so a
// killed process (never closed: _exit) leaves its committed rows and marker
// behind, not an empty store that makes the loader rebuild every shape from
// its whole log. The process is this binary run again for the test below
// (a fork would inherit RocksDB's thread pool without its threads).
constexpr std::uint64_t kKilledId = 7;
constexpr const char* kKillChildDir = "SHAPEPROXY_TEST_KILL_CHILD_DIR";

TEST(StateStoreKillChild, DISABLED_CommitsThenDies) {
  const char* dir = std::getenv(kKillChildDir);
  if (!dir) GTEST_SKIP() << "run by RowsCommittedBeforeAKillAreInTheStoreAfterIt";
  StateStoreOptions options;
  options.flush_every = std::chrono::milliseconds(1);
  auto opened = StateStore::open(std::filesystem::path(dir) / "state", options);
  if (!opened) ::_exit(2);
  auto& store = opened.value();
  ShapeState state(store, kKilledId);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));  // past flush_every
  state.put("a", row({"1"}));
  state.seal(LogOffset::at(1, 0));
  if (!state.commit()) ::_exit(3);
  // (A flush under way holds the next one back: wait for it, then past
  // flush_every.)
  for (int i = 0; i < 2000 && !store->all_flushed(); ++i) ::usleep(10'000);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  state.put("b", row({"2"}));
  state.seal(LogOffset::at(2, 0));
  if (!state.commit()) ::_exit(4);
  // Until the flushes the writes started are done (at most 20 s).
  for (int i = 0; i < 2000 && !store->all_flushed(); ++i) ::usleep(10'000);
  ::_exit(0);  // killed: no close, no flush at exit
}

TEST_F(ShapeStateTest, RowsCommittedBeforeAKillAreInTheStoreAfterIt) {
  std::vector<std::string> environment;
  for (char** each = environ; *each; ++each) environment.emplace_back(*each);
  environment.push_back(std::string(kKillChildDir) + "=" + dir_.string());
  std::vector<char*> envp;
  for (auto& each : environment) envp.push_back(each.data());
  envp.push_back(nullptr);
  std::string self = "/proc/self/exe", disabled = "--gtest_also_run_disabled_tests",
              filter = "--gtest_filter=StateStoreKillChild.DISABLED_CommitsThenDies";
  char* argv[] = {self.data(), disabled.data(), filter.data(), nullptr};
  posix_spawn_file_actions_t quiet;  // the child's gtest report is not this test's
  ::posix_spawn_file_actions_init(&quiet);
  ::posix_spawn_file_actions_addopen(&quiet, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  pid_t child = 0;
  const int spawned = ::posix_spawn(&child, self.c_str(), &quiet, nullptr, argv, envp.data());
  ::posix_spawn_file_actions_destroy(&quiet);
  ASSERT_EQ(spawned, 0);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  auto store = open();
  auto marker = store->marker(kKilledId).value();
  ASSERT_TRUE(marker) << "the killed process left no marker: every shape would be rebuilt";
  EXPECT_EQ(marker->through, LogOffset::at(2, 0));
  ShapeState state(store, kKilledId);
  state.set_loaded(*marker);
  EXPECT_EQ(all(state), (std::map<std::string, Row>{{"a", row({"1"})}, {"b", row({"2"})}}));
}

TEST_F(ShapeStateTest, CommittedRowsSurviveAReopenAndIdsAreNotReused) {
  std::uint64_t id = 0;
  {
    auto store = open();
    id = store->allocate_id();
    ShapeState state(store, id);
    state.put("a", row({"1", "x"}));
    state.seal(LogOffset::at(3, 2));
    ASSERT_TRUE(state.commit());
    state.put("b", row({"2"}));  // never committed
  }
  auto store = open();
  EXPECT_GT(store->allocate_id(), id);
  auto marker = store->marker(id).value();
  ASSERT_TRUE(marker);
  ShapeState state(store, id);
  state.set_loaded(*marker);
  EXPECT_EQ(state.size(), 1u);
  EXPECT_EQ(all(state), (std::map<std::string, Row>{{"a", row({"1", "x"})}}));
}

// A store whose files fail on demand (testing::FaultyFileSystem), with one
// shape's state in it.
class FaultyStoreTest : public ShapeStateTest {
 protected:
  using Fault = testing::FaultyFileSystem::Fault;

  // Opens the store, then: row "a" committed and flushed (marker (1, 0)),
  // the fault from now on, row "b" committed (to a memtable: marker (2, 0)),
  // and the flush, which fails, returned.
  Result<void> flush_failing_with(Fault fault) {
    auto opened = StateStore::open(dir_ / "state", StateStoreOptions{.file_system = files_});
    EXPECT_TRUE(opened) << opened.error().to_string();
    if (!opened) return opened.error();
    store_ = opened.value();
    id_ = store_->allocate_id();
    state_.emplace(store_, id_);
    commit_row("a", 1);
    EXPECT_TRUE(state_->commit());
    EXPECT_TRUE(store_->flush());
    files_->fail(fault);
    commit_row("b", 2);
    EXPECT_TRUE(state_->commit());  // in a memtable
    return store_->flush();
  }
  // Row `key` (its value the key) in a layer sealed at (n, 0).
  void commit_row(const std::string& key, std::uint64_t n) {
    state_->put(key, row({key.c_str()}));
    state_->seal(LogOffset::at(n, 0));
  }
  // With the fault gone: commits until one goes through (RocksDB resumes by
  // itself, or when a write asks it to), for at most 30 s; the last result.
  Result<void> commit_once_resumed() {
    auto committed = state_->commit();
    for (auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
         !committed && std::chrono::steady_clock::now() < deadline;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      committed = state_->commit();
    }
    return committed;
  }
  // The rows the store holds for the shape after a reopen, and its marker.
  std::pair<std::map<std::string, Row>, LogOffset> reopened() {
    state_.reset();
    store_.reset();
    auto store = open();
    auto marker = store->marker(id_).value();
    EXPECT_TRUE(marker);
    if (!marker) return {};
    ShapeState state(store, id_);
    state.set_loaded(*marker);
    return {all(state), marker->through};
  }

  std::shared_ptr<testing::FaultyFileSystem> files_ = std::make_shared<testing::FaultyFileSystem>();
  std::shared_ptr<StateStore> store_;
  std::uint64_t id_ = 0;
  std::optional<ShapeState> state_;
};

// A full disk under the store: the memtable flush fails, writes are then
// refused (the rows stay in their layers) while it lasts, and once there is
// space the same commit goes through with no restart.
TEST_F(FaultyStoreTest, AStoreOnAFullDiskTakesWritesAgainOnceThereIsSpace) {
  auto failed = flush_failing_with(Fault::kNoSpace);
  ASSERT_FALSE(failed);
  EXPECT_NE(failed.error().message.find("no space left"), std::string::npos)
      << failed.error().to_string();
  EXPECT_TRUE(store_->write_failure().has_value());
  commit_row("c", 3);
  EXPECT_FALSE(state_->commit()) << "a write went through while the disk was still full";
  EXPECT_EQ(state_->committed_through(), LogOffset::at(2, 0));
  EXPECT_EQ(state_->get("c"), row({"c"})) << "the row that could not be stored was dropped";

  files_->fail(Fault::kNone);
  auto resumed = commit_once_resumed();
  ASSERT_TRUE(resumed) << resumed.error().to_string();
  EXPECT_FALSE(store_->write_failure().has_value());
  EXPECT_EQ(state_->committed_through(), LogOffset::at(3, 0));
  ASSERT_TRUE(store_->flush());
  auto [rows, through] = reopened();
  EXPECT_EQ(through, LogOffset::at(3, 0));
  EXPECT_EQ(rows,
            (std::map<std::string, Row>{{"a", row({"a"})}, {"b", row({"b"})}, {"c", row({"c"})}}));
}

// Syncs go on while the store refuses writes: the changes that wait stay in
// one layer (a lookup walks every layer), newest values winning, and all of
// them reach the store once it takes writes again.
TEST_F(FaultyStoreTest, ChangesWaitingForAFailedStoreStayInOneLayer) {
  ASSERT_FALSE(flush_failing_with(Fault::kNoSpace));
  for (std::uint64_t n = 3; n < 53; ++n) {
    commit_row("k" + std::to_string(n % 7), n);
    state_->put("a", row({std::to_string(n).c_str()}));  // newer wins
    state_->seal(LogOffset::at(n, 1));
    ASSERT_FALSE(state_->commit());
    EXPECT_EQ(state_->layers(), 1u) << "after the failed commit of layer " << n;
  }
  EXPECT_EQ(state_->get("a"), row({"52"}));
  EXPECT_EQ(state_->get("k3"), row({"k3"}));
  EXPECT_EQ(state_->size(), 9u);  // a, b and k0..k6

  files_->fail(Fault::kNone);
  auto resumed = commit_once_resumed();
  ASSERT_TRUE(resumed) << resumed.error().to_string();
  EXPECT_EQ(state_->layers(), 0u);
  ASSERT_TRUE(store_->flush());
  auto [rows, through] = reopened();
  EXPECT_EQ(through, LogOffset::at(52, 1));
  EXPECT_EQ(rows.size(), 9u);
  EXPECT_EQ(rows["a"], row({"52"}));
  EXPECT_EQ(rows["b"], row({"b"}));
}

// An I/O error RocksDB cannot resume from: every later write is refused
// without reaching RocksDB's files, the error says a restart is needed,
// closing does not abort (Debian's librocksdb 7.8 aborts when a write
// reaches a file writer that failed before), and after a reopen the store
// holds what was flushed before the error (the rest is the logs' to replay).
// RocksDB's messages went to the proxy's log: there is no LOG file.
TEST_F(FaultyStoreTest, AStoreThatStoppedOnAnIoErrorIsNeverWrittenAgainUntilReopened) {
  ASSERT_FALSE(flush_failing_with(Fault::kIoError));
  const auto appends = files_->appends();
  files_->fail(Fault::kNone);  // the disk looks fine again
  commit_row("c", 3);
  for (int i = 0; i < 5; ++i) {
    auto refused = state_->commit();
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message.find("until the proxy restarts"), std::string::npos)
        << refused.error().to_string();
  }
  (void)store_->allocate_id();
  store_->flush_soon();
  EXPECT_FALSE(store_->flush());
  EXPECT_EQ(files_->appends(), appends) << "a write reached the stopped store's files";
  ASSERT_TRUE(store_->write_failure().has_value());
  EXPECT_NE(store_->write_failure()->hint.find("restart"), std::string::npos);

  auto [rows, through] = reopened();
  EXPECT_FALSE(std::filesystem::exists(dir_ / "state" / "LOG"));
  EXPECT_EQ(through, LogOffset::at(1, 0));
  EXPECT_EQ(rows, (std::map<std::string, Row>{{"a", row({"a"})}}));
}

TEST(StateStoreTest, InMemoryStoresAreSeparate) {
  auto one = StateStore::in_memory(StateStoreOptions{});
  auto two = StateStore::in_memory(StateStoreOptions{});
  ASSERT_TRUE(one && two);
  ShapeState state(one.value(), 1);
  state.put("a", row({"1"}));
  state.seal(LogOffset::at(1, 0));
  ASSERT_TRUE(state.commit());
  EXPECT_TRUE(one.value()->marker(1).value().has_value());
  EXPECT_FALSE(two.value()->marker(1).value().has_value());
}

// Rebuilding rows from a log: snapshot-end control messages (in a snapshot
// chunk and after a refresh group) are messages that carry no row.
TEST(ReplayTest, SnapshotEndMessagesAreSkipped) {
  auto store = StateStore::in_memory(StateStoreOptions{});
  ASSERT_TRUE(store);
  ShapeState state(store.value(), 1);
  TableSchema table;
  for (const char* name : {"id", "title"}) {
    TableColumn column;
    column.name = name;
    table.columns.push_back(column);
  }
  PgSnapshot snapshot{.xmin = 5, .xmax = 9, .xip = {6, 7}};
  const std::string end = snapshot_end_message(snapshot);
  EXPECT_EQ(end,
            R"({"headers":{"control":"snapshot-end","xmin":"5","xmax":"9","xip_list":["6","7"]}})");
  EXPECT_TRUE(replay_message(
      state, table,
      R"([{"key":"\"public\".\"t\"/\"1\"","value":{"id":"1","title":"a"},"headers":{"operation":"insert"}},)" +
          end + "]"));
  EXPECT_TRUE(replay_message(state, table, end));
  EXPECT_FALSE(replay_message(state, table, R"({"headers":{"operation":"insert"}})"));
  EXPECT_EQ(all(state), (std::map<std::string, Row>{{R"("public"."t"/"1")", row({"1", "a"})}}));
}

}  // namespace
}  // namespace shapeproxy::shapes
