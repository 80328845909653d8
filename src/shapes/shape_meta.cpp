#include "shapes/shape_meta.h"

namespace shapeproxy::shapes {
using nlohmann::json;

namespace {

json table_to_json(const TableSchema& table) {
  json columns = json::array();
  for (const auto& c : table.columns) {
    json column = {{"name", c.name}, {"type_oid", c.type_oid}, {"type_name", c.type_name},
                   {"dims", c.dims}, {"not_null", c.not_null}, {"type_modifier", c.type_modifier}};
    if (c.pk_index) column["pk_index"] = *c.pk_index;
    columns.push_back(std::move(column));
  }
  return {{"oid", table.oid},
          {"schema", table.schema},
          {"name", table.name},
          {"columns", std::move(columns)},
          {"key_columns", table.key_columns}};
}

TableSchema table_from_json(const json& in) {
  TableSchema table;
  table.oid = in.at("oid").get<std::uint32_t>();
  table.schema = in.at("schema").get<std::string>();
  table.name = in.at("name").get<std::string>();
  for (const auto& c : in.at("columns")) {
    TableColumn column;
    column.name = c.at("name").get<std::string>();
    column.type_oid = c.at("type_oid").get<std::uint32_t>();
    column.type_name = c.at("type_name").get<std::string>();
    column.dims = c.at("dims").get<int>();
    column.not_null = c.at("not_null").get<bool>();
    column.type_modifier = c.at("type_modifier").get<std::int32_t>();
    if (c.contains("pk_index")) column.pk_index = c.at("pk_index").get<int>();
    table.columns.push_back(std::move(column));
  }
  table.key_columns = in.at("key_columns").get<std::vector<std::size_t>>();
  return table;
}

}  // namespace

json to_json(const ShapeMeta& meta) {
  const auto& request = meta.request;
  json params = json::object();
  for (const auto& [index, value] : request.params) params[std::to_string(index)] = value;
  json out = {{"version", 1},
              {"handle", meta.handle},
              {"schema", request.schema},
              {"table", request.table},
              {"params", std::move(params)},
              {"replica", request.replica == ReplicaMode::kFull ? "full" : "default"},
              {"log", request.log == LogMode::kChangesOnly ? "changes_only" : "full"},
              {"table_schema", table_to_json(meta.table)}};
  out["where"] = request.where ? json(*request.where) : json(nullptr);
  out["columns"] = request.columns ? json(*request.columns) : json(nullptr);
  out["snapshot_file"] = meta.snapshot_file;
  if (meta.compacted_at) out["compacted_at"] = meta.compacted_at->to_string();
  if (meta.snapshot) {
    out["snapshot"] = {
        {"xmin", meta.snapshot->xmin}, {"xmax", meta.snapshot->xmax}, {"xip", meta.snapshot->xip}};
  }
  return out;
}

Result<ShapeMeta> shape_meta_from_json(const json& in) {
  try {
    ShapeMeta meta;
    meta.handle = in.at("handle").get<std::string>();
    meta.request.schema = in.at("schema").get<std::string>();
    meta.request.table = in.at("table").get<std::string>();
    if (!in.at("where").is_null()) meta.request.where = in.at("where").get<std::string>();
    for (const auto& [index, value] : in.at("params").items()) {
      meta.request.params[std::stoi(index)] = value.get<std::string>();
    }
    if (!in.at("columns").is_null()) {
      meta.request.columns = in.at("columns").get<std::vector<std::string>>();
    }
    meta.request.replica = in.at("replica") == "full" ? ReplicaMode::kFull : ReplicaMode::kDefault;
    meta.request.log = in.at("log") == "changes_only" ? LogMode::kChangesOnly : LogMode::kFull;
    meta.table = table_from_json(in.at("table_schema"));
    meta.snapshot_file = in.value("snapshot_file", "snapshot.log");
    if (in.contains("compacted_at")) {
      meta.compacted_at = LogOffset::parse(in.at("compacted_at").get<std::string>());
      if (!meta.compacted_at) return Error{"storage_corrupt", "bad compacted_at in meta.json", ""};
    }
    if (in.contains("snapshot")) {
      const auto& s = in.at("snapshot");
      meta.snapshot =
          PgSnapshot{s.at("xmin").get<std::uint64_t>(), s.at("xmax").get<std::uint64_t>(),
                     s.at("xip").get<std::vector<std::uint64_t>>()};
    }
    return meta;
  } catch (const json::exception& error) {
    return Error{"storage_corrupt", std::string("shape meta.json: ") + error.what(), ""};
  }
}

}  // namespace shapeproxy::shapes
