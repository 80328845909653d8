// What: the protocol's responses built from ShapeService outcomes: 200 with
// electric-* headers, etag and cache-control per case, 304 on If-None-Match,
// 409 must-refetch, 400 from the service, 503 with retry-after, and the SSE
// stream's opening headers.
// Why: the stock client treats missing headers as fatal and CDNs cache by
// these headers; keeping every header rule in one place makes them testable.
#pragma once

#include <array>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "api/shape_api_options.h"
#include "api/shape_params.h"
#include "http/request.h"
#include "http/response.h"
#include "shapes/shape_service.h"
#include "shapes/subset_query.h"

namespace shapeproxy::api {

// cache-control of a 200 to `params` (offset -1, live long-poll, SSE, other).
std::string success_cache_control(const ShapeParams& params, const ShapeApiOptions& options);

// "\"<handle>:<requested offset>:<response offset>\"" (quoted).
std::string shape_etag(std::string_view handle, std::string_view requested_offset,
                       std::string_view response_offset);

// Whether an If-None-Match header value (comma list, quoted or not, or "*")
// names `etag`.
bool etag_matches(std::string_view if_none_match, std::string_view etag);

// 200 (or 304 when `if_none_match` matches the etag) for a successful read.
http::Response read_response(const shapes::ReadResult& result, const ShapeParams& params,
                             const ShapeApiOptions& options,
                             std::optional<std::string_view> if_none_match);

// read_response() for live long-polls, shared: the parked requests one commit
// wakes get the same ReadResult (same body buffer), so those that also sent
// the same offset text and cursor get byte-identical responses. Each distinct
// response is built once and handed out as an http::SharedResponse, which the
// server serializes once and writes to every keep-alive connection. Other
// reads (snapshot, catch-up, SSE, live timeouts with their unique etag, 304s)
// get read_response() itself. Thread-safe; remembers the last few responses.
class SharedReadResponses {
 public:
  http::Response get(const shapes::ReadResult& result, const ShapeParams& params,
                     const ShapeApiOptions& options, std::optional<std::string_view> if_none_match);

 private:
  struct Entry {
    // What the response's bytes depend on. `body` is only compared, never
    // dereferenced; `response` holds the body, so the address is not reused
    // while the entry lives.
    const std::string* body = nullptr;
    std::string handle;
    shapes::LogOffset offset;
    bool up_to_date = false;
    bool fallback = false;
    std::string requested_offset;
    std::string cursor;
    std::string etag;
    std::shared_ptr<const http::SharedResponse> response;
  };
  static constexpr size_t kEntries = 8;
  std::mutex mu_;
  std::array<Entry, kEntries> entries_;  // guarded by mu_
  size_t next_ = 0;                      // guarded by mu_: the entry to replace next
};

// The answer to a subset snapshot of `shape` (the non-live read that
// resolved it): 200 {metadata, data} with electric-snapshot: true,
// cache-control: no-cache and the shape's handle, offset and schema; a 400
// naming the subset field; or 503.
http::Response subset_outcome_response(const shapes::ReadResult& shape,
                                       shapes::SubsetOutcome outcome);

// 409 [{"headers":{"control":"must-refetch"}}], electric-handle when known.
http::Response must_refetch_response(const shapes::MustRefetch& outcome);
// The must-refetch control message alone (an SSE frame).
std::string must_refetch_message();

// 400 naming the field the service rejected.
http::Response service_invalid_response(const shapes::InvalidRequest& outcome);

// 503 {"message":...} with retry-after.
http::Response unavailable_response(const shapes::Unavailable& outcome);

// Any outcome except a ReadResult (which needs read_response).
http::Response error_outcome_response(const shapes::ReadOutcome& outcome);

// Extra headers of the SSE stream's 200.
http::Params sse_headers(const shapes::ReadResult& first, const ShapeParams& params,
                         const ShapeApiOptions& options);

// A 200 up-to-date-only answer at the requested offset, for parked live
// requests when the server shuts down.
http::Response shutdown_up_to_date_response(const ShapeParams& params,
                                            const ShapeApiOptions& options);

}  // namespace shapeproxy::api
