// WhereClause: refusals, evaluation semantics (three-valued logic, typed
// comparison), SQL rendering with bound parameters, and injection attempts.
#include "where/where_clause.h"

#include <gtest/gtest.h>

namespace shapeproxy::where {
namespace {

const std::vector<ColumnInfo> kColumns = {
    {"id", "int4"},      {"big", "int8"},  {"small", "int2"},        {"price", "numeric"},
    {"ratio", "float8"}, {"name", "text"}, {"label", "varchar"},     {"active", "bool"},
    {"flag", "bool"},    {"born", "date"}, {"created", "timestamp"}, {"updated", "timestamptz"},
    {"uid", "uuid"},     {"doc", "jsonb"}, {"tags", "_text"},        {"we\"ird", "text"},
    {"Mixed", "int4"},
};

using Params = std::map<int, std::string>;
using Row = std::map<std::string, std::optional<std::string>>;

WhereClause parse_ok(std::string_view text, const Params& params = {}) {
  auto r = WhereClause::parse(text, kColumns, params);
  if (!r.ok()) {
    ADD_FAILURE() << "parse failed for `" << text << "`: " << r.error().message;
    return WhereClause::parse("true", kColumns, {}).value();
  }
  return std::move(r).value();
}

std::string parse_error(std::string_view text, const Params& params = {}) {
  auto r = WhereClause::parse(text, kColumns, params);
  if (r.ok()) {
    ADD_FAILURE() << "expected `" << text << "` to be refused";
    return "";
  }
  EXPECT_EQ(r.error().code, kInvalidWhere);
  return r.error().message;
}

RowValues row_values(const Row& row) {
  RowValues values(kColumns.size());
  for (const auto& [name, value] : row) {
    auto it = std::find_if(kColumns.begin(), kColumns.end(),
                           [&](const ColumnInfo& c) { return c.name == name; });
    EXPECT_NE(it, kColumns.end()) << name;
    values[static_cast<size_t>(it - kColumns.begin())] = value;
  }
  return values;
}

bool matches(std::string_view text, const Row& row, const Params& params = {}) {
  return parse_ok(text, params).matches(row_values(row));
}

// "t", "f" or "n" (NULL) for a boolean expression.
std::string truth(const std::string& expr, const Row& row) {
  if (matches("(" + expr + ") IS TRUE", row)) return "t";
  if (matches("(" + expr + ") IS FALSE", row)) return "f";
  EXPECT_TRUE(matches("(" + expr + ") IS NULL", row)) << expr;
  return "n";
}

#define EXPECT_ERROR_CONTAINS(text, fragment) \
  EXPECT_NE(parse_error(text).find(fragment), std::string::npos) << parse_error(text)

// --- refusals -------------------------------------------------------------------

TEST(WhereClauseParse, RefusesMultipleStatements) {
  EXPECT_ERROR_CONTAINS("id = 1; DROP TABLE x", "unescaped ;");
  EXPECT_ERROR_CONTAINS("id = 1;", "unescaped ;");
  EXPECT_ERROR_CONTAINS("true; SELECT pg_sleep(10)", "unescaped ;");
}

TEST(WhereClauseParse, RefusesSubqueries) {
  EXPECT_ERROR_CONTAINS("id = (SELECT 1)", "subqueries are not supported");
  EXPECT_ERROR_CONTAINS("id IN (SELECT id FROM other)", "subqueries are not supported");
  EXPECT_ERROR_CONTAINS("EXISTS (SELECT 1)", "subqueries are not supported");
}

TEST(WhereClauseParse, RefusesClausesAroundTheExpression) {
  EXPECT_ERROR_CONTAINS("id = 1 GROUP BY 1", "malformed");
  EXPECT_ERROR_CONTAINS("id = 1 ORDER BY 1", "malformed");
  EXPECT_ERROR_CONTAINS("id = 1 LIMIT 1", "malformed");
  EXPECT_ERROR_CONTAINS("id = 1 FOR UPDATE", "malformed");
  EXPECT_ERROR_CONTAINS("id = 1 WINDOW w AS ()", "malformed");
  EXPECT_ERROR_CONTAINS("true UNION SELECT 1 FROM secrets", "malformed");
  EXPECT_ERROR_CONTAINS("true HAVING true", "malformed");
  // FROM cannot follow WHERE: PostgreSQL's grammar refuses it.
  EXPECT_ERROR_CONTAINS("id = 1 FROM x", "syntax error");
}

// Syntax errors read as Electric's, the position counted in the wrapped
// `SELECT 1 WHERE <text>` as Electric counts it.
TEST(WhereClauseParse, SyntaxErrorsReadAsElectrics) {
  EXPECT_EQ(parse_error("id = = 1"), "At location 21: syntax error at or near \"=\"");
  EXPECT_EQ(parse_error("id x"), "At location 19: syntax error at or near \"x\"");
  EXPECT_EQ(parse_error("id = 1 AND"), "At location 26: syntax error at end of input");
}

TEST(WhereClauseParse, RefusesUnknownColumnsAndQualifiedNames) {
  EXPECT_EQ(parse_error("foo = 1"), "unknown column \"foo\"");
  EXPECT_EQ(parse_error("mixed = 1"), "unknown column \"mixed\"");  // unquoted folds to lower case
  EXPECT_ERROR_CONTAINS("t.id = 1", "qualified column names are not supported");
}

TEST(WhereClauseParse, RefusesFunctionsOutsideTheWhitelist) {
  EXPECT_EQ(parse_error("pg_sleep(1) IS NULL"), "function pg_sleep is not supported");
  EXPECT_EQ(parse_error("id = 1 OR pg_sleep(1) IS NULL"), "function pg_sleep is not supported");
  EXPECT_ERROR_CONTAINS("now() > updated", "function now is not supported");
  EXPECT_ERROR_CONTAINS("pg_catalog.pg_sleep(1) IS NULL", "function pg_sleep is not supported");
  EXPECT_ERROR_CONTAINS("public.lower(name) = 'x'", "schema-qualified function public.lower");
  EXPECT_ERROR_CONTAINS("updated > current_timestamp", "CURRENT_TIMESTAMP");
}

TEST(WhereClauseParse, RefusesAggregatesAndWindowFunctions) {
  EXPECT_EQ(parse_error("count(*) > 1"), "aggregate functions are not supported");
  EXPECT_EQ(parse_error("sum(id) > 1"), "aggregate functions are not supported");
  EXPECT_EQ(parse_error("lower(name) FILTER (WHERE true) = 'x'"),
            "aggregate functions are not supported");
  EXPECT_EQ(parse_error("row_number() OVER () = 1"), "window functions are not supported");
}

TEST(WhereClauseParse, RefusesMissingAndExtraParameters) {
  EXPECT_EQ(parse_error("id = $1 AND name = $2", {{1, "5"}}), "parameter $2 has no value");
  EXPECT_EQ(parse_error("id = $1", {{1, "5"}, {2, "x"}}),
            "parameter $2 is not used in the where clause");
  EXPECT_EQ(parse_error("id = $1", {{1, "abc"}}), "parameter $1 value \"abc\" is not a valid int4");
}

TEST(WhereClauseParse, RefusesLiteralsThatDoNotFitTheColumnType) {
  EXPECT_EQ(parse_error("id = 'abc'"), "invalid int4 value \"abc\"");
  EXPECT_EQ(parse_error("small = '40000'"), "invalid int2 value \"40000\"");
  EXPECT_EQ(parse_error("born = 'not a date'"), "invalid date value \"not a date\"");
  EXPECT_EQ(parse_error("uid = 'xyz'"), "invalid uuid value \"xyz\"");
  EXPECT_EQ(parse_error("active = 'maybe'"), "invalid bool value \"maybe\"");
  EXPECT_EQ(parse_error("'2024-13-01'::date IS NULL"), "invalid date value \"2024-13-01\"");
}

TEST(WhereClauseParse, RefusesTypeMismatches) {
  EXPECT_ERROR_CONTAINS("active + 1 = 2", "operator + is not supported between bool and int4");
  EXPECT_ERROR_CONTAINS("id = name", "operator = is not supported between int4 and text");
  EXPECT_ERROR_CONTAINS("id", "must be type bool, not int4");
  EXPECT_ERROR_CONTAINS("id AND active", "argument of AND must be type bool, not int4");
  EXPECT_ERROR_CONTAINS("id LIKE '1%'", "LIKE is not supported for type int4");
  EXPECT_ERROR_CONTAINS("doc = '{}'", "not supported for this column type");
  EXPECT_ERROR_CONTAINS("doc::int4 = 1", "cannot cast column \"doc\" of type jsonb to int4");
  EXPECT_ERROR_CONTAINS("ratio % 2 = 1", "operator % is not supported for float8");
  EXPECT_ERROR_CONTAINS("abs(name) = 1", "function abs needs a numeric argument");
  EXPECT_ERROR_CONTAINS("lower(name, name) = 'x'", "function lower expects 1 argument");
}

TEST(WhereClauseParse, RefusesOtherUnsupportedForms) {
  EXPECT_ERROR_CONTAINS("CASE WHEN active THEN true END", "CASE expressions are not supported");
  EXPECT_ERROR_CONTAINS("id = ANY('{1,2}')", "ANY/ALL are not supported");
  EXPECT_ERROR_CONTAINS("name SIMILAR TO 'a%'", "SIMILAR TO is not supported");
  EXPECT_ERROR_CONTAINS("id::money > 1", "cast to money is not supported");
  EXPECT_ERROR_CONTAINS("name::varchar(3) = 'abc'", "type modifiers");
  EXPECT_ERROR_CONTAINS("id ~ 'x'", "operator ~ is not supported");
  EXPECT_ERROR_CONTAINS("(id, big) = (1, 2)", "row constructors are not supported");
  EXPECT_ERROR_CONTAINS("name COLLATE \"C\" = 'x'", "COLLATE is not supported");
  EXPECT_ERROR_CONTAINS("id = 1 AND", "syntax error");
  EXPECT_EQ(parse_error("   "), "where clause is empty");
  EXPECT_EQ(parse_error(std::string_view("id = 1\0 OR true", 15)),
            "where clause contains a NUL byte");
}

// --- evaluation -----------------------------------------------------------------------

TEST(WhereClauseEval, ThreeValuedLogicTruthTables) {
  const std::vector<std::optional<std::string>> values = {"t", "f", std::nullopt};
  const std::string expected_and[3][3] = {{"t", "f", "n"}, {"f", "f", "f"}, {"n", "f", "n"}};
  const std::string expected_or[3][3] = {{"t", "t", "t"}, {"t", "f", "n"}, {"t", "n", "n"}};
  const std::string expected_not[3] = {"f", "t", "n"};
  for (size_t i = 0; i < 3; ++i) {
    for (size_t j = 0; j < 3; ++j) {
      Row row = {{"active", values[i]}, {"flag", values[j]}};
      EXPECT_EQ(truth("active AND flag", row), expected_and[i][j]) << i << "," << j;
      EXPECT_EQ(truth("active OR flag", row), expected_or[i][j]) << i << "," << j;
      EXPECT_EQ(truth("active = flag", row), i == 2 || j == 2 ? "n" : (i == j ? "t" : "f"));
      EXPECT_EQ(truth("active IS DISTINCT FROM flag", row), i == j ? "f" : "t");
      EXPECT_EQ(truth("active IS NOT DISTINCT FROM flag", row), i == j ? "t" : "f");
    }
    EXPECT_EQ(truth("NOT active", {{"active", values[i]}}), expected_not[i]);
  }
}

TEST(WhereClauseEval, NullPropagation) {
  EXPECT_EQ(truth("id = NULL", {{"id", "1"}}), "n");
  EXPECT_EQ(truth("NULL AND false", {}), "f");
  EXPECT_EQ(truth("NULL OR true", {}), "t");
  EXPECT_EQ(truth("id + 1 > 0", {{"id", std::nullopt}}), "n");
  EXPECT_TRUE(matches("id IS NULL", {{"id", std::nullopt}}));
  EXPECT_FALSE(matches("id IS NOT NULL", {{"id", std::nullopt}}));
  EXPECT_TRUE(matches("doc IS NOT NULL", {{"doc", "{\"a\": 1}"}}));
  EXPECT_EQ(truth("active IS UNKNOWN", {{"active", std::nullopt}}), "t");
  EXPECT_EQ(truth("active IS NOT TRUE", {{"active", std::nullopt}}), "t");
  EXPECT_EQ(truth("active IS FALSE", {{"active", "f"}}), "t");
  EXPECT_EQ(truth("active IS NOT FALSE", {{"active", "t"}}), "t");
  EXPECT_EQ(truth("coalesce(id, 7) = 7", {{"id", std::nullopt}}), "t");
}

TEST(WhereClauseEval, NumericComparisons) {
  EXPECT_FALSE(matches("price > 10.5", {{"price", "10.50"}}));
  EXPECT_TRUE(matches("price > 10.5", {{"price", "10.51"}}));
  EXPECT_TRUE(matches("price = 10.5", {{"price", "10.500"}}));
  EXPECT_TRUE(matches("price < -2.25", {{"price", "-3"}}));
  EXPECT_TRUE(matches("price > -2.25", {{"price", "-2.2"}}));
  EXPECT_TRUE(matches("price = 123456789012345678901234567890.5",
                      {{"price", "123456789012345678901234567890.50"}}));
  EXPECT_FALSE(matches("price = 123456789012345678901234567890.5",
                       {{"price", "123456789012345678901234567890.51"}}));
  EXPECT_TRUE(matches("price = 'NaN'", {{"price", "NaN"}}));
  EXPECT_TRUE(matches("price > 1e30", {{"price", "NaN"}}));  // NaN sorts above everything
  EXPECT_TRUE(matches("id = 1.0", {{"id", "1"}}));
  EXPECT_TRUE(matches("id < 1.5", {{"id", "1"}}));
  EXPECT_TRUE(matches("big > 9000000000000000000", {{"big", "9223372036854775807"}}));
  EXPECT_TRUE(matches("big < -9000000000000000000", {{"big", "-9223372036854775808"}}));
  EXPECT_TRUE(matches("id = -5", {{"id", "-5"}}));
  EXPECT_TRUE(matches("id = - - 5", {{"id", "5"}}));
  EXPECT_TRUE(matches("id = -(/* c */ 5)", {{"id", "-5"}}));
  EXPECT_TRUE(matches("id = 0", {{"id", "0"}}));
  EXPECT_TRUE(matches("ratio > 0.1", {{"ratio", "0.10000000000000002"}}));
  EXPECT_FALSE(matches("ratio > 0.1", {{"ratio", "0.1"}}));
  EXPECT_TRUE(matches("ratio = 'Infinity'", {{"ratio", "Infinity"}}));
  EXPECT_TRUE(matches("ratio > 1e300", {{"ratio", "NaN"}}));
  EXPECT_TRUE(matches("ratio < price", {{"ratio", "1.5"}, {"price", "2"}}));
}

TEST(WhereClauseEval, TextComparisonsAreBytewise) {
  EXPECT_TRUE(matches("name = 'bob'", {{"name", "bob"}}));
  EXPECT_FALSE(matches("name = 'Bob'", {{"name", "bob"}}));
  EXPECT_TRUE(matches("name < 'a'", {{"name", "B"}}));         // C collation: uppercase first
  EXPECT_TRUE(matches("name > 'z'", {{"name", "\xc3\xa9"}}));  // é (UTF-8) after ASCII
  EXPECT_TRUE(matches("label = name", {{"label", "x"}, {"name", "x"}}));
  EXPECT_TRUE(matches("\"we\"\"ird\" = 'q'", {{"we\"ird", "q"}}));
  EXPECT_TRUE(matches("\"Mixed\" = 3", {{"Mixed", "3"}}));
}

TEST(WhereClauseEval, BoolComparisons) {
  EXPECT_TRUE(matches("active", {{"active", "t"}}));
  EXPECT_FALSE(matches("active", {{"active", "f"}}));
  EXPECT_TRUE(matches("active = 'yes'", {{"active", "t"}}));
  EXPECT_TRUE(matches("active = false", {{"active", "f"}}));
  EXPECT_TRUE(matches("active <> flag", {{"active", "t"}, {"flag", "f"}}));
  EXPECT_TRUE(matches("active > flag", {{"active", "t"}, {"flag", "f"}}));
}

TEST(WhereClauseEval, DateAndTimestampComparisons) {
  Row row = {{"updated", "2024-01-02 03:04:05.123+00"},
             {"created", "2024-01-02 03:04:05.123"},
             {"born", "1990-05-17"}};
  EXPECT_TRUE(matches("updated > '2024-01-01'", row));
  EXPECT_TRUE(matches("updated = '2024-01-02T03:04:05.123Z'", row));
  EXPECT_TRUE(matches("updated = '2024-01-02 05:04:05.123+02'", row));
  EXPECT_TRUE(matches("updated = '2024-01-01 22:04:05.123-05:00'", row));
  EXPECT_FALSE(matches("updated > '2024-01-02 03:04:05.1231'", row));
  EXPECT_TRUE(matches("created = '2024-01-02 03:04:05.123'", row));
  EXPECT_TRUE(matches("created < '2024-01-02 03:04:05.123001'", row));
  EXPECT_TRUE(matches("created = updated", row));  // timestamp taken as UTC
  EXPECT_TRUE(matches("born < created", row));
  EXPECT_TRUE(matches("born = '1990-05-17'", row));
  EXPECT_TRUE(matches("born BETWEEN '1990-01-01' AND '1990-12-31'", row));
  EXPECT_TRUE(matches("born < 'infinity'", row));
  EXPECT_TRUE(matches("born > '0044-03-15 BC'", row));
  EXPECT_TRUE(matches("created::date = '2024-01-02'", row));
  EXPECT_TRUE(matches("updated > '-infinity'", {{"updated", "1900-01-01 00:00:00+00"}}));
}

TEST(WhereClauseEval, UuidComparisonIsCaseInsensitive) {
  Row row = {{"uid", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}};
  EXPECT_TRUE(matches("uid = 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'", row));
  EXPECT_TRUE(matches("uid = '{a0eebc999c0b4ef8bb6d6bb9bd380a11}'", row));
  EXPECT_TRUE(matches("uid::text = 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", row));
  EXPECT_TRUE(matches("uid < 'b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'", row));
}

TEST(WhereClauseEval, InLists) {
  EXPECT_TRUE(matches("id IN (1, 2, 3)", {{"id", "2"}}));
  EXPECT_FALSE(matches("id IN (1, 3)", {{"id", "2"}}));
  EXPECT_EQ(truth("id IN (1, NULL)", {{"id", "2"}}), "n");
  EXPECT_EQ(truth("id IN (1, NULL)", {{"id", "1"}}), "t");
  EXPECT_EQ(truth("id NOT IN (1, NULL)", {{"id", "2"}}), "n");
  EXPECT_EQ(truth("id NOT IN (1, NULL)", {{"id", "1"}}), "f");
  EXPECT_EQ(truth("id NOT IN (1, 3)", {{"id", "2"}}), "t");
  EXPECT_EQ(truth("id IN (1, 2)", {{"id", std::nullopt}}), "n");
  EXPECT_TRUE(matches("name IN ('a', 'b')", {{"name", "b"}}));
  EXPECT_TRUE(matches("price IN (1, 2.50)", {{"price", "2.5"}}));
}

TEST(WhereClauseEval, Between) {
  EXPECT_TRUE(matches("id BETWEEN 1 AND 3", {{"id", "3"}}));
  EXPECT_FALSE(matches("id BETWEEN 3 AND 1", {{"id", "2"}}));
  EXPECT_TRUE(matches("id BETWEEN SYMMETRIC 3 AND 1", {{"id", "2"}}));
  EXPECT_TRUE(matches("id NOT BETWEEN 1 AND 3", {{"id", "4"}}));
  EXPECT_FALSE(matches("id NOT BETWEEN SYMMETRIC 3 AND 1", {{"id", "2"}}));
  EXPECT_EQ(truth("id BETWEEN NULL AND 1", {{"id", "5"}}), "f");  // x >= NULL AND x <= 1
  EXPECT_EQ(truth("id BETWEEN NULL AND 10", {{"id", "5"}}), "n");
  EXPECT_TRUE(matches("name BETWEEN 'a' AND 'c'", {{"name", "bob"}}));
}

TEST(WhereClauseEval, LikeAndIlike) {
  EXPECT_TRUE(matches("name LIKE 'b%'", {{"name", "bob"}}));
  EXPECT_FALSE(matches("name LIKE 'B%'", {{"name", "bob"}}));
  EXPECT_TRUE(matches("name ILIKE 'B%'", {{"name", "bob"}}));
  EXPECT_TRUE(matches("name NOT ILIKE 'x%'", {{"name", "bob"}}));
  EXPECT_TRUE(matches("name LIKE '_o_'", {{"name", "bob"}}));
  EXPECT_FALSE(matches("name LIKE '_o'", {{"name", "bob"}}));
  EXPECT_TRUE(matches("name LIKE 'caf_'", {{"name", "caf\xc3\xa9"}}));  // _ is one UTF-8 character
  EXPECT_TRUE(matches("name LIKE '%\\%'", {{"name", "100%"}}));
  EXPECT_FALSE(matches("name LIKE '%\\%'", {{"name", "100"}}));
  EXPECT_TRUE(matches("name LIKE 'a!_c' ESCAPE '!'", {{"name", "a_c"}}));
  EXPECT_FALSE(matches("name LIKE 'a!_c' ESCAPE '!'", {{"name", "abc"}}));
  EXPECT_TRUE(matches("name LIKE 'a\\b' ESCAPE ''", {{"name", "a\\b"}}));
  EXPECT_TRUE(matches("name NOT LIKE '%x%'", {{"name", "bob"}}));
  EXPECT_TRUE(matches("name LIKE '%%b%o%%'", {{"name", "bob"}}));
  EXPECT_FALSE(matches("name LIKE 'bob\\'", {{"name", "bob"}}));  // trailing escape: error
  EXPECT_EQ(truth("name LIKE 'x%'", {{"name", std::nullopt}}), "n");
  EXPECT_TRUE(matches("label LIKE 'v%'", {{"label", "val"}}));
}

TEST(WhereClauseEval, Arithmetic) {
  EXPECT_TRUE(matches("id / 2 = 2", {{"id", "5"}}));
  EXPECT_TRUE(matches("id / 2 = -2", {{"id", "-5"}}));  // truncates toward zero
  EXPECT_TRUE(matches("id % 3 = -2", {{"id", "-5"}}));
  EXPECT_TRUE(matches("id * 2 + 1 = 11", {{"id", "5"}}));
  EXPECT_TRUE(matches("-id = -5", {{"id", "5"}}));
  EXPECT_TRUE(matches("price * 2 = 21.00", {{"price", "10.50"}}));
  EXPECT_TRUE(matches("price / 3 = 3.3333333333333333", {{"price", "10"}}));
  EXPECT_TRUE(matches("price - 0.1 = 10.4", {{"price", "10.5"}}));
  EXPECT_TRUE(matches("0.1 + 0.2 = 0.3", {}));  // numeric is exact
  // Division scales as PostgreSQL's numeric (checked against PostgreSQL 15).
  EXPECT_TRUE(matches("1.0 / 3.0 = 0.33333333333333333333", {}));
  EXPECT_TRUE(matches("price / 7 = 14285.714285714286", {{"price", "100000"}}));
  EXPECT_TRUE(matches("0.001 / 7 = 0.00014285714285714286", {}));
  EXPECT_FALSE(matches("0.1::float4 = 0.1", {}));  // compared in float8, as PostgreSQL
  EXPECT_TRUE(matches("ratio::text = '1e+20'", {{"ratio", "1e20"}}));
  EXPECT_TRUE(matches("ratio::text = '1.234567890123456e+15'", {{"ratio", "1234567890123456"}}));
  EXPECT_TRUE(matches("ratio::text = '123456789012345'", {{"ratio", "123456789012345.0"}}));
  EXPECT_TRUE(matches("ratio::text = '1e-05'", {{"ratio", "0.00001"}}));
  EXPECT_TRUE(matches("price % 3 = 1.5", {{"price", "10.5"}}));
  EXPECT_TRUE(matches("id + 0.5 = 5.5", {{"id", "5"}}));
  EXPECT_TRUE(matches("ratio * 2 = 3", {{"ratio", "1.5"}}));
  // Errors (PostgreSQL would raise): the row does not match...
  EXPECT_FALSE(matches("id / 0 = 1", {{"id", "5"}}));
  EXPECT_FALSE(matches("NOT (id / 0 = 1)", {{"id", "5"}}));
  EXPECT_FALSE(matches("small * small > 0", {{"small", "200"}}));  // int2 overflow
  EXPECT_TRUE(matches("small + 32767 > 0", {{"small", "1"}}));     // int2 + int4 is int4
  EXPECT_FALSE(matches("id * 1000000 > 0", {{"id", "5000"}}));
  EXPECT_TRUE(matches("big * 1000000 > 0", {{"big", "5000"}}));
  // ...unless a previous AND/OR argument already decided.
  EXPECT_TRUE(matches("id = 5 OR id / 0 = 1", {{"id", "5"}}));
  EXPECT_FALSE(matches("id = 4 AND id / 0 = 1", {{"id", "5"}}));
}

TEST(WhereClauseEval, ConcatFunctionsAndCasts) {
  EXPECT_TRUE(matches("name || '!' = 'bob!'", {{"name", "bob"}}));
  EXPECT_TRUE(matches("name || id = 'bob5'", {{"name", "bob"}, {"id", "5"}}));
  EXPECT_EQ(truth("name || 'x' = 'x'", {{"name", std::nullopt}}), "n");
  EXPECT_TRUE(matches("lower(name) = 'bob'", {{"name", "BoB"}}));
  EXPECT_TRUE(matches("upper(name) = 'BOB'", {{"name", "bob"}}));
  EXPECT_TRUE(matches("length(name) = 4", {{"name", "caf\xc3\xa9"}}));
  EXPECT_TRUE(matches("abs(id) = 5", {{"id", "-5"}}));
  EXPECT_TRUE(matches("abs(price) = 1.5", {{"price", "-1.5"}}));
  EXPECT_TRUE(matches("trim(name) = 'bob'", {{"name", "  bob "}}));
  EXPECT_TRUE(matches("btrim(name, 'xy') = 'bob'", {{"name", "xybobyx"}}));
  EXPECT_TRUE(matches("trim(leading 'x' from name) = 'bobx'", {{"name", "xxbobx"}}));
  EXPECT_TRUE(matches("rtrim(name) = ' bob'", {{"name", " bob  "}}));
  EXPECT_TRUE(matches("coalesce(name, label, 'none') = 'none'", {}));
  EXPECT_TRUE(matches("id::text = '5'", {{"id", "5"}}));
  EXPECT_TRUE(matches("name::int4 = 5", {{"name", " 5 "}}));
  EXPECT_FALSE(matches("name::int4 = 5", {{"name", "x"}}));  // invalid cast: no match
  EXPECT_TRUE(matches("active::text = 'true'", {{"active", "t"}}));
  EXPECT_TRUE(matches("CAST(price AS int4) = 11", {{"price", "10.5"}}));  // half away from zero
  EXPECT_TRUE(matches("ratio::int4 = 2", {{"ratio", "2.5"}}));            // rint: half to even
  EXPECT_TRUE(matches("ratio::numeric = 0.1", {{"ratio", "0.1"}}));
  EXPECT_TRUE(matches("doc::text LIKE '%\"a\"%'", {{"doc", "{\"a\": 1}"}}));
  EXPECT_TRUE(matches("tags::text = '{x,y}'", {{"tags", "{x,y}"}}));
  EXPECT_TRUE(matches("'2024-01-01'::date < born", {{"born", "2024-02-01"}}));
}

TEST(WhereClauseEval, Params) {
  Params params = {{1, "5"}, {2, "bob"}, {3, "2024-01-01"}};
  auto clause = parse_ok("id = $1 AND name = $2 AND updated >= $3", params);
  EXPECT_TRUE(clause.matches(
      row_values({{"id", "5"}, {"name", "bob"}, {"updated", "2024-01-01 00:00:00+00"}})));
  EXPECT_FALSE(clause.matches(
      row_values({{"id", "5"}, {"name", "bob"}, {"updated", "2023-12-31 23:59:59+00"}})));
  EXPECT_TRUE(matches("$1::int4 + id = 10", {{"id", "5"}}, {{1, "5"}}));
  EXPECT_TRUE(
      matches("name = $1", {{"name", "x'); DROP TABLE t; --"}}, {{1, "x'); DROP TABLE t; --"}}));
}

// --- rendering --------------------------------------------------------------------------

TEST(WhereClauseSql, RendersPlaceholdersAndQuotedIdentifiers) {
  auto clause = parse_ok("id = 5 AND name = 'x'");
  std::vector<std::optional<std::string>> bound = {"earlier"};
  EXPECT_EQ(clause.to_sql(2, bound), "(\"id\" = $2::int4) AND (\"name\" = $3::text)");
  EXPECT_EQ(bound, (std::vector<std::optional<std::string>>{"earlier", "5", "x"}));
}

TEST(WhereClauseSql, RendersEveryForm) {
  struct Case {
    std::string where;
    std::string sql;
    std::vector<std::optional<std::string>> bound;
    Params params;
  };
  const std::vector<Case> cases = {
      {"name > 'a'", "(\"name\" COLLATE \"C\") > $1::text", {"a"}, {}},
      {"\"we\"\"ird\" = '1'", "\"we\"\"ird\" = $1::text", {"1"}, {}},
      {"id NOT IN (1, NULL)", "\"id\" NOT IN ($1::int4, $2::int4)", {"1", std::nullopt}, {}},
      {"updated >= $1",
       "\"updated\" >= $1::timestamptz",
       {"2024-01-01 00:00:00+00"},
       {{1, "2024-01-01"}}},
      {"uid = $1",
       "\"uid\" = $1::uuid",
       {"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"},
       {{1, "A0EEBC999C0B4EF8BB6D6BB9BD380A11"}}},
      {"NOT (active IS NOT TRUE OR price BETWEEN 1 AND 2.5)",
       "NOT ((\"active\" IS NOT TRUE) OR (\"price\" BETWEEN $1::numeric AND $2::numeric))",
       {"1", "2.5"},
       {}},
      {"lower(name) ILIKE 'a%' ESCAPE '!'",
       "(lower(\"name\" COLLATE \"C\") COLLATE \"C\") ILIKE $1::text ESCAPE $2::text",
       {"a%", "!"},
       {}},
      {"-id * 2 > abs(big)", "((- \"id\") * $1::int4) > abs(\"big\")", {"2"}, {}},
      {"CAST(name AS int4) + id = 3 OR name || id IS NULL",
       "((CAST(\"name\" AS int4) + \"id\") = $1::int4) OR ((\"name\" || \"id\") IS NULL)",
       {"3"},
       {}},
      {"coalesce(born, '2024-01-01') IS DISTINCT FROM created",
       "COALESCE(\"born\", $1::date) IS DISTINCT FROM \"created\"",
       {"2024-01-01"},
       {}},
      {"active = true", "\"active\" = $1::bool", {"t"}, {}},
  };
  for (const auto& c : cases) {
    const std::string& where = c.where;
    auto clause = parse_ok(where, c.params);
    std::vector<std::optional<std::string>> bound;
    EXPECT_EQ(clause.to_sql(1, bound), c.sql) << where;
    EXPECT_EQ(bound, c.bound) << where;
  }
}

TEST(WhereClauseSql, InjectionAttemptsAreRefusedOrBound) {
  EXPECT_ERROR_CONTAINS("id = 1; DROP TABLE x", "unescaped ;");
  EXPECT_EQ(parse_error("id = 1 OR pg_sleep(1) IS NULL"), "function pg_sleep is not supported");
  EXPECT_EQ(parse_error("\"id\"\"; DROP TABLE x; --\" = 1"),
            "unknown column \"id\"; DROP TABLE x; --\"");
  EXPECT_ERROR_CONTAINS("id = 1 -- ; DROP TABLE x\n OR (SELECT true)",
                        "subqueries are not supported");
  auto clause =
      parse_ok("name = 'x''; DROP TABLE t; --' OR name = $1", {{1, "'); DELETE FROM t; --"}});
  std::vector<std::optional<std::string>> bound;
  std::string sql = clause.to_sql(1, bound);
  EXPECT_EQ(sql, "(\"name\" = $1::text) OR (\"name\" = $2::text)");
  EXPECT_EQ(bound, (std::vector<std::optional<std::string>>{"x'; DROP TABLE t; --",
                                                            "'); DELETE FROM t; --"}));
}

TEST(WhereClauseSql, NormalizedIgnoresWhitespaceCaseAndSpelling) {
  EXPECT_EQ(parse_ok("ID=1   and NAME='x'").normalized(),
            parse_ok("id = 1 AND name = 'x'").normalized());
  EXPECT_EQ(parse_ok("id = $1", {{1, "1"}}).normalized(), parse_ok("id = 1").normalized());
  EXPECT_EQ(parse_ok("updated > '2024-01-01'").normalized(),
            parse_ok("updated > '2024-01-01T00:00:00Z'").normalized());
  EXPECT_NE(parse_ok("id = 1").normalized(), parse_ok("id = 2").normalized());
  // Found by the fuzzer: negated constants fold, so the canonical text reparses to itself.
  EXPECT_EQ(parse_ok("id = - +-3").normalized(), parse_ok("id = 3").normalized());
  EXPECT_EQ(parse_ok("id = '-2147483648'").normalized(), "\"id\" = (-2147483648)");
  EXPECT_EQ(parse_ok("id = 1 AND name = 'it''s'").normalized(),
            "(\"id\" = 1) AND (\"name\" = 'it''s')");
  EXPECT_EQ(parse_ok("lower(name) > 'a'").normalized(), "lower(\"name\") > 'a'");  // no COLLATE
  EXPECT_EQ(parse_ok("id - -5 > 0").normalized(), "(\"id\" - (-5)) > 0");
  EXPECT_EQ(
      parse_ok("price > 1.50 AND big = 5 AND born = '2024-01-01' AND NOT active").normalized(),
      "(\"price\" > 1.50) AND (\"big\" = 5::int8) AND (\"born\" = '2024-01-01'::date) AND (NOT "
      "\"active\")");
}

// Found by the fuzzer: the longest `ratio * 1.5 * ... > 1` chain accepted had
// a normalized text refused as "nested too deeply" (each constant is written
// as a typed literal, '1.5'::float8, one parse-tree level deeper). A typed
// literal now counts as one level: whatever is accepted normalizes to a
// fixed point, and one term more is refused with a clear message.
TEST(WhereClauseSql, TheLongestAcceptedChainNormalizesToAFixedPoint) {
  for (std::string term : {"1.5", "1", "'2'", "$1"}) {
    int longest = 0;
    for (int terms = 150; terms <= 260; ++terms) {
      std::string text = "ratio";
      for (int i = 1; i < terms; ++i) text += " * " + term;
      text += " > 1";
      Params params;
      if (term == "$1") params[1] = "3";
      auto clause = WhereClause::parse(text, kColumns, params);
      if (!clause.ok()) {
        EXPECT_EQ(clause.error().message, "where clause is nested too deeply") << terms;
        break;
      }
      longest = terms;
      auto again = WhereClause::parse(clause->normalized(), kColumns, {});
      ASSERT_TRUE(again.ok()) << term << " x " << terms << ": " << again.error().message;
      EXPECT_EQ(again->normalized(), clause->normalized()) << term << " x " << terms;
    }
    EXPECT_GT(longest, 190) << term;
    EXPECT_LT(longest, 260) << term << ": deep chains must be refused";
  }
}

TEST(WhereClauseSql, ReferencedColumns) {
  EXPECT_EQ(
      parse_ok("id = 1 AND (name = 'x' OR id > 2) AND \"Mixed\" IS NULL").referenced_columns(),
      (std::vector<std::string>{"id", "name", "Mixed"}));
  EXPECT_TRUE(parse_ok("true").referenced_columns().empty());
}

}  // namespace
}  // namespace shapeproxy::where
