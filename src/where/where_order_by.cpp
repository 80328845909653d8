#include "where/where_order_by.h"

#include <pg_query.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "pg/connection.h"

namespace shapeproxy::where {
namespace {

using nlohmann::json;

constexpr std::string_view kPrefix = "SELECT 1 ORDER BY ";
constexpr std::size_t kMaxTextBytes = 16 * 1024;

struct ParseGuard {
  PgQueryParseResult result;
  ~ParseGuard() { pg_query_free_parse_result(result); }
};

Error invalid(std::string message) { return Error{kInvalidOrderBy, std::move(message), ""}; }

constexpr char kOnlyColumns[] =
    "order_by supports only column names, each with optional ASC/DESC and NULLS FIRST/LAST";

// One sort item: `"column" [ASC|DESC] [NULLS FIRST|LAST]`, or an error.
Result<std::string> render_item(const json& item, const std::vector<std::string>& columns) {
  if (!item.contains("SortBy")) return invalid(kOnlyColumns);
  const json& sort = item.at("SortBy");
  if (sort.contains("useOp")) return invalid(kOnlyColumns);
  const json& node = sort.at("node");
  if (!node.contains("ColumnRef")) return invalid(kOnlyColumns);
  const json& fields = node.at("ColumnRef").at("fields");
  if (fields.size() != 1 || !fields[0].contains("String")) return invalid(kOnlyColumns);
  const json& s = fields[0].at("String");
  std::string name =
      s.contains("sval") ? s.at("sval").get<std::string>() : s.value("str", std::string());
  if (std::find(columns.begin(), columns.end(), name) == columns.end())
    return invalid("unknown column \"" + name + "\" in order_by");
  std::string out = pg::quote_identifier(name);
  const std::string dir = sort.value("sortby_dir", "SORTBY_DEFAULT");
  if (dir == "SORTBY_ASC")
    out += " ASC";
  else if (dir == "SORTBY_DESC")
    out += " DESC";
  else if (dir != "SORTBY_DEFAULT")
    return invalid(kOnlyColumns);
  const std::string nulls = sort.value("sortby_nulls", "SORTBY_NULLS_DEFAULT");
  if (nulls == "SORTBY_NULLS_FIRST")
    out += " NULLS FIRST";
  else if (nulls == "SORTBY_NULLS_LAST")
    out += " NULLS LAST";
  else if (nulls != "SORTBY_NULLS_DEFAULT")
    return invalid(kOnlyColumns);
  return out;
}

}  // namespace

Result<std::string> render_order_by(std::string_view text,
                                    const std::vector<std::string>& columns) {
  if (text.find('\0') != std::string_view::npos) return invalid("order_by contains a NUL byte");
  if (text.size() > kMaxTextBytes) return invalid("order_by is too long");
  std::string source = std::string(kPrefix) + std::string(text);
  ParseGuard parsed{pg_query_parse(source.c_str())};
  if (parsed.result.error) {
    const PgQueryError& error = *parsed.result.error;
    std::string message = error.message ? error.message : "syntax error";
    if (error.cursorpos > 0)
      message = "At location " + std::to_string(error.cursorpos) + ": " + message;
    return invalid(std::move(message));
  }
  try {
    json tree = json::parse(parsed.result.parse_tree);
    const json& stmts = tree.at("stmts");
    if (stmts.size() != 1 || stmts[0].contains("stmt_len"))
      return invalid("Unexpected `;` in order by");
    const json& select = stmts[0].at("stmt").at("SelectStmt");
    for (const auto& [key, value] : select.items()) {
      if (key != "targetList" && key != "sortClause" && key != "limitOption" && key != "op")
        return invalid("order_by must be a list of sort items only");
    }
    if (select.value("op", "") != "SETOP_NONE" ||
        select.value("limitOption", "") != "LIMIT_OPTION_DEFAULT")
      return invalid("order_by must be a list of sort items only");
    std::string out;
    for (const json& item : select.at("sortClause")) {
      auto rendered = render_item(item, columns);
      if (!rendered) return rendered.error();
      if (!out.empty()) out += ", ";
      out += rendered.value();
    }
    if (out.empty()) return invalid("order_by is empty");
    return out;
  } catch (const json::exception& e) {
    return invalid(std::string("order_by is malformed (") + e.what() + ")");
  }
}

}  // namespace shapeproxy::where
