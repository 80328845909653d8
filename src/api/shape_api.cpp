#include "api/shape_api.h"

#include <spdlog/spdlog.h>

#include <atomic>
#include <boost/asio/strand.hpp>
#include <mutex>

#include "api/shape_headers.h"
#include "api/shape_params.h"
#include "api/sse_session.h"
#include "api/subset_params.h"
#include "common/text.h"
#include "http/handlers.h"

namespace shapeproxy::api {
namespace {

// The state a parked long-poll shares between its done, abort and shutdown
// callbacks: whichever comes first wins.
struct LongPoll {
  std::mutex mu;
  bool settled = false;
  std::function<void()> cancel;

  // True for the first caller only.
  bool settle() {
    std::lock_guard lock(mu);
    return !std::exchange(settled, true);
  }
  // Runs the read's cancel (outside the lock) if it is known.
  void cancel_read() {
    std::function<void()> c;
    {
      std::lock_guard lock(mu);
      c.swap(cancel);
    }
    if (c) c();
  }
};

// A new shape's first chunk while its query runs (rfc/0005): the headers
// (which do not depend on the body) at once, the body as it is made, in
// HTTP/1.1 chunks; cut (the connection closed) if it cannot be completed.
void stream_body(std::shared_ptr<http::Exchange> exchange, const shapes::ReadResult& result,
                 const ShapeParams& params, const ShapeApiOptions& options) {
  http::Response head =
      read_response(result, params, options, exchange->request().header("if-none-match"));
  if (head.status != 200) {  // 304: the etag names the same bytes whatever they are
    exchange->respond(std::move(head));
    return;
  }
  exchange->start_event_stream(std::move(head.headers));
  auto unsubscribe =
      result.streaming->subscribe({[exchange](std::shared_ptr<const std::string> bytes) {
                                     exchange->send_frames(std::move(bytes));
                                   },
                                   [exchange](bool complete) {
                                     if (complete) {
                                       exchange->end_event_stream();
                                     } else {
                                       exchange->abort();
                                     }
                                   }});
  exchange->on_abort(std::move(unsubscribe));
  // At shutdown the body completes or is cut with its query (within the
  // server's grace period); ending it early would pass a part for the whole.
  exchange->on_shutdown([] {});
}

void long_poll(shapes::ShapeService& service, std::shared_ptr<const ShapeApiOptions> options,
               std::shared_ptr<SharedReadResponses> shared_reads,
               std::shared_ptr<http::Exchange> exchange, ShapeParams params) {
  auto poll = std::make_shared<LongPoll>();
  auto shared_params = std::make_shared<const ShapeParams>(std::move(params));
  auto done = [poll, options, shared_reads = std::move(shared_reads), exchange,
               shared_params](shapes::ReadOutcome outcome) {
    if (!poll->settle()) return;
    std::function<void()> cancel;  // released outside the lock
    {
      std::lock_guard lock(poll->mu);
      cancel.swap(poll->cancel);
    }
    if (relay_elsewhere(*options, outcome, exchange)) return;
    auto* result = std::get_if<shapes::ReadResult>(&outcome);
    if (result && result->streaming)
      return stream_body(exchange, *result, *shared_params, *options);
    exchange->respond(result ? shared_reads->get(*result, *shared_params, *options,
                                                 exchange->request().header("if-none-match"))
                             : error_outcome_response(outcome));
  };
  std::function<void()> cancel =
      service.read(shared_params->definition, shared_params->read, std::move(done));
  {
    std::lock_guard lock(poll->mu);
    if (poll->settled) return;  // answered synchronously
    poll->cancel = std::move(cancel);
  }
  exchange->on_abort([poll] {
    if (poll->settle()) poll->cancel_read();
  });
  if (!shared_params->read.live) return;  // the server's 503 covers non-live on shutdown
  exchange->on_shutdown([poll, options, exchange, shared_params] {
    if (!poll->settle()) return;
    poll->cancel_read();
    exchange->respond(shutdown_up_to_date_response(*shared_params, *options));
  });
}

}  // namespace

ShapeApi::ShapeApi(shapes::ShapeService& service, ShapeApiOptions options,
                   std::optional<boost::asio::any_io_executor> timers)
    : service_(service),
      options_(std::make_shared<const ShapeApiOptions>(std::move(options))),
      shared_reads_(std::make_shared<SharedReadResponses>()) {
  if (timers) {
    timers_ = boost::asio::make_strand(*timers);
    return;
  }
  own_timers_ = std::make_unique<boost::asio::io_context>();
  timers_work_.emplace(own_timers_->get_executor());
  timers_ = own_timers_->get_executor();  // one thread: a strand already
  timers_thread_ = std::thread([context = own_timers_.get()] { context->run(); });
}

ShapeApi::~ShapeApi() {
  if (!own_timers_) return;
  timers_work_.reset();
  own_timers_->stop();
  timers_thread_.join();
}

void ShapeApi::register_routes(http::Router& router) {
  router.add(
      http::Verb::get, options_->path,
      http::require_secret(options_->secret, [this](auto ex) { handle_get(std::move(ex)); }));
  router.add(
      http::Verb::post, options_->path,
      http::require_secret(options_->secret, [this](auto ex) { handle_get(std::move(ex)); }));
  if (options_->allow_delete) {
    router.add(
        http::Verb::delete_, options_->path,
        http::require_secret(options_->secret, [this](auto ex) { handle_delete(std::move(ex)); }));
  } else {
    // Routed so that the CORS preflight lists DELETE (clients use it, as
    // with Electric), but refused: 405 as when not routed.
    router.add(http::Verb::delete_, options_->path, [](std::shared_ptr<http::Exchange> ex) {
      http::Response r = http::Response::json(405, R"({"message":"Method not allowed"})");
      r.headers.emplace_back("allow", "GET, POST, HEAD, OPTIONS");
      ex->respond(std::move(r));
    });
  }
}

void ShapeApi::handle_get(std::shared_ptr<http::Exchange> exchange) {
  ParamsOutcome parsed = parse_shape_params(exchange->request());
  if (auto* errors = std::get_if<ValidationErrors>(&parsed)) {
    exchange->respond(invalid_request_response(*errors));
    return;
  }
  ShapeParams params = std::get<ShapeParams>(std::move(parsed));
  SubsetOutcome subset = parse_subset_params(exchange->request());
  if (auto* errors = std::get_if<SubsetErrors>(&subset)) {
    exchange->respond(invalid_subset_response(*errors));
    return;
  }
  if (auto* request = std::get_if<shapes::SubsetRequest>(&subset)) {
    serve_subset(std::move(exchange), std::move(params), std::move(*request));
    return;
  }
  if (params.live_sse) {
    start_sse_session(service_, options_, timers_, std::move(exchange), std::move(params),
                      sse_frames_);
    return;
  }
  // A new shape's first chunk may come as it is made (chunked: HTTP/1.1;
  // not for HEAD, whose answer has no body).
  const auto& request = exchange->request();
  params.read.may_stream = !params.read.live &&
                           params.read.start == shapes::ReadRequest::Start::kBeforeAll &&
                           request.method() != http::Verb::head && request.version() >= 11;
  long_poll(service_, options_, shared_reads_, std::move(exchange), std::move(params));
}

// A subset snapshot: the shape is resolved as for a non-live read (handle
// checks, 409s, creation), whose answer gives the handle, offset, schema and
// serving mode; then the subset's own query runs and its rows are answered
// as Electric's {metadata, data} object. The shape's log is not touched.
void ShapeApi::serve_subset(std::shared_ptr<http::Exchange> exchange, ShapeParams params,
                            shapes::SubsetRequest subset) {
  if (params.live_sse) {
    exchange->respond(invalid_subset_response(
        {{"live_sse", {"Subset snapshots are a stable view of data, so SSE is not applicable"}}}));
    return;
  }
  if (!subset_runner_) {
    exchange->respond(invalid_subset_response(
        {{"request", {"subset snapshots are not enabled on this server"}}}));
    return;
  }
  params.read.live = false;
  auto definition = params.definition;
  (void)service_.read(params.definition, params.read,
                      [runner = subset_runner_, exchange, definition = std::move(definition),
                       subset = std::move(subset)](shapes::ReadOutcome outcome) mutable {
                        auto* shape = std::get_if<shapes::ReadResult>(&outcome);
                        if (!shape) {
                          exchange->respond(error_outcome_response(outcome));
                          return;
                        }
                        runner(
                            std::move(definition), std::move(subset), shape->fallback,
                            [exchange, shape = std::move(*shape)](shapes::SubsetOutcome answer) {
                              exchange->respond(subset_outcome_response(shape, std::move(answer)));
                            });
                      });
}

void ShapeApi::handle_delete(std::shared_ptr<http::Exchange> exchange) {
  DeleteParamsOutcome parsed = parse_delete_params(exchange->request());
  if (auto* errors = std::get_if<ValidationErrors>(&parsed)) {
    exchange->respond(invalid_request_response(*errors));
    return;
  }
  DeleteParams params = std::get<DeleteParams>(std::move(parsed));
  service_.remove(std::move(params.definition), std::move(params.handle),
                  [exchange](Result<shapes::DeleteOutcome> outcome) {
                    if (!outcome.ok()) {
                      spdlog::warn("shape api: delete failed: {}",
                                   text::log_safe(outcome.error().to_string()));
                      exchange->respond(
                          unavailable_response({outcome.error().message, std::chrono::seconds(5)}));
                      return;
                    }
                    if (outcome.value().invalid) {
                      exchange->respond(service_invalid_response(*outcome.value().invalid));
                      return;
                    }
                    http::Response r;
                    r.status = 202;
                    r.headers.emplace_back("cache-control", "no-cache");
                    exchange->respond(std::move(r));
                  });
}

}  // namespace shapeproxy::api
