// Shared internals of the where-clause value types (where_types.cpp,
// where_numeric.cpp, where_datetime.cpp, datum_compare.cpp): ASCII helpers
// and the per-family text input/output the public functions dispatch to.
// Not part of the module's interface.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <string_view>

#include "where/where_types.h"

namespace shapeproxy::where::detail {

using i128 = __int128;
using u128 = unsigned __int128;

constexpr int64_t kMicrosPerDay = 86'400'000'000LL;
constexpr int64_t kMinusInfinity = std::numeric_limits<int64_t>::min();
constexpr int64_t kPlusInfinity = std::numeric_limits<int64_t>::max();
constexpr int kMaxNumericScale = 1000;
// PostgreSQL's date/timestamp range ends: 4713 BC and 294276 AD.
constexpr int64_t kMinYear = -4712;
constexpr int64_t kMaxYear = 294276;

inline char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }
inline bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
inline bool is_digit(char c) { return c >= '0' && c <= '9'; }

inline std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

inline bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  return true;
}

inline bool istarts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

inline std::optional<i128> pow10(int exponent) {
  if (exponent < 0 || exponent > 38) return std::nullopt;
  i128 v = 1;
  for (int i = 0; i < exponent; ++i) v *= 10;
  return v;
}

inline std::optional<i128> checked_mul(i128 a, i128 b) {
  i128 out;
  if (__builtin_mul_overflow(a, b, &out)) return std::nullopt;
  return out;
}

inline std::string int128_to_string(i128 v) {
  if (v == 0) return "0";
  bool negative = v < 0;
  u128 magnitude = negative ? -static_cast<u128>(v) : static_cast<u128>(v);
  std::string out;
  while (magnitude > 0) {
    out.push_back(static_cast<char>('0' + static_cast<int>(magnitude % 10)));
    magnitude /= 10;
  }
  if (negative) out.push_back('-');
  return {out.rbegin(), out.rend()};
}

inline int digit_count(i128 v) {
  u128 m = v < 0 ? -static_cast<u128>(v) : static_cast<u128>(v);
  int n = 1;
  while (m >= 10) {
    m /= 10;
    ++n;
  }
  return n;
}

inline int64_t floor_div(int64_t a, int64_t b) {
  return a / b - ((a % b != 0) && ((a < 0) != (b < 0)));
}

// integers of `type`'s range (where_types.cpp)
std::optional<int64_t> parse_integer(std::string_view text, SqlType type);

// numeric (where_numeric.cpp)
std::optional<Numeric> parse_numeric(std::string_view text);
std::string format_numeric(const Numeric& n);
int compare_numeric(Numeric a, Numeric b);
// Rounds half away from zero; nullopt when out of the range of `to`.
std::optional<Datum> numeric_to_integer(const Numeric& n, SqlType to);

// dates and timestamps (where_datetime.cpp)
std::optional<Date> parse_date(std::string_view text);
std::optional<Timestamp> parse_timestamp(std::string_view text, bool with_zone);
std::string format_date(const Date& d);
std::string format_timestamp(const Timestamp& t, bool with_zone);
Timestamp date_to_timestamp(const Date& d);
Date timestamp_to_date(const Timestamp& t);

}  // namespace shapeproxy::where::detail
