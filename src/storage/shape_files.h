// ShapeFiles: one shape's directory under the data dir.
//   meta.json      what the shape is (written atomically; the shapes module
//                  owns its contents)
//   snapshot.log   the initial snapshot's messages, written once, then synced
//   changes.log    replicated operations, appended one transaction at a time
// A transaction's operations reach disk in one write, the last one flagged;
// at load, a torn tail is cut back to the end of the last whole transaction.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "storage/record_file.h"

namespace shapeproxy::storage {

struct StoredOperation {
  std::uint64_t tx = 0;
  std::uint64_t op = 0;
  std::string json;
};

struct StoredShape {
  nlohmann::json meta;
  std::vector<std::string> snapshot;  // messages, in order
  std::vector<StoredOperation> operations;
};

class ShapeFiles {
 public:
  // Creates the directory and its meta.json.
  static Result<std::unique_ptr<ShapeFiles>> create(const std::filesystem::path& dir,
                                                    const nlohmann::json& meta);
  // Loads a shape directory, cutting a torn tail of changes.log.
  static Result<std::pair<std::unique_ptr<ShapeFiles>, StoredShape>> open(
      const std::filesystem::path& dir);

  Result<void> write_meta(const nlohmann::json& meta);
  // Writes and syncs the snapshot messages (once).
  Result<void> write_snapshot(const std::vector<std::string>& messages);
  // Compaction: replaces snapshot and operations with `messages` (the rows as
  // they are now), crash-safely: the new snapshot file is synced, then
  // meta.json (which must name it in "snapshot_file") switches to it, then
  // changes.log is emptied and the old snapshot removed. A crash in between
  // leaves operations that the new meta says are covered; the loader drops them.
  Result<void> compact(const std::vector<std::string>& messages, const nlohmann::json& meta);
  // Queues one transaction's operations; sync() makes them durable.
  void append_transaction(const std::vector<StoredOperation>& operations);
  Result<void> sync();
  // Two-step sync, so the fdatasync can run off the event loop: write()
  // hands queued records to the OS; then, on any thread, sync_written()
  // makes them durable (it touches only the descriptor).
  Result<void> write() { return changes_.write(); }
  struct PendingSync {
    int descriptor = -1;  // -1: nothing to sync
  };
  PendingSync pending_sync() const {
    return PendingSync{changes_.needs_sync() ? changes_.descriptor() : -1};
  }
  static Result<void> sync_written(PendingSync pending);
  void mark_synced() { changes_.mark_synced(); }
  // Removes the directory and everything in it.
  Result<void> remove();

  const std::filesystem::path& dir() const { return dir_; }
  std::uint64_t changes_bytes() const { return changes_.size(); }

 private:
  ShapeFiles(std::filesystem::path dir, RecordFile changes);

  std::filesystem::path dir_;
  RecordFile changes_;
  std::string snapshot_file_ = "snapshot.log";
};

}  // namespace shapeproxy::storage
