// ReplicationStream against a real PostgreSQL 15 (the harness cluster):
// decoding of every common type, replica identities, TOAST, truncate, big and
// multi-table transactions, acknowledgement and resume, least privilege, and
// the errors an operator must be told about.
#include "replication/replication_stream.h"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "pg/async_connection.h"
#include "replication/publication.h"
#include "support/postgres_test_environment.h"
#include "support/unresumed_frames.h"

namespace shapeproxy::replication {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using testing::conninfo;
using testing::execute_sql;
using testing::query_value;
using Kind = ColumnValue::Kind;

// Collects what the stream reports; waits with timeouts, never forever.
class RecordingListener : public ReplicationListener {
 public:
  void on_transaction(Transaction transaction) override {
    std::lock_guard lock(mutex_);
    transactions_.push_back(std::move(transaction));
    changed_.notify_all();
  }
  void on_state(StreamState state, const Error* cause) override {
    std::lock_guard lock(mutex_);
    states_.push_back(state);
    if (cause) errors_.push_back(*cause);
    changed_.notify_all();
  }

  // Waits until `count` transactions arrived in total; returns them all.
  std::vector<Transaction> wait_for_transactions(std::size_t count,
                                                 std::chrono::seconds timeout = 30s) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, timeout, [&] { return transactions_.size() >= count; });
    return {transactions_.begin(), transactions_.end()};
  }
  std::optional<Error> wait_for_error(std::chrono::seconds timeout = 30s) {
    std::unique_lock lock(mutex_);
    changed_.wait_for(lock, timeout, [&] { return !errors_.empty(); });
    if (errors_.empty()) return std::nullopt;
    return errors_.front();
  }
  bool wait_for_state(StreamState state, std::size_t occurrences = 1,
                      std::chrono::seconds timeout = 30s) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] {
      return static_cast<std::size_t>(std::count(states_.begin(), states_.end(), state)) >=
             occurrences;
    });
  }
  std::size_t transaction_count() {
    std::lock_guard lock(mutex_);
    return transactions_.size();
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  std::deque<Transaction> transactions_;
  std::vector<StreamState> states_;
  std::vector<Error> errors_;
};

// One stream on its own io_context thread.
class RunningStream {
 public:
  explicit RunningStream(ReplicationStreamOptions options) {
    options.status_interval = 200ms;
    options.min_backoff = 100ms;
    options.max_backoff = 500ms;
    stream_ = std::make_shared<ReplicationStream>(io_.get_executor(), options, listener_);
    stream_->start();
    thread_ = std::thread([this] { io_.run(); });
  }
  ~RunningStream() { stop(); }

  void stop() {
    if (!thread_.joinable()) return;
    stream_->stop();
    listener_.wait_for_state(StreamState::kStopped, 1, 10s);
    work_.reset();
    io_.stop();
    thread_.join();
  }

  RecordingListener& listener() { return listener_; }
  ReplicationStream& stream() { return *stream_; }

 private:
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  RecordingListener listener_;
  std::shared_ptr<ReplicationStream> stream_;
  std::thread thread_;
};

std::string text(const ColumnValue& value) {
  EXPECT_EQ(value.kind, Kind::kText);
  return value.data;
}

std::size_t column_index(const Change& change, const std::string& name) {
  const auto& columns = change.relation->columns;
  for (std::size_t i = 0; i < columns.size(); ++i) {
    if (columns[i].name == name) return i;
  }
  ADD_FAILURE() << "no column " << name;
  return 0;
}

const ColumnValue& new_value(const Change& change, const std::string& column) {
  return change.new_tuple.at(column_index(change, column));
}

const ColumnValue& old_value(const Change& change, const std::string& column) {
  return change.old_tuple.value().at(column_index(change, column));
}

class ReplicationStreamTest : public ::testing::Test {
 protected:
  void SetUp() override {
    database_ = testing::create_database("stream");
    execute_sql(database_, "CREATE PUBLICATION shapeproxy");
  }

