// ShapeRegistry against a real PostgreSQL and a real replication stream:
// initial snapshots, live operations, where-clause moves, replica modes,
// snapshot/stream alignment, rotation on schema change and truncate.
#include "shapes/shape_registry.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <filesystem>
#include <fstream>
#include <future>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include "pg/connection.h"
#include "replication/replication_stream.h"
#include "shape_fixtures.h"
#include "shapes/snapshot_query.h"
#include "shapes/state_store.h"
#include "support/faulty_file_system.h"
#include "support/postgres_test_environment.h"

namespace shapeproxy::shapes {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using nlohmann::json;
using testing::conninfo;
using testing::execute_sql;
using testing::query_value;

// The registry fed by a replication stream, on one strand of a running io_context.
class Core : public replication::ReplicationListener {
 public:
  explicit Core(const std::string& database, ShapeRegistryOptions options = small_options()) {
    auto strand = asio::make_strand(io_);
    strand_ = strand;
    auto pool = std::make_shared<pg::ConnectionPool>(strand, conninfo(database), 2);
    pool_ = pool;
    replication::ReplicationStreamOptions stream_options;
    stream_options.conninfo = conninfo(database);
    stream_options.slot_name = "slot_" + database;
    stream_options.status_interval = 200ms;
    stream_ = std::make_shared<replication::ReplicationStream>(strand, stream_options, *this);
    ShapeRegistryHooks hooks;
    hooks.on_durable = [stream = stream_](replication::Lsn end_lsn) {
      stream->acknowledge(end_lsn);
    };
    // The source of direct queries is chosen by each test (on the strand).
    hooks.fallback_rows = [this](const ShapeDefinition& definition, RowsObserver on_rows)
        -> asio::awaitable<Result<std::shared_ptr<const SnapshotRows>>> {
      auto rows = fallback_rows_;  // a copy: the test may replace it meanwhile
      co_return co_await rows(definition, std::move(on_rows));
    };
    registry_ = std::make_shared<ShapeRegistry>(strand, pool, options, std::move(hooks));
    thread_ = std::thread([this] { io_.run(); });
    if (options.shapes_dir) {
      auto loaded = on_strand([this] { return registry_->load(); });
      EXPECT_TRUE(loaded) << loaded.error().to_string();
      loaded_ = loaded ? loaded.value() : 0;
    }
    stream_->start();
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, 30s, [&] { return streaming_; });
  }
  ~Core() {
    stream_->stop();
    {
      std::unique_lock lock(mutex_);
      changed_.wait_for(lock, 10s, [&] { return stopped_; });
    }
    // As the proxy shuts down: the registry's threads are joined on the
    // strand while the io_context still runs.
    std::promise<void> registry_stopped;
    auto registry = registry_;
    asio::post(strand_, [registry, &registry_stopped] {
      registry->stop();
      registry_stopped.set_value();
    });
    registry_stopped.get_future().wait_for(30s);
    work_.reset();
    io_.stop();
    thread_.join();
  }

  static ShapeRegistryOptions small_options() {
    ShapeRegistryOptions options;
    options.live_timeout = 2s;
    options.chunk_bytes = 4096;
    return options;
  }

  void on_transaction(replication::Transaction transaction) override {
    registry_->apply_transaction(transaction);
  }
  void on_state(replication::StreamState state, const Error*) override {
    std::lock_guard lock(mutex_);
    streaming_ = state == replication::StreamState::kStreaming;
    stopped_ = state == replication::StreamState::kStopped;
    changed_.notify_all();
  }

  // Runs `work` on the registry's strand and returns its result.
  template <typename Work>
  auto on_strand(Work work) -> decltype(work()) {
    std::promise<decltype(work())> done;
    asio::post(strand_, [&] { done.set_value(work()); });
    return done.get_future().get();
  }

  ReadOutcome read(ShapeDefinitionRequest definition, ReadRequest request) {
    auto promise = std::make_shared<std::promise<ReadOutcome>>();
    auto future = promise->get_future();
    registry_->read(definition, request,
                    [promise](ReadOutcome outcome) { promise->set_value(std::move(outcome)); });
    if (future.wait_for(30s) != std::future_status::ready) {
      ADD_FAILURE() << "read did not complete";
      return Unavailable{"timeout"};
    }
    return future.get();
  }

  ShapeRegistry& registry() { return *registry_; }

  // Waits (up to 10 s) until `count` live reads are parked.
  bool parked(std::uint64_t count) {
    for (auto until = std::chrono::steady_clock::now() + 10s;
         std::chrono::steady_clock::now() < until; std::this_thread::yield()) {
      if (registry_->parked_reads() == count) return true;
    }
    return registry_->parked_reads() == count;
  }

  // Replication goes away; the registry serves from direct queries.
  // `on_rows` runs on the registry's strand when a refresh query has its
  // rows, before the registry applies them, until it returns true.
  using RowsHook = std::function<bool(ShapeRegistry&, const SnapshotRows&)>;
  void enter_fallback(RowsHook on_rows = {}) {
    stream_->stop();
    {
      std::unique_lock lock(mutex_);
      changed_.wait_for(lock, 10s, [&] { return stopped_; });
    }
    auto registry = registry_;
    auto pool = pool_;
    auto hook = std::make_shared<RowsHook>(std::move(on_rows));
    asio::post(strand_, [this, registry, pool, hook] {
      std::weak_ptr<ShapeRegistry> weak = registry;
      fallback_rows_ = [pool, hook, weak](const ShapeDefinition& definition, RowsObserver on_rows)
          -> asio::awaitable<Result<std::shared_ptr<const SnapshotRows>>> {
        auto lease = co_await pool->acquire();
        if (!lease) co_return lease.error();
        auto rows = co_await query_snapshot(**lease, definition, {}, on_rows);
        if (!rows) co_return rows.error();
        if (auto registry = weak.lock(); *hook && registry && (*hook)(*registry, *rows)) {
          *hook = nullptr;
        }
        co_return std::make_shared<const SnapshotRows>(std::move(rows).value());
      };
      registry->set_serving_mode(true);
    });
  }
  // Serves from direct queries while the stream keeps running (replication
  // is back, the status not yet live). `after_query` runs once, when the
  // first refresh query has its rows; the rows reach the registry a second
  // later, so the stream applies what `after_query` commits before them.
  void serve_fallback_while_streaming(std::function<void()> after_query) {
    auto registry = registry_;
    auto pool = pool_;
    auto hook = std::make_shared<std::function<void()>>(std::move(after_query));
    asio::post(strand_, [this, registry, pool, hook] {
      // Whole results only, as a call joining another's query gets them.
      fallback_rows_ = [pool, hook](const ShapeDefinition& definition, RowsObserver)
          -> asio::awaitable<Result<std::shared_ptr<const SnapshotRows>>> {
        auto lease = co_await pool->acquire();
        if (!lease) co_return lease.error();
        auto rows = co_await query_snapshot(**lease, definition);
        if (!rows) co_return rows.error();
        if (auto run = std::exchange(*hook, nullptr)) {
          run();
          auto executor = co_await asio::this_coro::executor;
          asio::steady_timer settle(executor, std::chrono::seconds(1));
          co_await settle.async_wait(asio::as_tuple(asio::use_awaitable));
        }
        co_return std::make_shared<const SnapshotRows>(std::move(rows).value());
      };
      registry->set_serving_mode(true);
    });
  }
  // Serves from direct queries answered by `source` (called on the strand).
  void enter_fallback_from(FallbackRows source) {
    stream_->stop();
    {
      std::unique_lock lock(mutex_);
      changed_.wait_for(lock, 10s, [&] { return stopped_; });
    }
    auto registry = registry_;
    auto shared = std::make_shared<FallbackRows>(std::move(source));
    asio::post(strand_, [this, registry, shared] {
      fallback_rows_ = *shared;
      registry->set_serving_mode(true);
    });
  }
  asio::any_io_executor strand() const { return strand_; }
  std::shared_ptr<pg::ConnectionPool> pool() const { return pool_; }
  // Replication comes back on the same slot.
  void leave_fallback() {
    {
      std::lock_guard lock(mutex_);
      streaming_ = false;
    }
    stream_->start();
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, 30s, [&] { return streaming_; });
    auto registry = registry_;
    asio::post(strand_, [registry] { registry->set_serving_mode(false); });
  }
  std::size_t loaded() const { return loaded_; }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  std::shared_ptr<ShapeRegistry> registry_;
  std::shared_ptr<replication::ReplicationStream> stream_;
  asio::any_io_executor strand_;
  std::shared_ptr<pg::ConnectionPool> pool_;
  FallbackRows fallback_rows_;  // on the strand
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool streaming_ = false;
  bool stopped_ = false;
  std::size_t loaded_ = 0;
};

ReadResult expect_result(const ReadOutcome& outcome) {
  if (auto* result = std::get_if<ReadResult>(&outcome)) return *result;
  if (auto* invalid = std::get_if<InvalidRequest>(&outcome)) {
    ADD_FAILURE() << "invalid " << invalid->field << ": " << invalid->message;
  } else if (std::holds_alternative<MustRefetch>(outcome)) {
    ADD_FAILURE() << "must refetch";
  } else {
    ADD_FAILURE() << "unavailable: " << std::get<Unavailable>(outcome).message;
  }
  return {};
}

// The body's bytes, read from disk for a stored snapshot chunk.
std::string text(const ReadResult& result) {
  auto bytes = read_body(result);
  EXPECT_TRUE(bytes) << bytes.error().to_string();
  return bytes && bytes.value() ? *bytes.value() : "[]";
}
json body(const ReadResult& result) { return json::parse(text(result)); }

ShapeDefinitionRequest shape(const std::string& table, std::optional<std::string> where = {}) {
  ShapeDefinitionRequest definition;
  definition.table = table;
  definition.where = std::move(where);
  return definition;
}

