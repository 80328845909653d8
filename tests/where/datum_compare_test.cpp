// The equality rule of where-clause values: canonical keys (ShapeIndex) are
// equal exactly when compare_datums (in-process evaluation) says equal.
#include "where/datum_compare.h"

#include <gtest/gtest.h>

#include <string_view>
#include <utility>
#include <vector>

namespace shapeproxy::where {
namespace {

TEST(CanonicalDatumKey, EqualExactlyWhenPostgresEqualityHolds) {
  auto key = [](SqlType type, std::string_view text) {
    auto datum = parse_datum(type, text);
    EXPECT_TRUE(datum) << text;
    return canonical_datum_key(type, *datum);
  };
  EXPECT_EQ(key(SqlType::kNumeric, "1"), key(SqlType::kNumeric, "1.00"));
  EXPECT_EQ(key(SqlType::kNumeric, "-0.0"), key(SqlType::kNumeric, "0"));
  EXPECT_EQ(key(SqlType::kNumeric, "NaN"), key(SqlType::kNumeric, "nan"));
  EXPECT_NE(key(SqlType::kNumeric, "1"), key(SqlType::kNumeric, "10"));
  EXPECT_NE(key(SqlType::kNumeric, "0.1"), key(SqlType::kNumeric, "1"));
  EXPECT_EQ(key(SqlType::kFloat8, "-0"), key(SqlType::kFloat8, "0"));
  EXPECT_EQ(key(SqlType::kFloat8, "NaN"), key(SqlType::kFloat8, "NaN"));
  EXPECT_NE(key(SqlType::kFloat8, "0.1"), key(SqlType::kFloat8, "0.10000000000000002"));
  EXPECT_EQ(key(SqlType::kTimestamptz, "2024-01-01 01:00:00+01"),
            key(SqlType::kTimestamptz, "2024-01-01 00:00:00+00"));
  EXPECT_NE(key(SqlType::kText, "a"), key(SqlType::kText, "A"));
  EXPECT_NE(key(SqlType::kText, "a"), key(SqlType::kText, "a "));
  EXPECT_EQ(key(SqlType::kBool, "true"), key(SqlType::kBool, "t"));
  EXPECT_EQ(key(SqlType::kUuid, "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11"),
            key(SqlType::kUuid, "a0eebc999c0b4ef8bb6d6bb9bd380a11"));
}

TEST(CanonicalDatumKey, AgreesWithCompareDatums) {
  const std::vector<std::pair<SqlType, std::vector<std::string_view>>> samples = {
      {SqlType::kNumeric, {"1", "1.00", "-0.0", "0", "NaN", "10", "0.1", "Infinity", "-Infinity"}},
      {SqlType::kFloat8, {"-0", "0", "NaN", "0.1", "0.10000000000000002", "Infinity", "1e308"}},
      {SqlType::kInt8, {"0", "-1", "9223372036854775807"}},
      {SqlType::kText, {"a", "A", "a ", ""}},
      {SqlType::kTimestamptz, {"2024-01-01 01:00:00+01", "2024-01-01 00:00:00+00", "infinity"}},
      {SqlType::kDate, {"2024-01-01", "-infinity", "0044-03-15 BC"}},
  };
  for (const auto& [type, texts] : samples) {
    for (auto x : texts) {
      for (auto y : texts) {
        auto a = parse_datum(type, x), b = parse_datum(type, y);
        ASSERT_TRUE(a && b) << x << " " << y;
        EXPECT_EQ(compare_datums(type, *a, *b) == 0,
                  canonical_datum_key(type, *a) == canonical_datum_key(type, *b))
            << sql_type_name(type) << " " << x << " vs " << y;
      }
    }
  }
}

}  // namespace
}  // namespace shapeproxy::where
