// A shape's work on big files, done on the compactor's worker between a
// begin_ and a finish_ step on the strand:
// - Compaction: the shape's rows as of the compaction point, read from its
//   state store through a snapshot taken on the strand, rendered into a new
//   snapshot file chunk by chunk (memory: one chunk), then swapped in.
// - Storing a snapshot that was served before it reached the disk
//   (degraded mode): its chunks written to the snapshot file, then named by
//   meta.json.
#include <rocksdb/db.h>

#include "shapes/shape.h"
#include "shapes/shape_messages.h"

namespace shapeproxy::shapes {

Result<std::shared_ptr<ShapeCompaction>> Shape::begin_compaction() {
  if (!files_ || compacting_ || !snapshot_stored_ || phase_ != Phase::kReady)
    return std::shared_ptr<ShapeCompaction>{};
  settle_state();
  auto source = files_->begin_compaction();
  if (!source) return source.error();
  if (!source.value()) return std::shared_ptr<ShapeCompaction>{};
  auto compaction = std::make_shared<ShapeCompaction>();
  compaction->source = std::move(*source.value());
  compaction->point = LogOffset::at(compaction->source.last_tx, compaction->source.last_op);
  if (state_.committed_through() != compaction->point) {
    // The store lags (its last commit failed): its rows are not those of
    // the point. The files stay as they are; a later sync retries.
    return Error{"storage_io",
                 "the shape's state store is at " + state_.committed_through().to_string() +
                     ", not at the compaction point " + compaction->point.to_string(),
                 ""};
  }
  compaction->previous_point = log_.compacted_at();
  compaction->snapshot_file = "snapshot-" + compaction->point.to_string() + ".log";
  compaction->table = definition_.table;
  compaction->selected = definition_.selected;
  compaction->relation_json = relation_json_;
  compaction->chunk_bytes = log_.chunk_bytes();
  compaction->store = state_.store();
  compaction->state_id = state_.id();
  compaction->view = state_.store_snapshot();
  compaction->expected_rows = state_.committed_rows();
  compacting_ = true;
  return compaction;
}

namespace {

Error cancelled_compaction() {
  return Error{"cancelled", "stopped before the compaction was built (shutting down)", ""};
}

Result<void> build_compaction_from_store(ShapeCompaction& compaction) {
  auto stopped = [&compaction] {
    return compaction.stop && compaction.stop->load(std::memory_order_relaxed);
  };
  const TableSchema& table = *compaction.table;
  auto rows = compaction.store->rows(compaction.state_id, compaction.view.get());
  const std::string prefix = StateStore::row_key(compaction.state_id, {});
  SnapshotChunkWriter writer(compaction.chunk_bytes, compaction.expected_rows);
  std::string message;  // rendered, not yet in a body
  bool ended = false;
  std::optional<Error> failure;
  // Fills the next body: messages until one does not fit (kept for the next).
  auto next_chunk = [&](std::string& body) -> Result<bool> {
    if (ended) return false;
    while (true) {
      if (message.empty()) {
        if (!rows->Valid() || !rows->key().starts_with(prefix)) {
          if (!rows->status().ok()) {
            return Error{"storage_io", "reading the shape's state: " + rows->status().ToString(),
                         ""};
          }
          ended = true;
          body = writer.take_body();  // the last one (or the only, maybe empty)
          return true;
        }
        if (compaction.step) compaction.step();
        auto key = rows->key();
        std::string_view row_key(key.data() + prefix.size(), key.size() - prefix.size());
        auto row = decode_row(std::string_view(rows->value().data(), rows->value().size()));
        if (!row) {
          return Error{"storage_corrupt",
                       "a row of the shape's state does not decode; not compacting (the files "
                       "are kept as they are)",
                       "the shape keeps serving its uncompacted log"};
        }
        append_snapshot_message(message, table, compaction.selected, compaction.relation_json,
                                row_key, *row);
        ++compaction.rows;
        rows->Next();
        if (stopped()) return cancelled_compaction();
      }
      if (writer.starts_body(message)) {
        body = writer.take_body();
        return true;
      }
      writer.add(message);
      message.clear();
    }
  };
  auto stored = storage::ShapeFiles::write_chunk_file(
      compaction.source.dir / compaction.snapshot_file, next_chunk, stopped);
  rows.reset();
  compaction.view.reset();
  if (!stored) return stored.error();
  if (stopped()) return cancelled_compaction();
  // The swap drops the log's operations up to the point: the store's rows
  // as of the point (marker included) must outlive the process first, or a
  // crash would leave a marker behind the compacted snapshot (a rebuild of
  // the whole shape at load instead of a replay of its tail).
  if (auto flushed = compaction.store->flush(); !flushed) return flushed.error();
  compaction.chunks = ShapeLog::on_disk(stored.value());
  return {};
}

}  // namespace

Result<void> Shape::build_compaction(ShapeCompaction& compaction) {
  Result<void> built = Error{"internal", "compaction not built", ""};
  // Nothing thrown here may reach the worker thread (it would end the
  // process): any exception becomes an error, and the files stay.
  try {
    built = build_compaction_from_store(compaction);
  } catch (const std::exception& thrown) {
    built = Error{"internal", std::string("compaction failed: ") + thrown.what(), ""};
  } catch (...) {
    built = Error{"internal", "compaction failed: unknown exception", ""};
  }
  compaction.view.reset();
  // The rendered bodies are freed: give their memory back (this worker's
  // arena; off the strand, malloc_trim can take a while).
  release_free_memory();
  if (!built) {
    // Half written, or written but not to be used: meta.json does not name
    // it, so removing it is safe (the loader would remove it anyway).
    compaction.chunks = {};
    std::error_code ec;
    if (compaction.snapshot_file != compaction.source.snapshot_file) {
      std::filesystem::remove(compaction.source.dir / compaction.snapshot_file, ec);
    }
  }
  return built;
}

Result<void> Shape::finish_compaction(ShapeCompaction& compaction) {
  compacting_ = false;
  if (!files_) return Error{"storage_usage", "finishing a compaction without files", ""};
  std::string previous_file = snapshot_file_;
  snapshot_file_ = compaction.snapshot_file;
  ShapeMeta next = meta();
  next.compacted_at = compaction.point;
  auto finished =
      files_->finish_compaction(compaction.source, compaction.snapshot_file, to_json(next));
  if (!finished) {
    snapshot_file_ = previous_file;
    return finished.error();
  }
  log_.install_compaction(std::move(compaction.chunks), compaction.point);
  return {};
}

std::shared_ptr<Shape::SnapshotStore> Shape::begin_snapshot_store() {
  if (snapshot_stored_ || !files_ || phase_ != Phase::kReady) return nullptr;
  auto store = std::make_shared<SnapshotStore>();
  store->path = files_->dir() / snapshot_file_;
  for (const auto& chunk : log_.chunks()) {
    if (!chunk.body) return nullptr;
    store->bodies.push_back(chunk.body);
  }
  return store;
}

Result<void> Shape::write_snapshot_store(SnapshotStore& store, const std::atomic<bool>& stopping) {
  std::vector<std::string_view> bodies;
  bodies.reserve(store.bodies.size());
  for (const auto& body : store.bodies) bodies.emplace_back(*body);
  auto stored = storage::ShapeFiles::write_chunk_file(
      store.path, bodies, [&stopping] { return stopping.load(std::memory_order_relaxed); });
  if (!stored) {
    // Half written: meta.json does not name it (the loader would remove it too).
    std::error_code ec;
    std::filesystem::remove(store.path, ec);
    return stored.error();
  }
  store.stored = std::move(stored).value();
  return {};
}

Result<void> Shape::finish_snapshot_store(SnapshotStore& store) {
  if (snapshot_stored_ || !files_) return {};
  log_.set_chunks(ShapeLog::on_disk(store.stored), log_.compacted_at());
  store.bodies = {};
  snapshot_stored_ = true;
  return files_->write_meta(to_json(meta()));
}

}  // namespace shapeproxy::shapes
