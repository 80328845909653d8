// Blocking libpq connections and RAII result handles, for start-up checks,
// the embedded cluster, tests and tools. Never use a blocking Connection on
// the event loop: use AsyncConnection there.
#pragma once

#include <libpq-fe.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace shapeproxy::pg {

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using ResultPtr = std::unique_ptr<PGresult, ResultDeleter>;

struct ConnDeleter {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using ConnPtr = std::unique_ptr<PGconn, ConnDeleter>;

// Error from a failed result (SQLSTATE, message, detail and hint fields).
Error error_from_result(const PGresult* result);
// Error from a connection-level failure (PQerrorMessage).
Error error_from_connection(const PGconn* conn, std::string code = "connection_failed");

// Value of (row, column) as text, or nullopt for SQL NULL.
std::optional<std::string> get_value(const PGresult* result, int row, int column);

class Connection {
 public:
  static Result<Connection> open(const std::string& conninfo);

  // Simple-query protocol; several statements allowed; returns the last result.
  Result<ResultPtr> exec(const std::string& sql);
  // Extended protocol with text parameters (nullopt = NULL).
  Result<ResultPtr> exec_params(const std::string& sql,
                                const std::vector<std::optional<std::string>>& params);

  PGconn* native() const { return conn_.get(); }

 private:
  explicit Connection(ConnPtr conn) : conn_(std::move(conn)) {}
  ConnPtr conn_;
};

// Quotes an identifier ("a""b") / a literal ('it''s') for the simple-query
// protocol, where parameters cannot be bound (replication connections).
std::string quote_identifier(std::string_view name);
std::string quote_literal(std::string_view value);

}  // namespace shapeproxy::pg
