#include "api/shape_params.h"

#include <nlohmann/json.hpp>

#include "api/identifiers.h"
#include "api/offset_text.h"
#include "common/text.h"

namespace shapeproxy::api {
namespace {

using Start = shapes::ReadRequest::Start;

constexpr char kBlank[] = "can't be blank";

// Last non-empty value of `name` (Plug: later duplicates win; Ecto: "" is nil).
std::optional<std::string> param(const http::Request& request, std::string_view name) {
  std::optional<std::string> out;
  for (const auto& [k, v] : request.query_params())
    if (k == name) out = v.empty() ? std::nullopt : std::optional<std::string>(v);
  return out;
}

// Ecto's boolean cast: true/1, false/0; absent -> false.
std::optional<bool> cast_bool(const std::optional<std::string>& value) {
  if (!value) return false;
  if (*value == "true" || *value == "1") return true;
  if (*value == "false" || *value == "0") return false;
  return std::nullopt;
}

// The parameters this API reads (params[<n>] aside); only these are checked
// for bytes PostgreSQL and the JSON writer cannot take.
constexpr std::string_view kKnownParams[] = {
    "table",  "offset", "handle", "live",    "live_sse", "experimental_live_sse",
    "cursor", "where",  "params", "columns", "replica",  "log"};

bool is_known_param(std::string_view name) {
  if (name.starts_with("params[") || name.starts_with("subset__")) return true;
  for (auto known : kKnownParams)
    if (name == known) return true;
  return false;
}

// The field a parameter's errors are reported under.
std::string field_of(std::string_view name) {
  if (name.starts_with("params[")) return "params";
  if (name == "experimental_live_sse") return "live_sse";
  return std::string(name);
}

class Validator {
 public:
  explicit Validator(const http::Request& request) : request_(request) {}

  void add(const std::string& field, std::string message) {
    errors_[field].push_back(std::move(message));
  }
  bool ok() const { return errors_.empty(); }

  // Every known parameter must be valid UTF-8 without NUL: PostgreSQL cuts a
  // bound value at NUL while the in-process evaluator keeps it (the two
  // would disagree on which rows match), and invalid UTF-8 cannot be written
  // into a JSON message. Both are rejected here, before anything else sees
  // them. False when one was found.
  bool check_text() {
    bool clean = true;
    for (const auto& [k, v] : request_.query_params()) {
      if (!is_known_param(k)) continue;
      if (v.find('\0') != std::string::npos || k.find('\0') != std::string::npos) {
        add(field_of(k), "must not contain a NUL character");
        clean = false;
      } else if (!text::valid_utf8(v) || !text::valid_utf8(k)) {
        add(field_of(k), "must be valid UTF-8");
        clean = false;
      }
    }
    return clean;
  }
  ValidationErrors take_errors() { return std::move(errors_); }

  bool flag(std::string_view name, const std::string& field) {
    auto value = cast_bool(param(request_, name));
    if (!value) add(field, kInvalid);
    return value.value_or(false);
  }

  void cast_definition_fields(shapes::ShapeDefinitionRequest& def) {
    def.where = param(request_, "where");
    cast_replica(def);
    cast_log(def);
    cast_columns(def);
    cast_params(def);
  }

  // Returns false (with an error) when the table is missing or malformed.
  bool cast_table(shapes::ShapeDefinitionRequest& def) {
    auto table = param(request_, "table");
    if (!table) {
      add("table", kBlank);
      return false;
    }
    auto parsed = parse_relation(*table);
    if (auto* error = std::get_if<ParseError>(&parsed)) {
      add("table", error->message);
      return false;
    }
    std::tie(def.schema, def.table) = std::get<0>(std::move(parsed));
    return true;
  }

 private:
  void cast_replica(shapes::ShapeDefinitionRequest& def) {
    auto replica = param(request_, "replica");
    if (!replica || *replica == "default")
      def.replica = shapes::ReplicaMode::kDefault;
    else if (*replica == "full")
      def.replica = shapes::ReplicaMode::kFull;
    else
      add("replica", kInvalid);
  }

  void cast_log(shapes::ShapeDefinitionRequest& def) {
    auto log = param(request_, "log");
    if (!log || *log == "full")
      def.log = shapes::LogMode::kFull;
    else if (*log == "changes_only")
      def.log = shapes::LogMode::kChangesOnly;
    else
      add("log", kInvalid);
  }

  void cast_columns(shapes::ShapeDefinitionRequest& def) {
    auto columns = param(request_, "columns");
    if (!columns) return;
    auto parsed = parse_column_list(*columns);
    if (auto* error = std::get_if<ParseError>(&parsed)) return add("columns", error->message);
    def.columns = std::get<0>(std::move(parsed));
  }

