#include "shapes/shape_definition.h"

#include <algorithm>

#include "pg/connection.h"

namespace shapeproxy::shapes {
namespace {

std::vector<where::ColumnInfo> where_columns(const TableSchema& table) {
  std::vector<where::ColumnInfo> columns;
  columns.reserve(table.columns.size());
  for (const auto& column : table.columns) {
    columns.push_back({column.name, column.dims > 0 ? "_" + column.type_name : column.type_name});
  }
  return columns;
}

std::variant<std::vector<std::size_t>, InvalidRequest> select_columns(
    const ShapeDefinitionRequest& request, const TableSchema& table) {
  std::vector<std::size_t> selected;
  if (!request.columns) {
    for (std::size_t i = 0; i < table.columns.size(); ++i) selected.push_back(i);
    return selected;
  }
  for (const auto& name : *request.columns) {
    auto index = table.column_index(name);
    if (!index) return InvalidRequest{"columns", "unknown column \"" + name + "\""};
    selected.push_back(*index);
  }
  std::sort(selected.begin(), selected.end());
  selected.erase(std::unique(selected.begin(), selected.end()), selected.end());
  std::string missing;
  for (std::size_t key : table.key_columns) {
    if (!std::binary_search(selected.begin(), selected.end(), key)) {
      missing += (missing.empty() ? "" : ", ") + table.columns[key].name;
    }
  }
  if (!missing.empty()) {
    return InvalidRequest{
        "columns", "the list of columns must include all primary key columns, missing: " + missing};
  }
  return selected;
}

}  // namespace

std::string table_key(const std::string& schema, const std::string& name) {
  return pg::quote_identifier(schema) + "." + pg::quote_identifier(name);
}

std::variant<ShapeDefinition, InvalidRequest> ShapeDefinition::make(
    const ShapeDefinitionRequest& request, std::shared_ptr<const TableSchema> table) {
  ShapeDefinition definition;
  auto selected = select_columns(request, *table);
  if (auto* invalid = std::get_if<InvalidRequest>(&selected)) return *invalid;
  definition.selected = std::get<std::vector<std::size_t>>(std::move(selected));
  if (request.where && !request.where->empty()) {
    auto parsed = where::WhereClause::parse(*request.where, where_columns(*table), request.params);
    if (!parsed) return InvalidRequest{"where", parsed.error().message};
    definition.where = std::move(parsed).value();
  } else if (!request.params.empty()) {
    return InvalidRequest{"params", "params given without a where clause"};
  }
  definition.replica = request.replica;
  definition.log = request.log;
  definition.key = table_key(table->schema, table->name) + "|" +
                   (definition.where ? definition.where->normalized() : std::string()) + "|";
  for (std::size_t index : definition.selected) definition.key += table->columns[index].name + ",";
  definition.key += request.replica == ReplicaMode::kFull ? "|full" : "|default";
  definition.key += request.log == LogMode::kChangesOnly ? "|changes_only" : "|full";
  definition.table = std::move(table);
  definition.request = request;
  return definition;
}

}  // namespace shapeproxy::shapes