  ReplicationStreamOptions options(const std::string& user = {}) {
    ReplicationStreamOptions result;
    result.conninfo = conninfo(database_, user);
    result.slot_name = "slot_" + database_;
    return result;
  }

  // Creates a table and publishes it.
  void create_table(const std::string& name, const std::string& columns) {
    execute_sql(database_, "CREATE TABLE " + name + " (" + columns +
                               "); ALTER PUBLICATION shapeproxy ADD TABLE " + name);
  }

  std::string confirmed_flush() {
    return query_value(database_,
                       "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '" +
                           options().slot_name + "'");
  }

  std::string database_;
};

TEST_F(ReplicationStreamTest, DecodesInsertsOfEveryCommonTypeAsPostgresTextOutput) {
  execute_sql(database_, "CREATE TYPE mood AS ENUM ('sad', 'happy')");
  create_table("typed",
               "id int8 PRIMARY KEY, i2 int2, i4 int4, n numeric(12,4), f4 float4, f8 float8, "
               "t text, b bool, j json, jb jsonb, raw bytea, ts timestamptz, u uuid, "
               "ints int4[], texts text[], m mood");
  RunningStream running(options());
  ASSERT_TRUE(running.listener().wait_for_state(StreamState::kStreaming));
  execute_sql(
      database_,
      "SET TIME ZONE 'UTC'; INSERT INTO typed VALUES (9007199254740993, -32768, 2147483647, "
      "1234.5678, 1.5, 2.25, 'héllo \"q\" \\', true, '{\"a\": [1, 2]}', '{\"b\": null}', "
      "'\\xdeadbeef', '2024-10-09 12:34:56.789+02', "
      "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{1,NULL,3}', '{\"x y\",z}', 'happy'); "
      "INSERT INTO typed (id) VALUES (2)");
  // One PQexec of several statements is one transaction.
  auto transactions = running.listener().wait_for_transactions(1);
  ASSERT_EQ(transactions.size(), 1u);
  ASSERT_EQ(transactions[0].changes.size(), 2u);
  const Change& change = transactions[0].changes.at(0);
  EXPECT_EQ(change.kind, Change::Kind::kInsert);
  EXPECT_EQ(change.relation->schema, "public");
  EXPECT_EQ(change.relation->name, "typed");
  EXPECT_TRUE(change.relation->columns.at(0).is_key);
  EXPECT_FALSE(change.relation->columns.at(1).is_key);
  EXPECT_EQ(text(new_value(change, "id")), "9007199254740993");
  EXPECT_EQ(text(new_value(change, "i2")), "-32768");
  EXPECT_EQ(text(new_value(change, "i4")), "2147483647");
  EXPECT_EQ(text(new_value(change, "n")), "1234.5678");
  EXPECT_EQ(text(new_value(change, "f4")), "1.5");
  EXPECT_EQ(text(new_value(change, "f8")), "2.25");
  EXPECT_EQ(text(new_value(change, "t")), "héllo \"q\" \\");
  EXPECT_EQ(text(new_value(change, "b")), "t");
  EXPECT_EQ(text(new_value(change, "j")), "{\"a\": [1, 2]}");
  EXPECT_EQ(text(new_value(change, "jb")), "{\"b\": null}");
  EXPECT_EQ(text(new_value(change, "raw")), "\\xdeadbeef");
  EXPECT_EQ(text(new_value(change, "ts")).substr(0, 23), "2024-10-09 10:34:56.789");
  EXPECT_EQ(text(new_value(change, "u")), "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
  EXPECT_EQ(text(new_value(change, "ints")), "{1,NULL,3}");
  EXPECT_EQ(text(new_value(change, "texts")), "{\"x y\",z}");
  EXPECT_EQ(text(new_value(change, "m")), "happy");
  // NULLs are NULL, not empty strings.
  const Change& sparse = transactions[0].changes.at(1);
  EXPECT_EQ(text(new_value(sparse, "id")), "2");
  EXPECT_EQ(new_value(sparse, "t").kind, Kind::kNull);
  EXPECT_EQ(new_value(sparse, "ints").kind, Kind::kNull);
  EXPECT_LT(transactions[0].commit_lsn, transactions[0].end_lsn);
  EXPECT_NE(transactions[0].xid, 0u);
}

TEST_F(ReplicationStreamTest, UpdatesAndDeletesCarryOldValuesPerReplicaIdentity) {
  create_table("plain", "id int PRIMARY KEY, v text");
  create_table("full_identity", "id int PRIMARY KEY, v text");
  execute_sql(database_,
              "ALTER TABLE full_identity REPLICA IDENTITY FULL; "
              "INSERT INTO plain VALUES (1, 'a'), (2, 'b'); "
              "INSERT INTO full_identity VALUES (1, 'a')");
  RunningStream running(options());
  ASSERT_TRUE(running.listener().wait_for_state(StreamState::kStreaming));
  execute_sql(database_, "UPDATE plain SET v = 'a2' WHERE id = 1");
  execute_sql(database_, "UPDATE plain SET id = 3 WHERE id = 2");
  execute_sql(database_, "DELETE FROM plain WHERE id = 3");
  execute_sql(database_, "UPDATE full_identity SET v = 'a2' WHERE id = 1");
  execute_sql(database_, "DELETE FROM full_identity WHERE id = 1");
  auto transactions = running.listener().wait_for_transactions(5);
  ASSERT_EQ(transactions.size(), 5u);

  const Change& no_key_change = transactions[0].changes.at(0);
  EXPECT_EQ(no_key_change.kind, Change::Kind::kUpdate);
  EXPECT_FALSE(no_key_change.old_tuple.has_value());  // DEFAULT: key unchanged, no old row
  EXPECT_EQ(text(new_value(no_key_change, "v")), "a2");

  const Change& key_change = transactions[1].changes.at(0);
  ASSERT_TRUE(key_change.old_tuple.has_value());
  EXPECT_TRUE(key_change.old_is_key_only);
  EXPECT_EQ(text(old_value(key_change, "id")), "2");
  EXPECT_EQ(text(new_value(key_change, "id")), "3");

  const Change& delete_by_key = transactions[2].changes.at(0);
  EXPECT_EQ(delete_by_key.kind, Change::Kind::kDelete);
  EXPECT_TRUE(delete_by_key.old_is_key_only);
  EXPECT_EQ(text(old_value(delete_by_key, "id")), "3");

  const Change& full_update = transactions[3].changes.at(0);
  EXPECT_EQ(full_update.relation->replica_identity, 'f');
  ASSERT_TRUE(full_update.old_tuple.has_value());
  EXPECT_FALSE(full_update.old_is_key_only);
  EXPECT_EQ(text(old_value(full_update, "v")), "a");
  EXPECT_EQ(text(new_value(full_update, "v")), "a2");

  const Change& full_delete = transactions[4].changes.at(0);
  EXPECT_FALSE(full_delete.old_is_key_only);
  EXPECT_EQ(text(old_value(full_delete, "v")), "a2");
}

TEST_F(ReplicationStreamTest, UnchangedToastIsDistinctFromNullAndFilledFromFullOldRow) {
  create_table("docs", "id int PRIMARY KEY, body text, note text");
  create_table("docs_full", "id int PRIMARY KEY, body text, note text");
  const std::string big =
      "(SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 400))";
  execute_sql(database_,
              "ALTER TABLE docs_full REPLICA IDENTITY FULL; "
              "INSERT INTO docs VALUES (1, " +
                  big +
                  ", NULL); "
                  "INSERT INTO docs_full VALUES (1, " +
                  big + ", NULL)");
  std::string body = query_value(database_, "SELECT body FROM docs_full WHERE id = 1");
  ASSERT_GT(body.size(), 8000u);
  RunningStream running(options());
  ASSERT_TRUE(running.listener().wait_for_state(StreamState::kStreaming));
  execute_sql(database_, "UPDATE docs SET note = 'n' WHERE id = 1");
  execute_sql(database_, "UPDATE docs_full SET note = 'n' WHERE id = 1");
  auto transactions = running.listener().wait_for_transactions(2);
  ASSERT_EQ(transactions.size(), 2u);
  const Change& plain = transactions[0].changes.at(0);
  EXPECT_EQ(new_value(plain, "body").kind, Kind::kUnchangedToast);
  EXPECT_EQ(text(new_value(plain, "note")), "n");
  const Change& full = transactions[1].changes.at(0);
  EXPECT_EQ(text(new_value(full, "body")), body);
}

TEST_F(ReplicationStreamTest, TruncateAndMultiTableTransactions) {
  create_table("a", "id int PRIMARY KEY");
  create_table("b", "id serial PRIMARY KEY, a_id int");
  RunningStream running(options());
  ASSERT_TRUE(running.listener().wait_for_state(StreamState::kStreaming));
  execute_sql(database_,
              "BEGIN; INSERT INTO a VALUES (1); INSERT INTO b (a_id) VALUES (1); "
              "UPDATE a SET id = 2; DELETE FROM b; COMMIT");
  execute_sql(database_, "TRUNCATE a, b RESTART IDENTITY");
  auto transactions = running.listener().wait_for_transactions(2);
  ASSERT_EQ(transactions.size(), 2u);
  const auto& mixed = transactions[0].changes;
  ASSERT_EQ(mixed.size(), 4u);
  EXPECT_EQ(mixed[0].relation->name, "a");
  EXPECT_EQ(mixed[1].relation->name, "b");
  EXPECT_EQ(mixed[2].kind, Change::Kind::kUpdate);
  EXPECT_EQ(mixed[3].kind, Change::Kind::kDelete);
  const auto& truncate = transactions[1].changes;
  ASSERT_EQ(truncate.size(), 1u);
  EXPECT_EQ(truncate[0].kind, Change::Kind::kTruncate);
  ASSERT_EQ(truncate[0].truncated.size(), 2u);
  EXPECT_EQ(truncate[0].truncate_options & TruncateMessage::kRestartIdentity,
            TruncateMessage::kRestartIdentity);
}

TEST_F(ReplicationStreamTest, HundredThousandRowTransactionArrivesWhole) {
  create_table("bulk", "id int PRIMARY KEY, v text");
  RunningStream running(options());
  ASSERT_TRUE(running.listener().wait_for_state(StreamState::kStreaming));
  execute_sql(database_,
              "INSERT INTO bulk SELECT g, 'row ' || g FROM generate_series(1, 100000) g");
  auto transactions = running.listener().wait_for_transactions(1, 120s);
  ASSERT_EQ(transactions.size(), 1u);
  const auto& changes = transactions[0].changes;
  ASSERT_EQ(changes.size(), 100000u);
  EXPECT_EQ(text(new_value(changes.front(), "v")), "row 1");
  EXPECT_EQ(text(new_value(changes.back(), "id")), "100000");
}

TEST_F(ReplicationStreamTest, ResumesAfterAcknowledgedWithNothingLostOrRepeated) {
  create_table("events", "id int PRIMARY KEY");
  Lsn acknowledged = 0;
  std::string confirmed_before;
  {
    RunningStream running(options());
    ASSERT_TRUE(running.listener().wait_for_state(StreamState::kStreaming));
    confirmed_before = confirmed_flush();
    for (int i = 1; i <= 5; ++i)
      execute_sql(database_, "INSERT INTO events VALUES (" + std::to_string(i) + ")");
    auto transactions = running.listener().wait_for_transactions(5);
    ASSERT_EQ(transactions.size(), 5u);
    // The consumer handled only the first three.
    acknowledged = transactions[2].end_lsn;
    running.stream().acknowledge(acknowledged);
    for (int attempt = 0; attempt < 100 && running.stream().confirmed_lsn() < acknowledged;
         ++attempt) {
      std::this_thread::sleep_for(50ms);
    }
    EXPECT_EQ(running.stream().confirmed_lsn(), acknowledged);
  }
  // The slot's confirmed position advanced to exactly what was acknowledged.
  EXPECT_EQ(pg::parse_lsn(confirmed_flush()), acknowledged);
  EXPECT_NE(confirmed_flush(), confirmed_before);

  for (int i = 6; i <= 7; ++i)
    execute_sql(database_, "INSERT INTO events VALUES (" + std::to_string(i) + ")");
  // A fresh stream (as after a process restart) from the consumer's durable position.
  auto resumed = options();
  resumed.resume_after = acknowledged;
  RunningStream running(resumed);
  auto transactions = running.listener().wait_for_transactions(4);
  ASSERT_EQ(transactions.size(), 4u);
  std::vector<std::string> ids;
  for (const auto& t : transactions) ids.push_back(text(t.changes.at(0).new_tuple.at(0)));
  EXPECT_EQ(ids, (std::vector<std::string>{"4", "5", "6", "7"}));
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(running.listener().transaction_count(), 4u) << "a transaction was repeated";
}

TEST_F(ReplicationStreamTest, ReconnectsAfterWalsenderIsTerminatedWithoutLoss) {
  create_table("events", "id int PRIMARY KEY");
  RunningStream running(options());
  ASSERT_TRUE(running.listener().wait_for_state(StreamState::kStreaming));
  execute_sql(database_, "INSERT INTO events VALUES (1)");
  ASSERT_EQ(running.listener().wait_for_transactions(1).size(), 1u);
  // Not acknowledged: the server will send it again after the reconnect, and
  // the stream must not deliver it twice.
  execute_sql(database_,
              "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
              "WHERE slot_name = '" +
                  options().slot_name + "'");
  auto error = running.listener().wait_for_error();
  ASSERT_TRUE(error.has_value());
  ASSERT_TRUE(running.listener().wait_for_state(StreamState::kStreaming, 2));
  execute_sql(database_, "INSERT INTO events VALUES (2)");
  auto transactions = running.listener().wait_for_transactions(2);
  ASSERT_EQ(transactions.size(), 2u);
  EXPECT_EQ(text(transactions[1].changes.at(0).new_tuple.at(0)), "2");
  std::this_thread::sleep_for(500ms);
  EXPECT_EQ(running.listener().transaction_count(), 2u);
}

TEST_F(ReplicationStreamTest, WorksWithLeastPrivilegeRole) {
  execute_sql(database_, "DROP ROLE IF EXISTS app_" + database_ + "; CREATE ROLE app_" + database_ +
                             " LOGIN REPLICATION; GRANT CREATE ON DATABASE " + database_ +
                             " TO app_" + database_ + "; GRANT CREATE ON SCHEMA public TO app_" +
                             database_ + "; DROP PUBLICATION shapeproxy");
  const std::string role = "app_" + database_;
  execute_sql(database_, "CREATE TABLE owned (id int PRIMARY KEY, v text)", role);
  // The role itself creates the publication and publishes its table.
  asio::io_context io;
  auto setup = asio::co_spawn(
      io,
      [&]() -> asio::awaitable<Result<void>> {
        auto connection =
            co_await pg::AsyncConnection::connect(io.get_executor(), conninfo(database_, role));
        if (!connection) co_return connection.error();
        auto created = co_await ensure_publication(**connection, "shapeproxy");
        if (!created) co_return created.error();
        // g++ 12 mishandles braced temporaries inside co_await expressions:
        // keep arguments in named variables.
        const TableName table{"public", "owned"};
        co_return co_await add_table_to_publication(**connection, "shapeproxy", table);
      },
      asio::use_future);
  io.run();
  auto outcome = setup.get();
  ASSERT_TRUE(outcome) << outcome.error().to_string();
  EXPECT_EQ(query_value(database_, "SELECT pubowner::regrole FROM pg_publication"), role);

  RunningStream running(options(role));
  ASSERT_TRUE(running.listener().wait_for_state(StreamState::kStreaming));
  execute_sql(database_, "INSERT INTO owned VALUES (1, 'x')", role);
  auto transactions = running.listener().wait_for_transactions(1);
  ASSERT_EQ(transactions.size(), 1u);
  EXPECT_EQ(text(transactions[0].changes.at(0).new_tuple.at(1)), "x");
}

TEST_F(ReplicationStreamTest, MissingReplicationPrivilegeIsExplained) {
  const std::string role = "noreplication_" + database_;
  execute_sql(database_, "CREATE ROLE " + role + " LOGIN");
  RunningStream running(options(role));
  auto error = running.listener().wait_for_error();
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code, "missing_replication_privilege") << error->to_string();
  EXPECT_NE(error->hint.find("REPLICATION"), std::string::npos);
}

