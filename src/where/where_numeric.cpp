// numeric: exact decimal text input/output, comparison and arithmetic with
// PostgreSQL's display-scale rules, on a 128-bit mantissa.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <tuple>

#include "where/where_types.h"
#include "where/where_types_internal.h"

namespace shapeproxy::where {
using namespace detail;
namespace {

// --- numeric -----------------------------------------------------------------

std::optional<Numeric> parse_special_numeric(std::string_view s) {
  Numeric n;
  if (iequals(s, "nan")) {
    n.kind = Numeric::Kind::kNaN;
    return n;
  }
  bool negative = !s.empty() && s[0] == '-';
  if (!s.empty() && (s[0] == '-' || s[0] == '+')) s.remove_prefix(1);
  if (iequals(s, "infinity") || iequals(s, "inf")) {
    n.kind = negative ? Numeric::Kind::kNegInf : Numeric::Kind::kPosInf;
    return n;
  }
  return std::nullopt;
}

// Brings a and b to the same scale; false when that overflows.
bool align_scales(Numeric& a, Numeric& b) {
  Numeric& lower = a.scale < b.scale ? a : b;
  int target = std::max(a.scale, b.scale);
  auto factor = pow10(target - lower.scale);
  auto scaled = factor ? checked_mul(lower.mantissa, *factor) : std::nullopt;
  if (!scaled) return false;
  lower.mantissa = *scaled;
  lower.scale = target;
  return true;
}

int special_rank(const Numeric& n) {
  switch (n.kind) {
    case Numeric::Kind::kNegInf:
      return -1;
    case Numeric::Kind::kFinite:
      return 0;
    case Numeric::Kind::kPosInf:
      return 1;
    case Numeric::Kind::kNaN:
      return 2;
  }
  return 0;
}

// Rounds num/den to the nearest integer, halves away from zero.
i128 rounded_div(i128 num, i128 den) {
  i128 q = num / den, r = num % den;
  u128 twice_r = (r < 0 ? -static_cast<u128>(r) : static_cast<u128>(r)) * 2;
  u128 abs_den = den < 0 ? -static_cast<u128>(den) : static_cast<u128>(den);
  if (twice_r >= abs_den) q += ((num < 0) != (den < 0)) ? -1 : 1;
  return q;
}

// PostgreSQL's NBASE (10000) weight and leading NBASE digit of a nonzero value.
std::pair<int, int64_t> nbase_weight_and_first_digit(const Numeric& n) {
  int decimal_exponent = digit_count(n.mantissa) - 1 - n.scale;
  int weight = static_cast<int>(floor_div(decimal_exponent, 4));
  int shift = n.scale + 4 * weight;
  u128 magnitude = n.mantissa < 0 ? -static_cast<u128>(n.mantissa) : static_cast<u128>(n.mantissa);
  u128 first = magnitude;
  for (int i = 0; i < shift; ++i) first /= 10;
  for (int i = 0; i > shift; --i) first *= 10;
  return {weight, static_cast<int64_t>(first)};
}

// PostgreSQL's select_div_scale: at least 16 significant digits.
int division_scale(const Numeric& a, const Numeric& b) {
  int w1 = 0, w2 = 0;
  int64_t d1 = 0, d2 = 0;
  if (a.mantissa != 0) std::tie(w1, d1) = nbase_weight_and_first_digit(a);
  if (b.mantissa != 0) std::tie(w2, d2) = nbase_weight_and_first_digit(b);
  int qweight = w1 - w2;
  if (d1 <= d2) --qweight;
  int rscale = 16 - qweight * 4;
  rscale = std::max({rscale, a.scale, b.scale, 0});
  return std::min(rscale, kMaxNumericScale);
}

}  // namespace

namespace detail {

std::optional<Numeric> parse_numeric(std::string_view text) {
  std::string_view s = trim(text);
  if (auto special = parse_special_numeric(s)) return special;
  bool negative = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  i128 mantissa = 0;
  int digits = 0, significant = 0, fraction_digits = 0;
  bool seen_point = false;
  size_t i = 0;
  for (; i < s.size(); ++i) {
    char c = s[i];
    if (c == '.' && !seen_point) {
      seen_point = true;
      continue;
    }
    if (!is_digit(c)) break;
    ++digits;
    if (seen_point) ++fraction_digits;
    if (mantissa != 0 || c != '0') ++significant;
    if (significant > 38) return std::nullopt;
    mantissa = mantissa * 10 + (c - '0');
  }
  if (digits == 0) return std::nullopt;
  int64_t exponent = 0;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    auto exp = parse_integer(s.substr(i + 1), SqlType::kInt4);
    if (!exp || *exp > kMaxNumericScale || *exp < -kMaxNumericScale) return std::nullopt;
    exponent = *exp;
    i = s.size();
  }
  if (i != s.size()) return std::nullopt;
  int64_t scale = fraction_digits - exponent;
  if (scale < 0) {
    auto factor = pow10(static_cast<int>(-scale));
    auto scaled = factor ? checked_mul(mantissa, *factor) : std::nullopt;
    if (!scaled) return std::nullopt;
    mantissa = *scaled;
    scale = 0;
  }
  if (scale > kMaxNumericScale) return std::nullopt;
  Numeric n;
  n.mantissa = negative ? -mantissa : mantissa;
  n.scale = static_cast<int>(scale);
  return n;
}

std::string format_numeric(const Numeric& n) {
  switch (n.kind) {
    case Numeric::Kind::kNaN:
      return "NaN";
    case Numeric::Kind::kPosInf:
      return "Infinity";
    case Numeric::Kind::kNegInf:
      return "-Infinity";
    case Numeric::Kind::kFinite:
      break;
  }
  std::string digits = int128_to_string(n.mantissa < 0 ? -n.mantissa : n.mantissa);
  if (n.scale > 0) {
    if (digits.size() <= static_cast<size_t>(n.scale))
      digits.insert(0, static_cast<size_t>(n.scale) - digits.size() + 1, '0');
    digits.insert(digits.size() - static_cast<size_t>(n.scale), 1, '.');
  }
  return (n.mantissa < 0 ? "-" : "") + digits;
}

int compare_numeric(Numeric a, Numeric b) {
  int ra = special_rank(a), rb = special_rank(b);
  if (ra != 0 || rb != 0) return ra < rb ? -1 : (ra > rb ? 1 : 0);
  if (!align_scales(a, b)) {
    // The operand that could not be scaled up is larger in magnitude than
    // anything the other can hold, so its sign decides.
    const Numeric& big = a.scale < b.scale ? a : b;
    bool big_is_a = &big == &a;
    int sign = big.mantissa < 0 ? -1 : 1;
    return big_is_a ? sign : -sign;
  }
  return a.mantissa < b.mantissa ? -1 : (a.mantissa > b.mantissa ? 1 : 0);
}

std::optional<Datum> numeric_to_integer(const Numeric& n, SqlType to) {
  if (n.kind != Numeric::Kind::kFinite) return std::nullopt;
  auto divisor = pow10(n.scale);
  if (!divisor)
    return numeric_to_integer(Numeric{Numeric::Kind::kFinite, 0, 0}, to);  // |v| < 1e-38
  i128 rounded = rounded_div(n.mantissa, *divisor);
  if (!fits_integer_type(to, rounded)) return std::nullopt;
  return static_cast<int64_t>(rounded);
}

}  // namespace detail

