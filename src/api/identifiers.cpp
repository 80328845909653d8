#include "api/identifiers.h"

namespace shapeproxy::api {
namespace {

constexpr size_t kMaxIdentifierChars = 63;  // NAMEDATALEN - 1

bool is_letter(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80;  // non-ASCII: letters
}

bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

bool valid_unquoted(std::string_view s) {
  if (s.empty()) return false;
  auto first = static_cast<unsigned char>(s[0]);
  if (!is_letter(first) && first != '_') return false;
  for (char ch : s.substr(1)) {
    auto c = static_cast<unsigned char>(ch);
    if (!is_letter(c) && !is_digit(c) && c != '_' && c != '$') return false;
  }
  return true;
}

// A quote neither preceded nor followed by another quote.
bool contains_unescaped_quote(std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '"') continue;
    bool after_quote = i > 0 && s[i - 1] == '"';
    bool before_quote = i + 1 < s.size() && s[i + 1] == '"';
    if (!after_quote && !before_quote) return true;
  }
  return false;
}

// Replaces "" by ", left to right, non-overlapping.
std::string unescape_quotes(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    out.push_back(s[i]);
    if (s[i] == '"' && i + 1 < s.size() && s[i + 1] == '"') ++i;
  }
  return out;
}

std::string ascii_downcase(std::string_view s) {
  std::string out(s);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

size_t utf8_length(std::string_view s) {
  size_t n = 0;
  for (char c : s)
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++n;
  return n;
}

const char kZeroLength[] = "Invalid zero-length delimited identifier";

ParsedOr<std::string> parse_unchecked_length(std::string_view text) {
  bool quoted = !text.empty() && text.front() == '"' && text.back() == '"';
  if (quoted) {
    std::string_view inner =
        text.size() >= 2 ? text.substr(1, text.size() - 2) : std::string_view();
    if (inner.empty()) return ParseError{kZeroLength};
    if (contains_unescaped_quote(inner))
      return ParseError{"Invalid identifier with unescaped quote: " + std::string(inner)};
    return unescape_quotes(inner);
  }
  if (text.empty()) return ParseError{kZeroLength};
  if (!valid_unquoted(text))
    return ParseError{"Invalid unquoted identifier contains special characters: " +
                      std::string(text)};
  return ascii_downcase(text);
}

// Splits on '.' outside double quotes.
std::vector<std::string_view> split_relation(std::string_view text) {
  std::vector<std::string_view> parts;
  bool in_quotes = false;
  size_t start = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '"') in_quotes = !in_quotes;
    if (text[i] == '.' && !in_quotes) {
      parts.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  parts.push_back(text.substr(start));
  return parts;
}

// Splits on ',' followed by an even number of double quotes (Electric's rule).
std::vector<std::string_view> split_columns(std::string_view text) {
  std::vector<size_t> quotes_after(text.size() + 1, 0);
  for (size_t i = text.size(); i-- > 0;) quotes_after[i] = quotes_after[i + 1] + (text[i] == '"');
  std::vector<std::string_view> parts;
  size_t start = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == ',' && quotes_after[i + 1] % 2 == 0) {
      parts.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  parts.push_back(text.substr(start));
  return parts;
}

}  // namespace

ParsedOr<std::string> parse_identifier(std::string_view text) {
  auto parsed = parse_unchecked_length(text);
  if (parsed.index() == 0 && utf8_length(std::get<0>(parsed)) > kMaxIdentifierChars)
    return ParseError{"Identifier is too long (max length is " +
                      std::to_string(kMaxIdentifierChars) + ")"};
  return parsed;
}

ParsedOr<std::pair<std::string, std::string>> parse_relation(std::string_view text) {
  auto parts = split_relation(text);
  if (parts.size() > 2)
    return ParseError{"Invalid relation identifier, too many delimiters: " + std::string(text)};
  std::string schema = "public";
  if (parts.size() == 2) {
    auto parsed = parse_identifier(parts[0]);
    if (auto* error = std::get_if<ParseError>(&parsed)) return std::move(*error);
    schema = std::get<std::string>(std::move(parsed));
  }
  auto table = parse_identifier(parts.back());
  if (auto* error = std::get_if<ParseError>(&table)) return std::move(*error);
  return std::pair(std::move(schema), std::get<std::string>(std::move(table)));
}

ParsedOr<std::vector<std::string>> parse_column_list(std::string_view text) {
  std::vector<std::string> columns;
  for (std::string_view part : split_columns(text)) {
    auto parsed = parse_identifier(part);
    if (auto* error = std::get_if<ParseError>(&parsed)) return std::move(*error);
    columns.push_back(std::get<std::string>(std::move(parsed)));
  }
  return columns;
}

}  // namespace shapeproxy::api
