// The ORDER BY of a subset snapshot: user text parsed with PostgreSQL's own
// parser (libpg_query, as `SELECT 1 ORDER BY <text>`) and rendered back from
// the parse tree, so no user text reaches the query.
// Only what the proxy can render safely is accepted: a comma list of the
// shape's column names, each optionally with ASC/DESC and NULLS FIRST/LAST.
// Anything else (expressions, functions, COLLATE, USING, parameters,
// positions) is refused with a message saying so, never passed through.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace shapeproxy::where {

inline constexpr const char* kInvalidOrderBy = "invalid_order_by";

// `columns`: the names that may be sorted on. Returns the clause as SQL
// (identifiers double-quoted), e.g. `"title" DESC NULLS LAST, "id"`.
// Syntax errors read as Electric's: `At location N: syntax error at or near
// "x"`, N counted in the wrapped statement as Electric counts it.
Result<std::string> render_order_by(std::string_view text, const std::vector<std::string>& columns);

}  // namespace shapeproxy::where
