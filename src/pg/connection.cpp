#include "pg/connection.h"

namespace shapeproxy::pg {
namespace {

std::string trim_trailing_newlines(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

std::string field(const PGresult* result, int code) {
  const char* value = PQresultErrorField(result, code);
  return value ? value : "";
}

}  // namespace

Error error_from_result(const PGresult* result) {
  if (result == nullptr) return Error{"connection_lost", "no result from server", ""};
  Error error{field(result, PG_DIAG_SQLSTATE), field(result, PG_DIAG_MESSAGE_PRIMARY),
              field(result, PG_DIAG_MESSAGE_HINT)};
  std::string detail = field(result, PG_DIAG_MESSAGE_DETAIL);
  if (!detail.empty()) error.message += ": " + detail;
  if (error.message.empty()) error.message = trim_trailing_newlines(PQresultErrorMessage(result));
  if (error.message.empty()) error.message = PQresStatus(PQresultStatus(result));
  return error;
}

Error error_from_connection(const PGconn* conn, std::string code) {
  std::string message = conn ? trim_trailing_newlines(PQerrorMessage(conn)) : "out of memory";
  if (message.empty()) message = "connection failed";
  return Error{std::move(code), std::move(message), ""};
}

std::optional<std::string> get_value(const PGresult* result, int row, int column) {
  if (PQgetisnull(result, row, column)) return std::nullopt;
  return std::string(PQgetvalue(result, row, column),
                     static_cast<std::size_t>(PQgetlength(result, row, column)));
}

namespace {

Result<ResultPtr> check(PGconn* conn, PGresult* raw) {
  ResultPtr result(raw);
  if (!result) return error_from_connection(conn, "connection_lost");
  switch (PQresultStatus(result.get())) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_COPY_OUT:
    case PGRES_COPY_IN:
    case PGRES_COPY_BOTH:
    case PGRES_EMPTY_QUERY:
      return result;
    default:
      return error_from_result(result.get());
  }
}

}  // namespace

Result<Connection> Connection::open(const std::string& conninfo) {
  ConnPtr conn(PQconnectdb(conninfo.c_str()));
  if (!conn || PQstatus(conn.get()) != CONNECTION_OK) return error_from_connection(conn.get());
  return Connection(std::move(conn));
}

Result<ResultPtr> Connection::exec(const std::string& sql) {
  return check(conn_.get(), PQexec(conn_.get(), sql.c_str()));
}

Result<ResultPtr> Connection::exec_params(const std::string& sql,
                                          const std::vector<std::optional<std::string>>& params) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
  return check(conn_.get(), PQexecParams(conn_.get(), sql.c_str(), static_cast<int>(values.size()),
                                         nullptr, values.data(), nullptr, nullptr, 0));
}

std::string quote_identifier(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string quote_literal(std::string_view value) {
  // standard_conforming_strings is on (the default since 9.1): backslashes
  // are literal inside '...', only quotes need doubling.
  std::string out = "'";
  for (char c : value) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}

}  // namespace shapeproxy::pg
