// EmbeddedPostgres against real PostgreSQL 15 binaries: start, settings,
// socket/TCP/replication connections, reuse of a cluster dir, restart, two
// clusters at once, cleanup, and the error paths.
#include "embedded/embedded_postgres.h"

#include <gtest/gtest.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "pg/connection.h"

namespace shapeproxy::embedded {
namespace {

namespace fs = std::filesystem;

// A mkdtemp dir under /tmp, removed at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = "/tmp/shapeproxy-ept-XXXXXX";
    if (mkdtemp(tmpl.data()) == nullptr) return;
    path_ = tmpl;
    chmod(path_.c_str(), 0711);  // as root, the server user must traverse it
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::unique_ptr<EmbeddedPostgres> start_or_null(const fs::path& data_dir, bool keep = true) {
  EmbeddedPostgresOptions options;
  options.data_dir = data_dir;
  options.keep_data_on_stop = keep;
  options.extra_settings = {"fsync = off"};
  auto started = EmbeddedPostgres::start(std::move(options));
  if (!started) {
    ADD_FAILURE() << "start failed: " << started.error().to_string();
    return nullptr;
  }
  return std::move(started).value();
}

// First column of the first row of `sql` on a new connection.
std::string query(const std::string& conninfo, const std::string& sql) {
  auto conn = pg::Connection::open(conninfo);
  if (!conn) return "connect error: " + conn.error().to_string();
  auto result = conn->exec(sql);
  if (!result) return "query error: " + result.error().to_string();
  if (PQntuples(result->get()) == 0) return "<no rows>";
  return pg::get_value(result->get(), 0, 0).value_or("<null>");
}

pid_t postmaster_pid(const fs::path& data_dir) {
  std::ifstream in(data_dir / "pgdata" / "postmaster.pid");
  long pid = -1;
  in >> pid;
  return static_cast<pid_t>(pid);
}

// True while `pid` runs (a zombie left to a non-reaping init counts as gone).
bool process_alive(pid_t pid) {
  if (kill(pid, 0) != 0) return false;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  auto paren = line.rfind(')');
  return paren == std::string::npos || paren + 2 >= line.size() || line[paren + 2] != 'Z';
}

// One cluster shared by the read-only tests.
class SharedCluster : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    auto started_at = std::chrono::steady_clock::now();
    cluster_ = start_or_null(dir_->path() / "cluster", /*keep=*/false).release();
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - started_at);
    std::cerr << "initdb + start took " << ms.count() << " ms\n";
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
    delete dir_;
  }
  void SetUp() override { ASSERT_NE(cluster_, nullptr) << "shared cluster did not start"; }

  static TempDir* dir_;
  static EmbeddedPostgres* cluster_;
};

TempDir* SharedCluster::dir_ = nullptr;
EmbeddedPostgres* SharedCluster::cluster_ = nullptr;

TEST_F(SharedCluster, RunsWithLogicalReplicationSettings) {
  EXPECT_EQ(query(cluster_->conninfo(), "SHOW wal_level"), "logical");
  EXPECT_EQ(query(cluster_->conninfo(), "SHOW max_replication_slots"), "20");
  EXPECT_EQ(query(cluster_->conninfo(), "SHOW max_wal_senders"), "20");
  EXPECT_EQ(query(cluster_->conninfo(), "SHOW listen_addresses"), "127.0.0.1");
  EXPECT_EQ(query(cluster_->conninfo(), "SHOW fsync"), "off");  // from extra_settings
  EXPECT_EQ(query(cluster_->conninfo(), "SHOW server_encoding"), "UTF8");
  EXPECT_EQ(
      query(cluster_->conninfo(), "SELECT current_setting('server_version_num')::int / 10000"),
      "15");
  EXPECT_NE(cluster_->port(), 0);
}

TEST_F(SharedCluster, ConnectsOverUnixSocket) {
  EXPECT_TRUE(
      fs::exists(cluster_->socket_dir() / (".s.PGSQL." + std::to_string(cluster_->port()))));
  // inet_server_addr() is NULL on a unix-socket connection.
  EXPECT_EQ(query(cluster_->conninfo(), "SELECT inet_server_addr()"), "<null>");
  EXPECT_EQ(query(cluster_->conninfo(), "SELECT current_user"), cluster_->superuser());
}

TEST_F(SharedCluster, ConnectsOverTcpLoopback) {
  EXPECT_EQ(query(cluster_->uri(), "SELECT host(inet_server_addr())"), "127.0.0.1");
  EXPECT_EQ(query(cluster_->uri(), "SELECT inet_server_port()"), std::to_string(cluster_->port()));
}

