#include "shapes/shape_log.h"

#include <algorithm>

namespace shapeproxy::shapes {

ShapeLog::Chunks ShapeLog::chunk(const std::vector<std::string>& messages,
                                 std::size_t chunk_bytes) {
  Chunks chunks;
  std::string body = "[";
  for (const auto& message : messages) {
    if (body.size() > 1 && body.size() + message.size() + 2 > chunk_bytes) {
      body += ']';
      chunks.push_back({std::make_shared<const std::string>(std::move(body)), {}});
      body = "[";
    }
    if (body.size() > 1) body += ',';
    body += message;
  }
  body += ']';
  chunks.push_back({std::make_shared<const std::string>(std::move(body)), {}});
  return chunks;
}

ShapeLog::Chunks ShapeLog::on_disk(const std::vector<storage::StoredChunk>& stored) {
  Chunks chunks;
  chunks.reserve(stored.size());
  for (const auto& each : stored) chunks.push_back({nullptr, each});
  return chunks;
}

void ShapeLog::set_chunks(Chunks chunks, std::optional<LogOffset> compacted_at) {
  compacted_at_ = compacted_at;
  chunks_ = std::move(chunks);
}

void ShapeLog::set_snapshot(const std::vector<std::string>& messages,
                            std::optional<LogOffset> compacted_at) {
  set_chunks(chunk(messages, chunk_bytes_), compacted_at);
}

void ShapeLog::append(std::vector<LogEntry> entries) {
  // No reserve(): an exact reserve per append would reallocate every time.
  for (auto& entry : entries) entries_.push_back(std::move(entry));
}

void ShapeLog::compact(const std::vector<std::string>& rows, LogOffset point) {
  install_compaction(chunk(rows, chunk_bytes_), point);
}

void ShapeLog::install_compaction(Chunks chunks, LogOffset point) {
  set_chunks(std::move(chunks), point);
  entries_.erase(entries_.begin(),
                 std::upper_bound(entries_.begin(), entries_.end(), point,
                                  [](const LogOffset& offset, const LogEntry& entry) {
                                    return offset < entry.offset;
                                  }));
}

LogOffset ShapeLog::chunk_offset(std::size_t chunk) const {
  if (!compacted_at_) return LogOffset::snapshot_chunk(chunk);
  return LogOffset::at(compacted_at_->tx - 1, chunk);
}

std::optional<std::size_t> ShapeLog::chunk_index(LogOffset offset) const {
  if (offset.before_all) return std::nullopt;
  LogOffset first = chunk_offset(0);
  if (offset.tx != first.tx || offset.op >= chunks_.size()) return std::nullopt;
  return offset.op;
}

LogOffset ShapeLog::end() const {
  if (!entries_.empty()) return entries_.back().offset;
  return chunk_offset(chunks_.empty() ? 0 : chunks_.size() - 1);
}

bool ShapeLog::contains(LogOffset offset) const {
  if (offset.before_all || chunk_index(offset)) return true;
  if (compacted_at_) return offset >= *compacted_at_;
  return !offset.is_snapshot();  // any operation offset: reads continue strictly after it
}

ShapeLog::Slice ShapeLog::read_after(LogOffset after) const {
  Slice slice;
  slice.last = after;
  auto current = chunk_index(after);
  if (after.before_all || (current && *current + 1 < chunks_.size())) {
    std::size_t next = after.before_all ? 0 : *current + 1;
    const Chunk& chunk = chunks_[next];
    if (chunk.body) {
      slice.chunk = chunk.body;
    } else if (chunk.stored.file) {
      slice.stored = chunk.stored;
    } else {
      slice.error = "a snapshot chunk has neither bytes nor a file";
      return slice;
    }
    slice.last = chunk_offset(next);
    slice.reached_end = next + 1 == chunks_.size() && entries_.empty();
    return slice;
  }
  auto it = std::upper_bound(
      entries_.begin(), entries_.end(), after,
      [](const LogOffset& offset, const LogEntry& entry) { return offset < entry.offset; });
  std::size_t bytes = 0;
  for (; it != entries_.end(); ++it) {
    if (!slice.entries.empty() && bytes + it->json.size() > chunk_bytes_) break;
    bytes += it->json.size() + 1;
    slice.entries.push_back(it->json);
    slice.last = it->offset;
  }
  slice.reached_end = it == entries_.end();
  return slice;
}

}  // namespace shapeproxy::shapes
