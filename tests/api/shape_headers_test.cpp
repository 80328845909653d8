// Unit tests of the response rules: cache-control per case, electric-cursor
// math with a fixed clock, electric-* headers, etag/304, 409, 400, 503.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "api/live_cursor.h"
#include "api/shape_headers.h"

namespace shapeproxy::api {
namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;
using Start = shapes::ReadRequest::Start;
using TimePoint = std::chrono::system_clock::time_point;

TimePoint at_epoch_plus(std::int64_t seconds) {
  return TimePoint(std::chrono::seconds(kCursorEpochUnixSeconds + seconds));
}

std::optional<std::string> header(const http::Response& r, std::string_view name) {
  for (const auto& [k, v] : r.headers)
    if (http::iequals(k, name)) return v;
  return std::nullopt;
}

ShapeParams params_at(Start start, bool live = false, bool sse = false) {
  ShapeParams p;
  p.read.start = start;
  p.read.offset = start == Start::kAt ? shapes::LogOffset::at(10, 2) : shapes::LogOffset{};
  p.read.handle = start == Start::kAt ? std::optional<std::string>("h1") : std::nullopt;
  p.read.live = live;
  p.live_sse = sse;
  p.requested_offset = start == Start::kAt ? "10_2" : start == Start::kNow ? "now" : "-1";
  return p;
}

ShapeApiOptions fixed_clock_options(std::int64_t seconds_after_epoch = 101) {
  ShapeApiOptions o;
  o.clock = [seconds_after_epoch] { return at_epoch_plus(seconds_after_epoch); };
  return o;
}

shapes::ReadResult result_at(shapes::LogOffset offset, bool up_to_date = false) {
  shapes::ReadResult r;
  r.handle = "h1";
  r.offset = offset;
  r.body = std::make_shared<const std::string>(R"([{"headers":{"control":"up-to-date"}}])");
  r.up_to_date = up_to_date;
  r.schema_json = R"({"id":{"type":"int4","pk_index":0}})";
  return r;
}

TEST(LiveCursorTest, RoundsUpToTheNextInterval) {
  EXPECT_EQ(next_live_cursor(at_epoch_plus(100), 20s, std::nullopt), 100);
  EXPECT_EQ(next_live_cursor(at_epoch_plus(101), 20s, std::nullopt), 120);
  EXPECT_EQ(next_live_cursor(at_epoch_plus(119), 20s, std::nullopt), 120);
  EXPECT_EQ(next_live_cursor(at_epoch_plus(121), 20s, "garbage"), 140);
  EXPECT_EQ(next_live_cursor(at_epoch_plus(121), 20s, "99999999999999999999999"), 140);
  EXPECT_EQ(next_live_cursor(at_epoch_plus(121), 20s, "-5"), 140);
  EXPECT_EQ(next_live_cursor(at_epoch_plus(0), 20s, std::nullopt), 0);
  EXPECT_EQ(next_live_cursor(at_epoch_plus(5), 500ms, std::nullopt), 0);  // < 1 s: 0
}

TEST(LiveCursorTest, AlwaysGreaterThanTheRequestCursor) {
  EXPECT_EQ(next_live_cursor(at_epoch_plus(101), 20s, "120"), 140);
  EXPECT_EQ(next_live_cursor(at_epoch_plus(101), 20s, "125"), 140);
  EXPECT_EQ(next_live_cursor(at_epoch_plus(101), 20s, "999"), 1000);
  EXPECT_EQ(next_live_cursor(at_epoch_plus(101), 20s, "119"), 120);  // already greater
}

TEST(ShapeHeadersTest, CacheControlPerCase) {
  ShapeApiOptions o;
  EXPECT_EQ(success_cache_control(params_at(Start::kBeforeAll), o),
            "public, max-age=604800, s-maxage=3600, stale-while-revalidate=2629746");
  EXPECT_EQ(success_cache_control(params_at(Start::kAt), o),
            "public, max-age=60, stale-while-revalidate=300");
  EXPECT_EQ(success_cache_control(params_at(Start::kNow), o),
            "public, max-age=60, stale-while-revalidate=300");
  EXPECT_EQ(success_cache_control(params_at(Start::kAt, true), o),
            "public, max-age=5, stale-while-revalidate=5");
  EXPECT_EQ(success_cache_control(params_at(Start::kAt, true, true), o), "public, max-age=59");
  o.max_age_seconds = 7;
  o.stale_while_revalidate_seconds = 9;
  o.sse_max_duration = 500ms;
  EXPECT_EQ(success_cache_control(params_at(Start::kAt), o),
            "public, max-age=7, stale-while-revalidate=9");
  EXPECT_EQ(success_cache_control(params_at(Start::kAt, true, true), o), "public, max-age=1");
}

TEST(ShapeHeadersTest, NonLiveResponse) {
  auto r = read_response(result_at(shapes::LogOffset::at(11, 0)), params_at(Start::kAt),
                         fixed_clock_options(), std::nullopt);
  EXPECT_EQ(r.status, 200u);
  EXPECT_EQ(header(r, "content-type"), "application/json");
  EXPECT_EQ(header(r, "electric-handle"), "h1");
  EXPECT_EQ(header(r, "electric-offset"), "11_0");
  EXPECT_EQ(header(r, "electric-schema"), R"({"id":{"type":"int4","pk_index":0}})");
  EXPECT_FALSE(header(r, "electric-cursor"));
  EXPECT_FALSE(header(r, "electric-up-to-date"));
  EXPECT_FALSE(header(r, "electric-fallback-mode"));
  EXPECT_EQ(header(r, "etag"), "\"h1:10_2:11_0\"");
  EXPECT_EQ(header(r, "cache-control"), "public, max-age=60, stale-while-revalidate=300");
  EXPECT_EQ(r.body_view(), R"([{"headers":{"control":"up-to-date"}}])");
}

TEST(ShapeHeadersTest, SnapshotResponseOffsetMinusOne) {
  auto result = result_at(shapes::LogOffset::snapshot_chunk(0));
  result.fallback = true;
  result.body = nullptr;
  auto r = read_response(result, params_at(Start::kBeforeAll), fixed_clock_options(), std::nullopt);
  EXPECT_EQ(header(r, "electric-offset"), "0_0");
  EXPECT_EQ(header(r, "etag"), "\"h1:-1:0_0\"");
  EXPECT_EQ(header(r, "electric-fallback-mode"), "true");
  EXPECT_EQ(r.body_view(), "[]");
}

TEST(ShapeHeadersTest, LiveResponse) {
  auto params = params_at(Start::kAt, true);
  params.cursor = "120";
  auto r = read_response(result_at(shapes::LogOffset::at(12, 0), true), params,
                         fixed_clock_options(101), std::nullopt);
  EXPECT_EQ(header(r, "electric-cursor"), "140");
  EXPECT_FALSE(header(r, "electric-schema"));
  EXPECT_EQ(header(r, "electric-up-to-date"), "");
  EXPECT_EQ(header(r, "cache-control"), "public, max-age=5, stale-while-revalidate=5");
  EXPECT_EQ(header(r, "etag"), "\"h1:10_2:12_0\"");
}

TEST(ShapeHeadersTest, LiveTimeoutWithoutChangesHasAUniqueEtag) {
  auto params = params_at(Start::kAt, true);
  auto result = result_at(params.read.offset, true);
  auto a = read_response(result, params, fixed_clock_options(), std::nullopt);
  auto b = read_response(result, params, fixed_clock_options(), std::nullopt);
  ASSERT_TRUE(header(a, "etag"));
  EXPECT_TRUE(header(a, "etag")->starts_with("\"h1:10_2:10_2:"));
  EXPECT_NE(header(a, "etag"), header(b, "etag"));
  auto c = read_response(result, params, fixed_clock_options(), "\"h1:10_2:10_2\"");
  EXPECT_EQ(c.status, 200u);
}

TEST(ShapeHeadersTest, IfNoneMatchGives304WithTheSameHeaders) {
  auto params = params_at(Start::kAt);
  auto result = result_at(shapes::LogOffset::at(11, 0), true);
  for (std::string inm :
       {"\"h1:10_2:11_0\"", "h1:10_2:11_0", "\"x\", \"h1:10_2:11_0\"", "W/\"h1:10_2:11_0\"", "*"}) {
    SCOPED_TRACE(inm);
    auto r = read_response(result, params, fixed_clock_options(), inm);
    EXPECT_EQ(r.status, 304u);
    EXPECT_EQ(r.body, nullptr);
    EXPECT_FALSE(header(r, "content-type"));
    EXPECT_EQ(header(r, "electric-handle"), "h1");
    EXPECT_EQ(header(r, "electric-offset"), "11_0");
    EXPECT_TRUE(header(r, "electric-schema"));
    EXPECT_EQ(header(r, "electric-up-to-date"), "");
    EXPECT_EQ(header(r, "etag"), "\"h1:10_2:11_0\"");
  }
  EXPECT_EQ(read_response(result, params, fixed_clock_options(), "\"h1:10_2:11_1\"").status, 200u);
  EXPECT_EQ(read_response(result, params, fixed_clock_options(), "").status, 200u);
  EXPECT_TRUE(etag_matches(" a , \"b\" ", "\"b\""));
  EXPECT_FALSE(etag_matches(",,", "\"b\""));
}

TEST(ShapeHeadersTest, MustRefetch) {
  auto r = must_refetch_response({"h2"});
  EXPECT_EQ(r.status, 409u);
  EXPECT_EQ(json::parse(r.body_view()), json::parse(R"([{"headers":{"control":"must-refetch"}}])"));
  EXPECT_EQ(header(r, "electric-handle"), "h2");
  EXPECT_EQ(header(r, "cache-control"), "public, max-age=60, must-revalidate");
  auto unknown = must_refetch_response({std::nullopt});
  EXPECT_FALSE(header(unknown, "electric-handle"));
  EXPECT_EQ(header(unknown, "cache-control"), "public, max-age=1, must-revalidate");
}

TEST(ShapeHeadersTest, ServiceErrors) {
  auto bad = error_outcome_response(shapes::InvalidRequest{"where", "Unknown column: x"});
  EXPECT_EQ(bad.status, 400u);
  EXPECT_EQ(json::parse(bad.body_view()),
            json({{"message", "Invalid request"}, {"errors", {{"where", {"Unknown column: x"}}}}}));
  EXPECT_EQ(header(bad, "cache-control"), "no-store");
  EXPECT_EQ(header(bad, "surrogate-control"), "no-store");

  auto down = error_outcome_response(shapes::Unavailable{"Database unreachable", 7s});
  EXPECT_EQ(down.status, 503u);
  EXPECT_EQ(json::parse(down.body_view()), json({{"message", "Database unreachable"}}));
  EXPECT_EQ(header(down, "retry-after"), "7");
  EXPECT_EQ(header(down, "cache-control"), "no-store");
  EXPECT_EQ(header(down, "surrogate-control"), "no-store");
}

TEST(ShapeHeadersTest, SseHeaders) {
  auto params = params_at(Start::kAt, true, true);
  auto headers =
      sse_headers(result_at(shapes::LogOffset::at(10, 2)), params, fixed_clock_options());
  EXPECT_EQ(headers, (http::Params{{"electric-handle", "h1"},
                                   {"electric-offset", "10_2"},
                                   {"electric-cursor", "120"},
                                   {"cache-control", "public, max-age=59"}}));
}

}  // namespace
}  // namespace shapeproxy::api
