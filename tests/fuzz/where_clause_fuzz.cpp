// libFuzzer target: arbitrary where-clause text (first byte picks a few
// parameters) must never crash parse/to_sql/normalized/matches, and a
// clause's normalized text must itself parse to the same normalized text.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include "where/where_clause.h"

using shapeproxy::where::ColumnInfo;
using shapeproxy::where::RowValues;
using shapeproxy::where::WhereClause;

namespace {

const std::vector<ColumnInfo> kColumns = {
    {"id", "int4"},      {"big", "int8"},          {"small", "int2"},          {"price", "numeric"},
    {"ratio", "float8"}, {"name", "text"},         {"label", "varchar"},       {"active", "bool"},
    {"born", "date"},    {"created", "timestamp"}, {"updated", "timestamptz"}, {"uid", "uuid"},
    {"doc", "jsonb"},    {"f4", "float4"},
};

const std::vector<RowValues> kRows = {
    RowValues(kColumns.size()),  // all NULL
    {"1", "-9223372036854775808", "32767", "10.50", "0.1", "bob", "", "t", "2024-01-02",
     "2024-01-02 03:04:05.123", "2024-01-02 03:04:05.123+00",
     "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "{\"a\": 1}", "1.5"},
    {"-2147483648", "0", "-32768", "NaN", "-Infinity", "caf\xc3\xa9%_\\", "x", "f", "infinity",
     "0044-03-15 00:00:00 BC", "-infinity", "00000000-0000-0000-0000-000000000000", "[]", "NaN"},
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::map<int, std::string> params;
  int param_count = data[0] % 3;
  static const char* kParamValues[] = {"1", "bob", "2024-01-01"};
  for (int i = 1; i <= param_count; ++i) params[i] = kParamValues[i - 1];
  std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);

  auto clause = WhereClause::parse(text, kColumns, params);
  if (!clause.ok()) {
    if (clause.error().code != shapeproxy::where::kInvalidWhere || clause.error().message.empty())
      std::abort();
    return 0;
  }
  std::vector<std::optional<std::string>> bound;
  std::string sql = clause->to_sql(1, bound);
  if (sql.empty()) std::abort();
  for (const auto& row : kRows) (void)clause->matches(row);
  (void)clause->referenced_columns();

  // The canonical text must be a fixed point (same normalized text again).
  auto again = WhereClause::parse(clause->normalized(), kColumns, {});
  if (!again.ok() || again->normalized() != clause->normalized()) {
    std::fprintf(stderr, "normalized text not stable:\n  %s\n  -> %s\n",
                 clause->normalized().c_str(),
                 again.ok() ? again->normalized().c_str() : again.error().message.c_str());
    std::abort();
  }
  return 0;
}
