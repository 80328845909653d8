#include "shape_apply.h"

#include <cstdio>
#include <cstdlib>

namespace shapeproxy::bench {

namespace {

std::shared_ptr<const shapes::TableSchema> bench_rows_schema() {
  auto table = std::make_shared<shapes::TableSchema>();
  table->schema = "public";
  table->name = "bench_rows";
  const char* names[] = {"id", "title", "amount", "created"};
  const char* types[] = {"int8", "text", "numeric", "timestamptz"};
  for (int i = 0; i < 4; ++i) {
    shapes::TableColumn column;
    column.name = names[i];
    column.type_name = types[i];
    if (i == 0) column.pk_index = 0;
    table->columns.push_back(column);
  }
  table->key_columns = {0};
  return table;
}

}  // namespace

ShapeApply::ShapeApply(int count, ShapeWhere where, bool use_index, long rows,
                       std::shared_ptr<shapes::StateStore> store)
    : use_index_(use_index) {
  auto table = bench_rows_schema();
  for (int k = 0; k < count; ++k) {
    shapes::ShapeDefinitionRequest request;
    request.table = "bench_rows";
    if (where == ShapeWhere::kEquality) {
      long id = 1 + static_cast<long>(k) * rows / count;
      request.where = "id = $1";
      request.params = {{1, std::to_string(id)}};
    } else {
      request.where = "id % " + std::to_string(count) + " = " + std::to_string(k);
    }
    auto made = shapes::ShapeDefinition::make(request, table);
    if (!std::holds_alternative<shapes::ShapeDefinition>(made)) {
      std::fprintf(stderr, "error: shape %s: %s\n", request.where->c_str(),
                   std::get<shapes::InvalidRequest>(made).message.c_str());
      std::exit(1);
    }
    auto shape = std::make_shared<shapes::Shape>(std::get<shapes::ShapeDefinition>(std::move(made)),
                                                 "bench-" + std::to_string(k), 10 << 20, store);
    // An empty initial snapshot taken before the load: every change applies.
    shapes::SnapshotRows snapshot;
    snapshot.snapshot = shapes::PgSnapshot{1, 1, {}};
    if (auto applied = shape->apply_snapshot(std::move(snapshot)); !applied) {
      std::fprintf(stderr, "error: snapshot: %s\n", applied.error().to_string().c_str());
      std::exit(1);
    }
    shapes_.push_back(std::move(shape));
  }
  expected_ = where == ShapeWhere::kEquality ? static_cast<std::uint64_t>(count)
                                             : static_cast<std::uint64_t>(rows);
}

void ShapeApply::apply(const replication::Transaction& transaction) {
  std::vector<const replication::Change*> changes;
  changes.reserve(transaction.changes.size());
  for (const auto& change : transaction.changes) changes.push_back(&change);
  if (!use_index_) {
    for (const auto& shape : shapes_) shape->apply_transaction(transaction, changes);
    return;
  }
  for (const auto& route : index_.route("\"public\".\"bench_rows\"", shapes_, changes)) {
    shapes_[route.shape]->apply_transaction(transaction, route.all ? changes : route.changes);
  }
}

std::uint64_t ShapeApply::rows_held() const {
  std::uint64_t held = 0;
  for (const auto& shape : shapes_) held += shape->row_count();
  return held;
}

}  // namespace shapeproxy::bench
