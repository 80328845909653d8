// A shape's where clause: parsed from user text with PostgreSQL's own parser
// (libpg_query), checked against a whitelist of expression forms and the
// table's columns, then either rendered into a parameterised snapshot query
// or evaluated in-process on replicated rows with PostgreSQL semantics.
//
// Semantics notes (see where_eval.cpp for details):
//  - text compares bytewise (C collation); the rendered SQL adds
//    COLLATE "C" wherever collation matters so both paths agree;
//  - timestamptz values and zone-less literals are taken as UTC (the
//    server TimeZone of our clusters);
//  - where PostgreSQL would raise an error while evaluating (division by
//    zero, overflow, invalid cast) the row simply does not match.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace shapeproxy::where {

struct Expr;

struct ColumnInfo {
  std::string name;
  std::string
      type;  // pg type name, e.g. int4, text, numeric, bool, timestamptz, uuid, jsonb, _int4
};

// One row in the order of the `columns` given to WhereClause::parse; text
// values in PostgreSQL output format, nullopt = NULL.
using RowValues = std::vector<std::optional<std::string>>;

// The code of every error WhereClause::parse returns (HTTP 400 for clients).
inline constexpr const char* kInvalidWhere = "invalid_where";

class WhereClause {
 public:
  // Errors have code kInvalidWhere and say what is wrong, e.g.
  // `unknown column "foo"`, `function pg_sleep is not supported`,
  // `parameter $2 has no value`.
  static Result<WhereClause> parse(std::string_view text, const std::vector<ColumnInfo>& columns,
                                   const std::map<int, std::string>& params);

  // SQL for the WHERE of a snapshot query: identifiers double-quoted, every
  // literal and parameter a placeholder $first_param, $first_param+1, ...
  // whose text value is appended to `bound` (nullopt = NULL).
  std::string to_sql(int first_param, std::vector<std::optional<std::string>>& bound) const;

  // True only when the expression is TRUE for the row (NULL/false/error ->
  // false), like a WHERE.
  bool matches(const RowValues& values) const;

  // Canonical text (parameters inlined as literals): equal for clauses that
  // differ only in whitespace, keyword case or literal spelling.
  const std::string& normalized() const { return normalized_; }

  // Distinct column names the clause reads, in order of first use.
  std::vector<std::string> referenced_columns() const { return referenced_columns_; }

  // The typed tree (see where_expr.h), e.g. to find equality conditions.
  const Expr& expression() const { return *root_; }

 private:
  std::shared_ptr<const Expr> root_;
  std::string normalized_;
  std::vector<std::string> referenced_columns_;
};

}  // namespace shapeproxy::where
