// Text input/output, casts and comparison for the where-clause value types,
// following PostgreSQL's behaviour for the supported subset (session
// TimeZone = UTC, text compared bytewise = C collation).
#include "shapes/where_types.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <tuple>

namespace shapeproxy::shapes {
namespace {

using i128 = __int128;
using u128 = unsigned __int128;

constexpr int64_t kMicrosPerDay = 86'400'000'000LL;
constexpr int64_t kMinusInfinity = std::numeric_limits<int64_t>::min();
constexpr int64_t kPlusInfinity = std::numeric_limits<int64_t>::max();
constexpr int kMaxNumericScale = 1000;
// PostgreSQL's date/timestamp range ends: 4713 BC and 294276 AD.
constexpr int64_t kMinYear = -4712;
constexpr int64_t kMaxYear = 294276;

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }
bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  return true;
}

bool istarts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

std::optional<i128> pow10(int exponent) {
  if (exponent < 0 || exponent > 38) return std::nullopt;
  i128 v = 1;
  for (int i = 0; i < exponent; ++i) v *= 10;
  return v;
}

std::optional<i128> checked_mul(i128 a, i128 b) {
  i128 out;
  if (__builtin_mul_overflow(a, b, &out)) return std::nullopt;
  return out;
}

std::string int128_to_string(i128 v) {
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

int digit_count(i128 v) {
  u128 m = v < 0 ? -static_cast<u128>(v) : static_cast<u128>(v);
  int n = 1;
  while (m >= 10) {
    m /= 10;
    ++n;
  }
  return n;
}

int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

// --- integers ----------------------------------------------------------------

std::optional<int64_t> parse_integer(std::string_view text, SqlType type) {
  std::string_view s = trim(text);
  bool negative = false;
  if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s.empty() || s.size() > 20) return std::nullopt;
  i128 value = 0;
  for (char c : s) {
    if (!is_digit(c)) return std::nullopt;
    value = value * 10 + (c - '0');
  }
  if (negative) value = -value;
  if (!fits_integer_type(type, value)) return std::nullopt;
  return static_cast<int64_t>(value);
}

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

// --- floats ------------------------------------------------------------------

std::optional<double> parse_float(std::string_view text, bool is_float4) {
  std::string s(trim(text));
  if (s.empty()) return std::nullopt;
  std::string_view body = s;
  bool negative = body[0] == '-';
  if (body[0] == '-' || body[0] == '+') body.remove_prefix(1);
  if (iequals(body, "nan")) return std::numeric_limits<double>::quiet_NaN();
  if (iequals(body, "infinity") || iequals(body, "inf"))
    return negative ? -std::numeric_limits<double>::infinity()
                    : std::numeric_limits<double>::infinity();
  char* end = nullptr;
  errno = 0;
  double value =
      is_float4 ? static_cast<double>(std::strtof(s.c_str(), &end)) : std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || end == s.c_str()) return std::nullopt;
  if (errno == ERANGE) return std::nullopt;                         // PostgreSQL: "out of range"
  if (std::isnan(value) || std::isinf(value)) return std::nullopt;  // e.g. hex forms of nan
  return value;
}

