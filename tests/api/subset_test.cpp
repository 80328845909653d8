// Subset snapshots through the whole proxy (app::Proxy in-process, a real
// PostgreSQL): GET with subset__* parameters and POST with the subset in a
// JSON body answer Electric's {metadata, data} object whose rows equal the
// same SELECT run directly, with the snapshot the query read at; bad subsets
// get 400s naming the field (and never reach the database as text); the
// shape's own snapshot ends with a snapshot-end control message.
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "support/http_test_client.h"
#include "support/postgres_test_environment.h"
#include "support/running_proxy.h"

namespace shapeproxy::api {
namespace {

using json = nlohmann::json;
using testing::execute_sql;
using testing::HttpResponse;
using testing::HttpVerb;
using testing::query_value;

std::string encode(std::string_view text) {
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char buffer[4];
      std::snprintf(buffer, sizeof buffer, "%%%02X", c);
      out += buffer;
    }
  }
  return out;
}

class SubsetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    database_ = testing::create_database("subset");
    execute_sql(database_,
                "CREATE TABLE items (id int PRIMARY KEY, title text, n int NOT NULL, "
                "secret text);"
                "INSERT INTO items SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'item ' || g END, "
                "g % 5, 's' || g FROM generate_series(1, 200) g");
    proxy_ = std::make_unique<testing::RunningProxy>(database_, nullptr);
    client_ = std::make_unique<testing::HttpTestClient>(proxy_->port());
    // Until replication is up, a new shape may find no publication yet (503).
    for (int i = 0; i < 300 && client_->get("/v1/health").result_int() != 200; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    ASSERT_EQ(client_->get("/v1/health").result_int(), 200);
  }

  HttpResponse get(const std::string& query) { return client_->get("/v1/shape?" + query); }

  HttpResponse post(const std::string& query, const std::string& body) {
    return client_->raw("POST /v1/shape?" + query +
                        " HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                        "Content-Length: " +
                        std::to_string(body.size()) + "\r\n\r\n" + body);
  }

  // The ids SELECT gives, as the subset should.
  std::vector<std::string> select_ids(const std::string& rest) {
    std::string ids =
        query_value(database_,
                    "SELECT coalesce(string_agg(id::text, ',' ORDER BY ord), '') FROM ("
                    "SELECT id, row_number() OVER () AS ord FROM (SELECT id FROM items " +
                        rest + ") s) t");
    std::vector<std::string> out;
    for (std::size_t start = 0; start < ids.size();) {
      auto comma = ids.find(',', start);
      out.push_back(ids.substr(start, comma - start));
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    return out;
  }

  static std::vector<std::string> data_ids(const json& body) {
    std::vector<std::string> out;
    for (const auto& message : body.at("data")) out.push_back(message["value"]["id"]);
    return out;
  }

  static std::string header(const HttpResponse& r, std::string_view name) {
    auto it = r.find(std::string(name));
    return it == r.end() ? std::string("<absent>") : std::string(it->value());
  }

  std::string database_;
  std::unique_ptr<testing::RunningProxy> proxy_;
  std::unique_ptr<testing::HttpTestClient> client_;
};

