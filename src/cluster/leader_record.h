// What: <data-dir>/cluster/leader.json, who leads the instances sharing a data
// directory: its instance id, the URL the others forward to, the backend pid
// of its PostgreSQL session holding the advisory lock (absent while it leads
// without the database, see rfc/0003), and since when.
// Why: the advisory lock says *that* some session leads (pg_locks gives its
// pid), not where to reach it. Only the holder of the data directory's lock
// writes the record (atomically: temporary file, fsync, rename), so a reader
// sees a whole record; it trusts it only when the pid matches pg_locks' holder,
// so a record left by a dead leader is never followed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "common/result.h"

namespace shapeproxy::cluster {

struct LeaderRecord {
  std::string instance_id;
  std::string url;  // http://host:port
  std::optional<std::int64_t> backend_pid;
  std::int64_t since_ms = 0;  // Unix epoch milliseconds

  bool operator==(const LeaderRecord&) const = default;
};

// Writes the record atomically (rename over the previous one).
Result<void> write_leader_record(const std::filesystem::path& data_dir, const LeaderRecord& record);
// The current record; nullopt when there is none or it is unreadable.
std::optional<LeaderRecord> read_leader_record(const std::filesystem::path& data_dir);

// <data-dir>/cluster/claim.json: written by an instance that holds the
// advisory lock and waits for the data directory's lock. A leader that lost
// its database session reads it: a claim made after it began leading means
// another instance reached PostgreSQL and took the lock, so it steps down
// (releasing the data directory) even while it cannot reach PostgreSQL
// itself (a leader partitioned from the database).
Result<void> write_claim(const std::filesystem::path& data_dir, const LeaderRecord& claim);
std::optional<LeaderRecord> read_claim(const std::filesystem::path& data_dir);

}  // namespace shapeproxy::cluster
