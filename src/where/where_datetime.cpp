// date, timestamp and timestamptz: ISO text input, PostgreSQL text output
// (session TimeZone = UTC) and conversions between them.
#include <cstdio>

#include "where/where_types.h"
#include "where/where_types_internal.h"

namespace shapeproxy::where {
using namespace detail;
namespace {

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

std::string format_civil_date(int64_t days, bool& bc) {
  Civil c = civil_from_days(days);
  bc = c.year <= 0;
  int64_t shown_year = bc ? 1 - c.year : c.year;
  char buf[48];
  std::snprintf(buf, sizeof buf, "%04lld-%02u-%02u", static_cast<long long>(shown_year), c.month,
                c.day);
  return buf;
}

}  // namespace

namespace detail {

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

}  // namespace detail
}  // namespace shapeproxy::where
