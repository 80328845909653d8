// What: the subset of a shape request (Electric's subset snapshots): the
// subset__where/params/order_by/limit/offset query parameters, or the same
// keys in the JSON body of POST /v1/shape (under "subset" or at the top
// level), checked with Electric's rules.
// Why: TanStack DB's on-demand sync, requestSnapshot() and fetchSnapshot()
// ask for a slice of a shape this way; a request the proxy cannot serve must
// get a 400 naming the subset field, never the ordinary log.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "http/request.h"
#include "http/response.h"
#include "shapes/subset_query.h"

namespace shapeproxy::api {

// Subset field ("where", "order_by", "limit", "offset", "params", "body")
// -> messages, rendered under "errors":{"subset":{...}}.
using SubsetErrors = std::map<std::string, std::vector<std::string>>;

// No subset in the request (std::monostate), a valid one, or errors.
using SubsetOutcome = std::variant<std::monostate, shapes::SubsetRequest, SubsetErrors>;

// Query parameters first, then the POST body's keys (which win, as in
// Electric's plug). Invariant of a returned SubsetRequest: limit > 0,
// offset >= 0, and order_by is set when limit or offset is.
SubsetOutcome parse_subset_params(const http::Request& request);

// 400 {"message":"Invalid request","errors":{"subset":{<field>:[...]}}}.
http::Response invalid_subset_response(const SubsetErrors& errors);

}  // namespace shapeproxy::api
