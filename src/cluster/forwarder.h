// What: Forwarder, the follower's relay of a request to the leader instance:
// the same method, target, headers (hop-by-hop ones aside) and body, and back
// the leader's status, headers and body, or its event stream frame by frame
// (SSE). Idle keep-alive connections to the leader are reused.
// Why: every instance answers every request, with the same handles and
// offsets, because a follower serves the leader's answer (rfc/0003). A
// forwarded request carries `x-shapeproxy-forwarded-by`, so an instance that
// is not (or no longer) the leader never forwards it again (no loops).
// Threading: forward() and fetch() from any thread; each relay runs on its
// own strand.
#pragma once

#include <boost/asio/io_context.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "common/result.h"
#include "http/exchange.h"

namespace shapeproxy::cluster {

// The header naming the instance that forwarded a request.
inline constexpr const char* kForwardedByHeader = "x-shapeproxy-forwarded-by";

struct ForwarderOptions {
  std::string instance_id;
  // The leader must send a response's header within this (a long-poll's
  // timeout plus a margin), and every later piece within `read_timeout`.
  std::chrono::milliseconds header_timeout{35'000};
  std::chrono::milliseconds read_timeout{60'000};
  std::chrono::milliseconds connect_timeout{2'000};
  std::size_t max_idle_connections = 64;
};

class Forwarder {
 public:
  Forwarder(boost::asio::io_context& io, ForwarderOptions options);
  ~Forwarder();

  // Relays `exchange` to the leader at `url` (http://host:port). When the
  // leader cannot be reached (nothing was sent to it), `unreachable` runs
  // instead and owns the exchange; once the leader got the request, any
  // failure answers 503 with retry-after (the client retries).
  void forward(std::shared_ptr<http::Exchange> exchange, std::string url,
               std::function<void(std::shared_ptr<http::Exchange>)> unreachable);

  // GET `target` from `url`; `done` gets the response (status, headers, body)
  // or an Error. For /v1/status on a follower.
  void fetch(std::string url, std::string target, std::function<void(Result<http::Response>)> done);

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace shapeproxy::cluster
