// Builds shape request targets (path + query) from the client's options and
// its position in the shape log, and the shape's identity for hashing.
#pragma once

#include <string>
#include <string_view>

#include "endpoint.h"
#include "shapeproxy/replica_client.h"

namespace shapeproxy::client::detail {

// Where the client is in the shape log.
struct ShapePosition {
  std::string offset = "-1";
  std::string handle;  // "" until the first response
  std::string cursor;  // last electric-cursor
  bool live = false;   // up to date: long-poll
};

std::string percent_encode(std::string_view text);

// The normalized definition (table, where, params, columns, replica): equal
// for clients of the same shape.
std::string shape_identity(const ReplicaClientOptions& options);

// "<prefix>/v1/shape?table=..&offset=..[&handle=..][&live=true&cursor=..].."
std::string shape_target(const Endpoint& endpoint, const ReplicaClientOptions& options,
                         const ShapePosition& position);
std::string status_target(const Endpoint& endpoint);

}  // namespace shapeproxy::client::detail
