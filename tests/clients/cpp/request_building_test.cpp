// Endpoint URLs, shape request targets and the status poll schedule.
#include <gtest/gtest.h>

#include "endpoint.h"
#include "shape_request.h"
#include "status_poll.h"

namespace shapeproxy::client::detail {
namespace {

using namespace std::chrono_literals;

TEST(Endpoint, ParsesHostPortAndPrefix) {
  auto plain = parse_endpoint("http://127.0.0.1:3000");
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->host, "127.0.0.1");
  EXPECT_EQ(plain->port, "3000");
  EXPECT_EQ(plain->prefix, "");
  auto prefixed = parse_endpoint("HTTP://cdn.local/shapes/");
  ASSERT_TRUE(prefixed);
  EXPECT_EQ(prefixed->port, "80");
  EXPECT_EQ(prefixed->prefix, "/shapes");
  auto v6 = parse_endpoint("http://[::1]:8080");
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "::1");
  for (auto bad : {"", "https://x", "http://", "http://h:0", "http://h:99999", "http://h:x",
                   "http://h/p?q=1", "localhost:3000"})
    EXPECT_FALSE(parse_endpoint(bad)) << bad;
}

TEST(ShapeRequest, TargetCarriesDefinitionAndPosition) {
  ReplicaClientOptions options;
  options.table = "public.items";
  options.where = "title = $1 AND n > $2";
  options.params = {"a&b", "3"};
  options.columns = {"id", "title"};
  options.replica = ReplicaMode::kFull;
  auto endpoint = *parse_endpoint("http://h:1/p");
  ShapePosition position;
  EXPECT_EQ(shape_target(endpoint, options, position),
            "/p/v1/shape?table=public.items&where=title%20%3D%20%241%20AND%20n%20%3E%20%242"
            "&params%5B1%5D=a%26b&params%5B2%5D=3&columns=id%2Ctitle&replica=full&offset=-1");
  position = {"26800_3", "h-1", "1200", true};
  options = ReplicaClientOptions{};
  options.table = "items";
  options.secret = "s";
  EXPECT_EQ(shape_target(endpoint, options, position),
            "/p/v1/shape?table=items&offset=26800_3&handle=h-1&live=true&cursor=1200&secret=s");
  EXPECT_EQ(status_target(endpoint), "/p/v1/status");
}

TEST(ShapeRequest, IdentityDiffersByDefinitionOnly) {
  ReplicaClientOptions a;
  a.table = "items";
  ReplicaClientOptions b = a;
  b.client_id = "other";
  b.endpoints = {"http://x:1"};
  EXPECT_EQ(shape_identity(a), shape_identity(b));
  b.where = "id > 1";
  EXPECT_NE(shape_identity(a), shape_identity(b));
}

TEST(StatusPoll, ReadsStatusAndMaxAge) {
  EXPECT_EQ(status_from_body(R"({"status":"fallback","replication_available":false})"), "fallback");
  EXPECT_FALSE(status_from_body("nope"));
  EXPECT_FALSE(status_from_body(R"({"status":1})"));
  EXPECT_EQ(max_age("public, max-age=5"), 5s);
  EXPECT_EQ(max_age("s-maxage=3600, max-age = 7"), 7s);
  EXPECT_FALSE(max_age("no-store"));
  EXPECT_FALSE(max_age("s-maxage=10"));
}

TEST(StatusPoll, ReadsRetryAfterSeconds) {
  EXPECT_EQ(retry_after_seconds("3"), 3s);
  EXPECT_EQ(retry_after_seconds(" 10 "), 10s);
  EXPECT_FALSE(retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT"));
  EXPECT_FALSE(retry_after_seconds(""));
  EXPECT_FALSE(retry_after_seconds("99999999999"));
}

TEST(StatusPoll, NeverPollsFasterThanMaxAge) {
  EXPECT_EQ(next_status_poll(10s, 5s), 10s);
  EXPECT_EQ(next_status_poll(200ms, 1s), 1s);
  EXPECT_EQ(next_status_poll(200ms, std::nullopt), 200ms);
}

}  // namespace
}  // namespace shapeproxy::client::detail
