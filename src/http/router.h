// What: exact-path routing of (method, path) to a Handler.
// Why: the proxy has four fixed routes (/v1/shape, /v1/health, /v1/status,
// /metrics); exact matching is all it needs and is trivially fast.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "http/exchange.h"
#include "http/request.h"

namespace shapeproxy::http {

class Router {
 public:
  // Registers `handler` for `method` on `path`; a later add() replaces it.
  void add(Verb method, std::string path, Handler handler);

  // The handler for (method, path), or nullptr.
  const Handler* find(Verb method, std::string_view path) const;
  // Whether any method is routed on `path` (tells 405 from 404).
  bool has_path(std::string_view path) const;
  // The stored path equal to `path` (valid as long as the router), or "" when
  // nothing is routed on `path`: a label that never holds request bytes.
  std::string_view route_of(std::string_view path) const;
  // Every routed path, sorted.
  std::vector<std::string> paths() const;
  // "GET, DELETE, HEAD, OPTIONS": the methods routed on `path`, HEAD where
  // GET is (the server answers HEAD with the GET route), plus OPTIONS.
  std::string allowed_methods(std::string_view path) const;

 private:
  std::map<std::string, std::vector<std::pair<Verb, Handler>>, std::less<>> routes_;
};

}  // namespace shapeproxy::http