ReadRequest from_start() { return ReadRequest{}; }
// Polls `condition` (every 20 ms) until it holds or `timeout` passes.
template <class Condition>
bool eventually(Condition condition, std::chrono::milliseconds timeout = 10s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

ReadRequest after(const ReadResult& previous, bool live = false) {
  ReadRequest request;
  request.start = ReadRequest::Start::kAt;
  request.offset = previous.offset;
  request.handle = previous.handle;
  request.live = live;
  return request;
}

// Reads from the start through every snapshot chunk until up-to-date. The
// snapshot's snapshot-end is checked and left out.
std::pair<json, ReadResult> sync(Core& core, const ShapeDefinitionRequest& definition) {
  json messages = json::array();
  int snapshot_ends = 0;
  auto add = [&](const ReadResult& result) {
    for (auto& m : body(result)) {
      if (m["headers"].value("control", "") != "snapshot-end") {
        messages.push_back(m);
        continue;
      }
      ++snapshot_ends;
      EXPECT_TRUE(m["headers"]["xmin"].is_string() && m["headers"]["xmax"].is_string() &&
                  m["headers"]["xip_list"].is_array())
          << m.dump();
    }
  };
  // A compaction finishing while a new reader catches up answers it
  // must-refetch, as a client then starts over from the new snapshot.
  ReadResult last;
  for (int attempt = 0; attempt < 20; ++attempt) {
    messages = json::array();
    snapshot_ends = 0;
    last = expect_result(core.read(definition, from_start()));
    add(last);
    bool refetch = false;
    for (int i = 0; i < 1000 && !last.up_to_date; ++i) {
      auto outcome = core.read(definition, after(last));
      if (std::holds_alternative<MustRefetch>(outcome)) {
        refetch = true;
        break;
      }
      last = expect_result(outcome);
      add(last);
    }
    if (!refetch) break;
  }
  // One after the snapshot; none in a snapshot a compaction rebuilt.
  EXPECT_LE(snapshot_ends, 1);
  return {messages, last};
}

class ShapeRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    database_ = testing::create_database("registry");
    execute_sql(database_,
                "CREATE PUBLICATION shapeproxy; "
                "CREATE TABLE items (id int PRIMARY KEY, title text, price numeric, "
                "tags text[], done bool NOT NULL DEFAULT false)");
  }
  std::string database_;
};

TEST_F(ShapeRegistryTest, SnapshotIsChunkedAndEndsUpToDateWithSchema) {
  execute_sql(database_,
              "INSERT INTO items SELECT g, 'item ' || g, g * 1.5, '{a,b}' "
              "FROM generate_series(1, 300) g");
  Core core(database_);
  auto first = expect_result(core.read(shape("items"), from_start()));
  EXPECT_EQ(first.offset.to_string(), "0_0");
  EXPECT_FALSE(first.up_to_date);  // offset=-1 never ends up-to-date
  auto schema = json::parse(first.schema_json);
  EXPECT_EQ(schema["id"], json({{"type", "int4"}, {"pk_index", 0}, {"not_null", true}}));
  EXPECT_EQ(schema["tags"], json({{"type", "text"}, {"dims", 1}}));
  EXPECT_EQ(schema["title"], json({{"type", "text"}}));
  auto [messages, last] = sync(core, shape("items"));
  ASSERT_EQ(messages.size(), 301u);  // 300 rows + up-to-date
  EXPECT_GT(last.offset.op, 1u) << "4 KiB chunks: several chunks expected";
  EXPECT_EQ(messages[0]["key"], "\"public\".\"items\"/\"1\"");
  EXPECT_EQ(
      messages[0]["value"],
      json({{"id", "1"}, {"title", "item 1"}, {"price", "1.5"}, {"tags", "{a,b}"}, {"done", "f"}}));
  EXPECT_EQ(messages[0]["headers"],
            json({{"operation", "insert"}, {"relation", {"public", "items"}}}));
  EXPECT_EQ(messages.back()["headers"]["control"], "up-to-date");
  // The same definition is the same shape.
  auto again = expect_result(core.read(shape("items"), from_start()));
  EXPECT_EQ(again.handle, first.handle);
  EXPECT_EQ(text(again), text(first));
}

TEST_F(ShapeRegistryTest, LiveReadsGetInsertsUpdatesAndDeletesInCommitOrder) {
  execute_sql(database_, "INSERT INTO items (id, title) VALUES (1, 'a')");
  Core core(database_);
  auto [messages, synced] = sync(core, shape("items"));
  ASSERT_EQ(messages.size(), 2u);
  auto pending = std::async(std::launch::async,
                            [&] { return core.read(shape("items"), after(synced, true)); });
  ASSERT_TRUE(core.parked(1));
  execute_sql(database_,
              "INSERT INTO items (id, title) VALUES (2, 'b'); UPDATE items SET title = 'a2' WHERE "
              "id = 1; DELETE FROM items WHERE id = 2");
  auto live = expect_result(pending.get());
  auto changes = body(live);
  ASSERT_EQ(changes.size(), 4u) << changes.dump();
  EXPECT_EQ(changes[0]["headers"]["operation"], "insert");
  EXPECT_EQ(changes[0]["value"]["title"], "b");
  EXPECT_EQ(changes[1]["headers"]["operation"], "update");
  EXPECT_EQ(changes[1]["value"], json({{"id", "1"}, {"title", "a2"}}));  // key + changed columns
  EXPECT_EQ(changes[2]["headers"]["operation"], "delete");
  EXPECT_EQ(changes[2]["value"], json({{"id", "2"}}));
  EXPECT_TRUE(changes[2]["headers"]["last"].get<bool>());
  EXPECT_FALSE(changes[0]["headers"].contains("last"));
  EXPECT_EQ(changes[0]["headers"]["lsn"], changes[2]["headers"]["lsn"]);
  EXPECT_EQ(changes[3]["headers"]["control"], "up-to-date");
  EXPECT_TRUE(live.up_to_date);
  EXPECT_GT(live.offset, synced.offset);
  // A live read with nothing new times out with up-to-date at the same offset.
  auto idle = expect_result(core.read(shape("items"), after(live, true)));
  EXPECT_EQ(idle.offset, live.offset);
  EXPECT_EQ(body(idle).size(), 1u);
}

TEST_F(ShapeRegistryTest, UpdatesMoveRowsIntoAndOutOfTheWhereClause) {
  execute_sql(database_,
              "INSERT INTO items (id, title, price) VALUES (1, 'cheap', 5), (2, 'dear', 50)");
  Core core(database_);
  auto definition = shape("items", "price > 10");
  auto [messages, synced] = sync(core, definition);
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages[0]["value"]["id"], "2");
  execute_sql(database_, "UPDATE items SET price = 20 WHERE id = 1");
  execute_sql(database_, "UPDATE items SET price = 1 WHERE id = 2");
  execute_sql(database_, "UPDATE items SET title = 'ignored' WHERE id = 2");
  auto live = expect_result(core.read(definition, after(synced, true)));
  auto changes = body(live);
  if (changes.size() < 3) {
    auto more = expect_result(core.read(definition, after(live, true)));
    for (auto& m : body(more)) changes.push_back(m);
  }
  ASSERT_GE(changes.size(), 3u) << changes.dump();
  EXPECT_EQ(changes[0]["headers"]["operation"], "insert");  // moved in: the whole row
  EXPECT_EQ(changes[0]["value"]["title"], "cheap");
  EXPECT_EQ(changes[0]["value"]["price"], "20");
  std::vector<std::string> operations;
  for (auto& m : changes) {
    if (m["headers"].contains("operation")) operations.push_back(m["headers"]["operation"]);
  }
  EXPECT_EQ(operations,
            (std::vector<std::string>{"insert", "delete"}));  // the third update is outside
}

TEST_F(ShapeRegistryTest, ReplicaFullSendsWholeRowsAndOldValues) {
  execute_sql(database_, "INSERT INTO items (id, title, price) VALUES (1, 'a', 5)");
  Core core(database_);
  auto definition = shape("items");
  definition.replica = ReplicaMode::kFull;
  definition.columns = std::vector<std::string>{"id", "title", "price"};
  auto [messages, synced] = sync(core, definition);
  EXPECT_EQ(messages[0]["value"].size(), 3u);
  execute_sql(database_, "UPDATE items SET title = 'b' WHERE id = 1");
  auto changes = body(expect_result(core.read(definition, after(synced, true))));
  ASSERT_GE(changes.size(), 2u);
  EXPECT_EQ(changes[0]["value"], json({{"id", "1"}, {"title", "b"}, {"price", "5"}}));
  EXPECT_EQ(changes[0]["old_value"], json({{"title", "a"}}));
}

TEST_F(ShapeRegistryTest, InvalidDefinitionsNameTheField) {
  execute_sql(database_, "CREATE TABLE nokey_ok (a int)");
  Core core(database_);
  auto missing = core.read(shape("nope"), from_start());
  ASSERT_TRUE(std::holds_alternative<InvalidRequest>(missing));
  EXPECT_EQ(std::get<InvalidRequest>(missing).field, "table");
  auto bad_where = core.read(shape("items", "pg_sleep(1) IS NULL"), from_start());
  ASSERT_TRUE(std::holds_alternative<InvalidRequest>(bad_where));
  EXPECT_EQ(std::get<InvalidRequest>(bad_where).field, "where");
  auto no_pk = shape("items");
  no_pk.columns = std::vector<std::string>{"title"};
  auto columns = core.read(no_pk, from_start());
  ASSERT_TRUE(std::holds_alternative<InvalidRequest>(columns));
  EXPECT_NE(std::get<InvalidRequest>(columns).message.find("id"), std::string::npos);
}

