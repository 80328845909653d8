// gtest main for test binaries that need PostgreSQL: registers the
// PostgresTestEnvironment (one throwaway cluster per binary).
#include <gtest/gtest.h>

#include "postgres_test_environment.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new shapeproxy::testing::PostgresTestEnvironment);
  return RUN_ALL_TESTS();
}
