// Where-clause text -> typed, validated expression tree. Parses with
// libpg_query (as `SELECT 1 WHERE <text>`), accepts only whitelisted
// expression forms, resolves columns and parameters and type-checks,
// converting untyped literals/parameters to the type their context needs.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "where/where_clause.h"
#include "where/where_expr.h"

namespace shapeproxy::where {

Result<ExprPtr> parse_where_expression(std::string_view text,
                                       const std::vector<ColumnInfo>& columns,
                                       const std::map<int, std::string>& params);

}  // namespace shapeproxy::where
