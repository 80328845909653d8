// Parses the body of a shape response (a JSON array of change and control
// messages) into typed messages. Pure: no I/O, errors are values.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace shapeproxy::client::detail {

enum class ChangeKind { kInsert, kUpdate, kDelete };

struct ChangeMessage {
  ChangeKind kind;
  std::string key;
  nlohmann::json value;      // object; for updates in default mode only the changed columns
  nlohmann::json old_value;  // replica=full updates: the previous values; else null
};

enum class ControlKind { kUpToDate, kMustRefetch, kSnapshotEnd, kOther };

struct ControlMessage {
  ControlKind kind;
};

using ShapeMessage = std::variant<ChangeMessage, ControlMessage>;

struct ParsedBody {
  std::vector<ShapeMessage> messages;
  bool ends_up_to_date = false;  // the last message is the up-to-date control
  bool must_refetch = false;     // a must-refetch control appears
};

// The parsed body, or an error message when the body is not a valid array of
// shape messages. An empty body counts as an empty array.
std::variant<ParsedBody, std::string> parse_shape_body(std::string_view body);

}  // namespace shapeproxy::client::detail
