// The PostgreSQL test harness: per-binary cluster settings, create_database,
// execute_sql/query_value, and cleanup when the test process dies.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <regex>
#include <thread>

#include "../support/postgres_test_environment.h"
#include "pg/connection.h"

namespace shapeproxy::testing {
namespace {

namespace fs = std::filesystem;

TEST(PostgresHarness, ClusterIsTunedForTests) {
  auto& cluster = PostgresTestEnvironment::cluster();
  EXPECT_EQ(cluster.data_dir().string().rfind("/tmp/shapeproxy-test-", 0), 0u);
  EXPECT_EQ(query_value("postgres", "SHOW wal_level"), "logical");
  EXPECT_EQ(query_value("postgres", "SHOW fsync"), "off");
  EXPECT_EQ(query_value("postgres", "SHOW synchronous_commit"), "off");
  EXPECT_EQ(query_value("postgres", "SHOW full_page_writes"), "off");
}

TEST(PostgresHarness, CreateDatabaseGivesDistinctIsolatedDatabases) {
  std::string a = create_database("Harness-Test!");
  std::string b = create_database("Harness-Test!");
  EXPECT_NE(a, b);
  EXPECT_TRUE(std::regex_match(a, std::regex("[a-z0-9_]+"))) << a;
  EXPECT_EQ(a.rfind("harness_test__", 0), 0u) << a;
  execute_sql(a, "CREATE TABLE items(id int); INSERT INTO items VALUES (1), (2)");
  EXPECT_EQ(query_value(a, "SELECT count(*) FROM items"), "2");
  EXPECT_EQ(query_value(b, "SELECT to_regclass('public.items') IS NULL"), "t");
  EXPECT_EQ(query_value(a, "SELECT current_database()"), a);
  EXPECT_EQ(query_value(b, "SELECT current_database()"), b);
}

TEST(PostgresHarness, CreateDatabaseSanitizesOddPrefixes) {
  std::string db = create_database("9 Lives; DROP");
  EXPECT_TRUE(std::regex_match(db, std::regex("[a-z_][a-z0-9_]*"))) << db;
  EXPECT_EQ(query_value(db, "SELECT current_database()"), db);
}

TEST(PostgresHarness, CreateDatabaseWithOwner) {
  execute_sql("postgres", "CREATE ROLE harness_owner LOGIN");
  std::string db = create_database("owned", "harness_owner");
  EXPECT_EQ(query_value(db,
                        "SELECT pg_get_userbyid(datdba) FROM pg_database "
                        "WHERE datname = current_database()"),
            "harness_owner");
  execute_sql(db, "CREATE TABLE mine(x int)", "harness_owner");
  EXPECT_EQ(query_value(db, "SELECT current_user", "harness_owner"), "harness_owner");
}

TEST(PostgresHarness, QueryValueEdgeCases) {
  std::string db = create_database("edge");
  EXPECT_EQ(query_value(db, "SELECT 1 WHERE false"), "");
  EXPECT_EQ(query_value(db, "SELECT NULL"), "");
  EXPECT_EQ(query_value(db, "SELECT 'a'; SELECT 'b'"), "b");  // last result
}

TEST(PostgresHarness, FailedSqlFailsTheTestWithSqlAndError) {
  std::string db = create_database("failing");
  EXPECT_NONFATAL_FAILURE(execute_sql(db, "SELEC broken"), "SELEC broken");
  EXPECT_NONFATAL_FAILURE(execute_sql(db, "SELECT * FROM missing_table"), "42P01");
  EXPECT_NONFATAL_FAILURE(query_value(db, "SELECT nope()"), "SELECT nope()");
}

TEST(PostgresHarness, ConninfoWorksWithLibpq) {
  std::string db = create_database("conninfo");
  auto conn = pg::Connection::open(conninfo(db));
  ASSERT_TRUE(conn) << conn.error().to_string();
  auto result = conn->exec("SELECT current_database()");
  ASSERT_TRUE(result);
  EXPECT_EQ(pg::get_value(result->get(), 0, 0).value_or(""), db);
}

// Run only in a child process by the test below.
TEST(PostgresHarnessChild, DISABLED_Aborts) {
  ASSERT_NE(std::getenv("SHAPEPROXY_HARNESS_CHILD"), nullptr);
  std::abort();
}

TEST(PostgresHarness, ClusterIsRemovedWhenTheTestProcessAborts) {
  fs::path self = fs::read_symlink("/proc/self/exe");
  std::string command = "SHAPEPROXY_HARNESS_CHILD=1 '" + self.string() +
                        "' --gtest_also_run_disabled_tests"
                        " --gtest_filter=PostgresHarnessChild.DISABLED_Aborts 2>&1";
  FILE* out = popen(command.c_str(), "r");
  ASSERT_NE(out, nullptr);
  std::string output;
  char buffer[4096];
  while (std::fgets(buffer, sizeof buffer, out) != nullptr) output += buffer;
  int status = pclose(out);
  EXPECT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << output;

  std::smatch match;
  ASSERT_TRUE(std::regex_search(output, match, std::regex("in (/tmp/shapeproxy-test-\\w+)")))
      << output;
  fs::path dir = match[1].str();
  for (int i = 0; i < 200 && fs::exists(dir); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_FALSE(fs::exists(dir)) << "reaper did not remove " << dir << "\n" << output;
  // No server may be left running on the removed cluster.
  std::smatch port;
  ASSERT_TRUE(std::regex_search(output, port, std::regex("PostgreSQL on port (\\d+)")));
  std::string probe =
      "host=127.0.0.1 connect_timeout=2 dbname=postgres user=postgres port=" + port[1].str();
  auto conn = pg::Connection::open(probe);
  EXPECT_FALSE(conn) << "server on port " << port[1] << " survived the aborted test process";
}

}  // namespace
}  // namespace shapeproxy::testing
