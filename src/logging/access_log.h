// What: the access log (--access-log): one entry per answered request, through
// the "access" logger (module "access"), in the configured log format:
//   text: access: GET /v1/shape?table=items&offset=-1 200 1234 B 12.3 ms snapshot handle=...
//   json: {..., "module":"access", "msg":"GET /v1/shape 200", "method":"GET",
//          "path":"/v1/shape?table=items&offset=-1", "status":200, "bytes":1234,
//          "duration_ms":12.3, "kind":"snapshot", "handle":"..."}
// The path never carries the secret / api_secret parameters.
// Why: operators trace a client's requests and their cost without a proxy in front.
#pragma once

#include "http/server.h"

namespace shapeproxy::logging {

// An observer for http::ServerOptions::on_request_done that logs each request.
http::RequestObserver access_log_observer();

// Runs both observers (either may be empty).
http::RequestObserver combine_observers(http::RequestObserver first, http::RequestObserver second);

}  // namespace shapeproxy::logging
