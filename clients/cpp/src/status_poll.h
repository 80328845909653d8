// When to ask the server again: the state GET /v1/status reports and how
// long its answer may be cached (which bounds how often we poll it), and a
// Retry-After on 503/429.
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

// A Retry-After header in seconds ("3"); nullopt when absent or an HTTP date.
std::optional<std::chrono::seconds> retry_after_seconds(std::string_view value);

// The delay before the next status poll: the configured interval, never
// shorter than the response's max-age (polling faster only hits a cache).
std::chrono::milliseconds next_status_poll(std::chrono::milliseconds interval,
                                           std::optional<std::chrono::seconds> max_age);

}  // namespace shapeproxy::client::detail
