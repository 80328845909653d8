// LSN text form and conninfo handling.
#include <gtest/gtest.h>

#include "pg/connection.h"
#include "pg/conninfo.h"
#include "pg/lsn.h"

namespace shapeproxy::pg {
namespace {

TEST(LsnTest, FormatsAndParsesLikePostgres) {
  EXPECT_EQ(format_lsn(0), "0/0");
  EXPECT_EQ(format_lsn(0x16B3748ULL), "0/16B3748");
  EXPECT_EQ(format_lsn(0x1000000ABULL), "1/AB");
  EXPECT_EQ(parse_lsn("0/16B3748"), 0x16B3748ULL);
  EXPECT_EQ(parse_lsn("FFFFFFFF/FFFFFFFF"), ~0ULL);
  EXPECT_EQ(parse_lsn(format_lsn(0x123456789ABCULL)), 0x123456789ABCULL);
  for (const char* bad : {"", "/", "1/", "/1", "1-2", "G/1", "123456789/1", "1/2/3"}) {
    EXPECT_FALSE(parse_lsn(bad).has_value()) << bad;
  }
}

TEST(ConninfoTest, ReplicationConninfoKeepsTargetAndAddsReplication) {
  auto from_uri =
      replication_conninfo("postgresql://app:s3cret@db.example:6543/shop?sslmode=disable");
  ASSERT_TRUE(from_uri) << from_uri.error().to_string();
  for (const char* part : {"host='db.example'", "port='6543'", "dbname='shop'", "user='app'",
                           "password='s3cret'", "sslmode='disable'", "replication='database'"}) {
    EXPECT_NE(from_uri->find(part), std::string::npos) << part << " in " << *from_uri;
  }
  auto quoted = replication_conninfo("host=/tmp dbname=shop password='a\\'b'");
  ASSERT_TRUE(quoted) << quoted.error().to_string();
  EXPECT_NE(quoted->find("password='a\\'b'"), std::string::npos) << *quoted;
}

TEST(ConninfoTest, DescribeNeverShowsThePassword) {
  auto text = describe_conninfo("postgresql://app:s3cret@db.example:6543/shop");
  EXPECT_EQ(text, "app@db.example:6543/shop");
  EXPECT_EQ(text.find("s3cret"), std::string::npos);
}

TEST(ConninfoTest, InvalidConninfoIsAnError) {
  EXPECT_FALSE(validate_conninfo("postgresql://host:port/db"));
  EXPECT_FALSE(validate_conninfo("nonsense_key=1"));
  EXPECT_TRUE(validate_conninfo("dbname=x"));
}

TEST(QuoteTest, IdentifiersAndLiterals) {
  EXPECT_EQ(quote_identifier("items"), "\"items\"");
  EXPECT_EQ(quote_identifier("we\"ird"), "\"we\"\"ird\"");
  EXPECT_EQ(quote_literal("it's"), "'it''s'");
}

}  // namespace
}  // namespace shapeproxy::pg
