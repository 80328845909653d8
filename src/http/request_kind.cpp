#include "http/request_kind.h"

#include <optional>

namespace shapeproxy::http {
namespace {

// Calls `each(name, value)` for every raw (undecoded) query parameter.
template <typename F>
void for_each_param(std::string_view query, F&& each) {
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view param = query.substr(0, amp);
    auto eq = param.find('=');
    each(param.substr(0, eq),
         eq == std::string_view::npos ? std::string_view() : param.substr(eq + 1), param);
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
}

std::string_view query_of(std::string_view target) {
  auto q = target.find('?');
  return q == std::string_view::npos ? std::string_view() : target.substr(q + 1);
}

}  // namespace

std::string_view request_kind(std::string_view route, std::string_view target) {
  if (route == "/v1/shape") {
    bool sse = false, live = false;
    std::optional<std::string_view> offset;
    for_each_param(query_of(target),
                   [&](std::string_view name, std::string_view value, std::string_view) {
                     if ((name == "live_sse" || name == "experimental_live_sse") && value == "true")
                       sse = true;
                     if (name == "live" && value == "true") live = true;
                     if (name == "offset") offset = value;
                   });
    if (sse) return "sse";
    if (live) return "live";
    if (!offset || *offset == "-1") return "snapshot";
    return "catch-up";
  }
  if (route == "/v1/status" || route.starts_with("/v1/status/") || route == "/v1/health" ||
      route == "/metrics" || route == "/dashboard")
    return "status";
  return "other";
}

std::string redact_target(std::string_view target) {
  auto q = target.find('?');
  if (q == std::string_view::npos) return std::string(target);
  std::string out(target.substr(0, q));
  char sep = '?';
  for_each_param(target.substr(q + 1),
                 [&](std::string_view name, std::string_view, std::string_view param) {
                   if (name == "secret" || name == "api_secret") return;
                   out += sep;
                   out += param;
                   sep = '&';
                 });
  return out;
}

}  // namespace shapeproxy::http
