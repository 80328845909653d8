// Shutdown of the whole proxy under load (issue 16, item 3): app::Proxy
// in-process against a real PostgreSQL, stopped while new shapes' snapshots
// queue for the connection pool, live long-polls and SSE streams are parked
// and non-live reads wait for snapshots, then destroyed with its io_context
// (as main() does). Every long-lived part must be gone afterwards: one that
// outlives the proxy is held by a reference cycle (LeakSanitizer reported
// ~100 MB of such cycles at exit: registry, shapes, sessions), and frames
// destroyed unresumed with the io_context must not touch freed memory (the
// pool's waiter list named timers of destroyed frames: heap corruption after
// "shapeproxy stopped"; the ASan pass catches it here).
#include <gtest/gtest.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "support/http_test_client.h"
#include "support/postgres_test_environment.h"
#include "support/running_proxy.h"

namespace shapeproxy::app {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using namespace std::chrono_literals;

constexpr int kRows = 20000;
constexpr int kNewShapes = 40;  // ten times the pool's connections

// Sends one GET and leaves the connection open, unread.
std::unique_ptr<tcp::socket> send_get(net::io_context& io, std::uint16_t port,
                                      const std::string& target) {
  auto socket = std::make_unique<tcp::socket>(io);
  socket->connect({net::ip::make_address("127.0.0.1"), port});
  const std::string request = "GET " + target + " HTTP/1.1\r\nHost: localhost\r\n\r\n";
  net::write(*socket, net::buffer(request));
  return socket;
}

TEST(ProxyShutdownTest, NothingOutlivesTheProxyStoppedUnderLoad) {
  const std::string database = testing::create_database("shutdown");
  testing::execute_sql(database,
                       "CREATE TABLE items (id int PRIMARY KEY, grp int NOT NULL, pad text);"
                       "INSERT INTO items SELECT g, g % 100, repeat(md5(g::text), 4) "
                       "FROM generate_series(1, " +
                           std::to_string(kRows) + ") g");
  std::vector<std::weak_ptr<const void>> lifetimes;
  net::io_context client_io;
  std::vector<std::unique_ptr<tcp::socket>> clients;
  {
    testing::RunningProxy proxy(database, [](config::Config& config) {
      config.long_poll_timeout = 30s;  // parked until the shutdown
    });
    testing::HttpTestClient client(proxy.port());
    for (int i = 0; i < 300 && client.get("/v1/health").result_int() != 200; ++i)
      std::this_thread::sleep_for(20ms);
    ASSERT_EQ(client.get("/v1/health").result_int(), 200);

    // A ready shape with live readers parked on it: long-polls and SSE.
    const std::string shape = "/v1/shape?table=items&where=grp%3D0";
    auto first = client.get(shape + "&offset=-1");
    ASSERT_EQ(first.result_int(), 200) << first.body();
    const std::string live = shape + "&handle=" + std::string(first["electric-handle"]) +
                             "&offset=" + std::string(first["electric-offset"]) + "&live=true";
    for (int i = 0; i < 4; ++i) clients.push_back(send_get(client_io, proxy.port(), live));
    for (int i = 0; i < 2; ++i)
      clients.push_back(send_get(client_io, proxy.port(), live + "&live_sse=true"));
    // New shapes: their snapshots queue for the pool; their readers wait.
    for (int i = 1; i <= kNewShapes; ++i) {
      clients.push_back(
          send_get(client_io, proxy.port(),
                   "/v1/shape?table=items&offset=-1&where=grp%3D" + std::to_string(i)));
    }
    std::uint64_t shapes = 0;
    for (int i = 0; i < 500 && shapes < 1 + kNewShapes; ++i) {
      auto status = json::parse(client.get("/v1/status").body(), nullptr, false);
      shapes = status.is_object() ? status.value("shapes", std::uint64_t{0}) : 0;
      if (shapes < 1 + kNewShapes) std::this_thread::sleep_for(10ms);
    }
    ASSERT_EQ(shapes, 1u + kNewShapes);
    lifetimes = proxy.proxy().lifetimes();
    ASSERT_GE(lifetimes.size(), 7u);
  }  // shutdown, then the proxy and its io_context go, with work still queued
  for (std::size_t i = 0; i < lifetimes.size(); ++i)
    EXPECT_TRUE(lifetimes[i].expired())
        << "part " << i << " outlived the proxy (" << lifetimes[i].use_count() << " references)";
}

}  // namespace
}  // namespace shapeproxy::app
