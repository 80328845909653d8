#include "support/http_test_server.h"

#include <gtest/gtest.h>

#include <chrono>
#include <future>

namespace shapeproxy::testing {

Result<void> HttpTestServer::start(http::Router router, http::ServerOptions options) {
  options.address = "127.0.0.1";
  options.port = 0;
  server_ = std::make_unique<http::HttpServer>(ioc_, std::move(options), std::move(router));
  auto started = server_->start();
  if (!started.ok()) return started;
  for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { ioc_.run(); });
  client_.emplace(server_->port());
  return started;
}

void HttpTestServer::shutdown(std::function<void()> done) {
  shut_down_ = true;
  server_->shutdown(std::move(done));
}

void HttpTestServer::stop() {
  if (server_ && !shut_down_ && !threads_.empty()) {
    std::promise<void> done;
    server_->shutdown([&] { done.set_value(); });
    EXPECT_EQ(done.get_future().wait_for(std::chrono::seconds(10)), std::future_status::ready);
  }
  shut_down_ = true;
  work_.reset();
  ioc_.stop();
  for (auto& thread : threads_) thread.join();
  threads_.clear();
  server_.reset();
}

}  // namespace shapeproxy::testing
