// PgSnapshot::parse: what pg_current_snapshot()::text prints, and nothing
// PostgreSQL would never print (the text is read back from meta.json).
#include "shapes/pg_snapshot.h"

#include <gtest/gtest.h>

namespace shapeproxy::shapes {
namespace {

TEST(PgSnapshot, ParsesWhatPostgresPrints) {
  auto s = PgSnapshot::parse("10:20:12,15");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->xmin, 10u);
  EXPECT_EQ(s->xmax, 20u);
  EXPECT_EQ(s->xip, (std::vector<std::uint64_t>{12, 15}));
  EXPECT_TRUE(PgSnapshot::parse("7:7:"));
  EXPECT_TRUE(s->visible(9));
  EXPECT_FALSE(s->visible(12));
  EXPECT_TRUE(s->visible(13));
  EXPECT_FALSE(s->visible(20));
}

// Found by tests/fuzz/pg_snapshot_fuzz: "666:03:" was accepted.
TEST(PgSnapshot, RefusesInconsistentSnapshots) {
  EXPECT_FALSE(PgSnapshot::parse("666:03:"));       // xmin > xmax
  EXPECT_FALSE(PgSnapshot::parse("10:20:9"));       // in progress before xmin
  EXPECT_FALSE(PgSnapshot::parse("10:20:20"));      // in progress at xmax
  EXPECT_FALSE(PgSnapshot::parse("10:20:12,"));     // trailing comma
  EXPECT_FALSE(PgSnapshot::parse("10:20"));         // no xip part
  EXPECT_FALSE(PgSnapshot::parse("-1:20:"));        // not a number
  EXPECT_FALSE(PgSnapshot::parse("10:20:12,,15"));  // empty xip
}

// Whether a snapshot was taken no earlier than another, as far as what it
// sees goes (a fallback result older than the shape's rows is refused).
TEST(PgSnapshot, SeesAllOfAnotherOnlyWhenNoOlder) {
  auto at = [](const char* text) { return *PgSnapshot::parse(text); };
  EXPECT_TRUE(at("10:20:12,15").sees_all_of(at("10:20:12,15")));  // the same
  EXPECT_TRUE(at("13:25:15,22").sees_all_of(at("10:20:12,15")));  // 12 done since
  EXPECT_FALSE(at("10:19:12").sees_all_of(at("10:20:12")));       // 19 unknown to it
  EXPECT_FALSE(at("10:25:12,14").sees_all_of(at("10:20:12")));    // 14 seen by the other
  EXPECT_TRUE(at("10:25:12,21").sees_all_of(at("10:20:12")));     // 21 started after it
}

}  // namespace
}  // namespace shapeproxy::shapes
