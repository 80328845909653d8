// Bringing back a saved shape: its log from its files, its rows from the
// state store, checked against the log (rfc/0002-shape-state.md): the
// store's marker says which logged message its rows are applied through.
#include <spdlog/spdlog.h>

#include "shapes/shape.h"
#include "shapes/shape_messages.h"

namespace shapeproxy::shapes {

LogOffset Shape::set_stored_snapshot(const ShapeMeta& meta, const storage::StoredShape& stored) {
  snapshot_ = meta.snapshot;
  snapshot_file_ = meta.snapshot_file;
  if (!stored.snapshot_chunks.empty()) {
    log_.set_chunks(ShapeLog::on_disk(stored.snapshot_chunks), meta.compacted_at);
  } else {
    log_.set_snapshot(stored.snapshot, meta.compacted_at);
  }
  if (meta.compacted_at) last_logged_tx_ = meta.compacted_at->tx;
  return meta.compacted_at.value_or(LogOffset::start());
}

Result<std::shared_ptr<Shape>> Shape::restore(ShapeDefinition definition, const ShapeMeta& meta,
                                              storage::StoredShape stored,
                                              std::unique_ptr<storage::ShapeFiles> files,
                                              std::size_t chunk_bytes,
                                              std::shared_ptr<StateStore> store) {
  auto shape = std::make_shared<Shape>(std::move(definition), meta.handle, chunk_bytes,
                                       std::move(store), meta.state_id);
  // Operations up to compacted_at are left over from a compaction
  // interrupted by a crash: already folded into the snapshot.
  const LogOffset folded = shape->set_stored_snapshot(meta, stored);
  LogOffset log_end = folded;
  if (stored.last_operation) {
    log_end = std::max(log_end,
                       LogOffset::at(stored.last_operation->first, stored.last_operation->second));
  }
  const LogSource source{files->log_files(), meta.compacted_at};
  auto is_snapshot = [&](LogOffset offset) {
    return meta.compacted_at ? offset < *meta.compacted_at : offset.tx == 0;
  };
  // Past every snapshot chunk: for_each_after() from here reads operations only.
  const LogOffset past_snapshot =
      meta.compacted_at.value_or(LogOffset::at(0, LogOffset::kInfinity));
  // The operations stay on disk (the log reads them back when asked).
  if (log_end > folded) {
    shape->log_.set_on_disk(log_end);
    shape->last_logged_tx_ = std::max<replication::Lsn>(shape->last_logged_tx_, log_end.tx);
  }

  // The rows: from the store when it agrees with the log (maybe replaying
  // the log's tail past its marker), else rebuilt from the whole log.
  auto& state = shape->state_;
  auto marker = state.store()->marker(state.id());
  std::string rebuild;
  if (!meta.state_id) {
    rebuild = "its meta.json names no state";
  } else if (!marker) {
    rebuild = "the state store cannot be read: " + marker.error().to_string();
  } else if (!marker.value()) {
    rebuild = "the state store has no rows for it";
  } else if (marker.value()->through > log_end) {
    rebuild = "the state store is ahead of its log (" + marker.value()->through.to_string() +
              " > " + log_end.to_string() + "): the log lost its tail";
  } else if (marker.value()->through < folded) {
    rebuild = "the state store is behind its compacted snapshot";
  }
  const TableSchema& table = shape->table();
  if (rebuild.empty()) {
    state.set_loaded(*marker.value());
    if (marker.value()->through < log_end) {
      // Only the log's tail: parsed and applied (the rest is in the store).
      auto replayed = for_each_after(source, std::max(marker.value()->through, past_snapshot),
                                     [&](LogOffset offset, std::string_view json) {
                                       if (!is_snapshot(offset)) replay_message(state, table, json);
                                     });
      if (!replayed) return replayed.error();
      state.seal(log_end);
      if (auto committed = state.commit(); !committed) return committed.error();
    }
  } else {
    spdlog::info("shapes: rebuilding the rows of {} from its log: {}", meta.handle, rebuild);
    if (auto begun = state.begin_bulk(); !begun) return begun.error();
    auto replayed = for_each_after(
        source, LogOffset::start(),
        [&](LogOffset, std::string_view json) { replay_message(state, table, json); });
    if (!replayed) return replayed.error();
    if (auto ended = state.end_bulk(log_end); !ended) return ended.error();
  }
  shape->files_ = std::move(files);
  shape->phase_ = Phase::kReady;
  if (!meta.state_id && shape->files_) {
    // Saved before shapes had a state: from now on it has one.
    if (auto written = shape->files_->write_meta(to_json(shape->meta())); !written)
      return written.error();
  }
  return shape;
}

std::shared_ptr<Shape> Shape::open_read_only(ShapeDefinition definition, const ShapeMeta& meta,
                                             storage::StoredShape stored,
                                             std::unique_ptr<storage::ShapeFiles> files,
                                             std::size_t chunk_bytes,
                                             std::optional<LogOffset> through) {
  // State id 0 of the shared in-memory store: no id allocated, no rows
  // ever held (the view is never applied to), nothing dropped (mark_gone).
  auto shape = std::make_shared<Shape>(std::move(definition), meta.handle, chunk_bytes, nullptr,
                                       std::uint64_t{0});
  shape->read_only_ = true;
  const LogOffset folded = shape->set_stored_snapshot(meta, stored);
  if (through && *through > folded) {
    shape->log_.set_on_disk(*through);
    shape->last_logged_tx_ = std::max<replication::Lsn>(shape->last_logged_tx_, through->tx);
  }
  shape->files_ = std::move(files);
  shape->phase_ = Phase::kReady;
  return shape;
}

void Shape::adopt_view(Shape& fresh) {
  log_ = std::move(fresh.log_);
  files_ = std::move(fresh.files_);
  snapshot_ = fresh.snapshot_;
  snapshot_file_ = fresh.snapshot_file_;
  last_logged_tx_ = fresh.last_logged_tx_;
}

}  // namespace shapeproxy::shapes
