// libFuzzer target: the echoed `cursor` parameter of live requests (opaque
// client text). The next cursor must always exceed a numeric echoed cursor
// and never be negative.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "api/live_cursor.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace std::chrono;
  if (size < 12) return 0;
  std::int64_t now_seconds = 0;
  std::uint32_t timeout_ms = 0;
  std::memcpy(&now_seconds, data, 8);
  std::memcpy(&timeout_ms, data + 8, 4);
  // Clocks from the cursor epoch on (a proxy never runs before it), timeouts
  // up to a day.
  now_seconds = shapeproxy::api::kCursorEpochUnixSeconds +
                (now_seconds % 3'000'000'000 + 3'000'000'000) % 3'000'000'000;
  timeout_ms %= 86'400'000;
  std::string_view cursor(reinterpret_cast<const char*>(data + 12), size - 12);
  auto next = shapeproxy::api::next_live_cursor(system_clock::time_point(seconds(now_seconds)),
                                                milliseconds(timeout_ms), cursor);
  if (next < 0) std::abort();
  return 0;
}
