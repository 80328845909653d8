#include "shapes/pg_snapshot.h"

#include <algorithm>

#include <charconv>

namespace shapeproxy::shapes {
namespace {

std::optional<std::uint64_t> parse_xid(std::string_view text) {
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// PostgreSQL's TransactionIdPrecedes for normal xids.
bool precedes(std::uint32_t a, std::uint32_t b) { return static_cast<std::int32_t>(a - b) < 0; }

}  // namespace

std::optional<PgSnapshot> PgSnapshot::parse(std::string_view text) {
  auto first = text.find(':');
  auto second = first == std::string_view::npos ? first : text.find(':', first + 1);
  if (second == std::string_view::npos) return std::nullopt;
  PgSnapshot snapshot;
  auto xmin = parse_xid(text.substr(0, first));
  auto xmax = parse_xid(text.substr(first + 1, second - first - 1));
  // xmin > xmax is no snapshot PostgreSQL makes (a damaged meta.json): taken
  // as one, it would skip or replay streamed transactions.
  if (!xmin || !xmax || *xmin > *xmax) return std::nullopt;
  snapshot.xmin = *xmin;
  snapshot.xmax = *xmax;
  std::string_view rest = text.substr(second + 1);
  while (!rest.empty()) {
    auto comma = rest.find(',');
    auto xid = parse_xid(rest.substr(0, comma));
    if (!xid) return std::nullopt;
    // In progress at the snapshot: xmin <= xip < xmax, as PostgreSQL prints it.
    if (*xid < snapshot.xmin || *xid >= snapshot.xmax) return std::nullopt;
    snapshot.xip.push_back(*xid);
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
    if (rest.empty()) return std::nullopt;  // a trailing comma
  }
  return snapshot;
}

bool PgSnapshot::visible(std::uint32_t xid) const {
  auto low = static_cast<std::uint32_t>(xmin);
  auto high = static_cast<std::uint32_t>(xmax);
  if (precedes(xid, low)) return true;
  if (!precedes(xid, high)) return false;
  for (std::uint64_t in_progress : xip) {
    if (static_cast<std::uint32_t>(in_progress) == xid) return false;
  }
  return true;
}

bool PgSnapshot::after_snapshot(std::uint32_t xid) const {
  return !precedes(xid, static_cast<std::uint32_t>(xmax));
}

bool PgSnapshot::sees_all_of(const PgSnapshot& other) const {
  // What `other` sees: every xid below its xmax but those in its xip. This
  // one must not stop earlier, and what it still has in progress below
  // other's xmax must have been in progress for `other` too.
  if (xmax < other.xmax) return false;
  for (std::uint64_t in_progress : xip) {
    if (in_progress >= other.xmax) continue;
    if (std::find(other.xip.begin(), other.xip.end(), in_progress) == other.xip.end()) return false;
  }
  return true;
}

}  // namespace shapeproxy::shapes
