// What: the HTTP/1.1 server: accepts connections (one session object per
// connection, each on its own strand), parses requests with limits and
// timeouts, routes them to handlers, and writes responses, SSE streams and
// JSON errors. Handlers may park an exchange and answer later from any thread.
// Why: the transport the shape API plugs into; it owns everything about
// sockets (keep-alive, limits, CORS, graceful shutdown) so handlers don't.
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.h"
#include "http/router.h"

namespace shapeproxy::http {

// One answered request, as reported to ServerOptions::on_request_done.
struct RequestRecord {
  // The routed path ("/v1/shape"); empty when no route matched or the request
  // was refused before routing (malformed, too large, connection limit).
  std::string_view route;
  Verb method = Verb::unknown;  // unknown when the request line was not parsed
  unsigned status = 0;
  // From the request read (or refused) to the response's last byte written;
  // for an event stream, to the end of the stream.
  std::chrono::steady_clock::duration duration{};
  // Body bytes sent from a file with sendfile(2), without passing through
  // user space (0 for ordinary bodies).
  std::uint64_t sendfile_bytes = 0;
  // The request target as sent ("/v1/shape?table=items&offset=-1"; empty when
  // not parsed). May carry secrets: observers strip them (see access_log.h).
  std::string_view target;
  // Response body bytes: the body, the file range sent, or every SSE frame.
  std::uint64_t body_bytes = 0;
  // The electric-handle response header, if any.
  std::string_view handle;
};

// Runs on the connection's I/O thread once per answered request; must be
// thread-safe and cheap (it is on every response's path). Not called for
// exchanges that die unanswered (client gone, write failed).
using RequestObserver = std::function<void(const RequestRecord&)>;

struct ServerOptions {
  // "::" (the default) listens on every IPv6 and IPv4 address (one dual-stack
  // socket: `localhost` works whether it resolves to ::1 or 127.0.0.1); on a
  // host without IPv6 it falls back to 0.0.0.0. Any other address: that one.
  std::string address = "::";
  uint16_t port = 3000;  // 0: pick an ephemeral port (see HttpServer::port())
  // Whole request (first byte to end of headers/body) must arrive within this.
  std::chrono::milliseconds read_timeout{std::chrono::seconds(30)};
  // Each response write (or SSE frame) must complete within this.
  std::chrono::milliseconds write_timeout{std::chrono::seconds(30)};
  // A keep-alive connection may sit between requests this long.
  std::chrono::milliseconds idle_timeout{std::chrono::seconds(60)};
  size_t max_header_bytes = 16 * 1024;  // -> 431
  size_t max_url_bytes = 8 * 1024;      // -> 414
  size_t max_body_bytes = 64 * 1024;    // -> 413
  size_t max_connections = 10000;       // -> 503 + retry-after, then close
  int retry_after_seconds = 5;          // retry-after on 503 responses from the server
  // On shutdown: how long parked exchanges/writes get before connections are cut.
  std::chrono::milliseconds shutdown_grace{std::chrono::seconds(5)};
  // access-control-expose-headers on every response.
  std::string cors_expose_headers =
      "electric-offset, electric-handle, electric-schema, electric-cursor, electric-up-to-date, "
      "electric-fallback-mode, retry-after, etag";
  int cors_max_age_seconds = 86400;  // access-control-max-age on preflight
  // File-range bodies (Response::file) go out with sendfile(2); false reads
  // them into memory and writes them the ordinary way (for comparisons).
  bool sendfile = true;
  RequestObserver on_request_done;  // optional: request metrics
};

namespace detail {
struct ServerState;
}

// Run the io_context on one or more threads; the server is thread-safe.
class HttpServer {
 public:
  HttpServer(boost::asio::io_context& ioc, ServerOptions options, Router router);
  ~HttpServer();  // closes the acceptor; open sessions finish on their own
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds and starts accepting. Error code "bind_failed" etc. on failure.
  Result<void> start();
  // The bound port (useful with options.port = 0). Valid after start().
  uint16_t port() const;
  // Open connections (sessions) right now.
  size_t open_connections() const;
  // Tests: the server's shared state, which every session holds; expires
  // once the server and all its sessions are gone.
  std::weak_ptr<const void> lifetime() const { return state_; }

  // Graceful shutdown: stop accepting, close idle connections, run parked
  // exchanges' shutdown callbacks (or answer them 503), let writes finish;
  // after options.shutdown_grace cut what is left. `done` runs (on the
  // io_context) once every session is gone. Call once.
  void shutdown(std::function<void()> done);

 private:
  std::shared_ptr<detail::ServerState> state_;
};

}  // namespace shapeproxy::http
