// libFuzzer target: a request target (path?query) as a client sends it.
// Request splitting, query parsing and percent-decoding must never crash,
// and decoding is total: every byte string decodes to something.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "http/request.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace shapeproxy::http;
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  Request request(Verb::get, std::string(bytes), {{"Host", "x"}});
  for (const auto& [name, value] : request.query_params()) {
    (void)request.query(name);
    // Decoding never produces more bytes than it reads.
    if (name.size() > bytes.size() || value.size() > bytes.size()) std::abort();
  }
  (void)percent_decode(bytes, true);
  (void)percent_decode(bytes, false);
  (void)parse_query(bytes);
  return 0;
}
