// SnapshotTaker against a real PostgreSQL: a new shape's table is added to
// the publication, its rows are queried and installed, its files created
// (when persisted), and reads waiting for it go on; a snapshot that fails
// drops the shape and its waiters learn it is not ready.
#include "shapes/snapshot_taker.h"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_future.hpp>
#include <filesystem>

#include "shape_fixtures.h"
#include "shapes/shape_catalog.h"
#include "support/postgres_test_environment.h"
#include "support/storage_test_files.h"
#include "support/unresumed_frames.h"

namespace shapeproxy::shapes {
namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;
using namespace std::chrono_literals;
using testing::execute_sql;
using testing::query_value;

class SnapshotTakerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    database_ = testing::create_database("snapshot_taker");
    execute_sql(database_,
                "CREATE PUBLICATION shapeproxy; "
                "CREATE TABLE items (id int8 PRIMARY KEY, title text); "
                "INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 25) g");
    pool_ =
        std::make_shared<pg::ConnectionPool>(strand_.executor(), testing::conninfo(database_), 2);
    catalog_ = std::make_unique<ShapeCatalog>(strand_.executor(), pool_, steady_clock(),
                                              owner_.lifetime(), dir_, 4096);
    fallback_ =
        std::make_unique<FallbackRefresher>(strand_.executor(), steady_clock(), owner_.lifetime(),
                                            nullptr, 1s, FallbackRefresherHooks{});
    // Wired as the registry does: a failed shape is forgotten.
    taker_ = std::make_unique<SnapshotTaker>(
        strand_.executor(), pool_,
        SnapshotTakerOptions{.publication_name = "shapeproxy", .shapes_dir = dir_}, *fallback_,
        owner_.lifetime(),
        SnapshotTakerHooks{.failed =
                               [this](const std::shared_ptr<Shape>& shape) {
                                 shape->mark_gone();
                                 catalog_->erase(shape);
                                 taker_->forget(shape);
                                 ++failed_;
                               },
                           .ready = [this](const std::shared_ptr<Shape>&) { ++ready_; }});
  }
  void TearDown() override {
    owner_.alive.reset();
    strand_.run([] {});
    strand_.stop();
  }

  // A new shape on items, through the catalog (the table looked up in the database).
  std::shared_ptr<Shape> new_shape(std::optional<std::string> where = {}) {
    auto table = asio::co_spawn(
        strand_.executor(),
        [this]() -> asio::awaitable<std::shared_ptr<const TableSchema>> {
          auto found = co_await catalog_->table_schema("public", "items");
          EXPECT_TRUE(found) << found.error().to_string();
          co_return found ? found.value() : nullptr;
        },
        asio::use_future);
    auto schema = table.get();
    if (!schema) return nullptr;
    ShapeDefinitionRequest request;
    request.table = "items";
    request.where = std::move(where);
    auto made = ShapeDefinition::make(request, schema);
    EXPECT_TRUE(std::holds_alternative<ShapeDefinition>(made));
    return strand_.run([&] { return catalog_->add(std::get<ShapeDefinition>(made)); });
  }
  std::future<bool> wait_until_ready(const std::shared_ptr<Shape>& shape) {
    return asio::co_spawn(
        strand_.executor(),
        [this, shape]() -> asio::awaitable<bool> {
          co_return co_await taker_->wait_until_ready(shape, std::make_shared<ReadTicket>());
        },
        asio::use_future);
  }

  fixtures::Strand strand_;
  fixtures::Owner owner_;
  std::string database_;
  testing::TempDir temp_;
  const fs::path dir_ = temp_.path();
  std::shared_ptr<pg::ConnectionPool> pool_;
  std::unique_ptr<ShapeCatalog> catalog_;
  std::unique_ptr<FallbackRefresher> fallback_;
  std::unique_ptr<SnapshotTaker> taker_;
  int ready_ = 0;   // on the strand
  int failed_ = 0;  // on the strand
};