TEST_F(SubsetTest, GetSubsetEqualsSelectWithMetadataAndHeaders) {
  HttpResponse shape = get("table=items&offset=-1");
  ASSERT_EQ(shape.result_int(), 200) << shape.body();
  const std::string handle = header(shape, "electric-handle");

  HttpResponse r = get("table=items&offset=-1&subset__where=" + encode("n = $1 AND id > $2") +
                       "&subset__params=" + encode(R"({"1":"3","2":"20"})") + "&subset__order_by=" +
                       encode("title DESC NULLS LAST, id") + "&subset__limit=7&subset__offset=2");
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_EQ(header(r, "electric-snapshot"), "true");
  EXPECT_EQ(header(r, "cache-control"), "no-cache");
  EXPECT_EQ(header(r, "electric-handle"), handle);
  EXPECT_NE(header(r, "electric-offset"), "<absent>");
  EXPECT_NE(header(r, "electric-schema").find("\"title\""), std::string::npos);
  json body = json::parse(r.body());
  EXPECT_EQ(data_ids(body),
            select_ids("WHERE n = 3 AND id > 20 ORDER BY title DESC NULLS LAST, id LIMIT 7 "
                       "OFFSET 2"));
  const json& meta = body.at("metadata");
  ASSERT_TRUE(meta["xmin"].is_string());
  ASSERT_TRUE(meta["xmax"].is_string());
  ASSERT_TRUE(meta["xip_list"].is_array());
  ASSERT_TRUE(meta["database_lsn"].is_string());
  EXPECT_LE(std::stoull(meta["xmin"].get<std::string>()),
            std::stoull(meta["xmax"].get<std::string>()));
  // A transaction committed before the query is visible in its snapshot.
  EXPECT_LT(std::stoull(query_value(database_, "SELECT xmin::text FROM items WHERE id = 1")),
            std::stoull(meta["xmax"].get<std::string>()));
  EXPECT_GT(std::stoull(meta["database_lsn"].get<std::string>()), 0u);
  for (const auto& message : body["data"]) {
    EXPECT_EQ(message["headers"]["operation"], "insert");
    EXPECT_EQ(message["headers"]["relation"], json::array({"public", "items"}));
    EXPECT_EQ(message["headers"]["snapshot_mark"], meta["snapshot_mark"]);
    EXPECT_EQ(message["key"],
              "\"public\".\"items\"/\"" + message["value"]["id"].get<std::string>() + "\"");
  }

  // Indexed params, and no subset where: every row of the shape.
  r = get("table=items&offset=-1&subset__order_by=id&subset__limit=3");
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_EQ(data_ids(json::parse(r.body())), (std::vector<std::string>{"1", "2", "3"}));
  r = get("table=items&offset=-1&subset__where=" + encode("id = $1") + "&" +
          encode("subset__params[1]") + "=42");
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_EQ(data_ids(json::parse(r.body())), (std::vector<std::string>{"42"}));
}

TEST_F(SubsetTest, SubsetIsWithinTheShapeWhereAndColumns) {
  const std::string shape = "table=items&offset=-1&where=" + encode("n = 1") + "&columns=id,title";
  HttpResponse r = get(shape + "&subset__where=" + encode("id <= 30") + "&subset__order_by=id");
  ASSERT_EQ(r.result_int(), 200) << r.body();
  json body = json::parse(r.body());
  EXPECT_EQ(data_ids(body), select_ids("WHERE n = 1 AND id <= 30 ORDER BY id"));
  for (const auto& message : body["data"]) {
    EXPECT_FALSE(message["value"].contains("secret"));
    EXPECT_FALSE(message["value"].contains("n"));
  }
  // Columns the shape does not serve cannot be filtered or sorted on.
  r = get(shape + "&subset__where=" + encode("secret = 's1'"));
  ASSERT_EQ(r.result_int(), 400) << r.body();
  EXPECT_TRUE(json::parse(r.body())["errors"]["subset"].contains("where")) << r.body();
  r = get(shape + "&subset__order_by=secret");
  ASSERT_EQ(r.result_int(), 400) << r.body();
  EXPECT_TRUE(json::parse(r.body())["errors"]["subset"].contains("order_by")) << r.body();
}

TEST_F(SubsetTest, PostBodyTopLevelOrUnderSubset) {
  HttpResponse r = post("table=items&offset=-1",
                        R"({"where":"id < $1","params":{"1":"6"},"order_by":"id DESC","limit":3})");
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_EQ(header(r, "electric-snapshot"), "true");
  EXPECT_EQ(data_ids(json::parse(r.body())), (std::vector<std::string>{"5", "4", "3"}));

  r = post("table=items&offset=-1", R"({"subset":{"where":"title = $1","params":{"1":"item 9"}}})");
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_EQ(data_ids(json::parse(r.body())), (std::vector<std::string>{"9"}));

  // The body's keys win over the query's.
  r = post("table=items&offset=-1&subset__where=" + encode("id = 1"), R"({"where":"id = 2"})");
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_EQ(data_ids(json::parse(r.body())), (std::vector<std::string>{"2"}));
}

