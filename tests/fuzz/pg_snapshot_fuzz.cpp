// libFuzzer target: PgSnapshot::parse of pg_current_snapshot()::text (read
// back from meta.json, so untrusted). An accepted snapshot is consistent:
// xmin <= every xip < xmax, and visibility answers without crashing.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "shapes/pg_snapshot.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using shapeproxy::shapes::PgSnapshot;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto snapshot = PgSnapshot::parse(text);
  if (!snapshot) return 0;
  if (snapshot->xmin > snapshot->xmax) std::abort();
  for (auto xip : snapshot->xip)
    if (xip < snapshot->xmin || xip >= snapshot->xmax) std::abort();
  for (std::uint32_t xid : {0u, 1u, 3u, static_cast<std::uint32_t>(snapshot->xmin),
                            static_cast<std::uint32_t>(snapshot->xmax), 0xffffffffu}) {
    (void)snapshot->visible(xid);
    (void)snapshot->after_snapshot(xid);
  }
  return 0;
}
