// What: the /v1/shape endpoint: GET (snapshot, catch-up, live long-poll,
// SSE, subset snapshots), POST (a subset in a JSON body) and DELETE, on top of
// shapes::ShapeService, speaking Electric's HTTP shape protocol so the stock @electric-sql/client
// works unchanged. Why: the single place that binds the transport (http::Router/Exchange) to the
// shapes core: parameters in, service outcomes out as protocol responses.
#pragma once

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <thread>

#include "api/shape_api_options.h"
#include "api/shape_params.h"
#include "api/sse_session.h"
#include "http/exchange.h"
#include "http/router.h"
#include "shapes/shape_service.h"
#include "shapes/subset_query.h"

namespace shapeproxy::api {

class SharedReadResponses;

// Thread-safe; `service` must outlive the ShapeApi, which must outlive the
// server it is registered with.
//
// SSE sessions run their timers on a strand of `timers` (the proxy's
// io_context): a session may outlive the ShapeApi (a handler queued in that
// io_context holds it until the context destroys its handlers at shutdown),
// and its timers must then still have their service. Without `timers` the
// ShapeApi runs a thread of its own for them; then no session may outlive
// it (tests, where the server's io_context is the test's).
class ShapeApi {
 public:
  ShapeApi(shapes::ShapeService& service, ShapeApiOptions options = {},
           std::optional<boost::asio::any_io_executor> timers = std::nullopt);
  ~ShapeApi();
  ShapeApi(const ShapeApi&) = delete;
  ShapeApi& operator=(const ShapeApi&) = delete;

  // Runs subset snapshot queries. Without it, a request with a subset gets
  // 400 (never the ordinary log). Set before register_routes().
  using SubsetRunner =
      std::function<void(shapes::ShapeDefinitionRequest, shapes::SubsetRequest, bool fallback,
                         std::function<void(shapes::SubsetOutcome)>)>;
  void set_subset_runner(SubsetRunner runner) { subset_runner_ = std::move(runner); }

  // GET and POST options.path, and DELETE when options.allow_delete
  // (otherwise the server answers 405). All behind the secret when one is
  // configured.
  void register_routes(http::Router& router);

  // The handlers themselves (without the secret check), for tests/composition.
  // POST is GET with the subset (optionally) in a JSON body.
  void handle_get(std::shared_ptr<http::Exchange> exchange);
  void handle_delete(std::shared_ptr<http::Exchange> exchange);

 private:
  void serve_subset(std::shared_ptr<http::Exchange> exchange, ShapeParams params,
                    shapes::SubsetRequest subset);

  shapes::ShapeService& service_;
  SubsetRunner subset_runner_;
  std::shared_ptr<const ShapeApiOptions> options_;
  std::shared_ptr<SharedReadResponses> shared_reads_;  // live long-poll fan-out
  SseFrames sse_frames_;                               // live SSE fan-out
  // Without a `timers` executor: the ShapeApi's own, run by timers_thread_.
  std::unique_ptr<boost::asio::io_context> own_timers_;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>>
      timers_work_;
  std::thread timers_thread_;
  boost::asio::any_io_executor timers_;  // a strand: SSE sessions' timers run there
};

}  // namespace shapeproxy::api
