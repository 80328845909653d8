// Runs an http::HttpServer for a test of the HTTP layer (transport, shape
// API, status endpoints): 127.0.0.1, an ephemeral port, two I/O threads, and
// an HttpTestClient for it; stopped (graceful shutdown, then the threads
// joined) when the test ends. One fixture body instead of one per suite.
#pragma once

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include "common/result.h"
#include "http/router.h"
#include "http/server.h"
#include "support/http_test_client.h"

namespace shapeproxy::testing {

class HttpTestServer {
 public:
  HttpTestServer() = default;
  ~HttpTestServer() { stop(); }
  HttpTestServer(const HttpTestServer&) = delete;
  HttpTestServer& operator=(const HttpTestServer&) = delete;

  // Starts `router` with `options` (their address and port are replaced by
  // 127.0.0.1 and an ephemeral port). Once: ASSERT on the result.
  Result<void> start(http::Router router, http::ServerOptions options = {});

  // Begins the graceful shutdown now, for a test that watches it; stop()
  // then does not shut down again.
  void shutdown(std::function<void()> done);
  // Shuts the server down (unless shutdown() did; fails the test when that
  // takes over 10 s), joins the I/O threads and destroys the server.
  void stop();

  http::HttpServer* operator->() { return server_.get(); }
  HttpTestClient& client() { return *client_; }

 private:
  boost::asio::io_context ioc_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_{
      ioc_.get_executor()};
  std::vector<std::thread> threads_;
  std::unique_ptr<http::HttpServer> server_;
  bool shut_down_ = false;
  std::optional<HttpTestClient> client_;
};

}  // namespace shapeproxy::testing
