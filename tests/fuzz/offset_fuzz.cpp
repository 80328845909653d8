// libFuzzer target: the `offset` query parameter and stored offsets. Every
// accepted offset must print back to text that parses to the same offset.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "api/offset_text.h"
#include "shapes/log_offset.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace shapeproxy;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto requested = api::parse_requested_offset(text)) {
    auto again = api::parse_requested_offset(api::requested_offset_text(*requested));
    if (!again || again->start != requested->start ||
        (requested->start == shapes::ReadRequest::Start::kAt &&
         !(again->offset == requested->offset)))
      std::abort();
    (void)api::offset_text(requested->offset);
  }
  if (auto offset = shapes::LogOffset::parse(text)) {
    auto again = shapes::LogOffset::parse(offset->to_string());
    if (!again || !(*again == *offset)) std::abort();
  }
  return 0;
}
