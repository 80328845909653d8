// Renders a typed where-clause Expr as SQL: either with every constant as a
// bound placeholder (snapshot queries) or with constants inlined (the
// canonical text used in a shape's identity). Identifiers are always
// double-quoted; user text never reaches SQL except as a bound value or, in
// the canonical form, a properly quoted literal.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "where/where_expr.h"

namespace shapeproxy::where {

// `bound` != nullptr: constants render as $first_param, $first_param+1, ...
// (with a cast to their type) and their text values are appended to *bound.
// `bound` == nullptr: constants are inlined as quoted literals.
std::string render_sql(const Expr& e, int first_param,
                       std::vector<std::optional<std::string>>* bound);

}  // namespace shapeproxy::where
