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
  for (auto& entry : entries) {
    tail_bytes_ += entry.json.size();
    last_operation_ = entry.offset;
    entries_.push_back(std::move(entry));
  }
}

void ShapeLog::set_on_disk(LogOffset last) {
  if (!last_operation_ || *last_operation_ < last) last_operation_ = last;
  if (!on_disk_through_ || *on_disk_through_ < last) on_disk_through_ = last;
}

void ShapeLog::trim(LogOffset written, std::size_t tail_bytes) {
  while (tail_bytes_ > tail_bytes && !entries_.empty() && entries_.front().offset <= written) {
    tail_bytes_ -= entries_.front().json.size();
    on_disk_through_ = entries_.front().offset;
    entries_.pop_front();
  }
  // A deque keeps a block per ~512 bytes of entries; shrink now and then.
  if (entries_.empty()) entries_.shrink_to_fit();
}

std::vector<LogEntry> ShapeLog::tail_after(LogOffset written, std::size_t bytes) const {
  std::vector<LogEntry> out;
  std::size_t taken = 0;
  for (auto it = std::upper_bound(
           entries_.begin(), entries_.end(), written,
           [](const LogOffset&offset, const LogEntry&entry) { return offset < entry.offset; });
       it != entries_.end() && taken <= bytes; ++it) {
    taken += it->json.size() + 1;
    out.push_back(*it);
  }
  return out;
}

void ShapeLog::compact(const std::vector<std::string>& rows, LogOffset point) {
  install_compaction(chunk(rows, chunk_bytes_), point);
}

void ShapeLog::install_compaction(Chunks chunks, LogOffset point) {
  set_chunks(std::move(chunks), point);
  auto kept = std::upper_bound(
      entries_.begin(), entries_.end(), point,
      [](const LogOffset& offset, const LogEntry& entry) { return offset < entry.offset; });
  for (auto it = entries_.begin(); it != kept; ++it) tail_bytes_ -= it->json.size();
  entries_.erase(entries_.begin(), kept);
  // Nothing before the point is readable any more: what is on disk only
  // starts after it.
  if (on_disk_through_ && *on_disk_through_ <= point) on_disk_through_.reset();
  if (entries_.empty() && !on_disk_through_) last_operation_.reset();
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
  if (last_operation_) return *last_operation_;
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
    slice.reached_end = next + 1 == chunks_.size() && !last_operation_;
    return slice;
  }
  if (on_disk_through_ && after < *on_disk_through_) {
    slice.on_disk = true;
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
