// What: one request/response exchange, the seam between the transport and the
// handlers (shape API). A handler receives a shared_ptr<Exchange> and may
// answer at once or later from any thread: long-poll parking costs one small
// object and no thread.
// Why an interface: handlers can be tested with a fake exchange, and the
// session machinery (strands, timers, Beast) stays private to the server.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "http/request.h"
#include "http/response.h"

namespace shapeproxy::http {

// Thread-safety: every method may be called from any thread. The server
// serializes the work on the connection's strand, in call order per thread.
// Callbacks (on_abort / on_shutdown) run on the connection's strand.
class Exchange {
 public:
  virtual ~Exchange() = default;

  virtual const Request& request() const = 0;

  // Sends the response. The first call wins; later calls (and calls after an
  // abort) are ignored.
  virtual void respond(Response response) = 0;
  // True once respond() or start_event_stream() was called.
  virtual bool responded() const = 0;

  // Server-sent events: sends a 200 `text/event-stream` header (chunked; extra
  // headers from `headers`), then one `data: <data>\n\n` frame per
  // send_event(), `: <text>\n\n` per send_comment(), until end_event_stream().
  // Counts as the response (respond() is ignored afterwards).
  virtual void start_event_stream(Params headers) = 0;
  virtual void send_event(std::string data) = 0;
  virtual void send_comment(std::string text) = 0;
  // Already framed event-stream bytes (whole `data: ...\n\n` / `: ...\n\n`
  // frames), shared and immutable: many streams send one buffer (the frames
  // of the body one commit wakes them with) without a copy each.
  virtual void send_frames(std::shared_ptr<const std::string> frames) = 0;
  virtual void end_event_stream() = 0;
  // Closes the connection without ending the response (a stream's body is
  // cut where it is, without its last chunk), so the client sees a network
  // error and never takes part of a body for the whole. For a stream that
  // cannot be completed (e.g. its source failed).
  virtual void abort() = 0;

  // Runs when the exchange dies unanswered (or mid-stream): the client
  // disconnected, a write failed/timed out, or shutdown's grace period ended.
  // Use it to drop a waiter. Runs at once if the exchange is already aborted;
  // dropped if it was already answered. Callbacks are released once the
  // exchange is answered or aborted, so they may capture the exchange.
  virtual void on_abort(std::function<void()> callback) = 0;
  // Runs when the server starts a graceful shutdown while this exchange is
  // parked or streaming, so the handler can answer (e.g. up-to-date) or end
  // the stream. Without any shutdown callback the server answers a parked
  // exchange with 503 itself (and ends a stream).
  virtual void on_shutdown(std::function<void()> callback) = 0;
};

using Handler = std::function<void(std::shared_ptr<Exchange>)>;

}  // namespace shapeproxy::http
