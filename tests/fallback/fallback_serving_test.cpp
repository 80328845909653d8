// Serving shapes in degraded mode against a real PostgreSQL, with the cap on
// fallback queries at one: a request that needs a fallback query the cap
// refuses (a new shape, or a shape whose refresh was refused) is answered at
// once as unavailable with a retry-after (the API's 503), never left hanging
// nor served as if current; once the database has room again the same
// requests are served, flagged as fallback.
#include <gtest/gtest.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <future>
#include <thread>

#include "fallback/fallback_query.h"
#include "pg/connection.h"
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
using shapes::Unavailable;
using testing::conninfo;
using testing::execute_sql;
using testing::query_value;

// The registry and a FallbackQuery capped at one query (none queued), each on
// its own strand of a running io_context; no replication stream.
class DegradedProxy {
 public:
  explicit DegradedProxy(const std::string& database) {
    auto strand = asio::make_strand(io_);
    strand_ = strand;
    auto pool = std::make_shared<pg::ConnectionPool>(strand, conninfo(database), 2);
    shapes::ShapeRegistryOptions options;
    options.live_timeout = 2s;
    options.fallback_poll_interval = 200ms;

    FallbackQueryOptions fallback_options;
    fallback_options.max_in_flight = 1;
    fallback_options.max_queued = 0;
    fallback_options.reuse_window = 0ms;
    auto fallback_strand = asio::make_strand(io_);
    query_ = std::make_shared<FallbackQuery>(
        fallback_strand,
        FallbackQuery::make_pool(fallback_strand, conninfo(database), fallback_options),
        fallback_options);
    shapes::ShapeRegistryHooks hooks;
    hooks.fallback_rows = registry_source(query_);
    registry_ = std::make_shared<shapes::ShapeRegistry>(strand, pool, options, std::move(hooks));
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { io_.run(); });
  }
  ~DegradedProxy() {
    auto registry = registry_;
    asio::post(strand_, [registry] { registry->set_serving_mode(false); });
    work_.reset();
    io_.stop();
    for (auto& thread : threads_) thread.join();
  }

  void enter_fallback() {
    auto registry = registry_;
    asio::post(strand_, [registry] { registry->set_serving_mode(true); });
  }

  // Reads the shape from the start until up-to-date; the bodies are joined.
  ReadOutcome read(const std::string& table, const std::string& where) {
    ShapeDefinitionRequest definition;
    definition.table = table;
    definition.where = where;
    ReadOutcome outcome = read_once(definition, ReadRequest{});
    std::string bodies;
    for (int i = 0; i < 100; ++i) {
      auto* result = std::get_if<ReadResult>(&outcome);
      if (!result) return outcome;
      bodies += *result->body;
      if (result->up_to_date) {
        result->body = std::make_shared<const std::string>(std::move(bodies));
        return outcome;
      }
      ReadRequest next;
      next.start = ReadRequest::Start::kAt;
      next.offset = result->offset;
      next.handle = result->handle;
      outcome = read_once(definition, next);
    }
    ADD_FAILURE() << "never up-to-date";
    return outcome;
  }

  ReadOutcome read_once(const ShapeDefinitionRequest& definition, const ReadRequest& request) {
    auto promise = std::make_shared<std::promise<ReadOutcome>>();
    auto future = promise->get_future();
    registry_->read(definition, request,
                    [promise](ReadOutcome outcome) { promise->set_value(std::move(outcome)); });
    if (future.wait_for(20s) != std::future_status::ready) {
      ADD_FAILURE() << "read of " << definition.table << " did not complete";
      return Unavailable{"hung"};
    }
    return future.get();
  }

  FallbackQuery& query() { return *query_; }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
  asio::any_io_executor strand_;
  std::shared_ptr<shapes::ShapeRegistry> registry_;
  std::shared_ptr<FallbackQuery> query_;
  std::vector<std::thread> threads_;
};

template <typename Condition>
bool eventually(Condition condition) {
  for (auto deadline = std::chrono::steady_clock::now() + 10s;
       std::chrono::steady_clock::now() < deadline; std::this_thread::sleep_for(20ms)) {
    if (condition()) return true;
  }
  return condition();
}

std::string describe(const ReadOutcome& outcome) {
  if (const auto* unavailable = std::get_if<Unavailable>(&outcome))
    return "unavailable: " + unavailable->message;
  if (std::holds_alternative<ReadResult>(outcome)) return "result";
  return "other outcome";
}

