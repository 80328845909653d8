// libpg_query JSON parse tree -> typed Expr tree, refusing everything outside
// the whitelist. Internally errors are thrown as WhereError and turned into a
// Result at the boundary (parse_where_expression).
#include "where/where_parser.h"

#include <pg_query.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

namespace shapeproxy::where {
namespace {

using nlohmann::json;

constexpr std::string_view kPrefix = "SELECT 1 WHERE ";
constexpr size_t kMaxTextBytes = 64 * 1024;
// Nesting limit of a clause's parse tree (bounds the recursion below). A
// typed literal ('1.5'::real, TypeCast over A_Const) counts as one level,
// like the bare constant: the normalized text writes most constants that
// way, and must parse under the same limit as the clause it came from (a
// 199-term `f4 * 1 * ...` chain was accepted, its normalized text refused).
constexpr int kMaxDepth = 200;

struct WhereError {
  std::string message;
};

[[noreturn]] void fail(std::string message) { throw WhereError{std::move(message)}; }

std::string dquote(std::string_view s) { return "\"" + std::string(s) + "\""; }
std::string type_name(SqlType t) { return std::string(sql_type_name(t)); }

// Node "String" -> its sval (absent for the empty string).
std::string string_value(const json& node) {
  const json& s = node.at("String");
  return s.contains("sval") ? s.at("sval").get<std::string>() : std::string();
}

// Names such as ["pg_catalog", "btrim"] -> "btrim"; other schemas refused.
std::string unqualified_name(const json& names, std::string_view what) {
  if (!names.is_array() || names.empty() || names.size() > 2)
    fail(std::string(what) + " name is malformed");
  for (const auto& n : names)
    if (!n.contains("String")) fail(std::string(what) + " name is malformed");
  if (names.size() == 2 && string_value(names[0]) != "pg_catalog")
    fail("schema-qualified " + std::string(what) + " " + string_value(names[0]) + "." +
         string_value(names[1]) + " is not supported");
  return string_value(names.back());
}

std::string_view unsupported_node_description(std::string_view node_type) {
  static const std::pair<std::string_view, std::string_view> kDescriptions[] = {
      {"SubLink", "subqueries are not supported"},
      {"CaseExpr", "CASE expressions are not supported"},
      {"SQLValueFunction", "special functions such as CURRENT_TIMESTAMP are not supported"},
      {"CollateClause", "COLLATE is not supported"},
      {"A_ArrayExpr", "ARRAY expressions are not supported"},
      {"RowExpr", "row constructors are not supported"},
      {"MinMaxExpr", "GREATEST/LEAST are not supported"},
      {"A_Indirection", "subscripts and field selection are not supported"},
      {"NamedArgExpr", "named function arguments are not supported"},
      {"GroupingFunc", "GROUPING is not supported"},
      {"XmlExpr", "XML expressions are not supported"},
      {"XmlSerialize", "XML expressions are not supported"},
      {"A_Star", "* is not supported"},
  };
  for (const auto& [type, text] : kDescriptions)
    if (type == node_type) return text;
  return {};
}

bool is_aggregate_name(std::string_view name) {
  static const std::set<std::string_view> kAggregates = {"count",
                                                         "sum",
                                                         "avg",
                                                         "min",
                                                         "max",
                                                         "array_agg",
                                                         "string_agg",
                                                         "bool_and",
                                                         "bool_or",
                                                         "every",
                                                         "json_agg",
                                                         "jsonb_agg",
                                                         "json_object_agg",
                                                         "jsonb_object_agg",
                                                         "stddev",
                                                         "stddev_pop",
                                                         "stddev_samp",
                                                         "variance",
                                                         "var_pop",
                                                         "var_samp",
                                                         "bit_and",
                                                         "bit_or",
                                                         "bit_xor",
                                                         "xmlagg",
                                                         "mode",
                                                         "percentile_cont",
                                                         "percentile_disc",
                                                         "rank",
                                                         "dense_rank",
                                                         "row_number",
                                                         "ntile",
                                                         "lag",
                                                         "lead",
                                                         "first_value",
                                                         "last_value",
                                                         "nth_value",
                                                         "cume_dist",
                                                         "percent_rank",
                                                         "corr",
                                                         "covar_pop",
                                                         "covar_samp",
                                                         "regr_count",
                                                         "range_agg",
                                                         "range_intersect_agg"};
  return kAggregates.count(name) > 0;
}

bool is_integral_literal(std::string_view s) {
  return s.find_first_of(".eE") == std::string_view::npos;
}

// libpg_query 15-4.0's JSON output drops Integer values <= 0 ("ival":{}):
// the value is 0 or negative. Recover its magnitude from the source text at
// the constant's location ('-' signs, parentheses, blanks and comments may
// precede the digits; an int4 constant has no '.' or exponent).
int64_t recover_nonpositive_int(std::string_view source, size_t location) {
  size_t pos = location;
  while (pos < source.size() && !(source[pos] >= '0' && source[pos] <= '9')) {
    if (source.compare(pos, 2, "--") == 0) {
      pos = source.find('\n', pos);
      if (pos == std::string_view::npos) fail("malformed integer literal");
    } else if (source.compare(pos, 2, "/*") == 0) {
      int depth = 0;
      do {
        if (source.compare(pos, 2, "/*") == 0)
          ++depth, pos += 2;
        else if (source.compare(pos, 2, "*/") == 0)
          --depth, pos += 2;
        else
          ++pos;
      } while (depth > 0 && pos < source.size());
    } else {
      ++pos;
    }
  }
  int64_t magnitude = 0;
  while (pos < source.size() && source[pos] >= '0' && source[pos] <= '9' &&
         magnitude <= 2147483648LL)
    magnitude = magnitude * 10 + (source[pos++] - '0');
  return -magnitude;
}

ExprPtr make_const(SqlType type, Datum value) {
  auto e = std::make_unique<Expr>(ExprKind::kConst);
  e->type = type;
  e->value = std::move(value);
  return e;
}

ExprPtr make_node(ExprKind kind, SqlType type, std::vector<ExprPtr> args) {
  auto e = std::make_unique<Expr>(kind);
  e->type = type;
  e->args = std::move(args);
  return e;
}

template <typename... Args>
std::vector<ExprPtr> expr_list(Args&&... args) {
  std::vector<ExprPtr> out;
  (out.push_back(std::forward<Args>(args)), ...);
  return out;
}

SqlType numeric_rank_max(SqlType a, SqlType b) {
  auto rank = [](SqlType t) {
    switch (t) {
      case SqlType::kInt2:
        return 0;
      case SqlType::kInt4:
        return 1;
      case SqlType::kInt8:
        return 2;
      case SqlType::kNumeric:
        return 3;
      case SqlType::kFloat4:
        return 4;
      default:
        return 5;
    }
  };
  // Mixing floats with anything but float4 is done in float8, as PostgreSQL.
  if ((rank(a) >= 4 || rank(b) >= 4) && a != b) return SqlType::kFloat8;
  return rank(a) >= rank(b) ? a : b;
}

SqlType datetime_max(SqlType a, SqlType b) {
  if (a == SqlType::kTimestamptz || b == SqlType::kTimestamptz) return SqlType::kTimestamptz;
  if (a == SqlType::kTimestamp || b == SqlType::kTimestamp) return SqlType::kTimestamp;
  return SqlType::kDate;
}

// The type both operands of `op` are brought to, as PostgreSQL's operator
// resolution would pick for the supported types.
SqlType common_type(SqlType a, SqlType b, std::string_view op) {
  if (a == SqlType::kOther || b == SqlType::kOther)
    fail("operator " + std::string(op) +
         " is not supported for this column type (only IS [NOT] NULL and ::text are)");
  if (a == SqlType::kUnknown && b == SqlType::kUnknown) return SqlType::kText;
  if (a == SqlType::kUnknown) return b == SqlType::kVarchar ? SqlType::kText : b;
  if (b == SqlType::kUnknown) return a == SqlType::kVarchar ? SqlType::kText : a;
  if (a == b) return a;
  if (is_numeric_family(a) && is_numeric_family(b)) return numeric_rank_max(a, b);
  if (is_text_type(a) && is_text_type(b)) return SqlType::kText;
  if (is_datetime_type(a) && is_datetime_type(b)) return datetime_max(a, b);
  fail("operator " + std::string(op) + " is not supported between " + type_name(a) + " and " +
       type_name(b));
}

class TreeBuilder {
 public:
  TreeBuilder(std::string_view source, const std::vector<ColumnInfo>& columns,
              const std::map<int, std::string>& params)
      : source_(source), columns_(columns), params_(params) {}