// PostgreSQL's shortest-exact float output (extra_float_digits = 1).
std::string format_float(double value, bool is_float4) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "Infinity" : "-Infinity";
  char buf[64];
  auto result = is_float4
                    ? std::to_chars(buf, buf + sizeof buf, static_cast<float>(value),
                                    std::chars_format::scientific)
                    : std::to_chars(buf, buf + sizeof buf, value, std::chars_format::scientific);
  std::string_view sci(buf, static_cast<size_t>(result.ptr - buf));
  bool negative = sci[0] == '-';
  if (negative) sci.remove_prefix(1);
  size_t e_pos = sci.find('e');
  std::string digits;
  for (char c : sci.substr(0, e_pos))
    if (c != '.') digits.push_back(c);
  int exponent = std::atoi(std::string(sci.substr(e_pos + 1)).c_str());
  int threshold = is_float4 ? 6 : 15;
  std::string out = negative ? "-" : "";
  if (exponent < -4 || exponent >= threshold) {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char exp_buf[16];
    std::snprintf(exp_buf, sizeof exp_buf, "e%c%02d", exponent < 0 ? '-' : '+', std::abs(exponent));
    return out + exp_buf;
  }
  if (exponent < 0)
    return out + "0." + std::string(static_cast<size_t>(-exponent - 1), '0') + digits;
  size_t int_digits = static_cast<size_t>(exponent) + 1;
  if (digits.size() <= int_digits)
    return out + digits + std::string(int_digits - digits.size(), '0');
  return out + digits.substr(0, int_digits) + "." + digits.substr(int_digits);
}

int compare_float(double a, double b) {
  bool na = std::isnan(a), nb = std::isnan(b);
  if (na || nb) return na == nb ? 0 : (na ? 1 : -1);
  return a < b ? -1 : (a > b ? 1 : 0);
}

// --- bool / uuid ---------------------------------------------------------------

std::optional<bool> parse_bool(std::string_view text) {
  std::string_view s = trim(text);
  if (s.empty()) return std::nullopt;
  auto prefix_of = [&](std::string_view word, size_t min_len) {
    return s.size() >= min_len && s.size() <= word.size() && iequals(s, word.substr(0, s.size()));
  };
  if (prefix_of("true", 1) || prefix_of("yes", 1) || prefix_of("on", 2) || s == "1") return true;
  if (prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) || s == "0") return false;
  return std::nullopt;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  c = ascii_lower(c);
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

// PostgreSQL's string_to_uuid: optional braces, a hyphen allowed after any
// group of four hex digits.
std::optional<Uuid> parse_uuid(std::string_view s) {
  bool braces = !s.empty() && s.front() == '{';
  if (braces) s.remove_prefix(1);
  Uuid out{};
  size_t pos = 0;
  for (int i = 0; i < 16; ++i) {
    if (pos + 2 > s.size()) return std::nullopt;
    int hi = hex_value(s[pos]), lo = hex_value(s[pos + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.bytes[static_cast<size_t>(i)] = static_cast<uint8_t>(hi * 16 + lo);
    pos += 2;
    if (i % 2 == 1 && i < 15 && pos < s.size() && s[pos] == '-') ++pos;
  }
  if (braces) {
    if (pos >= s.size() || s[pos] != '}') return std::nullopt;
    ++pos;
  }
  if (pos != s.size()) return std::nullopt;
  return out;
}

std::string format_uuid(const Uuid& u) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(kHex[u.bytes[i] >> 4]);
    out.push_back(kHex[u.bytes[i] & 15]);
  }
  return out;
}

// --- dates and timestamps --------------------------------------------------------

// Howard Hinnant's days_from_civil / civil_from_days (proleptic Gregorian,
// astronomical years: 1 BC = year 0), as PostgreSQL uses.
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

struct Civil {
  int64_t year;
  unsigned month, day;
};

Civil civil_from_days(int64_t z) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t y = static_cast<int64_t>(yoe) + era * 400;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  return {y + (m <= 2), m, d};
}

bool is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

unsigned days_in_month(int64_t y, unsigned m) {
  static const unsigned kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap(y) ? 29 : kDays[m - 1];
}

// Reads exactly `min..max` digits at s[pos].
std::optional<int64_t> read_digits(std::string_view s, size_t& pos, size_t min, size_t max) {
  size_t start = pos;
  int64_t v = 0;
  while (pos < s.size() && is_digit(s[pos]) && pos - start < max) v = v * 10 + (s[pos++] - '0');
  if (pos - start < min) return std::nullopt;
  return v;
}

