#include "shapes/json_text.h"

namespace shapeproxy::shapes {

void append_json_string(std::string& out, std::string_view value) {
  out.reserve(out.size() + value.size() + 2);
  out += '"';
  append_json_escaped(out, value);
  out += '"';
}

void append_json_escaped(std::string& out, std::string_view value) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::size_t plain_start = 0;
  for (std::size_t i = 0; i < value.size(); ++i) {
    auto c = static_cast<unsigned char>(value[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(value.data() + plain_start, i - plain_start);
    plain_start = i + 1;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        out += "\\u00";
        out += kHex[c >> 4];
        out += kHex[c & 0xf];
    }
  }
  out.append(value.data() + plain_start, value.size() - plain_start);
}

}  // namespace shapeproxy::shapes
