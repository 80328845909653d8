// What (internal): state shared by the listener, the sessions and HttpServer:
// options, router, the acceptor, and the registry of open sessions.
// Why: sessions outlive HttpServer calls and may outlive the HttpServer object
// itself, so they share ownership of this rather than pointing at the server.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "http/router.h"
#include "http/server.h"

namespace shapeproxy::http::detail {

class Session;

struct ServerState : std::enable_shared_from_this<ServerState> {
  using Strand = boost::asio::strand<boost::asio::io_context::executor_type>;

  ServerState(boost::asio::io_context& ioc, ServerOptions options, Router router);

  // Accept loop; runs on `strand`.
  void do_accept();
  void on_accept(boost::system::error_code ec, boost::asio::ip::tcp::socket socket);
  // Shutdown; runs on `strand`.
  void begin_shutdown(std::function<void()> done);

  // Registry (any thread). Slots are reserved on accept and released by ~Session.
  void unregister(uint64_t id);
  std::vector<std::shared_ptr<Session>> live_sessions();
  size_t open_connections();

  boost::asio::io_context& ioc;
  const ServerOptions options;
  const Router router;
  Strand strand;                            // acceptor, timers, shutdown
  boost::asio::ip::tcp::acceptor acceptor;  // on strand
  boost::asio::steady_timer grace_timer;    // on strand
  boost::asio::steady_timer retry_timer;    // on strand: accept error backoff
  std::atomic<uint16_t> port{0};

 private:
  std::mutex mu_;
  std::unordered_map<uint64_t, std::weak_ptr<Session>> sessions_;  // guarded by mu_
  uint64_t next_id_ = 0;                                           // guarded by mu_
  bool shutting_down_ = false;                                     // guarded by mu_
  std::function<void()> on_drained_;                               // guarded by mu_
};

}  // namespace shapeproxy::http::detail