struct ParsedDateTime {
  int64_t days = 0;
  int64_t micros_of_day = 0;
  int64_t zone_offset_seconds = 0;  // east of UTC
  int special = 0;                  // -1 = -infinity, 1 = infinity
};

std::optional<ParsedDateTime> parse_special_datetime(std::string_view s, bool allow_epoch) {
  ParsedDateTime out;
  if (iequals(s, "infinity") || iequals(s, "+infinity"))
    out.special = 1;
  else if (iequals(s, "-infinity"))
    out.special = -1;
  else if (allow_epoch && iequals(s, "epoch"))
    out.days = 0;
  else
    return std::nullopt;
  return out;
}

bool parse_zone(std::string_view s, size_t& pos, int64_t& offset_seconds) {
  if (s[pos] == 'Z' || s[pos] == 'z') {
    ++pos;
    offset_seconds = 0;
    return true;
  }
  if (istarts_with(s.substr(pos), "UTC")) {
    pos += 3;
    offset_seconds = 0;
    return true;
  }
  if (s[pos] != '+' && s[pos] != '-') return false;
  int sign = s[pos++] == '-' ? -1 : 1;
  auto hours = read_digits(s, pos, 1, 2);
  if (!hours) return false;
  int64_t minutes = 0, seconds = 0;
  if (pos < s.size() && s[pos] == ':') {
    ++pos;
    auto m = read_digits(s, pos, 2, 2);
    if (!m) return false;
    minutes = *m;
    if (pos < s.size() && s[pos] == ':') {
      ++pos;
      auto sec = read_digits(s, pos, 2, 2);
      if (!sec) return false;
      seconds = *sec;
    }
  } else if (pos + 1 < s.size() && is_digit(s[pos])) {
    auto m = read_digits(s, pos, 2, 2);
    if (!m) return false;
    minutes = *m;
  }
  if (*hours > 15 || minutes > 59 || seconds > 59) return false;
  offset_seconds = sign * (*hours * 3600 + minutes * 60 + seconds);
  return true;
}

// HH:MM[:SS[.ffffff]], rounding fractions to microseconds like PostgreSQL.
bool parse_time_of_day(std::string_view s, size_t& pos, int64_t& micros) {
  auto h = read_digits(s, pos, 1, 2);
  if (!h || pos >= s.size() || s[pos] != ':') return false;
  ++pos;
  auto m = read_digits(s, pos, 2, 2);
  if (!m) return false;
  int64_t sec = 0, frac = 0;
  if (pos < s.size() && s[pos] == ':') {
    ++pos;
    auto sv = read_digits(s, pos, 2, 2);
    if (!sv) return false;
    sec = *sv;
    if (pos < s.size() && s[pos] == '.') {
      ++pos;
      size_t start = pos;
      int64_t scale = 1'000'000;
      while (pos < s.size() && is_digit(s[pos])) {
        int digit = s[pos] - '0';
        if (scale > 1) {
          scale /= 10;
          frac += digit * scale;
        } else if (pos - start == 6 && digit >= 5) {
          frac += 1;
        }
        ++pos;
      }
    }
  }
  if (*m > 59 || sec > 60) return false;
  if (*h > 24 || (*h == 24 && (*m != 0 || sec != 0 || frac != 0))) return false;
  micros = ((*h * 60 + *m) * 60 + sec) * 1'000'000 + frac;
  return true;
}

