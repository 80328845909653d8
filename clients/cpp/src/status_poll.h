// Reading GET /v1/status for the fallback-aware client: the state it reports
// and how long its answer may be cached, which bounds how often we poll.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace shapeproxy::client::detail {

// "live", "fallback" or "starting" from a /v1/status body; nullopt if unreadable.
std::optional<std::string> status_from_body(std::string_view body);

// max-age from a Cache-Control value ("public, max-age=5"), nullopt if absent.
std::optional<std::chrono::seconds> max_age(std::string_view cache_control);

// The delay before the next status poll: the configured interval, never
// shorter than the response's max-age (polling faster only hits a cache).
std::chrono::milliseconds next_status_poll(std::chrono::milliseconds interval,
                                           std::optional<std::chrono::seconds> max_age);

}  // namespace shapeproxy::client::detail
