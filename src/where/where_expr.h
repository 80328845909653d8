// The typed expression tree a where clause is parsed into. Built and
// type-checked by where_parser, read by where_eval (in-process evaluation)
// and where_sql (SQL rendering). Every node carries its SQL result type;
// untyped literals and parameters have already been converted to the type
// their context demands.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "where/where_types.h"

namespace shapeproxy::where {

enum class ExprKind {
  kColumn,    // column_index / column_name
  kConst,     // value (a literal or a bound $n parameter)
  kAnd,       // args...
  kOr,        // args...
  kNot,       // args[0]
  kCompare,   // args[0] compare_op args[1]
  kDistinct,  // args[0] IS [NOT] DISTINCT FROM args[1]; negated = NOT DISTINCT
  kIsNull,    // args[0] IS [NOT] NULL; negated = IS NOT NULL
  kBoolTest,  // args[0] IS [NOT] TRUE/FALSE/UNKNOWN
  kIn,        // args[0] [NOT] IN (args[1..])
  kBetween,   // args[0] [NOT] BETWEEN [SYMMETRIC] args[1] AND args[2]
  kLike,      // args[0] [NOT] [I]LIKE args[1] [ESCAPE args[2]]
  kArith,     // args[0] arith_op args[1]
  kNegate,    // -args[0]
  kConcat,    // args[0] || args[1]
  kCast,      // CAST(args[0] AS type); implicit casts are not rendered
  kFunc,      // func(args...)
  kCoalesce,  // COALESCE(args...)
};

enum class CompareOp { kEq, kNe, kLt, kLe, kGt, kGe };
enum class ArithOp { kAdd, kSub, kMul, kDiv, kMod };
enum class BoolTestKind { kIsTrue, kIsNotTrue, kIsFalse, kIsNotFalse, kIsUnknown, kIsNotUnknown };
enum class Func { kLower, kUpper, kLength, kAbs, kBtrim, kLtrim, kRtrim };

struct Expr {
  ExprKind kind;
  SqlType type = SqlType::kUnknown;
  std::vector<std::unique_ptr<Expr>> args;

  int column_index = -1;
  std::string column_name;
  Datum value;           // kConst
  int param_number = 0;  // kConst that came from $n (for error messages)

  CompareOp compare_op = CompareOp::kEq;
  ArithOp arith_op = ArithOp::kAdd;
  BoolTestKind bool_test = BoolTestKind::kIsTrue;
  Func func = Func::kLower;
  bool negated = false;           // NOT IN / NOT BETWEEN / NOT LIKE / IS NOT NULL / IS NOT DISTINCT
  bool symmetric = false;         // BETWEEN SYMMETRIC
  bool case_insensitive = false;  // ILIKE
  bool implicit = false;          // kCast inserted by the type checker

  explicit Expr(ExprKind k) : kind(k) {}
};

using ExprPtr = std::unique_ptr<Expr>;

std::string_view compare_op_sql(CompareOp op);
std::string_view arith_op_sql(ArithOp op);
std::string_view func_sql_name(Func f);

}  // namespace shapeproxy::where