  ExprPtr build_root(const json& node) {
    ExprPtr root = coerce(build(node), SqlType::kBool, "the where clause");
    for (const auto& [number, value] : params_)
      if (!used_params_.count(number))
        fail("parameter $" + std::to_string(number) + " is not used in the where clause");
    return root;
  }

 private:
  ExprPtr build(const json& node) {
    if (!node.is_object() || node.size() != 1) fail("where clause is malformed");
    const std::string& kind = node.begin().key();
    const json& body = node.begin().value();
    const bool typed_literal = kind == "TypeCast" && body.is_object() && body.contains("arg") &&
                               body["arg"].is_object() && body["arg"].contains("A_Const");
    const int levels = typed_literal ? 0 : 1;
    depth_ += levels;
    if (depth_ > kMaxDepth) fail("where clause is nested too deeply");
    ExprPtr out = build_node(kind, body);
    depth_ -= levels;
    return out;
  }

  ExprPtr build_node(const std::string& kind, const json& body) {
    if (kind == "ColumnRef") return build_column(body);
    if (kind == "A_Const") return build_const(body);
    if (kind == "ParamRef") return build_param(body);
    if (kind == "TypeCast") return build_cast(body);
    if (kind == "A_Expr") return build_a_expr(body);
    if (kind == "BoolExpr") return build_bool_expr(body);
    if (kind == "NullTest") return build_null_test(body);
    if (kind == "BooleanTest") return build_boolean_test(body);
    if (kind == "FuncCall") return build_func_call(body);
    if (kind == "CoalesceExpr") return build_coalesce(body);
    std::string_view description = unsupported_node_description(kind);
    if (!description.empty()) fail(std::string(description));
    fail("expressions of kind " + kind + " are not supported");
  }

