// StateStore: the rows every shape holds, off the heap, in one embedded
// RocksDB per data directory (<shapes_dir>/state/), or in a RocksDB over an
// in-memory environment for shapes kept in memory only. See
// rfc/0002-shape-state.md for the choice and the crash-consistency argument.
//
// Layout (all keys binary, ordered bytewise):
//   <id: 8 bytes big-endian> 'r' <row key>   -> encoded Row (encode_row())
//   <0: 8 bytes> 'm' <id: 8 bytes>           -> marker of shape `id`: the log
//                                               offset its rows are applied
//                                               through, and its row count
//   <0: 8 bytes> 'n'                         -> the next free state id
// A shape's rows and its marker are written in one WriteBatch, so the marker
// always describes exactly the rows beside it. Markers sit apart from rows
// so that listing every shape in the store reads O(shapes) keys.
//
// Memory is bounded by configuration: an LRU block cache (index and filter
// blocks included) and two small write buffers. Disk: LZ4 for fresh files,
// ZSTD for the bottommost level (most of the rows once compacted).
//
// Durability: the store is a cache of the shape logs. It has no WAL (its
// markers say how far each shape's rows are stored; what a dead process
// had only in memtables is replayed from the logs at load), and RocksDB's
// messages go to the proxy's log, not to a LOG file. So the only files it
// writes are fresh ones (table files, the MANIFEST), never a long-lived
// file writer after a failed write: Debian's librocksdb 7.8 keeps its
// assertions and aborts the process when a write reaches a file writer
// that failed before (WritableFileWriter::
// AssertFalseAndGetStatusForPrevError; upstream's fix for the WAL is in
// 9.1), which a full disk did with the WAL and the LOG file.
//
// Write failures: RocksDB stops taking writes after an I/O error (a
// "background error", e.g. a memtable flush on a full disk). A failed write
// is latched here: every later write first asks RocksDB to resume (it can
// after a full disk once space is back) and is refused, without reaching
// RocksDB, while it cannot. After an error RocksDB cannot resume from (EIO,
// EFBIG: "fatal"), the store refuses writes until the proxy restarts;
// nothing is lost, since every change is in the shape logs and the store
// catches up from them at load.
//
// Thread safety: RocksDB's for reads; writes are serialised here (one at a
// time, so no write can race another's failure). Shape writes on its
// strand, compaction reads a snapshot from its worker.
#pragma once

#include <rocksdb/db.h>
#include <rocksdb/file_system.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "shapes/log_offset.h"
#include "where/where_clause.h"

namespace shapeproxy::shapes {

struct StateStoreOptions {
  std::size_t cache_bytes = 32 * 1024 * 1024;        // LRU block cache
  std::size_t write_buffer_bytes = 8 * 1024 * 1024;  // per memtable (two of them)
  // Tests: the file system the store's files go through (fault injection);
  // the default one when null. Ignored by in_memory().
  std::shared_ptr<rocksdb::FileSystem> file_system;
  // With no WAL, what a dead process leaves of the store is what reached
  // table files: a write starts a memtable flush (not awaited) when the
  // last one is older than this, so a restart after a crash replays at most
  // about this much of the shape logs, not whole logs of shapes whose
  // rows never filled a memtable.
  std::chrono::milliseconds flush_every{5000};
};

// What a shape's rows in the store are up to date with.
struct StateMarker {
  LogOffset through;       // the last logged message applied (start(): none yet)
  std::uint64_t rows = 0;  // how many rows the shape holds
};

// Row values in table column order; a compact binary form (varint count,
// then per column 0 for NULL or varint length+1 and the bytes).
std::string encode_row(const where::RowValues& row);
std::optional<where::RowValues> decode_row(std::string_view bytes);

class StateStore {
 public:
  // Opens (creating) the store under `dir`.
  static Result<std::shared_ptr<StateStore>> open(const std::filesystem::path& dir,
                                                  const StateStoreOptions& options);
  // A store in memory (for shapes without a data directory).
  static Result<std::shared_ptr<StateStore>> in_memory(const StateStoreOptions& options);
  ~StateStore();
  StateStore(const StateStore&) = delete;
  StateStore& operator=(const StateStore&) = delete;

  // A state id never handed out before by this store.
  std::uint64_t allocate_id();
  // After loading shapes whose ids came from elsewhere (meta.json): ids
  // from now on are past `id`.
  void reserve_through(std::uint64_t id);

  static std::string row_key(std::uint64_t id, std::string_view key);
  static std::string marker_key(std::uint64_t id);
  static std::string encode_marker(const StateMarker& marker);

  Result<std::optional<std::string>> get(const std::string& key) const;
  Result<std::optional<StateMarker>> marker(std::uint64_t id) const;
  // Every id that has a marker.
  Result<std::vector<std::uint64_t>> ids() const;
  // Refused (not tried) while an earlier write's failure stands; see the
  // header comment.
  Result<void> write(rocksdb::WriteBatch& batch);
  // The failure that makes writes refused now, if any (from any thread).
  std::optional<Error> write_failure() const;
  // Starts writing the memtables to table files in the background (no
  // wait): after a bulk load, the rows leave memory for compressed files,
  // and would not need replaying after a crash.
  void flush_soon();
  // Whether every write so far is in table files (nothing in memtables).
  bool all_flushed() const;
  // Writes the memtables to table files and waits: what was written so far
  // survives the process (before a compaction drops the log's prefix that
  // a replay would need).
  Result<void> flush();
  // Removes shape `id`'s rows and marker (in `batch`).
  static void drop(rocksdb::WriteBatch& batch, std::uint64_t id);

  // Iterates shape `id`'s rows in key order (as of `snapshot` when given):
  // fn(row key, encoded row) returns false to stop.
  Result<void> scan(std::uint64_t id, const rocksdb::Snapshot* snapshot,
                    const std::function<bool(std::string_view, std::string_view)>& fn) const;
  // An iterator over shape `id`'s rows (as of `snapshot`), positioned at
  // the first one; the caller stops where keys leave row_key(id, "").
  std::unique_ptr<rocksdb::Iterator> rows(std::uint64_t id,
                                          const rocksdb::Snapshot* snapshot) const;

  // A consistent view for a reader on another thread; released with the
  // returned handle.
  std::shared_ptr<const rocksdb::Snapshot> snapshot();

 private:
  StateStore() = default;
  static Result<std::shared_ptr<StateStore>> open_with(const std::filesystem::path& dir,
                                                       const StateStoreOptions& options,
                                                       std::unique_ptr<rocksdb::Env> env,
                                                       bool in_memory);

  // Under write_mu_: whether writes may go to RocksDB now (asking it to
  // resume first if an earlier one failed); the error when not.
  Result<void> writable_locked();
  void flush_soon_locked();
  Error failed_locked(const rocksdb::Status& status);

  std::unique_ptr<rocksdb::Env> env_;  // in memory or test file system; outlives db_
  std::unique_ptr<rocksdb::DB> db_;
  std::uint64_t next_id_ = 1;
  mutable std::mutex write_mu_;
  std::optional<Error> write_failure_;  // guarded by write_mu_
  std::chrono::milliseconds flush_every_{0};
  std::chrono::steady_clock::time_point last_flush_;  // asked for; guarded by write_mu_
};

}  // namespace shapeproxy::shapes
