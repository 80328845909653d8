// Conninfo handling: validate a DATABASE_URL (URI or key=value), derive a
// replication connection string from it, and describe it without secrets.
#pragma once

#include <string>

#include "common/result.h"

namespace shapeproxy::pg {

// Parses with libpq's own parser; an Error names what is wrong.
Result<void> validate_conninfo(const std::string& conninfo);

// The same target with replication=database added (logical walsender mode).
Result<std::string> replication_conninfo(const std::string& conninfo);

// "user@host:port/dbname", never the password; for logs and /v1/status.
std::string describe_conninfo(const std::string& conninfo);

}  // namespace shapeproxy::pg
