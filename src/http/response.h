// What: the response a handler hands back, plus helpers for JSON bodies and
// the protocol's JSON error shape {"message": "..."}.
// Why: keeps handlers free of Beast types; the body is a shared immutable
// buffer so answering 1,000 parked long-polls with the same bytes copies nothing.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "http/request.h"

namespace shapeproxy::http {

struct Response {
  unsigned status = 200;
  // Extra headers. content-length and connection are set by the server; CORS
  // headers are added by the server unless already present here.
  Params headers;
  // Body bytes; null means empty. Shared and immutable: never mutate after send.
  std::shared_ptr<const std::string> body;

  // Replaces any header with the same (case-insensitive) name.
  void set_header(std::string name, std::string value);
  std::string_view body_view() const { return body ? std::string_view(*body) : std::string_view(); }

  // `content-type: application/json` with the given serialized body.
  static Response json(unsigned status, std::string body);
  static Response json(unsigned status, std::shared_ptr<const std::string> body);
};

// {"message": message} with cache-control/surrogate-control: no-store.
Response json_error(unsigned status, std::string_view message);

}  // namespace shapeproxy::http
