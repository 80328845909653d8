// A table's columns as the catalog describes them: what shapes validate
// requests against, what the electric-schema header tells clients, and what
// replicated Relation messages are compared with to notice schema changes.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace shapeproxy::pg {
class AsyncConnection;
}

namespace shapeproxy::shapes {

struct TableColumn {
  std::string name;
  std::uint32_t type_oid = 0;
  std::string type_name;  // element type for arrays (int4 for int4[]), as Electric reports it
  int dims = 0;           // array dimensions (at least 1 for array columns)
  bool not_null = false;
  std::optional<int> pk_index;  // position in the primary key
  std::int32_t type_modifier = -1;
};

struct TableSchema {
  std::uint32_t oid = 0;
  std::string schema;
  std::string name;
  std::vector<TableColumn> columns;      // in attnum order
  std::vector<std::size_t> key_columns;  // primary key (never empty)

  std::optional<std::size_t> column_index(std::string_view name) const;
  // The electric-schema header value for `selected` column indexes.
  std::string electric_schema_json(const std::vector<std::size_t>& selected) const;
};

// Looks the table up. Errors: error_codes::kTableNotFound (also when the
// role may not SELECT it: the message says which), kTableUnsupported (a
// partitioned parent, or no primary key: the message says which), or a
// database error.
boost::asio::awaitable<Result<TableSchema>> load_table_schema(pg::AsyncConnection& connection,
                                                              std::string schema,
                                                              std::string table);

}  // namespace shapeproxy::shapes
