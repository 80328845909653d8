#include "shape_request.h"

#include <cctype>

namespace shapeproxy::client::detail {
namespace {

std::string joined_columns(const ReplicaClientOptions& options) {
  std::string out;
  for (const auto& column : options.columns) {
    if (!out.empty()) out += ',';
    out += column;
  }
  return out;
}

void add(std::string& target, std::string_view name, std::string_view value) {
  target += target.find('?') == std::string::npos ? '?' : '&';
  target += percent_encode(name);
  target += '=';
  target += percent_encode(value);
}

}  // namespace

std::string percent_encode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(text.size());
  for (unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string shape_identity(const ReplicaClientOptions& options) {
  std::string id = "table=" + options.table + "\nwhere=" + options.where;
  for (const auto& param : options.params) id += "\nparam=" + param;
  id += "\ncolumns=" + joined_columns(options);
  id += options.replica == ReplicaMode::kFull ? "\nreplica=full" : "\nreplica=default";
  return id;
}

std::string shape_target(const Endpoint& endpoint, const ReplicaClientOptions& options,
                         const ShapePosition& position) {
  std::string target = endpoint.prefix + "/v1/shape";
  add(target, "table", options.table);
  if (!options.where.empty()) add(target, "where", options.where);
  for (std::size_t i = 0; i < options.params.size(); ++i)
    add(target, "params[" + std::to_string(i + 1) + "]", options.params[i]);
  if (!options.columns.empty()) add(target, "columns", joined_columns(options));
  if (options.replica == ReplicaMode::kFull) add(target, "replica", "full");
  add(target, "offset", position.offset);
  if (position.offset != "-1" && !position.handle.empty()) add(target, "handle", position.handle);
  if (position.live) {
    add(target, "live", "true");
    if (!position.cursor.empty()) add(target, "cursor", position.cursor);
  }
  if (!options.secret.empty()) add(target, "secret", options.secret);
  return target;
}

std::string status_target(const Endpoint& endpoint) { return endpoint.prefix + "/v1/status"; }

}  // namespace shapeproxy::client::detail
