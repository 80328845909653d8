// What a shape's meta.json holds: the definition as requested, the table
// schema it was built on, its handle, and its snapshot. Enough to bring the
// shape back after a restart, even with PostgreSQL unreachable.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

#include "common/result.h"
#include "shapes/log_offset.h"
#include "shapes/pg_snapshot.h"
#include "shapes/shape_service.h"
#include "shapes/table_schema.h"

namespace shapeproxy::shapes {

struct ShapeMeta {
  std::string handle;
  ShapeDefinitionRequest request;
  TableSchema table;
  std::optional<PgSnapshot> snapshot;  // set once the snapshot is on disk
  std::string snapshot_file = "snapshot.log";
  std::optional<LogOffset> compacted_at;  // the snapshot file holds the rows as of here
  // The shape's rows in the state store (absent in files saved before it
  // existed: the rows are then rebuilt from the log at load).
  std::optional<std::uint64_t> state_id;
};

nlohmann::json to_json(const ShapeMeta& meta);
Result<ShapeMeta> shape_meta_from_json(const nlohmann::json& json);

}  // namespace shapeproxy::shapes
