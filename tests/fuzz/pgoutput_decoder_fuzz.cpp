// libFuzzer target for the pgoutput decoder: feeds arbitrary bytes to both
// decoders (envelope and payload) and, for well-formed XLogData, decodes the
// payload it carries, like the replication stream does. Any crash, sanitizer
// report or exception is a bug: the decoders must reject malformed bytes.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <variant>

#include "replication/pgoutput_decoder.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace shapeproxy::replication;
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  (void)decode_pgoutput(bytes);
  auto envelope = decode_copy_data(bytes);
  if (envelope.ok()) {
    if (const auto* x = std::get_if<XLogData>(&*envelope)) (void)decode_pgoutput(x->payload);
  }
  return 0;
}
