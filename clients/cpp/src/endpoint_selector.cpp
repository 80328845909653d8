#include "endpoint_selector.h"

#include <algorithm>
#include <map>

namespace shapeproxy::client::detail {

std::uint64_t fnv1a64(std::string_view data) {
  std::uint64_t hash = 14695981039346656037ull;
  for (unsigned char c : data) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  // FNV's low bits mix poorly for short keys: finish with a 64-bit avalanche.
  hash ^= hash >> 33;
  hash *= 0xff51afd7ed558ccdull;
  hash ^= hash >> 33;
  return hash;
}

EndpointSelector EndpointSelector::round_robin(std::size_t count, std::size_t start) {
  std::vector<std::size_t> preference;
  for (std::size_t i = 0; i < count; ++i) preference.push_back((start + i) % count);
  return EndpointSelector(std::move(preference));
}

EndpointSelector EndpointSelector::consistent_hash(const std::vector<std::string>& urls,
                                                   std::string_view shape_identity,
                                                   int virtual_nodes) {
  std::map<std::uint64_t, std::size_t> ring;
  for (std::size_t i = 0; i < urls.size(); ++i)
    for (int v = 0; v < virtual_nodes; ++v)
      ring.emplace(fnv1a64(urls[i] + "#" + std::to_string(v)), i);
  std::vector<std::size_t> preference;
  if (ring.empty()) return EndpointSelector(std::move(preference));
  auto it = ring.lower_bound(fnv1a64(shape_identity));
  for (std::size_t steps = 0; steps < ring.size() && preference.size() < urls.size(); ++steps) {
    if (it == ring.end()) it = ring.begin();
    if (std::find(preference.begin(), preference.end(), it->second) == preference.end())
      preference.push_back(it->second);
    ++it;
  }
  return EndpointSelector(std::move(preference));
}

std::vector<std::size_t> EndpointSelector::order() const {
  std::vector<std::size_t> out;
  for (std::size_t i = 0; i < preference_.size(); ++i)
    out.push_back(preference_[(current_ + i) % preference_.size()]);
  return out;
}

void EndpointSelector::on_success(std::size_t endpoint) {
  auto it = std::find(preference_.begin(), preference_.end(), endpoint);
  if (it != preference_.end()) current_ = static_cast<std::size_t>(it - preference_.begin());
}

}  // namespace shapeproxy::client::detail
