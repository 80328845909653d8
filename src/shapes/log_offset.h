// Positions in a shape log, as the Electric protocol writes them:
// "<tx>_<op>" with both parts decimal; snapshot chunks sit at 0_<chunk>,
// replicated operations at <commit lsn>_<op index>. "-1" is before the
// start, "<tx>_inf" after every operation of tx.
#pragma once

#include <compare>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

namespace shapeproxy::shapes {

struct LogOffset {
  static constexpr std::uint64_t kInfinity = std::numeric_limits<std::uint64_t>::max();

  // Before everything: "-1". Represented as a flag so 0_0 stays distinct.
  bool before_all = false;
  std::uint64_t tx = 0;
  std::uint64_t op = 0;

  static LogOffset start() { return LogOffset{true, 0, 0}; }
  static LogOffset snapshot_chunk(std::uint64_t chunk) { return LogOffset{false, 0, chunk}; }
  static LogOffset at(std::uint64_t tx, std::uint64_t op) { return LogOffset{false, tx, op}; }

  bool is_snapshot() const { return !before_all && tx == 0; }

  // "-1", "0_0", "123_4", "123_inf".
  std::string to_string() const;
  // Parses what to_string() writes; nullopt for anything else.
  static std::optional<LogOffset> parse(std::string_view text);

  friend bool operator==(const LogOffset&, const LogOffset&) = default;
  friend std::strong_ordering operator<=>(const LogOffset& a, const LogOffset& b) {
    if (a.before_all != b.before_all)
      return a.before_all ? std::strong_ordering::less : std::strong_ordering::greater;
    if (auto c = a.tx <=> b.tx; c != 0) return c;
    return a.op <=> b.op;
  }
};

}  // namespace shapeproxy::shapes
