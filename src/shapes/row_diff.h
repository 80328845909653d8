// What: diff_rows turns "the rows a shape last served" and a fresh snapshot
// of it into the inserts, updates and deletes that lead from one to the other.
// Why: during fallback there is no replication stream to say what changed; a
// shape is re-queried periodically and parked live requests are answered with
// this difference, so clients keep seeing changes during an outage (and, after
// a lost slot, resume without must-refetch).
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <unordered_map>
#include <vector>

#include "shapes/shape.h"

namespace shapeproxy::shapes {

// A row's identity in the shape (e.g. the shape's "schema"."table"/"pk" key).
using RowKeyFunction = std::function<std::string(const Row&)>;

struct KeyedRow {
  std::string key;
  Row row;  // every column, table order
};

struct UpdatedRow {
  std::string key;
  Row old_row;
  Row new_row;
  std::vector<std::size_t> changed_columns;  // among `selected`, ascending; never empty
};

struct RowDiff {
  std::vector<KeyedRow> inserts;    // keys only in the fresh rows; sorted by key
  std::vector<UpdatedRow> updates;  // keys in both, some selected column differs; sorted by key
  std::vector<KeyedRow> deletes;    // keys only in the served rows (old values); sorted by key

  bool empty() const { return inserts.empty() && updates.empty() && deletes.empty(); }
};

// `served`: key -> row as last served; `fresh`: the new snapshot; `selected`:
// the column indexes the shape serves (a change to any other column is no
// update). NULL and a value differ; NULL equals NULL. A key repeated in
// `fresh` (possible only for tables without a primary key) counts once, the
// last occurrence winning. After applying the diff the caller's rows are
// `fresh` (keyed by `key_of`).
RowDiff diff_rows(const std::unordered_map<std::string, Row>& served, const SnapshotRows& fresh,
                  const std::vector<std::size_t>& selected, const RowKeyFunction& key_of);

// The same with the served rows given in ascending key order: `served(fn)`
// calls fn(key, row) for each (until fn returns false). Memory beyond the
// result: the fresh rows' keys, never a copy of the served rows.
using ServedRows =
    std::function<void(const std::function<bool(const std::string& key, const Row& row)>&)>;
RowDiff diff_ordered(const ServedRows& served, const SnapshotRows& fresh,
                     const std::vector<std::size_t>& selected, const RowKeyFunction& key_of);

}  // namespace shapeproxy::shapes
