// FallbackQuery against a real PostgreSQL: rows as the equivalent SELECT
// returns them, single flight under 200 concurrent callers, the reuse window,
// the cap on running + queued queries (and the counters reporting it), and a
// quick, host-free error when the database cannot be reached.
#include "fallback/fallback_query.h"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_future.hpp>
#include <future>
#include <set>

#include <signal.h>
#include <thread>

#include "pg/async_connection.h"
#include "pg/connection.h"
#include "shapes/table_schema.h"
#include "support/postgres_test_environment.h"

namespace shapeproxy::fallback {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using shapes::ShapeDefinition;
using shapes::ShapeDefinitionRequest;
using testing::conninfo;
using testing::execute_sql;
using testing::query_value;
using SharedRows = FallbackQuery::SharedRows;

// A clock the test moves by hand.
struct ManualClock {
  std::shared_ptr<std::atomic<std::int64_t>> now_ms =
      std::make_shared<std::atomic<std::int64_t>>(0);
  FallbackQuery::Clock clock() const {
    auto now = now_ms;
    return [now] {
      return std::chrono::steady_clock::time_point(std::chrono::milliseconds(now->load()));
    };
  }
  void advance(std::chrono::milliseconds by) const { now_ms->fetch_add(by.count()); }
};

// An io_context run by a few threads, with a FallbackQuery on one strand.
class Running {
 public:
  Running(const std::string& conninfo, FallbackQueryOptions options,
          FallbackQuery::Clock clock = std::chrono::steady_clock::now) {
    auto strand = asio::make_strand(io_);
    pool_ = FallbackQuery::make_pool(strand, conninfo, options);
    query_ = std::make_shared<FallbackQuery>(strand, pool_, options, std::move(clock));
    for (int i = 0; i < 4; ++i) threads_.emplace_back([this] { io_.run(); });
  }
  ~Running() {
    work_.reset();
    for (auto& thread : threads_) thread.join();
  }

  // Starts rows() from the io_context (not the strand), as an HTTP session would.
  std::future<Result<SharedRows>> start(const ShapeDefinition& definition) {
    // A promise, not use_future: co_spawn's future needs a default-constructible result.
    auto promise = std::make_shared<std::promise<Result<SharedRows>>>();
    auto future = promise->get_future();
    auto query = query_;
    asio::co_spawn(
        io_,
        [query, definition, promise]() -> asio::awaitable<void> {
          auto result = co_await query->rows(definition);
          promise->set_value(std::move(result));
        },
        asio::detached);
    return future;
  }
  Result<SharedRows> rows(const ShapeDefinition& definition) { return start(definition).get(); }

  FallbackQuery& query() { return *query_; }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  std::shared_ptr<pg::ConnectionPool> pool_;
  std::shared_ptr<FallbackQuery> query_;
  std::vector<std::thread> threads_;
};

class FallbackQueryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    database_ = testing::create_database("fallback");
    execute_sql(database_,
                "CREATE TABLE items (id int PRIMARY KEY, name text, qty int, note text);"
                "INSERT INTO items SELECT g, 'item' || g, g % 10, CASE WHEN g % 3 = 0 THEN NULL "
                "ELSE 'n' || g END FROM generate_series(1, 50) g");
  }

  // A validated definition, built as the registry builds one.
  ShapeDefinition definition(std::optional<std::string> where = std::nullopt,
                             std::map<int, std::string> params = {}) {
    asio::io_context io;
    auto loaded = asio::co_spawn(
        io,
        [&]() -> asio::awaitable<std::optional<Result<shapes::TableSchema>>> {
          auto connection =
              co_await pg::AsyncConnection::connect(io.get_executor(), conninfo(database_));
          if (!connection) co_return connection.error();
          std::string schema = "public";
          std::string table = "items";
          auto loaded_schema = co_await shapes::load_table_schema(**connection, schema, table);
          co_return loaded_schema;
        },
        asio::use_future);
    io.run();
    auto schema = *loaded.get();
    EXPECT_TRUE(schema) << schema.error().to_string();
    ShapeDefinitionRequest request;
    request.table = "items";
    request.where = std::move(where);
    request.params = std::move(params);
    auto made = ShapeDefinition::make(
        request, std::make_shared<const shapes::TableSchema>(std::move(schema).value()));
    if (auto* invalid = std::get_if<shapes::InvalidRequest>(&made)) {
      ADD_FAILURE() << invalid->field << ": " << invalid->message;
    }
    return std::get<ShapeDefinition>(std::move(made));
  }

  static FallbackQueryOptions options(std::size_t in_flight = 4, std::size_t queued = 64,
                                      std::chrono::milliseconds reuse = 1000ms) {
    FallbackQueryOptions options;
    options.max_in_flight = in_flight;
    options.max_queued = queued;
    options.reuse_window = reuse;
    return options;
  }

  std::string database_;
};

