#include "shapes/log_disk_read.h"

namespace shapeproxy::shapes {

Result<LogDiskRead::Slice> LogDiskRead::run() const {
  Slice slice;
  slice.body = "[";
  slice.last = after;
  std::size_t bytes = 0;
  bool full = false;
  // The same rule as ShapeLog::read_after(): at least one message, then
  // messages while they fit in chunk_bytes.
  auto take = [&](LogOffset offset, std::string_view json) {
    // Past the end planned: records a read-only view's files hold beyond
    // what their owner announced (rfc/0003); never more than the log has.
    if (offset > end) return false;
    if (slice.count > 0 && bytes + json.size() > chunk_bytes) {
      full = true;
      return false;
    }
    bytes += json.size() + 1;
    if (slice.count++ > 0) slice.body += ',';
    slice.body.append(json);
    slice.last = offset;
    return true;
  };
  const LogOffset from = skip_through && *skip_through > after ? *skip_through : after;
  auto read = storage::ShapeFiles::read_operations(
      ranges, from.tx, from.op, [&](const storage::Record& record) {
        return take(LogOffset::at(record.tx, record.op), record.payload);
      });
  if (!read) return read.error();
  for (const auto& entry : unwritten) {
    if (full) break;
    if (entry.offset <= slice.last) continue;
    if (!take(entry.offset, entry.json)) break;
  }
  slice.reached_end = slice.last == end;
  return slice;
}

void close_body(std::string& body, std::size_t count, const std::string& up_to_date_json) {
  if (!up_to_date_json.empty()) {
    if (count > 0) body += ',';
    body += up_to_date_json;
  }
  body += ']';
}

}  // namespace shapeproxy::shapes
