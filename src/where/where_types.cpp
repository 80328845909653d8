// Text input/output and casts for the where-clause value types, following
// PostgreSQL's behaviour for the supported subset (session TimeZone = UTC).
// Numeric and date/time details live in where_numeric.cpp and
// where_datetime.cpp, comparison in datum_compare.cpp.
#include "where/where_types.h"

#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "where/where_types_internal.h"

namespace shapeproxy::where {
using namespace detail;

namespace detail {

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

}  // namespace detail

namespace {

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

// --- casts between families ----------------------------------------------------------

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

}  // namespace shapeproxy::where
