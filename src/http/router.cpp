#include "http/router.h"

#include <boost/beast/http/verb.hpp>

namespace shapeproxy::http {

void Router::add(Verb method, std::string path, Handler handler) {
  auto& handlers = routes_[std::move(path)];
  for (auto& [verb, h] : handlers) {
    if (verb == method) {
      h = std::move(handler);
      return;
    }
  }
  handlers.emplace_back(method, std::move(handler));
}

const Handler* Router::find(Verb method, std::string_view path) const {
  auto it = routes_.find(path);
  if (it == routes_.end()) return nullptr;
  for (const auto& [verb, h] : it->second)
    if (verb == method) return &h;
  return nullptr;
}

bool Router::has_path(std::string_view path) const { return routes_.find(path) != routes_.end(); }

std::string_view Router::route_of(std::string_view path) const {
  auto it = routes_.find(path);
  return it == routes_.end() ? std::string_view() : std::string_view(it->first);
}

std::vector<std::string> Router::paths() const {
  std::vector<std::string> out;
  out.reserve(routes_.size());
  for (const auto& [path, handlers] : routes_) out.push_back(path);
  return out;
}

std::string Router::allowed_methods(std::string_view path) const {
  std::string out;
  auto it = routes_.find(path);
  if (it != routes_.end()) {
    bool get = false, head = false;
    for (const auto& [verb, h] : it->second) {
      if (verb == Verb::options) continue;
      get = get || verb == Verb::get;
      head = head || verb == Verb::head;
      out += std::string(boost::beast::http::to_string(verb));
      out += ", ";
    }
    if (get && !head) out += "HEAD, ";  // served by the GET route
  }
  return out + "OPTIONS";
}

}  // namespace shapeproxy::http