std::string ids_of(const shapes::SnapshotRows& rows) {
  std::vector<int> ids;
  for (const auto& row : rows.rows) ids.push_back(std::stoi(row.at(0).value()));
  std::sort(ids.begin(), ids.end());
  std::string out;
  for (int id : ids) out += (out.empty() ? "" : ",") + std::to_string(id);
  return out;
}

TEST_F(FallbackQueryTest, RowsMatchTheEquivalentSelect) {
  Running running(conninfo(database_), options());
  auto shape = definition("qty > $1 AND name <> $2", {{1, "5"}, {2, "item19"}});
  auto result = running.rows(shape);
  ASSERT_TRUE(result) << result.error().to_string();
  const shapes::SnapshotRows& rows = **result;
  EXPECT_EQ(ids_of(rows), query_value(database_,
                                      "SELECT string_agg(id::text, ',' ORDER BY id) FROM items "
                                      "WHERE qty > 5 AND name <> 'item19'"));
  EXPECT_FALSE(rows.rows.empty());
  EXPECT_GT(rows.snapshot.xmax, 0u);
  for (const auto& row : rows.rows) {
    ASSERT_EQ(row.size(), 4u);  // every column, table order
    int id = std::stoi(*row[0]);
    EXPECT_EQ(row[1], "item" + std::to_string(id));
    EXPECT_EQ(row[2], std::to_string(id % 10));
    if (id % 3 == 0) {
      EXPECT_FALSE(row[3].has_value()) << id;
    } else {
      EXPECT_EQ(row[3], "n" + std::to_string(id));
    }
  }
  EXPECT_EQ(running.query().queries_started(), 1u);
}

