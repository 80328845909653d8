#include "shapes/shape_meta.h"

#include <charconv>
#include <stdexcept>
#include <utility>

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

// An integer field of type T. nlohmann's get<T>() converts any number it
// finds: a float (undefined behaviour when out of T's range, else silently
// truncated: key column 0.5 became 0) or an integer out of T's range
// (silently wrapped). A loaded file is trusted for neither.
template <typename T>
T integer(const json& value, const char* field) {
  if (value.is_number_unsigned()) {
    const auto number = value.get<std::uint64_t>();
    if (std::in_range<T>(number)) return static_cast<T>(number);
  } else if (value.is_number_integer()) {
    const auto number = value.get<std::int64_t>();
    if (std::in_range<T>(number)) return static_cast<T>(number);
  }
  throw std::out_of_range(std::string(field) + " is not an integer in range");
}

template <typename T>
std::vector<T> integers(const json& values, const char* field) {
  if (!values.is_array()) throw std::invalid_argument(std::string(field) + " is not an array");
  std::vector<T> out;
  out.reserve(values.size());
  for (const auto& value : values) out.push_back(integer<T>(value, field));
  return out;
}

TableSchema table_from_json(const json& in) {
  TableSchema table;
  table.oid = integer<std::uint32_t>(in.at("oid"), "oid");
  table.schema = in.at("schema").get<std::string>();
  table.name = in.at("name").get<std::string>();
  for (const auto& c : in.at("columns")) {
    TableColumn column;
    column.name = c.at("name").get<std::string>();
    column.type_oid = integer<std::uint32_t>(c.at("type_oid"), "type_oid");
    column.type_name = c.at("type_name").get<std::string>();
    column.dims = integer<int>(c.at("dims"), "dims");
    column.not_null = c.at("not_null").get<bool>();
    column.type_modifier = integer<std::int32_t>(c.at("type_modifier"), "type_modifier");
    if (c.contains("pk_index")) column.pk_index = integer<int>(c.at("pk_index"), "pk_index");
    table.columns.push_back(std::move(column));
  }
  table.key_columns = integers<std::size_t>(in.at("key_columns"), "key_columns");
  return table;
}

// What the rest of the code takes for granted of a loaded meta.json: a
// shape whose file breaks one of these is quarantined, never served (a key
// column out of range would index past the row on the first change).
std::optional<std::string> invalid(const ShapeMeta& meta) {
  if (meta.handle.empty() ||
      meta.handle.find_first_not_of("0123456789abcdefghijklmnopqrstuvwxyz"
                                    "ABCDEFGHIJKLMNOPQRSTUVWXYZ-_") != std::string::npos) {
    return "handle is not a handle";
  }
  if (meta.table.columns.empty()) return "table_schema has no columns";
  if (meta.table.key_columns.empty()) return "table_schema has no key columns";
  for (std::size_t key : meta.table.key_columns) {
    if (key >= meta.table.columns.size()) {
      return "key column " + std::to_string(key) + " is out of range (" +
             std::to_string(meta.table.columns.size()) + " columns)";
    }
  }
  const auto& name = meta.snapshot_file;
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos ||
      name.find('\0') != std::string::npos) {
    return "snapshot_file is not a file name inside the shape's directory";
  }
  if (meta.compacted_at && (meta.compacted_at->before_all || meta.compacted_at->tx == 0)) {
    return "compacted_at is not an operation offset";
  }
  if (meta.snapshot && meta.snapshot->xmin > meta.snapshot->xmax) return "snapshot xmin > xmax";
  return std::nullopt;
}

// One of `names` (its index), or an exception for the caller to report.
std::size_t one_of(const json& value, std::initializer_list<const char*> names, const char* field) {
  if (value.is_string()) {
    std::size_t index = 0;
    for (const char* name : names) {
      if (value.get<std::string>() == name) return index;
      ++index;
    }
  }
  throw std::invalid_argument(std::string(field) + " is not one of the known values");
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
  if (meta.state_id) out["state_id"] = *meta.state_id;
  if (meta.snapshot) {
    out["snapshot"] = {
        {"xmin", meta.snapshot->xmin}, {"xmax", meta.snapshot->xmax}, {"xip", meta.snapshot->xip}};
  }
  return out;
}

Result<ShapeMeta> shape_meta_from_json(const json& in) {
  if (!in.is_object()) return Error{"storage_corrupt", "shape meta.json is not an object", ""};
  try {
    ShapeMeta meta;
    meta.handle = in.at("handle").get<std::string>();
    meta.request.schema = in.at("schema").get<std::string>();
    meta.request.table = in.at("table").get<std::string>();
    if (!in.at("where").is_null()) meta.request.where = in.at("where").get<std::string>();
    for (const auto& [index, value] : in.at("params").items()) {
      int number = 0;
      auto [end, error] = std::from_chars(index.data(), index.data() + index.size(), number);
      if (error != std::errc{} || end != index.data() + index.size() || number < 1) {
        throw std::invalid_argument("params key \"" + index + "\" is not a parameter number");
      }
      meta.request.params[number] = value.get<std::string>();
    }
    if (!in.at("columns").is_null()) {
      meta.request.columns = in.at("columns").get<std::vector<std::string>>();
    }
    meta.request.replica = one_of(in.at("replica"), {"default", "full"}, "replica") == 1
                               ? ReplicaMode::kFull
                               : ReplicaMode::kDefault;
    meta.request.log = one_of(in.at("log"), {"full", "changes_only"}, "log") == 1
                           ? LogMode::kChangesOnly
                           : LogMode::kFull;
    meta.table = table_from_json(in.at("table_schema"));
    if (in.contains("snapshot_file"))
      meta.snapshot_file = in.at("snapshot_file").get<std::string>();
    if (in.contains("compacted_at")) {
      meta.compacted_at = LogOffset::parse(in.at("compacted_at").get<std::string>());
      if (!meta.compacted_at) return Error{"storage_corrupt", "bad compacted_at in meta.json", ""};
    }
    if (in.contains("state_id"))
      meta.state_id = integer<std::uint64_t>(in.at("state_id"), "state_id");
    if (in.contains("snapshot")) {
      const auto& s = in.at("snapshot");
      meta.snapshot = PgSnapshot{integer<std::uint64_t>(s.at("xmin"), "snapshot xmin"),
                                 integer<std::uint64_t>(s.at("xmax"), "snapshot xmax"),
                                 integers<std::uint64_t>(s.at("xip"), "snapshot xip")};
    }
    if (auto why = invalid(meta)) return Error{"storage_corrupt", "shape meta.json: " + *why, ""};
    return meta;
  } catch (const std::exception& error) {  // json type errors, bad numbers
    return Error{"storage_corrupt", std::string("shape meta.json: ") + error.what(), ""};
  }
}

}  // namespace shapeproxy::shapes