  // --- leaves ---------------------------------------------------------------

  ExprPtr build_column(const json& body) {
    const json& fields = body.at("fields");
    if (fields.size() != 1) fail("qualified column names are not supported");
    if (!fields[0].contains("String")) fail("* is not supported");
    std::string name = string_value(fields[0]);
    auto it = std::find_if(columns_.begin(), columns_.end(),
                           [&](const ColumnInfo& c) { return c.name == name; });
    if (it == columns_.end()) fail("unknown column " + dquote(name));
    auto e = std::make_unique<Expr>(ExprKind::kColumn);
    e->column_index = static_cast<int>(it - columns_.begin());
    e->column_name = name;
    e->type = sql_type_from_name(it->type).value_or(SqlType::kOther);
    return e;
  }

  ExprPtr build_const(const json& body) {
    if (body.value("isnull", false)) return make_const(SqlType::kUnknown, std::monostate{});
    if (body.contains("ival")) {
      const json& ival = body.at("ival");
      int64_t v = ival.contains("ival")
                      ? ival.at("ival").get<int64_t>()
                      : recover_nonpositive_int(source_, body.value("location", 0));
      return make_const(SqlType::kInt4, v);
    }
    if (body.contains("fval"))
      return build_numeric_literal(body.at("fval").value("fval", std::string()));
    if (body.contains("sval"))
      return make_const(SqlType::kUnknown, body.at("sval").value("sval", std::string()));
    if (body.contains("boolval"))
      return make_const(SqlType::kBool, body.at("boolval").value("boolval", false));
    if (body.contains("bsval")) fail("bit string literals are not supported");
    fail("constant is malformed");
  }

  ExprPtr build_numeric_literal(const std::string& text) {
    // Like PostgreSQL's make_const: integral values are int4 when they fit, else int8.
    if (is_integral_literal(text)) {
      if (auto i = parse_datum(SqlType::kInt8, text)) {
        bool fits_int4 = fits_integer_type(SqlType::kInt4, std::get<int64_t>(*i));
        return make_const(fits_int4 ? SqlType::kInt4 : SqlType::kInt8, *i);
      }
    }
    if (auto n = parse_datum(SqlType::kNumeric, text)) return make_const(SqlType::kNumeric, *n);
    // Beyond our 38-digit numeric: keep it as float8 (both the evaluator and
    // the rendered SQL then compare in float8).
    if (auto f = parse_datum(SqlType::kFloat8, text)) return make_const(SqlType::kFloat8, *f);
    fail("numeric literal " + text + " is outside the supported range");
  }

  ExprPtr build_param(const json& body) {
    int number = body.value("number", 0);
    auto it = params_.find(number);
    if (number < 1 || it == params_.end())
      fail("parameter $" + std::to_string(number) + " has no value");
    used_params_.insert(number);
    ExprPtr e = make_const(SqlType::kUnknown, it->second);
    e->param_number = number;
    return e;
  }

  // --- casts and coercion ------------------------------------------------------

  ExprPtr build_cast(const json& body) {
    SqlType target = cast_target_type(body.at("typeName"));
    ExprPtr arg = build(body.at("arg"));
    return explicit_cast(std::move(arg), target);
  }

