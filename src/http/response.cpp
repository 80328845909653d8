#include "http/response.h"

#include <nlohmann/json.hpp>

namespace shapeproxy::http {

void Response::set_header(std::string name, std::string value) {
  for (auto& [k, v] : headers) {
    if (iequals(k, name)) {
      v = std::move(value);
      return;
    }
  }
  headers.emplace_back(std::move(name), std::move(value));
}

Response Response::share(std::shared_ptr<const SharedResponse> shared) {
  Response r;
  r.status = shared ? shared->response().status : 500;
  r.shared = std::move(shared);
  return r;
}

SharedResponse::SharedResponse(Response response) : response_(std::move(response)) {}

Response Response::json(unsigned status, std::string body) {
  return json(status, std::make_shared<const std::string>(std::move(body)));
}

Response Response::json(unsigned status, std::shared_ptr<const std::string> body) {
  Response r;
  r.status = status;
  r.headers.emplace_back("content-type", "application/json");
  r.body = std::move(body);
  return r;
}

Response json_error(unsigned status, std::string_view message) {
  nlohmann::json j = {{"message", message}};
  Response r = Response::json(status, j.dump());
  r.headers.emplace_back("cache-control", "no-store");
  r.headers.emplace_back("surrogate-control", "no-store");
  return r;
}

}  // namespace shapeproxy::http
