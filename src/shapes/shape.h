// Shape: one instance of a shape definition, named by its handle. It keeps
// the shape's log and the rows currently in the shape (key -> all column
// values), which is what turns replicated changes into the shape's own
// operations: an update that moves a row into the where clause becomes an
// insert, out of it a delete; an update touching no served column is
// dropped. Until its initial snapshot is in, it buffers transactions; then
// it skips those the snapshot already saw.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "replication/transaction.h"
#include "shapes/log_disk_read.h"
#include "shapes/log_reader.h"
#include "shapes/pg_snapshot.h"
#include "shapes/shape_definition.h"
#include "shapes/shape_log.h"
#include "shapes/shape_meta.h"
#include "shapes/shape_state.h"
#include "storage/shape_files.h"

namespace shapeproxy::shapes {

class SnapshotRenderer;

// A row in table column order; nullopt = NULL.
using Row = where::RowValues;

struct SnapshotRows {
  PgSnapshot snapshot;
  std::vector<Row> rows;  // every column, in table order
};

// Sees a query's rows while they arrive (rfc/0005), on the query's executor.
struct RowsObserver {
  // Each batch, in order; the view is valid during the call only.
  std::function<void(std::span<const Row> rows)> rows;
  // After the last batch, with the query's snapshot: every row was seen
  // (called before the transaction ends, never after a failure).
  std::function<void(const PgSnapshot& snapshot)> end;

  explicit operator bool() const { return static_cast<bool>(rows); }
};

// One compaction of a persisted shape: Shape::begin_compaction() fills the
// inputs on the strand (among them a snapshot of the state store taken when
// its marker is at `point`), Shape::build_compaction() renders the shape's
// rows as of then into `snapshot_file`, one chunk at a time, on any thread
// (it reads only these fields, the store snapshot and immutable files), then
// Shape::finish_compaction() swaps the result in on the strand.
struct ShapeCompaction {
  storage::ShapeFiles::CompactionSource source;
  LogOffset point;                          // the last operation folded in
  std::optional<LogOffset> previous_point;  // operations up to it are in the old snapshot
  std::string snapshot_file;
  std::shared_ptr<const TableSchema> table;
  std::vector<std::size_t> selected;
  std::string relation_json;
  std::size_t chunk_bytes = 0;
  std::shared_ptr<StateStore> store;
  std::uint64_t state_id = 0;
  std::shared_ptr<const rocksdb::Snapshot> view;  // released once built
  std::size_t expected_rows = 0;
  // Set (by the registry) when the process stops: the build gives up soon
  // after (an error "cancelled") and removes its half-written file.
  std::shared_ptr<const std::atomic<bool>> stop;
  // Tests: called on the worker for every row rendered.
  std::function<void()> step;
  // Filled by build_compaction():
  ShapeLog::Chunks chunks;
  std::size_t rows = 0;
};

// Gives memory freed after a big build (snapshot rows, rendered messages)
// back to the system (malloc_trim). It can take long with a big heap: call
// it off the strand that serves requests.
void release_free_memory();

class Shape {
 public:
  enum class Phase { kSnapshotting, kReady, kGone };

  // `store`: where the shape's rows live (null: a store in memory shared
  // by such shapes, for tests); `state_id`: its rows there (a loaded
  // shape's), else a new id.
  Shape(ShapeDefinition definition, std::string handle, std::size_t chunk_bytes,
        std::shared_ptr<StateStore> store = nullptr,
        std::optional<std::uint64_t> state_id = std::nullopt);

  // Brings back a shape saved under its directory: log, snapshot, and rows
  // (from `store` when its marker agrees with the log, else rebuilt).
  static Result<std::shared_ptr<Shape>> restore(ShapeDefinition definition, const ShapeMeta& meta,
                                                storage::StoredShape stored,
                                                std::unique_ptr<storage::ShapeFiles> files,
                                                std::size_t chunk_bytes,
                                                std::shared_ptr<StateStore> store);

