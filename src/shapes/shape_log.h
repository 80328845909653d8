// ShapeLog: the ordered messages of one shape instance. The initial snapshot
// is stored as immutable JSON chunks (each the whole body of a response, at
// offsets 0_0, 0_1, ...), replicated operations as entries at
// <commit lsn>_<op> appended one transaction at a time. Reads return bytes
// ready to send. A persisted shape's chunks stay on disk: a read returns
// where the chunk lies (the file stays open while the reader holds it), and
// the HTTP layer sends it from there (sendfile) without reading it here.
//
// Operations: only a bounded tail stays in memory (the most recent ones, up
// to tail_bytes, and always those not yet written to the shape's files, so
// parked live readers are answered from memory). Older ones are on disk
// only: read_after() says so (Slice::on_disk) and the caller reads them off
// the strand (LogDiskRead). A log without files keeps every operation.
#pragma once

#include <cstddef>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "shapes/log_offset.h"
#include "storage/read_only_file.h"

namespace shapeproxy::shapes {

struct LogEntry {
  LogOffset offset;
  std::string json;  // one message
};

// Operation bytes a persisted log keeps in memory at most, besides those
// not yet written to its files.
constexpr std::size_t kLogTailBytes = 256 * 1024;

class ShapeLog {
 public:
  explicit ShapeLog(std::size_t chunk_bytes) : chunk_bytes_(chunk_bytes) {}

  // One snapshot chunk: held in memory (`body`), or on disk (`stored`).
  struct Chunk {
    std::shared_ptr<const std::string> body;
    storage::StoredChunk stored;
  };
  using Chunks = std::vector<Chunk>;
  static Chunks on_disk(const std::vector<storage::StoredChunk>& stored);

  // Sets the snapshot messages (once, before any append); splits them into
  // chunks of at most chunk_bytes (a single larger message gets its own).
  // `compacted_at`: the messages are the shape's rows as of that offset (a
  // compacted log, see compact()).
  void set_snapshot(const std::vector<std::string>& messages,
                    std::optional<LogOffset> compacted_at = std::nullopt);
  // Compaction: the rows as of `point` (the current end) replace the snapshot
  // and every operation up to `point`. Their chunks sit just before `point`
  // (at <point.tx - 1>_<chunk>), so new readers continue after it; a reader
  // at any older offset can no longer continue (contains() is false).
  void compact(const std::vector<std::string>& rows, LogOffset point);
  // The same with the rows already split by chunk() (built off the strand).
  void install_compaction(Chunks chunks, LogOffset point);
  // set_snapshot() with chunks already built (and usually stored).
  void set_chunks(Chunks chunks, std::optional<LogOffset> compacted_at = std::nullopt);
  // Splits messages into response bodies of at most chunk_bytes (a single
  // larger message gets its own); never empty.
  static Chunks chunk(const std::vector<std::string>& messages, std::size_t chunk_bytes);
  std::size_t chunk_bytes() const { return chunk_bytes_; }
  std::optional<LogOffset> compacted_at() const { return compacted_at_; }
  // Appends one transaction's entries; offsets must increase.
  void append(std::vector<LogEntry> entries);
  // Persisted logs: operations up to `last` are on disk only (a loaded log).
  void set_on_disk(LogOffset last);
  // Drops the oldest tail entries written to disk (offset <= written) while
  // the tail holds more than `tail_bytes`.
  void trim(LogOffset written, std::size_t tail_bytes);
  // Tail entries after `written`, up to about `bytes` (for a disk read).
  std::vector<LogEntry> tail_after(LogOffset written, std::size_t bytes) const;
  std::size_t tail_bytes() const { return tail_bytes_; }
  std::size_t tail_entries() const { return entries_.size(); }

  std::size_t snapshot_chunk_count() const { return chunks_.size(); }
  const Chunks& chunks() const { return chunks_; }
  // The last offset in the log.
  LogOffset end() const;

  struct Slice {
    // Snapshot chunk reads: the whole body, in memory (`chunk`) or on disk
    // (`stored`, not read). Operation reads: neither, see entries.
    std::shared_ptr<const std::string> chunk;
    storage::StoredChunk stored;
    std::vector<std::string_view> entries;  // views into the log: use before the next append
    LogOffset last;                         // offset of the last message returned (or `after`)
    bool reached_end = false;               // nothing after `last`
    std::optional<std::string> error;       // a chunk is neither in memory nor on disk
    // The operations after `after` start before the in-memory tail: read
    // them from disk (nothing else is set).
    bool on_disk = false;
  };
  // Messages strictly after `after` (which must be >= 0_0): the next snapshot
  // chunk, or operations up to about chunk_bytes.
  Slice read_after(LogOffset after) const;

  // Whether `offset` names a position this log can continue from.
  bool contains(LogOffset offset) const;

 private:
  LogOffset chunk_offset(std::size_t chunk) const;
  std::optional<std::size_t> chunk_index(LogOffset offset) const;

  std::optional<LogOffset> compacted_at_;
  std::size_t chunk_bytes_;
  Chunks chunks_;
  std::deque<LogEntry> entries_;  // the tail
  std::size_t tail_bytes_ = 0;    // JSON bytes in entries_
  std::optional<LogOffset> last_operation_;
  // Operations up to here that are not in the tail are on disk only.
  std::optional<LogOffset> on_disk_through_;
};

}  // namespace shapeproxy::shapes
