// What: one live SSE request (live=true&live_sse=true): reads the shape once
// without waiting to answer errors with a normal status or open the stream
// with electric headers, then chains live reads, sending each message of
// each body as one `data:` event, `: keep-alive` comments when idle, and
// ends the stream after the maximum duration, on must-refetch, on shutdown.
// Why: SSE holds a connection across many reads; the session owns that loop,
// its timers and the cancellation of the read in flight when the client goes.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <memory>

#include "api/shape_api_options.h"
#include "api/shape_params.h"
#include "http/exchange.h"
#include "shapes/shape_service.h"

namespace shapeproxy::api {

// `timers` must be a single-threaded executor (it serializes timer work);
// `service` must outlive the session.
void start_sse_session(shapes::ShapeService& service,
                       std::shared_ptr<const ShapeApiOptions> options,
                       boost::asio::any_io_executor timers,
                       std::shared_ptr<http::Exchange> exchange, ShapeParams params);

}  // namespace shapeproxy::api
