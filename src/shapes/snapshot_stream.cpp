#include "shapes/snapshot_stream.h"

namespace shapeproxy::shapes {

SnapshotStream::SnapshotStream(SnapshotRenderer renderer, std::size_t chunk_bytes,
                               std::function<void()> started, std::size_t piece_bytes)
    : renderer_(std::move(renderer)),
      chunk_bytes_(chunk_bytes),
      piece_bytes_(piece_bytes),
      started_(std::move(started)),
      rest_(chunk_bytes, 0) {
  open_piece_.reserve(piece_bytes_ + 4096);
}

void SnapshotStream::add(std::span<const Row> rows) {
  bool first_piece = false;
  {
    std::lock_guard lock(mu_);
    if (finished_ || state_ == State::kFailed) return;
    for (const Row& row : rows) {
      message_.clear();
      renderer_.append_message(message_, row);
      add_message(message_);
      if (state_ == State::kOpen && open_piece_.size() >= piece_bytes_) publish(false);
    }
    rows_ += rows.size();
    first_piece = announce();
  }
  if (first_piece && started_) started_();
}

void SnapshotStream::add_message(std::string_view message) {
  if (first_body_ || state_ == State::kFailed) {
    rest_.add(message);
    return;
  }
  if (SnapshotChunkWriter::starts_body(first_bytes_, message.size(), chunk_bytes_)) {
    close_first();
    rest_.add(message);
    return;
  }
  if (first_bytes_ > 1) {
    open_piece_ += ',';
    ++first_bytes_;
  }
  open_piece_ += message;
  first_bytes_ += message.size();
}

bool SnapshotStream::announce() {
  if (announced_ || !(state_ == State::kEnded || (state_ == State::kOpen && !pieces_.empty())))
    return false;
  announced_ = true;
  return true;
}

void SnapshotStream::publish(bool force) {
  if (state_ != State::kOpen || open_piece_.empty()) return;
  if (!force && open_piece_.size() < piece_bytes_) return;
  auto piece = std::make_shared<const std::string>(std::move(open_piece_));
  open_piece_ = std::string();
  open_piece_.reserve(piece_bytes_ + 4096);
  pieces_.push_back(piece);
  for (auto& [id, sink] : sinks_) sink.bytes(piece);
}

void SnapshotStream::close_first() {
  open_piece_ += ']';
  publish(true);
  open_piece_ = std::string();
  for (auto& [id, sink] : sinks_) sink.end(true);
  sinks_.clear();
  state_ = State::kEnded;
  // The chunk's body in one buffer, as the shape keeps it.
  std::size_t size = 0;
  for (const auto& piece : pieces_) size += piece->size();
  std::string body;
  body.reserve(size);
  for (const auto& piece : pieces_) body += *piece;
  first_body_ = std::make_shared<const std::string>(std::move(body));
  pieces_.clear();
}

void SnapshotStream::finish(const PgSnapshot& snapshot) {
  bool first_piece = false;
  {
    std::lock_guard lock(mu_);
    if (finished_ || state_ == State::kFailed) return;
    add_message(snapshot_end_message(snapshot));
    if (!first_body_) close_first();
    chunks_.push_back({first_body_, {}});
    if (!rest_.empty_body()) {  // anything added to it (a body closes only for the next)
      for (auto& chunk : rest_.finish()) chunks_.push_back(std::move(chunk));
    }
    finished_ = true;
    first_piece = announce();
  }
  if (first_piece && started_) started_();
}

void SnapshotStream::fail() {
  std::lock_guard lock(mu_);
  if (finished_ || state_ != State::kOpen) return;
  state_ = State::kFailed;
  for (auto& [id, sink] : sinks_) sink.end(false);
  sinks_.clear();
  pieces_.clear();
  open_piece_ = std::string();
}

ShapeLog::Chunks SnapshotStream::take_chunks() {
  std::lock_guard lock(mu_);
  return std::move(chunks_);
}

std::size_t SnapshotStream::rows() const {
  std::lock_guard lock(mu_);
  return rows_;
}

bool SnapshotStream::started() const {
  std::lock_guard lock(mu_);
  return state_ == State::kEnded || (state_ == State::kOpen && !pieces_.empty());
}

bool SnapshotStream::failed() const {
  std::lock_guard lock(mu_);
  return state_ == State::kFailed;
}

std::size_t SnapshotStream::subscribers() const {
  std::lock_guard lock(mu_);
  return sinks_.size();
}

std::function<void()> SnapshotStream::subscribe(Sink sink) {
  std::lock_guard lock(mu_);
  if (state_ == State::kFailed) {
    sink.end(false);
    return [] {};
  }
  if (state_ == State::kEnded) {  // the whole first chunk, shared
    sink.bytes(first_body_);
    sink.end(true);
    return [] {};
  }
  for (const auto& piece : pieces_) sink.bytes(piece);  // shared, not copied
  const std::uint64_t id = next_sink_++;
  sinks_.emplace(id, std::move(sink));
  return [weak = weak_from_this(), id] {
    if (auto stream = weak.lock()) {
      std::lock_guard lock(stream->mu_);
      stream->sinks_.erase(id);
    }
  };
}

}  // namespace shapeproxy::shapes
