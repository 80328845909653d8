// WhereClause: ties parsing (where_parser), SQL rendering (where_sql) and
// in-process evaluation (where_eval) together behind a narrow interface.
#include "where/where_clause.h"

#include <algorithm>

#include "where/where_eval.h"
#include "where/where_parser.h"
#include "where/where_sql.h"

namespace shapeproxy::where {
namespace {

void collect_columns(const Expr& e, std::vector<std::string>& out) {
  if (e.kind == ExprKind::kColumn && std::find(out.begin(), out.end(), e.column_name) == out.end())
    out.push_back(e.column_name);
  for (const auto& arg : e.args) collect_columns(*arg, out);
}

}  // namespace

Result<WhereClause> WhereClause::parse(std::string_view text,
                                       const std::vector<ColumnInfo>& columns,
                                       const std::map<int, std::string>& params) {
  auto parsed = parse_where_expression(text, columns, params);
  if (!parsed) return parsed.error();
  WhereClause clause;
  clause.root_ = std::shared_ptr<const Expr>(std::move(parsed).value());
  clause.normalized_ = render_sql(*clause.root_, 1, nullptr);
  collect_columns(*clause.root_, clause.referenced_columns_);
  return clause;
}

std::string WhereClause::to_sql(int first_param,
                                std::vector<std::optional<std::string>>& bound) const {
  return render_sql(*root_, first_param, &bound);
}

bool WhereClause::matches(const RowValues& values) const {
  return evaluate_predicate(*root_, values);
}

}  // namespace shapeproxy::where
