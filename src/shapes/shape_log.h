// ShapeLog: the ordered messages of one shape instance. The initial snapshot
// is stored as immutable JSON chunks (each the whole body of a response, at
// offsets 0_0, 0_1, ...), replicated operations as entries at
// <commit lsn>_<op> appended one transaction at a time. Reads return bytes
// ready to send; a chunk is shared, never copied, between responses.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "shapes/log_offset.h"

namespace shapeproxy::shapes {

struct LogEntry {
  LogOffset offset;
  std::string json;  // one message
};

class ShapeLog {
 public:
  explicit ShapeLog(std::size_t chunk_bytes) : chunk_bytes_(chunk_bytes) {}

  // Sets the snapshot messages (once, before any append); splits them into
  // chunks of at most chunk_bytes (a single larger message gets its own).
  void set_snapshot(const std::vector<std::string>& messages);
  // Appends one transaction's entries; offsets must increase.
  void append(std::vector<LogEntry> entries);

  std::size_t snapshot_chunk_count() const { return chunks_.size(); }
  // The last offset in the log.
  LogOffset end() const;

  struct Slice {
    // Snapshot chunk reads: the whole body. Operation reads: null, see entries.
    std::shared_ptr<const std::string> chunk;
    std::vector<std::string_view> entries;  // views into the log: use before the next append
    LogOffset last;                         // offset of the last message returned (or `after`)
    bool reached_end = false;               // nothing after `last`
  };
  // Messages strictly after `after` (which must be >= 0_0): the next snapshot
  // chunk, or operations up to about chunk_bytes.
  Slice read_after(LogOffset after) const;

  // Whether `offset` names a position this log can continue from.
  bool contains(LogOffset offset) const;

 private:
  std::size_t chunk_bytes_;
  std::vector<std::shared_ptr<const std::string>> chunks_;
  std::vector<LogEntry> entries_;
};

}  // namespace shapeproxy::shapes