TEST_F(FallbackQueryTest, ConcurrentCallersShareOneQuery) {
  // No reuse window: sharing can only come from single flight.
  Running running(conninfo(database_), options(4, 64, 0ms));
  auto shape = definition("qty < $1", {{1, "3"}});
  // The table stays locked until the first query has waited on the lock for
  // a second: the later callers join it then, however slow the build (an
  // instrumented one under load finished the query before the 200th call).
  auto blocker = pg::Connection::open(conninfo(database_));
  ASSERT_TRUE(blocker) << blocker.error().to_string();
  ASSERT_TRUE(blocker->exec("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE"));
  std::vector<std::future<Result<SharedRows>>> calls;
  for (int i = 0; i < 200; ++i) calls.push_back(running.start(shape));
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (query_value(database_,
                     "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                     "AND now() - query_start > interval '1 second'") != "1" &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(blocker->exec("COMMIT"));
  std::set<SharedRows> distinct;  // owning: nothing else keeps the rows
  for (auto& call : calls) {
    auto result = call.get();
    ASSERT_TRUE(result) << result.error().to_string();
    distinct.insert(result.value());
  }
  EXPECT_EQ(distinct.size(), 1u);
  EXPECT_EQ(running.query().queries_started(), 1u);
  EXPECT_EQ(ids_of(**distinct.begin()),
            query_value(database_,
                        "SELECT string_agg(id::text, ',' ORDER BY id) FROM items WHERE qty < 3"));
  auto activity = running.query().activity();
  EXPECT_EQ(activity.queries_in_flight, 0u);
  EXPECT_EQ(activity.queued, 0u);
  EXPECT_EQ(activity.refused_total, 0u);
  EXPECT_EQ(activity.source, "primary");
}

TEST_F(FallbackQueryTest, FreshResultIsReusedWithinTheWindowOnly) {
  ManualClock clock;
  Running running(conninfo(database_), options(4, 64, 1000ms), clock.clock());
  auto shape = definition("id <= $1", {{1, "3"}});
  auto first = running.rows(shape);
  ASSERT_TRUE(first) << first.error().to_string();
  EXPECT_EQ(ids_of(**first), "1,2,3");
  EXPECT_EQ(running.query().queries_started(), 1u);

  execute_sql(database_, "DELETE FROM items WHERE id = 2");
  clock.advance(999ms);
  auto reused = running.rows(shape);
  ASSERT_TRUE(reused) << reused.error().to_string();
  EXPECT_EQ(reused->get(), first->get());
  EXPECT_EQ(running.query().queries_started(), 1u);

  // Another shape is not served from this one's result.
  auto other = running.rows(definition("id <= $1", {{1, "4"}}));
  ASSERT_TRUE(other) << other.error().to_string();
  EXPECT_EQ(ids_of(**other), "1,3,4");
  EXPECT_EQ(running.query().queries_started(), 2u);

  clock.advance(1ms);
  auto requeried = running.rows(shape);
  ASSERT_TRUE(requeried) << requeried.error().to_string();
  EXPECT_NE(requeried->get(), first->get());
  EXPECT_EQ(ids_of(**requeried), "1,3");
  EXPECT_EQ(running.query().queries_started(), 3u);

  auto reused_again = running.rows(shape);
  ASSERT_TRUE(reused_again);
  EXPECT_EQ(reused_again->get(), requeried->get());
  EXPECT_EQ(running.query().queries_started(), 3u);
}

// Polls `condition` for up to 10 s.
template <typename Condition>
bool eventually(Condition condition) {
  for (auto deadline = std::chrono::steady_clock::now() + 10s;
       std::chrono::steady_clock::now() < deadline; std::this_thread::sleep_for(10ms)) {
    if (condition()) return true;
  }
  return condition();
}

TEST_F(FallbackQueryTest, QueriesBeyondTheCapAreRefused) {
  // Hold the table so the first query blocks inside the database.
  auto locker = pg::Connection::open(conninfo(database_));
  ASSERT_TRUE(locker) << locker.error().to_string();
  auto locked = locker->exec("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE");
  ASSERT_TRUE(locked) << locked.error().to_string();

  Running running(conninfo(database_), options(1, 2));
  auto a = definition("id = $1", {{1, "1"}});
  auto b = definition("id = $1", {{1, "2"}});
  auto c = definition("id = $1", {{1, "3"}});
  auto d = definition("id = $1", {{1, "4"}});

  auto running_a = running.start(a);
  // The server side agrees: one query, blocked on the lock.
  ASSERT_TRUE(eventually([&] {
    return query_value(database_,
                       "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                       "AND datname = current_database()") == "1";
  }));
  EXPECT_EQ(running.query().activity().queries_in_flight, 1u);
  EXPECT_EQ(running.query().queries_started(), 1u);
  auto queued_b = running.start(b);
  auto queued_c = running.start(c);
  ASSERT_TRUE(eventually([&] { return running.query().activity().queued == 2; }));

  auto refused = running.rows(d);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, "overloaded");
  // Joining a query already under way costs the database nothing: not refused.
  auto follower_a = running.start(a);
  auto follower_c = running.start(c);

  auto activity = running.query().activity();
  EXPECT_EQ(activity.queries_in_flight, 1u);
  EXPECT_EQ(activity.queued, 2u);
  EXPECT_EQ(activity.refused_total, 1u);
  EXPECT_EQ(running.query().queries_started(), 1u);

  auto committed = locker->exec("COMMIT");
  ASSERT_TRUE(committed) << committed.error().to_string();
  auto result_a = running_a.get();
  auto result_b = queued_b.get();
  auto result_c = queued_c.get();
  ASSERT_TRUE(result_a) << result_a.error().to_string();
  ASSERT_TRUE(result_b) << result_b.error().to_string();
  ASSERT_TRUE(result_c) << result_c.error().to_string();
  EXPECT_EQ(ids_of(**result_a), "1");
  EXPECT_EQ(ids_of(**result_b), "2");
  EXPECT_EQ(ids_of(**result_c), "3");
  EXPECT_EQ(follower_a.get()->get(), result_a->get());
  EXPECT_EQ(follower_c.get()->get(), result_c->get());
  EXPECT_EQ(running.query().queries_started(), 3u);

  activity = running.query().activity();
  EXPECT_EQ(activity.queries_in_flight, 0u);
  EXPECT_EQ(activity.queued, 0u);
  EXPECT_EQ(activity.refused_total, 1u);

  // With room again, the refused shape is served.
  auto later = running.rows(d);
  ASSERT_TRUE(later) << later.error().to_string();
  EXPECT_EQ(ids_of(**later), "4");
}

// Takes ACCESS EXCLUSIVE on items so that any query of it waits inside the
// database until release().
class TableLock {
 public:
  explicit TableLock(const std::string& database)
      : connection_(pg::Connection::open(conninfo(database))) {
    EXPECT_TRUE(connection_) << connection_.error().to_string();
    auto locked = connection_->exec("BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE");
    EXPECT_TRUE(locked) << locked.error().to_string();
  }
  void release() {
    auto committed = connection_->exec("COMMIT");
    EXPECT_TRUE(committed) << committed.error().to_string();
  }

 private:
  Result<pg::Connection> connection_;
};

// The pid of the backend waiting for the lock on items ("" while none).
std::string waiting_backend(const std::string& database) {
  return query_value(database,
                     "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                     "AND datname = current_database()");
}

TEST_F(FallbackQueryTest, SlowQueryIsCancelledByTheServerAndReportedAsATimeout) {
  TableLock lock(database_);
  FallbackQueryOptions slow = options(1, 2);
  slow.statement_timeout = 300ms;
  Running running(conninfo(database_), slow);
  auto shape = definition("id <= $1", {{1, "3"}});

  auto started = std::chrono::steady_clock::now();
  auto result = running.rows(shape);
  auto took = std::chrono::steady_clock::now() - started;
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, "query_timeout") << result.error().to_string();
  EXPECT_NE(result.error().message.find("300 ms"), std::string::npos) << result.error().message;
  EXPECT_EQ(result.error().to_string().find("SELECT"), std::string::npos);
  EXPECT_GE(took, 290ms);
  EXPECT_LT(took, 5s);
  // Cancelled in the database, not merely given up on: nothing waits any more.
  EXPECT_EQ(waiting_backend(database_), "");
  auto activity = running.query().activity();
  EXPECT_EQ(activity.queries_in_flight, 0u);
  EXPECT_EQ(activity.queued, 0u);

  // The slot and the connection are free again: the next query is served.
  lock.release();
  auto later = running.rows(shape);
  ASSERT_TRUE(later) << later.error().to_string();
  EXPECT_EQ(ids_of(**later), "1,2,3");
  EXPECT_EQ(running.query().queries_started(), 2u);
}

TEST_F(FallbackQueryTest, QueryOnAFrozenServerIsAbandonedAtTheDeadline) {
  TableLock lock(database_);
  FallbackQueryOptions slow = options(1, 2);
  slow.statement_timeout = 1500ms;
  slow.abandon_grace = 300ms;
  Running running(conninfo(database_), slow);
  auto shape = definition("id <= $1", {{1, "3"}});

  auto started = std::chrono::steady_clock::now();
  auto call = running.start(shape);
  std::string pid;
  ASSERT_TRUE(eventually([&] { return !(pid = waiting_backend(database_)).empty(); }));
  // A backend that cannot run cannot honour its statement_timeout either.
  ASSERT_EQ(::kill(std::stoi(pid), SIGSTOP), 0);
  auto result = call.get();
  auto took = std::chrono::steady_clock::now() - started;
  ::kill(std::stoi(pid), SIGCONT);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, "query_timeout") << result.error().to_string();
  EXPECT_GE(took, 1700ms);
  EXPECT_LT(took, 6s);
  EXPECT_EQ(running.query().activity().queries_in_flight, 0u);

  // The abandoned connection is not reused: the next query gets a new one.
  lock.release();
  auto later = running.rows(shape);
  ASSERT_TRUE(later) << later.error().to_string();
  EXPECT_EQ(ids_of(**later), "1,2,3");
}

TEST_F(FallbackQueryTest, UnreachableDatabaseFailsFastWithoutHosts) {
  auto shape = definition();
  // Nothing listens on port 1: connection refused at once.
  const std::string bad = "host=127.0.0.1 port=1 dbname=secretdb user=secretuser password=hunter2";
  FallbackQueryOptions refused_options = options();
  refused_options.source = "standby";
  refused_options.connect_timeout = 2s;
  Running running(bad, refused_options);
  auto started = std::chrono::steady_clock::now();
  std::vector<std::future<Result<SharedRows>>> calls;
  for (int i = 0; i < 10; ++i) calls.push_back(running.start(shape));
  for (auto& call : calls) {
    auto result = call.get();
    ASSERT_FALSE(result);
    EXPECT_EQ(result.error().code, "database_unavailable");
    const std::string text = result.error().to_string();
    for (const char* secret :
         {"127.0.0.1", "port", "secretdb", "secretuser", "hunter2", "SELECT"}) {
      EXPECT_EQ(text.find(secret), std::string::npos) << text;
    }
  }
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
  EXPECT_EQ(running.query().queries_started(), 0u);
  auto activity = running.query().activity();
  EXPECT_EQ(activity.queries_in_flight, 0u);
  EXPECT_EQ(activity.source, "standby");
  // Failures are not cached: the next call tries again (and fails again).
  auto again = running.rows(shape);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, "database_unavailable");
}

TEST_F(FallbackQueryTest, SilentDatabaseFailsWithinTheConnectTimeout) {
  auto shape = definition();
  // A listening socket that never answers: the connect timeout must end it.
  asio::io_context listener_io;
  asio::ip::tcp::acceptor acceptor(listener_io, {asio::ip::make_address("127.0.0.1"), 0});
  const std::string silent =
      "host=127.0.0.1 port=" + std::to_string(acceptor.local_endpoint().port()) +
      " dbname=x user=x";
  FallbackQueryOptions silent_options = options();
  silent_options.connect_timeout = 300ms;
  Running running(silent, silent_options);
  auto started = std::chrono::steady_clock::now();
  auto result = running.rows(shape);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code, "database_unavailable");
  EXPECT_LT(std::chrono::steady_clock::now() - started, 5s);
}

}  // namespace
}  // namespace shapeproxy::fallback