  // params[<n>]=value, and params=<JSON object> (as Electric's subset params).
  void cast_params(shapes::ShapeDefinitionRequest& def) {
    if (auto json_text = param(request_, "params")) cast_json_params(*json_text, def);
    for (const auto& [k, v] : request_.query_params()) {
      std::string_view key = k;
      if (!key.starts_with("params[") || !key.ends_with("]")) continue;
      add_param(key.substr(7, key.size() - 8), v, def);
    }
  }

  void cast_json_params(const std::string& text, shapes::ShapeDefinitionRequest& def) {
    nlohmann::json parsed = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (parsed.is_discarded()) return add("params", "params must be valid JSON");
    if (!parsed.is_object()) return add("params", "params must be a JSON object");
    for (const auto& [key, value] : parsed.items()) {
      std::string text = value.is_string() ? value.get<std::string>() : value.dump();
      if (text.find('\0') != std::string::npos)  // a \u0000 escape
        return add("params", "must not contain a NUL character");
      add_param(key, text, def);
    }
  }

  void add_param(std::string_view key, const std::string& value,
                 shapes::ShapeDefinitionRequest& def) {
    auto index = positional_index(key);
    if (!index) return add("params", invalid_param_name(key));
    def.params[*index] = value;
  }

  const http::Request& request_;
  ValidationErrors errors_;
};

// The offset-dependent rules, in Electric's order; each stops at the first error.
bool validate_offset_rules(const http::Request& request, Validator& v, ShapeParams& out,
                           const std::string& offset_text) {
  auto offset = parse_requested_offset(offset_text);
  if (!offset) {
    v.add("offset", "has invalid format");
    return false;
  }
  out.read.start = offset->start;
  out.read.offset = offset->offset;
  out.requested_offset = requested_offset_text(*offset);
  bool from_start = offset->start != Start::kAt;
  out.read.handle = from_start ? std::nullopt : param(request, "handle");
  if (!from_start && !out.read.handle) {
    v.add("handle", "can't be blank when offset != -1");
    return false;
  }
  if (out.read.live && offset->start == Start::kBeforeAll) {
    v.add("live", "can't be true when offset == -1");
    return false;
  }
  if (out.read.live && offset->start == Start::kNow) {
    v.add("live", "can't be true when offset is 'now'");
    return false;
  }
  if (out.live_sse && !out.read.live) {
    v.add("live_sse", "can't be true unless live is also true");
    return false;
  }
  return true;
}

}  // namespace

ParamsOutcome parse_shape_params(const http::Request& request) {
  Validator v(request);
  ShapeParams out;
  if (!v.check_text()) return v.take_errors();
  out.accepts_gzip = http::accepts_gzip(request);
  // Casts first (all reported together), then the rules in order.
  out.read.live = v.flag("live", "live");
  bool sse = v.flag("live_sse", "live_sse");
  bool experimental_sse = v.flag("experimental_live_sse", "live_sse");
  out.live_sse = sse || experimental_sse;
  out.cursor = param(request, "cursor");
  v.cast_definition_fields(out.definition);
  auto offset = param(request, "offset");
  if (!offset) v.add("offset", kBlank);
  if (!v.ok()) return v.take_errors();

  if (!validate_offset_rules(request, v, out, *offset) || !v.cast_table(out.definition))
    return v.take_errors();
  return out;
}

DeleteParamsOutcome parse_delete_params(const http::Request& request) {
  Validator v(request);
  DeleteParams out;
  if (!v.check_text()) return v.take_errors();
  out.handle = param(request, "handle");
  if (param(request, "table")) {
    v.cast_definition_fields(out.definition);
    if (v.ok()) v.cast_table(out.definition);
  } else if (!out.handle) {
    v.add("handle", "can't be blank when shape definition is missing");
  }
  if (!v.ok()) return v.take_errors();
  return out;
}

std::optional<int> positional_index(std::string_view key) {
  if (key.empty() || key.size() > 5 || key[0] == '0') return std::nullopt;
  int n = 0;
  for (char c : key) {
    if (c < '0' || c > '9') return std::nullopt;
    n = n * 10 + (c - '0');
  }
  return n;
}

std::string invalid_param_name(std::string_view key) {
  return "invalid parameter name: " + std::string(key) +
         " (expected a positive integer, as in params[1])";
}

http::Response invalid_request_response(const ValidationErrors& errors) {
  nlohmann::json body = {{"message", "Invalid request"}, {"errors", errors}};
  http::Response r = http::Response::json(
      400, body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  r.headers.emplace_back("cache-control", "no-store");
  r.headers.emplace_back("surrogate-control", "no-store");
  return r;
}

}  // namespace shapeproxy::api
