#include "shapes/snapshot_query.h"

#include "pg/async_connection.h"

namespace shapeproxy::shapes {
namespace asio = boost::asio;

namespace {

std::string select_sql(const ShapeDefinition& definition,
                       std::vector<std::optional<std::string>>& bound) {
  const TableSchema& table = *definition.table;
  std::string sql = "SELECT ";
  for (std::size_t i = 0; i < table.columns.size(); ++i) {
    if (i > 0) sql += ", ";
    sql += pg::quote_identifier(table.columns[i].name);
  }
  sql += " FROM " + table_key(table.schema, table.name);
  if (definition.where) sql += " WHERE " + definition.where->to_sql(1, bound);
  return sql;
}

SnapshotRows to_rows(PGresult* result, PgSnapshot snapshot) {
  SnapshotRows out{std::move(snapshot), {}};
  int rows = PQntuples(result);
  int columns = PQnfields(result);
  out.rows.reserve(static_cast<std::size_t>(rows));
  for (int row = 0; row < rows; ++row) {
    Row values(static_cast<std::size_t>(columns));
    for (int column = 0; column < columns; ++column) {
      values[static_cast<std::size_t>(column)] = pg::get_value(result, row, column);
    }
    out.rows.push_back(std::move(values));
  }
  return out;
}

}  // namespace

asio::awaitable<Result<SnapshotRows>> query_snapshot(pg::AsyncConnection& connection,
                                                     const ShapeDefinition& definition,
                                                     std::chrono::milliseconds statement_timeout) {
  std::string begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; ";
  if (statement_timeout.count() > 0)
    begin += "SET LOCAL statement_timeout = " + std::to_string(statement_timeout.count()) + "; ";
  auto begun = co_await connection.query(begin + "SELECT pg_current_snapshot()::text");
  if (!begun) co_return begun.error();
  auto snapshot = PgSnapshot::parse(pg::get_value(begun->get(), 0, 0).value_or(""));
  std::vector<std::optional<std::string>> bound;
  std::string sql = select_sql(definition, bound);
  auto rows = co_await connection.query_params(std::move(sql), std::move(bound));
  auto ended = co_await connection.query(rows ? "COMMIT" : "ROLLBACK");
  if (!rows) co_return rows.error();
  if (!ended) co_return ended.error();
  if (!snapshot) co_return Error{"snapshot_failed", "could not read pg_current_snapshot()", ""};
  co_return to_rows(rows->get(), std::move(*snapshot));
}

}  // namespace shapeproxy::shapes