TEST_F(SharedCluster, ReplicationConnectionIdentifiesSystem) {
  auto conn = pg::Connection::open(cluster_->conninfo() + " replication=database");
  ASSERT_TRUE(conn) << conn.error().to_string();
  auto result = conn->exec("IDENTIFY_SYSTEM");
  ASSERT_TRUE(result) << result.error().to_string();
  ASSERT_EQ(PQntuples(result->get()), 1);
  EXPECT_EQ(pg::get_value(result->get(), 0, 3).value_or(""), "postgres");  // dbname
}

TEST_F(SharedCluster, ReplicationOnlyRoleCanOpenReplicationConnection) {
  ASSERT_TRUE(cluster_->execute("CREATE ROLE repl_only LOGIN REPLICATION"));
  for (const auto& base : {cluster_->conninfo("postgres", "repl_only"),
                           "host=127.0.0.1 port=" + std::to_string(cluster_->port()) +
                               " dbname=postgres user=repl_only"}) {
    auto conn = pg::Connection::open(base + " replication=database");
    ASSERT_TRUE(conn) << base << ": " << conn.error().to_string();
    auto result = conn->exec("IDENTIFY_SYSTEM");
    ASSERT_TRUE(result) << base << ": " << result.error().to_string();
    EXPECT_EQ(PQntuples(result->get()), 1);
  }
}

TEST_F(SharedCluster, ExecuteRunsSqlAndReportsErrors) {
  ASSERT_TRUE(cluster_->execute("CREATE TABLE exec_t(x int); INSERT INTO exec_t VALUES (7)"));
  EXPECT_EQ(query(cluster_->conninfo(), "SELECT x FROM exec_t"), "7");
  auto bad = cluster_->execute("SELEC 1");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, "42601");
  auto no_db = cluster_->execute("SELECT 1", "no_such_db");
  EXPECT_FALSE(no_db);
}

TEST_F(SharedCluster, ConninfoAndUriFormats) {
  std::string port = std::to_string(cluster_->port());
  EXPECT_EQ(cluster_->conninfo("app", "alice"),
            "host=" + cluster_->socket_dir().string() + " port=" + port + " dbname=app user=alice");
  EXPECT_EQ(cluster_->conninfo(), "host=" + cluster_->socket_dir().string() + " port=" + port +
                                      " dbname=postgres user=postgres");
  EXPECT_EQ(cluster_->uri("app", "alice"), "postgresql://alice@127.0.0.1:" + port + "/app");
  EXPECT_EQ(cluster_->uri(), "postgresql://postgres@127.0.0.1:" + port + "/postgres");
}

TEST_F(SharedCluster, SecondStartOnRunningDirIsAnErrorAndLeavesItAlone) {
  EmbeddedPostgresOptions options;
  options.data_dir = cluster_->data_dir();
  options.keep_data_on_stop = false;  // must not delete the running cluster's dir
  auto second = EmbeddedPostgres::start(std::move(options));
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, "already_running");
  EXPECT_NE(second.error().message.find("already running"), std::string::npos)
      << second.error().message;
  EXPECT_TRUE(fs::exists(cluster_->data_dir() / "pgdata" / "PG_VERSION"));
  EXPECT_EQ(query(cluster_->conninfo(), "SELECT 1"), "1");
}

TEST_F(SharedCluster, FilesBelongToTheServerUser) {
  struct stat st {};
  ASSERT_EQ(stat((cluster_->data_dir() / "pgdata").c_str(), &st), 0);
  if (geteuid() == 0) {
    const passwd* pw = getpwnam("postgres");
    if (pw == nullptr) pw = getpwnam("nobody");
    ASSERT_NE(pw, nullptr);
    EXPECT_EQ(st.st_uid, pw->pw_uid);
    EXPECT_NE(query(cluster_->conninfo(), "SELECT 1"), "");
  } else {
    EXPECT_EQ(st.st_uid, geteuid());
  }
}

