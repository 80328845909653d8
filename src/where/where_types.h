// SQL types and values of the where-clause evaluator: the subset of
// PostgreSQL types a where clause may compute with, their text input/output
// (the formats logical replication delivers), casts and comparison.
// Everything here mirrors PostgreSQL semantics for the supported subset, with
// the session TimeZone assumed to be UTC.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace shapeproxy::where {

enum class SqlType {
  kBool,
  kInt2,
  kInt4,
  kInt8,
  kNumeric,
  kFloat4,
  kFloat8,
  kText,
  kVarchar,
  kDate,
  kTimestamp,
  kTimestamptz,
  kUuid,
  kUnknown,  // an untyped string literal or parameter, typed by its context
  kOther,    // a column type we can only test for NULL or cast to text
};

// Exact decimal: value = mantissa / 10^scale, or a special value.
struct Numeric {
  enum class Kind { kFinite, kNaN, kPosInf, kNegInf };
  Kind kind = Kind::kFinite;
  __int128 mantissa = 0;
  int scale = 0;  // digits after the point, as PostgreSQL's display scale
};
struct Date {
  int64_t days;  // since 1970-01-01; INT64_MIN/MAX = -/+infinity
};
struct Timestamp {
  int64_t micros;  // since 1970-01-01 00:00 UTC; INT64_MIN/MAX = -/+infinity
};
struct Uuid {
  std::array<uint8_t, 16> bytes;
};

// monostate is SQL NULL. Integers of every width are int64_t, floats double,
// text/varchar (and kOther raw text) std::string.
using Datum = std::variant<std::monostate, bool, int64_t, Numeric, double, std::string, Date,
                           Timestamp, Uuid>;

inline bool is_null(const Datum& d) { return std::holds_alternative<std::monostate>(d); }

// "int4" -> kInt4 (pg_catalog names as libpg_query reports them, plus the
// common SQL spellings). nullopt for anything else.
std::optional<SqlType> sql_type_from_name(std::string_view name);
std::string_view sql_type_name(SqlType type);

bool is_integer_type(SqlType t);
bool is_numeric_family(SqlType t);  // integers, numeric, floats
bool is_text_type(SqlType t);       // text, varchar
bool is_datetime_type(SqlType t);   // date, timestamp, timestamptz

// PostgreSQL input function for `type` (accepting the formats PostgreSQL's
// text output produces plus common ISO input). nullopt when invalid.
std::optional<Datum> parse_datum(SqlType type, std::string_view text);
// PostgreSQL text output of a non-NULL datum of `type`.
std::string format_datum(SqlType type, const Datum& value);

// Whether an explicit cast from -> to exists in the supported subset.
bool can_cast(SqlType from, SqlType to);
// Applies a cast; nullopt when PostgreSQL would raise an error (e.g. out of
// range, invalid text). NULL casts to NULL.
std::optional<Datum> cast_datum(const Datum& value, SqlType from, SqlType to);

// Integer range of an integer type, for overflow checks.
bool fits_integer_type(SqlType type, __int128 value);

// Numeric arithmetic, PostgreSQL display-scale rules. nullopt on overflow of
// our 128-bit representation or division by zero.
std::optional<Numeric> numeric_add(const Numeric& a, const Numeric& b);
std::optional<Numeric> numeric_sub(const Numeric& a, const Numeric& b);
std::optional<Numeric> numeric_mul(const Numeric& a, const Numeric& b);
std::optional<Numeric> numeric_div(const Numeric& a, const Numeric& b);
std::optional<Numeric> numeric_mod(const Numeric& a, const Numeric& b);
Numeric numeric_neg(const Numeric& a);
Numeric numeric_from_int(int64_t v);
double numeric_to_double(const Numeric& n);

}  // namespace shapeproxy::where
