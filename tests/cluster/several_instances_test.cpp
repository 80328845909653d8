// Two whole proxies on one database and one data directory (rfc/0003): the
// first leads, the second follows and serves every request with the leader's
// handle, offsets and rows, answers a live request after a commit, creates a
// new shape through the leader (once), and says its role and its leader in
// /v1/status, /v1/health and /metrics. Only the leader's walsender streams.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "support/http_test_client.h"
#include "support/postgres_test_environment.h"
#include "support/running_proxy.h"

namespace shapeproxy {
namespace {

using namespace std::chrono_literals;
using testing::HttpResponse;

std::string header(const HttpResponse& response, const char* name) {
  auto it = response.find(name);
  return it == response.end() ? "" : std::string(it->value());
}

class SeveralInstancesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    database_ = testing::create_database("several");
    dir_ = std::filesystem::temp_directory_path() /
           ("several_" + database_ + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    testing::execute_sql(database_,
                         "CREATE TABLE items (id int PRIMARY KEY, title text NOT NULL);"
                         "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 50) g");
    leader_ = start("a");
    follower_ = start("b");
    leader_http_ = std::make_unique<testing::HttpTestClient>(leader_->port());
    follower_http_ = std::make_unique<testing::HttpTestClient>(follower_->port());
  }
  void TearDown() override {
    follower_.reset();
    leader_.reset();
    std::filesystem::remove_all(dir_);
  }

  std::unique_ptr<testing::RunningProxy> start(std::string id) {
    return std::make_unique<testing::RunningProxy>(database_, [&](config::Config& config) {
      config.data_dir = dir_;
      config.instance_id = id;
      config.long_poll_timeout = 5s;
    });
  }
  nlohmann::json status(testing::HttpTestClient& client) {
    auto response = client.get("/v1/status");
    EXPECT_EQ(response.result_int(), 200);
    return nlohmann::json::parse(response.body(), nullptr, false);
  }
  int walsenders() {
    return std::stoi(testing::query_value(
        database_, "SELECT count(*) FROM pg_stat_replication WHERE application_name <> ''"));
  }

  std::string database_;
  std::filesystem::path dir_;
  std::unique_ptr<testing::RunningProxy> leader_, follower_;
  std::unique_ptr<testing::HttpTestClient> leader_http_, follower_http_;
};

TEST_F(SeveralInstancesTest, TheFollowerServesTheLeadersShapes) {
  // A new shape asked of the follower is created once, by the leader.
  auto from_follower = follower_http_->get("/v1/shape?table=items&offset=-1");
  ASSERT_EQ(from_follower.result_int(), 200) << from_follower.body();
  auto from_leader = leader_http_->get("/v1/shape?table=items&offset=-1");
  ASSERT_EQ(from_leader.result_int(), 200);
  EXPECT_EQ(header(from_follower, "electric-handle"), header(from_leader, "electric-handle"));
  EXPECT_EQ(header(from_follower, "electric-offset"), header(from_leader, "electric-offset"));
  EXPECT_EQ(from_follower.body(), from_leader.body());
  EXPECT_EQ(nlohmann::json::parse(from_follower.body()).size(), 51u);  // 50 rows + snapshot-end
  auto shapes = nlohmann::json::parse(leader_http_->get("/v1/status/shapes").body());
  EXPECT_EQ(status(*leader_http_)["shapes"], 1);

  // Live through the follower: answered after a commit.
  const std::string handle = header(from_follower, "electric-handle");
  std::string offset = header(from_follower, "electric-offset");
  for (int i = 0; i < 20; ++i) {  // to the end of the snapshot
    auto catch_up =
        follower_http_->get("/v1/shape?table=items&handle=" + handle + "&offset=" + offset);
    ASSERT_EQ(catch_up.result_int(), 200);
    if (!header(catch_up, "electric-up-to-date").empty()) {
      offset = header(catch_up, "electric-offset");
      break;
    }
    offset = header(catch_up, "electric-offset");
  }
  auto live = std::async(std::launch::async, [&] {
    testing::HttpTestClient client(follower_->port());
    return client.get("/v1/shape?table=items&live=true&handle=" + handle + "&offset=" + offset);
  });
  testing::execute_sql(database_, "INSERT INTO items VALUES (51, 'fifty-one')");
  ASSERT_EQ(live.wait_for(10s), std::future_status::ready);
  auto answered = live.get();
  EXPECT_EQ(answered.result_int(), 200);
  EXPECT_NE(answered.body().find("fifty-one"), std::string::npos) << answered.body();
  EXPECT_EQ(header(answered, "electric-handle"), handle);
}

TEST_F(SeveralInstancesTest, TheFollowerRelaysAnEventStream) {
  auto first = follower_http_->get("/v1/shape?table=items&offset=-1");
  ASSERT_EQ(first.result_int(), 200);
  const std::string handle = header(first, "electric-handle");
  std::string offset = header(first, "electric-offset");
  for (int i = 0; i < 20; ++i) {
    auto catch_up =
        follower_http_->get("/v1/shape?table=items&handle=" + handle + "&offset=" + offset);
    offset = header(catch_up, "electric-offset");
    if (!header(catch_up, "electric-up-to-date").empty()) break;
  }
  auto connection = follower_http_->connect();
  connection.send_get("/v1/shape?table=items&live=true&live_sse=true&handle=" + handle +
                      "&offset=" + offset);
  std::string received;
  connection.read_until(received, "text/event-stream");
  testing::execute_sql(database_, "INSERT INTO items VALUES (52, 'fifty-two')");
  connection.read_until(received, "fifty-two");
  EXPECT_NE(received.find("data: "), std::string::npos) << received;
  EXPECT_NE(received.find("fifty-two"), std::string::npos) << received;
  EXPECT_NE(received.find("electric-handle: " + handle), std::string::npos) << received;
}

TEST_F(SeveralInstancesTest, RolesInStatusHealthAndMetrics) {
  auto leader_status = status(*leader_http_);
  EXPECT_EQ(leader_status["cluster"]["role"], "leader");
  EXPECT_EQ(leader_status["cluster"]["instance_id"], "a");
  EXPECT_EQ(leader_status["cluster"]["leader"]["instance_id"], "a");
  // The follower reports the leader's serving status with its own role.
  nlohmann::json follower_status;
  for (int i = 0; i < 200; ++i) {
    follower_status = status(*follower_http_);
    if (follower_status["status"] == "live") break;
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_EQ(follower_status["status"], "live");
  EXPECT_EQ(follower_status["cluster"]["role"], "follower");
  EXPECT_EQ(follower_status["cluster"]["instance_id"], "b");
  EXPECT_EQ(follower_status["cluster"]["leader"]["instance_id"], "a");
  EXPECT_EQ(follower_http_->get("/v1/health").result_int(), 200);

  auto metrics = follower_http_->get("/metrics").body();
  EXPECT_NE(metrics.find("shapeproxy_cluster_leader 0"), std::string::npos) << metrics;
  EXPECT_NE(
      metrics.find(R"(shapeproxy_cluster_info{instance_id="b",role="follower",leader_id="a"} 1)"),
      std::string::npos)
      << metrics;
  EXPECT_NE(leader_http_->get("/metrics").body().find("shapeproxy_cluster_leader 1"),
            std::string::npos);
  EXPECT_LE(walsenders(), 1);
}

}  // namespace
}  // namespace shapeproxy