TEST_F(ShapeRegistryTest, SchemaChangeAndTruncateRotateTheShape) {
  execute_sql(database_, "INSERT INTO items (id, title) VALUES (1, 'a')");
  Core core(database_);
  auto [messages, synced] = sync(core, shape("items"));
  auto parked = std::async(std::launch::async,
                           [&] { return core.read(shape("items"), after(synced, true)); });
  ASSERT_TRUE(core.parked(1));
  execute_sql(database_, "ALTER TABLE items ADD COLUMN extra int");
  execute_sql(database_, "INSERT INTO items (id, title) VALUES (2, 'b')");
  EXPECT_TRUE(std::holds_alternative<MustRefetch>(parked.get()));
  auto stale = core.read(shape("items"), after(synced));
  ASSERT_TRUE(std::holds_alternative<MustRefetch>(stale));
  auto [fresh, fresh_last] = sync(core, shape("items"));
  EXPECT_NE(fresh_last.handle, synced.handle);
  EXPECT_EQ(fresh.size(), 3u);
  EXPECT_TRUE(fresh[0]["value"].contains("extra"));
  execute_sql(database_, "TRUNCATE items");
  for (int i = 0; i < 50; ++i) {
    if (std::holds_alternative<MustRefetch>(core.read(shape("items"), after(fresh_last)))) break;
    std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(std::holds_alternative<MustRefetch>(core.read(shape("items"), after(fresh_last))));
}

TEST_F(ShapeRegistryTest, ConcurrentWritesDuringSnapshotAreNeitherLostNorDoubled) {
  execute_sql(database_,
              "INSERT INTO items (id, title) SELECT g, 'x' FROM generate_series(1, 20000) g");
  Core core(database_);
  std::atomic<bool> writing{true};
  std::thread writer([&] {
    for (int id = 20001; id <= 20200; ++id) {
      execute_sql(database_,
                  "INSERT INTO items (id, title) VALUES (" + std::to_string(id) + ", 'w')");
    }
    writing = false;
  });
  auto [messages, last] = sync(core, shape("items"));
  writer.join();
  std::map<std::string, int> seen;
  for (auto& m : messages) {
    if (m["headers"].contains("operation")) seen[m["value"]["id"]]++;
  }
  // Catch up with what was written after the first up-to-date.
  for (int i = 0; i < 50 && seen.size() < 20200; ++i) {
    last = expect_result(core.read(shape("items"), after(last, true)));
    for (auto& m : body(last)) {
      if (m["headers"].contains("operation")) seen[m["value"]["id"]]++;
    }
  }
  EXPECT_EQ(seen.size(), 20200u);
  for (const auto& [id, count] : seen) ASSERT_EQ(count, 1) << "row " << id << " delivered twice";
}

TEST_F(ShapeRegistryTest, FallbackFeedsLiveReadersAndRecoveryRepeatsNothing) {
  execute_sql(database_, "INSERT INTO items (id, title, price) VALUES (1, 'a', 50), (2, 'b', 50)");
  Core core(database_);
  auto definition = shape("items", "price > 10");
  auto [messages, synced] = sync(core, definition);
  core.enter_fallback();
  // Parked before the writes: answered by the next refresh, flagged.
  auto pending =
      std::async(std::launch::async, [&] { return core.read(definition, after(synced, true)); });
  ASSERT_TRUE(core.parked(1));
  execute_sql(database_, "INSERT INTO items (id, title, price) VALUES (3, 'c', 50)");
  execute_sql(database_, "UPDATE items SET title = 'a2' WHERE id = 1");
  execute_sql(database_, "UPDATE items SET price = 1 WHERE id = 2");  // moves out
  ReadResult outage = expect_result(pending.get());
  std::map<std::string, std::string> operations;
  // Each refresh group ends with the snapshot-end of its query (rfc/0004),
  // and sits above the global_last_seen_lsn reported before it, which the
  // next up-to-date passes (pglite-sync drops changes at or below it).
  std::uint64_t reported =
      std::stoull(body(synced).back()["headers"]["global_last_seen_lsn"].get<std::string>());
  int snapshot_ends = 0;
  auto collect = [&](const ReadResult& result) {
    json messages = body(result);
    for (std::size_t i = 0; i < messages.size(); ++i) {
      const json& m = messages[i];
      if (m["headers"].contains("operation")) {
        operations[m["value"]["id"].get<std::string>()] = m["headers"]["operation"];
        EXPECT_GT(std::stoull(m["headers"]["lsn"].get<std::string>()), reported) << m.dump();
      } else if (m["headers"]["control"] == "snapshot-end") {
        ++snapshot_ends;
        EXPECT_TRUE(m["headers"]["xmax"].is_string()) << m.dump();
        ASSERT_GT(i, 0u) << "a snapshot-end follows the group's operations";
      } else if (m["headers"]["control"] == "up-to-date") {
        auto lsn = std::stoull(m["headers"]["global_last_seen_lsn"].get<std::string>());
        for (const json& op : messages) {
          if (op["headers"].contains("lsn")) {
            EXPECT_GT(lsn, std::stoull(op["headers"]["lsn"].get<std::string>()));
          }
        }
        reported = std::max<std::uint64_t>(reported, lsn);
      }
    }
  };
  collect(outage);
  EXPECT_TRUE(outage.fallback);
  for (int i = 0; i < 10 && operations.size() < 3; ++i) {
    outage = expect_result(core.read(definition, after(outage, true)));
    collect(outage);
  }
  EXPECT_EQ(operations, (std::map<std::string, std::string>{
                            {"1", "update"}, {"2", "delete"}, {"3", "insert"}}));
  EXPECT_GE(snapshot_ends, 1);
  // Replication returns: the outage's transactions are in the refreshed
  // snapshot and must not be applied again; a new one arrives once.
  core.leave_fallback();
  execute_sql(database_, "INSERT INTO items (id, title, price) VALUES (4, 'd', 50)");
  std::vector<std::string> after_recovery;
  for (int i = 0; i < 10 && after_recovery.empty(); ++i) {
    auto live = expect_result(core.read(definition, after(outage, true)));
    for (auto& m : body(live)) {
      if (m["headers"].contains("operation")) after_recovery.push_back(m["value"]["id"]);
    }
    EXPECT_FALSE(live.fallback && !after_recovery.empty());
    outage = live;
  }
  EXPECT_EQ(after_recovery, (std::vector<std::string>{"4"}));
}

// Replication is back (its keepalives raise global_last_seen_lsn) while a
// refresh query runs: the group the query's rows make must sit above what
// was reported meanwhile, or pglite-sync drops it as already seen; the
// transactions in it stream later and are skipped as seen by the snapshot,
// so those changes would never reach such a client.
TEST_F(ShapeRegistryTest, ARefreshAppliedAfterAKeepaliveSitsAboveIt) {
  execute_sql(database_, "INSERT INTO items (id, title, price) VALUES (1, 'a', 50)");
  Core core(database_);
  auto definition = shape("items");
  auto [messages, synced] = sync(core, definition);
  std::uint64_t reported =
      std::stoull(body(synced).back()["headers"]["global_last_seen_lsn"].get<std::string>());
  // Far above every LSN logged so far, below the transactions to come.
  const std::uint64_t keepalive_wal_end = reported + (1u << 20);
  // The keepalive arrives while the query that sees the new row runs.
  core.enter_fallback([keepalive_wal_end](ShapeRegistry& registry, const SnapshotRows& rows) {
    if (rows.rows.size() < 2) return false;
    registry.note_progress(keepalive_wal_end);
    return true;
  });
  execute_sql(database_, "INSERT INTO items (id, title, price) VALUES (2, 'b', 50)");
  std::vector<std::uint64_t> lsns;
  ReadResult last = synced;
  for (int i = 0; i < 10 && lsns.empty(); ++i) {
    last = expect_result(core.read(definition, after(last, true)));
    for (auto& m : body(last)) {
      if (m["headers"].contains("operation")) {
        lsns.push_back(std::stoull(m["headers"]["lsn"].get<std::string>()));
      }
    }
  }
  ASSERT_EQ(lsns.size(), 1u);
  EXPECT_GT(lsns[0], keepalive_wal_end - 1) << "below a global_last_seen_lsn already reported";
}

// Replication is back but the proxy still serves from direct queries: a
// transaction the stream applies while a refresh query runs, and that the
// query's snapshot does not see, is newer than the query's rows. The refresh
// must not undo it (the row deleted again: lost until some later change).
TEST_F(ShapeRegistryTest, ARefreshOlderThanAStreamedTransactionDoesNotUndoIt) {
  execute_sql(database_, "INSERT INTO items (id, title, price) VALUES (1, 'a', 50)");
  Core core(database_);
  auto definition = shape("items");
  auto [messages, synced] = sync(core, definition);
  const auto database = database_;
  core.serve_fallback_while_streaming([database] {
    execute_sql(database, "INSERT INTO items (id, title, price) VALUES (2, 'b', 50)");
  });
  std::vector<std::pair<std::string, std::string>> operations;
  ReadResult last = synced;
  const auto until = std::chrono::steady_clock::now() + 4s;  // several refreshes
  while (std::chrono::steady_clock::now() < until) {
    last = expect_result(core.read(definition, after(last, true)));
    for (auto& m : body(last)) {
      if (m["headers"].contains("operation")) {
        operations.emplace_back(m["value"]["id"], m["headers"]["operation"]);
      }
    }
  }
  using Operations = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(operations, (Operations{{"2", "insert"}}));
}

class PersistentShapesTest : public ShapeRegistryTest {
 protected:
  void SetUp() override {
    ShapeRegistryTest::SetUp();
    char pattern[] = "/tmp/shapeproxy-shapes-XXXXXX";
    dir_ = ::mkdtemp(pattern);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  ShapeRegistryOptions options() {
    auto result = Core::small_options();
    result.shapes_dir = dir_ / "shapes";
    return result;
  }
  std::filesystem::path dir_;
};

TEST_F(PersistentShapesTest, ShapesComeBackWithTheirHandlesOffsetsAndRows) {
  execute_sql(database_, "INSERT INTO items (id, title, price) VALUES (1, 'a', 5), (2, 'b', 50)");
  ReadResult before;
  {
    Core core(database_, options());
    auto synced = sync(core, shape("items", "price > 10"));
    before = synced.second;
    execute_sql(database_, "UPDATE items SET price = 20 WHERE id = 1");
    before = expect_result(core.read(shape("items", "price > 10"), after(before, true)));
    ASSERT_EQ(body(before).size(), 2u);  // insert (moved in) + up-to-date
  }
  // Written while the proxy was away: must arrive after the restart, once.
  execute_sql(database_, "UPDATE items SET price = 1 WHERE id = 2");
  Core core(database_, options());
  EXPECT_EQ(core.loaded(), 1u);
  auto resumed = expect_result(core.read(shape("items", "price > 10"), after(before, true)));
  EXPECT_EQ(resumed.handle, before.handle);
  auto changes = body(resumed);
  ASSERT_EQ(changes.size(), 2u) << changes.dump();
  EXPECT_EQ(changes[0]["headers"]["operation"], "delete");
  EXPECT_EQ(changes[0]["value"]["id"], "2");
  // A new reader of the same definition gets the same shape and its rows.
  auto [messages, last] = sync(core, shape("items", "price > 10"));
  EXPECT_EQ(last.handle, before.handle);
  std::set<std::string> ids;
  for (auto& m : messages) {
    if (!m["headers"].contains("operation")) continue;
    if (m["headers"]["operation"] == "delete") {
      ids.erase(m["value"]["id"].get<std::string>());
    } else {
      ids.insert(m["value"]["id"].get<std::string>());
    }
  }
  EXPECT_EQ(ids, (std::set<std::string>{"1"}));
}

TEST_F(PersistentShapesTest, CompactionBoundsAHotRowAndRefetchesOnlyReadersBehindIt) {
  execute_sql(database_, "INSERT INTO items (id, title) VALUES (1, 'hot'), (2, 'cold')");
  auto settings = options();
  settings.compact_bytes = 16 * 1024;
  Core core(database_, settings);
  auto [messages, early] = sync(core, shape("items"));
  for (int i = 0; i < 300; ++i) {
    execute_sql(database_, "UPDATE items SET title = 'hot " + std::to_string(i) + "' WHERE id = 1");
  }
  // Wait until every update is applied (the log is then compacted).
  for (int i = 0; i < 100; ++i) {
    auto [rows, end] = sync(core, shape("items"));
    bool done = false;
    for (auto& m : rows) {
      if (m["value"].is_object() && m["value"].value("title", "") == "hot 299") done = true;
    }
    if (done) break;
    std::this_thread::sleep_for(100ms);
  }
  std::uintmax_t bytes = 0;
  // The shape's files (the state store beside them holds its two rows).
  for (auto& file : std::filesystem::recursive_directory_iterator(dir_ / "shapes")) {
    if (file.path().string().find("/shapes/state/") != std::string::npos) continue;
    std::error_code gone;  // a compaction may replace a file while we list
    const auto size = std::filesystem::file_size(file.path(), gone);
    if (!gone) bytes += size;
  }
  EXPECT_LT(bytes, 3 * 16 * 1024u) << "disk grows without bound";
  // The early reader (before the compaction point) must refetch; a new
  // reader gets the current rows.
  EXPECT_TRUE(std::holds_alternative<MustRefetch>(core.read(shape("items"), after(early))));
  execute_sql(database_, "UPDATE items SET title = 'final' WHERE id = 2");
  // A new reader, once the update is applied, gets the rows as they are.
  std::map<std::string, std::string> titles;
  EXPECT_TRUE(eventually([&] {
    auto [fresh, fresh_last] = sync(core, shape("items"));
    titles.clear();
    for (auto& m : fresh) {
      if (m["value"].is_object() && m["value"].contains("title")) {
        titles[m["value"]["id"]] = m["value"]["title"];
      }
    }
    return titles["2"] == "final";
  }));
  EXPECT_EQ(titles["1"], "hot 299");
  EXPECT_EQ(titles["2"], "final");
}

// A persisted shape keeps only a small tail of its operations in memory;
// older ones are read back from its files (off the strand). Every body is
// the same, byte for byte, whether it came from memory before a restart or
// from disk after it (the up-to-date message aside: it names the stream's
// position, which moves).
TEST_F(PersistentShapesTest, OperationsOlderThanTheMemoryTailAreServedFromDiskUnchanged) {
  execute_sql(database_,
              "INSERT INTO items (id, title, price) "
              "SELECT i, 'row ' || i, i FROM generate_series(1, 200) i");
  auto settings = options();
  settings.compact_bytes = 1ull << 40;  // no compaction: every operation stays readable
  std::vector<std::pair<ReadRequest, std::string>> reads;
  auto strip_up_to_date = [](std::string body) {
    auto at = body.find("{\"headers\":{\"control\":\"up-to-date\"");
    if (at != std::string::npos)
      body.erase(at == 1 ? at : at - 1, body.size() - 1 - (at == 1 ? at : at - 1));
    return body;
  };
  {
    Core core(database_, settings);
    auto [messages, start] = sync(core, shape("items"));
    for (int i = 0; i < 12; ++i) {
      execute_sql(database_, "UPDATE items SET title = 'pass " + std::to_string(i) + " ' || id");
    }
    execute_sql(database_, "UPDATE items SET title = 'last' WHERE id = 1");
    // Every page after the snapshot, following offsets, until the last update.
    for (int attempt = 0; attempt < 200; ++attempt) {
      reads.clear();
      ReadResult last = start;
      bool seen_last = false;
      for (int page = 0; page < 2000; ++page) {
        auto request = after(last);
        last = expect_result(core.read(shape("items"), request));
        auto bytes = text(last);
        seen_last = seen_last || bytes.find("\"title\":\"last\"") != std::string::npos;
        reads.emplace_back(request, strip_up_to_date(bytes));
        if (last.up_to_date) break;
      }
      if (seen_last) break;
      std::this_thread::sleep_for(100ms);
    }
    ASSERT_GT(reads.size(), 100u) << "too few pages to reach past the tail";
  }
  Core core(database_, settings);
  ASSERT_EQ(core.loaded(), 1u);
  for (const auto& [request, expected] : reads) {
    auto again = expect_result(core.read(shape("items"), request));
    EXPECT_EQ(strip_up_to_date(text(again)), expected) << request.offset.to_string();
  }
}

TEST_F(PersistentShapesTest, ChangesOnlyLogIsNotFoldedIntoInventedRows) {
  // A changes_only log has no snapshot rows, so its partial updates cannot be
  // folded into whole rows: past the compaction size it keeps its updates.
  execute_sql(database_, "INSERT INTO items (id, title, price) VALUES (1, 'hot', 7)");
  auto settings = options();
  settings.compact_bytes = 16 * 1024;
  Core core(database_, settings);
  auto changes_only = shape("items");
  changes_only.log = LogMode::kChangesOnly;
  sync(core, changes_only);
  for (int i = 0; i < 300; ++i) {
    execute_sql(database_, "UPDATE items SET title = 'hot " + std::to_string(i) + "' WHERE id = 1");
  }
  json messages;
  for (int i = 0; i < 100; ++i) {
    messages = sync(core, changes_only).first;
    if (messages.dump().find("hot 299") != std::string::npos) break;
    std::this_thread::sleep_for(100ms);
  }
  ASSERT_NE(messages.dump().find("hot 299"), std::string::npos);
  for (auto& m : messages) {
    if (!m["headers"].contains("operation")) continue;
    EXPECT_EQ(m["headers"]["operation"], "update") << m.dump();
    EXPECT_FALSE(m["value"].contains("price") && m["value"]["price"].is_null()) << m.dump();
  }
}

// Folds a synced shape into id -> "title:price" (deletes remove).
std::map<std::string, std::string> shape_rows(const json& messages) {
  std::map<std::string, std::string> rows;
  for (auto& m : messages) {
    if (!m["headers"].contains("operation")) continue;
    std::string id = m["value"]["id"];
    if (m["headers"]["operation"] == "delete") {
      rows.erase(id);
      continue;
    }
    auto text = [](const json& v) { return v.is_null() ? std::string() : v.get<std::string>(); };
    auto& row = rows[id];
    std::string title = row.substr(0, row.find(':'));
    std::string price = row.empty() ? "" : row.substr(row.find(':') + 1);
    if (m["value"].contains("title")) title = text(m["value"]["title"]);
    if (m["value"].contains("price")) price = text(m["value"]["price"]);
    row = title + ":" + price;
  }
  return rows;
}

std::map<std::string, std::string> table_rows(const std::string& database) {
  auto text = query_value(database,
                          "SELECT string_agg(id || '=' || coalesce(title, '') || ':' || "
                          "coalesce(price::text, ''), E'\\n' ORDER BY id) FROM items");
  std::map<std::string, std::string> rows;
  std::size_t at = 0;
  while (at < text.size()) {
    auto end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    auto line = text.substr(at, end - at);
    rows[line.substr(0, line.find('='))] = line.substr(line.find('=') + 1);
    at = end + 1;
  }
  return rows;
}

using testing::FileSizeLimit;
using testing::OpenFilesLimit;

std::uint64_t lsn_number(const std::string& database, const std::string& lsn_sql) {
  return std::stoull(query_value(database, "SELECT (" + lsn_sql + ") - '0/0'::pg_lsn"));
}

std::uint64_t confirmed_lsn(const std::string& database) {
  return lsn_number(database,
                    "SELECT confirmed_flush_lsn FROM pg_replication_slots "
                    "WHERE slot_name = 'slot_" +
                        database + "'");
}

TEST_F(PersistentShapesTest, AShapeLogThatCannotBeWrittenHoldsTheSlotAndRecoversWithoutLosingAny) {
  execute_sql(database_, "INSERT INTO items (id, title, price) VALUES (1, 'a', 1)");
  // The size limit is the process's: it would fail the row state store's
  // writes too, which have their own tests (StateStoreTest, LogDurabilityTest,
  // ARowStoreThatStopsIsCaughtUpFromTheLogsAtRestart). Here the store is left
  // alone while the limit holds, as a store on another disk would be.
  std::atomic<bool> store_untouched{false};
  auto settings = options();
  settings.skip_state_commit = [&store_untouched] { return store_untouched.load(); };
  auto core = std::make_unique<Core>(database_, settings);
  auto [messages, last] = sync(*core, shape("items"));
  ASSERT_EQ(shape_rows(messages).size(), 1u);
  const auto changes = dir_ / "shapes" / last.handle / "changes.log";
  execute_sql(database_, "UPDATE items SET price = 2 WHERE id = 1");
  last = expect_result(core->read(shape("items"), after(last, true)));
  {
    // The disk "fills up" 100 bytes into the next write.
    store_untouched = true;
    FileSizeLimit limit(std::filesystem::file_size(changes) + 100);
    // Where each insert's commit record starts at the earliest: the WAL
    // position read inside its transaction. A slot confirmed up to there has
    // not acknowledged it (PostgreSQL sends again a transaction whose commit
    // starts at or past confirmed_flush_lsn); the proxy may confirm that far
    // while idle (a keepalive sent before the commit record was decoded).
    // Not pg_current_wal_lsn(): the WAL write position, which lags commits
    // under the harness's synchronous_commit = off.
    std::vector<std::uint64_t> commits;
    for (int i = 0; i < 10; ++i) {
      commits.push_back(std::stoull(query_value(
          database_, "INSERT INTO items (id, title, price) VALUES (" + std::to_string(100 + i) +
                         ", repeat('x', 500), " + std::to_string(i) +
                         "); SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")));
    }
    // Live readers still get them (from memory)...
    std::set<std::string> seen;
    for (int poll = 0; poll < 20 && seen.size() < 10; ++poll) {
      last = expect_result(core->read(shape("items"), after(last, true)));
      for (auto& m : body(last)) {
        if (m["value"].is_object()) seen.insert(m["value"].value("id", ""));
      }
    }
    EXPECT_EQ(seen.size(), 10u);
    // The failure is visible (issue 16 item 15: /v1/status and /metrics).
    EXPECT_TRUE(eventually([&] { return core->registry().storage_state().failing; }));
    EXPECT_FALSE(core->registry().storage_state().error.empty());
    // ...but they are not acknowledged as durable, and nothing torn is left.
    std::this_thread::sleep_for(1500ms);
    EXPECT_LE(confirmed_lsn(database_), commits.front())
        << "transactions not on disk were acknowledged to the slot";
    auto good = storage::RecordFile::read_all(changes, [](const storage::Record&) {});
    ASSERT_TRUE(good);
    EXPECT_EQ(good.value(), std::filesystem::file_size(changes))
        << "a torn write was left in " << changes;
    limit.lift();
    store_untouched = false;
    // Space is back: written and acknowledged without any new transaction.
    EXPECT_TRUE(eventually([&] { return confirmed_lsn(database_) > commits.back(); }))
        << "the slot never advanced past the last insert after the disk recovered";
    EXPECT_TRUE(eventually([&] { return !core->registry().storage_state().failing; }));
  }
  core.reset();
  Core restarted(database_, options());
  EXPECT_EQ(restarted.loaded(), 1u);
  auto [reloaded, reloaded_last] = sync(restarted, shape("items"));
  EXPECT_EQ(reloaded_last.handle, last.handle);
  EXPECT_EQ(shape_rows(reloaded), table_rows(database_));
  EXPECT_EQ(shape_rows(reloaded).size(), 11u);
}

// The row store stops for good while the proxy runs (an I/O error RocksDB
// cannot resume from, here while a new shape's rows are flushed): the shape
// keeps serving its changes, the slot keeps advancing (its log is durable),
// status says to restart; after the restart the store has caught up from
// the log, and the shape is served right.
TEST_F(PersistentShapesTest, ARowStoreThatStopsIsCaughtUpFromTheLogsAtRestart) {
  using testing::FaultyFileSystem;
  execute_sql(database_,
              "INSERT INTO items (id, title, price) "
              "SELECT i, 'row ' || i, i FROM generate_series(1, 17000) i");
  auto file_system = std::make_shared<FaultyFileSystem>();
  auto settings = options();
  settings.state_store.file_system = file_system;
  ReadResult last;
  {
    Core core(database_, settings);
    // The store's files cannot be written from here on: the flush after
    // the new shape's 17,000 rows (a bulk load) fails.
    file_system->fail(FaultyFileSystem::Fault::kIoError);
    auto [messages, synced] = sync(core, shape("items"));
    ASSERT_EQ(shape_rows(messages).size(), 17000u);
    last = synced;
    file_system->fail(FaultyFileSystem::Fault::kNone);  // the disk recovers, RocksDB does not
    int round = 0;
    std::uint64_t inside_last = 0;
    auto changes_until_failing = [&] {
      ++round;
      inside_last = std::stoull(query_value(
          database_, "UPDATE items SET title = 'changed " + std::to_string(round) +
                         "' WHERE id <= 10; SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn"));
      return eventually([&] { return core.registry().storage_state().failing; }, 2s);
    };
    ASSERT_TRUE(eventually(changes_until_failing, 30s));
    execute_sql(database_, "DELETE FROM items WHERE id = 20");
    EXPECT_TRUE(eventually([&] {
      return core.registry().storage_state().error.find("until the proxy restarts") !=
             std::string::npos;
    })) << core.registry().storage_state().error;
    // Every change is served, and acknowledged.
    json served = messages;
    for (int poll = 0; poll < 50 && shape_rows(served) != table_rows(database_); ++poll) {
      last = expect_result(core.read(shape("items"), after(last, true)));
      for (auto& m : body(last)) served.push_back(m);
    }
    EXPECT_EQ(shape_rows(served), table_rows(database_));
    EXPECT_TRUE(eventually([&] { return confirmed_lsn(database_) > inside_last; }))
        << "the slot stopped with the row store";
  }
  Core restarted(database_, options());
  EXPECT_EQ(restarted.loaded(), 1u);
  auto [reloaded, reloaded_last] = sync(restarted, shape("items"));
  EXPECT_EQ(reloaded_last.handle, last.handle);
  EXPECT_EQ(shape_rows(reloaded), table_rows(database_));
  EXPECT_FALSE(restarted.registry().storage_state().failing);
  // The caught-up rows are the ones changes apply to: id 20 is gone, id 1
  // is held.
  execute_sql(database_, "UPDATE items SET price = 0 WHERE id IN (1, 20)");
  auto next = expect_result(restarted.read(shape("items"), after(reloaded_last, true)));
  auto operations = body(next);
  ASSERT_EQ(operations.size(), 2u) << operations.dump();  // the update, up-to-date
  EXPECT_EQ(operations[0]["headers"]["operation"], "update");
  EXPECT_EQ(operations[0]["value"]["id"], "1");
}

// Every row once: snapshot inserts minus deletes.
std::ptrdiff_t held_rows(const json& messages) {
  std::ptrdiff_t held = 0;
  for (auto& m : messages) {
    auto operation = m["headers"].value("operation", "");
    held += operation == "insert" ? 1 : operation == "delete" ? -1 : 0;
  }
  return held;
}

TEST_F(PersistentShapesTest, StoppingDuringALongCompactionIsPromptAndLosesNothing) {
  execute_sql(database_,
              "INSERT INTO items (id, title, price) "
              "SELECT i, 'row ' || i, i FROM generate_series(1, 3000) i");
  std::atomic<int> steps{0};
  auto settings = options();
  settings.compact_bytes = 64 * 1024;
  settings.chunk_bytes = 64 * 1024;
  // About 10 s of folding: far longer than a shutdown may take.
  settings.compaction_step = [&steps] {
    ++steps;
    std::this_thread::sleep_for(5ms);
  };
  auto core = std::make_unique<Core>(database_, settings);
  auto [messages, last] = sync(*core, shape("items"));
  ASSERT_EQ(shape_rows(messages).size(), 3000u);
  execute_sql(database_, "UPDATE items SET price = price + 1");
  for (int i = 0; i < 300 && steps == 0; ++i) std::this_thread::sleep_for(50ms);
  ASSERT_GT(steps, 0) << "no compaction started";
  auto started = std::chrono::steady_clock::now();
  core.reset();
  auto took = std::chrono::steady_clock::now() - started;
  EXPECT_LT(took, 3s) << "stopping waited for the compaction";
  EXPECT_LT(steps, 1000) << "the compaction ran to its end";

  execute_sql(database_, "UPDATE items SET title = 'after' WHERE id = 1");
  Core restarted(database_, options());
  EXPECT_EQ(restarted.loaded(), 1u);
  auto expected = table_rows(database_);
  ASSERT_EQ(expected["1"], "after:2");
  for (int i = 0; i < 100; ++i) {
    auto [fresh, fresh_last] = sync(restarted, shape("items"));
    if (shape_rows(fresh) == expected) break;
    std::this_thread::sleep_for(100ms);
  }
  auto [reloaded, reloaded_last] = sync(restarted, shape("items"));
  EXPECT_EQ(reloaded_last.handle, last.handle);
  EXPECT_EQ(held_rows(reloaded), static_cast<std::ptrdiff_t>(expected.size()))
      << "rows doubled or lost";
  EXPECT_EQ(shape_rows(reloaded), expected);
  for (const auto& entry : std::filesystem::directory_iterator(dir_ / "shapes" / last.handle)) {
    auto name = entry.path().filename().string();
    EXPECT_FALSE(name.starts_with("snapshot-")) << "half-written snapshot left: " << name;
  }
}

TEST_F(PersistentShapesTest, ACompactionThatThrowsIsLoggedNotRetriedAtOnceAndKeepsTheLog) {
  execute_sql(database_,
              "INSERT INTO items (id, title, price) "
              "SELECT i, 'row ' || i, i FROM generate_series(1, 1000) i");
  std::atomic<int> attempts{0};
  auto settings = options();
  settings.compact_bytes = 16 * 1024;
  // Each attempt throws at its first message (as a JSON type error would).
  settings.compaction_step = [&attempts] {
    ++attempts;
    throw std::runtime_error("type_error: value is a number, not a string");
  };
  Core core(database_, settings);
  auto [messages, last] = sync(core, shape("items"));
  ASSERT_EQ(shape_rows(messages).size(), 1000u);
  for (int round = 0; round < 5; ++round) {
    execute_sql(database_, "UPDATE items SET price = price + 1");
    for (int i = 0; i < 100 && attempts == 0; ++i) std::this_thread::sleep_for(50ms);
  }
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(attempts, 1) << "a failing compaction must back off, not retry at once";
  // Still serving, from the uncompacted log, to old and new readers.
  auto live = expect_result(core.read(shape("items"), after(last)));
  EXPECT_FALSE(body(live).empty());
  auto [fresh, fresh_last] = sync(core, shape("items"));
  EXPECT_EQ(fresh_last.handle, last.handle);
  EXPECT_EQ(shape_rows(fresh), table_rows(database_));
}

TEST_F(PersistentShapesTest, AMalformedLoggedMessageCrashesNeitherTheLoadNorTheCompaction) {
  execute_sql(database_,
              "INSERT INTO items (id, title, price) "
              "SELECT i, 'row ' || i, i FROM generate_series(1, 1000) i");
  std::string handle;
  {
    Core core(database_, options());
    handle = sync(core, shape("items")).second.handle;
  }
  // A logged message whose key is a number (a JSON type error when read as
  // a string), past every operation in the log.
  const auto dir = dir_ / "shapes" / handle;
  {
    auto opened = storage::ShapeFiles::open(dir);
    ASSERT_TRUE(opened) << opened.error().to_string();
    auto tx = lsn_number(database_, "SELECT pg_current_wal_lsn()");
    std::string message = R"({"key":17,"value":{"id":"1"},"headers":{"operation":"update",)"
                          R"("relation":["public","items"],"lsn":")" +
                          std::to_string(tx) + R"(","op_position":0,"txids":[1],"last":true}})";
    opened.value().first->append_transaction({{tx, 0, message}});
    ASSERT_TRUE(opened.value().first->sync());
  }
  std::atomic<int> steps{0};
  auto settings = options();
  settings.compact_bytes = 16 * 1024;
  settings.compaction_step = [&steps] { ++steps; };
  Core core(database_, settings);
  EXPECT_EQ(core.loaded(), 1u);
  execute_sql(database_, "UPDATE items SET price = price + 1");
  for (int i = 0; i < 100 && steps == 0; ++i) std::this_thread::sleep_for(50ms);
  ASSERT_GT(steps, 0) << "no compaction started";
  // The compaction renders the shape's rows from the state store, where the
  // message that is none changed nothing (it was skipped when the log's
  // tail was replayed at load): nothing is dropped or invented.
  bool compacted = false;
  for (int i = 0; i < 200 && !compacted; ++i) {
    std::ifstream meta(dir / "meta.json");
    compacted = json::parse(meta, nullptr, false).contains("compacted_at");
    if (!compacted) std::this_thread::sleep_for(50ms);
  }
  EXPECT_TRUE(compacted);
  auto [fresh, fresh_last] = sync(core, shape("items"));
  EXPECT_EQ(fresh_last.handle, handle);
  EXPECT_EQ(shape_rows(fresh), table_rows(database_));
}

