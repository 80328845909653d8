#include "pg/conninfo.h"

#include <libpq-fe.h>

#include <map>
#include <memory>

#include "pg/connection.h"

namespace shapeproxy::pg {
namespace {

struct OptionsDeleter {
  void operator()(PQconninfoOption* options) const { PQconninfoFree(options); }
};

// Parses a URI or key=value conninfo into its set options.
Result<std::map<std::string, std::string>> parse(const std::string& conninfo) {
  char* raw_error = nullptr;
  std::unique_ptr<PQconninfoOption, OptionsDeleter> options(
      PQconninfoParse(conninfo.c_str(), &raw_error));
  if (!options) {
    std::string message = raw_error ? raw_error : "out of memory";
    PQfreemem(raw_error);
    while (!message.empty() && message.back() == '\n') message.pop_back();
    return Error{"invalid_database_url", "invalid database URL: " + message,
                 "use postgresql://user:password@host:port/dbname or key=value pairs"};
  }
  std::map<std::string, std::string> values;
  for (auto* option = options.get(); option->keyword != nullptr; ++option) {
    if (option->val != nullptr) values[option->keyword] = option->val;
  }
  // libpq checks ports only when connecting; refuse a bad one up front.
  if (auto port = values.find("port"); port != values.end()) {
    if (port->second.find_first_not_of("0123456789,") != std::string::npos) {
      return Error{"invalid_database_url",
                   "invalid database URL: port '" + port->second + "' is not a number", ""};
    }
  }
  return values;
}

std::string quote_value(const std::string& value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

}  // namespace

Result<void> validate_conninfo(const std::string& conninfo) {
  auto parsed = parse(conninfo);
  if (!parsed) return parsed.error();
  return {};
}

Result<std::string> replication_conninfo(const std::string& conninfo) {
  auto parsed = parse(conninfo);
  if (!parsed) return parsed.error();
  auto values = std::move(parsed).value();
  values["replication"] = "database";
  std::string out;
  for (const auto& [key, value] : values) {
    if (!out.empty()) out += ' ';
    out += key + "=" + quote_value(value);
  }
  return out;
}

std::string describe_conninfo(const std::string& conninfo) {
  auto parsed = parse(conninfo);
  if (!parsed) return "(invalid database URL)";
  auto& values = parsed.value();
  auto get = [&](const char* key, const char* fallback) {
    auto it = values.find(key);
    return it == values.end() || it->second.empty() ? std::string(fallback) : it->second;
  };
  return get("user", "(default user)") + "@" + get("host", "(default host)") + ":" +
         get("port", "5432") + "/" + get("dbname", get("user", "(default db)").c_str());
}

}  // namespace shapeproxy::pg
