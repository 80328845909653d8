// Appends JSON text to a string without building a DOM: shape logs render
// millions of values, so messages are written straight into their bytes.
#pragma once

#include <string>
#include <string_view>

namespace shapeproxy::shapes {

// Appends `value` as a quoted, escaped JSON string.
void append_json_string(std::string& out, std::string_view value);
// The same without the quotes.
void append_json_escaped(std::string& out, std::string_view value);

}  // namespace shapeproxy::shapes
