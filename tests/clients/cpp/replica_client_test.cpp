// ReplicaClient against real shapeproxy processes and a real PostgreSQL:
// sync and live changes, 409 resync, failover between two proxies, and a
// fallback episode the application does nothing about.
#include "shapeproxy/replica_client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <thread>

#include "proxy_process.h"
#include "support/postgres_test_environment.h"

namespace shapeproxy::testing {
namespace {

using namespace std::chrono_literals;
using client::Change;
using client::Operation;
using client::ReplicaClient;
using client::ReplicaClientOptions;
using client::SyncState;
using client::SyncStatus;

template <typename Predicate>
bool eventually(Predicate predicate, std::chrono::milliseconds timeout = 10s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (predicate()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return predicate();
}

// Whether the proxy binary knows a flag (newer degraded-mode tuning flags).
bool proxy_supports(const std::string& flag) {
  std::string command = std::string(SHAPEPROXY_BIN) + " --help 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  if (!pipe) return false;
  std::string help;
  char buffer[4096];
  while (std::size_t n = fread(buffer, 1, sizeof buffer, pipe)) help.append(buffer, n);
  pclose(pipe);
  return help.find(flag) != std::string::npos;
}

std::string item_key(int id) { return "\"public\".\"items\"/\"" + std::to_string(id) + "\""; }

// Records what listeners see, for assertions from the test thread.
struct Recorder {
  std::mutex mutex;
  std::vector<Change> changes;
  std::vector<SyncStatus> statuses;

  void on_change(const Change& change) {
    std::lock_guard lock(mutex);
    changes.push_back(change);
  }
  void on_status(const SyncStatus& status) {
    std::lock_guard lock(mutex);
    statuses.push_back(status);
  }
  std::size_t count(Operation operation) {
    std::lock_guard lock(mutex);
    std::size_t n = 0;
    for (const auto& change : changes) n += change.operation == operation;
    return n;
  }
  bool saw_state(SyncState state) {
    std::lock_guard lock(mutex);
    for (const auto& status : statuses)
      if (status.state == state) return true;
    return false;
  }
};

class ReplicaClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    database_ = create_database("replica_client");
    execute_sql(
        database_,
        "CREATE TABLE items (id serial PRIMARY KEY, title text NOT NULL, n int);"
        "INSERT INTO items (title, n) SELECT 'item ' || i, i % 10 FROM generate_series(1, 300) i;");
  }

  std::unique_ptr<ProxyProcess> start_proxy(const std::string& name,
                                            std::vector<std::string> args = {},
                                            const std::string& user = {}) {
    args.insert(args.end(), {"--allow-delete", "--long-poll-timeout-ms", "5000"});
    auto proxy = std::make_unique<ProxyProcess>(conninfo(database_, user), name, args);
    bool healthy = proxy->wait_healthy(20s);
    EXPECT_TRUE(healthy) << proxy->log_tail();
    return proxy;
  }

  ReplicaClientOptions options_for(std::vector<std::string> endpoints) {
    ReplicaClientOptions options;
    options.endpoints = std::move(endpoints);
    options.table = "items";
    options.client_id = "replica-client-test";
    options.backoff_initial = 100ms;
    options.backoff_max = 1000ms;
    options.breaker_open_for = 2000ms;
    return options;
  }

  // The client's rows as "id:title" strings, and the same from SELECT.
  static std::set<std::string> replica_rows(const ReplicaClient& replica) {
    std::set<std::string> out;
    for (const auto& row : replica.all())
      out.insert(row.value["id"].get<std::string>() + ":" + row.value["title"].get<std::string>());
    return out;
  }
  std::set<std::string> table_rows(const std::string& where = "true") {
    std::string text = query_value(
        database_, "SELECT string_agg(id || ':' || title, E'\\n') FROM items WHERE " + where);
    std::set<std::string> out;
    std::size_t start = 0;
    while (start < text.size()) {
      auto end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      out.insert(text.substr(start, end - start));
      start = end + 1;
    }
    return out;
  }

