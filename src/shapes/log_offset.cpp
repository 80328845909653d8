#include "shapes/log_offset.h"

#include <charconv>

namespace shapeproxy::shapes {
namespace {

std::optional<std::uint64_t> parse_decimal(std::string_view text) {
  if (text.empty() || text.size() > 20) return std::nullopt;
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

}  // namespace

std::string LogOffset::to_string() const {
  if (before_all) return "-1";
  std::string out = std::to_string(tx);
  out += '_';
  out += op == kInfinity ? std::string("inf") : std::to_string(op);
  return out;
}

std::optional<LogOffset> LogOffset::parse(std::string_view text) {
  if (text == "-1") return start();
  auto underscore = text.find('_');
  if (underscore == std::string_view::npos) return std::nullopt;
  auto tx = parse_decimal(text.substr(0, underscore));
  auto op_text = text.substr(underscore + 1);
  auto op = op_text == "inf" ? std::optional<std::uint64_t>(kInfinity) : parse_decimal(op_text);
  if (!tx || !op) return std::nullopt;
  return at(*tx, *op);
}

}  // namespace shapeproxy::shapes
