// Unit tests of GET/DELETE /v1/shape parameter parsing: every validation rule
// with Electric's exact 400 bodies, identifier quoting, and hostile input.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "api/shape_params.h"
#include "common/text.h"

namespace shapeproxy::api {
namespace {

using json = nlohmann::json;
using Start = shapes::ReadRequest::Start;

ParamsOutcome parse(const std::string& query) {
  return parse_shape_params(http::Request(http::Verb::get, "/v1/shape?" + query, {}));
}

ShapeParams ok(const std::string& query) {
  auto outcome = parse(query);
  if (auto* errors = std::get_if<ValidationErrors>(&outcome)) {
    ADD_FAILURE() << query << " -> " << json(*errors).dump();
    return {};
  }
  return std::get<ShapeParams>(std::move(outcome));
}

// The whole 400 body for `query`.
json error_body(const std::string& query) {
  auto outcome = parse(query);
  auto* errors = std::get_if<ValidationErrors>(&outcome);
  if (!errors) {
    ADD_FAILURE() << query << " was accepted";
    return {};
  }
  auto response = invalid_request_response(*errors);
  EXPECT_EQ(response.status, 400u);
  return json::parse(response.body_view());
}

json invalid(json errors) { return {{"message", "Invalid request"}, {"errors", errors}}; }

TEST(ShapeParamsTest, MinimalSnapshotRequest) {
  auto p = ok("table=items&offset=-1");
  EXPECT_EQ(p.definition.schema, "public");
  EXPECT_EQ(p.definition.table, "items");
  EXPECT_EQ(p.read.start, Start::kBeforeAll);
  EXPECT_FALSE(p.read.live);
  EXPECT_FALSE(p.live_sse);
  EXPECT_FALSE(p.read.handle);
  EXPECT_FALSE(p.definition.where);
  EXPECT_FALSE(p.definition.columns);
  EXPECT_TRUE(p.definition.params.empty());
  EXPECT_EQ(p.definition.replica, shapes::ReplicaMode::kDefault);
  EXPECT_EQ(p.definition.log, shapes::LogMode::kFull);
  EXPECT_EQ(p.requested_offset, "-1");
}

TEST(ShapeParamsTest, ErrorResponseHasNoStoreCaching) {
  auto r = invalid_request_response({{"table", {"can't be blank"}}});
  EXPECT_EQ(r.status, 400u);
  EXPECT_EQ(r.body_view(),
            R"({"errors":{"table":["can't be blank"]},"message":"Invalid request"})");
  auto has = [&](std::string name, std::string value) {
    for (auto& [k, v] : r.headers)
      if (k == name && v == value) return true;
    return false;
  };
  EXPECT_TRUE(has("cache-control", "no-store"));
  EXPECT_TRUE(has("surrogate-control", "no-store"));
  EXPECT_TRUE(has("content-type", "application/json"));
}

TEST(ShapeParamsTest, TableNamesAndQuoting) {
  auto table = [](std::string q) {
    auto p = ok("offset=-1&table=" + q);
    return p.definition.schema + "|" + p.definition.table;
  };
  EXPECT_EQ(table("Items"), "public|items");
  EXPECT_EQ(table("%22My%20Table%22"), "public|My Table");
  EXPECT_EQ(table("%22a%22%22b%22"), "public|a\"b");
  EXPECT_EQ(table("Sales.Orders"), "sales|orders");
  EXPECT_EQ(table("s.%22x.y%22"), "s|x.y");
  EXPECT_EQ(table("%22S.1%22.%22T%22"), "S.1|T");
  EXPECT_EQ(table("_t$1"), "public|_t$1");
  EXPECT_EQ(table("caf%C3%A9"), "public|caf\xC3\xA9");
  EXPECT_EQ(table(std::string(63, 'a')), "public|" + std::string(63, 'a'));
}

TEST(ShapeParamsTest, TableErrors) {
  auto table_error = [](std::string q) { return error_body("offset=-1&table=" + q); };
  EXPECT_EQ(error_body("offset=-1"), invalid({{"table", {"can't be blank"}}}));
  EXPECT_EQ(table_error(""), invalid({{"table", {"can't be blank"}}}));
  EXPECT_EQ(table_error("a.b.c"),
            invalid({{"table", {"Invalid relation identifier, too many delimiters: a.b.c"}}}));
  EXPECT_EQ(
      table_error("foo%40bar"),
      invalid({{"table", {"Invalid unquoted identifier contains special characters: foo@bar"}}}));
  EXPECT_EQ(
      table_error("1abc"),
      invalid({{"table", {"Invalid unquoted identifier contains special characters: 1abc"}}}));
  EXPECT_EQ(table_error("%22%22"),
            invalid({{"table", {"Invalid zero-length delimited identifier"}}}));
  EXPECT_EQ(table_error("public."),
            invalid({{"table", {"Invalid zero-length delimited identifier"}}}));
  EXPECT_EQ(table_error("%22a%22b%22"),
            invalid({{"table", {"Invalid identifier with unescaped quote: a\"b"}}}));
  EXPECT_EQ(table_error(std::string(64, 'a')),
            invalid({{"table", {"Identifier is too long (max length is 63)"}}}));
}

TEST(ShapeParamsTest, Offsets) {
  auto p = ok("table=t&offset=12_3&handle=h");
  EXPECT_EQ(p.read.start, Start::kAt);
  EXPECT_EQ(p.read.offset, shapes::LogOffset::at(12, 3));
  EXPECT_EQ(p.read.handle, "h");
  EXPECT_EQ(p.requested_offset, "12_3");
  p = ok("table=t&offset=7_inf&handle=h");
  EXPECT_EQ(p.read.offset, shapes::LogOffset::at(7, shapes::LogOffset::kInfinity));
  EXPECT_EQ(p.requested_offset, "7_inf");
  p = ok("table=t&offset=0_02&handle=h");
  EXPECT_EQ(p.requested_offset, "0_2");
  p = ok("table=t&offset=18446744073709551615_0&handle=h");
  EXPECT_EQ(p.read.offset.tx, 18446744073709551615ull);
  p = ok("table=t&offset=now");
  EXPECT_EQ(p.read.start, Start::kNow);
  EXPECT_EQ(p.requested_offset, "now");

  EXPECT_EQ(error_body("table=t"), invalid({{"offset", {"can't be blank"}}}));
  EXPECT_EQ(error_body("table=t&offset="), invalid({{"offset", {"can't be blank"}}}));
  for (std::string bad : {"abc", "-2", "1", "1_2_3", "1_", "_1", "+1_2", "1_-2", "%201_2", "1_2%20",
                          "1.5_2", "1_2.5", "99999999999999999999999_1", "18446744073709551616_0",
                          "1_18446744073709551615", "0x1_2", "NOW", "1_INF"}) {
    SCOPED_TRACE(bad);
    EXPECT_EQ(error_body("table=t&handle=h&offset=" + bad),
              invalid({{"offset", {"has invalid format"}}}));
  }
}

TEST(ShapeParamsTest, HandleRules) {
  EXPECT_EQ(error_body("table=t&offset=1_0"),
            invalid({{"handle", {"can't be blank when offset != -1"}}}));
  EXPECT_EQ(error_body("table=t&offset=1_0&handle="),
            invalid({{"handle", {"can't be blank when offset != -1"}}}));
  // Ignored (a cache buster) with -1 and now.
  EXPECT_FALSE(ok("table=t&offset=-1&handle=h").read.handle);
  EXPECT_FALSE(ok("table=t&offset=now&handle=h").read.handle);
}

TEST(ShapeParamsTest, LiveRules) {
  auto p = ok("table=t&offset=5_1&handle=h&live=true&cursor=123");
  EXPECT_TRUE(p.read.live);
  EXPECT_EQ(p.cursor, "123");
  EXPECT_TRUE(ok("table=t&offset=5_1&handle=h&live=1").read.live);
  EXPECT_FALSE(ok("table=t&offset=5_1&handle=h&live=false").read.live);
  EXPECT_FALSE(ok("table=t&offset=5_1&handle=h&live=").read.live);
  EXPECT_EQ(error_body("table=t&offset=-1&live=true"),
            invalid({{"live", {"can't be true when offset == -1"}}}));
  EXPECT_EQ(error_body("table=t&offset=now&live=true"),
            invalid({{"live", {"can't be true when offset is 'now'"}}}));
  EXPECT_EQ(error_body("table=t&offset=1_0&handle=h&live=yes"),
            invalid({{"live", {"is invalid"}}}));
}

TEST(ShapeParamsTest, SseRules) {
  EXPECT_TRUE(ok("table=t&offset=5_1&handle=h&live=true&live_sse=true").live_sse);
  EXPECT_TRUE(ok("table=t&offset=5_1&handle=h&live=true&experimental_live_sse=true").live_sse);
  EXPECT_FALSE(ok("table=t&offset=5_1&handle=h&live=true&live_sse=false").live_sse);
  EXPECT_EQ(error_body("table=t&offset=5_1&handle=h&live_sse=true"),
            invalid({{"live_sse", {"can't be true unless live is also true"}}}));
  EXPECT_EQ(error_body("table=t&offset=5_1&handle=h&experimental_live_sse=true"),
            invalid({{"live_sse", {"can't be true unless live is also true"}}}));
  EXPECT_EQ(error_body("table=t&offset=5_1&handle=h&live=true&live_sse=x"),
            invalid({{"live_sse", {"is invalid"}}}));
}

TEST(ShapeParamsTest, WhereAndParams) {
  auto p =
      ok("table=t&offset=-1&where=id%20%3D%20%241%20OR%20id%20%3D%20%242&params%5B1%5D=a"
         "&params[2]=b%26c");
  EXPECT_EQ(p.definition.where, "id = $1 OR id = $2");
  EXPECT_EQ(p.definition.params, (std::map<int, std::string>{{1, "a"}, {2, "b&c"}}));
  p = ok("table=t&offset=-1&params=%7B%221%22%3A%22x%22%2C%222%22%3A3%7D");  // {"1":"x","2":3}
  EXPECT_EQ(p.definition.params, (std::map<int, std::string>{{1, "x"}, {2, "3"}}));
  EXPECT_EQ(error_body("table=t&offset=-1&params=%5B1%5D"),
            invalid({{"params", {"params must be a JSON object"}}}));
  EXPECT_EQ(error_body("table=t&offset=-1&params=nope"),
            invalid({{"params", {"params must be valid JSON"}}}));
  EXPECT_EQ(
      error_body("table=t&offset=-1&params[x]=1"),
      invalid({{"params",
                {"invalid parameter name: x (expected a positive integer, as in params[1])"}}}));
  EXPECT_EQ(error_body("table=t&offset=-1&params[0]=1").at("errors").contains("params"), true);
}

TEST(ShapeParamsTest, Columns) {
  auto p = ok("table=t&offset=-1&columns=id,%22Name,%20with%20comma%22,Title,%22q%22%22x%22");
  EXPECT_EQ(p.definition.columns,
            (std::vector<std::string>{"id", "Name, with comma", "title", "q\"x"}));
  EXPECT_FALSE(ok("table=t&offset=-1&columns=").definition.columns);
  EXPECT_EQ(error_body("table=t&offset=-1&columns=id,"),
            invalid({{"columns", {"Invalid zero-length delimited identifier"}}}));
  EXPECT_EQ(
      error_body("table=t&offset=-1&columns=id,%20name"),
      invalid({{"columns", {"Invalid unquoted identifier contains special characters:  name"}}}));
  EXPECT_EQ(
      error_body("table=t&offset=-1&columns=%22id,%22name%22"),
      invalid({{"columns", {"Invalid unquoted identifier contains special characters: \"id"}}}));
}

TEST(ShapeParamsTest, ReplicaAndLog) {
  EXPECT_EQ(ok("table=t&offset=-1&replica=full").definition.replica, shapes::ReplicaMode::kFull);
  EXPECT_EQ(ok("table=t&offset=-1&replica=default").definition.replica,
            shapes::ReplicaMode::kDefault);
  EXPECT_EQ(ok("table=t&offset=-1&log=changes_only").definition.log, shapes::LogMode::kChangesOnly);
  EXPECT_EQ(ok("table=t&offset=-1&log=full").definition.log, shapes::LogMode::kFull);
  // Cast errors are reported together, before the offset rules.
  EXPECT_EQ(error_body("table=t&replica=FULL&log=some&live=maybe"),
            invalid({{"replica", {"is invalid"}},
                     {"log", {"is invalid"}},
                     {"live", {"is invalid"}},
                     {"offset", {"can't be blank"}}}));
}

TEST(ShapeParamsTest, UnknownParamsIgnoredAndLastDuplicateWins) {
  auto p = ok("table=t&offset=-1&expired_handle=x&cache-buster=1&secret=s&foo&table=u");
  EXPECT_EQ(p.definition.table, "u");
}

TEST(ShapeParamsTest, DeleteParams) {
  auto parse_delete = [](std::string q) {
    return parse_delete_params(http::Request(http::Verb::delete_, "/v1/shape?" + q, {}));
  };
  auto by_handle = parse_delete("handle=h");
  ASSERT_TRUE(std::holds_alternative<DeleteParams>(by_handle));
  EXPECT_EQ(std::get<DeleteParams>(by_handle).handle, "h");
  auto by_table = parse_delete("table=Foo.Bar");
  ASSERT_TRUE(std::holds_alternative<DeleteParams>(by_table));
  EXPECT_EQ(std::get<DeleteParams>(by_table).definition.table, "bar");
  auto none = parse_delete("");
  ASSERT_TRUE(std::holds_alternative<ValidationErrors>(none));
  EXPECT_EQ(json(std::get<ValidationErrors>(none)),
            json({{"handle", {"can't be blank when shape definition is missing"}}}));
}

// Random bytes, percent-encoded or raw, must never crash the parser.
TEST(ShapeParamsTest, HostileInputNeverCrashes) {
  std::mt19937 rng(42);
  const std::string names[] = {"table",   "offset", "handle",    "live",    "live_sse",
                               "where",   "params", "params[1]", "params[", "columns",
                               "replica", "log",    "cursor",    ""};
  for (int i = 0; i < 20000; ++i) {
    std::string query;
    int n = static_cast<int>(rng() % 6);
    for (int j = 0; j < n; ++j) {
      query += names[rng() % std::size(names)];
      query += '=';
      int len = static_cast<int>(rng() % 40);
      for (int k = 0; k < len; ++k) {
        char c = static_cast<char>(rng() % 256);
        if (rng() % 3 == 0)
          query += "%" + std::string(1, "0123456789ABCDEFZ"[rng() % 17]) +
                   std::string(1, "0123456789abcdef%"[rng() % 17]);
        else
          query += c;
      }
      query += '&';
    }
    auto outcome = parse(query);
    if (auto* errors = std::get_if<ValidationErrors>(&outcome)) {
      EXPECT_FALSE(errors->empty());
      (void)invalid_request_response(*errors).body_view();  // serializable, even with bad UTF-8
    }
  }
}

// Issue 16 items 4 and 6: bytes PostgreSQL and the JSON writer cannot take
// are refused at the edge with a 400 naming the parameter.
TEST(ShapeParamsTest, InvalidUtf8AndNulAreRejected) {
  EXPECT_EQ(error_body("table=items&offset=-1&where=id%3D%241&params%5B1%5D=%c3%28"),
            invalid({{"params", {"must be valid UTF-8"}}}));
  EXPECT_EQ(error_body("table=items&offset=-1&where=id%3D1%20--%20%ff"),
            invalid({{"where", {"must be valid UTF-8"}}}));
  EXPECT_EQ(error_body("table=items&offset=-1&where=title%3D%241&params%5B1%5D=a%00b"),
            invalid({{"params", {"must not contain a NUL character"}}}));
  EXPECT_EQ(error_body("table=it%00ems&offset=-1"),
            invalid({{"table", {"must not contain a NUL character"}}}));
  EXPECT_EQ(error_body(
                "table=items&offset=-1&where=title%3D%241&params=%7B%221%22%3A%22a%5Cu0000b%22%7D"),
            invalid({{"params", {"must not contain a NUL character"}}}));
  EXPECT_EQ(error_body("table=items&offset=-1&columns=id%2C%e2%82"),
            invalid({{"columns", {"must be valid UTF-8"}}}));
  // Valid multi-byte text passes; unknown parameters are not checked.
  auto p = ok("table=items&offset=-1&where=title%3D%241&params%5B1%5D=%c3%a9t%c3%a9&x=%ff");
  EXPECT_EQ(p.definition.params.at(1), "\xc3\xa9t\xc3\xa9");
  auto d = parse_delete_params(http::Request(http::Verb::delete_, "/v1/shape?handle=a%00b", {}));
  EXPECT_TRUE(std::holds_alternative<ValidationErrors>(d));
}

// Issue 16 item 9: one helper makes any user string one harmless log line.
TEST(ShapeParamsTest, LogSafeEscapesControlCharacters) {
  EXPECT_EQ(text::log_safe("items\n[error] FORGED-LOG-LINE"), "items\\n[error] FORGED-LOG-LINE");
  EXPECT_EQ(text::log_safe(std::string("a\0b\x1b[31m\x7f\\", 10)), "a\\x00b\\x1b[31m\\x7f\\\\");
  EXPECT_EQ(text::log_safe("caf\xc3\xa9 \xff\xc3"), "caf\xc3\xa9 \\xff\\xc3");
  EXPECT_TRUE(text::valid_utf8("caf\xc3\xa9 \xf0\x9f\x98\x80"));
  EXPECT_FALSE(text::valid_utf8("\xc3\x28"));
  EXPECT_FALSE(text::valid_utf8("\xc0\xaf"));          // overlong
  EXPECT_FALSE(text::valid_utf8("\xed\xa0\x80"));      // surrogate
  EXPECT_FALSE(text::valid_utf8("\xf4\x90\x80\x80"));  // above U+10FFFF
  EXPECT_FALSE(text::valid_utf8("\xe2\x82"));          // truncated
}

}  // namespace
}  // namespace shapeproxy::api

namespace shapeproxy::api {
namespace {

// Accept-Encoding (RFC 9110 12.5.3) decides whether a stored gzip chunk goes
// out as it is: gzip or x-gzip, else "*", any case, q=0 refusing; several
// fields count together; no field means identity only.
TEST(ShapeParamsTest, AcceptEncodingDecidesWhetherGzipIsAccepted) {
  auto accepts = [](std::vector<std::string> values) {
    http::Params headers;
    for (auto& value : values) headers.emplace_back("Accept-Encoding", std::move(value));
    auto parsed = parse_shape_params(
        http::Request(http::Verb::get, "/v1/shape?table=items&offset=-1", std::move(headers)));
    return std::get<ShapeParams>(parsed).accepts_gzip;
  };
  EXPECT_FALSE(accepts({}));
  EXPECT_TRUE(accepts({"gzip"}));
  EXPECT_TRUE(accepts({"gzip, deflate, br"}));        // Node's fetch (undici)
  EXPECT_TRUE(accepts({"gzip, deflate, br, zstd"}));  // browsers
  EXPECT_TRUE(accepts({"GZip ;q=0.5"}));
  EXPECT_TRUE(accepts({"x-gzip"}));
  EXPECT_TRUE(accepts({"*"}));
  EXPECT_TRUE(accepts({"br", "gzip"}));
  EXPECT_FALSE(accepts({"identity"}));
  EXPECT_FALSE(accepts({""}));
  EXPECT_FALSE(accepts({"deflate, br"}));
  EXPECT_FALSE(accepts({"gzip;q=0"}));
  EXPECT_FALSE(accepts({"gzip; q=0.000, identity"}));
  EXPECT_FALSE(accepts({"*, gzip;q=0"}));  // named beats the wildcard
  EXPECT_FALSE(accepts({"*;q=0"}));
  EXPECT_TRUE(accepts({"gzip;q=0.001"}));
  EXPECT_TRUE(accepts({"gzipped, gzip"}));
  EXPECT_FALSE(accepts({"gzipped"}));
}

}  // namespace
}  // namespace shapeproxy::api
