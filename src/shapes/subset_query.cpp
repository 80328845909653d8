#include "shapes/subset_query.h"

#include <spdlog/spdlog.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <random>

#include "pg/async_connection.h"
#include "shapes/json_text.h"
#include "shapes/shape_definition.h"
#include "where/where_order_by.h"

namespace shapeproxy::shapes {
namespace asio = boost::asio;

namespace {

// The snapshot and WAL position the query reads at; on a hot standby the
// replayed position (pg_current_wal_lsn() fails there).
constexpr char kBegin[] =
    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; "
    "SELECT pg_current_snapshot()::text, "
    "(COALESCE(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
    "ELSE pg_current_wal_lsn() END, '0/0'::pg_lsn) - '0/0'::pg_lsn)::text";

std::string select_sql(const ShapeDefinition& shape, const where::WhereClause* subset_where,
                       const std::string& order_by, const SubsetRequest& subset,
                       std::vector<std::optional<std::string>>& bound) {
  const TableSchema& table = *shape.table;
  std::string sql = "SELECT ";
  for (std::size_t i = 0; i < shape.selected.size(); ++i) {
    if (i > 0) sql += ", ";
    sql += pg::quote_identifier(table.columns[shape.selected[i]].name);
  }
  sql += " FROM " + table_key(table.schema, table.name);
  if (shape.where) sql += " WHERE (" + shape.where->to_sql(1, bound) + ")";
  if (subset_where) {
    sql += shape.where ? " AND (" : " WHERE (";
    sql += subset_where->to_sql(static_cast<int>(bound.size()) + 1, bound) + ")";
  }
  if (!order_by.empty()) sql += " ORDER BY " + order_by;
  if (subset.limit) {
    bound.push_back(std::to_string(*subset.limit));
    sql += " LIMIT $" + std::to_string(bound.size()) + "::int8";
  }
  if (subset.offset) {
    bound.push_back(std::to_string(*subset.offset));
    sql += " OFFSET $" + std::to_string(bound.size()) + "::int8";
  }
  return sql;
}

// "schema"."table"/"pk1"/"pk2": `/` in values doubled, NULL as `_`, as the
// shape log keys its rows.
std::string row_key(const ShapeDefinition& shape, const PGresult* result, int row,
                    const std::vector<int>& key_fields) {
  std::string key = table_key(shape.table->schema, shape.table->name);
  for (int field : key_fields) {
    key += '/';
    auto value = pg::get_value(result, row, field);
    if (!value) {
      key += '_';
      continue;
    }
    key += '"';
    for (char c : *value) {
      if (c == '/') key += '/';
      key += c;
    }
    key += '"';
  }
  return key;
}

void append_metadata(std::string& out, const PgSnapshot& snapshot, const std::string& lsn,
                     std::int64_t mark) {
  out += "{\"xmin\":\"" + std::to_string(snapshot.xmin) + "\",\"xmax\":\"" +
         std::to_string(snapshot.xmax) + "\",\"xip_list\":[";
  for (std::size_t i = 0; i < snapshot.xip.size(); ++i) {
    if (i > 0) out += ',';
    out += '"' + std::to_string(snapshot.xip[i]) + '"';
  }
  out += "],\"database_lsn\":\"" + lsn + "\",\"snapshot_mark\":" + std::to_string(mark) + "}";
}

std::string render_body(const ShapeDefinition& shape, const PGresult* result,
                        const SubsetResult& meta) {
  const TableSchema& table = *shape.table;
  std::vector<int> key_fields;  // result columns of the primary key
  for (std::size_t key : table.key_columns) {
    for (std::size_t i = 0; i < shape.selected.size(); ++i)
      if (shape.selected[i] == key) key_fields.push_back(static_cast<int>(i));
  }
  std::string relation = "[";
  append_json_string(relation, table.schema);
  relation += ',';
  append_json_string(relation, table.name);
  relation += ']';
  const std::string headers = ",\"headers\":{\"operation\":\"insert\",\"relation\":" + relation +
                              ",\"snapshot_mark\":" + std::to_string(meta.snapshot_mark) + "}}";
  std::string out = "{\"metadata\":";
  append_metadata(out, meta.snapshot, meta.database_lsn, meta.snapshot_mark);
  out += ",\"data\":[";
  const int rows = PQntuples(result);
  for (int row = 0; row < rows; ++row) {
    if (row > 0) out += ',';
    out += "{\"key\":";
    append_json_string(out, row_key(shape, result, row, key_fields));
    out += ",\"value\":{";
    for (std::size_t i = 0; i < shape.selected.size(); ++i) {
      if (i > 0) out += ',';
      append_json_string(out, table.columns[shape.selected[i]].name);
      out += ':';
      auto value = pg::get_value(result, row, static_cast<int>(i));
      if (value) {
        append_json_string(out, *value);
      } else {
        out += "null";
      }
    }
    out += '}';
    out += headers;
  }
  out += "]}";
  return out;
}

// A data error raised by the query itself (e.g. a parameter that is no valid
// value of its column's enum type) is the request's fault: SQLSTATE class 22.
bool is_data_error(const Error& error) {
  return error.code.size() == 5 && error.code.starts_with("22");
}

}  // namespace

asio::awaitable<SubsetOutcome> query_subset(pg::AsyncConnection& connection,
                                            const ShapeDefinitionRequest& shape_request,
                                            const SubsetRequest& subset,
                                            std::int64_t snapshot_mark) {
  auto begun = co_await connection.query(kBegin);
  if (!begun)
    co_return Unavailable{"subset query failed: " + begun.error().message, std::chrono::seconds(1)};
  auto rollback = [&]() -> asio::awaitable<void> { (void)co_await connection.query("ROLLBACK"); };
  SubsetResult meta;
  meta.snapshot_mark = snapshot_mark;
  auto snapshot = PgSnapshot::parse(pg::get_value(begun->get(), 0, 0).value_or(""));
  meta.database_lsn = pg::get_value(begun->get(), 0, 1).value_or("0");
  if (!snapshot) {
    co_await rollback();
    co_return Unavailable{"could not read pg_current_snapshot()", std::chrono::seconds(1)};
  }
  meta.snapshot = std::move(*snapshot);

  auto table = co_await load_table_schema(connection, shape_request.schema, shape_request.table);
  if (!table) {
    co_await rollback();
    if (table.error().code == "table_not_found")
      co_return InvalidRequest{"table", table.error().message};
    co_return Unavailable{"subset query failed: " + table.error().message, std::chrono::seconds(1)};
  }
  auto made = ShapeDefinition::make(shape_request,
                                    std::make_shared<const TableSchema>(std::move(table).value()));
  if (auto* invalid = std::get_if<InvalidRequest>(&made)) {
    co_await rollback();
    co_return *invalid;  // a shape field: the service would have said so too
  }
  const auto& shape = std::get<ShapeDefinition>(made);

  // The subset may use the shape's columns only (as Electric's queryable columns).
  std::vector<where::ColumnInfo> columns;
  std::vector<std::string> names;
  for (std::size_t index : shape.selected) {
    const TableColumn& column = shape.table->columns[index];
    columns.push_back({column.name, column.dims > 0 ? "_" + column.type_name : column.type_name});
    names.push_back(column.name);
  }
  std::optional<where::WhereClause> where;
  if (subset.where) {
    auto parsed = where::WhereClause::parse(*subset.where, columns, subset.params);
    if (!parsed) {
      co_await rollback();
      co_return InvalidRequest{"where", parsed.error().message};
    }
    where = std::move(parsed).value();
  } else if (!subset.params.empty()) {
    co_await rollback();
    co_return InvalidRequest{"params", "params given without a where clause"};
  }
  std::string order_by;
  if (subset.order_by) {
    auto rendered = where::render_order_by(*subset.order_by, names);
    if (!rendered) {
      co_await rollback();
      co_return InvalidRequest{"order_by", rendered.error().message};
    }
    order_by = std::move(rendered).value();
  }

  std::vector<std::optional<std::string>> bound;
  std::string sql = select_sql(shape, where ? &*where : nullptr, order_by, subset, bound);
  auto rows = co_await connection.query_params(std::move(sql), std::move(bound));
  if (!rows) {
    co_await rollback();
    if (is_data_error(rows.error())) co_return InvalidRequest{"where", rows.error().message};
    co_return Unavailable{"subset query failed: " + rows.error().message, std::chrono::seconds(1)};
  }
  auto ended = co_await connection.query("COMMIT");
  if (!ended)
    co_return Unavailable{"subset query failed: " + ended.error().message, std::chrono::seconds(1)};
  meta.rows = static_cast<std::size_t>(PQntuples(rows->get()));
  meta.body = render_body(shape, rows->get(), meta);
  co_return meta;
}

SubsetQueries::SubsetQueries(asio::any_io_executor strand,
                             std::shared_ptr<pg::ConnectionPool> primary,
                             std::shared_ptr<pg::ConnectionPool> fallback,
                             std::size_t max_in_flight)
    : strand_(std::move(strand)),
      primary_(std::move(primary)),
      fallback_(std::move(fallback)),
      max_in_flight_(std::max<std::size_t>(max_in_flight, 1)) {}

void SubsetQueries::run(ShapeDefinitionRequest shape, SubsetRequest subset, bool fallback,
                        std::function<void(SubsetOutcome)> done) {
  if (in_flight_.fetch_add(1) >= max_in_flight_) {
    in_flight_.fetch_sub(1);
    done(Unavailable{"too many subset queries in flight", std::chrono::seconds(1)});
    return;
  }
  asio::co_spawn(
      strand_,
      [self = shared_from_this(), shape = std::move(shape), subset = std::move(subset), fallback,
       done = std::move(done)]() mutable -> asio::awaitable<void> {
        SubsetOutcome outcome =
            co_await self->run_one(std::move(shape), std::move(subset), fallback);
        self->in_flight_.fetch_sub(1);
        done(std::move(outcome));
      },
      asio::detached);
}

asio::awaitable<SubsetOutcome> SubsetQueries::run_one(ShapeDefinitionRequest shape,
                                                      SubsetRequest subset, bool fallback) {
  auto& pool = fallback && fallback_ ? fallback_ : primary_;
  auto lease = co_await pool->acquire();
  if (!lease) {
    spdlog::warn("subset: no database connection: {}", lease.error().to_string());
    co_return Unavailable{"database unavailable", std::chrono::seconds(5)};
  }
  static thread_local std::mt19937 random{std::random_device{}()};
  const auto mark = static_cast<std::int64_t>(random() & 0x7fffffff);
  co_return co_await query_subset(**lease, shape, subset, mark);
}

}  // namespace shapeproxy::shapes
