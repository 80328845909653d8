// libFuzzer target: a whole GET/DELETE /v1/shape query string through the
// shape API's validation (table, offset, handle, live, cursor, where text,
// params[n] and the params JSON object, columns). Anything may be refused;
// nothing may crash, and a refusal always names the offending parameter.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <variant>

#include "api/shape_params.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace shapeproxy;
  std::string target = "/v1/shape?" + std::string(reinterpret_cast<const char*>(data), size);
  http::Request get(http::Verb::get, target, {{"Host", "x"}});
  auto outcome = api::parse_shape_params(get);
  if (const auto* errors = std::get_if<api::ValidationErrors>(&outcome)) {
    if (errors->empty()) std::abort();
    for (const auto& [name, messages] : *errors)
      if (name.empty() || messages.empty()) std::abort();
    (void)api::invalid_request_response(*errors);
  }
  http::Request del(http::Verb::delete_, target, {{"Host", "x"}});
  (void)api::parse_delete_params(del);
  return 0;
}