TEST(EmbeddedPostgres, ReusesClusterDirAndRestartKeepsPort) {
  TempDir dir;
  fs::path data_dir = dir.path() / "reuse";
  std::uint16_t first_port = 0;
  {
    auto pg = start_or_null(data_dir);
    ASSERT_NE(pg, nullptr);
    first_port = pg->port();
    ASSERT_TRUE(pg->execute("CREATE TABLE kept(v text); INSERT INTO kept VALUES ('survives')"));
    auto restarted = pg->restart();
    ASSERT_TRUE(restarted) << restarted.error().to_string();
    EXPECT_EQ(pg->port(), first_port);
    EXPECT_EQ(query(pg->conninfo(), "SELECT v FROM kept"), "survives");
    EXPECT_EQ(query(pg->uri(), "SELECT v FROM kept"), "survives");
    ASSERT_TRUE(pg->stop());
    ASSERT_TRUE(pg->stop());  // twice is fine
    EXPECT_NE(query(pg->conninfo(), "SELECT 1"), "1");
  }
  ASSERT_TRUE(fs::exists(data_dir / "pgdata" / "PG_VERSION"));  // keep_data_on_stop=true
  auto again = start_or_null(data_dir);
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(query(again->conninfo(), "SELECT v FROM kept"), "survives");
}

TEST(EmbeddedPostgres, StartsAfterTheServerWasKilled) {
  TempDir dir;
  fs::path data_dir = dir.path() / "killed";
  auto pg = start_or_null(data_dir);
  ASSERT_NE(pg, nullptr);
  ASSERT_TRUE(pg->execute("CREATE TABLE kept(v int); INSERT INTO kept VALUES (1)"));
  pid_t pid = postmaster_pid(data_dir);
  ASSERT_GT(pid, 1);
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  // The stale postmaster.pid stays behind; stop() notices the server is gone.
  for (int i = 0; i < 100 && process_alive(pid); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  auto restarted = pg->restart();
  ASSERT_TRUE(restarted) << restarted.error().to_string();
  EXPECT_EQ(query(pg->conninfo(), "SELECT v FROM kept"), "1");
}

TEST(EmbeddedPostgres, TwoClustersAtOnceAndDestructorRemovesDirs) {
  TempDir dir;
  fs::path first_dir = dir.path() / "first";
  // Long enough that the socket cannot live inside the data dir.
  fs::path long_dir = dir.path() / std::string(100, 'x') / "second";
  fs::path long_socket_dir;
  {
    auto first = start_or_null(first_dir, /*keep=*/false);
    auto second = start_or_null(long_dir, /*keep=*/false);
    ASSERT_NE(first, nullptr);
    ASSERT_NE(second, nullptr);
    EXPECT_NE(first->port(), second->port());
    EXPECT_EQ(query(first->conninfo(), "SELECT 1"), "1");
    EXPECT_EQ(query(second->conninfo(), "SELECT 1"), "1");
    EXPECT_EQ(query(second->uri(), "SELECT 2"), "2");
    long_socket_dir = second->socket_dir();
    EXPECT_EQ(long_socket_dir.string().rfind("/tmp/", 0), 0u) << long_socket_dir;
    EXPECT_TRUE(fs::exists(first_dir / "pgdata"));
  }
  EXPECT_FALSE(fs::exists(first_dir));
  EXPECT_FALSE(fs::exists(long_dir));
  EXPECT_FALSE(fs::exists(long_socket_dir));
}

TEST(EmbeddedPostgres, MissingBinariesIsAClearError) {
  TempDir dir;
  EmbeddedPostgresOptions options;
  options.data_dir = dir.path() / "nobin";
  options.bin_dir = "/nonexistent/postgresql/bin";
  auto started = EmbeddedPostgres::start(std::move(options));
  ASSERT_FALSE(started);
  EXPECT_EQ(started.error().code, "initdb_not_found");
  EXPECT_NE(started.error().hint.find("apt-get install postgresql-15"), std::string::npos);
}

TEST(EmbeddedPostgres, InvalidExtraSettingIsRejected) {
  TempDir dir;
  EmbeddedPostgresOptions options;
  options.data_dir = dir.path() / "bad";
  options.extra_settings = {"fsync = off\nport = 1"};
  auto started = EmbeddedPostgres::start(std::move(options));
  ASSERT_FALSE(started);
  EXPECT_EQ(started.error().code, "invalid_setting");
}

TEST(EmbeddedPostgres, AsRootRejectsDataDirUnderUntraversableParent) {
  if (geteuid() != 0) GTEST_SKIP() << "only meaningful as root";
  TempDir dir;
  ASSERT_EQ(chmod(dir.path().c_str(), 0700), 0);  // root-only: the server user cannot enter
  EmbeddedPostgresOptions options;
  options.data_dir = dir.path() / "private" / "cluster";
  auto started = EmbeddedPostgres::start(std::move(options));
  ASSERT_FALSE(started);
  EXPECT_EQ(started.error().code, "data_dir_not_accessible");
  EXPECT_NE(started.error().message.find("not traversable"), std::string::npos);
  EXPECT_NE(started.error().hint.find("/tmp"), std::string::npos);
}

}  // namespace
}  // namespace shapeproxy::embedded
