// ShapeApply: the replication apply path of the shapes core for bench_ingest
// --shapes: N in-memory shapes on bench_rows, each replicated transaction
// routed to them as ShapeRegistry::apply_transaction does (ShapeIndex, then
// Shape::apply_transaction per routed shape), or with --no-index to every
// shape (the path before the index). No log files, no HTTP: what is measured
// is routing, where-clause evaluation, the rows' state (an on-disk StateStore,
// as the proxy's; a shape without files writes its changes there at once) and
// turning changes into operations.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "replication/transaction.h"
#include "shapes/shape.h"
#include "shapes/shape_index.h"
#include "shapes/state_store.h"

namespace shapeproxy::bench {

enum class ShapeWhere {
  kEquality,  // `id = $1`, $1 spread over the loaded ids: indexable
  kModulo,    // `id % N = k`: every row in exactly one shape, not indexable
};

class ShapeApply {
 public:
  // Shapes on bench_rows(id int8 pk, title text, amount numeric, created
  // timestamptz) with `rows` rows to come (ids 1..rows), their rows in `store`.
  ShapeApply(int shapes, ShapeWhere where, bool use_index, long rows,
             std::shared_ptr<shapes::StateStore> store);

  void apply(const replication::Transaction& transaction);

  // Rows held by all shapes together, and the rows expected once the whole
  // load is applied (each row in exactly one shape for kModulo; the shapes'
  // ids for kEquality).
  std::uint64_t rows_held() const;
  std::uint64_t rows_expected() const { return expected_; }

 private:
  std::vector<std::shared_ptr<shapes::Shape>> shapes_;
  shapes::ShapeIndex index_;
  bool use_index_;
  std::uint64_t expected_ = 0;
};

}  // namespace shapeproxy::bench