  SqlType cast_target_type(const json& type_name) {
    std::string name = unqualified_name(type_name.at("names"), "type");
    if (type_name.contains("arrayBounds")) fail("casts to array types are not supported");
    if (type_name.contains("typmods"))
      fail("type modifiers in casts (e.g. varchar(10)) are not supported");
    if (type_name.value("setof", false) || type_name.value("pct_type", false))
      fail("cast type is not supported");
    auto type = sql_type_from_name(name);
    if (!type) fail("cast to " + name + " is not supported");
    return *type;
  }

  // Columns of other types may be cast to text when that equals their text
  // output (json, jsonb, arrays); other casts need a supported source type.
  bool other_column_castable_to_text(const Expr& arg) const {
    if (arg.kind != ExprKind::kColumn) return false;
    const std::string& t = columns_[static_cast<size_t>(arg.column_index)].type;
    return t == "json" || t == "jsonb" || (!t.empty() && t[0] == '_');
  }

  ExprPtr explicit_cast(ExprPtr arg, SqlType target) {
    if (arg->type == SqlType::kOther) {
      if (!is_text_type(target) || !other_column_castable_to_text(*arg))
        fail("cannot cast column " + dquote(arg->column_name) + " of type " +
             columns_[static_cast<size_t>(arg->column_index)].type + " to " + type_name(target));
    } else if (!can_cast(arg->type, target)) {
      fail("cannot cast " + type_name(arg->type) + " to " + type_name(target));
    }
    if (arg->kind == ExprKind::kConst) return convert_const(std::move(arg), target);
    ExprPtr cast = make_node(ExprKind::kCast, target, expr_list(std::move(arg)));
    return cast;
  }

  ExprPtr convert_const(ExprPtr c, SqlType target) {
    auto converted = cast_datum(c->value, c->type, target);
    if (!converted) {
      std::string text = c->type == SqlType::kUnknown ? std::get<std::string>(c->value)
                                                      : format_datum(c->type, c->value);
      if (c->param_number > 0)
        fail("parameter $" + std::to_string(c->param_number) + " value " + dquote(text) +
             " is not a valid " + type_name(target));
      fail("invalid " + type_name(target) + " value " + dquote(text));
    }
    c->value = std::move(*converted);
    c->type = target;
    return c;
  }

  // Converts to `target` the way PostgreSQL would implicitly: untyped
  // literals/parameters take the type, numbers and date/times widen.
  ExprPtr coerce(ExprPtr e, SqlType target, std::string_view context) {
    if (e->type == target) return e;
    if (is_text_type(e->type) && is_text_type(target)) return e;
    bool allowed = e->type == SqlType::kUnknown ||
                   (is_numeric_family(e->type) && is_numeric_family(target)) ||
                   (is_datetime_type(e->type) && is_datetime_type(target));
    if (!allowed)
      fail(std::string(context) + " must be type " + type_name(target) + ", not " +
           (e->type == SqlType::kOther ? columns_[static_cast<size_t>(e->column_index)].type
                                       : type_name(e->type)));
    if (e->kind == ExprKind::kConst) return convert_const(std::move(e), target);
    ExprPtr cast = make_node(ExprKind::kCast, target, expr_list(std::move(e)));
    cast->implicit = true;
    return cast;
  }

  void coerce_all(std::vector<ExprPtr>& args, SqlType target, std::string_view context) {
    for (auto& a : args) a = coerce(std::move(a), target, context);
  }

  SqlType common_type_of(const std::vector<ExprPtr>& args, std::string_view op) {
    SqlType t = args[0]->type;
    for (size_t i = 1; i < args.size(); ++i) t = common_type(t, args[i]->type, op);
    if (t == SqlType::kUnknown) t = SqlType::kText;
    return t;
  }

  // --- operators -----------------------------------------------------------------

  ExprPtr build_a_expr(const json& body) {
    std::string kind = body.at("kind").get<std::string>();
    std::string op = unqualified_name(body.at("name"), "operator");
    if (kind == "AEXPR_OP") return build_operator(op, body);
    if (kind == "AEXPR_DISTINCT" || kind == "AEXPR_NOT_DISTINCT")
      return build_distinct(kind == "AEXPR_NOT_DISTINCT", body);
    if (kind == "AEXPR_IN") return build_in(op == "<>", body);
    if (kind == "AEXPR_LIKE" || kind == "AEXPR_ILIKE")
      return build_like(kind == "AEXPR_ILIKE", op[0] == '!', body);
    if (kind.rfind("AEXPR_BETWEEN", 0) == 0 || kind.rfind("AEXPR_NOT_BETWEEN", 0) == 0)
      return build_between(kind.rfind("AEXPR_NOT", 0) == 0, kind.find("_SYM") != std::string::npos,
                           body);
    if (kind == "AEXPR_OP_ANY" || kind == "AEXPR_OP_ALL")
      fail("ANY/ALL are not supported (use IN (...))");
    if (kind == "AEXPR_NULLIF") fail("NULLIF is not supported");
    if (kind == "AEXPR_SIMILAR") fail("SIMILAR TO is not supported");
    fail("operator " + op + " is not supported");
  }

