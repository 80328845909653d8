// An endpoint base URL ("http://host:port/prefix") split into what a request
// needs. Only plain http: TLS is for a reverse proxy in front.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace shapeproxy::client::detail {

struct Endpoint {
  std::string url;     // as given, for logs and status
  std::string host;    // for the connection and the Host header
  std::string port;    // "80" when absent
  std::string prefix;  // path prefix without trailing slash, "" for none
};

// The endpoint, or nullopt when the URL is not http://host[:port][/prefix].
std::optional<Endpoint> parse_endpoint(std::string_view url);

}  // namespace shapeproxy::client::detail
