// SQL rendering of where-clause trees. Compound operands are parenthesised,
// so the output never depends on operator precedence. Text ordering,
// ILIKE and lower/upper get COLLATE "C" so PostgreSQL computes them exactly
// like the in-process evaluator (bytewise, ASCII-only case folding).
#include "where/where_sql.h"

#include "pg/connection.h"

namespace shapeproxy::where {

std::string_view compare_op_sql(CompareOp op) {
  switch (op) {
    case CompareOp::kEq:
      return "=";
    case CompareOp::kNe:
      return "<>";
    case CompareOp::kLt:
      return "<";
    case CompareOp::kLe:
      return "<=";
    case CompareOp::kGt:
      return ">";
    case CompareOp::kGe:
      return ">=";
  }
  return "=";
}

std::string_view arith_op_sql(ArithOp op) {
  switch (op) {
    case ArithOp::kAdd:
      return "+";
    case ArithOp::kSub:
      return "-";
    case ArithOp::kMul:
      return "*";
    case ArithOp::kDiv:
      return "/";
    case ArithOp::kMod:
      return "%";
  }
  return "+";
}

std::string_view func_sql_name(Func f) {
  switch (f) {
    case Func::kLower:
      return "lower";
    case Func::kUpper:
      return "upper";
    case Func::kLength:
      return "length";
    case Func::kAbs:
      return "abs";
    case Func::kBtrim:
      return "btrim";
    case Func::kLtrim:
      return "ltrim";
    case Func::kRtrim:
      return "rtrim";
  }
  return "lower";
}

namespace {

// Identifiers and canonical-form literals are quoted as libpq-side SQL is.
using pg::quote_identifier;
using pg::quote_literal;

class SqlRenderer {
 public:
  SqlRenderer(int first_param, std::vector<std::optional<std::string>>* bound)
      : next_param_(first_param), bound_(bound) {}

  // Placeholders are numbered in output order, so every function appends
  // left to right (the operands of `a + b` may be evaluated in any order).
  std::string render(const Expr& e) {
    std::string out;
    switch (e.kind) {
      case ExprKind::kColumn:
        return quote_identifier(e.column_name);
      case ExprKind::kConst:
        return render_const(e);
      case ExprKind::kAnd:
        return join(e, 0, " AND ");
      case ExprKind::kOr:
        return join(e, 0, " OR ");
      case ExprKind::kNot:
        return "NOT " + operand(*e.args[0]);
      case ExprKind::kCompare:
        return render_compare(e);
      case ExprKind::kDistinct:
        return binary(*e.args[0], e.negated ? " IS NOT DISTINCT FROM " : " IS DISTINCT FROM ",
                      *e.args[1]);
      case ExprKind::kIsNull:
        return operand(*e.args[0]) + (e.negated ? " IS NOT NULL" : " IS NULL");
      case ExprKind::kBoolTest:
        return operand(*e.args[0]) + bool_test_sql(e.bool_test);
      case ExprKind::kIn:
        out = operand(*e.args[0]);
        out += e.negated ? " NOT IN (" : " IN (";
        out += join(e, 1, ", ");
        return out + ")";
      case ExprKind::kBetween:
        return render_between(e);
      case ExprKind::kLike:
        return render_like(e);
      case ExprKind::kArith:
        return binary(*e.args[0], " " + std::string(arith_op_sql(e.arith_op)) + " ", *e.args[1]);
      case ExprKind::kNegate:
        return "- " + operand(*e.args[0]);
      case ExprKind::kConcat:
        return binary(*e.args[0], " || ", *e.args[1]);
      case ExprKind::kCast:
        if (e.implicit) return render(*e.args[0]);
        out = "CAST(" + render(*e.args[0]);
        return out + " AS " + std::string(sql_type_name(e.type)) + ")";
      case ExprKind::kFunc:
        return render_func(e);
      case ExprKind::kCoalesce:
        return "COALESCE(" + join(e, 0, ", ") + ")";
    }
    return out;
  }

 private:
  static bool is_atom(const Expr& e) {
    switch (e.kind) {
      case ExprKind::kColumn:
      case ExprKind::kConst:
      case ExprKind::kFunc:
      case ExprKind::kCoalesce:
        return true;
      case ExprKind::kCast:
        return !e.implicit || is_atom(*e.args[0]);
      default:
        return false;
    }
  }

  std::string operand(const Expr& e) { return is_atom(e) ? render(e) : "(" + render(e) + ")"; }

