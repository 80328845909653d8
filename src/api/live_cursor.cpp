#include "api/live_cursor.h"

#include <charconv>

namespace shapeproxy::api {
namespace {

// Cursors beyond this are garbage; ignoring them keeps the math overflow-free.
constexpr std::int64_t kMaxCursor = std::int64_t{1} << 52;

std::optional<std::int64_t> parse_cursor(std::optional<std::string_view> text) {
  if (!text || text->empty()) return std::nullopt;
  std::int64_t value = 0;
  auto [end, ec] = std::from_chars(text->data(), text->data() + text->size(), value);
  if (ec != std::errc() || end != text->data() + text->size()) return std::nullopt;
  if (value < 0 || value > kMaxCursor) return std::nullopt;
  return value;
}

std::int64_t ceil_div(std::int64_t a, std::int64_t b) {  // b > 0
  std::int64_t q = a / b;
  return (a % b != 0 && a > 0) ? q + 1 : q;
}

}  // namespace

std::int64_t next_live_cursor(std::chrono::system_clock::time_point now,
                              std::chrono::milliseconds long_poll_timeout,
                              std::optional<std::string_view> request_cursor) {
  std::int64_t interval = long_poll_timeout.count() / 1000;
  if (interval <= 0) return 0;
  std::int64_t unix_seconds =
      std::chrono::duration_cast<std::chrono::seconds>(now.time_since_epoch()).count();
  std::int64_t next = ceil_div(unix_seconds - kCursorEpochUnixSeconds, interval) * interval;
  if (auto previous = parse_cursor(request_cursor); previous && next <= *previous)
    next = (*previous / interval + 1) * interval;  // the next interval after the echoed one
  return next;
}

}  // namespace shapeproxy::api
