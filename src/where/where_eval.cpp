// Evaluation of where-clause trees. Values are parsed from the row's text on
// use; evaluation errors (PostgreSQL would raise) propagate as `false` from
// eval() and make the row not match. AND/OR stop at the first deciding
// argument, left to right, like PostgreSQL's executor.
#include "where/where_eval.h"

#include "where/datum_compare.h"

#include <algorithm>
#include <cmath>

namespace shapeproxy::where {
namespace {

enum class Truth { kFalse, kTrue, kNull };

Truth truth_of(const Datum& d) {
  if (is_null(d)) return Truth::kNull;
  return std::get<bool>(d) ? Truth::kTrue : Truth::kFalse;
}

Datum datum_of(Truth t) {
  if (t == Truth::kNull) return std::monostate{};
  return t == Truth::kTrue;
}

Truth truth_not(Truth t) {
  if (t == Truth::kNull) return t;
  return t == Truth::kTrue ? Truth::kFalse : Truth::kTrue;
}

Truth truth_and(Truth a, Truth b) {
  if (a == Truth::kFalse || b == Truth::kFalse) return Truth::kFalse;
  if (a == Truth::kNull || b == Truth::kNull) return Truth::kNull;
  return Truth::kTrue;
}

Truth truth_or(Truth a, Truth b) { return truth_not(truth_and(truth_not(a), truth_not(b))); }

Truth compare_truth(CompareOp op, SqlType type, const Datum& a, const Datum& b) {
  if (is_null(a) || is_null(b)) return Truth::kNull;
  int c = compare_datums(type, a, b);
  bool r = false;
  switch (op) {
    case CompareOp::kEq:
      r = c == 0;
      break;
    case CompareOp::kNe:
      r = c != 0;
      break;
    case CompareOp::kLt:
      r = c < 0;
      break;
    case CompareOp::kLe:
      r = c <= 0;
      break;
    case CompareOp::kGt:
      r = c > 0;
      break;
    case CompareOp::kGe:
      r = c >= 0;
      break;
  }
  return r ? Truth::kTrue : Truth::kFalse;
}

// --- UTF-8 helpers -------------------------------------------------------------

// Splits UTF-8 text into code points; invalid bytes become one "character"
// each (mapped above the Unicode range so they only equal themselves).
// `starts`, when given, receives each character's byte offset plus s.size().
std::vector<uint32_t> code_points(std::string_view s, std::vector<size_t>* starts = nullptr) {
  std::vector<uint32_t> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    if (starts) starts->push_back(i);
    auto b = static_cast<unsigned char>(s[i]);
    size_t len = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    bool valid = len > 0 && i + len <= s.size();
    for (size_t k = 1; valid && k < len; ++k)
      valid = (static_cast<unsigned char>(s[i + k]) & 0xC0) == 0x80;
    if (!valid) {
      out.push_back(0x110000u + b);
      ++i;
      continue;
    }
    uint32_t cp = len == 1 ? b : b & (0x7F >> len);
    for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    out.push_back(cp);
    i += len;
  }
  if (starts) starts->push_back(s.size());
  return out;
}

uint32_t fold_ascii(uint32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

std::string ascii_case(std::string s, bool upper) {
  for (char& c : s) {
    if (upper && c >= 'a' && c <= 'z') c = static_cast<char>(c - 32);
    if (!upper && c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  }
  return s;
}

int64_t char_length(std::string_view s) {
  int64_t n = 0;
  for (char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

// PostgreSQL btrim/ltrim/rtrim: removes characters in `chars` from the ends.
std::string trim_chars(std::string_view text, std::string_view chars, bool left, bool right) {
  std::vector<uint32_t> set = code_points(chars);
  auto in_set = [&](uint32_t c) { return std::find(set.begin(), set.end(), c) != set.end(); };
  std::vector<size_t> starts;  // byte offsets, so the result keeps the original bytes
  std::vector<uint32_t> cps = code_points(text, &starts);
  size_t first = 0, last = cps.size();
  while (left && first < last && in_set(cps[first])) ++first;
  while (right && last > first && in_set(cps[last - 1])) --last;
  return std::string(text.substr(starts[first], starts[last] - starts[first]));
}

// --- LIKE ------------------------------------------------------------------------

struct LikeToken {
  enum Kind { kLiteral, kAnyChar, kAnySequence } kind;
  uint32_t c = 0;
};

std::optional<std::vector<LikeToken>> tokenize_like(std::string_view pattern,
                                                    std::string_view escape,
                                                    bool case_insensitive) {
  std::vector<uint32_t> esc = code_points(escape);
  if (esc.size() > 1) return std::nullopt;  // "invalid escape string"
  std::vector<LikeToken> tokens;
  std::vector<uint32_t> cps = code_points(pattern);
  for (size_t i = 0; i < cps.size(); ++i) {
    uint32_t c = cps[i];
    if (!esc.empty() && c == esc[0]) {
      if (++i >= cps.size()) return std::nullopt;  // pattern ends with the escape character
      tokens.push_back({LikeToken::kLiteral, case_insensitive ? fold_ascii(cps[i]) : cps[i]});
    } else if (c == '%') {
      if (tokens.empty() || tokens.back().kind != LikeToken::kAnySequence)
        tokens.push_back({LikeToken::kAnySequence});
    } else if (c == '_') {
      tokens.push_back({LikeToken::kAnyChar});
    } else {
      tokens.push_back({LikeToken::kLiteral, case_insensitive ? fold_ascii(c) : c});
    }
  }
  return tokens;
}

// Classic wildcard matching with backtracking to the last %; O(n*m) worst case.
bool match_tokens(const std::vector<LikeToken>& tokens, const std::vector<uint32_t>& text) {
  size_t t = 0, p = 0, star_p = SIZE_MAX, star_t = 0;
  while (t < text.size()) {
    if (p < tokens.size() && tokens[p].kind == LikeToken::kAnySequence) {
      star_p = p++;
      star_t = t;
    } else if (p < tokens.size() &&
               (tokens[p].kind == LikeToken::kAnyChar || tokens[p].c == text[t])) {
      ++p;
      ++t;
    } else if (star_p != SIZE_MAX) {
      p = star_p + 1;
      t = ++star_t;
    } else {
      return false;
    }
  }
  while (p < tokens.size() && tokens[p].kind == LikeToken::kAnySequence) ++p;
  return p == tokens.size();
}

// --- arithmetic ----------------------------------------------------------------------

std::optional<Datum> integer_arith(ArithOp op, SqlType type, int64_t a, int64_t b) {
  __int128 x = a, y = b, r = 0;
  switch (op) {
    case ArithOp::kAdd:
      r = x + y;
      break;
    case ArithOp::kSub:
      r = x - y;
      break;
    case ArithOp::kMul:
      r = x * y;
      break;
    case ArithOp::kDiv:
      if (y == 0) return std::nullopt;
      r = x / y;  // truncates toward zero, as PostgreSQL
      break;
    case ArithOp::kMod:
      if (y == 0) return std::nullopt;
      r = x % y;
      break;
  }
  if (!fits_integer_type(type, r)) return std::nullopt;  // "integer out of range"
  return static_cast<int64_t>(r);
}

std::optional<Datum> float_arith(ArithOp op, SqlType type, double a, double b) {
  double r = 0;
  switch (op) {
    case ArithOp::kAdd:
      r = a + b;
      break;
    case ArithOp::kSub:
      r = a - b;
      break;
    case ArithOp::kMul:
      r = a * b;
      break;
    case ArithOp::kDiv:
      if (b == 0) return std::nullopt;
      r = a / b;
      break;
    case ArithOp::kMod:
      return std::nullopt;
  }
  if (type == SqlType::kFloat4) r = static_cast<double>(static_cast<float>(r));
  // PostgreSQL raises "value out of range" on overflow and underflow.
  if (std::isinf(r) && !std::isinf(a) && !std::isinf(b)) return std::nullopt;
  if (r == 0 && (op == ArithOp::kMul || op == ArithOp::kDiv) && a != 0 &&
      (op == ArithOp::kDiv || b != 0) && !std::isinf(b))
    return std::nullopt;
  return r;
}

std::optional<Datum> numeric_arith(ArithOp op, const Numeric& a, const Numeric& b) {
  std::optional<Numeric> r;
  switch (op) {
    case ArithOp::kAdd:
      r = numeric_add(a, b);
      break;
    case ArithOp::kSub:
      r = numeric_sub(a, b);
      break;
    case ArithOp::kMul:
      r = numeric_mul(a, b);
      break;
    case ArithOp::kDiv:
      r = numeric_div(a, b);
      break;
    case ArithOp::kMod:
      r = numeric_mod(a, b);
      break;
  }
  if (!r) return std::nullopt;
  return *r;
}

std::optional<Datum> arith(ArithOp op, SqlType type, const Datum& a, const Datum& b) {
  if (is_null(a) || is_null(b)) return Datum{};
  if (is_integer_type(type))
    return integer_arith(op, type, std::get<int64_t>(a), std::get<int64_t>(b));
  if (type == SqlType::kNumeric)
    return numeric_arith(op, std::get<Numeric>(a), std::get<Numeric>(b));
  return float_arith(op, type, std::get<double>(a), std::get<double>(b));
}

std::optional<Datum> negate(SqlType type, const Datum& a) {
  if (is_null(a)) return a;
  if (is_integer_type(type)) {
    __int128 r = -static_cast<__int128>(std::get<int64_t>(a));
    if (!fits_integer_type(type, r)) return std::nullopt;
    return static_cast<int64_t>(r);
  }
  if (type == SqlType::kNumeric) return numeric_neg(std::get<Numeric>(a));
  return -std::get<double>(a);
}

std::optional<Datum> absolute(SqlType type, const Datum& a) {
  if (is_null(a)) return a;
  if (const auto* i = std::get_if<int64_t>(&a)) return *i < 0 ? negate(type, a) : a;
  if (const auto* n = std::get_if<Numeric>(&a)) {
    bool negative =
        n->kind == Numeric::Kind::kNegInf || (n->kind == Numeric::Kind::kFinite && n->mantissa < 0);
    return negative ? Datum{numeric_neg(*n)} : a;
  }
  return std::fabs(std::get<double>(a));
}

// --- evaluator ------------------------------------------------------------------------------

class Evaluator {
 public:
  explicit Evaluator(const RowValues& row) : row_(row) {}

  // False when PostgreSQL would have raised an error.
  bool eval(const Expr& e, Datum& out) {
    switch (e.kind) {
      case ExprKind::kColumn:
        return eval_column(e, out);
      case ExprKind::kConst:
        out = e.value;
        return true;
      case ExprKind::kAnd:
      case ExprKind::kOr:
        return eval_and_or(e, out);
      case ExprKind::kNot:
        return eval_unary(e, out, [](const Datum& v) { return datum_of(truth_not(truth_of(v))); });
      case ExprKind::kCompare:
        return eval_compare(e, out);
      case ExprKind::kDistinct:
        return eval_distinct(e, out);
      case ExprKind::kIsNull:
        return eval_unary(e, out, [&e](const Datum& v) { return Datum{is_null(v) != e.negated}; });
      case ExprKind::kBoolTest:
        return eval_unary(
            e, out, [&e](const Datum& v) { return Datum{bool_test(e.bool_test, truth_of(v))}; });
      case ExprKind::kIn:
        return eval_in(e, out);
      case ExprKind::kBetween:
        return eval_between(e, out);
      case ExprKind::kLike:
        return eval_like(e, out);
      case ExprKind::kArith:
        return eval_arith(e, out);
      case ExprKind::kNegate:
        return eval_negate(e, out);
      case ExprKind::kConcat:
        return eval_concat(e, out);
      case ExprKind::kCast:
        return eval_cast(e, out);
      case ExprKind::kFunc:
        return eval_func(e, out);
      case ExprKind::kCoalesce:
        return eval_coalesce(e, out);
    }
    return false;
  }

 private:
  static bool bool_test(BoolTestKind kind, Truth t) {
    switch (kind) {
      case BoolTestKind::kIsTrue:
        return t == Truth::kTrue;
      case BoolTestKind::kIsNotTrue:
        return t != Truth::kTrue;
      case BoolTestKind::kIsFalse:
        return t == Truth::kFalse;
      case BoolTestKind::kIsNotFalse:
        return t != Truth::kFalse;
      case BoolTestKind::kIsUnknown:
        return t == Truth::kNull;
      case BoolTestKind::kIsNotUnknown:
        return t != Truth::kNull;
    }
    return false;
  }

  bool eval_column(const Expr& e, Datum& out) {
    auto index = static_cast<size_t>(e.column_index);
    if (index >= row_.size() || !row_[index]) {
      out = std::monostate{};
      return true;
    }
    auto parsed = parse_datum(e.type, *row_[index]);
    if (!parsed) return false;
    out = std::move(*parsed);
    return true;
  }

  template <typename F>
  bool eval_unary(const Expr& e, Datum& out, F f) {
    Datum v;
    if (!eval(*e.args[0], v)) return false;
    out = f(v);
    return true;
  }

  bool eval_args(const Expr& e, std::vector<Datum>& values) {
    values.resize(e.args.size());
    for (size_t i = 0; i < e.args.size(); ++i)
      if (!eval(*e.args[i], values[i])) return false;
    return true;
  }

  bool eval_and_or(const Expr& e, Datum& out) {
    bool is_and = e.kind == ExprKind::kAnd;
    Truth decisive = is_and ? Truth::kFalse : Truth::kTrue;
    bool saw_null = false;
    for (const auto& arg : e.args) {
      Datum v;
      if (!eval(*arg, v)) return false;
      Truth t = truth_of(v);
      if (t == decisive) {
        out = datum_of(decisive);
        return true;
      }
      saw_null |= t == Truth::kNull;
    }
    out = datum_of(saw_null ? Truth::kNull : truth_not(decisive));
    return true;
  }

  bool eval_compare(const Expr& e, Datum& out) {
    std::vector<Datum> v;
    if (!eval_args(e, v)) return false;
    out = datum_of(compare_truth(e.compare_op, e.args[0]->type, v[0], v[1]));
    return true;
  }

  bool eval_distinct(const Expr& e, Datum& out) {
    std::vector<Datum> v;
    if (!eval_args(e, v)) return false;
    bool distinct = is_null(v[0]) || is_null(v[1])
                        ? is_null(v[0]) != is_null(v[1])
                        : compare_datums(e.args[0]->type, v[0], v[1]) != 0;
    out = distinct != e.negated;
    return true;
  }

  // x IN (a, b): TRUE if some item equals x; else NULL if x or any item is NULL.
  bool eval_in(const Expr& e, Datum& out) {
    std::vector<Datum> v;
    if (!eval_args(e, v)) return false;
    Truth result = Truth::kFalse;
    for (size_t i = 1; i < v.size() && result != Truth::kTrue; ++i)
      result = truth_or(result, compare_truth(CompareOp::kEq, e.args[0]->type, v[0], v[i]));
    out = datum_of(e.negated ? truth_not(result) : result);
    return true;
  }

  // As PostgreSQL expands it: x >= a AND x <= b (SYMMETRIC: either order).
  bool eval_between(const Expr& e, Datum& out) {
    std::vector<Datum> v;
    if (!eval_args(e, v)) return false;
    SqlType t = e.args[0]->type;
    auto within = [&](const Datum& lo, const Datum& hi) {
      return truth_and(compare_truth(CompareOp::kGe, t, v[0], lo),
                       compare_truth(CompareOp::kLe, t, v[0], hi));
    };
    Truth result = within(v[1], v[2]);
    if (e.symmetric) result = truth_or(result, within(v[2], v[1]));
    out = datum_of(e.negated ? truth_not(result) : result);
    return true;
  }

  bool eval_like(const Expr& e, Datum& out) {
    std::vector<Datum> v;
    if (!eval_args(e, v)) return false;
    for (const auto& d : v)
      if (is_null(d)) {
        out = std::monostate{};
        return true;
      }
    std::string_view escape = v.size() > 2 ? std::string_view(std::get<std::string>(v[2])) : "\\";
    auto matched = like_match(std::get<std::string>(v[0]), std::get<std::string>(v[1]), escape,
                              e.case_insensitive);
    if (!matched) return false;
    out = *matched != e.negated;
    return true;
  }

  bool eval_arith(const Expr& e, Datum& out) {
    std::vector<Datum> v;
    if (!eval_args(e, v)) return false;
    auto r = arith(e.arith_op, e.type, v[0], v[1]);
    if (!r) return false;
    out = std::move(*r);
    return true;
  }

  bool eval_negate(const Expr& e, Datum& out) {
    Datum v;
    if (!eval(*e.args[0], v)) return false;
    auto r = negate(e.type, v);
    if (!r) return false;
    out = std::move(*r);
    return true;
  }

  bool eval_concat(const Expr& e, Datum& out) {
    std::vector<Datum> v;
    if (!eval_args(e, v)) return false;
    if (is_null(v[0]) || is_null(v[1]))
      out = std::monostate{};
    else
      out = std::get<std::string>(v[0]) + std::get<std::string>(v[1]);
    return true;
  }

  bool eval_cast(const Expr& e, Datum& out) {
    Datum v;
    if (!eval(*e.args[0], v)) return false;
    auto r = cast_datum(v, e.args[0]->type, e.type);
    if (!r) return false;
    out = std::move(*r);
    return true;
  }

  bool eval_func(const Expr& e, Datum& out) {
    std::vector<Datum> v;
    if (!eval_args(e, v)) return false;
    for (const auto& d : v)
      if (is_null(d)) {
        out = std::monostate{};
        return true;
      }
    if (e.func == Func::kAbs) {
      auto r = absolute(e.type, v[0]);
      if (!r) return false;
      out = std::move(*r);
      return true;
    }
    const std::string& s = std::get<std::string>(v[0]);
    std::string_view chars = v.size() > 1 ? std::string_view(std::get<std::string>(v[1])) : " ";
    switch (e.func) {
      case Func::kLower:
        out = ascii_case(s, false);
        break;
      case Func::kUpper:
        out = ascii_case(s, true);
        break;
      case Func::kLength:
        out = char_length(s);
        break;
      case Func::kBtrim:
        out = trim_chars(s, chars, true, true);
        break;
      case Func::kLtrim:
        out = trim_chars(s, chars, true, false);
        break;
      case Func::kRtrim:
        out = trim_chars(s, chars, false, true);
        break;
      case Func::kAbs:
        break;
    }
    return true;
  }

  bool eval_coalesce(const Expr& e, Datum& out) {
    for (const auto& arg : e.args) {
      if (!eval(*arg, out)) return false;
      if (!is_null(out)) return true;
    }
    out = std::monostate{};
    return true;
  }

  const RowValues& row_;
};

}  // namespace

std::optional<bool> like_match(std::string_view text, std::string_view pattern,
                               std::string_view escape, bool case_insensitive) {
  auto tokens = tokenize_like(pattern, escape, case_insensitive);
  if (!tokens) return std::nullopt;
  std::vector<uint32_t> cps = code_points(text);
  if (case_insensitive)
    for (auto& c : cps) c = fold_ascii(c);
  return match_tokens(*tokens, cps);
}

bool evaluate_predicate(const Expr& root, const RowValues& row) {
  Evaluator evaluator(row);
  Datum result;
  if (!evaluator.eval(root, result)) return false;
  return truth_of(result) == Truth::kTrue;
}

}  // namespace shapeproxy::where
