#include "pg/lsn.h"

#include <charconv>
#include <cstdio>

namespace shapeproxy::pg {

std::string format_lsn(Lsn lsn) {
  char buf[32];
  int n = std::snprintf(buf, sizeof buf, "%X/%X", static_cast<unsigned>(lsn >> 32),
                        static_cast<unsigned>(lsn & 0xffffffffu));
  return std::string(buf, static_cast<std::size_t>(n));
}

std::optional<Lsn> parse_lsn(std::string_view text) {
  auto slash = text.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 >= text.size()) return {};
  auto parse_half = [](std::string_view part) -> std::optional<std::uint32_t> {
    if (part.size() > 8) return {};
    std::uint32_t value = 0;
    auto [ptr, ec] = std::from_chars(part.data(), part.data() + part.size(), value, 16);
    if (ec != std::errc() || ptr != part.data() + part.size()) return {};
    return value;
  };
  auto high = parse_half(text.substr(0, slash));
  auto low = parse_half(text.substr(slash + 1));
  if (!high || !low) return {};
  return (static_cast<Lsn>(*high) << 32) | *low;
}

}  // namespace shapeproxy::pg
