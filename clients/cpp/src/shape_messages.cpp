#include "shape_messages.h"

namespace shapeproxy::client::detail {
namespace {

std::optional<ControlKind> control_kind(const nlohmann::json& headers) {
  auto it = headers.find("control");
  if (it == headers.end() || !it->is_string()) return std::nullopt;
  const auto& name = it->get_ref<const std::string&>();
  if (name == "up-to-date") return ControlKind::kUpToDate;
  if (name == "must-refetch") return ControlKind::kMustRefetch;
  if (name == "snapshot-end") return ControlKind::kSnapshotEnd;
  return ControlKind::kOther;
}

std::variant<ShapeMessage, std::string> parse_message(const nlohmann::json& item) {
  if (!item.is_object()) return std::string("message is not an object");
  auto headers = item.find("headers");
  if (headers == item.end() || !headers->is_object())
    return std::string("message has no headers object");
  if (auto control = control_kind(*headers)) return ShapeMessage(ControlMessage{*control});
  auto op = headers->find("operation");
  if (op == headers->end() || !op->is_string())
    return std::string("message has neither control nor operation");
  const auto& op_name = op->get_ref<const std::string&>();
  ChangeMessage change;
  if (op_name == "insert")
    change.kind = ChangeKind::kInsert;
  else if (op_name == "update")
    change.kind = ChangeKind::kUpdate;
  else if (op_name == "delete")
    change.kind = ChangeKind::kDelete;
  else
    return "unknown operation '" + op_name + "'";
  auto key = item.find("key");
  if (key == item.end() || !key->is_string()) return std::string("change message has no key");
  change.key = key->get<std::string>();
  auto value = item.find("value");
  if (value != item.end() && value->is_object())
    change.value = *value;
  else
    change.value = nlohmann::json::object();
  auto old_value = item.find("old_value");
  if (old_value != item.end() && old_value->is_object()) change.old_value = *old_value;
  return ShapeMessage(std::move(change));
}

}  // namespace

std::variant<ParsedBody, std::string> parse_shape_body(std::string_view body) {
  ParsedBody parsed;
  if (body.find_first_not_of(" \t\r\n") == std::string_view::npos) return parsed;
  nlohmann::json array = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (array.is_discarded()) return std::string("body is not valid JSON");
  if (!array.is_array()) return std::string("body is not a JSON array");
  parsed.messages.reserve(array.size());
  for (const auto& item : array) {
    auto message = parse_message(item);
    if (auto* error = std::get_if<std::string>(&message)) return *error;
    auto& typed = std::get<ShapeMessage>(message);
    if (auto* control = std::get_if<ControlMessage>(&typed);
        control && control->kind == ControlKind::kMustRefetch)
      parsed.must_refetch = true;
    parsed.messages.push_back(std::move(typed));
  }
  if (!parsed.messages.empty()) {
    auto* last = std::get_if<ControlMessage>(&parsed.messages.back());
    parsed.ends_up_to_date = last && last->kind == ControlKind::kUpToDate;
  }
  return parsed;
}

}  // namespace shapeproxy::client::detail
