// ShapeFiles: one shape's directory under the data dir.
//   meta.json      what the shape is (written atomically; the shapes module
//                  owns its contents)
//   snapshot.log   the initial snapshot's messages, written once, then synced
//   changes.log    replicated operations, appended one transaction at a time;
//   changes-N.log  when a compaction starts, appends move to the next file
//                  (N = 1, 2, ...) so the earlier ones are immutable while a
//                  worker folds them; the loader reads them all in order
//   <changes file>.idx  its sparse index (changes_index.h)
// A transaction's operations reach disk in one write, the last one flagged;
// at load, a torn tail is cut back to the end of the last whole transaction.
// Loading reads neither snapshot chunk bodies nor operations: chunk
// positions come from the record headers, operations are found through the
// sparse index and read back on demand (ranges_after(), read_log()).
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
#include "storage/changes_index.h"
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
  // where they lie on disk (not read: see verify_snapshot()).
  std::vector<std::string> snapshot;
  std::vector<StoredChunk> snapshot_chunks;
  // The last whole operation in the changes files (tx, op), if any.
  std::optional<std::pair<std::uint64_t, std::uint64_t>> last_operation;
  std::uint64_t changes_bytes_scanned = 0;  // what the load read of the changes files
};

class ShapeFiles {
 public:
  // Creates the directory and its meta.json.
  static Result<std::unique_ptr<ShapeFiles>> create(const std::filesystem::path& dir,
                                                    const nlohmann::json& meta);
  // Loads a shape directory, cutting a torn tail of changes.log. Reads
  // meta.json, snapshot record headers and each changes file's sidecar
  // index (plus the records after its last mark).
  static Result<std::pair<std::unique_ptr<ShapeFiles>, StoredShape>> open(
      const std::filesystem::path& dir);
  // A read-only view of a shape directory another process (the leader)
  // owns and appends to (rfc/0003): reads meta.json, the snapshot's record
  // headers and each changes file's sidecar and tail, and holds every file
  // open, so a compaction removing them later does not disturb reads of
  // the view. Changes nothing on disk (no tail cut, no leftover removed, no
  // sidecar written). It holds the whole transactions complete when
  // scanned; later appends are not seen (open a new view). Invariant: the
  // files are one consistent set: meta.json is read again after every file
  // is open and must be unchanged, else the error "storage_changed" (a
  // compaction or snapshot store switched files meanwhile: open again).
  // A view refuses writes, syncs and compactions.
  static Result<std::pair<std::unique_ptr<ShapeFiles>, StoredShape>> open_read_only(
      const std::filesystem::path& dir);
  bool read_only() const { return read_only_; }