TEST_F(ReplicationStreamTest, InvalidatedSlotIsExplained) {
  create_table("events", "id int PRIMARY KEY");
  // Create the slot, then invalidate it by letting WAL pass the keep size.
  {
    RunningStream running(options());
    ASSERT_TRUE(running.listener().wait_for_state(StreamState::kStreaming));
  }
  execute_sql("postgres", "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'");
  execute_sql("postgres", "SELECT pg_reload_conf()");
  for (int i = 0; i < 4; ++i) {
    execute_sql(database_, "INSERT INTO events SELECT g FROM generate_series(" +
                               std::to_string(i * 1000 + 1) + ", " +
                               std::to_string(i * 1000 + 1000) + ") g");
    execute_sql(database_, "SELECT pg_switch_wal()");
  }
  execute_sql(database_, "CHECKPOINT");
  std::string status =
      query_value(database_, "SELECT wal_status FROM pg_replication_slots WHERE slot_name = '" +
                                 options().slot_name + "'");
  execute_sql("postgres", "ALTER SYSTEM RESET max_slot_wal_keep_size");
  execute_sql("postgres", "SELECT pg_reload_conf()");
  ASSERT_EQ(status, "lost");
  auto keep_lost = options();
  keep_lost.recreate_lost_slot = false;
  RunningStream running(keep_lost);
  auto error = running.listener().wait_for_error();
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code, "slot_invalidated") << error->to_string();
  running.stop();
  // By default the lost slot is replaced by a new one and streaming resumes.
  RunningStream recreated(options());
  ASSERT_TRUE(recreated.listener().wait_for_state(StreamState::kStreaming));
  execute_sql(database_, "INSERT INTO events VALUES (100000)");
  auto transactions = recreated.listener().wait_for_transactions(1);
  ASSERT_EQ(transactions.size(), 1u);
  EXPECT_EQ(
      query_value(database_, "SELECT wal_status FROM pg_replication_slots WHERE slot_name = '" +
                                 options().slot_name + "'"),
      "reserved");
}

