// ShapeIndex: routes a table's replicated changes to the shapes they may
// concern without evaluating every shape's where clause on every change.
// A shape whose where clause is a conjunction holding `column = constant`
// (or `column IN (constants)`) is indexed under that column and each value,
// rendered in a type-canonical form that is equal exactly when PostgreSQL's
// `=` (as where_eval evaluates it) is true (where::canonical_datum_key, in
// where/datum_compare.h beside compare_datums), NULL never matches. A change reaches:
//  - every shape that is not indexed;
//  - the indexed shapes keyed by its new row's value (it may enter them);
//  - the indexed shapes keyed by its old row's value (it may leave them),
//    or, when that value is unknown (replica identity without it, an
//    unchanged TOAST value), the shapes on that column that hold the row's
//    key or may hold it (snapshotting, or touched earlier in the same
//    transaction).
// The shape then applies the change exactly as before, so routing only
// skips changes that would have left the shape unchanged.
//
// The index of a table is rebuilt whenever the registry's list of shapes for
// it differs from the one it was built from (compared by ownership, so a
// freed shape can never be mistaken for a new one at the same address).
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "replication/transaction.h"
#include "shapes/shape.h"
#include "where/where_types.h"

namespace shapeproxy::shapes {

// The condition a shape is indexed under: `column` equals one of `values`
// (canonical keys, see canonical_datum_key).
struct EqualityCondition {
  std::size_t column = 0;
  where::SqlType type = where::SqlType::kUnknown;
  std::vector<std::string> values;
};

// The condition of a where clause usable for the index, if any: a top-level
// conjunct `column = constant` or `column IN (constants)` where the column is
// compared in its own type. Prefers conditions on key columns (an update's
// old key value is always known), then `=` over IN.
std::optional<EqualityCondition> equality_condition(const where::WhereClause& where,
                                                    const std::vector<std::size_t>& key_columns);

class ShapeIndex {
 public:
  // The changes of one table (in commit order) that concern one shape;
  // `shape` is an index into the list given to route(). `all` means every
  // change of the table (then `changes` is left empty).
  struct Route {
    std::size_t shape = 0;
    bool all = false;
    std::vector<const replication::Change*> changes;
  };

  // Routes `changes` (all on table `table`, in commit order) to `shapes`,
  // the registry's shapes of that table. Routes come in `shapes` order.
  std::vector<Route> route(const std::string& table,
                           const std::vector<std::shared_ptr<Shape>>& shapes,
                           const std::vector<const replication::Change*>& changes);

  // Drops a table's index (e.g. when its last shape goes).
  void forget(const std::string& table) { tables_.erase(table); }

 private:
  struct ColumnIndex {
    std::size_t column = 0;
    where::SqlType type = where::SqlType::kUnknown;
    bool key_column = false;
    std::vector<std::size_t> shapes;  // every shape indexed on this column
    std::unordered_map<std::string, std::vector<std::size_t>> by_value;
  };
  struct TableIndex {
    std::vector<std::weak_ptr<Shape>> built_from;
    std::vector<std::size_t> unindexed;
    std::vector<ColumnIndex> columns;
  };

  static bool same_shapes(const TableIndex& index,
                          const std::vector<std::shared_ptr<Shape>>& shapes);
  static TableIndex build(const std::vector<std::shared_ptr<Shape>>& shapes);

  std::unordered_map<std::string, TableIndex> tables_;
};

}  // namespace shapeproxy::shapes
