// Election against the harness's PostgreSQL: of several instances on one
// database and data directory exactly one leads and the others learn it from
// the leader record; when the leader goes (its process, i.e. its session and
// its data directory lock) another takes over; a leader whose session was
// terminated is deposed once another holds the advisory lock, and the new one
// leads only after the old one released the data directory; with PostgreSQL
// unreachable, the data directory's holder leads provisionally (no streaming)
// and the others follow its record; a stale record is never followed.
#include "cluster/election.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_future.hpp>
#include <chrono>
#include <filesystem>
#include <functional>
#include <thread>

#include "cluster/data_dir_lock.h"
#include "cluster/leader_record.h"
#include "support/postgres_test_environment.h"

namespace shapeproxy::cluster {
namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;

bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds limit = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    if (condition()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return condition();
}

// One instance's election on its own I/O thread.
class Node {
 public:
  Node(std::string id, std::string conninfo, std::filesystem::path dir, std::string lock_name) {
    ElectionOptions options;
    options.conninfo = std::move(conninfo);
    options.lock_name = std::move(lock_name);
    options.data_dir = std::move(dir);
    options.instance_id = std::move(id);
    options.port = [] { return std::uint16_t{4321}; };
    options.poll_interval = 100ms;
    options.connect_timeout = 2s;
    ElectionEvents events;
    events.promoted = [this] { ++promoted; };
    events.lock_taken = [this] { ++lock_taken; };
    events.deposed = [this](const std::string&) { ++deposed; };
    election = std::make_shared<Election>(io.get_executor(), options, events);
  }
  ~Node() { kill(); }

  void round() { asio::co_spawn(io, election->round(), asio::use_future).get(); }
  void start() {
    asio::post(io, [e = election] { e->start(); });
  }
  // As the process dying: the session ends, the data directory lock goes.
  void kill() {
    if (!election) return;
    asio::post(io, [e = election] { e->stop(); });
    work.reset();
    if (thread.joinable()) thread.join();
    election.reset();
  }
  bool leads() const { return election && election->view().role == Role::kLeader; }
  std::string followed() const {
    auto view = election->view();
    return view.leader ? view.leader->instance_id : "";
  }

