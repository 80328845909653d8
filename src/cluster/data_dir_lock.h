// What: the data directory's leader lock, an open-file-description lock
// (fcntl F_OFD_SETLK) on <data-dir>/cluster/leader.lock, and the start-up
// check that the directory's filesystem enforces such locks at all.
// Why: only one process may write a data directory's shape logs and open its
// row store (rfc/0003-several-instances.md). The PostgreSQL advisory lock
// elects the leader; this lock is the fence on the shared filesystem that
// holds even while PostgreSQL is unreachable (an old leader that lost its
// database session still holds it until it exits). OFD locks conflict between
// two opens in one process too, so in-process tests see the same exclusion.
// Invariant: a DataDirLock object holds the lock for its whole lifetime; the
// kernel releases it when the process dies (SIGKILL included).
#pragma once

#include <filesystem>
#include <memory>

#include "common/result.h"

namespace shapeproxy::cluster {

class DataDirLock {
 public:
  ~DataDirLock();
  DataDirLock(const DataDirLock&) = delete;
  DataDirLock& operator=(const DataDirLock&) = delete;

  // The lock if no other open holds it; nullptr when it is held elsewhere;
  // an Error when the file cannot be opened or locked for another reason.
  static Result<std::unique_ptr<DataDirLock>> try_acquire(const std::filesystem::path& data_dir);

  // Refuses a filesystem that does not enforce locks between two opens of a
  // file (two locks on a probe file both granted): several instances on it
  // would corrupt each other's files. Creates <data-dir>/cluster/.
  static Result<void> check_filesystem(const std::filesystem::path& data_dir);

  static std::filesystem::path directory(const std::filesystem::path& data_dir) {
    return data_dir / "cluster";
  }

 private:
  explicit DataDirLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace shapeproxy::cluster