// ISO 8601 dates and timestamps: YYYY-MM-DD[( |T)HH:MM[:SS[.f]]][zone][ BC].
std::optional<ParsedDateTime> parse_iso_datetime(std::string_view text, bool allow_time) {
  std::string_view s = trim(text);
  if (auto special = parse_special_datetime(s, allow_time)) return special;
  ParsedDateTime out;
  size_t pos = 0;
  auto year = read_digits(s, pos, 1, 7);
  if (!year || pos >= s.size() || s[pos++] != '-') return std::nullopt;
  auto month = read_digits(s, pos, 1, 2);
  if (!month || pos >= s.size() || s[pos++] != '-') return std::nullopt;
  auto day = read_digits(s, pos, 1, 2);
  if (!day) return std::nullopt;
  bool bc = false, seen_time = false, seen_zone = false;
  while (pos < s.size()) {
    size_t before = pos;
    while (pos < s.size() && is_space(s[pos])) ++pos;
    if (pos >= s.size()) break;
    if (istarts_with(s.substr(pos), "BC") && !bc) {
      bc = true;
      pos += 2;
    } else if (istarts_with(s.substr(pos), "AD") && !bc) {
      pos += 2;
    } else if (allow_time && !seen_time && (pos > before || s[pos] == 'T' || s[pos] == 't')) {
      if (s[pos] == 'T' || s[pos] == 't') ++pos;
      if (!parse_time_of_day(s, pos, out.micros_of_day)) return std::nullopt;
      seen_time = true;
    } else if (allow_time && seen_time && !seen_zone &&
               parse_zone(s, pos, out.zone_offset_seconds)) {
      seen_zone = true;
    } else {
      return std::nullopt;
    }
  }
  if (*year == 0) return std::nullopt;
  int64_t astronomical_year = bc ? 1 - *year : *year;
  if (astronomical_year < kMinYear || astronomical_year > kMaxYear) return std::nullopt;
  if (*month < 1 || *month > 12) return std::nullopt;
  if (*day < 1 || *day > days_in_month(astronomical_year, static_cast<unsigned>(*month)))
    return std::nullopt;
  out.days = days_from_civil(astronomical_year, static_cast<unsigned>(*month),
                             static_cast<unsigned>(*day));
  return out;
}

std::optional<Date> parse_date(std::string_view text) {
  auto parsed = parse_iso_datetime(text, false);
  if (!parsed) return std::nullopt;
  if (parsed->special) return Date{parsed->special < 0 ? kMinusInfinity : kPlusInfinity};
  return Date{parsed->days};
}

std::optional<Timestamp> parse_timestamp(std::string_view text, bool with_zone) {
  auto parsed = parse_iso_datetime(text, true);
  if (!parsed) return std::nullopt;
  if (parsed->special) return Timestamp{parsed->special < 0 ? kMinusInfinity : kPlusInfinity};
  i128 micros = static_cast<i128>(parsed->days) * kMicrosPerDay + parsed->micros_of_day;
  // timestamp without time zone ignores a zone in its input, like PostgreSQL.
  if (with_zone) micros -= static_cast<i128>(parsed->zone_offset_seconds) * 1'000'000;
  if (micros <= kMinusInfinity || micros >= kPlusInfinity) return std::nullopt;
  return Timestamp{static_cast<int64_t>(micros)};
}

std::string format_civil_date(int64_t days, bool& bc) {
  Civil c = civil_from_days(days);
  bc = c.year <= 0;
  int64_t shown_year = bc ? 1 - c.year : c.year;
  char buf[48];
  std::snprintf(buf, sizeof buf, "%04lld-%02u-%02u", static_cast<long long>(shown_year), c.month,
                c.day);
  return buf;
}

std::string format_date(const Date& d) {
  if (d.days == kMinusInfinity) return "-infinity";
  if (d.days == kPlusInfinity) return "infinity";
  bool bc = false;
  std::string out = format_civil_date(d.days, bc);
  return bc ? out + " BC" : out;
}

