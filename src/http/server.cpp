#include "http/server.h"

#include <spdlog/spdlog.h>

#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/post.hpp>

#include "http/server_state.h"
#include "http/session.h"

namespace shapeproxy::http {

namespace net = boost::asio;
using boost::system::error_code;
using tcp = net::ip::tcp;

namespace detail {

ServerState::ServerState(net::io_context& ioc_, ServerOptions options_, Router router_)
    : ioc(ioc_),
      options(std::move(options_)),
      router(std::move(router_)),
      strand(net::make_strand(ioc_)),
      acceptor(strand),
      grace_timer(strand),
      retry_timer(strand) {}

void ServerState::do_accept() {
  acceptor.async_accept(net::make_strand(ioc),
                        [self = shared_from_this()](error_code ec, tcp::socket socket) {
                          self->on_accept(ec, std::move(socket));
                        });
}

void ServerState::on_accept(error_code ec, tcp::socket socket) {
  if (ec == net::error::operation_aborted || !acceptor.is_open()) return;
  if (ec) {  // e.g. out of file descriptors: back off instead of spinning
    spdlog::warn("http: accept failed: {}", ec.message());
    retry_timer.expires_after(std::chrono::milliseconds(50));
    retry_timer.async_wait([self = shared_from_this()](error_code wait_ec) {
      if (!wait_ec) self->do_accept();
    });
    return;
  }
  error_code ignored;
  socket.set_option(tcp::no_delay(true), ignored);

  uint64_t id = 0;
  {
    std::lock_guard lock(mu_);
    if (shutting_down_) return;  // socket closes on scope exit
    if (sessions_.size() < options.max_connections) {
      id = ++next_id_;
      sessions_.emplace(id, std::weak_ptr<Session>());  // reserve the slot
    }
  }
  if (id == 0) {
    spdlog::warn("http: connection limit ({}) reached, answering 503", options.max_connections);
    std::make_shared<Session>(std::move(socket), shared_from_this(), 0)->run_rejected();
  } else {
    auto session = std::make_shared<Session>(std::move(socket), shared_from_this(), id);
    {
      std::lock_guard lock(mu_);
      sessions_[id] = session;
    }
    session->run();
  }
  do_accept();
}

void ServerState::unregister(uint64_t id) {
  std::function<void()> done;
  {
    std::lock_guard lock(mu_);
    sessions_.erase(id);
    if (shutting_down_ && sessions_.empty()) done = std::move(on_drained_);
  }
  if (done) {
    net::post(strand, [self = shared_from_this(), done = std::move(done)] {
      self->grace_timer.cancel();
      done();
    });
  }
}

std::vector<std::shared_ptr<Session>> ServerState::live_sessions() {
  std::vector<std::shared_ptr<Session>> out;
  std::lock_guard lock(mu_);
  for (auto& [id, weak] : sessions_)
    if (auto s = weak.lock()) out.push_back(std::move(s));
  return out;  // destroyed by the caller outside the lock (~Session locks mu_)
}

size_t ServerState::open_connections() {
  std::lock_guard lock(mu_);
  return sessions_.size();
}

void ServerState::begin_shutdown(std::function<void()> done) {
  error_code ignored;
  acceptor.close(ignored);
  retry_timer.cancel();
  bool drained = false;
  {
    std::lock_guard lock(mu_);
    shutting_down_ = true;
    drained = sessions_.empty();
    if (!drained) on_drained_ = std::move(done);
  }
  if (drained) {
    if (done) net::post(ioc, std::move(done));
    return;
  }
  for (auto& session : live_sessions()) session->begin_shutdown();
  grace_timer.expires_after(options.shutdown_grace);
  grace_timer.async_wait([self = shared_from_this()](error_code ec) {
    if (ec) return;  // drained in time
    auto remaining = self->live_sessions();
    if (!remaining.empty())
      spdlog::info("http: shutdown grace over, closing {} connections", remaining.size());
    for (auto& session : remaining) session->force_close();
  });
}

}  // namespace detail

HttpServer::HttpServer(net::io_context& ioc, ServerOptions options, Router router)
    : state_(std::make_shared<detail::ServerState>(ioc, std::move(options), std::move(router))) {}

HttpServer::~HttpServer() {
  net::post(state_->strand, [s = state_] {
    error_code ignored;
    s->acceptor.close(ignored);
    s->retry_timer.cancel();
  });
}

Result<void> HttpServer::start() {
  error_code ec;
  auto address = net::ip::make_address(state_->options.address, ec);
  if (ec) {
    return Error{"invalid_address", "invalid listen address '" + state_->options.address + "'",
                 "set an IPv4 or IPv6 address such as 0.0.0.0"};
  }
  tcp::endpoint endpoint(address, state_->options.port);
  auto& acceptor = state_->acceptor;
  auto fail = [&](const char* what) {
    return Error{"bind_failed",
                 std::string("cannot ") + what + " " + state_->options.address + ":" +
                     std::to_string(state_->options.port) + ": " + ec.message(),
                 "is another process using the port?"};
  };
  const bool any_v6 = address.is_v6() && address.is_unspecified();
  if (acceptor.open(endpoint.protocol(), ec); ec && any_v6) {
    // No IPv6 on this host: every IPv4 address instead.
    spdlog::info("http: IPv6 unavailable ({}), listening on IPv4 only", ec.message());
    endpoint = tcp::endpoint(net::ip::address_v4::any(), state_->options.port);
    ec.clear();
    acceptor.open(endpoint.protocol(), ec);
  }
  if (ec) return fail("open");
  // "::" takes IPv4 connections too (as ::ffff:a.b.c.d), whatever the
  // host's net.ipv6.bindv6only default.
  if (endpoint.address().is_v6() && any_v6) {
    if (acceptor.set_option(net::ip::v6_only(false), ec); ec) return fail("configure");
  }
  if (acceptor.set_option(net::socket_base::reuse_address(true), ec); ec) return fail("configure");
  if (acceptor.bind(endpoint, ec); ec) return fail("bind");
  if (acceptor.listen(net::socket_base::max_listen_connections, ec); ec) return fail("listen on");
  state_->port = acceptor.local_endpoint(ec).port();
  spdlog::info("http: listening on {}",
               endpoint.address().is_v6() && any_v6
                   ? "[::]:" + std::to_string(state_->port.load()) + " (IPv6 and IPv4)"
                   : endpoint.address().to_string() + ":" + std::to_string(state_->port.load()));
  net::post(state_->strand, [s = state_] { s->do_accept(); });
  return {};
}

uint16_t HttpServer::port() const { return state_->port.load(); }

size_t HttpServer::open_connections() const { return state_->open_connections(); }

void HttpServer::shutdown(std::function<void()> done) {
  net::post(state_->strand,
            [s = state_, done = std::move(done)]() mutable { s->begin_shutdown(std::move(done)); });
}

}  // namespace shapeproxy::http
