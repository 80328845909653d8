#include "shapes/log_reader.h"

namespace shapeproxy::shapes {

Result<void> for_each_after(const LogSource& source, LogOffset after,
                            const std::function<void(LogOffset, std::string_view)>& visit,
                            const std::function<bool()>& stopped) {
  const std::uint64_t chunk_tx = source.compacted_at ? source.compacted_at->tx - 1 : 0;
  std::uint64_t chunk = 0;
  return storage::ShapeFiles::read_log(
      source.files,
      [&](const storage::ShapeFiles::LoggedRecord& record) {
        if (record.snapshot) {
          const LogOffset offset = LogOffset::at(chunk_tx, record.chunk ? chunk++ : 0);
          if (offset > after) visit(offset, record.payload);
          return;
        }
        const LogOffset offset = LogOffset::at(record.tx, record.op);
        if (source.compacted_at && offset <= *source.compacted_at) return;
        if (offset > after) visit(offset, record.payload);
      },
      stopped);
}

}  // namespace shapeproxy::shapes
