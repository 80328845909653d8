// Reading a persisted shape's logged messages back from its files, after an
// offset: what rebuilding a shape's row state from disk needs (at load, or on
// a worker thread), without the shape holding its log in memory.
#pragma once

#include <functional>
#include <optional>
#include <string_view>

#include "common/result.h"
#include "shapes/log_offset.h"
#include "storage/shape_files.h"

namespace shapeproxy::shapes {

// Where a shape's log lies: its files (ShapeFiles::log_files(), taken on the
// owner's strand or at load) and the compaction point its meta.json names.
struct LogSource {
  storage::ShapeFiles::LogFiles files;
  std::optional<LogOffset> compacted_at;
};

// Calls `visit(offset, json)` for every logged message after `after`, in
// log order, on the calling thread (any thread; it reads only files):
//  - each snapshot chunk record at its chunk offset (0_<i>, or
//    <compacted_at.tx - 1>_<i> after a compaction), `json` the whole chunk
//    body: a JSON array of messages;
//  - snapshot message records of the older format (one message each), all
//    at the first chunk's offset, only when `after` is before it;
//  - each operation at <tx>_<op>, `json` one message; operations a
//    compaction already folded into the snapshot (left by a crash before
//    their files were removed) are skipped.
// `json` is valid during the call only. Errors: a file vanished (a
// compaction finished meanwhile: take the LogSource again and retry) or a
// damaged record ("storage_corrupt"); never a silently shorter log.
// `stopped` (optional), asked between records: true ends early (success).
Result<void> for_each_after(const LogSource& source, LogOffset after,
                            const std::function<void(LogOffset, std::string_view)>& visit,
                            const std::function<bool()>& stopped = {});

}  // namespace shapeproxy::shapes
