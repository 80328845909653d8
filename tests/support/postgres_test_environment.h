// The integration test harness: one throwaway PostgreSQL 15 cluster per test
// binary (initdb into a temp dir, wal_level=logical, free port, private
// socket), always removed at exit. Each suite asks for its own database, so
// suites and binaries can run in parallel.
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "embedded/embedded_postgres.h"

namespace shapeproxy::testing {

class PostgresTestEnvironment : public ::testing::Environment {
 public:
  void SetUp() override;
  void TearDown() override;

  // The running cluster; fails the current test if it could not start.
  static embedded::EmbeddedPostgres& cluster();
};

// Creates a fresh, uniquely named database (prefix + counter + pid) and
// returns its name. Owned by the superuser unless `owner` is given.
std::string create_database(const std::string& prefix, const std::string& owner = {});

// Conninfo for `database` as the superuser (or `user`).
std::string conninfo(const std::string& database, const std::string& user = {});

// Runs SQL (several statements allowed) and fails the test on error.
void execute_sql(const std::string& database, const std::string& sql,
                 const std::string& user = {});

// Runs a query and returns the first column of the first row ("" if none).
std::string query_value(const std::string& database, const std::string& sql,
                        const std::string& user = {});

}  // namespace shapeproxy::testing
