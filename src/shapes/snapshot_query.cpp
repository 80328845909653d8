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

// Appends the rows of `result` to `out`.
void append_rows(const PGresult* result, std::vector<Row>& out) {
  int rows = PQntuples(result);
  int columns = PQnfields(result);
  for (int row = 0; row < rows; ++row) {
    Row values(static_cast<std::size_t>(columns));
    for (int column = 0; column < columns; ++column) {
      values[static_cast<std::size_t>(column)] = pg::get_value(result, row, column);
    }
    out.push_back(std::move(values));
  }
}

SnapshotRows to_rows(PGresult* result, PgSnapshot snapshot) {
  SnapshotRows out{std::move(snapshot), {}};
  out.rows.reserve(static_cast<std::size_t>(PQntuples(result)));
  append_rows(result, out.rows);
  return out;
}

}  // namespace

asio::awaitable<Result<SnapshotRows>> query_snapshot(pg::AsyncConnection& connection,
                                                     const ShapeDefinition& definition,
                                                     std::chrono::milliseconds statement_timeout,
                                                     const RowsObserver& on_rows) {
  std::string begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; ";
  if (statement_timeout.count() > 0)
    begin += "SET LOCAL statement_timeout = " + std::to_string(statement_timeout.count()) + "; ";
  auto begun = co_await connection.query(begin + "SELECT pg_current_snapshot()::text");
  if (!begun) co_return begun.error();
  auto snapshot = PgSnapshot::parse(pg::get_value(begun->get(), 0, 0).value_or(""));
  std::vector<std::optional<std::string>> bound;
  std::string sql = select_sql(definition, bound);
  if (!snapshot) {
    (void)co_await connection.query("ROLLBACK");
    co_return Error{"snapshot_failed", "could not read pg_current_snapshot()", ""};
  }
  if (!on_rows) {
    auto rows = co_await connection.query_params(std::move(sql), std::move(bound));
    auto ended = co_await connection.query(rows ? "COMMIT" : "ROLLBACK");
    if (!rows) co_return rows.error();
    if (!ended) co_return ended.error();
    co_return to_rows(rows->get(), std::move(*snapshot));
  }
  SnapshotRows out{std::move(*snapshot), {}};
  auto done = co_await connection.query_params_rows(
      std::move(sql), std::move(bound), [&](std::vector<pg::ResultPtr>& batch) {
        const std::size_t first = out.rows.size();
        for (const auto& result : batch) append_rows(result.get(), out.rows);
        on_rows.rows(std::span<const Row>(out.rows).subspan(first));
      });
  if (done && on_rows.end) on_rows.end(out.snapshot);
  auto ended = co_await connection.query(done ? "COMMIT" : "ROLLBACK");
  if (!done) co_return done.error();
  if (!ended) co_return ended.error();
  co_return out;
}

}  // namespace shapeproxy::shapes