TEST_F(SnapshotTakerTest, ASnapshotPublishesTheTableInstallsTheRowsAndWakesWaiters) {
  auto shape = new_shape("id <= 10");
  ASSERT_NE(shape, nullptr);
  auto waiting = wait_until_ready(shape);
  strand_.run([&] { taker_->start(shape); });
  ASSERT_EQ(waiting.wait_for(30s), std::future_status::ready);
  EXPECT_TRUE(waiting.get());
  EXPECT_EQ(strand_.run([&] { return ready_; }), 1);
  EXPECT_EQ(strand_.run([&] { return shape->row_count(); }), 10u);
  EXPECT_EQ(query_value(database_,
                        "SELECT count(*) FROM pg_publication_tables "
                        "WHERE pubname = 'shapeproxy' AND tablename = 'items'"),
            "1");
  EXPECT_TRUE(fs::exists(dir_ / shape->handle() / "meta.json"));
  // A shape already ready does not wait.
  auto again = wait_until_ready(shape);
  ASSERT_EQ(again.wait_for(10s), std::future_status::ready);
  EXPECT_TRUE(again.get());
}

TEST_F(SnapshotTakerTest, AFailedSnapshotDropsTheShapeAndItsWaitersAreToldSo) {
  auto shape = new_shape();
  ASSERT_NE(shape, nullptr);
  execute_sql(database_, "DROP TABLE items");  // the query fails
  auto waiting = wait_until_ready(shape);
  strand_.run([&] { taker_->start(shape); });
  ASSERT_EQ(waiting.wait_for(30s), std::future_status::ready);
  EXPECT_FALSE(waiting.get());
  EXPECT_EQ(strand_.run([&] { return failed_; }), 1);
  EXPECT_EQ(strand_.run([&] { return catalog_->size(); }), 0u);
}

// A query that fails for the request's own fault (here division by zero on
// the table's rows) leaves a 400 naming the where clause for its readers;
// one that fails otherwise (the table dropped) leaves none.
TEST_F(SnapshotTakerTest, AQueryFailingOnTheRowsIsRememberedAsA400) {
  auto shape = new_shape("id / 0 = 1");
  ASSERT_NE(shape, nullptr);
  auto waiting = wait_until_ready(shape);
  strand_.run([&] { taker_->start(shape); });
  ASSERT_EQ(waiting.wait_for(30s), std::future_status::ready);
  EXPECT_FALSE(waiting.get());
  auto rejected = strand_.run([&] { return taker_->rejection(shape); });
  ASSERT_TRUE(rejected);
  EXPECT_EQ(rejected->field, "where");
  EXPECT_NE(rejected->message.find("division by zero"), std::string::npos) << rejected->message;

  auto other = new_shape();
  ASSERT_NE(other, nullptr);
  execute_sql(database_, "DROP TABLE items");
  auto failed = wait_until_ready(other);
  strand_.run([&] { taker_->start(other); });
  ASSERT_EQ(failed.wait_for(30s), std::future_status::ready);
  EXPECT_FALSE(failed.get());
  EXPECT_FALSE(strand_.run([&] { return taker_->rejection(other); }));
}

// A read waiting for a shape's snapshot whose frame is destroyed unresumed
// (its io_context shut down, as at the proxy's shutdown) leaves nothing
// behind: its ticket's cancel no longer names the frame's timer, and waking
// the shape's waiters touches no freed timer (before: both did, a
// heap-use-after-free under ASan).
TEST_F(SnapshotTakerTest, AWaiterDestroyedUnresumedLeavesNoDanglingTimer) {
  auto shape = new_shape();
  ASSERT_NE(shape, nullptr);
  testing::UnresumedFramesContext io;
  SnapshotTaker taker(io.get_executor(), pool_, SnapshotTakerOptions{}, *fallback_,
                      owner_.lifetime(), SnapshotTakerHooks{});
  auto ticket = std::make_shared<ReadTicket>();
  bool resumed = false;
  asio::co_spawn(
      io,
      [&taker, &resumed, shape, ticket]() -> asio::awaitable<void> {
        co_await taker.wait_until_ready(shape, ticket);
        resumed = true;
      },
      asio::detached);
  io.poll();
  ASSERT_TRUE(ticket->unpark) << "the read is not waiting";
  io.destroy_pending();
  EXPECT_FALSE(resumed);
  EXPECT_FALSE(ticket->unpark) << "the ticket still names the destroyed frame's timer";
  asio::post(io, [&] { taker.forget(shape); });
  io.restart();
  EXPECT_EQ(io.poll(), 1u);
}

}  // namespace
}  // namespace shapeproxy::shapes
