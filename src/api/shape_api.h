// What: the /v1/shape endpoint: GET (snapshot, catch-up, live long-poll,
// SSE) and DELETE, on top of shapes::ShapeService, speaking Electric's HTTP
// shape protocol so the stock @electric-sql/client works unchanged.
// Why: the single place that binds the transport (http::Router/Exchange) to
// the shapes core: parameters in, service outcomes out as protocol responses.
#pragma once

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <memory>
#include <thread>

#include "api/shape_api_options.h"
#include "http/exchange.h"
#include "http/router.h"
#include "shapes/shape_service.h"

namespace shapeproxy::api {

class SharedReadResponses;

// Thread-safe; `service` must outlive the ShapeApi, which must outlive the
// server it is registered with. Owns one thread for SSE timers.
class ShapeApi {
 public:
  ShapeApi(shapes::ShapeService& service, ShapeApiOptions options = {});
  ~ShapeApi();
  ShapeApi(const ShapeApi&) = delete;
  ShapeApi& operator=(const ShapeApi&) = delete;

  // GET options.path, and DELETE when options.allow_delete (otherwise the
  // server answers 405). Both behind the secret when one is configured.
  void register_routes(http::Router& router);

  // The handlers themselves (without the secret check), for tests/composition.
  void handle_get(std::shared_ptr<http::Exchange> exchange);
  void handle_delete(std::shared_ptr<http::Exchange> exchange);

 private:
  shapes::ShapeService& service_;
  std::shared_ptr<const ShapeApiOptions> options_;
  std::shared_ptr<SharedReadResponses> shared_reads_;  // live long-poll fan-out
  boost::asio::io_context timers_;
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> timers_work_;
  std::thread timers_thread_;
};

}  // namespace shapeproxy::api