  ExprPtr build_operator(const std::string& op, const json& body) {
    if (!body.contains("lexpr")) return build_prefix_operator(op, body.at("rexpr"));
    if (!body.contains("rexpr")) fail("postfix operator " + op + " is not supported");
    static const std::pair<std::string_view, CompareOp> kCompare[] = {
        {"=", CompareOp::kEq}, {"<>", CompareOp::kNe}, {"!=", CompareOp::kNe},
        {"<", CompareOp::kLt}, {"<=", CompareOp::kLe}, {">", CompareOp::kGt},
        {">=", CompareOp::kGe}};
    for (const auto& [name, cmp] : kCompare)
      if (op == name) return build_compare(cmp, op, body);
    static const std::pair<std::string_view, ArithOp> kArith[] = {{"+", ArithOp::kAdd},
                                                                  {"-", ArithOp::kSub},
                                                                  {"*", ArithOp::kMul},
                                                                  {"/", ArithOp::kDiv},
                                                                  {"%", ArithOp::kMod}};
    for (const auto& [name, arith] : kArith)
      if (op == name) return build_arith(arith, op, body);
    if (op == "||") return build_concat(body);
    fail("operator " + op + " is not supported");
  }

  ExprPtr build_prefix_operator(const std::string& op, const json& operand) {
    if (op != "-" && op != "+") fail("prefix operator " + op + " is not supported");
    ExprPtr arg = build(operand);
    if (!is_numeric_family(arg->type))
      fail("operator " + op + " is not supported for type " + type_name(arg->type));
    if (op == "+") return arg;
    if (arg->kind == ExprKind::kConst) return negate_const(std::move(arg));
    SqlType t = arg->type;
    return make_node(ExprKind::kNegate, t, expr_list(std::move(arg)));
  }

  // Folds -constant so that `- +-3` and `3` are the same tree (and text).
  static ExprPtr negate_const(ExprPtr c) {
    if (const auto* i = std::get_if<int64_t>(&c->value)) {
      if (!fits_integer_type(c->type, -static_cast<__int128>(*i)))
        fail("integer constant out of range");
      c->value = -*i;
    } else if (const auto* n = std::get_if<Numeric>(&c->value)) {
      c->value = numeric_neg(*n);
    } else if (const auto* f = std::get_if<double>(&c->value)) {
      c->value = -*f;
    }
    return c;
  }

  ExprPtr build_compare(CompareOp cmp, const std::string& op, const json& body) {
    std::vector<ExprPtr> args = expr_list(build(body.at("lexpr")), build(body.at("rexpr")));
    SqlType t = common_type_of(args, op);
    coerce_all(args, t, "operand of " + op);
    ExprPtr e = make_node(ExprKind::kCompare, SqlType::kBool, std::move(args));
    e->compare_op = cmp;
    return e;
  }

  ExprPtr build_distinct(bool not_distinct, const json& body) {
    std::vector<ExprPtr> args = expr_list(build(body.at("lexpr")), build(body.at("rexpr")));
    SqlType t = common_type_of(args, "IS DISTINCT FROM");
    coerce_all(args, t, "operand of IS DISTINCT FROM");
    ExprPtr e = make_node(ExprKind::kDistinct, SqlType::kBool, std::move(args));
    e->negated = not_distinct;
    return e;
  }

  ExprPtr build_arith(ArithOp arith, const std::string& op, const json& body) {
    std::vector<ExprPtr> args = expr_list(build(body.at("lexpr")), build(body.at("rexpr")));
    SqlType a = args[0]->type, b = args[1]->type;
    bool numeric_operands = (is_numeric_family(a) || a == SqlType::kUnknown) &&
                            (is_numeric_family(b) || b == SqlType::kUnknown) &&
                            !(a == SqlType::kUnknown && b == SqlType::kUnknown);
    if (!numeric_operands)
      fail("operator " + op + " is not supported between " + type_name(a) + " and " + type_name(b));
    SqlType t = common_type(a, b, op);
    if (arith == ArithOp::kMod && (t == SqlType::kFloat4 || t == SqlType::kFloat8))
      fail("operator % is not supported for " + type_name(t));
    coerce_all(args, t, "operand of " + op);
    ExprPtr e = make_node(ExprKind::kArith, t, std::move(args));
    e->arith_op = arith;
    return e;
  }