TEST_F(SubsetTest, BadSubsetsGet400NamingTheField) {
  struct Case {
    std::string query;
    std::string field;
  };
  const std::vector<Case> cases = {
      {"subset__where=" + encode("n = "), "where"},
      {"subset__where=" + encode("nope = 1"), "where"},
      {"subset__where=" + encode("id = 1; DROP TABLE items"), "where"},
      {"subset__where=" + encode("pg_sleep(10) IS NULL"), "where"},
      {"subset__where=" + encode("id = $1"), "where"},  // $1 without a value
      {"subset__params=" + encode("{not json"), "params"},
      {"subset__where=" + encode("id = $1") + "&subset__params=" + encode(R"({"x":"1"})"),
       "params"},
      {"subset__order_by=" + encode("lower(title)"), "order_by"},
      {"subset__order_by=" + encode("id; DROP TABLE items"), "order_by"},
      {"subset__order_by=" + encode("(SELECT 1)"), "order_by"},
      {"subset__order_by=" + encode("1"), "order_by"},
      {"subset__order_by=" + encode("title COLLATE \"C\""), "order_by"},
      {"subset__order_by=" + encode("id USING <"), "order_by"},
      {"subset__order_by=" + encode("id LIMIT 1"), "order_by"},
      {"subset__order_by=" + encode("id,"), "order_by"},
      {"subset__limit=5", "order_by"},
      {"subset__offset=5", "order_by"},
      {"subset__order_by=id&subset__limit=0", "limit"},
      {"subset__order_by=id&subset__limit=abc", "limit"},
      {"subset__order_by=id&subset__offset=-1", "offset"},
  };
  for (const auto& c : cases) {
    HttpResponse r = get("table=items&offset=-1&" + c.query);
    ASSERT_EQ(r.result_int(), 400) << c.query << ": " << r.body();
    EXPECT_EQ(header(r, "cache-control"), "no-store");
    json body = json::parse(r.body());
    EXPECT_EQ(body["message"], "Invalid request");
    EXPECT_TRUE(body["errors"]["subset"].contains(c.field)) << c.query << ": " << r.body();
  }
  // A syntax error reads as Electric's, the position counted in `SELECT 1 ORDER BY ...`.
  HttpResponse r = get("table=items&offset=-1&subset__order_by=" + encode("id DESC x"));
  ASSERT_EQ(r.result_int(), 400);
  EXPECT_EQ(json::parse(r.body())["errors"]["subset"]["order_by"][0],
            "At location 27: syntax error at or near \"x\"");
  // SSE cannot carry a subset.
  HttpResponse shape = get("table=items&offset=-1");
  r = get("table=items&live=true&live_sse=true&offset=0_0&handle=" +
          header(shape, "electric-handle") + "&subset__where=" + encode("id = 1"));
  ASSERT_EQ(r.result_int(), 400) << r.body();
  EXPECT_TRUE(json::parse(r.body())["errors"]["subset"].contains("live_sse"));
  // A body that is no JSON object.
  r = post("table=items&offset=-1", "[1,2]");
  ASSERT_EQ(r.result_int(), 400) << r.body();
  EXPECT_TRUE(json::parse(r.body())["errors"]["subset"].contains("body"));
  r = post("table=items&offset=-1", "{nope");
  ASSERT_EQ(r.result_int(), 400) << r.body();
  // Nothing reached the database as text.
  EXPECT_EQ(query_value(database_, "SELECT count(*) FROM items"), "200");
}

TEST_F(SubsetTest, UnknownHandleGets409AndParametersAreValues) {
  HttpResponse r = get("table=items&offset=0_0&handle=nope-1&subset__where=" + encode("id = 1"));
  EXPECT_EQ(r.result_int(), 409) << r.body();
  // A parameter is a value, never SQL.
  r = get("table=items&offset=-1&subset__where=" + encode("title = $1") +
          "&subset__params=" + encode(R"({"1":"x' OR '1'='1"})"));
  ASSERT_EQ(r.result_int(), 200) << r.body();
  EXPECT_TRUE(json::parse(r.body())["data"].empty());
}

TEST_F(SubsetTest, ShapeSnapshotEndsWithSnapshotEnd) {
  HttpResponse r = get("table=items&offset=-1&where=" + encode("id <= 3"));
  ASSERT_EQ(r.result_int(), 200) << r.body();
  json body = json::parse(r.body());
  ASSERT_EQ(body.size(), 4u) << r.body();
  const json& end = body.back()["headers"];
  EXPECT_EQ(end["control"], "snapshot-end");
  ASSERT_TRUE(end["xmin"].is_string());
  ASSERT_TRUE(end["xmax"].is_string());
  ASSERT_TRUE(end["xip_list"].is_array());
  EXPECT_LT(std::stoull(query_value(database_, "SELECT xmin::text FROM items WHERE id = 1")),
            std::stoull(end["xmax"].get<std::string>()));
  // A changes_only shape's snapshot is the snapshot-end alone.
  r = get("table=items&offset=-1&log=changes_only");
  ASSERT_EQ(r.result_int(), 200) << r.body();
  body = json::parse(r.body());
  ASSERT_EQ(body.size(), 1u) << r.body();
  EXPECT_EQ(body[0]["headers"]["control"], "snapshot-end");
}

}  // namespace
}  // namespace shapeproxy::api
