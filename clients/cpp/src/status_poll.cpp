#include "status_poll.h"

#include <algorithm>
#include <cctype>
#include <nlohmann/json.hpp>

namespace shapeproxy::client::detail {

std::optional<std::string> status_from_body(std::string_view body) {
  auto json = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return std::nullopt;
  auto it = json.find("status");
  if (it == json.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

std::optional<std::chrono::seconds> max_age(std::string_view cache_control) {
  std::string lower;
  for (char c : cache_control)
    lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::size_t pos = 0;
  while ((pos = lower.find("max-age", pos)) != std::string::npos) {
    // not s-maxage: the directive starts the string or follows a separator
    bool starts = pos == 0 || lower[pos - 1] == ' ' || lower[pos - 1] == ',';
    pos += 7;
    if (!starts) continue;
    while (pos < lower.size() && lower[pos] == ' ') ++pos;
    if (pos >= lower.size() || lower[pos] != '=') continue;
    ++pos;
    while (pos < lower.size() && lower[pos] == ' ') ++pos;
    long long value = 0;
    bool digits = false;
    while (pos < lower.size() && std::isdigit(static_cast<unsigned char>(lower[pos]))) {
      value = std::min<long long>(value * 10 + (lower[pos] - '0'), 1'000'000'000);
      digits = true;
      ++pos;
    }
    if (digits) return std::chrono::seconds(value);
  }
  return std::nullopt;
}

std::optional<std::chrono::seconds> retry_after_seconds(std::string_view value) {
  while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  while (!value.empty() && value.back() == ' ') value.remove_suffix(1);
  if (value.empty() || value.size() > 9) return std::nullopt;
  long long seconds = 0;
  for (char c : value) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
    seconds = seconds * 10 + (c - '0');
  }
  return std::chrono::seconds(seconds);
}

std::chrono::milliseconds next_status_poll(std::chrono::milliseconds interval,
                                           std::optional<std::chrono::seconds> age) {
  auto delay = std::max(interval, std::chrono::milliseconds(1));
  if (age) delay = std::max<std::chrono::milliseconds>(delay, *age);
  return delay;
}

}  // namespace shapeproxy::client::detail