TEST_F(PersistentShapesTest, TransactionsKeepFlowingDuringACompactionAndNoneIsLostOrDoubled) {
  execute_sql(database_,
              "INSERT INTO items (id, title, price) "
              "SELECT i, 'row ' || i, i FROM generate_series(1, 10000) i");
  // The compaction worker stops once its snapshot is built until released:
  // whatever the strand does meanwhile happens during the compaction.
  std::promise<void> release;
  auto released = release.get_future().share();
  std::unique_ptr<Core> owned;  // destroyed after the release below
  std::atomic<int> built{0};
  struct Release {
    std::promise<void>& promise;
    bool done = false;
    void operator()() {
      if (!std::exchange(done, true)) promise.set_value();
    }
    ~Release() { (*this)(); }
  } release_guard{release};
  auto settings = options();
  settings.compact_bytes = 64 * 1024;
  settings.chunk_bytes = 64 * 1024;
  settings.compaction_built = [released, &built] {
    ++built;
    released.wait_for(60s);
  };
  owned = std::make_unique<Core>(database_, settings);
  Core& core = *owned;
  auto [messages, early] = sync(core, shape("items"));
  ASSERT_EQ(shape_rows(messages).size(), 10000u);
  execute_sql(database_, "UPDATE items SET price = price + 1 WHERE id <= 2000");
  for (int i = 0; i < 300 && built == 0; ++i) std::this_thread::sleep_for(100ms);
  ASSERT_EQ(built, 1) << "no compaction started";

  // Mid-compaction: live readers get new transactions at once.
  auto live = sync(core, shape("items")).second;
  for (int i = 0; i < 5; ++i) {
    execute_sql(database_,
                "BEGIN; UPDATE items SET title = 'during " + std::to_string(i) +
                    "' WHERE id = 1; DELETE FROM items WHERE id = " + std::to_string(100 + i) +
                    "; INSERT INTO items (id, title, price) "
                    "VALUES (" +
                    std::to_string(30000 + i) + ", 'new', 7); COMMIT");
    bool seen = false;
    for (int poll = 0; poll < 3 && !seen; ++poll) {
      live = expect_result(core.read(shape("items"), after(live, true)));
      for (auto& m : body(live)) {
        if (m["value"].is_object() && m["value"].value("id", "") == std::to_string(30000 + i)) {
          seen = true;
        }
      }
    }
    ASSERT_TRUE(seen) << "transaction " << i << " not applied while compacting";
  }
  EXPECT_TRUE(std::holds_alternative<ReadResult>(core.read(shape("items"), after(early))))
      << "readers must not be cut before the compaction is in";
  release_guard();

  // Once swapped in: only readers behind the compaction point refetch.
  bool refetch = false;
  for (int i = 0; i < 300 && !refetch; ++i) {
    refetch = std::holds_alternative<MustRefetch>(core.read(shape("items"), after(early)));
    if (!refetch) std::this_thread::sleep_for(100ms);
  }
  EXPECT_TRUE(refetch) << "the compaction never finished";
  EXPECT_TRUE(std::holds_alternative<ReadResult>(core.read(shape("items"), after(live))));
  auto expected = table_rows(database_);
  ASSERT_EQ(expected.size(), 10000u);
  ASSERT_EQ(expected["1"], "during 4:2");
  auto [fresh, fresh_last] = sync(core, shape("items"));
  // Every row once: the compacted snapshot plus the operations logged after it.
  std::ptrdiff_t held = 0;
  for (auto& m : fresh) {
    auto operation = m["headers"].value("operation", "");
    held += operation == "insert" ? 1 : operation == "delete" ? -1 : 0;
  }
  EXPECT_EQ(held, static_cast<std::ptrdiff_t>(expected.size())) << "rows doubled or lost";
  EXPECT_EQ(shape_rows(fresh), expected);
  // The compacted files, and what was appended during the compaction, come back.
  owned.reset();
  Core restarted(database_, options());
  EXPECT_EQ(restarted.loaded(), 1u);
  auto [reloaded, reloaded_last] = sync(restarted, shape("items"));
  EXPECT_EQ(reloaded_last.handle, fresh_last.handle);
  EXPECT_EQ(shape_rows(reloaded), expected);
}