  // Operand whose comparison must use C collation (text ordering, ILIKE).
  // Only in executable SQL: the canonical text stays reparseable.
  std::string c_collated(const Expr& e) {
    if (!is_text_type(e.type) || bound_ == nullptr) return operand(e);
    return "(" + operand(e) + " COLLATE \"C\")";
  }

  std::string binary(const Expr& left, std::string_view op, const Expr& right) {
    std::string out = operand(left);
    out += op;
    return out + operand(right);
  }

  std::string join(const Expr& e, size_t from, std::string_view separator) {
    std::string out;
    for (size_t i = from; i < e.args.size(); ++i) {
      if (i > from) out += separator;
      out += separator == ", " ? render(*e.args[i]) : operand(*e.args[i]);
    }
    return out;
  }

  std::string render_const(const Expr& e) {
    std::string type(sql_type_name(e.type));
    if (bound_ != nullptr) {
      bound_->push_back(is_null(e.value)
                            ? std::nullopt
                            : std::optional<std::string>(format_datum(e.type, e.value)));
      return "$" + std::to_string(next_param_++) + "::" + type;
    }
    if (is_null(e.value)) return "NULL::" + type;
    if (e.type == SqlType::kBool) return std::get<bool>(e.value) ? "TRUE" : "FALSE";
    if (e.type == SqlType::kText) return quote_literal(std::get<std::string>(e.value));
    std::string text = format_datum(e.type, e.value);
    bool plain_number = (is_integer_type(e.type) || e.type == SqlType::kNumeric) &&
                        text.find_first_not_of("-0123456789.") == std::string::npos;
    if (!plain_number) return quote_literal(text) + "::" + type;
    if (text[0] == '-') text = "(" + text + ")";  // never "--", which starts a comment
    bool self_typed = e.type == SqlType::kInt4 ||
                      (e.type == SqlType::kNumeric && text.find('.') != std::string::npos);
    return self_typed ? text : text + "::" + type;
  }

  std::string render_compare(const Expr& e) {
    bool ordering = e.compare_op != CompareOp::kEq && e.compare_op != CompareOp::kNe;
    std::string out = ordering ? c_collated(*e.args[0]) : operand(*e.args[0]);
    out += " " + std::string(compare_op_sql(e.compare_op)) + " ";
    return out + operand(*e.args[1]);
  }

  std::string render_between(const Expr& e) {
    std::string out = c_collated(*e.args[0]);
    out += e.negated ? " NOT BETWEEN " : " BETWEEN ";
    if (e.symmetric) out += "SYMMETRIC ";
    out += operand(*e.args[1]);
    out += " AND ";
    return out + operand(*e.args[2]);
  }

  std::string render_like(const Expr& e) {
    std::string out = e.case_insensitive ? c_collated(*e.args[0]) : operand(*e.args[0]);
    out += e.negated ? " NOT" : "";
    out += e.case_insensitive ? " ILIKE " : " LIKE ";
    out += operand(*e.args[1]);
    if (e.args.size() > 2) out += " ESCAPE " + operand(*e.args[2]);
    return out;
  }

  std::string render_func(const Expr& e) {
    bool case_mapping = bound_ != nullptr && (e.func == Func::kLower || e.func == Func::kUpper);
    std::string out = std::string(func_sql_name(e.func)) + "(";
    for (size_t i = 0; i < e.args.size(); ++i) {
      if (i > 0) out += ", ";
      out += case_mapping ? operand(*e.args[i]) + " COLLATE \"C\"" : render(*e.args[i]);
    }
    return out + ")";
  }

  static std::string bool_test_sql(BoolTestKind kind) {
    switch (kind) {
      case BoolTestKind::kIsTrue:
        return " IS TRUE";
      case BoolTestKind::kIsNotTrue:
        return " IS NOT TRUE";
      case BoolTestKind::kIsFalse:
        return " IS FALSE";
      case BoolTestKind::kIsNotFalse:
        return " IS NOT FALSE";
      case BoolTestKind::kIsUnknown:
        return " IS UNKNOWN";
      case BoolTestKind::kIsNotUnknown:
        return " IS NOT UNKNOWN";
    }
    return "";
  }

  int next_param_;
  std::vector<std::optional<std::string>>* bound_;
};

}  // namespace

std::string render_sql(const Expr& e, int first_param,
                       std::vector<std::optional<std::string>>* bound) {
  return SqlRenderer(first_param, bound).render(e);
}

}  // namespace shapeproxy::where