  static bool concat_operand_ok(SqlType t) {
    return is_text_type(t) || t == SqlType::kUnknown || is_numeric_family(t) ||
           is_datetime_type(t) || t == SqlType::kUuid;
  }

  // text || anything-with-a-text-output (PostgreSQL's textanycat).
  ExprPtr build_concat(const json& body) {
    std::vector<ExprPtr> args = expr_list(build(body.at("lexpr")), build(body.at("rexpr")));
    SqlType a = args[0]->type, b = args[1]->type;
    bool has_text =
        is_text_type(a) || is_text_type(b) || a == SqlType::kUnknown || b == SqlType::kUnknown;
    if (!has_text || !concat_operand_ok(a) || !concat_operand_ok(b))
      fail("operator || is not supported between " + type_name(a) + " and " + type_name(b));
    for (auto& arg : args) {
      if (arg->type == SqlType::kUnknown || is_text_type(arg->type)) {
        arg = coerce(std::move(arg), SqlType::kText, "operand of ||");
      } else if (arg->kind == ExprKind::kConst) {
        arg = convert_const(std::move(arg), SqlType::kText);
      } else {
        arg = make_node(ExprKind::kCast, SqlType::kText, expr_list(std::move(arg)));
        arg->implicit = true;
      }
    }
    return make_node(ExprKind::kConcat, SqlType::kText, std::move(args));
  }

  std::vector<ExprPtr> build_list(const json& node, std::string_view what) {
    if (!node.contains("List")) fail(std::string(what) + " needs a parenthesised list");
    std::vector<ExprPtr> out;
    for (const auto& item : node.at("List").value("items", json::array()))
      out.push_back(build(item));
    return out;
  }

  ExprPtr build_in(bool negated, const json& body) {
    std::vector<ExprPtr> args;
    args.push_back(build(body.at("lexpr")));
    if (!body.at("rexpr").contains("List"))
      fail("IN needs a list of values; subqueries are not supported");
    for (auto& item : build_list(body.at("rexpr"), "IN")) args.push_back(std::move(item));
    if (args.size() < 2) fail("IN needs at least one value");
    SqlType t = common_type_of(args, "IN");
    coerce_all(args, t, "value of IN");
    ExprPtr e = make_node(ExprKind::kIn, SqlType::kBool, std::move(args));
    e->negated = negated;
    return e;
  }

  ExprPtr build_between(bool negated, bool symmetric, const json& body) {
    std::vector<ExprPtr> args;
    args.push_back(build(body.at("lexpr")));
    for (auto& item : build_list(body.at("rexpr"), "BETWEEN")) args.push_back(std::move(item));
    if (args.size() != 3) fail("BETWEEN is malformed");
    SqlType t = common_type_of(args, "BETWEEN");
    coerce_all(args, t, "operand of BETWEEN");
    ExprPtr e = make_node(ExprKind::kBetween, SqlType::kBool, std::move(args));
    e->negated = negated;
    e->symmetric = symmetric;
    return e;
  }

  // `x LIKE p ESCAPE e` arrives as x ~~ like_escape(p, e).
  ExprPtr build_like(bool case_insensitive, bool negated, const json& body) {
    std::vector<ExprPtr> args;
    args.push_back(build(body.at("lexpr")));
    const json& rexpr = body.at("rexpr");
    if (rexpr.contains("FuncCall") &&
        unqualified_name(rexpr.at("FuncCall").at("funcname"), "function") == "like_escape") {
      const json& escape_args = rexpr.at("FuncCall").value("args", json::array());
      if (escape_args.size() != 2) fail("ESCAPE is malformed");
      args.push_back(build(escape_args[0]));
      args.push_back(build(escape_args[1]));
    } else {
      args.push_back(build(rexpr));
    }
    std::string op = case_insensitive ? "ILIKE" : "LIKE";
    for (const auto& a : args)
      if (!is_text_type(a->type) && a->type != SqlType::kUnknown)
        fail(op + " is not supported for type " +
             (a->type == SqlType::kOther ? columns_[static_cast<size_t>(a->column_index)].type
                                         : type_name(a->type)));
    coerce_all(args, SqlType::kText, "operand of " + op);
    ExprPtr e = make_node(ExprKind::kLike, SqlType::kBool, std::move(args));
    e->negated = negated;
    e->case_insensitive = case_insensitive;
    return e;
  }