namespace state_crash {

// The shape's state id, from its meta.json.
std::uint64_t state_id(const std::filesystem::path& shape_dir) {
  auto opened = storage::ShapeFiles::open(shape_dir);
  EXPECT_TRUE(opened) << opened.error().to_string();
  return opened ? opened.value().second.meta.value("state_id", std::uint64_t{0}) : 0;
}

// Operations of the live reads after `from` until one carries `id` (or 50 reads).
json operations_until(Core& core, const ShapeDefinitionRequest& definition, ReadResult& from,
                      const std::string& id) {
  json seen = json::array();
  for (int i = 0; i < 50; ++i) {
    from = expect_result(core.read(definition, after(from, true)));
    bool found = false;
    for (auto& m : body(from)) {
      if (!m["headers"].contains("operation")) continue;
      seen.push_back(m);
      found = found || m["value"].value("id", "") == id;
    }
    if (found) break;
  }
  return seen;
}

}  // namespace state_crash

// A crash after the log's fdatasync, before the rows reach the state store:
// the store's marker lags the log, and the restart replays the log's tail
// into the store, so the shape's next operations are right.
TEST_F(PersistentShapesTest, RowsNotStoredBeforeACrashAreReplayedFromTheLogTail) {
  using namespace state_crash;
  execute_sql(database_, "INSERT INTO items (id, title, price) VALUES (1, 'a', 5), (2, 'b', 50)");
  auto definition = shape("items", "price > 10");
  ReadResult last;
  {
    std::atomic<bool> skip{false};
    auto settings = options();
    settings.skip_state_commit = [&skip] { return skip.load(); };
    Core core(database_, settings);
    last = sync(core, definition).second;
    skip = true;  // from here on, the store never hears of a change
    execute_sql(database_, "INSERT INTO items (id, title, price) VALUES (3, 'c', 30)");
    execute_sql(database_, "UPDATE items SET price = 20 WHERE id = 1");  // moves in
    execute_sql(database_, "DELETE FROM items WHERE id = 2");
    auto seen = operations_until(core, definition, last, "2");
    ASSERT_EQ(seen.size(), 3u) << seen.dump();
  }
  const auto shape_dir = dir_ / "shapes" / last.handle;
  const auto id = state_id(shape_dir);
  ASSERT_GT(id, 0u);
  {
    auto store = StateStore::open(dir_ / "shapes" / "state", StateStoreOptions{});
    ASSERT_TRUE(store) << store.error().to_string();
    auto marker = store.value()->marker(id);
    ASSERT_TRUE(marker && marker.value());
    EXPECT_EQ(marker.value()->through, LogOffset::start()) << "the test's store is not behind";
    EXPECT_FALSE(store.value()->get(StateStore::row_key(id, "\"public\".\"items\"/\"3\"")).value());
  }
  Core core(database_, options());
  EXPECT_EQ(core.loaded(), 1u);
  // Each of these needs a row that only the log's tail holds: 3 moves out
  // (a delete), 1 is updated (an update, not an insert), 2 stays away.
  execute_sql(database_, "UPDATE items SET price = 1 WHERE id = 3");
  execute_sql(database_, "UPDATE items SET title = 'a2' WHERE id = 1");
  execute_sql(database_, "INSERT INTO items (id, title, price) VALUES (4, 'd', 40)");
  auto seen = operations_until(core, definition, last, "4");
  ASSERT_EQ(seen.size(), 3u) << seen.dump();
  EXPECT_EQ(seen[0]["headers"]["operation"], "delete");
  EXPECT_EQ(seen[0]["value"]["id"], "3");
  EXPECT_EQ(seen[1]["headers"]["operation"], "update");
  EXPECT_EQ(seen[1]["value"]["title"], "a2");
  EXPECT_EQ(seen[2]["headers"]["operation"], "insert");
  EXPECT_EQ(last.handle, sync(core, definition).second.handle);
  std::map<std::string, std::string> expected{{"1", "a2:20"}, {"4", "d:40"}};
  EXPECT_EQ(shape_rows(sync(core, definition).first), expected);
}

