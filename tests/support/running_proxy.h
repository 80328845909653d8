// What: the whole proxy (app::Proxy) in-process on an ephemeral port with
// its own data directory and two I/O threads, against a test database.
// Why: suites that test through every layer (HTTP, API, shapes, a real
// PostgreSQL) start it the same way; `configure` adjusts the settings.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <filesystem>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "app/proxy.h"
#include "support/postgres_test_environment.h"

namespace shapeproxy::testing {

class RunningProxy {
 public:
  RunningProxy(const std::string& database, const std::function<void(config::Config&)>& configure) {
    using namespace std::chrono_literals;
    dir_ = std::filesystem::temp_directory_path() /
           ("proxy_" + database + "_" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir_);
    config::Config config;
    config.listen_address = "127.0.0.1";
    config.port = 0;
    config.data_dir = dir_;
    config.slot_name = "slot_" + database;
    config.long_poll_timeout = 1s;
    if (configure) configure(config);
    proxy_ = std::make_unique<app::Proxy>(io_, config, conninfo(database));
    std::promise<std::string> started;
    boost::asio::co_spawn(
        proxy_->executor(), proxy_->start({}),
        [&started](std::exception_ptr failure, Result<void> result) {
          started.set_value(failure ? "threw" : result ? "" : result.error().to_string());
        });
    for (int i = 0; i < 2; ++i) threads_.emplace_back([this] { io_.run(); });
    auto outcome = started.get_future();
    EXPECT_EQ(outcome.wait_for(60s), std::future_status::ready);
    EXPECT_EQ(outcome.get(), "") << "proxy did not start";
  }
  ~RunningProxy() {
    std::promise<void> stopped;
    proxy_->shutdown([&] { stopped.set_value(); });
    EXPECT_EQ(stopped.get_future().wait_for(std::chrono::seconds(30)), std::future_status::ready);
    io_.stop();
    for (auto& thread : threads_) thread.join();
    proxy_.reset();
    std::filesystem::remove_all(dir_);
  }
  RunningProxy(const RunningProxy&) = delete;
  RunningProxy& operator=(const RunningProxy&) = delete;

  std::uint16_t port() const { return proxy_->http_port(); }
  const std::filesystem::path& dir() const { return dir_; }
  const app::Proxy& proxy() const { return *proxy_; }

 private:
  std::filesystem::path dir_;
  boost::asio::io_context io_;
  std::unique_ptr<app::Proxy> proxy_;
  std::vector<std::thread> threads_;
};

}  // namespace shapeproxy::testing