bool is_overloaded(const ReadOutcome& outcome) {
  const auto* unavailable = std::get_if<Unavailable>(&outcome);
  return unavailable && unavailable->message.find("overloaded") != std::string::npos;
}

class FallbackServingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    database_ = testing::create_database("fallback_serving");
    execute_sql(database_,
                "CREATE PUBLICATION shapeproxy FOR ALL TABLES;"
                "CREATE TABLE items (id int PRIMARY KEY, name text);"
                "INSERT INTO items SELECT g, 'item' || g FROM generate_series(1, 20) g;"
                "CREATE TABLE slow (id int PRIMARY KEY, name text);"
                "INSERT INTO slow VALUES (1, 'one')");
  }
  std::string database_;
};

TEST_F(FallbackServingTest, RequestsThatNeedARefusedQueryGetRetryAfterThenAreServed) {
  DegradedProxy proxy(database_);
  // Held before the outage, then read during it: refreshed once per interval.
  auto held = proxy.read("items", "id <= 10");
  ASSERT_TRUE(std::holds_alternative<ReadResult>(held)) << describe(held);
  proxy.enter_fallback();
  ASSERT_TRUE(eventually([&] { return proxy.query().queries_started() >= 1; }));

  // A new shape on a locked table: its initial (fallback) query takes the
  // only slot and waits inside the database.
  auto locker = pg::Connection::open(conninfo(database_));
  ASSERT_TRUE(locker) << locker.error().to_string();
  ASSERT_TRUE(locker->exec("BEGIN; LOCK TABLE slow IN ACCESS EXCLUSIVE MODE"));
  auto waiting_on_lock = [&] {
    return query_value(database_,
                       "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                       "AND datname = current_database()") == "1";
  };
  std::future<ReadOutcome> blocked;
  // (A refresh of the held shape may own the slot at that moment: try again.)
  for (int attempt = 0; attempt < 20 && !waiting_on_lock(); ++attempt) {
    blocked = std::async(std::launch::async, [&] { return proxy.read("slow", "id > 0"); });
    eventually(
        [&] { return waiting_on_lock() || blocked.wait_for(0s) == std::future_status::ready; });
  }
  ASSERT_TRUE(waiting_on_lock());

  // Another new shape cannot get a query: refused at once, with a retry-after.
  auto started = std::chrono::steady_clock::now();
  auto refused_new = proxy.read("items", "id > 15");
  EXPECT_LT(std::chrono::steady_clock::now() - started, 3s);
  ASSERT_TRUE(is_overloaded(refused_new)) << describe(refused_new);
  EXPECT_GE(std::get<Unavailable>(refused_new).retry_after, 1s);

  // The held shape's next refresh is refused too: its readers are told so
  // rather than served what may be stale.
  ReadOutcome refused_held = held;
  ASSERT_TRUE(eventually([&] {
    return is_overloaded(refused_held = proxy.read("items", "id <= 10"));
  })) << describe(refused_held);
  EXPECT_GE(std::get<Unavailable>(refused_held).retry_after, 1s);
  EXPECT_GE(proxy.query().activity().refused_total, 2u);

  // Room again: everything is served, flagged, with current rows.
  execute_sql(database_, "UPDATE items SET name = 'renamed' WHERE id = 3");
  ASSERT_TRUE(locker->exec("COMMIT"));
  auto unblocked = blocked.get();
  ASSERT_TRUE(std::holds_alternative<ReadResult>(unblocked)) << describe(unblocked);
  EXPECT_TRUE(std::get<ReadResult>(unblocked).fallback);
  ReadOutcome served_new = refused_new;
  ASSERT_TRUE(eventually([&] {
    served_new = proxy.read("items", "id > 15");
    return std::holds_alternative<ReadResult>(served_new);
  })) << describe(served_new);
  EXPECT_TRUE(std::get<ReadResult>(served_new).fallback);
  EXPECT_NE(std::get<ReadResult>(served_new).body->find("\"item17\""), std::string::npos);
  ReadOutcome served_held = refused_held;
  ASSERT_TRUE(eventually([&] {
    served_held = proxy.read("items", "id <= 10");
    return std::holds_alternative<ReadResult>(served_held);
  })) << describe(served_held);
  const auto& result = std::get<ReadResult>(served_held);
  EXPECT_TRUE(result.fallback);
  EXPECT_NE(result.body->find("\"renamed\""), std::string::npos) << *result.body;
}

}  // namespace
}  // namespace shapeproxy::fallback