// The other order: the store holds rows the log lost (its tail cut after a
// clean stop, as a lost page cache would). Detected at load (the marker is
// past the log's end), the shape's rows are rebuilt from its log.
TEST_F(PersistentShapesTest, AStoreAheadOfItsLogIsRebuiltFromTheLog) {
  using namespace state_crash;
  execute_sql(database_, "INSERT INTO items (id, title, price) VALUES (1, 'a', 50)");
  auto definition = shape("items", "price > 10");
  ReadResult before_tail;
  {
    Core core(database_, options());
    auto last = sync(core, definition).second;
    execute_sql(database_, "INSERT INTO items (id, title, price) VALUES (2, 'b', 20)");
    operations_until(core, definition, last, "2");
    before_tail = last;
    // The WAL position inside the transaction, at or before its commit
    // record: confirmed past it means the transaction was acknowledged.
    auto in_transaction =
        std::stoull(query_value(database_,
                                "INSERT INTO items (id, title, price) VALUES (3, 'c', 30); "
                                "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn"));
    operations_until(core, definition, last, "3");
    // Acknowledged: the transaction's rows are in the store.
    ASSERT_TRUE(eventually([&] { return confirmed_lsn(database_) > in_transaction; }));
  }
  // The last transaction (row 3) leaves the log: its record is torn.
  const auto changes = dir_ / "shapes" / before_tail.handle / "changes.log";
  std::filesystem::resize_file(changes, std::filesystem::file_size(changes) - 3);
  Core core(database_, options());
  EXPECT_EQ(core.loaded(), 1u);
  // Rows as the log has them: 1 and 2; 3 is unknown to the shape, so its
  // move out of the where clause is no operation, and 2's change an update.
  execute_sql(database_, "UPDATE items SET price = 1 WHERE id = 3");
  execute_sql(database_, "UPDATE items SET price = 21 WHERE id = 2");
  ReadResult last = before_tail;
  auto seen = operations_until(core, definition, last, "2");
  ASSERT_FALSE(seen.empty());
  for (auto& m : seen) {
    if (m["value"].value("id", "") == "3") ADD_FAILURE() << "row 3 came back: " << m.dump();
  }
  EXPECT_EQ(seen.back()["headers"]["operation"], "update") << seen.dump();
  EXPECT_EQ(shape_rows(sync(core, definition).first),
            (std::map<std::string, std::string>{{"1", "a:50"}, {"2", "b:21"}}));
}

// --- Issue 16: hostile definitions and offsets ------------------------------

InvalidRequest expect_invalid(const ReadOutcome& outcome, const std::string& field,
                              int line = __builtin_LINE()) {
  SCOPED_TRACE(line);
  auto* invalid = std::get_if<InvalidRequest>(&outcome);
  if (!invalid) {
    ADD_FAILURE() << "not a 400 (outcome " << outcome.index() << ")";
    return {};
  }
  EXPECT_EQ(invalid->field, field) << invalid->message;
  return *invalid;
}

