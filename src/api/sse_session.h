// What: one live SSE request (live=true&live_sse=true): reads the shape once
// without waiting to answer errors with a normal status or open the stream
// with electric headers, then chains live reads, sending each message of
// each body as one `data:` event, `: keep-alive` comments when idle, and
// ends the stream after the maximum duration, on must-refetch, on shutdown.
// Why: SSE holds a connection across many reads; the session owns that loop,
// its timers and the cancellation of the read in flight when the client goes.
#pragma once

#include <array>
#include <boost/asio/any_io_executor.hpp>
#include <memory>
#include <mutex>
#include <string>

#include "api/shape_api_options.h"
#include "api/shape_params.h"
#include "http/exchange.h"
#include "shapes/shape_service.h"

namespace shapeproxy::api {

// The event-stream frames of a read body: one `data: <message>\n\n` per
// message of the JSON array (each message as nlohmann's compact dump). One
// commit wakes every SSE stream on a shape with the same body buffer, so the
// frames are made once per body and the same bytes are sent to each stream.
// Thread-safe; remembers the frames of the last few small bodies.
class SseFrames {
 public:
  // Null when the body is not a JSON array; empty for an empty array.
  std::shared_ptr<const std::string> frames(const std::shared_ptr<const std::string>& body);

 private:
  // Bodies above this are not remembered (a catch-up chunk is one stream's).
  static constexpr std::size_t kMaxRememberedBody = 256 * 1024;
  struct Entry {
    std::shared_ptr<const std::string> body;  // held: its address is not reused meanwhile
    std::shared_ptr<const std::string> frames;
  };
  std::mutex mu_;
  std::array<Entry, 8> entries_;  // guarded by mu_
  std::size_t next_ = 0;          // guarded by mu_: the entry to replace next
};

// `timers` must be a single-threaded executor (it serializes timer work);
// `service` and `frames` must outlive the session.
void start_sse_session(shapes::ShapeService& service,
                       std::shared_ptr<const ShapeApiOptions> options,
                       boost::asio::any_io_executor timers,
                       std::shared_ptr<http::Exchange> exchange, ShapeParams params,
                       SseFrames& frames);

}  // namespace shapeproxy::api
