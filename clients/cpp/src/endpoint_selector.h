// Chooses the order in which endpoints are tried. Round robin starts at a
// given endpoint and walks the list; consistent hashing walks a hash ring from
// the shape's position, so every client of a shape prefers the same proxy and
// adding or removing one moves few shapes. Both are sticky: after a success
// the working endpoint is tried first (a shape handle belongs to one proxy,
// so switching costs a resync).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace shapeproxy::client::detail {

std::uint64_t fnv1a64(std::string_view data);

class EndpointSelector {
 public:
  // Round robin over `count` endpoints, starting at `start`.
  static EndpointSelector round_robin(std::size_t count, std::size_t start);
  // Consistent hashing of `shape_identity` over the endpoints named by `urls`.
  static EndpointSelector consistent_hash(const std::vector<std::string>& urls,
                                          std::string_view shape_identity, int virtual_nodes = 64);

  // Endpoint indexes in the order to try them (each once), current first.
  std::vector<std::size_t> order() const;
  void on_success(std::size_t endpoint);

 private:
  explicit EndpointSelector(std::vector<std::size_t> preference)
      : preference_(std::move(preference)) {}
  std::vector<std::size_t> preference_;  // every endpoint once
  std::size_t current_ = 0;              // position in preference_
};

}  // namespace shapeproxy::client::detail