Result<DeleteOutcome> remove(Core& core, ShapeDefinitionRequest definition,
                             std::optional<std::string> handle) {
  std::promise<Result<DeleteOutcome>> promise;
  auto future = promise.get_future();
  core.registry().remove(std::move(definition), std::move(handle),
                         [&](Result<DeleteOutcome> outcome) { promise.set_value(outcome); });
  if (future.wait_for(30s) != std::future_status::ready) {
    ADD_FAILURE() << "delete did not complete";
    return Error{"timeout", "delete did not complete", ""};
  }
  return future.get();
}

// Item 1: a partitioned parent would never change (its rows' changes are
// published under the partitions' names); item 13: without a primary key
// duplicate rows collapse into one key. Both are refused with the reason,
// while a leaf partition (it has a key) is served.
TEST_F(ShapeRegistryTest, PartitionedParentsAndKeylessTablesAreRefused) {
  execute_sql(database_,
              "CREATE TABLE parted (id int, region text, PRIMARY KEY (id, region)) "
              "PARTITION BY LIST (region); "
              "CREATE TABLE parted_eu PARTITION OF parted FOR VALUES IN ('eu'); "
              "INSERT INTO parted VALUES (1, 'eu'); "
              "CREATE TABLE nokey (a int); INSERT INTO nokey VALUES (1), (1)");
  Core core(database_);
  auto parted = expect_invalid(core.read(shape("parted"), from_start()), "table");
  EXPECT_NE(parted.message.find("partitioned"), std::string::npos) << parted.message;
  auto nokey = expect_invalid(core.read(shape("nokey"), from_start()), "table");
  EXPECT_NE(nokey.message.find("no primary key"), std::string::npos) << nokey.message;
  auto [messages, last] = sync(core, shape("parted_eu"));
  EXPECT_EQ(messages.size(), 2u);  // the row + up-to-date
  execute_sql(database_, "INSERT INTO parted VALUES (2, 'eu')");
  auto live = expect_result(core.read(shape("parted_eu"), after(last, true)));
  EXPECT_EQ(body(live)[0]["value"]["id"], "2");
}

// Degraded mode whose direct queries pass half their rows as they "arrive",
// then hold the rest back until release(). Calls that only want the whole
// result get it at once.
class HeldBackRows {
 public:
  explicit HeldBackRows(Core& core)
      : strand_(core.strand()),
        gate_(
            std::make_shared<asio::steady_timer>(strand_, asio::steady_timer::time_point::max())) {
    core.enter_fallback_from(
        [pool = core.pool(), gate = gate_, observed = observed_](
            const ShapeDefinition& definition,
            RowsObserver on_rows) -> asio::awaitable<Result<std::shared_ptr<const SnapshotRows>>> {
          auto lease = co_await pool->acquire();
          if (!lease) co_return lease.error();
          auto rows = co_await query_snapshot(**lease, definition);
          if (!rows) co_return rows.error();
          if (on_rows) {
            observed->store(true);
            std::span<const Row> all(rows->rows);
            on_rows.rows(all.first(all.size() / 2));
            co_await gate->async_wait(asio::as_tuple(asio::use_awaitable));
            on_rows.rows(all.subspan(all.size() / 2));
            on_rows.end(rows->snapshot);
          }
          co_return std::make_shared<const SnapshotRows>(std::move(rows).value());
        });
  }
  // Whether a query passed its rows as they arrived.
  bool observed() const { return observed_->load(); }
  // The rows held back go on.
  void release() {
    asio::post(strand_, [gate = gate_] { gate->cancel(); });
  }

 private:
  asio::any_io_executor strand_;
  std::shared_ptr<asio::steady_timer> gate_;  // on the registry's strand
  std::shared_ptr<std::atomic<bool>> observed_ = std::make_shared<std::atomic<bool>>(false);
};

// A read of a shape's first chunk that may be answered with its stream.
ReadRequest first_chunk_as_made() {
  ReadRequest request = from_start();
  request.may_stream = true;
  return request;
}

// rfc/0005: in degraded mode a new shape's first chunk is answered while its
// query's rows still arrive (here the query holds its second half until the
// test lets it go), with the bytes the shape then keeps as that chunk; the
// rest of the snapshot follows as usual.
TEST_F(ShapeRegistryTest, FallbackStreamsANewShapesFirstChunkWhileItsRowsArrive) {
  execute_sql(database_,
              "INSERT INTO items (id, title) SELECT i, repeat('t', 40) || ' \"/\\ ' || i "
              "FROM generate_series(1, 400) AS i");
  Core core(database_);
  HeldBackRows held(core);
  auto definition = shape("items");
  ReadResult streamed = expect_result(core.read(definition, first_chunk_as_made()));
  ASSERT_TRUE(held.observed());
  ASSERT_TRUE(streamed.streaming) << "answered only once the query was over";
  EXPECT_FALSE(streamed.body);
  EXPECT_EQ(streamed.offset, LogOffset::snapshot_chunk(0));
  EXPECT_FALSE(streamed.up_to_date);
  EXPECT_TRUE(streamed.fallback);
  std::string bytes;
  std::promise<bool> ended;
  auto unsubscribe = streamed.streaming->subscribe(
      {[&](std::shared_ptr<const std::string> piece) { bytes += *piece; },
       [&](bool complete) { ended.set_value(complete); }});
  // The first chunk (4 KB) is complete although half the rows are not in.
  ASSERT_EQ(ended.get_future().wait_for(10s), std::future_status::ready);
  held.release();
  // The same bytes as the chunk the shape keeps, read the usual way.
  ReadResult first = expect_result(core.read(definition, from_start()));
  EXPECT_FALSE(first.streaming);
  EXPECT_EQ(first.handle, streamed.handle);
  EXPECT_EQ(first.offset, streamed.offset);
  EXPECT_EQ(text(first), bytes);
  auto [messages, last] = sync(core, definition);
  EXPECT_EQ(last.handle, streamed.handle);
  std::set<std::string> ids;
  for (const auto& m : messages) {
    if (m["headers"].contains("operation")) ids.insert(m["value"]["id"].get<std::string>());
  }
  EXPECT_EQ(ids.size(), 400u);
  unsubscribe();
}

// Item 10: an error the request causes against the table's data is
// permanent: 400 naming the where clause, not 503 with the database's text.
TEST_F(ShapeRegistryTest, PermanentQueryErrorsAre400) {
  execute_sql(database_, "INSERT INTO items (id, title) VALUES (1, 'a')");
  Core core(database_);
  auto division = expect_invalid(core.read(shape("items", "id / 0 = 1"), from_start()), "where");
  EXPECT_NE(division.message.find("division by zero"), std::string::npos) << division.message;
  auto overflow = core.read(shape("items", "id + 2147483647 > 0"), from_start());
  EXPECT_NE(expect_invalid(overflow, "where").message.find("out of range"), std::string::npos);
  // Served from direct queries (fallback) the same.
  core.enter_fallback();
  expect_invalid(core.read(shape("items", "id / 0 = 2"), from_start()), "where");
}

// rfc/0005: a shape removed while its first chunk streams cuts the stream
// (its reader sees a cut body, never a whole one) and leaves no directory.
TEST_F(PersistentShapesTest, AShapeRemovedWhileItStreamsCutsItsReaders) {
  execute_sql(database_,
              "INSERT INTO items (id, title) SELECT i, repeat('t', 100) "
              "FROM generate_series(1, 4000) AS i");
  // The first chunk holds every row (~0.9 MB): it stays open while the rows
  // are held back, its first piece (256 KB) out.
  auto settings = options();
  settings.chunk_bytes = 1 << 20;
  Core core(database_, settings);
  HeldBackRows held(core);
  auto definition = shape("items");
  ReadResult streamed = expect_result(core.read(definition, first_chunk_as_made()));
  ASSERT_TRUE(streamed.streaming);
  std::promise<bool> ended;
  auto unsubscribe =
      streamed.streaming->subscribe({[](std::shared_ptr<const std::string>) {},
                                     [&](bool complete) { ended.set_value(complete); }});
  auto future = ended.get_future();
  EXPECT_TRUE(
      eventually([&] { return std::filesystem::exists(dir_ / "shapes" / streamed.handle); }));
  EXPECT_EQ(future.wait_for(0s), std::future_status::timeout) << "ended with rows held back";
  std::promise<Result<DeleteOutcome>> removed;
  core.registry().remove(definition, streamed.handle,
                         [&](Result<DeleteOutcome> outcome) { removed.set_value(outcome); });
  auto outcome = removed.get_future().get();
  ASSERT_TRUE(outcome && outcome.value().deleted);
  ASSERT_EQ(future.wait_for(10s), std::future_status::ready);
  EXPECT_FALSE(future.get()) << "a cut body was ended as a whole one";
  held.release();
  EXPECT_TRUE(
      eventually([&] { return !std::filesystem::exists(dir_ / "shapes" / streamed.handle); }));
  EXPECT_TRUE(std::holds_alternative<MustRefetch>(core.read(definition, after(streamed))));
  unsubscribe();
}

// Item 4: an exception inside the snapshot coroutine (here: a parameter
// that is not UTF-8 cannot be written into meta.json) fails the read
// instead of wedging it and every later read of the shape.
TEST_F(PersistentShapesTest, AnExceptionInASnapshotFailsItsReads) {
  Core core(database_, options());
  auto definition = shape("items", "title = $1");
  definition.params[1] = "\xc3\x28";
  auto started = std::chrono::steady_clock::now();
  auto outcome = core.read(definition, from_start());
  EXPECT_TRUE(std::holds_alternative<Unavailable>(outcome) ||
              std::holds_alternative<InvalidRequest>(outcome));
  EXPECT_LT(std::chrono::steady_clock::now() - started, 10s);
  auto again = core.read(definition, from_start());
  EXPECT_FALSE(std::holds_alternative<ReadResult>(again));
  sync(core, shape("items"));  // the registry still serves
}

// Item 11: a DELETE names one shape: a handle of another definition is
// refused (and that shape stays), an invalid where is a 400, not a 202.
TEST_F(ShapeRegistryTest, DeleteChecksTheHandleAgainstTheDefinition) {
  execute_sql(database_, "INSERT INTO items (id, title) VALUES (1, 'a'), (2, 'b')");
  Core core(database_);
  auto [one, one_last] = sync(core, shape("items", "id = 1"));
  auto [two, two_last] = sync(core, shape("items", "id = 2"));
  auto mismatch = remove(core, shape("items", "id = 1"), two_last.handle);
  ASSERT_TRUE(mismatch);
  EXPECT_FALSE(mismatch.value().deleted);
  ASSERT_TRUE(mismatch.value().invalid);
  EXPECT_EQ(mismatch.value().invalid->field, "handle");
  expect_result(core.read(shape("items", "id = 2"), after(two_last)));  // still there
  auto bad_where = remove(core, shape("items", "pg_sleep(1) IS NULL"), std::nullopt);
  ASSERT_TRUE(bad_where);
  ASSERT_TRUE(bad_where.value().invalid);
  EXPECT_EQ(bad_where.value().invalid->field, "where");
  auto matching = remove(core, shape("items", "id = 1"), one_last.handle);
  ASSERT_TRUE(matching);
  EXPECT_TRUE(matching.value().deleted);
  EXPECT_TRUE(
      std::holds_alternative<MustRefetch>(core.read(shape("items", "id = 1"), after(one_last))));
}

