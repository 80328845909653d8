#include "endpoint.h"

#include <cctype>

namespace shapeproxy::client::detail {

std::optional<Endpoint> parse_endpoint(std::string_view url) {
  constexpr std::string_view kScheme = "http://";
  if (url.size() <= kScheme.size()) return std::nullopt;
  for (std::size_t i = 0; i < kScheme.size(); ++i)
    if (std::tolower(static_cast<unsigned char>(url[i])) != kScheme[i]) return std::nullopt;
  Endpoint endpoint;
  endpoint.url = std::string(url);
  std::string_view rest = url.substr(kScheme.size());
  std::size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? "" : rest.substr(slash);
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  if (authority.empty() || path.find_first_of("?#") != std::string_view::npos) return std::nullopt;
  if (authority.front() == '[') {  // [v6]:port
    std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    endpoint.host = std::string(authority.substr(1, close - 1));
    authority.remove_prefix(close + 1);
    if (!authority.empty() && authority.front() != ':') return std::nullopt;
    endpoint.port = authority.empty() ? "" : std::string(authority.substr(1));
  } else {
    std::size_t colon = authority.rfind(':');
    endpoint.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) endpoint.port = std::string(authority.substr(colon + 1));
  }
  if (endpoint.host.empty()) return std::nullopt;
  if (endpoint.port.empty()) endpoint.port = "80";
  for (char c : endpoint.port)
    if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
  if (endpoint.port.size() > 5 || std::stoi(endpoint.port) == 0 || std::stoi(endpoint.port) > 65535)
    return std::nullopt;
  endpoint.prefix = std::string(path);
  return endpoint;
}

}  // namespace shapeproxy::client::detail
