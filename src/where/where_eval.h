// In-process evaluation of a typed where-clause Expr on one replicated row,
// with PostgreSQL semantics (three-valued logic, type-aware comparison).
#pragma once

#include "where/where_clause.h"
#include "where/where_expr.h"

namespace shapeproxy::where {

// True only when `root` evaluates to TRUE. Where PostgreSQL would raise an
// error (division by zero, overflow, invalid cast, bad LIKE escape) the
// result is false: the row is treated as not matching.
bool evaluate_predicate(const Expr& root, const RowValues& row);

// SQL LIKE matching (% and _ over UTF-8 characters, `escape` or none when
// empty). nullopt when the pattern is invalid (ends with the escape
// character, escape longer than one character).
std::optional<bool> like_match(std::string_view text, std::string_view pattern,
                               std::string_view escape, bool case_insensitive);

}  // namespace shapeproxy::where
