#include "replication/replication_errors.h"

#include "replication/replication_stream.h"

namespace shapeproxy::replication {
namespace {

bool contains(const std::string& text, const char* needle) {
  return text.find(needle) != std::string::npos;
}

}  // namespace

Error explain_connect_error(const Error& error) {
  const auto& message = error.message;
  if (contains(message, "replication role") || contains(message, "REPLICATION attribute") ||
      contains(message, "permission denied to start WAL sender")) {
    return Error{"missing_replication_privilege", message,
                 "the database role needs the REPLICATION attribute: ALTER ROLE <role> WITH "
                 "REPLICATION"};
  }
  if (contains(message, "no pg_hba.conf entry for replication")) {
    return Error{"replication_not_allowed", message,
                 "allow replication connections for this role in pg_hba.conf"};
  }
  return Error{
      "connection_failed", message,
      error.hint.empty() ? "check DATABASE_URL and that PostgreSQL is running" : error.hint};
}

Error explain_start_error(const Error& error, const ReplicationStreamOptions& options) {
  if (error.code == "55000" && contains(error.message, "can no longer get changes")) {
    return slot_invalidated_error(options.slot_name);
  }
  if (error.code == "55006") {
    return Error{"slot_in_use", error.message,
                 "another consumer (another shapeproxy?) is streaming from slot \"" +
                     options.slot_name + "\"; give each proxy its own --slot"};
  }
  if (error.code == "42704" && contains(error.message, "publication")) {
    return Error{"publication_missing", error.message,
                 "the publication \"" + options.publication_name +
                     "\" must exist: CREATE PUBLICATION, or grant CREATE ON DATABASE to the role"};
  }
  if (error.code == "42704") {
    return Error{"slot_missing", error.message, "the slot was dropped; it will be recreated"};
  }
  return error;
}

Error wal_level_error(const std::string& level) {
  return Error{"wal_level_not_logical",
               "PostgreSQL wal_level is '" + level + "', logical replication needs 'logical'",
               "set wal_level = logical in postgresql.conf (ALTER SYSTEM SET wal_level = logical) "
               "and restart PostgreSQL"};
}

Error slot_mismatch_error(const std::string& slot_name) {
  return Error{
      "slot_mismatch",
      "replication slot \"" + slot_name + "\" exists but is not a pgoutput slot of this database",
      "choose another --slot name, or drop the slot"};
}

Error slot_invalidated_error(const std::string& slot_name) {
  return Error{"slot_invalidated",
               "replication slot \"" + slot_name +
                   "\" was invalidated: the WAL it needed was removed (max_slot_wal_keep_size)",
               "drop the slot (SELECT pg_drop_replication_slot('" + slot_name +
                   "')) so a new one is created, or raise max_slot_wal_keep_size"};
}

}  // namespace shapeproxy::replication