  // A follower's view of a shape another process owns and appends to
  // (rfc/0003): the log from `files` (ShapeFiles::open_read_only()), served
  // through `through` (an end the owner announced durable, never past what
  // the files hold; unset: no operations). Its rows are never loaded; it is
  // never written, compacted or snapshotted, only read.
  static std::shared_ptr<Shape> open_read_only(ShapeDefinition definition, const ShapeMeta& meta,
                                               storage::StoredShape stored,
                                               std::unique_ptr<storage::ShapeFiles> files,
                                               std::size_t chunk_bytes,
                                               std::optional<LogOffset> through);
  // Takes the log and files of `fresh`, a newer read-only view of the same
  // shape (its end moved, or a compaction switched its files); reads in
  // flight keep the files they hold. Strand only.
  void adopt_view(Shape& fresh);

  // Persists this shape from now on (before the snapshot is applied).
  void attach_files(std::unique_ptr<storage::ShapeFiles> files) { files_ = std::move(files); }
  storage::ShapeFiles* files() const { return files_.get(); }
  // Where this persisted shape's log lies, to read it back on any thread with
  // for_each_after() (log_reader.h). Strand only; needs files().
  LogSource log_source() const { return LogSource{files_->log_files(), log_.compacted_at()}; }
  ShapeMeta meta() const;

  const std::string& handle() const { return handle_; }
  const ShapeDefinition& definition() const { return definition_; }
  const TableSchema& table() const { return *definition_.table; }
  Phase phase() const { return phase_; }
  const ShapeLog& log() const { return log_; }
  // A read of operations older than the log's memory tail (its Slice said
  // on_disk), to run off the strand. Strand only.
  Result<std::shared_ptr<LogDiskRead>> plan_disk_read(LogOffset after);
  const std::string& schema_json() const { return schema_json_; }
  std::size_t row_count() const { return deferred_state_ ? deferred_rows_ : state_.size(); }

  // When a persisted shape's snapshot reaches its disk: before the shape is
  // served, or (degraded mode) after: then the shape is served from memory
  // at once, and until begin/write/finish_snapshot_store() (below) are done,
  // meta.json does not name the snapshot (a crash meanwhile discards the
  // shape at start-up; its clients resync) and it is not compacted.
  enum class SnapshotStorage { kBeforeServing, kAfterServing };

  // Installs the initial snapshot, then applies the transactions buffered
  // meanwhile. Returns whether any operation was appended.
  Result<bool> apply_snapshot(SnapshotRows snapshot,
                              SnapshotStorage storage = SnapshotStorage::kBeforeServing);
  // The same from a result shared with others (a fallback query's): the rows
  // are copied into the shape, never the whole result first. `rendered`:
  // the snapshot's chunks already rendered from these rows and this
  // snapshot (a SnapshotStream's), taken instead of rendering them again.
  Result<bool> apply_snapshot(const std::shared_ptr<const SnapshotRows>& snapshot,
                              SnapshotStorage storage = SnapshotStorage::kBeforeServing,
                              ShapeLog::Chunks rendered = {});

  // kAfterServing from a shared result with a primary key: the rows reach
  // the state store after the shape is ready, so the waiting readers are
  // answered first. The snapshot taker calls store_deferred_state() right
  // after waking them; anything that reads or changes the rows before
  // (a transaction, a refresh, a sync, a compaction, the index asking
  // holds()) runs it first. A crash before it is done is covered as for
  // the snapshot file: meta.json does not name the snapshot yet, so the
  // shape and its rows are discarded at load. An error leaves the shape
  // unfit: the caller drops it.
  bool has_deferred_state() const { return static_cast<bool>(deferred_state_); }
  Result<void> store_deferred_state();