std::string format_timestamp(const Timestamp& t, bool with_zone) {
  if (t.micros == kMinusInfinity) return "-infinity";
  if (t.micros == kPlusInfinity) return "infinity";
  int64_t days = floor_div(t.micros, kMicrosPerDay);
  int64_t rest = t.micros - days * kMicrosPerDay;
  bool bc = false;
  std::string out = format_civil_date(days, bc);
  int64_t secs = rest / 1'000'000, frac = rest % 1'000'000;
  char buf[32];
  std::snprintf(buf, sizeof buf, " %02lld:%02lld:%02lld", static_cast<long long>(secs / 3600),
                static_cast<long long>(secs / 60 % 60), static_cast<long long>(secs % 60));
  out += buf;
  if (frac != 0) {
    std::snprintf(buf, sizeof buf, ".%06lld", static_cast<long long>(frac));
    std::string f = buf;
    while (f.back() == '0') f.pop_back();
    out += f;
  }
  if (with_zone) out += "+00";
  return bc ? out + " BC" : out;
}

Timestamp date_to_timestamp(const Date& d) {
  if (d.days == kMinusInfinity || d.days == kPlusInfinity) return Timestamp{d.days};
  return Timestamp{d.days * kMicrosPerDay};
}

Date timestamp_to_date(const Timestamp& t) {
  if (t.micros == kMinusInfinity || t.micros == kPlusInfinity) return Date{t.micros};
  return Date{floor_div(t.micros, kMicrosPerDay)};
}

// --- casts between families ----------------------------------------------------------

std::optional<Datum> numeric_to_integer(const Numeric& n, SqlType to) {
  if (n.kind != Numeric::Kind::kFinite) return std::nullopt;
  auto divisor = pow10(n.scale);
  if (!divisor)
    return numeric_to_integer(Numeric{Numeric::Kind::kFinite, 0, 0}, to);  // |v| < 1e-38
  i128 rounded = rounded_div(n.mantissa, *divisor);
  if (!fits_integer_type(to, rounded)) return std::nullopt;
  return static_cast<int64_t>(rounded);
}

std::optional<Datum> float_to_integer(double v, SqlType to) {
  if (std::isnan(v) || std::isinf(v)) return std::nullopt;
  double r = std::rint(v);
  if (r < -9.3e18 || r > 9.3e18) return std::nullopt;
  i128 value = static_cast<i128>(r);
  if (!fits_integer_type(to, value) || r >= 9.223372036854775807e18) return std::nullopt;
  return static_cast<int64_t>(value);
}

std::optional<Datum> float_to_numeric(double v, bool is_float4) {
  if (std::isnan(v)) return Numeric{Numeric::Kind::kNaN, 0, 0};
  if (std::isinf(v)) return Numeric{v > 0 ? Numeric::Kind::kPosInf : Numeric::Kind::kNegInf, 0, 0};
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g", is_float4 ? 6 : 15, v);
  auto n = parse_numeric(buf);
  if (!n) return std::nullopt;
  return *n;
}

std::optional<Datum> to_float(double v, SqlType to) {
  if (to == SqlType::kFloat4) {
    if (!std::isinf(v) && !std::isnan(v) && std::fabs(v) > std::numeric_limits<float>::max())
      return std::nullopt;
    return static_cast<double>(static_cast<float>(v));
  }
  return v;
}

std::optional<Datum> cast_from_integer(int64_t v, SqlType to) {
  if (is_integer_type(to)) {
    if (!fits_integer_type(to, v)) return std::nullopt;
    return v;
  }
  if (to == SqlType::kNumeric) return numeric_from_int(v);
  if (to == SqlType::kFloat4 || to == SqlType::kFloat8) return to_float(static_cast<double>(v), to);
  if (to == SqlType::kBool) return v != 0;
  return std::nullopt;
}

std::optional<Datum> cast_from_numeric(const Numeric& n, SqlType to) {
  if (is_integer_type(to)) return numeric_to_integer(n, to);
  if (to == SqlType::kNumeric) return n;
  if (to == SqlType::kFloat4 || to == SqlType::kFloat8) return to_float(numeric_to_double(n), to);
  return std::nullopt;
}

