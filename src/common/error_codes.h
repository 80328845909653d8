// What: the machine-readable codes (Error::code) that cross module
// boundaries, named once. A module that produces one of these and a module
// that reacts to it both use the constant; nobody compares a string literal.
// Why: a typo in a literal compared in another module fails silently (the
// error then takes the generic path, e.g. 503 instead of 400).
// PostgreSQL errors keep their SQLSTATE as the code; see is_client_data_error.
#pragma once

#include <string_view>

namespace shapeproxy::error_codes {

// The table does not exist or the role may not read it (answered 400 "table").
inline constexpr std::string_view kTableNotFound = "table_not_found";
// The table exists but cannot be served as a shape (partitioned parent, no
// primary key): answered 400 "table" with the reason.
inline constexpr std::string_view kTableUnsupported = "table_unsupported";
// A fallback query ran past its statement timeout, or was abandoned.
inline constexpr std::string_view kQueryTimeout = "query_timeout";
// Fallback queries are at their cap: 503 + retry-after.
inline constexpr std::string_view kOverloaded = "overloaded";
// Nobody waits for a shape any more; its initial query was given up.
inline constexpr std::string_view kQueryCancelled = "query_cancelled";
// An operation was cancelled (an Asio wait, or a storage job at shutdown).
inline constexpr std::string_view kCancelled = "cancelled";
// The filesystem is out of a resource (disk full, quota, inodes).
inline constexpr std::string_view kStorageResource = "storage_resource";
// A stored file failed its checksum.
inline constexpr std::string_view kStorageCorrupt = "storage_corrupt";
// A read-only view of a shape's files found them switched (a compaction) while
// it opened them: open it again.
inline constexpr std::string_view kStorageChanged = "storage_changed";

// SQLSTATE 57014 query_canceled: what statement_timeout (and PQcancel) raise.
inline constexpr std::string_view kSqlstateQueryCanceled = "57014";

// SQLSTATE class 22 (data exception: division by zero, numeric value out of
// range, invalid byte sequence, invalid text representation...) and 2202E
// etc.: caused by the request's where clause or parameters against the
// table's data, so retrying cannot help: a client error (400), not 503.
inline bool is_client_data_error(std::string_view sqlstate) {
  return sqlstate.size() == 5 && sqlstate.substr(0, 2) == "22";
}

}  // namespace shapeproxy::error_codes