  // --- boolean forms ------------------------------------------------------------------

  ExprPtr build_bool_expr(const json& body) {
    std::string op = body.at("boolop").get<std::string>();
    ExprKind kind = op == "AND_EXPR"  ? ExprKind::kAnd
                    : op == "OR_EXPR" ? ExprKind::kOr
                                      : ExprKind::kNot;
    std::string_view name = kind == ExprKind::kAnd ? "AND" : kind == ExprKind::kOr ? "OR" : "NOT";
    std::vector<ExprPtr> args;
    for (const auto& a : body.at("args")) args.push_back(build(a));
    if (args.empty() || (kind == ExprKind::kNot && args.size() != 1))
      fail("boolean expression is malformed");
    coerce_all(args, SqlType::kBool, "argument of " + std::string(name));
    return make_node(kind, SqlType::kBool, std::move(args));
  }

  ExprPtr build_null_test(const json& body) {
    ExprPtr arg = build(body.at("arg"));
    if (arg->type == SqlType::kUnknown) arg = coerce(std::move(arg), SqlType::kText, "IS NULL");
    ExprPtr e = make_node(ExprKind::kIsNull, SqlType::kBool, expr_list(std::move(arg)));
    e->negated = body.at("nulltesttype").get<std::string>() == "IS_NOT_NULL";
    return e;
  }

  ExprPtr build_boolean_test(const json& body) {
    static const std::pair<std::string_view, BoolTestKind> kTests[] = {
        {"IS_TRUE", BoolTestKind::kIsTrue},       {"IS_NOT_TRUE", BoolTestKind::kIsNotTrue},
        {"IS_FALSE", BoolTestKind::kIsFalse},     {"IS_NOT_FALSE", BoolTestKind::kIsNotFalse},
        {"IS_UNKNOWN", BoolTestKind::kIsUnknown}, {"IS_NOT_UNKNOWN", BoolTestKind::kIsNotUnknown}};
    std::string test = body.at("booltesttype").get<std::string>();
    ExprPtr arg = coerce(build(body.at("arg")), SqlType::kBool, "argument of IS " + test);
    ExprPtr e = make_node(ExprKind::kBoolTest, SqlType::kBool, expr_list(std::move(arg)));
    for (const auto& [name, kind] : kTests)
      if (test == name) e->bool_test = kind;
    return e;
  }

  // --- functions -------------------------------------------------------------------------

  ExprPtr build_func_call(const json& body) {
    std::string name = unqualified_name(body.at("funcname"), "function");
    if (body.contains("over")) fail("window functions are not supported");
    if (body.value("agg_star", false) || body.value("agg_distinct", false) ||
        body.contains("agg_order") || body.contains("agg_filter") ||
        body.value("agg_within_group", false) || is_aggregate_name(name))
      fail("aggregate functions are not supported");
    if (body.value("func_variadic", false)) fail("VARIADIC is not supported");
    std::vector<ExprPtr> args;
    for (const auto& a : body.value("args", json::array())) args.push_back(build(a));
    return build_function(name, std::move(args));
  }

  void expect_arg_count(const std::string& name, const std::vector<ExprPtr>& args, size_t min,
                        size_t max) {
    if (args.size() < min || args.size() > max)
      fail("function " + name + " expects " + std::to_string(min) +
           (max > min ? " or " + std::to_string(max) : std::string()) + " argument" +
           (max > 1 ? "s" : ""));
  }

  ExprPtr build_function(const std::string& name, std::vector<ExprPtr> args) {
    static const std::pair<std::string_view, Func> kFuncs[] = {{"lower", Func::kLower},
                                                               {"upper", Func::kUpper},
                                                               {"length", Func::kLength},
                                                               {"char_length", Func::kLength},
                                                               {"character_length", Func::kLength},
                                                               {"abs", Func::kAbs},
                                                               {"btrim", Func::kBtrim},
                                                               {"ltrim", Func::kLtrim},
                                                               {"rtrim", Func::kRtrim}};
    auto it = std::find_if(std::begin(kFuncs), std::end(kFuncs),
                           [&](const auto& f) { return f.first == name; });
    if (it == std::end(kFuncs)) fail("function " + name + " is not supported");
    Func func = it->second;
    SqlType result = SqlType::kText;
    if (func == Func::kAbs) {
      expect_arg_count(name, args, 1, 1);
      if (!is_numeric_family(args[0]->type))
        fail("function abs needs a numeric argument, not " + type_name(args[0]->type));
      result = args[0]->type;
    } else {
      bool trim = func == Func::kBtrim || func == Func::kLtrim || func == Func::kRtrim;
      expect_arg_count(name, args, 1, trim ? 2 : 1);
      coerce_all(args, SqlType::kText, "argument of " + name);
      if (func == Func::kLength) result = SqlType::kInt4;
    }
    ExprPtr e = make_node(ExprKind::kFunc, result, std::move(args));
    e->func = func;
    return e;
  }

