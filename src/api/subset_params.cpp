#include "api/subset_params.h"

#include "api/shape_params.h"

#include <charconv>
#include <nlohmann/json.hpp>

namespace shapeproxy::api {
namespace {

using nlohmann::json;

// The subset as raw values: query strings, or JSON values from a POST body.
struct RawSubset {
  std::map<std::string, json> fields;                 // where, order_by, limit, offset, params
  std::map<std::string, std::string> indexed_params;  // subset__params[n]
};

bool is_subset_key(std::string_view key) {
  return key == "where" || key == "order_by" || key == "limit" || key == "offset" ||
         key == "params" || key == "where_expr" || key == "order_by_expr";
}

// Ecto's integer cast: a JSON integer, or a string of one.
std::optional<std::int64_t> cast_integer(const json& value) {
  if (value.is_number_integer()) return value.get<std::int64_t>();
  if (!value.is_string()) return std::nullopt;
  const auto& text = value.get_ref<const std::string&>();
  std::int64_t out = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return out;
}

std::string scalar_text(const json& value) {
  return value.is_string() ? value.get<std::string>() : value.dump();
}

class SubsetValidator {
 public:
  SubsetErrors errors;

  void add(const std::string& field, std::string message) {
    errors[field].push_back(std::move(message));
  }

  shapes::SubsetRequest cast(const RawSubset& raw) {
    shapes::SubsetRequest out;
    out.where = text_field(raw, "where");
    out.order_by = text_field(raw, "order_by");
    out.limit = integer_field(raw, "limit");
    out.offset = integer_field(raw, "offset");
    if (auto it = raw.fields.find("params"); it != raw.fields.end()) cast_params(it->second, out);
    for (const auto& [key, value] : raw.indexed_params) add_param(key, value, out);
    if (out.limit && *out.limit <= 0) add("limit", "must be greater than 0");
    if (out.offset && *out.offset < 0) add("offset", "must be greater than or equal to 0");
    if ((out.limit || out.offset) && !out.order_by)
      add("order_by", "order_by is required when limit or offset is present");
    return out;
  }

 private:
  std::optional<std::string> text_field(const RawSubset& raw, const std::string& name) {
    auto it = raw.fields.find(name);
    if (it == raw.fields.end() || it->second.is_null()) return std::nullopt;
    if (!it->second.is_string()) {
      add(name, kInvalid);
      return std::nullopt;
    }
    auto text = it->second.get<std::string>();
    if (text.empty()) return std::nullopt;  // Ecto: "" is nil
    return text;
  }

  std::optional<std::int64_t> integer_field(const RawSubset& raw, const std::string& name) {
    auto it = raw.fields.find(name);
    if (it == raw.fields.end() || it->second.is_null() ||
        (it->second.is_string() && it->second.get_ref<const std::string&>().empty()))
      return std::nullopt;
    auto value = cast_integer(it->second);
    if (!value) add(name, kInvalid);
    return value;
  }

  // A JSON object (or a string holding one) of "n" -> value.
  void cast_params(const json& value, shapes::SubsetRequest& out) {
    json object = value;
    if (value.is_string()) {
      if (value.get_ref<const std::string&>().empty()) return;
      object = json::parse(value.get<std::string>(), nullptr, /*allow_exceptions=*/false);
      if (object.is_discarded()) return add("params", "params must be valid JSON");
    }
    if (object.is_array()) {  // ["a","b"]: $1, $2 (the client's array form)
      for (std::size_t i = 0; i < object.size(); ++i)
        out.params[static_cast<int>(i) + 1] = scalar_text(object[i]);
      return;
    }
    if (!object.is_object()) return add("params", "params must be a JSON object");
    for (const auto& [key, item] : object.items()) add_param(key, scalar_text(item), out);
  }

  void add_param(std::string_view key, const std::string& value, shapes::SubsetRequest& out) {
    auto index = positional_index(key);
    if (!index) return add("params", invalid_param_name(key));
    out.params[*index] = value;
  }
};

}  // namespace

SubsetOutcome parse_subset_params(const http::Request& request) {
  RawSubset raw;
  bool present = false;
  for (const auto& [key, value] : request.query_params()) {
    std::string_view name = key;
    if (!name.starts_with("subset__")) continue;
    name.remove_prefix(8);
    if (name.starts_with("params[") && name.ends_with("]")) {
      raw.indexed_params[std::string(name.substr(7, name.size() - 8))] = value;
      present = true;
    } else if (is_subset_key(name)) {
      raw.fields[std::string(name)] = value;  // later duplicates win
      present = true;
    }
  }
  SubsetValidator v;
  if (request.method() == http::Verb::post && !request.body().empty()) {
    json body = json::parse(request.body(), nullptr, /*allow_exceptions=*/false);
    if (body.is_discarded()) {
      v.add("body", "Invalid JSON in request body");
      return std::move(v.errors);
    }
    if (!body.is_object()) {
      v.add("body", "Request body must be a JSON object");
      return std::move(v.errors);
    }
    const json* source = &body;
    if (auto it = body.find("subset"); it != body.end() && it->is_object()) source = &*it;
    for (const auto& [key, value] : source->items()) {
      if (!is_subset_key(key)) continue;
      raw.fields[key] = value;
      present = true;
    }
  }
  if (!present) return std::monostate{};
  shapes::SubsetRequest out = v.cast(raw);
  if (!v.errors.empty()) return std::move(v.errors);
  return out;
}

http::Response invalid_subset_response(const SubsetErrors& errors) {
  json body = {{"message", "Invalid request"}, {"errors", {{"subset", errors}}}};
  http::Response r =
      http::Response::json(400, body.dump(-1, ' ', false, json::error_handler_t::replace));
  r.headers.emplace_back("cache-control", "no-store");
  r.headers.emplace_back("surrogate-control", "no-store");
  return r;
}

}  // namespace shapeproxy::api