  // kAfterServing, in three steps so the write and its fdatasync run off the
  // strand: begin (strand; null when nothing is pending), write (any thread;
  // reads only the store), finish (strand: the chunks are read from disk
  // from then on, and meta.json names the snapshot).
  struct SnapshotStore {
    std::filesystem::path path;
    std::vector<std::shared_ptr<const std::string>> bodies;
    std::vector<storage::StoredChunk> stored;  // filled by write_snapshot_store()
  };
  std::shared_ptr<SnapshotStore> begin_snapshot_store();
  static Result<void> write_snapshot_store(SnapshotStore& store, const std::atomic<bool>& stopping);
  Result<void> finish_snapshot_store(SnapshotStore& store);

  // Applies the changes of `transaction` that concern this shape's table
  // (`changes` point into the transaction). Returns whether the log grew;
  // new operations are queued to disk, see files()->sync(). A transaction
  // at or before the last one in the log (resent after a restart) is skipped.
  bool apply_transaction(const replication::Transaction& transaction,
                         const std::vector<const replication::Change*>& changes);

  // Whether a relation announced by the stream still matches the schema this
  // shape was built on (same column names and types, in order).
  bool matches_relation(const replication::Relation& relation) const;

  // Removed: its rows leave the store.
  void mark_gone();

  // Crash consistency of the rows (see ShapeState): the registry seals
  // them when the log's records are handed to the OS, and commits them to
  // the store once their fdatasync succeeded.
  bool state_pending() const { return state_.pending(); }
  void seal_state() {
    settle_state();
    state_.seal(log_end());
  }
  Result<void> commit_state() {
    settle_state();
    return state_.commit();
  }
  // The offset of the last logged message (start() when there is none).
  LogOffset log_end() const;

  // The key of `row` (table column order) as this shape's log names it.
  std::string row_key(const Row& row) const;
  // What renders this shape's snapshot messages on another thread.
  SnapshotRenderer renderer() const;
  // Whether the shape currently holds the row with this key.
  bool holds(const std::string& key) const {
    settle_state();
    return state_.holds(key);
  }

  // Degraded mode: brings the shape to `fresh` (a direct query's rows and its
  // snapshot) by appending the inserts, updates and deletes between them as
  // one operation group; from then on, replicated transactions visible in
  // that snapshot are skipped. Returns whether the log grew.
  //
  // The stream may apply transactions while the query runs. One that the
  // query's snapshot does not see is newer than its rows: applying the diff
  // would undo it (a row inserted meanwhile deleted again, and lost). The
  // result may also be older than the refresh itself (fallback queries are
  // shared by concurrent callers and reused for a short while), so
  // apply_refresh() refuses (false, nothing changed) a `fresh` that does
  // not see every transaction applied since the shape's snapshot was last
  // set, or that sees less than that snapshot did. begin_refresh() and
  // end_refresh() bracket every refresh (the mark is kept for callers).
  //
  // The group sits at LSN max(last logged commit + 1, `floor`); the caller
  // passes a floor above every global_last_seen_lsn it has reported, since
  // clients (pglite-sync) drop changes at or below the last one they saw.
  // The group ends with a snapshot-end of `fresh` (rfc/0004).
  std::uint64_t begin_refresh();
  Result<bool> apply_refresh(const SnapshotRows& fresh, std::uint64_t mark,
                             replication::Lsn floor = 0);
  // Commit LSN of the last group in the log (transaction or refresh).
  replication::Lsn last_logged_lsn() const { return last_logged_tx_; }
  void end_refresh();

  // Compaction rewrites the persisted log as the rows as of its last
  // operation: readers at older offsets get must-refetch, everyone else
  // continues. In three steps (see ShapeCompaction) so the strand keeps
  // applying transactions while the big part runs elsewhere. begin: null
  // when there is nothing to fold, no files, or a compaction in flight.
  Result<std::shared_ptr<ShapeCompaction>> begin_compaction();
  // Any thread; never throws (an exception becomes an error). On error the
  // new snapshot file is removed and the shape's files stay as they were.
  static Result<void> build_compaction(ShapeCompaction& compaction);
  Result<void> finish_compaction(ShapeCompaction& compaction);
  void abandon_compaction() { compacting_ = false; }
  // Transactions held until the snapshot is in (they cannot be acknowledged yet).
  bool has_buffered() const { return !buffered_.empty(); }

