// ShapeFiles: one shape's directory under the data dir.
//   meta.json      what the shape is (written atomically; the shapes module
//                  owns its contents)
//   snapshot.log   the initial snapshot's messages, written once, then synced
//   changes.log    replicated operations, appended one transaction at a time;
//   changes-N.log  when a compaction starts, appends move to the next file
//                  (N = 1, 2, ...) so the earlier ones are immutable while a
//                  worker folds them; the loader reads them all in order
// A transaction's operations reach disk in one write, the last one flagged;
// at load, a torn tail is cut back to the end of the last whole transaction.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "storage/read_only_file.h"
#include "storage/record_file.h"

namespace shapeproxy::storage {

struct StoredOperation {
  std::uint64_t tx = 0;
  std::uint64_t op = 0;
  std::string json;
};

struct StoredShape {
  nlohmann::json meta;
  // The snapshot: either messages (files written before chunks were stored
  // whole), or chunks, each one response body (a JSON array of messages):
  // where they lie on disk, and their bytes as read at load (to rebuild rows).
  std::vector<std::string> snapshot;
  std::vector<StoredChunk> snapshot_chunks;
  std::vector<std::string> chunk_bodies;
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
  // Writes and syncs the snapshot as whole response bodies (once), and
  // returns where each lies, to be read back on demand.
  Result<std::vector<StoredChunk>> write_snapshot_chunks(
      const std::vector<std::string_view>& chunks);
  // Compaction off the event loop, in three steps:
  //  1. begin_compaction() (owner's thread): needs everything written to be
  //     synced; moves appends to a new changes file and returns the files
  //     that now hold the log up to its last written operation. Nothing
  //     when there is nothing written since the last compaction, or when
  //     written data still awaits its sync.
  //  2. any thread: read_compaction_source() folds those immutable files
  //     (an error "storage_corrupt" when one holds a tear: nothing is
  //     folded past a tear, and the files stay),
  //     write_snapshot_file() writes and syncs the result under a new name.
  //  3. finish_compaction() (owner's thread): meta.json (naming the new
  //     snapshot_file) switches to it, then the folded files are removed.
  // A crash before 3 leaves the old files, read in order at load; after the
  // meta switch, operations the meta says are covered are dropped by the loader.
  struct CompactionSource {
    std::filesystem::path dir;
    std::string snapshot_file;
    std::vector<std::string> changes_files;  // oldest first
    std::uint64_t last_tx = 0;               // the last operation they hold
    std::uint64_t last_op = 0;
  };
  Result<std::optional<CompactionSource>> begin_compaction();
  // Snapshot messages or chunks (JSON arrays of messages) first, then each
  // whole transaction's operations in order.
  static Result<void> read_compaction_source(
      const CompactionSource& source,
      const std::function<void(const std::string_view message)>& snapshot_message,
      const std::function<void(const StoredOperation& operation)>& operation,
      const std::function<bool()>& stopped = {});  // asked between files: true gives up
  static Result<void> write_snapshot_file(const std::filesystem::path& path,
                                          const std::vector<std::string>& messages);
  // Writes and syncs the chunks, then syncs the directory (so a meta.json
  // written afterwards never names a file a crash could lose). `stopped`
  // (optional) is asked between chunks: true abandons the file half written
  // (an error "cancelled"; the caller removes it).
  static Result<std::vector<StoredChunk>> write_chunk_file(
      const std::filesystem::path& path, const std::vector<std::string_view>& chunks,
      const std::function<bool()>& stopped = {});
  Result<void> finish_compaction(const CompactionSource& source, const std::string& snapshot_file,
                                 const nlohmann::json& meta);
  // Queues one transaction's operations; sync() makes them durable.
  void append_transaction(const std::vector<StoredOperation>& operations);
  Result<void> sync();
  // Two-step sync, so the fdatasync can run off the event loop: write()
  // hands queued records to the OS; then, on any thread, sync_written()
  // makes them durable (it touches only the descriptor).
  Result<void> write();
  struct PendingSync {
    int descriptor = -1;  // -1: nothing to sync
    // Set when the changes file is new since the directory was last synced:
    // its name is made durable first.
    std::filesystem::path directory;
  };
  PendingSync pending_sync() const;
  static Result<void> sync_written(const PendingSync& pending);
  // After sync_written(done) succeeded (on the owner's thread).
  void mark_synced(const PendingSync& done);
  // Removes the directory and everything in it.
  Result<void> remove();

  const std::filesystem::path& dir() const { return dir_; }
  std::uint64_t changes_bytes() const { return changes_.size(); }

 private:
  ShapeFiles(std::filesystem::path dir, RecordFile changes);
  std::string changes_file_name() const;

  std::filesystem::path dir_;
  RecordFile changes_;
  std::uint64_t changes_number_ = 0;        // changes.log is 0, then changes-N.log
  std::vector<std::string> older_changes_;  // earlier changes files, oldest first
  std::string snapshot_file_ = "snapshot.log";
  bool directory_unsynced_ = false;  // a new changes file's name is not yet durable
  // The last operation queued, and the last one handed to the OS.
  std::optional<std::pair<std::uint64_t, std::uint64_t>> queued_last_;
  std::optional<std::pair<std::uint64_t, std::uint64_t>> written_last_;
  // What the last begin_compaction() covered: nothing new since, nothing to fold.
  std::optional<std::pair<std::uint64_t, std::uint64_t>> compacted_last_;
};

}  // namespace shapeproxy::storage
