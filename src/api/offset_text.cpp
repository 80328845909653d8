#include "api/offset_text.h"

#include <charconv>

namespace shapeproxy::api {
namespace {

std::optional<std::uint64_t> parse_decimal(std::string_view text) {
  if (text.empty()) return std::nullopt;
  for (char c : text)
    if (c < '0' || c > '9') return std::nullopt;
  std::uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

}  // namespace

std::optional<RequestedOffset> parse_requested_offset(std::string_view text) {
  using Start = shapes::ReadRequest::Start;
  if (text == "-1") return RequestedOffset{Start::kBeforeAll, shapes::LogOffset::start()};
  if (text == "now") return RequestedOffset{Start::kNow, {}};
  size_t sep = text.find('_');
  if (sep == std::string_view::npos) return std::nullopt;
  auto tx = parse_decimal(text.substr(0, sep));
  std::string_view op_text = text.substr(sep + 1);
  std::optional<std::uint64_t> op;
  if (op_text == "inf") {
    op = shapes::LogOffset::kInfinity;
  } else {
    op = parse_decimal(op_text);
    if (op && *op == shapes::LogOffset::kInfinity) op.reset();  // reserved for "inf"
  }
  if (!tx || !op) return std::nullopt;
  return RequestedOffset{Start::kAt, shapes::LogOffset::at(*tx, *op)};
}

std::string requested_offset_text(const RequestedOffset& offset) {
  switch (offset.start) {
    case shapes::ReadRequest::Start::kBeforeAll:
      return "-1";
    case shapes::ReadRequest::Start::kNow:
      return "now";
    case shapes::ReadRequest::Start::kAt:
      break;
  }
  return offset_text(offset.offset);
}

std::string offset_text(const shapes::LogOffset& offset) {
  if (offset.before_all) return "-1";
  std::string out = std::to_string(offset.tx);
  out += '_';
  out += offset.op == shapes::LogOffset::kInfinity ? "inf" : std::to_string(offset.op);
  return out;
}

}  // namespace shapeproxy::api
