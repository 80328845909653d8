// What: the electric-cursor value of live responses: seconds since
// 2024-10-09T00:00:00Z rounded up to the next multiple of the long-poll
// timeout, always greater than the cursor the request echoed.
// Why: CDNs key live requests by URL; a cursor that changes every interval
// (and never repeats the request's) keeps cached live responses from looping.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>

namespace shapeproxy::api {

using Clock = std::function<std::chrono::system_clock::time_point()>;

// 2024-10-09T00:00:00Z in Unix seconds.
inline constexpr std::int64_t kCursorEpochUnixSeconds = 1728432000;

// Timeouts under one second give 0 (as Electric). A `request_cursor` that is
// not a plain decimal number is ignored.
std::int64_t next_live_cursor(std::chrono::system_clock::time_point now,
                              std::chrono::milliseconds long_poll_timeout,
                              std::optional<std::string_view> request_cursor);

}  // namespace shapeproxy::api
