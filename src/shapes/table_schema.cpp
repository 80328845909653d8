#include "shapes/table_schema.h"

#include <nlohmann/json.hpp>

#include "common/error_codes.h"
#include "pg/async_connection.h"

namespace shapeproxy::shapes {
namespace asio = boost::asio;

namespace {

constexpr const char* kColumnsQuery = R"sql(
SELECT a.attname,
       a.atttypid::int8,
       CASE WHEN t.typcategory = 'A' THEN et.typname ELSE t.typname END,
       CASE WHEN t.typcategory = 'A' THEN greatest(a.attndims, 1) ELSE 0 END,
       a.attnotnull,
       a.atttypmod,
       (SELECT k.ord - 1 FROM pg_index i, unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
         WHERE i.indrelid = c.oid AND i.indisprimary AND k.attnum = a.attnum),
       c.oid::int8,
       has_table_privilege(c.oid, 'SELECT'),
       c.relkind::text
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_type et ON et.oid = t.typelem
 WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')
 ORDER BY a.attnum)sql";

void add_type_details(nlohmann::json& column, const TableColumn& info) {
  std::int32_t modifier = info.type_modifier;
  if (modifier < 0) return;
  if (info.type_name == "varchar" || info.type_name == "bpchar") {
    column["max_length"] = modifier - 4;
  } else if (info.type_name == "numeric") {
    column["precision"] = ((modifier - 4) >> 16) & 0xffff;
    column["scale"] = (modifier - 4) & 0xffff;
  } else if (info.type_name == "bit" || info.type_name == "varbit") {
    column["length"] = modifier;
  } else if (info.type_name == "time" || info.type_name == "timetz" ||
             info.type_name == "timestamp" || info.type_name == "timestamptz" ||
             info.type_name == "interval") {
    column["precision"] = modifier & 0xffff;
  }
}

}  // namespace

std::optional<std::size_t> TableSchema::column_index(std::string_view column) const {
  for (std::size_t i = 0; i < columns.size(); ++i) {
    if (columns[i].name == column) return i;
  }
  return std::nullopt;
}

std::string TableSchema::electric_schema_json(const std::vector<std::size_t>& selected) const {
  nlohmann::json out = nlohmann::json::object();
  for (std::size_t index : selected) {
    const TableColumn& info = columns[index];
    nlohmann::json column = {{"type", info.type_name}};
    if (info.dims > 0) column["dims"] = info.dims;
    if (info.pk_index) column["pk_index"] = *info.pk_index;
    if (info.not_null) column["not_null"] = true;
    add_type_details(column, info);
    out[info.name] = std::move(column);
  }
  return out.dump();
}

asio::awaitable<Result<TableSchema>> load_table_schema(pg::AsyncConnection& connection,
                                                       std::string schema, std::string table) {
  std::vector<std::optional<std::string>> params{schema, table};
  auto result = co_await connection.query_params(kColumnsQuery, std::move(params));
  if (!result) co_return result.error();
  PGresult* rows = result->get();
  const std::string display = schema + "." + table;
  if (PQntuples(rows) == 0) {
    co_return Error{std::string(error_codes::kTableNotFound), "table not found: " + display, ""};
  }
  if (pg::get_value(rows, 0, 8).value_or("f") != "t") {
    co_return Error{std::string(error_codes::kTableNotFound),
                    "permission denied for table " + display,
                    "grant SELECT on the table to the proxy's role"};
  }
  // A partitioned parent holds no rows itself: its changes are published
  // under the leaf partitions' names (the publication does not publish via
  // the partition root, so that shapes on the leaves keep working), and a
  // shape on the parent would never change. Refused rather than stale.
  if (pg::get_value(rows, 0, 9).value_or("r") == "p") {
    co_return Error{std::string(error_codes::kTableUnsupported),
                    "table " + display +
                        " is partitioned; shapes of partitioned tables are not supported "
                        "(request a shape of each partition instead)",
                    ""};
  }
  TableSchema out;
  out.schema = std::move(schema);
  out.name = std::move(table);
  out.oid = static_cast<std::uint32_t>(std::stoul(pg::get_value(rows, 0, 7).value_or("0")));
  std::vector<std::pair<int, std::size_t>> key;
  for (int row = 0; row < PQntuples(rows); ++row) {
    TableColumn column;
    column.name = pg::get_value(rows, row, 0).value_or("");
    column.type_oid =
        static_cast<std::uint32_t>(std::stoul(pg::get_value(rows, row, 1).value_or("0")));
    column.type_name = pg::get_value(rows, row, 2).value_or("");
    column.dims = std::stoi(pg::get_value(rows, row, 3).value_or("0"));
    column.not_null = pg::get_value(rows, row, 4).value_or("f") == "t";
    column.type_modifier = std::stoi(pg::get_value(rows, row, 5).value_or("-1"));
    if (auto pk = pg::get_value(rows, row, 6)) {
      column.pk_index = std::stoi(*pk);
      key.emplace_back(*column.pk_index, static_cast<std::size_t>(row));
    }
    out.columns.push_back(std::move(column));
  }
  // Without a primary key rows have no identity: Electric then treats all
  // columns as the key (Inspector.get_pk_cols), so duplicate rows collapse
  // into one key and deleting one copy deletes both in every client; and
  // publishing such a table (replica identity default) makes PostgreSQL
  // refuse UPDATE and DELETE on it. Refused with the reason instead.
  if (key.empty()) {
    co_return Error{std::string(error_codes::kTableUnsupported),
                    "table " + display +
                        " has no primary key; shapes need one to identify rows (add a primary "
                        "key to the table)",
                    ""};
  }
  std::sort(key.begin(), key.end());
  for (const auto& [position, index] : key) out.key_columns.push_back(index);
  co_return out;
}

}  // namespace shapeproxy::shapes
