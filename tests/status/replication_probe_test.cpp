// ReplicationProbe against the harness's PostgreSQL: it reports the WAL head
// and the slot's state, notices a dropped slot, reports an unreachable
// database for a bad conninfo, and its loop reports periodically and stops.
#include "status/replication_probe.h"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_future.hpp>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "support/postgres_test_environment.h"

namespace shapeproxy::status {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

class ReplicationProbeTest : public ::testing::Test {
 protected:
  void SetUp() override { database_ = testing::create_database("status_probe"); }
  void TearDown() override {
    work_.reset();
    thread_.join();
  }

  std::shared_ptr<ReplicationProbe> make_probe(std::string conninfo,
                                               std::function<void(const ProbeResult&)> sink = {}) {
    ReplicationProbeOptions options;
    options.conninfo = std::move(conninfo);
    options.slot_name = "status_probe_slot";
    options.probe_interval = 100ms;
    options.connect_timeout = 2s;
    if (!sink) sink = [](const ProbeResult&) {};
    return std::make_shared<ReplicationProbe>(io_.get_executor(), options, std::move(sink));
  }

  ProbeResult probe_once(ReplicationProbe& probe) {
    auto future = asio::co_spawn(io_, probe.probe_once(), asio::use_future);
    EXPECT_EQ(future.wait_for(20s), std::future_status::ready);
    return future.get();
  }

  std::string database_;
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> work_{io_.get_executor()};
  std::thread thread_{[this] { io_.run(); }};
};

TEST_F(ReplicationProbeTest, SeesTheSlotAndNoticesWhenItIsDropped) {
  auto probe = make_probe(testing::conninfo(database_));

  auto before = probe_once(*probe);
  ASSERT_TRUE(before.reachable) << before.error.value_or("");
  EXPECT_EQ(before.slot_wal_status, "") << "no slot yet";
  ASSERT_TRUE(before.current_wal_lsn);
  EXPECT_GT(*before.current_wal_lsn, 0u);
  EXPECT_FALSE(before.slot_confirmed_lsn);

  testing::execute_sql(
      database_, "SELECT pg_create_logical_replication_slot('status_probe_slot', 'pgoutput')");
  testing::execute_sql(database_, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)");
  auto with_slot = probe_once(*probe);
  ASSERT_TRUE(with_slot.reachable) << with_slot.error.value_or("");
  EXPECT_EQ(with_slot.slot_wal_status, "reserved");
  ASSERT_TRUE(with_slot.slot_confirmed_lsn);
  ASSERT_TRUE(with_slot.current_wal_lsn);
  EXPECT_GE(*with_slot.current_wal_lsn, *with_slot.slot_confirmed_lsn);
  EXPECT_GT(*with_slot.current_wal_lsn, *before.current_wal_lsn) << "the WAL advanced";

  testing::execute_sql(database_, "SELECT pg_drop_replication_slot('status_probe_slot')");
  auto dropped = probe_once(*probe);
  ASSERT_TRUE(dropped.reachable);
  EXPECT_EQ(dropped.slot_wal_status, "");
  EXPECT_FALSE(dropped.slot_confirmed_lsn);
}

TEST_F(ReplicationProbeTest, BadConninfoIsUnreachable) {
  // A port nobody listens on, on the loopback.
  auto probe = make_probe("host=127.0.0.1 port=1 dbname=" + database_ + " connect_timeout=2");
  auto result = probe_once(*probe);
  EXPECT_FALSE(result.reachable);
  EXPECT_TRUE(result.error);
  EXPECT_FALSE(result.current_wal_lsn);
}

TEST_F(ReplicationProbeTest, LoopReportsPeriodicallyFeedsTheMonitorAndStops) {
  StatusMonitorOptions monitor_options;
  monitor_options.slot_name = "status_probe_slot";
  ReplicationStatusMonitor monitor(monitor_options);
  std::mutex mutex;
  std::condition_variable reported;
  std::vector<ProbeResult> results;
  auto probe = make_probe(testing::conninfo(database_), [&](const ProbeResult& result) {
    monitor.on_health_probe(result);
    std::lock_guard lock(mutex);
    results.push_back(result);
    reported.notify_all();
  });
  testing::execute_sql(
      database_, "SELECT pg_create_logical_replication_slot('status_probe_slot', 'pgoutput')");
  probe->start();
  {
    std::unique_lock lock(mutex);
    ASSERT_TRUE(reported.wait_for(lock, 20s, [&] { return results.size() >= 3; }));
    for (const auto& result : results) EXPECT_TRUE(result.reachable);
  }
  auto snapshot = monitor.snapshot();
  EXPECT_TRUE(snapshot.database_reachable);
  EXPECT_EQ(snapshot.slot_wal_status, "reserved");
  EXPECT_TRUE(snapshot.lag_bytes);

  std::promise<void> stopped;
  asio::post(io_, [&] {
    probe->stop();
    stopped.set_value();
  });
  stopped.get_future().wait();
  std::size_t count_at_stop;
  {
    std::lock_guard lock(mutex);
    count_at_stop = results.size();
  }
  std::this_thread::sleep_for(400ms);
  std::lock_guard lock(mutex);
  EXPECT_LE(results.size(), count_at_stop) << "no reports after stop()";
  testing::execute_sql(database_, "SELECT pg_drop_replication_slot('status_probe_slot')");
}

}  // namespace
}  // namespace shapeproxy::status