  std::string database_;
};

TEST_F(ReplicaClientTest, SyncsThenFollowsLiveChanges) {
  auto proxy = start_proxy("cpp_sync");
  auto options = options_for({proxy->url()});
  options.indexed_columns = {"n"};
  ReplicaClient replica(options);
  Recorder recorder;
  auto changes = replica.listen([&](const Change& change) { recorder.on_change(change); });
  auto statuses = replica.on_status([&](const SyncStatus& status) { recorder.on_status(status); });
  EXPECT_EQ(replica.last_offset(), "-1");
  ASSERT_TRUE(replica.start());
  ASSERT_TRUE(replica.await_ready(15s)) << replica.status().detail;

  EXPECT_EQ(replica.count(), 300u);
  EXPECT_EQ(replica_rows(replica), table_rows());
  EXPECT_EQ(replica.get(item_key(7))->value["title"], "item 7");
  EXPECT_EQ(replica.lookup("n", "3").size(), 30u);
  EXPECT_EQ(replica.lookup("title", "item 12").size(), 1u);
  EXPECT_FALSE(replica.handle().empty());
  EXPECT_NE(replica.last_offset(), "-1");
  EXPECT_EQ(recorder.count(Operation::kInsert), 300u);
  EXPECT_TRUE(eventually([&] { return replica.status().state == SyncState::kLive; }));
  EXPECT_FALSE(replica.is_fallback());

  // Live: each change arrives within a second, listeners see old and new.
  auto started = std::chrono::steady_clock::now();
  execute_sql(database_, "INSERT INTO items (id, title, n) VALUES (1001, 'fresh', 3)");
  ASSERT_TRUE(eventually([&] { return replica.get(item_key(1001)).has_value(); }, 5s));
  EXPECT_LT(std::chrono::steady_clock::now() - started, 1s);
  EXPECT_EQ(replica.lookup("n", "3").size(), 31u);

  execute_sql(database_, "UPDATE items SET title = 'renamed', n = 4 WHERE id = 1001");
  ASSERT_TRUE(eventually([&] { return replica.get(item_key(1001))->value["title"] == "renamed"; }));
  EXPECT_EQ(replica.lookup("n", "3").size(), 30u);
  EXPECT_EQ(replica.get(item_key(1001))->value["n"], "4");

  execute_sql(database_, "DELETE FROM items WHERE id = 1001");
  ASSERT_TRUE(eventually([&] { return !replica.get(item_key(1001)).has_value(); }));

  {
    std::lock_guard lock(recorder.mutex);
    auto update = std::find_if(recorder.changes.begin(), recorder.changes.end(),
                               [](const Change& c) { return c.operation == Operation::kUpdate; });
    ASSERT_NE(update, recorder.changes.end());
    EXPECT_EQ(update->old_row->value["title"], "fresh");
    EXPECT_EQ(update->new_row->value["title"], "renamed");
    EXPECT_EQ(recorder.changes.back().operation, Operation::kDelete);
    EXPECT_EQ(recorder.changes.back().old_row->value["title"], "renamed");
  }

  // Unsubscribed listeners are not called again.
  changes.unsubscribe();
  auto before = recorder.count(Operation::kInsert);
  execute_sql(database_, "INSERT INTO items (id, title) VALUES (1002, 'unseen by listener')");
  ASSERT_TRUE(eventually([&] { return replica.get(item_key(1002)).has_value(); }));
  EXPECT_EQ(recorder.count(Operation::kInsert), before);
  EXPECT_EQ(replica_rows(replica), table_rows());

  replica.stop();
  EXPECT_EQ(replica.status().state, SyncState::kStopped);
  EXPECT_EQ(replica.count(), 301u);  // the replica stays queryable after stop

  // Started again, it resumes from its handle and offset: no resync.
  const std::string handle = replica.handle();
  execute_sql(database_, "INSERT INTO items (id, title) VALUES (1003, 'while stopped')");
  ASSERT_TRUE(replica.start());
  ASSERT_TRUE(eventually([&] { return replica.get(item_key(1003)).has_value(); }));
  EXPECT_EQ(replica.handle(), handle);
  EXPECT_EQ(recorder.count(Operation::kTruncate), 0u);
  EXPECT_EQ(replica_rows(replica), table_rows());
}

// The example program serves the replica over HTTP.
TEST_F(ReplicaClientTest, ExampleServesRowsOverHttp) {
  auto proxy = start_proxy("cpp_example");
  unsigned short port = free_port();
  std::string log = ::testing::TempDir() + "replica_http_server_" + std::to_string(port) + ".log";
  ChildProcess example({REPLICA_HTTP_SERVER_BIN, "--endpoint", proxy->url(), "--table", "items",
                        "--port", std::to_string(port)},
                       log);
  ASSERT_TRUE(eventually(
      [&] { return http_request("GET", port, "/count").body == R"({"count":300})"; }, 15s));
  auto row = http_request("GET", port, "/rows/%22public%22.%22items%22%2F%227%22");
  EXPECT_EQ(row.status, 200);
  EXPECT_NE(row.body.find(R"("title":"item 7")"), std::string::npos) << row.body;
  EXPECT_EQ(http_request("GET", port, "/rows/nope").status, 404);
  execute_sql(database_, "INSERT INTO items (id, title) VALUES (5001, 'served')");
  ASSERT_TRUE(
      eventually([&] { return http_request("GET", port, "/count").body == R"({"count":301})"; }));
  EXPECT_NE(http_request("GET", port, "/rows").body.find("served"), std::string::npos);
  EXPECT_NE(http_request("GET", port, "/status").body.find(R"("state":"live")"), std::string::npos);
  std::remove(log.c_str());
}

TEST_F(ReplicaClientTest, WhereParamsAndColumnsShapeTheReplica) {
  auto proxy = start_proxy("cpp_where");
  auto options = options_for({proxy->url()});
  options.where = "n = $1";
  options.params = {"5"};
  options.columns = {"id", "title"};
  ReplicaClient replica(options);
  ASSERT_TRUE(replica.start());
  ASSERT_TRUE(replica.await_ready(15s)) << replica.status().detail;
  EXPECT_EQ(replica_rows(replica), table_rows("n = 5"));
  EXPECT_FALSE(replica.get(item_key(5))->value.contains("n"));

  execute_sql(database_, "UPDATE items SET n = 5 WHERE id = 1");  // moves in
  execute_sql(database_, "UPDATE items SET n = 6 WHERE id = 5");  // moves out
  ASSERT_TRUE(eventually([&] { return replica_rows(replica) == table_rows("n = 5"); }));
}

TEST_F(ReplicaClientTest, ResyncsAfterMustRefetch) {
  auto proxy = start_proxy("cpp_resync");
  ReplicaClient replica(options_for({proxy->url()}));
  Recorder recorder;
  auto changes = replica.listen([&](const Change& change) { recorder.on_change(change); });
  ASSERT_TRUE(replica.start());
  ASSERT_TRUE(replica.await_ready(15s)) << replica.status().detail;
  std::string old_handle = replica.handle();

  auto deleted =
      http_request("DELETE", proxy->port(), "/v1/shape?table=items&handle=" + old_handle);
  ASSERT_EQ(deleted.status, 202) << deleted.body;
  execute_sql(database_, "INSERT INTO items (id, title) VALUES (2001, 'after delete')");

  ASSERT_TRUE(eventually([&] { return recorder.count(Operation::kTruncate) == 1; }));
  ASSERT_TRUE(eventually([&] {
    return replica.handle() != old_handle && replica.is_up_to_date() &&
           replica.get(item_key(2001)).has_value();
  }));
  EXPECT_EQ(replica_rows(replica), table_rows());
  EXPECT_EQ(recorder.count(Operation::kInsert), 300u + 301u);  // first sync, then the resync
}

TEST_F(ReplicaClientTest, FailsOverToAnotherProxy) {
  auto first = start_proxy("cpp_failover_a");
  auto second = start_proxy("cpp_failover_b");
  auto options = options_for({first->url(), second->url()});
  options.selection = client::EndpointSelection::kConsistentHash;
  ReplicaClient replica(options);
  Recorder recorder;
  auto statuses = replica.on_status([&](const SyncStatus& status) { recorder.on_status(status); });
  ASSERT_TRUE(replica.start());
  ASSERT_TRUE(replica.await_ready(15s)) << replica.status().detail;
  std::string serving = replica.status().endpoint;
  ASSERT_TRUE(serving == first->url() || serving == second->url()) << serving;

  auto& victim = serving == first->url() ? first : second;
  auto& survivor = serving == first->url() ? second : first;
  victim->kill_now();
  execute_sql(database_, "INSERT INTO items (id, title) VALUES (3001, 'while failing over')");

  ASSERT_TRUE(eventually([&] { return replica.get(item_key(3001)).has_value(); }, 15s))
      << replica.status().detail;
  EXPECT_EQ(replica.status().endpoint, survivor->url());
  EXPECT_EQ(replica_rows(replica), table_rows());
  execute_sql(database_, "UPDATE items SET title = 'live on survivor' WHERE id = 3001");
  ASSERT_TRUE(eventually(
      [&] { return replica.get(item_key(3001))->value["title"] == "live on survivor"; }));
}

TEST_F(ReplicaClientTest, ReconnectsWithBackoffWhenNoEndpointAnswers) {
  ReplicaClient replica(options_for({"http://127.0.0.1:" + std::to_string(free_port())}));
  Recorder recorder;
  auto statuses = replica.on_status([&](const SyncStatus& status) { recorder.on_status(status); });
  ASSERT_TRUE(replica.start());
  EXPECT_FALSE(replica.await_ready(500ms));
  EXPECT_TRUE(recorder.saw_state(SyncState::kReconnecting));
  replica.stop();  // returns promptly even while backing off

  ReplicaClient invalid(options_for({"ftp://nowhere"}));
  EXPECT_FALSE(invalid.start());
  EXPECT_NE(invalid.status().detail.find("invalid endpoint"), std::string::npos);
}

// The proxy loses replication (the role's REPLICATION privilege is revoked and
// its walsender killed) while the database stays up: the proxy serves from
// fallback re-queries, then returns to live when the privilege is back. The
// application does nothing; the replica follows every write and ends live.
TEST_F(ReplicaClientTest, RidesThroughAFallbackEpisode) {
  const std::string role = "app_" + database_;
  execute_sql(database_, "CREATE ROLE " + role + " LOGIN REPLICATION;" +
                             "GRANT CREATE ON DATABASE " + database_ + " TO " + role + ";" +
                             "GRANT CREATE ON SCHEMA public TO " + role + ";" +
                             "ALTER TABLE items OWNER TO " + role);
  std::vector<std::string> args;
  for (auto [flag, value] :
       {std::pair{"--fallback-grace-ms", "300"}, std::pair{"--fallback-poll-interval-ms", "200"},
        std::pair{"--status-max-age-s", "1"}}) {
    if (!proxy_supports(flag)) continue;
    args.push_back(flag);
    args.push_back(value);
  }
  auto proxy = start_proxy("cpp_fallback", args, role);
  auto options = options_for({proxy->url()});
  options.status_poll_interval = 200ms;
  ReplicaClient replica(options);
  Recorder recorder;
  auto changes = replica.listen([&](const Change& change) { recorder.on_change(change); });
  auto statuses = replica.on_status([&](const SyncStatus& status) { recorder.on_status(status); });
  ASSERT_TRUE(replica.start());
  ASSERT_TRUE(replica.await_ready(15s)) << replica.status().detail;
  ASSERT_TRUE(eventually([&] { return replica.status().state == SyncState::kLive; }));

  // Outage: no replication, database reachable, writes continue.
  execute_sql(database_, "ALTER ROLE " + role + " NOREPLICATION;" +
                             "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                             "WHERE slot_name = 'cpp_fallback' AND active_pid IS NOT NULL");
  ASSERT_TRUE(eventually(
      [&] {
        return http_request("GET", proxy->port(), "/v1/status")
                   .body.find("\"status\":\"fallback\"") != std::string::npos;
      },
      15s))
      << proxy->log_tail();
  execute_sql(database_,
              "INSERT INTO items (id, title) VALUES (4001, 'during outage'), (4002, 'also');"
              "UPDATE items SET title = 'changed in outage' WHERE id = 10;"
              "DELETE FROM items WHERE id = 11");
  ASSERT_TRUE(eventually([&] { return replica.is_fallback(); }, 15s)) << replica.status().detail;
  ASSERT_TRUE(eventually([&] { return replica_rows(replica) == table_rows(); }, 10s));
  EXPECT_TRUE(recorder.saw_state(SyncState::kFallback));
  EXPECT_EQ(replica.status().state, SyncState::kFallback);

  // Recovery: the client notices by itself and is live again.
  execute_sql(database_, "ALTER ROLE " + role + " REPLICATION");
  ASSERT_TRUE(eventually(
      [&] { return !replica.is_fallback() && replica.status().state == SyncState::kLive; }, 30s))
      << replica.status().detail << "\n"
      << proxy->log_tail();
  execute_sql(database_, "INSERT INTO items (id, title) VALUES (4003, 'after recovery')");
  ASSERT_TRUE(eventually([&] { return replica.get(item_key(4003)).has_value(); }, 10s));
  EXPECT_EQ(replica_rows(replica), table_rows());
  EXPECT_FALSE(replica.is_fallback());
  EXPECT_EQ(recorder.count(Operation::kTruncate), 0u);  // no must-refetch on the way
}

}  // namespace
}  // namespace shapeproxy::testing
