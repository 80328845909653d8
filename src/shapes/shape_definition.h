// A validated shape definition: the table's schema, the parsed where clause,
// the columns served, replica and log modes, and the identity key under
// which identical requests share one shape.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "shapes/shape_service.h"
#include "shapes/table_schema.h"
#include "where/where_clause.h"

namespace shapeproxy::shapes {

struct ShapeDefinition {
  ShapeDefinitionRequest request;  // as asked for (kept to persist and re-validate)
  std::shared_ptr<const TableSchema> table;
  std::optional<where::WhereClause> where;
  std::vector<std::size_t> selected;  // column indexes served, in table order
  ReplicaMode replica = ReplicaMode::kDefault;
  LogMode log = LogMode::kFull;
  std::string key;  // identity: equal keys, same shape

  // Validates `request` against `table`; an InvalidRequest names the field.
  static std::variant<ShapeDefinition, InvalidRequest> make(
      const ShapeDefinitionRequest& request, std::shared_ptr<const TableSchema> table);
};

// Table identity key ("schema"."name") used to route changes to shapes.
std::string table_key(const std::string& schema, const std::string& name);

}  // namespace shapeproxy::shapes