  ExprPtr build_coalesce(const json& body) {
    std::vector<ExprPtr> args;
    for (const auto& a : body.at("args")) args.push_back(build(a));
    if (args.empty()) fail("COALESCE needs arguments");
    SqlType t = common_type_of(args, "COALESCE");
    coerce_all(args, t, "argument of COALESCE");
    return make_node(ExprKind::kCoalesce, t, std::move(args));
  }

  std::string_view source_;
  const std::vector<ColumnInfo>& columns_;
  const std::map<int, std::string>& params_;
  std::set<int> used_params_;
  int depth_ = 0;
};

// Frees a libpg_query result on scope exit.
struct ParseResultGuard {
  PgQueryParseResult result;
  ~ParseResultGuard() { pg_query_free_parse_result(result); }
};

// Electric's wording: `At location N: syntax error at or near "x"`, N being
// libpg_query's cursor position in the wrapped `SELECT 1 WHERE <text>` (as
// Electric reports it; clients and tests compare these texts).
std::string syntax_error_message(const PgQueryError& error) {
  std::string message = error.message ? error.message : "syntax error";
  if (error.cursorpos > 0)
    message = "At location " + std::to_string(error.cursorpos) + ": " + message;
  return message;
}

// The statement must be exactly `SELECT 1 WHERE <expr>`; anything else in it
// (FROM, GROUP BY, ORDER BY, LIMIT, WINDOW, FOR UPDATE, UNION...) is refused.
const json& where_clause_of(const json& tree) {
  const json& stmts = tree.at("stmts");
  if (stmts.size() > 1)
    fail("where clause contains an unescaped ; (only a single expression is allowed)");
  if (stmts.size() == 1 && stmts[0].contains("stmt_len"))  // a trailing ;
    fail("where clause contains an unescaped ; (only a single expression is allowed)");
  if (stmts.size() != 1 || !stmts[0].at("stmt").contains("SelectStmt"))
    fail("where clause is malformed");
  const json& select = stmts[0].at("stmt").at("SelectStmt");
  static const std::set<std::string> kAllowedKeys = {"targetList", "whereClause", "limitOption",
                                                     "op"};
  for (const auto& [key, value] : select.items())
    if (!kAllowedKeys.count(key))
      fail(
          "where clause is malformed: it must be a single expression, without FROM, GROUP BY, "
          "ORDER BY, LIMIT, "
          "WINDOW or locking clauses");
  if (select.value("op", "") != "SETOP_NONE" ||
      select.value("limitOption", "") != "LIMIT_OPTION_DEFAULT" ||
      !select.contains("whereClause") || select.at("targetList").size() != 1)
    fail("where clause is malformed: it must be a single expression");
  return select.at("whereClause");
}

}  // namespace

Result<ExprPtr> parse_where_expression(std::string_view text,
                                       const std::vector<ColumnInfo>& columns,
                                       const std::map<int, std::string>& params) {
  auto error = [](std::string message) { return Error{kInvalidWhere, std::move(message), ""}; };
  if (text.find('\0') != std::string_view::npos) return error("where clause contains a NUL byte");
  if (text.size() > kMaxTextBytes) return error("where clause is too long");
  if (text.find_first_not_of(" \t\r\n\f\v") == std::string_view::npos)
    return error("where clause is empty");
  std::string source = std::string(kPrefix) + std::string(text);
  ParseResultGuard parsed{pg_query_parse(source.c_str())};
  if (parsed.result.error) return error(syntax_error_message(*parsed.result.error));
  try {
    json tree = json::parse(parsed.result.parse_tree);
    TreeBuilder builder(source, columns, params);
    return builder.build_root(where_clause_of(tree));
  } catch (const WhereError& e) {
    return error(e.message);
  } catch (const json::exception& e) {
    return error(std::string("where clause is malformed (") + e.what() + ")");
  }
}

}  // namespace shapeproxy::where
