// What: parsing and validation of the /v1/shape query parameters into the
// shapes core's request types, with Electric's validation rules and messages.
// Why: the stock client depends on exact 400 bodies and on which parameters
// are required together; the core should only see well-formed requests.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "http/request.h"
#include "http/response.h"
#include "shapes/shape_service.h"

namespace shapeproxy::api {

// A validated GET /v1/shape request.
struct ShapeParams {
  shapes::ShapeDefinitionRequest definition;
  shapes::ReadRequest read;
  bool live_sse = false;              // live=true&live_sse=true (or experimental_live_sse)
  std::optional<std::string> cursor;  // echoed electric-cursor, opaque
  std::string requested_offset;       // "-1", "now" or "<tx>_<op>", for the etag
  // Accept-Encoding allows gzip: a stored gzip chunk is sent as it is stored.
  bool accepts_gzip = false;
};

// The message of a parameter whose value does not parse (Electric's text).
inline constexpr char kInvalid[] = "is invalid";

// Parameter name -> messages, rendered as the 400 "errors" object.
using ValidationErrors = std::map<std::string, std::vector<std::string>>;

using ParamsOutcome = std::variant<ShapeParams, ValidationErrors>;

// GET: table, offset, handle, live, live_sse, cursor, where, params, columns,
// replica, log. Unknown parameters are ignored; an empty value counts as
// absent; of duplicates the last wins (as in Plug).
ParamsOutcome parse_shape_params(const http::Request& request);

// A validated DELETE /v1/shape request: by definition (table given) and/or handle.
struct DeleteParams {
  shapes::ShapeDefinitionRequest definition;
  std::optional<std::string> handle;
};
using DeleteParamsOutcome = std::variant<DeleteParams, ValidationErrors>;
DeleteParamsOutcome parse_delete_params(const http::Request& request);

// The n of a positional parameter key (`params[n]`, or "n" in a JSON
// object): "1".."99999" without leading zeros; nullopt otherwise.
std::optional<int> positional_index(std::string_view key);
// The 400 message for a key that is not one.
std::string invalid_param_name(std::string_view key);

// 400 {"message":"Invalid request","errors":{...}} with no-store caching.
http::Response invalid_request_response(const ValidationErrors& errors);

}  // namespace shapeproxy::api