// Item 12: an offset past everything the proxy has seen is a 400, not a
// live read parked where it misses what others receive (a live read waits
// half the live timeout first, for a stream catching up after a restart:
// LiveParkingTest).
TEST_F(ShapeRegistryTest, OffsetsPastTheEndAre400) {
  Core core(database_);
  auto [messages, last] = sync(core, shape("items"));
  execute_sql(database_, "INSERT INTO items (id, title) VALUES (1, 'a')");
  last = expect_result(core.read(shape("items"), after(last, true)));  // the stream has a position
  auto far = after(last, true);
  far.offset = LogOffset::at(1'000'000'000'000'000, 0);
  expect_invalid(core.read(shape("items"), far), "offset");
  // What the proxy handed out stays valid.
  execute_sql(database_, "INSERT INTO items (id, title) VALUES (2, 'b')");
  auto next = expect_result(core.read(shape("items"), after(last, true)));
  EXPECT_EQ(body(next)[0]["value"]["id"], "2");
}

// A client's offset from before a crash lies past what the restarted
// proxy's stream has replayed so far: its live read waits for the stream
// and gets what follows, instead of a 400 that stops the stock client.
// Stood in for by an offset at the WAL's insert position (past every
// commit the stream can have seen; the next commit lies past it).
TEST_F(ShapeRegistryTest, ALiveReadJustPastWhatTheStreamHasSeenWaitsForIt) {
  Core core(database_);
  auto [messages, last] = sync(core, shape("items"));
  execute_sql(database_, "INSERT INTO items (id, title) VALUES (1, 'a')");
  last = expect_result(core.read(shape("items"), after(last, true)));  // the stream has a position
  auto ahead = after(last, true);
  ahead.offset = LogOffset::at(lsn_number(database_, "SELECT pg_current_wal_insert_lsn()"), 0);
  std::thread writer([&] {
    // Once the read is parked (before the fix it was answered 400 at once).
    eventually([&] { return core.registry().parked_reads() == 1; });
    execute_sql(database_, "INSERT INTO items (id, title) VALUES (2, 'b')");
  });
  auto got = core.read(shape("items"), ahead);
  writer.join();
  auto next = expect_result(got);
  ASSERT_FALSE(body(next).empty());
  EXPECT_EQ(body(next)[0]["value"]["id"], "2");
}

// Backends of `database` waiting for a lock: initial queries of a locked table.
int lock_waiters(const std::string& database) {
  return std::stoi(query_value(database,
                               "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                               "current_database() AND wait_event_type = 'Lock'"));
}

// Item 2. A transaction holding a table's lock stands in for costly where
// clauses: every initial query of that table blocks. The table gets its
// fair share of the pool (one of two connections here), so another table's
// shape is served meanwhile; the offending shapes are answered 400 once the
// snapshot timeout cancels them.
TEST_F(ShapeRegistryTest, CostlyInitialQueriesOfOneTableLeaveThePoolToOthers) {
  execute_sql(database_,
              "CREATE TABLE slow (id int PRIMARY KEY); INSERT INTO slow VALUES (1), (2); "
              "INSERT INTO items (id, title) VALUES (1, 'a')");
  auto options = Core::small_options();
  options.snapshot_timeout = 3s;
  Core core(database_, options);
  sync(core, shape("slow", "id = 1"));  // slow is in the publication
  auto locker = pg::Connection::open(conninfo(database_));
  ASSERT_TRUE(locker) << locker.error().to_string();
  ASSERT_TRUE(locker->exec("BEGIN; LOCK TABLE slow IN ACCESS EXCLUSIVE MODE"));
  auto costly = [&](int id) {
    return std::async(std::launch::async, [&core, id] {
      return core.read(shape("slow", "id = " + std::to_string(id)), from_start());
    });
  };
  auto first = costly(2);
  auto second = costly(3);
  ASSERT_TRUE(eventually([&] { return lock_waiters(database_) >= 1; }));
  auto other =
      std::async(std::launch::async, [&] { return core.read(shape("items"), from_start()); });
  bool served = other.wait_for(2500ms) == std::future_status::ready;
  EXPECT_TRUE(served) << "a shape of another table waited for the costly ones";
  EXPECT_LE(lock_waiters(database_), 1) << "one table held more than its share";
  if (!served) (void)locker->exec("ROLLBACK");  // old behaviour: let everything finish
  if (served) expect_result(other.get());
  auto timed_out = expect_invalid(first.get(), "where");
  EXPECT_NE(timed_out.message.find("took longer than 3000 ms"), std::string::npos)
      << timed_out.message;
  expect_invalid(second.get(), "where");  // queued behind the first, then cancelled too
  if (served) (void)locker->exec("ROLLBACK");
}

// Item 2: when every reader of a shape still snapshotting goes away, its
// initial query is cancelled (PQcancel) instead of holding the connection.
TEST_F(ShapeRegistryTest, InitialQueryIsCancelledWhenNobodyWaits) {
  execute_sql(database_, "CREATE TABLE slow (id int PRIMARY KEY); INSERT INTO slow VALUES (1)");
  auto options = Core::small_options();
  options.snapshot_timeout = 0s;  // only the cancellation can end it
  Core core(database_, options);
  sync(core, shape("slow", "id = 1"));
  auto locker = pg::Connection::open(conninfo(database_));
  ASSERT_TRUE(locker) << locker.error().to_string();
  ASSERT_TRUE(locker->exec("BEGIN; LOCK TABLE slow IN ACCESS EXCLUSIVE MODE"));
  std::vector<std::function<void()>> cancels;
  for (int id : {2, 3})
    cancels.push_back(core.registry().read(shape("slow", "id = " + std::to_string(id)),
                                           from_start(), [](ReadOutcome) {}));
  ASSERT_TRUE(eventually([&] { return lock_waiters(database_) >= 1; }));
  for (auto& cancel : cancels) cancel();
  EXPECT_TRUE(eventually([&] { return lock_waiters(database_) == 0; }, 5s))
      << "the initial queries still run with nobody waiting";
  (void)locker->exec("ROLLBACK");
  // The cancelled shapes go once their queries end; until then a read of
  // one waits on it and gets its failure (503, retry), as a client would.
  ASSERT_TRUE(eventually([&] { return core.registry().shapes_snapshotting() == 0; }));
  sync(core, shape("slow", "id = 2"));  // asked again later: served
}

// --max-shapes (issue 16, item 8): a new shape past the limit evicts the
// least recently read shape nobody waits on; its clients refetch.
TEST_F(ShapeRegistryTest, PastMaxShapesTheLeastRecentlyReadIdleShapeIsEvicted) {
  execute_sql(database_, "INSERT INTO items (id, title) VALUES (1, 'a'), (2, 'b')");
  auto settings = Core::small_options();
  settings.max_shapes = 2;
  Core core(database_, settings);
  auto first = sync(core, shape("items", "id = 1")).second;
  auto second = sync(core, shape("items", "id = 2")).second;
  // The first is read again: the second is now the least recently read.
  expect_result(core.read(shape("items", "id = 1"), after(first)));
  auto [messages, third] = sync(core, shape("items", "id > 0"));
  EXPECT_TRUE(third.up_to_date);
  EXPECT_EQ(messages.size(), 3u);  // both rows, up-to-date
  expect_result(core.read(shape("items", "id = 1"), after(first)));
  EXPECT_EQ(core.registry().shapes_held(), 2u);
  // (Last: the refetch answer makes the shape again, evicting another.)
  EXPECT_TRUE(
      std::holds_alternative<MustRefetch>(core.read(shape("items", "id = 2"), after(second))));
}

// Full, and every shape has a parked reader: a new shape is refused with a
// clear 503 + retry-after; the shapes being read are not disturbed.
TEST_F(ShapeRegistryTest, AFullRegistryWhoseShapesAreAllBeingReadRefusesANewShape) {
  execute_sql(database_, "INSERT INTO items (id, title) VALUES (1, 'a')");
  auto settings = Core::small_options();
  settings.max_shapes = 1;
  settings.live_timeout = 20s;
  Core core(database_, settings);
  auto [messages, synced] = sync(core, shape("items"));
  auto parked = std::async(std::launch::async,
                           [&] { return core.read(shape("items"), after(synced, true)); });
  ASSERT_TRUE(core.parked(1));
  auto refused = core.read(shape("items", "id = 1"), from_start());
  ASSERT_TRUE(std::holds_alternative<Unavailable>(refused));
  const auto& unavailable = std::get<Unavailable>(refused);
  EXPECT_NE(unavailable.message.find("too_many_shapes"), std::string::npos) << unavailable.message;
  EXPECT_GT(unavailable.retry_after.count(), 0);
  execute_sql(database_, "INSERT INTO items (id, title) VALUES (2, 'b')");
  auto woken = expect_result(parked.get());
  EXPECT_NE(text(woken).find("\"insert\""), std::string::npos);
}

// A shape whose files cannot be created (at the open-files limit: its
// directory is made, meta.json cannot be opened) leaves no directory
// behind, and the next read creates it normally.
TEST_F(PersistentShapesTest, AShapeWhoseFilesCannotBeCreatedLeavesNoDirectory) {
  execute_sql(database_, "INSERT INTO items (id, title) VALUES (1, 'a')");
  Core core(database_, options());
  // The table is known and the pool connected before the limit.
  const auto primed = sync(core, shape("items", "id = 1")).second.handle;
  {
    OpenFilesLimit limit;
    EXPECT_TRUE(std::holds_alternative<Unavailable>(core.read(shape("items"), from_start())));
  }
  std::vector<std::string> left;
  for (const auto& entry : std::filesystem::directory_iterator(dir_ / "shapes")) {
    const auto name = entry.path().filename().string();
    // Dot directories (quarantine), the state store and the shape read
    // before are not the failed shape's.
    if (!name.starts_with(".") && name != "state" && name != primed) {
      left.push_back(entry.path().string());
    }
  }
  EXPECT_TRUE(left.empty()) << "orphan: " << left.front();
  auto [messages, last] = sync(core, shape("items"));
  EXPECT_TRUE(last.up_to_date);
  EXPECT_EQ(messages.size(), 2u);
}

}  // namespace
}  // namespace shapeproxy::shapes