std::optional<Datum> cast_from_float(double v, SqlType from, SqlType to) {
  if (is_integer_type(to)) return float_to_integer(v, to);
  if (to == SqlType::kNumeric) return float_to_numeric(v, from == SqlType::kFloat4);
  if (to == SqlType::kFloat4 || to == SqlType::kFloat8) return to_float(v, to);
  return std::nullopt;
}

std::optional<Datum> cast_between_datetimes(const Datum& value, SqlType to) {
  if (const auto* d = std::get_if<Date>(&value)) {
    if (to == SqlType::kDate) return *d;
    return date_to_timestamp(*d);
  }
  const auto& t = std::get<Timestamp>(value);
  if (to == SqlType::kDate) return timestamp_to_date(t);
  return t;  // timestamp <-> timestamptz: identical under TimeZone = UTC
}

}  // namespace

// --- public ----------------------------------------------------------------------

std::optional<SqlType> sql_type_from_name(std::string_view name) {
  static const std::pair<std::string_view, SqlType> kNames[] = {
      {"bool", SqlType::kBool},
      {"boolean", SqlType::kBool},
      {"int2", SqlType::kInt2},
      {"smallint", SqlType::kInt2},
      {"int4", SqlType::kInt4},
      {"int", SqlType::kInt4},
      {"integer", SqlType::kInt4},
      {"int8", SqlType::kInt8},
      {"bigint", SqlType::kInt8},
      {"numeric", SqlType::kNumeric},
      {"decimal", SqlType::kNumeric},
      {"float4", SqlType::kFloat4},
      {"real", SqlType::kFloat4},
      {"float8", SqlType::kFloat8},
      {"text", SqlType::kText},
      {"varchar", SqlType::kVarchar},
      {"date", SqlType::kDate},
      {"timestamp", SqlType::kTimestamp},
      {"timestamptz", SqlType::kTimestamptz},
      {"uuid", SqlType::kUuid},
  };
  for (const auto& [n, t] : kNames)
    if (n == name) return t;
  return std::nullopt;
}

std::string_view sql_type_name(SqlType type) {
  switch (type) {
    case SqlType::kBool:
      return "bool";
    case SqlType::kInt2:
      return "int2";
    case SqlType::kInt4:
      return "int4";
    case SqlType::kInt8:
      return "int8";
    case SqlType::kNumeric:
      return "numeric";
    case SqlType::kFloat4:
      return "float4";
    case SqlType::kFloat8:
      return "float8";
    case SqlType::kText:
      return "text";
    case SqlType::kVarchar:
      return "varchar";
    case SqlType::kDate:
      return "date";
    case SqlType::kTimestamp:
      return "timestamp";
    case SqlType::kTimestamptz:
      return "timestamptz";
    case SqlType::kUuid:
      return "uuid";
    case SqlType::kUnknown:
      return "unknown";
    case SqlType::kOther:
      return "other";
  }
  return "other";
}

bool is_integer_type(SqlType t) {
  return t == SqlType::kInt2 || t == SqlType::kInt4 || t == SqlType::kInt8;
}
bool is_numeric_family(SqlType t) {
  return is_integer_type(t) || t == SqlType::kNumeric || t == SqlType::kFloat4 ||
         t == SqlType::kFloat8;
}
bool is_text_type(SqlType t) { return t == SqlType::kText || t == SqlType::kVarchar; }
bool is_datetime_type(SqlType t) {
  return t == SqlType::kDate || t == SqlType::kTimestamp || t == SqlType::kTimestamptz;
}

bool fits_integer_type(SqlType type, __int128 value) {
  switch (type) {
    case SqlType::kInt2:
      return value >= -32768 && value <= 32767;
    case SqlType::kInt4:
      return value >= std::numeric_limits<int32_t>::min() &&
             value <= std::numeric_limits<int32_t>::max();
    default:
      return value >= std::numeric_limits<int64_t>::min() &&
             value <= std::numeric_limits<int64_t>::max();
  }
}

