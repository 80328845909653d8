// A new shape served by a fallback query against a real PostgreSQL: its body
// is byte for byte the body the live path (the registry's own snapshot query)
// serves for the same table, over every common type with NULLs, unicode,
// quotes, backslashes, control characters, json/jsonb, arrays, numeric,
// timestamps and a composite key holding '/' and '"', split over several
// chunks. In fallback the snapshot reaches the disk after it is served: once
// meta.json names it, a registry loading the data dir serves the same bytes
// under the same handle.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

#include "fallback/fallback_query.h"
#include "shapes/shape_registry.h"
#include "support/postgres_test_environment.h"

namespace shapeproxy::fallback {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using shapes::ReadOutcome;
using shapes::ReadRequest;
using shapes::ReadResult;
using shapes::ShapeDefinitionRequest;
using testing::conninfo;
using testing::execute_sql;

constexpr std::size_t kChunkBytes = 16 * 1024;  // the table spans several chunks

// A registry on a strand of a running io_context, persisting under
// `shapes_dir`; with `fallback`, its shapes come from a FallbackQuery and it
// serves in degraded mode from the start. No replication stream.
class Registry {
 public:
  Registry(const std::string& database, const std::filesystem::path& shapes_dir, bool fallback) {
    auto strand = asio::make_strand(io_);
    strand_ = strand;
    auto pool = std::make_shared<pg::ConnectionPool>(strand, conninfo(database), 2);
    shapes::ShapeRegistryOptions options;
    options.shapes_dir = shapes_dir;
    options.chunk_bytes = kChunkBytes;
    options.fallback_poll_interval = 60s;  // no refresh during the test
    shapes::ShapeRegistryHooks hooks;
    if (fallback) {
      FallbackQueryOptions fallback_options;
      auto fallback_strand = asio::make_strand(io_);
      query_ = std::make_shared<FallbackQuery>(
          fallback_strand,
          FallbackQuery::make_pool(fallback_strand, conninfo(database), fallback_options),
          fallback_options);
      hooks.fallback_rows = registry_source(query_);
    }
    registry_ = std::make_shared<shapes::ShapeRegistry>(strand, pool, options, std::move(hooks));
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { io_.run(); });
    // Loaded on the strand, before anything else runs there.
    auto registry = registry_;
    std::promise<Result<std::size_t>> loaded;
    asio::post(strand_, [&] { loaded.set_value(registry->load()); });
    auto count = loaded.get_future().get();
    EXPECT_TRUE(count) << count.error().to_string();
    loaded_ = count ? count.value() : 0;
    if (fallback) asio::post(strand_, [registry] { registry->set_serving_mode(true); });
  }
  ~Registry() {
    auto registry = registry_;
    asio::post(strand_, [registry] { registry->set_serving_mode(false); });
    work_.reset();
    io_.stop();
    for (auto& thread : threads_) thread.join();
  }

  std::size_t loaded() const { return loaded_; }

  // Reads the shape from the start until up-to-date; the bodies are joined
  // (into `result.body`). Fails the test on anything but results.
  ReadResult read_all(const std::string& table) {
    ShapeDefinitionRequest definition;
    definition.table = table;
    ReadRequest request;
    std::string bodies;
    for (int i = 0; i < 1000; ++i) {
      auto outcome = read_once(definition, request);
      auto* result = std::get_if<ReadResult>(&outcome);
      if (!result) {
        ADD_FAILURE() << "read of " << table << " was not served";
        return {};
      }
      auto body = shapes::read_body(*result);  // a stored chunk: read from disk
      if (!body || !body.value()) {
        ADD_FAILURE() << "read of " << table << " has no body";
        return {};
      }
      bodies += *body.value();
      if (result->up_to_date) {
        result->stored = {};
        result->body = std::make_shared<const std::string>(std::move(bodies));
        return *result;
      }
      request.start = ReadRequest::Start::kAt;
      request.offset = result->offset;
      request.handle = result->handle;
    }
    ADD_FAILURE() << "never up-to-date";
    return {};
  }

 private:
  ReadOutcome read_once(const ShapeDefinitionRequest& definition, const ReadRequest& request) {
    auto promise = std::make_shared<std::promise<ReadOutcome>>();
    auto future = promise->get_future();
    registry_->read(definition, request,
                    [promise](ReadOutcome outcome) { promise->set_value(std::move(outcome)); });
    if (future.wait_for(20s) != std::future_status::ready) {
      ADD_FAILURE() << "read of " << definition.table << " did not complete";
      return shapes::Unavailable{"hung"};
    }
    return future.get();
  }

  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  asio::any_io_executor strand_;
  std::shared_ptr<shapes::ShapeRegistry> registry_;
  std::shared_ptr<FallbackQuery> query_;
  std::vector<std::thread> threads_;
  std::size_t loaded_ = 0;
};

// Whether the shape's meta.json names its snapshot (it is then on disk).
bool snapshot_recorded(const std::filesystem::path& shapes_dir, const std::string& handle) {
  std::ifstream in(shapes_dir / handle / "meta.json");
  auto meta = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  return meta.is_object() && meta.contains("snapshot") && !meta["snapshot"].is_null();
}

class FallbackSnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    database_ = testing::create_database("fallback_snapshot");
    execute_sql(database_, R"SQL(
CREATE PUBLICATION shapeproxy FOR ALL TABLES;
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE all_types (
  id int4 NOT NULL, tag text NOT NULL,
  i2 int2, i8 int8, f4 float4, f8 float8, num numeric, b bool,
  t text, vc varchar(20), ch char(5), by bytea, j json, jb jsonb,
  ia int4[], ta text[], ts timestamp, tstz timestamptz, d date, tm time, iv interval,
  u uuid, ip inet, m mood,
  PRIMARY KEY (id, tag));
INSERT INTO all_types VALUES
 (1, 'plain', 1, 9223372036854775807, 1.5, 3.141592653589793,
  12345678901234567890.123456789, true, 'hello', 'vc', 'ab', '\x00ff10',
  '{"a": [1, 2, "x"], "b": null}', '{"b": 2, "a": "é\"\\"}', '{1,2,NULL,4}',
  '{"a b","c\"d","e\\f",NULL,"NULL",""}', '2024-02-29 23:59:59.123456',
  '2024-02-29 23:59:59.123456+05:30', '2024-02-29', '12:34:56.789',
  '1 year 2 mons 3 days 04:05:06.7', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '192.168.0.1/24', 'happy'),
 (2, 'a/b"c\d', NULL, NULL, 'NaN', '-Infinity', 'NaN', false,
  E'quote " backslash \\ newline \n tab \t cr \r bs \b ff \f bell \x07 esc \x1b del \x7f',
  NULL, NULL, NULL, 'null', '[]', '{}', '{}', 'infinity', '-infinity', '-infinity', '00:00',
  '-1 days', NULL, '::1', NULL),
 (3, 'ünïcödé ✓ 😀', -32768, -1, 'Infinity', 1e-300, -0.000001, NULL,
  'ünïcödé ✓ 😀 中文', '😀', 'é', '\x', '"str"', '"str"', '{{1,2},{3,4}}', '{"\u00e9"}',
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'sad'),
 (4, '', 0, 0, 0, -0, 0, true, '', '', '', '', '{}', '{}', NULL, '{NULL}',
  '0001-01-01 00:00:00', '1999-12-31 23:59:59+00', '2000-01-01', '24:00:00', '0',
  '00000000-0000-0000-0000-000000000000', '10.0.0.0/8', 'ok'),
 (5, '/', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO all_types (id, tag, t, num, jb)
SELECT i, 'gen' || i, repeat(E'x"\\', i % 7) || i, i * 1.1, jsonb_build_object('i', i)
FROM generate_series(10, 1000) AS i;
)SQL");
    char pattern[] = "/tmp/shapeproxy-fallback-snapshot-XXXXXX";
    dir_ = ::mkdtemp(pattern);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string database_;
  std::filesystem::path dir_;
};

TEST_F(FallbackSnapshotTest, FallbackBodyEqualsTheLiveBodyAndIsStoredAfterServing) {
  std::string live_body;
  {
    Registry live(database_, dir_ / "live", /*fallback=*/false);
    auto served = live.read_all("all_types");
    ASSERT_TRUE(served.body);
    EXPECT_FALSE(served.fallback);
    live_body = *served.body;
  }
  // Sanity: the body holds what the escaping must handle, several chunks of it.
  EXPECT_NE(live_body.find(R"("a/b\"c\\d")"), std::string::npos);
  EXPECT_NE(live_body.find(R"(\u0007 esc \u001b del )"), std::string::npos);
  EXPECT_NE(live_body.find("ünïcödé ✓ 😀 中文"), std::string::npos);
  EXPECT_NE(live_body.find(R"("i2":null)"), std::string::npos);
  EXPECT_NE(live_body.find("]["), std::string::npos) << "expected several chunks";

  std::string handle;
  {
    Registry degraded(database_, dir_ / "fallback", /*fallback=*/true);
    auto served = degraded.read_all("all_types");
    ASSERT_TRUE(served.body);
    EXPECT_TRUE(served.fallback);
    EXPECT_EQ(*served.body, live_body);
    handle = served.handle;
    bool recorded = false;
    for (auto deadline = std::chrono::steady_clock::now() + 10s;
         !recorded && std::chrono::steady_clock::now() < deadline;
         std::this_thread::sleep_for(20ms)) {
      recorded = snapshot_recorded(dir_ / "fallback", handle);
    }
    ASSERT_TRUE(recorded) << "meta.json never named the snapshot";
    // Served from disk now: still the same bytes.
    EXPECT_EQ(*degraded.read_all("all_types").body, live_body);
  }

  Registry restarted(database_, dir_ / "fallback", /*fallback=*/false);
  EXPECT_EQ(restarted.loaded(), 1u);
  auto reloaded = restarted.read_all("all_types");
  EXPECT_EQ(reloaded.handle, handle);
  ASSERT_TRUE(reloaded.body);
  EXPECT_EQ(*reloaded.body, live_body);
}

}  // namespace
}  // namespace shapeproxy::fallback
