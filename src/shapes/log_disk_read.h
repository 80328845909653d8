// LogDiskRead: a read of a shape's operations that are no longer in its
// in-memory tail (ShapeLog keeps only the most recent ones). Planned on the
// shapes strand (Shape::plan_disk_read(): where the records lie, from the
// sparse index, and copies of tail entries not yet written), run on another
// thread (blocking reads of up to about a response body), so the strand
// never waits for the disk. The body it yields holds exactly the messages
// ShapeLog::read_after() would have returned with the whole log in memory:
// the same budget (chunk_bytes), the same order.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "shapes/log_offset.h"
#include "shapes/shape_log.h"
#include "storage/shape_files.h"

namespace shapeproxy::shapes {

struct LogDiskRead {
  storage::ShapeFiles::OperationRanges ranges;  // written records, from a mark before `after`
  LogOffset after;
  std::optional<LogOffset> skip_through;  // the compaction point: older records are folded
  std::size_t chunk_bytes = 0;
  std::vector<LogEntry> unwritten;  // tail entries past the written records, in order
  LogOffset end;                    // the log's end when planned

  struct Slice {
    std::string body;  // "[m1,m2,..." without the closing bracket (see close_body())
    std::size_t count = 0;
    LogOffset last;            // the last message's offset (or `after`)
    bool reached_end = false;  // last == end
  };
  // Any thread. Reads the messages after `after`, up to the budget.
  Result<Slice> run() const;
};

// Finishes a body started with "[" and messages: the up-to-date control
// message when `up_to_date_json` is non-empty, then "]".
void close_body(std::string& body, std::size_t count, const std::string& up_to_date_json);

}  // namespace shapeproxy::shapes