std::optional<Datum> parse_datum(SqlType type, std::string_view text) {
  switch (type) {
    case SqlType::kBool:
      if (auto b = parse_bool(text)) return *b;
      return std::nullopt;
    case SqlType::kInt2:
    case SqlType::kInt4:
    case SqlType::kInt8:
      if (auto i = parse_integer(text, type)) return *i;
      return std::nullopt;
    case SqlType::kNumeric:
      if (auto n = parse_numeric(text)) return *n;
      return std::nullopt;
    case SqlType::kFloat4:
    case SqlType::kFloat8:
      if (auto f = parse_float(text, type == SqlType::kFloat4)) return *f;
      return std::nullopt;
    case SqlType::kDate:
      if (auto d = parse_date(text)) return *d;
      return std::nullopt;
    case SqlType::kTimestamp:
    case SqlType::kTimestamptz:
      if (auto t = parse_timestamp(text, type == SqlType::kTimestamptz)) return *t;
      return std::nullopt;
    case SqlType::kUuid:
      if (auto u = parse_uuid(text)) return *u;
      return std::nullopt;
    case SqlType::kText:
    case SqlType::kVarchar:
    case SqlType::kUnknown:
    case SqlType::kOther:
      return std::string(text);
  }
  return std::nullopt;
}

std::string format_datum(SqlType type, const Datum& value) {
  return std::visit(
      [type](const auto& v) -> std::string {
        using V = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<V, std::monostate>)
          return "";
        else if constexpr (std::is_same_v<V, bool>)
          return v ? "t" : "f";
        else if constexpr (std::is_same_v<V, int64_t>)
          return std::to_string(v);
        else if constexpr (std::is_same_v<V, Numeric>)
          return format_numeric(v);
        else if constexpr (std::is_same_v<V, double>)
          return format_float(v, type == SqlType::kFloat4);
        else if constexpr (std::is_same_v<V, std::string>)
          return v;
        else if constexpr (std::is_same_v<V, Date>)
          return format_date(v);
        else if constexpr (std::is_same_v<V, Timestamp>)
          return format_timestamp(v, type == SqlType::kTimestamptz);
        else
          return format_uuid(v);
      },
      value);
}

bool can_cast(SqlType from, SqlType to) {
  if (to == SqlType::kUnknown || to == SqlType::kOther) return false;
  if (from == to || is_text_type(to)) return true;
  if (is_text_type(from) || from == SqlType::kUnknown) return true;
  if (is_numeric_family(from) && is_numeric_family(to)) return true;
  if ((from == SqlType::kInt4 && to == SqlType::kBool) ||
      (from == SqlType::kBool && to == SqlType::kInt4))
    return true;
  return is_datetime_type(from) && is_datetime_type(to);
}

std::optional<Datum> cast_datum(const Datum& value, SqlType from, SqlType to) {
  if (is_null(value)) return value;
  if (!can_cast(from, to)) return std::nullopt;
  if (is_text_type(to)) {
    // bool::text is 'true'/'false' (booltext), unlike bool's output 't'/'f'.
    if (from == SqlType::kBool) return std::string(std::get<bool>(value) ? "true" : "false");
    return format_datum(from, value);
  }
  if (is_text_type(from) || from == SqlType::kUnknown)
    return parse_datum(to, std::get<std::string>(value));
  if (from == to) return value;
  if (const auto* i = std::get_if<int64_t>(&value)) return cast_from_integer(*i, to);
  if (const auto* n = std::get_if<Numeric>(&value)) return cast_from_numeric(*n, to);
  if (const auto* f = std::get_if<double>(&value)) return cast_from_float(*f, from, to);
  if (const auto* b = std::get_if<bool>(&value)) return static_cast<int64_t>(*b ? 1 : 0);
  if (is_datetime_type(from)) return cast_between_datetimes(value, to);
  return std::nullopt;
}

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

}  // namespace shapeproxy::shapes