Numeric numeric_from_int(int64_t v) { return Numeric{Numeric::Kind::kFinite, v, 0}; }

Numeric numeric_neg(const Numeric& a) {
  Numeric out = a;
  if (a.kind == Numeric::Kind::kPosInf)
    out.kind = Numeric::Kind::kNegInf;
  else if (a.kind == Numeric::Kind::kNegInf)
    out.kind = Numeric::Kind::kPosInf;
  else
    out.mantissa = -a.mantissa;
  return out;
}

double numeric_to_double(const Numeric& n) {
  switch (n.kind) {
    case Numeric::Kind::kNaN:
      return std::numeric_limits<double>::quiet_NaN();
    case Numeric::Kind::kPosInf:
      return std::numeric_limits<double>::infinity();
    case Numeric::Kind::kNegInf:
      return -std::numeric_limits<double>::infinity();
    case Numeric::Kind::kFinite:
      break;
  }
  return std::strtod(format_numeric(n).c_str(), nullptr);
}

// Arithmetic on NaN yields NaN; on infinities we give up (evaluation error),
// which the caller treats as "row does not match".
#define SHAPEPROXY_NUMERIC_SPECIALS(a, b)                                 \
  if ((a).kind == Numeric::Kind::kNaN || (b).kind == Numeric::Kind::kNaN) \
    return Numeric{Numeric::Kind::kNaN, 0, 0};                            \
  if ((a).kind != Numeric::Kind::kFinite || (b).kind != Numeric::Kind::kFinite) return std::nullopt;

std::optional<Numeric> numeric_add(const Numeric& a, const Numeric& b) {
  SHAPEPROXY_NUMERIC_SPECIALS(a, b)
  Numeric x = a, y = b;
  if (!align_scales(x, y)) return std::nullopt;
  i128 sum;
  if (__builtin_add_overflow(x.mantissa, y.mantissa, &sum)) return std::nullopt;
  x.mantissa = sum;
  return x;
}

std::optional<Numeric> numeric_sub(const Numeric& a, const Numeric& b) {
  return numeric_add(a, numeric_neg(b));
}

std::optional<Numeric> numeric_mul(const Numeric& a, const Numeric& b) {
  SHAPEPROXY_NUMERIC_SPECIALS(a, b)
  auto product = checked_mul(a.mantissa, b.mantissa);
  if (!product || a.scale + b.scale > kMaxNumericScale) return std::nullopt;
  return Numeric{Numeric::Kind::kFinite, *product, a.scale + b.scale};
}

std::optional<Numeric> numeric_div(const Numeric& a, const Numeric& b) {
  SHAPEPROXY_NUMERIC_SPECIALS(a, b)
  if (b.mantissa == 0) return std::nullopt;  // division by zero
  int rscale = division_scale(a, b);
  int k = b.scale + rscale - a.scale;
  i128 num = a.mantissa, den = b.mantissa;
  if (k >= 0) {
    auto factor = pow10(k);
    auto scaled = factor ? checked_mul(num, *factor) : std::nullopt;
    if (!scaled) return std::nullopt;
    num = *scaled;
  } else {
    auto factor = pow10(-k);
    auto scaled = factor ? checked_mul(den, *factor) : std::nullopt;
    if (!scaled) return Numeric{Numeric::Kind::kFinite, 0, rscale};  // quotient rounds to 0
    den = *scaled;
  }
  return Numeric{Numeric::Kind::kFinite, rounded_div(num, den), rscale};
}

std::optional<Numeric> numeric_mod(const Numeric& a, const Numeric& b) {
  SHAPEPROXY_NUMERIC_SPECIALS(a, b)
  Numeric x = a, y = b;
  if (!align_scales(x, y) || y.mantissa == 0) return std::nullopt;
  x.mantissa = x.mantissa % y.mantissa;
  return x;
}

#undef SHAPEPROXY_NUMERIC_SPECIALS

}  // namespace shapeproxy::where
