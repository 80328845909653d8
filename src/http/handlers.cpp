#include "http/handlers.h"

#include <nlohmann/json.hpp>

namespace shapeproxy::http {
namespace {

bool constant_time_equals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;  // only the length leaks
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

}  // namespace

bool authorized(const Request& request, const std::optional<std::string>& secret) {
  if (!secret) return true;
  auto given = request.query("secret");
  if (!given) given = request.query("api_secret");
  return given && constant_time_equals(*given, *secret);
}

Handler require_token(std::optional<std::string> token, Handler inner) {
  if (!token) return inner;
  return [token = std::move(token), inner = std::move(inner)](std::shared_ptr<Exchange> ex) {
    constexpr std::string_view kBearer = "Bearer ";
    auto header = ex->request().header("authorization");
    bool ok = header && header->size() > kBearer.size() &&
              iequals(header->substr(0, kBearer.size()), kBearer) &&
              constant_time_equals(header->substr(kBearer.size()), *token);
    if (!ok) ok = authorized(ex->request(), token);
    if (!ok) {
      Response r = json_error(401, "Unauthorized - Invalid metrics token");
      r.headers.emplace_back("www-authenticate", "Bearer");
      ex->respond(std::move(r));
      return;
    }
    inner(std::move(ex));
  };
}

Response unauthorized_response() { return json_error(401, "Unauthorized - Invalid API secret"); }

Handler require_secret(std::optional<std::string> secret, Handler inner) {
  return [secret = std::move(secret), inner = std::move(inner)](std::shared_ptr<Exchange> ex) {
    if (!authorized(ex->request(), secret)) {
      ex->respond(unauthorized_response());
      return;
    }
    inner(std::move(ex));
  };
}

Handler health_handler(std::function<HealthState()> state) {
  return [state = std::move(state)](std::shared_ptr<Exchange> ex) {
    HealthState s = state();
    const char* name = s == HealthState::kActive     ? "active"
                       : s == HealthState::kStarting ? "starting"
                                                     : "waiting";
    Response r = Response::json(s == HealthState::kActive ? 200 : 202,
                                nlohmann::json{{"status", name}}.dump());
    r.headers.emplace_back("cache-control", "no-cache, no-store, must-revalidate");
    ex->respond(std::move(r));
  };
}

}  // namespace shapeproxy::http
