// A PostgreSQL MVCC snapshot (pg_current_snapshot()) and the visibility test
// that lines a shape's initial query up with the replication stream: a
// streamed transaction visible in the snapshot is already in the query's
// rows and is skipped; every later one is applied.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace shapeproxy::shapes {

struct PgSnapshot {
  std::uint64_t xmin = 0;  // xid8 values (epoch << 32 | xid)
  std::uint64_t xmax = 0;
  std::vector<std::uint64_t> xip;

  // Parses "xmin:xmax:xip1,xip2,..." as pg_current_snapshot()::text prints it;
  // nullopt unless xmin <= xmax and xmin <= every xip < xmax.
  static std::optional<PgSnapshot> parse(std::string_view text);

  // Whether a transaction with 32-bit id `xid` (as pgoutput reports it) had
  // committed when the snapshot was taken. Compared modulo 2^32, as
  // PostgreSQL compares xids.
  bool visible(std::uint32_t xid) const;
  // Whether `xid` started after the snapshot (not before xmax).
  bool after_snapshot(std::uint32_t xid) const;
  // Whether every transaction `other` sees as committed, this one sees too
  // (this snapshot was taken no earlier than `other`, as far as its rows go).
  bool sees_all_of(const PgSnapshot& other) const;
};

}  // namespace shapeproxy::shapes
