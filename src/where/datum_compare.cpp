// The equality and ordering rule of where-clause values, in one place:
// compare_datums (what where_eval's comparisons use) and canonical_datum_key
// (what ShapeIndex keys shapes by) must agree, so they live side by side.
#include "where/datum_compare.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "where/where_types_internal.h"

namespace shapeproxy::where {
using namespace detail;
namespace {

int compare_float(double a, double b) {
  bool na = std::isnan(a), nb = std::isnan(b);
  if (na || nb) return na == nb ? 0 : (na ? 1 : -1);
  return a < b ? -1 : (a > b ? 1 : 0);
}

}  // namespace

int compare_datums(SqlType type, const Datum& a, const Datum& b) {
  (void)type;
  return std::visit(
      [&b](const auto& x) -> int {
        using V = std::decay_t<decltype(x)>;
        const auto* y = std::get_if<V>(&b);
        if (y == nullptr) return 0;  // type checker guarantees same kinds
        if constexpr (std::is_same_v<V, std::monostate>)
          return 0;
        else if constexpr (std::is_same_v<V, Numeric>)
          return compare_numeric(x, *y);
        else if constexpr (std::is_same_v<V, double>)
          return compare_float(x, *y);
        else if constexpr (std::is_same_v<V, std::string>) {
          int c = x.compare(*y);  // char_traits<char>: bytewise, unsigned = C collation
          return c < 0 ? -1 : (c > 0 ? 1 : 0);
        } else if constexpr (std::is_same_v<V, Date>)
          return x.days < y->days ? -1 : (x.days > y->days ? 1 : 0);
        else if constexpr (std::is_same_v<V, Timestamp>)
          return x.micros < y->micros ? -1 : (x.micros > y->micros ? 1 : 0);
        else if constexpr (std::is_same_v<V, Uuid>)
          return std::memcmp(x.bytes.data(), y->bytes.data(), 16) < 0
                     ? -1
                     : (x.bytes == y->bytes ? 0 : 1);
        else
          return x < *y ? -1 : (*y < x ? 1 : 0);
      },
      a);
}

std::string canonical_datum_key(SqlType type, const Datum& value) {
  (void)type;
  return std::visit(
      [](const auto& x) -> std::string {
        using V = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<V, std::monostate>) {
          return "N";
        } else if constexpr (std::is_same_v<V, bool>) {
          return x ? "t" : "f";
        } else if constexpr (std::is_same_v<V, int64_t>) {
          return std::to_string(x);
        } else if constexpr (std::is_same_v<V, Numeric>) {
          switch (x.kind) {
            case Numeric::Kind::kNaN:
              return "NaN";
            case Numeric::Kind::kPosInf:
              return "+Inf";
            case Numeric::Kind::kNegInf:
              return "-Inf";
            case Numeric::Kind::kFinite:
              break;
          }
          // 1.0 = 1 = 1.00: strip trailing zeros so equal values share one form.
          __int128 mantissa = x.mantissa;
          int scale = x.scale;
          while (scale < 0) {
            mantissa *= 10;
            ++scale;
          }
          while (scale > 0 && mantissa % 10 == 0) {
            mantissa /= 10;
            --scale;
          }
          if (mantissa == 0) return "0";
          bool negative = mantissa < 0;
          unsigned __int128 magnitude = negative ? -static_cast<unsigned __int128>(mantissa)
                                                 : static_cast<unsigned __int128>(mantissa);
          std::string digits;
          while (magnitude > 0) {
            digits.push_back(static_cast<char>('0' + static_cast<int>(magnitude % 10)));
            magnitude /= 10;
          }
          if (negative) digits.push_back('-');
          std::reverse(digits.begin(), digits.end());
          return digits + "e-" + std::to_string(scale);
        } else if constexpr (std::is_same_v<V, double>) {
          // PostgreSQL: NaN = NaN, -0 = 0; otherwise equal means identical bits.
          if (std::isnan(x)) return "NaN";
          if (x == 0) return "0";
          std::string bits(sizeof(double), '\0');
          std::memcpy(bits.data(), &x, sizeof(double));
          return bits;
        } else if constexpr (std::is_same_v<V, std::string>) {
          return x;  // bytewise, as compare_datums (C collation)
        } else if constexpr (std::is_same_v<V, Date>) {
          return std::to_string(x.days);
        } else if constexpr (std::is_same_v<V, Timestamp>) {
          return std::to_string(x.micros);
        } else if constexpr (std::is_same_v<V, Uuid>) {
          return std::string(reinterpret_cast<const char*>(x.bytes.data()), x.bytes.size());
        }
      },
      value);
}

}  // namespace shapeproxy::where
