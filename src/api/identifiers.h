// What: PostgreSQL identifier parsing as the Electric shape API does it for
// `table` (relation) and `columns`: quoted identifiers keep their case and
// unescape "" to ", unquoted ones must be plain words and fold to lower case.
// Why: the shape definition names must match the catalog exactly as
// PostgreSQL would resolve them, and the 400 messages must match Electric's.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace shapeproxy::api {

// The message for the 400 body.
struct ParseError {
  std::string message;
};

// Either the parsed value or why it is invalid.
template <typename T>
using ParsedOr = std::variant<T, ParseError>;

// One identifier: "FooBar" -> FooBar, FooBar -> foobar, "a""b" -> a"b.
// Errors: zero length, special characters in an unquoted name, an unescaped
// quote inside a quoted one, more than 63 characters.
ParsedOr<std::string> parse_identifier(std::string_view text);

// `name` or `schema.name` (dots inside quotes do not split); schema defaults
// to "public". Returns {schema, name}.
ParsedOr<std::pair<std::string, std::string>> parse_relation(std::string_view text);

// Comma-separated identifiers; commas inside quotes do not split. Order kept.
ParsedOr<std::vector<std::string>> parse_column_list(std::string_view text);

}  // namespace shapeproxy::api