// A stream whose frames are destroyed unresumed while it streams (its
// io_context shut down, as at the proxy's shutdown) leaves nothing dangling:
// an acknowledgement or a stop handled afterwards touches no timer or
// connection of the destroyed frames (before: the status timer and the
// connection were locals of consume()'s and stream_once()'s frames, named by
// raw pointers that outlived them: a heap-use-after-free).
TEST_F(ReplicationStreamTest, FramesDestroyedUnresumedLeaveNothingDangling) {
  create_table("events", "id int PRIMARY KEY");
  RecordingListener listener;
  testing::UnresumedFramesContext io;
  auto stream = std::make_shared<ReplicationStream>(io.get_executor(), options(), listener);
  stream->start();
  const auto until = std::chrono::steady_clock::now() + 30s;
  while (!listener.wait_for_state(StreamState::kStreaming, 1, 0s) &&
         std::chrono::steady_clock::now() < until)
    io.run_one_for(100ms);
  ASSERT_TRUE(listener.wait_for_state(StreamState::kStreaming, 1, 0s));
  io.poll();  // on to the wait for data or the next status update
  io.destroy_pending();
  stream->acknowledge(stream->server_wal_end() + 1);
  stream->stop();
  io.restart();
  EXPECT_EQ(io.poll(), 2u);
}

}  // namespace
}  // namespace shapeproxy::replication