 private:
  struct Operation;
  struct Buffered {
    replication::Xid xid;
    replication::Lsn commit_lsn;
    std::vector<replication::Change> changes;
  };

  // A loaded shape's snapshot (chunks on disk, or older files' messages) and
  // compaction point from its meta.json and files; returns the offset its
  // operations start after.
  LogOffset set_stored_snapshot(const ShapeMeta& meta, const storage::StoredShape& stored);
  Result<bool> install_snapshot(const std::vector<Row>& rows, std::vector<Row>* owned,
                                const std::shared_ptr<const SnapshotRows>& shared,
                                const PgSnapshot& snapshot, SnapshotStorage storage,
                                ShapeLog::Chunks rendered = {});
  // Runs a deferred store write (see store_deferred_state()) if one is
  // pending; every use of state_ after install_snapshot() comes after it.
  // An error is logged and kept for store_deferred_state() to report.
  void settle_state() const;
  bool apply_changes(replication::Xid xid, replication::Lsn commit_lsn,
                     const std::vector<const replication::Change*>& changes);
  void apply_insert(const replication::Change& change, std::vector<Operation>& out);
  void apply_update(const replication::Change& change, std::vector<Operation>& out);
  void apply_delete(const replication::Change& change, std::vector<Operation>& out);

  Row to_row(const replication::TupleData& tuple, const Row* previous) const;
  // `snapshot_end`: also log a snapshot-end control message after them.
  Result<void> append_operations(const std::vector<Operation>& operations, replication::Xid xid,
                                 replication::Lsn tx, const PgSnapshot* snapshot_end = nullptr);
  bool in_shape(const Row& row) const;
  std::string render(const Operation& operation, const char* lsn_text, std::size_t position,
                     replication::Xid xid, bool last) const;
  void append_values(std::string& out, const Row& row,
                     const std::vector<std::size_t>& columns) const;

  ShapeDefinition definition_;
  std::string handle_;
  std::string schema_json_;
  std::string relation_json_;  // ["schema","table"]
  std::string key_prefix_;     // "schema"."table"
  Phase phase_ = Phase::kSnapshotting;
  ShapeLog log_;
  ShapeState state_;
  std::optional<PgSnapshot> snapshot_;
  bool filtering_ = true;  // still skipping transactions visible in the snapshot
  std::vector<Buffered> buffered_;
  replication::Lsn last_logged_tx_ = 0;  // commit LSN of the last transaction in the log
  // Transactions applied since snapshot_ was last set (see apply_refresh()):
  // streamed_xids_[i] is the one numbered streamed_base_ + i. Only the last
  // kMaxStreamedXids are kept: a refresh result older than those is far
  // older than any fallback query is shared or reused.
  static constexpr std::size_t kMaxStreamedXids = 4096;
  int refreshes_in_flight_ = 0;
  std::uint64_t streamed_base_ = 0;
  std::vector<replication::Xid> streamed_xids_;
  void forget_streamed_xids() {
    streamed_base_ += streamed_xids_.size();
    streamed_xids_.clear();
  }
  std::string snapshot_file_ = "snapshot.log";
  std::unique_ptr<storage::ShapeFiles> files_;
  bool compacting_ = false;
  bool read_only_ = false;       // open_read_only(): a follower's view
  bool snapshot_stored_ = true;  // false while a kAfterServing snapshot is only in memory
  // A snapshot's store write still to run (see store_deferred_state()) and
  // its row count. Mutable: const readers (holds()) run it first, lazily.
  mutable std::function<Result<void>()> deferred_state_;
  mutable std::optional<Error> deferred_failure_;  // it failed when run by settle_state()
  std::size_t deferred_rows_ = 0;

  // Shapes without files: their changes go to the store at once.
  void commit_unpersisted();
};

}  // namespace shapeproxy::shapes