  // Reads every record of a snapshot file and checks its checksum (any
  // thread): the load does not, so a damaged chunk is found by this pass
  // (run after start-up) and its shape dropped. "storage_corrupt" when one
  // fails.
  static Result<void> verify_snapshot(const std::filesystem::path& path);

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
  // The same with the chunks made as they are written (at most one in
  // memory): next(body) fills the next one and returns true, or false at
  // the end (an error abandons the file, as `stopped` does).
  using ChunkSource = std::function<Result<bool>(std::string& body)>;
  static Result<std::vector<StoredChunk>> write_chunk_file(
      const std::filesystem::path& path, const ChunkSource& next,
      const std::function<bool()>& stopped = {});
  Result<void> finish_compaction(const CompactionSource& source, const std::string& snapshot_file,
                                 const nlohmann::json& meta);
  // The files the log lies in as of now (owner's thread), to read on any
  // thread with read_log(): appends after this call are not read.
  struct LogFiles {
    std::filesystem::path dir;
    std::string snapshot_file;
    std::vector<std::string> changes_files;  // oldest first; the last is appended to
    std::uint64_t written_bytes = 0;         // of the last: whole transactions handed to the OS
  };
  LogFiles log_files() const;
  // One record of a shape's log: a snapshot message (`snapshot`, not
  // `chunk`), a snapshot chunk (a JSON array of messages), or an operation.
  struct LoggedRecord {
    bool snapshot = false;
    bool chunk = false;
    std::uint64_t tx = 0;
    std::uint64_t op = 0;
    std::string_view payload;  // valid during the visit only
  };
  // Visits the snapshot's records, then every operation, in order, reading
  // through a bounded buffer. A file removed meanwhile (a compaction
  // finished: read log_files() again) or a damaged record is an error, never
  // a silently shorter log. `stopped` (optional), asked between records:
  // true ends the read early (success).
  static Result<void> read_log(const LogFiles& files,
                               const std::function<void(const LoggedRecord&)>& visit,
                               const std::function<bool()>& stopped = {});
  // Where the operations after (tx, op) lie (owner's thread): byte ranges of
  // the changes files from the last mark at or before it through what was
  // written, the files held open; read them on any thread with
  // read_operations(). Reads at most ~kMarkSpacing before the first wanted.
  struct OperationRanges {
    struct Range {
      std::shared_ptr<const ReadOnlyFile> file;
      std::uint64_t begin = 0;
      std::uint64_t end = 0;
    };
    std::vector<Range> ranges;
  };
  Result<OperationRanges> ranges_after(std::uint64_t tx, std::uint64_t op);
  // Visits the operations in `ranges` strictly after (tx, op), in order,
  // until `visit` returns false. A damaged record is "storage_corrupt".
  static Result<void> read_operations(const OperationRanges& ranges, std::uint64_t tx,
                                      std::uint64_t op,
                                      const std::function<bool(const Record&)>& visit);
  // Queues one transaction's operations; sync() makes them durable.
  void append_transaction(const std::vector<StoredOperation>& operations);
  Result<void> sync();
  // Two-step sync, so the fdatasync can run off the event loop: write()
  // hands queued records to the OS; then, on any thread, sync_written()
  // makes them durable (it touches only the descriptor).
  Result<void> write();
  struct PendingSync {
    int descriptor = -1;              // -1: nothing to sync
    std::uint64_t written_bytes = 0;  // what the sync covers (marks up to it go to the sidecar)
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
  // The last operation handed to the OS (tx, op): readable from the files.
  std::optional<std::pair<std::uint64_t, std::uint64_t>> written_last() const {
    return written_last_;
  }
  std::uint64_t changes_bytes() const { return changes_.size(); }

 private:
  ShapeFiles(std::filesystem::path dir, RecordFile changes);
  std::string changes_file_name() const;
  // Appends the marks of the current file's records below `synced_bytes`
  // (durable) that the sidecar lacks. A failure is left for the next call
  // (the sidecar is an index, not the data).
  void flush_sidecar(std::uint64_t synced_bytes);

  // The sparse index of one changes file (older files first, the current last).
  struct FileIndex {
    std::uint64_t number = 0;
    std::vector<ChangesMark> marks;
    std::size_t in_sidecar = 0;                  // marks[0..in_sidecar) are in its sidecar
    std::uint64_t size = 0;                      // bytes written (whole transactions)
    std::shared_ptr<const ReadOnlyFile> reader;  // opened on the first read
  };
  std::vector<FileIndex> indexes_;
  MarkPlacer placer_;  // for the current file's records

  std::filesystem::path dir_;
  RecordFile changes_;
  std::uint64_t changes_number_ = 0;        // changes.log is 0, then changes-N.log
  std::vector<std::string> older_changes_;  // earlier changes files, oldest first
  std::string snapshot_file_ = "snapshot.log";
  bool read_only_ = false;           // open_read_only(): never written
  bool directory_unsynced_ = false;  // a new changes file's name is not yet durable
  // The last operation queued, and the last one handed to the OS.
  std::optional<std::pair<std::uint64_t, std::uint64_t>> queued_last_;
  std::optional<std::pair<std::uint64_t, std::uint64_t>> written_last_;
  // What the last begin_compaction() covered: nothing new since, nothing to fold.
  std::optional<std::pair<std::uint64_t, std::uint64_t>> compacted_last_;
};

}  // namespace shapeproxy::storage