  asio::io_context io;
  asio::executor_work_guard<asio::io_context::executor_type> work{io.get_executor()};
  std::thread thread{[this] { io.run(); }};
  std::shared_ptr<Election> election;
  std::atomic<int> promoted{0}, lock_taken{0}, deposed{0};
};

class ElectionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    database_ = testing::create_database("election");
    dir_ = std::filesystem::temp_directory_path() /
           ("election_" + database_ + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<Node> node(std::string id, std::string conninfo = {}) {
    return std::make_unique<Node>(std::move(id),
                                  conninfo.empty() ? testing::conninfo(database_) : conninfo, dir_,
                                  "slot_" + database_);
  }
  std::string unreachable() const {
    return "host=127.0.0.1 port=1 dbname=" + database_ + " connect_timeout=1";
  }
  int lock_holders() const {
    return std::stoi(testing::query_value(
        database_, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"));
  }

  std::string database_;
  std::filesystem::path dir_;
};

TEST_F(ElectionTest, OneLeadsTheOthersFollowItsRecord) {
  auto a = node("a"), b = node("b"), c = node("c");
  a->round();
  b->round();
  c->round();
  EXPECT_TRUE(a->leads());
  EXPECT_EQ(a->promoted, 1);
  EXPECT_EQ(a->lock_taken, 1);
  EXPECT_FALSE(b->leads());
  EXPECT_FALSE(c->leads());
  EXPECT_EQ(b->followed(), "a");
  EXPECT_EQ(c->followed(), "a");
  EXPECT_EQ(b->promoted + c->promoted, 0);
  EXPECT_EQ(lock_holders(), 1);

  auto record = read_leader_record(dir_);
  ASSERT_TRUE(record);
  EXPECT_EQ(record->instance_id, "a");
  EXPECT_EQ(record->url, "http://127.0.0.1:4321");  // over the harness's Unix socket
  ASSERT_TRUE(record->backend_pid);
  // The leader's session is named after it.
  EXPECT_EQ(testing::query_value(database_,
                                 "SELECT application_name FROM pg_stat_activity "
                                 "WHERE pid = " +
                                     std::to_string(*record->backend_pid)),
            "shapeproxy:a");
  // Rounds later change nothing.
  for (int i = 0; i < 3; ++i) {
    a->round();
    b->round();
  }
  EXPECT_EQ(a->promoted, 1);
  EXPECT_EQ(b->promoted, 0);
  EXPECT_EQ(a->deposed + b->deposed, 0);
}

TEST_F(ElectionTest, AnotherTakesOverWhenTheLeaderDies) {
  auto a = node("a"), b = node("b"), c = node("c");
  a->round();
  b->start();
  c->start();
  ASSERT_TRUE(eventually([&] { return b->followed() == "a" && c->followed() == "a"; }));
  const auto killed_at = std::chrono::steady_clock::now();
  a->kill();
  ASSERT_TRUE(eventually([&] { return b->leads() || c->leads(); }));
  const auto took = std::chrono::steady_clock::now() - killed_at;
  EXPECT_LT(took, 3s) << "takeover after the leader died";
  ASSERT_TRUE(eventually([&] {
    auto& follower = b->leads() ? c : b;
    auto& leader = b->leads() ? b : c;
    return follower->followed() == leader->election->view().instance_id;
  }));
  EXPECT_EQ(b->promoted + c->promoted, 1);
  EXPECT_FALSE(b->leads() && c->leads());
  EXPECT_EQ(lock_holders(), 1);
}

TEST_F(ElectionTest, ALeaderWhoseSessionWasCutIsDeposedAndTheNextWaitsForTheDataDirectory) {
  auto a = node("a"), b = node("b");
  a->round();
  b->round();
  ASSERT_TRUE(a->leads());
  auto pid = read_leader_record(dir_)->backend_pid;
  ASSERT_TRUE(pid);
  testing::execute_sql(database_, "SELECT pg_terminate_backend(" + std::to_string(*pid) + ")");
  // b takes the advisory lock first, but a still holds the data directory:
  // b must not lead yet.
  ASSERT_TRUE(eventually([&] {
    b->round();
    return b->election->view().lock_held;
  }));
  EXPECT_FALSE(b->leads());
  EXPECT_EQ(b->promoted, 0);
  // a's next rounds: its session is gone, the lock is b's: deposed.
  ASSERT_TRUE(eventually([&] {
    a->round();
    return a->deposed == 1;
  }));
  EXPECT_EQ(b->promoted, 0);
  a->kill();  // the deposed process exits
  b->round();
  EXPECT_TRUE(b->leads());
  EXPECT_EQ(b->promoted, 1);
  EXPECT_EQ(b->lock_taken, 1);
  EXPECT_EQ(read_leader_record(dir_)->instance_id, "b");
}

TEST_F(ElectionTest, ALeaderCutFromTheDatabaseStepsDownOnAClaim) {
  // a connects as its own role, which then cannot log in any more: a is
  // partitioned from PostgreSQL while b reaches it.
  const std::string role = "cut_" + database_;
  testing::execute_sql(database_, "CREATE ROLE " + role + " LOGIN");
  auto a = node("a", testing::conninfo(database_, role)), b = node("b");
  a->round();
  ASSERT_TRUE(a->leads());
  b->round();
  EXPECT_EQ(b->followed(), "a");
  testing::execute_sql(database_, "ALTER ROLE " + role + " NOLOGIN");
  testing::execute_sql(database_, "SELECT pg_terminate_backend(" +
                                      std::to_string(*read_leader_record(dir_)->backend_pid) + ")");
  // b takes the advisory lock and claims the data directory; a, unable to
  // reach PostgreSQL, reads the claim and steps down.
  ASSERT_TRUE(eventually([&] {
    b->round();
    return b->election->view().lock_held;
  }));
  EXPECT_FALSE(b->leads());
  ASSERT_TRUE(read_claim(dir_));
  EXPECT_EQ(read_claim(dir_)->instance_id, "b");
  ASSERT_TRUE(eventually([&] {
    a->round();
    return a->deposed == 1;
  }));
  a->kill();
  b->round();
  EXPECT_TRUE(b->leads());
  EXPECT_EQ(b->lock_taken, 1);
}

TEST_F(ElectionTest, WithoutTheDatabaseTheDataDirectoryHolderLeadsProvisionally) {
  auto a = node("a", unreachable()), b = node("b", unreachable());
  a->round();
  b->round();
  EXPECT_TRUE(a->leads());
  EXPECT_EQ(a->promoted, 1);
  EXPECT_EQ(a->lock_taken, 0) << "no streaming without the advisory lock";
  EXPECT_FALSE(b->leads());
  EXPECT_EQ(b->followed(), "a");
  EXPECT_FALSE(read_leader_record(dir_)->backend_pid);
}

TEST_F(ElectionTest, AStaleRecordIsNotFollowed) {
  auto lock = DataDirLock::try_acquire(dir_);  // a leader without its session
  ASSERT_TRUE(lock && *lock);
  ASSERT_TRUE(write_leader_record(dir_, LeaderRecord{"ghost", "http://127.0.0.1:1", 999999, 1}));
  auto b = node("b");
  b->round();
  // b holds the advisory lock and waits for the data directory; the record's
  // pid is nobody's: no leader to follow.
  EXPECT_FALSE(b->leads());
  EXPECT_EQ(b->followed(), "");
  auto c = node("c");
  c->round();
  EXPECT_EQ(c->followed(), "") << "the record names a session that does not hold the lock";
  lock->reset();
  b->round();
  EXPECT_TRUE(b->leads());
  c->round();
  EXPECT_EQ(c->followed(), "b");
}

TEST(DataDirLockTest, ExcludesASecondOpenAndAcceptsThisFilesystem) {
  auto dir = std::filesystem::temp_directory_path() / ("ddl_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  EXPECT_TRUE(DataDirLock::check_filesystem(dir));
  auto first = DataDirLock::try_acquire(dir);
  ASSERT_TRUE(first && *first);
  auto second = DataDirLock::try_acquire(dir);
  ASSERT_TRUE(second);
  EXPECT_FALSE(*second);
  first->reset();
  auto third = DataDirLock::try_acquire(dir);
  ASSERT_TRUE(third && *third);
  std::filesystem::remove_all(dir);
}

TEST(ElectionKeyTest, DependsOnTheName) {
  EXPECT_EQ(Election::lock_key("shapeproxy"), Election::lock_key("shapeproxy"));
  EXPECT_NE(Election::lock_key("shapeproxy"), Election::lock_key("other"));
}

}  // namespace
}  // namespace shapeproxy::cluster
