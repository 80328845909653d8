// Turns raw replication failures into errors that say what to do: missing
// REPLICATION privilege, wal_level not logical, a slot that is missing,
// invalidated, in use or of the wrong kind, a publication that is missing.
#pragma once

#include <string>

#include "common/result.h"

namespace shapeproxy::replication {

struct ReplicationStreamOptions;

Error explain_connect_error(const Error& error);
Error explain_start_error(const Error& error, const ReplicationStreamOptions& options);
Error wal_level_error(const std::string& level);
Error slot_mismatch_error(const std::string& slot_name);
Error slot_invalidated_error(const std::string& slot_name);

}  // namespace shapeproxy::replication
